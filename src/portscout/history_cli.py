"""The history commands: ``history``, ``show ID``, ``diff A B``, ``resume ID``, ``forget ID...``.

Split from ``cli`` (which calls ``run_command``), whose parser pieces, writers and
``run_scan`` they reuse. ``history``, ``show`` and ``diff`` only read: they open the
database read-only and never change a byte of it (an older schema is read as it is).
``resume`` and ``forget`` never create a database.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
import time
from collections.abc import Iterator, Sequence

from portscout.cli import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILURE,
    EXIT_OK,
    answer_reason,
    open_writers,
    run_scan,
    setup_logging,
)
from portscout.cli import _db_path as db_path
from portscout.cli_args import (
    Parser,
    add_dask_option,
    add_history_options,
    add_output_options,
    build_parser,
    output_options,
)
from portscout.errors import OptionError, PortscoutError, StoreError
from portscout.history_config import config_from_record, recorded_resolver
from portscout.outfiles import refuse_shared
from portscout.output.hosts import address_key
from portscout.output.merge import PartHost
from portscout.output.ndiff import diff_text
from portscout.ports import service_names
from portscout.results import IPAddress, Reason, Result, State
from portscout.store import (
    ScanStatus,
    Store,
    StoredScan,
    diff_scans,
    done_probes,
    rebuild_report,
)
from portscout.store_files import MAX_SCAN_ID


def _scan_id(text: str) -> int:
    """A scan's id as ``history`` lists it: 1 to 2**63 - 1 (SQLite's INTEGER)."""
    try:
        value = int(text)
    except ValueError:
        raise OptionError(f"invalid scan id '{text}'") from None
    if not 0 < value <= MAX_SCAN_ID:
        raise OptionError(f"invalid scan id '{text}': ids run from 1 to {MAX_SCAN_ID}")
    return value


def _count(text: str) -> int:
    """How many scans ``history -n`` lists: 0 or more (more than there are: all)."""
    try:
        value = int(text)
    except ValueError:
        raise OptionError(f"invalid count '{text}'") from None
    if value < 0:
        raise OptionError(f"invalid count '{text}': must be 0 or more")
    return value


def _command_parser(command: str) -> argparse.ArgumentParser:
    p = Parser(prog=f"portscout {command}")
    if command == "resume":
        p.add_argument("id", type=_scan_id, metavar="ID", help="the scan's id (portscout history)")
        add_output_options(p)
    if command == "show":
        p.add_argument("id", type=_scan_id, nargs="?", metavar="ID",
                       help="the scan's id (portscout history); with --from, that scan of"
                       " each database file (default: each file's newest)")  # fmt: skip
        p.add_argument("--from", dest="from_files", nargs="+", metavar="FILE",
                       help="join the --shard parts FILE... (history databases, or JSON"
                       " lines written with -oJ FILE --no-fold) into one scan")  # fmt: skip
        add_output_options(p)
    if command == "forget":
        p.add_argument("ids", type=_scan_id, nargs="*", metavar="ID", help="scans to delete")
        p.add_argument(
            "--before",
            type=_date,
            metavar="DATE",
            help="also scans started before DATE (2026-12-01 or 2026-12-01T08:00)",
        )
        p.add_argument("--keep", type=_count, metavar="N",
                       help="also every scan but the newest N")  # fmt: skip
    if command == "diff":
        p.add_argument("a", type=_scan_id, metavar="A", help="the earlier scan's id")
        p.add_argument("b", type=_scan_id, metavar="B", help="the later scan's id")
    if command in ("diff", "history"):
        p.add_argument("--json", action="store_true", help="JSON instead of text")
    if command == "history":
        p.add_argument("-n", "--last", type=_count, default=None, metavar="N", help="newest N")
    if command == "resume":
        add_dask_option(p)
    add_history_options(p, scan=command == "resume")
    return p


def run_command(command: str, argv: Sequence[str]) -> int:
    """``history``, ``show``, ``diff``, ``resume`` and ``forget``."""
    args = _command_parser(command).parse_args(argv)
    setup_logging(getattr(args, "debug", 0))
    if command == "resume":
        return _resume(args)
    if command == "forget":
        return _forget(args)
    if command == "show" and args.from_files:
        return _show_from(args)
    if command == "show":
        if args.id is None:
            raise OptionError("show what? give a scan id, or --from FILE... (parts to join)")
        refuse_shared(output_options(args).files, str(db_path(args)))
    if command == "history" and not db_path(args).exists():
        # Nothing scanned yet is a fact, not an error (was: exit 1, "no history database").
        print(f"portscout: no scans recorded yet ({db_path(args)})", file=sys.stderr)
        return EXIT_OK
    with Store.open(db_path(args), readonly=True) as store:
        if command == "history":
            _print_history(store.scans(args.last), as_json=args.json)
        elif command == "diff":
            diff = diff_scans(store, args.a, args.b)
            text = json.dumps(diff.to_dict(), indent=2) + "\n"
            sys.stdout.write(text if args.json else diff_text(diff, service_names()))
            # As diff(1) and nmap's ndiff: 1 when the scans differ, for cron jobs to alert.
            return EXIT_FAILURE if diff.changed else EXIT_OK
        else:
            return _show(store.load(args.id), store.results(args.id), args)
    return EXIT_OK


# The output options a resumed scan takes from its first run when it is given none.
_FILE_OUTPUTS = ("normal_out", "xml_out", "grep_out", "json_out", "csv_out", "all_out",
                 "no_fold", "only_open", "reason")  # fmt: skip


def _outputs_of(stored: StoredScan, args: argparse.Namespace) -> None:
    """Give ``args`` the file outputs the scan was started with: a resume goes on writing
    them (each written whole again, the first run's results and the new ones), unless it
    is given outputs of its own. Standard output is not one of them."""
    try:
        first = build_parser().parse_args(list(stored.meta.args[1:]))
    except PortscoutError:
        return  # a command line this version no longer reads: outputs as given
    for name in _FILE_OUTPUTS:
        value = getattr(first, name, None)
        if value is not None and value != "-":
            setattr(args, name, value)


def _forget(args: argparse.Namespace) -> int:
    """Delete the scans named, and those ``--before`` a date or past the newest ``--keep``."""
    if not args.ids and args.before is None and args.keep is None:
        raise OptionError("forget what? give scan ids, --before DATE or --keep N")
    with Store.open(db_path(args), create=False) as store:
        ids = set(args.ids)
        if args.before is not None or args.keep is not None:
            scans = sorted(store.scans(None), key=lambda s: (s.meta.started, s.id))
            if args.before is not None:
                ids |= {s.id for s in scans if s.meta.started < args.before}
            if args.keep is not None:
                ids |= {s.id for s in scans[: max(0, len(scans) - args.keep)]}
        if not ids:
            print("portscout: no scan matches: nothing forgotten", file=sys.stderr)
            return EXIT_OK
        store.forget(sorted(ids))
    print(f"portscout: forgot scan(s) {', '.join(map(str, sorted(ids)))}", file=sys.stderr)
    return EXIT_OK


def _date(text: str) -> float:
    """``--before``'s date: ISO 8601 (a day, or a day and a time), local time; epoch s."""
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise OptionError(
            f"invalid date '{text}' (use e.g. 2026-12-01 or 2026-12-01T08:00)"
        ) from None


def _resume(args: argparse.Namespace) -> int:
    """Scan the probes a stopped scan has not answered, on the addresses it started with."""
    # run_scan reads scan options too: take their defaults from the scan parser.
    args = argparse.Namespace(**{**vars(build_parser().parse_args([])), **vars(args)})
    with Store.open(db_path(args), create=False) as store:
        if not output_options(args).files:
            _outputs_of(store.load(args.id), args)
        refuse_shared(output_options(args).files, str(db_path(args)))
        stored = store.claim(args.id)
        try:
            prior = store.results(args.id)
            config = config_from_record(stored.config, done_probes(prior))
            resolver = recorded_resolver(stored.config, stored.meta.hostnames)
        except BaseException:
            store.end(args.id, stored.status, stored.finished or time.time())
            raise
        return run_scan(config, args, store=store, resume=stored, prior=prior, resolver=resolver)


def _show(stored: StoredScan, results: Sequence[Result], args: argparse.Namespace) -> int:
    """A recorded scan through the writers, as if it had just run."""
    report = rebuild_report(stored, results)
    opened = open_writers(args)
    try:
        opened.outputs.start(stored.meta)
        opened.outputs.add(results)
        opened.finish(report)
    except BaseException:
        opened.discard()
        raise
    if opened.faults.broken_pipe:
        return EXIT_BROKEN_PIPE
    if opened.faults.errors:
        name, reason = next(iter(opened.faults.errors.items()))
        raise StoreError(f"cannot write '{name}': {reason}")
    return EXIT_OK


SQLITE_HEADER = b"SQLite format 3\x00"


def _show_from(args: argparse.Namespace) -> int:
    """``show --from FILE...``: the parts of one scan joined as ``merge`` joins JSON
    lines, each port once. A database part gives the hosts with results of its scan
    (``ID``, else its newest); the parts' scans must share their key (--seed)."""
    from portscout.cli import _read_part as read_json_part
    from portscout.cli import write_joined

    files: list[tuple[str, list[PartHost] | None]] = []
    metas: list[tuple[str, StoredScan]] = []
    for path in args.from_files:
        if not _is_database(path):
            files.append((path, None))
            continue
        with Store.open(path, readonly=True) as store:
            stored = _part_scan(store, path, args.id)
            files.append((path, _hosts_of(stored, store.results(stored.id))))
        metas.append((path, stored))
    _check_parts(metas)
    ports: tuple[int, ...] | None = None
    scan_type: str | None = None
    if metas and len(metas) == len(files):  # databases only: the ports they scanned
        ports = tuple(sorted({p for _, m in metas for p in m.meta.ports}))
        scan_type = metas[0][1].meta.scan_type

    def parts(opened: contextlib.ExitStack | None) -> Iterator[Iterator[PartHost]]:
        for path, hosts in files:
            yield iter(hosts) if hosts is not None else read_json_part(path, opened)

    command = ("portscout", "show", "--from", *args.from_files)
    return write_joined(args, command, parts, ports, scan_type)


def _is_database(path: str) -> bool:
    try:
        with open(path, "rb") as stream:
            return stream.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError as exc:
        raise OptionError(f"cannot read '{path}': {exc.strerror}") from exc


def _part_scan(store: Store, path: str, scan_id: int | None) -> StoredScan:
    """Scan ``scan_id`` of the part ``path``, else its newest; StoreError if none."""
    if scan_id is not None:
        return store.load(scan_id)
    newest = store.scans(1)
    if not newest:
        raise StoreError(f"'{path}' records no scan")
    return newest[0]


def _check_parts(metas: Sequence[tuple[str, StoredScan]]) -> None:
    """Parts of one scan share its key; an unfinished part is said (results missing)."""
    for path, stored in metas:
        first_path, first = metas[0]
        if stored.meta.key != first.meta.key:
            raise OptionError(
                f"'{path}' (scan {stored.id}) has another key than '{first_path}' (scan"
                f" {first.id}): not parts of one scan (give every --shard the same --seed)"
            )
        if stored.status is not ScanStatus.DONE:
            print(
                f"portscout: show --from: '{path}' scan {stored.id} is {stored.shown_status}:"
                " its part is incomplete ('portscout resume' finishes it)",
                file=sys.stderr,
            )


def _hosts_of(stored: StoredScan, results: Sequence[Result]) -> list[PartHost]:
    """A recorded scan's results as hosts in address order: each host with a result is
    up (the history keeps no host without one), with the reason of its first answer."""
    by_host: dict[IPAddress, list[Result]] = {}
    for result in results:
        by_host.setdefault(result.host, []).append(result)
    hosts = []
    for address in sorted(by_host, key=address_key):
        ports = sorted(by_host[address], key=lambda r: (r.protocol.value, r.port))
        reason = next((answer_reason(r) for r in ports if answer_reason(r) is not Reason.USER_SET),
                      Reason.USER_SET)  # fmt: skip
        hostname = stored.meta.hostnames.get(address, "")
        hosts.append(PartHost(address, True, reason, None, hostname, ports))
    return hosts


def _print_history(scans: Sequence[StoredScan], *, as_json: bool) -> None:
    rows = [
        {
            "id": s.id,
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.meta.started)),
            "status": s.shown_status,
            "engine": s.meta.engine,
            "open": s.counts[State.OPEN],
            "closed": s.counts[State.CLOSED],
            "filtered": s.counts[State.FILTERED],
            "probes": f"{sum(s.counts.values())}/{s.probes_planned}",
            "command": s.meta.command_line,
        }
        for s in scans
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    columns = ("id", "started", "status", "engine", "open", "closed", "filtered", "probes")
    widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns) + "  COMMAND")
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns) + f"  {row['command']}")
