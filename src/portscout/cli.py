"""The command line: ``portscout TARGETS [options]``, ``portscout demo`` and the history
commands ``history``, ``show ID``, ``diff A B`` and ``resume ID``.

Exit codes: 0 done, 1 the scan failed at run time, 2 bad usage (one line naming the bad
value, never a traceback), 130 interrupted by Ctrl-C (results found so far are printed).
All printing of the program lives here and in ``output/``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from portscout._version import __version__
from portscout.engines import CONNECT_ENGINE, SYN_ENGINE, engine_names
from portscout.errors import OptionError, PortscoutError, StoreError, UsageError
from portscout.output.progress import LiveProgress, Monitor, StatsLines
from portscout.output.session import OutputOptions, Outputs, file_outputs
from portscout.plan import HostGroup, Probe
from portscout.ports import service_names
from portscout.results import IPAddress, Result, State
from portscout.scanner import DEFAULT_HOSTGROUP, Scan, ScanConfig, drive
from portscout.store import (
    Recorder,
    ScanStatus,
    Store,
    StoredScan,
    default_path,
    diff_scans,
    rebuild_report,
)
from portscout.targets import read_target_file
from portscout.timing import TimingPolicy, parse_duration, parse_template

log = logging.getLogger("portscout")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
COMMANDS = ("demo", "history", "show", "diff", "resume", "forget")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        raise OptionError(message)


class _ScanType(argparse.Action):
    """-sS and -sT: one scan type a scan, as nmap says ("You specified more than one
    type of TCP scan"), where argparse would quietly keep the last."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)  # type: ignore[arg-type]

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        given = getattr(namespace, "_scan_type", None)
        if given is not None and given != option_string:
            raise OptionError(f"conflicting scan types {given} and {option_string}: give one")
        namespace._scan_type = option_string
        setattr(namespace, self.dest, self.const)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="portscout",
        description="Scan TCP ports. Targets: addresses, names, CIDR, nmap ranges.",
        epilog="Commands: 'portscout demo' scans listeners in a private network namespace;"
        " 'portscout history', 'show ID', 'diff A B', 'resume ID', 'forget ID...' use the"
        " scan history.",
    )
    p.add_argument("targets", nargs="*", metavar="TARGET", help="198.18.0.1, ::1, 198.18.0.0/24")
    p.add_argument("-V", "--version", action="version", version=f"portscout {__version__}")
    t = p.add_argument_group("targets")
    t.add_argument(
        "-iL", dest="input_list", metavar="FILE", help="read targets from FILE (- for stdin)"
    )
    t.add_argument("--exclude", metavar="SPECS", help="comma-separated targets to skip")
    t.add_argument("--exclude-file", metavar="FILE", help="skip the targets listed in FILE")
    dns = t.add_mutually_exclusive_group()
    dns.add_argument("-n", action="store_true", help="no reverse DNS (the default)")
    dns.add_argument("-R", dest="reverse", action="store_true",
                     help="reverse DNS of the hosts found up, shown by every output")  # fmt: skip
    t.add_argument("-Pn", action="store_true", help="no host discovery: treat all as up")
    t.add_argument("-6", dest="ipv6", action="store_true",
                   help="IPv6 targets only; names resolve to IPv6 (as nmap -6)")  # fmt: skip
    t.add_argument("-sn", action="store_true", help="host discovery only, no port scan")
    ports = p.add_argument_group("ports")
    pm = ports.add_mutually_exclusive_group()
    pm.add_argument("-p", dest="ports", metavar="PORTS", help="22,80,8000-8100; '-' for all")
    pm.add_argument("--top-ports", type=int, metavar="N", help="the N most common (default 1000)")
    pm.add_argument("-F", dest="fast", action="store_true", help="the top 100 ports")
    pm.add_argument("-p-", dest="all_ports", action="store_true", help="all ports 1-65535")
    p.add_argument("-r", dest="ordered", action="store_true", help="scan in order, no shuffle")
    p.add_argument("--seed", type=int, help="permutation key, for a repeatable probe order")
    e = p.add_argument_group("engine")
    e.add_argument("--engine", default="auto", metavar="NAME", help=", ".join(engine_names()))
    e.add_argument("-sT", dest="engine", action=_ScanType, const=CONNECT_ENGINE,
                   help=f"TCP connect scan (the {CONNECT_ENGINE} engine)")  # fmt: skip
    e.add_argument("-sS", dest="engine", action=_ScanType, const=SYN_ENGINE,
                   help="SYN scan with raw sockets (root or CAP_NET_RAW)")  # fmt: skip
    e.add_argument("--workers", type=int, default=50, help="threadpool engine threads (50)")
    e.add_argument("--processes", type=int, help="worker processes (default: one per core)")
    e.add_argument("--max-parallelism", type=int, metavar="N", help="probes in flight at most")
    e.add_argument("--max-hostgroup", type=int, metavar="N", default=DEFAULT_HOSTGROUP,
                   help=f"hosts discovered and scanned together ({DEFAULT_HOSTGROUP});"
                   " more than 2^32 addresses are refused")  # fmt: skip
    add_service_options(p)
    add_timing_options(p)
    add_output_options(p)
    history = p.add_argument_group("history and progress")
    h = history.add_mutually_exclusive_group()
    h.add_argument("--db", metavar="PATH", help=f"history database ({default_path()})")
    h.add_argument("--no-db", action="store_true", help="do not record this scan")
    history.add_argument("--stats-every", type=_duration("--stats-every"), metavar="TIME",
                   help="print a status line to stderr every TIME (e.g. 10s)")  # fmt: skip
    # "-6" is an option, so argparse would take every negative number for one too and
    # "--max-retries -1" would lose its value: an exact option string still wins over a
    # number, so "-6" stays ours and "-1" goes back to being a value.
    p._has_negative_number_optionals.clear()
    return p


def add_service_options(p: argparse.ArgumentParser) -> None:
    """-sV and nmap's options for it; signatures from nmap's file, else built-in ones."""
    v = p.add_argument_group("service and version detection")
    v.add_argument("-sV", dest="service_detection", action="store_true",
                   help="name the service and version on each open port")  # fmt: skip
    level = v.add_mutually_exclusive_group()
    level.add_argument("--version-intensity", type=int, metavar="0-9",
                       help="try probes up to this rarity (default 7)")  # fmt: skip
    level.add_argument("--version-light", action="store_const", dest="version_intensity",
                       const=2, help="intensity 2: the likely probes only")  # fmt: skip
    level.add_argument("--version-all", action="store_const", dest="version_intensity",
                       const=9, help="intensity 9: every probe")  # fmt: skip
    v.add_argument("--service-probes", metavar="FILE",
                   help="nmap-service-probes file, or 'built-in' for portscout's own"
                        " (default: nmap's when installed, else built-in)")  # fmt: skip


def add_output_options(p: argparse.ArgumentParser) -> None:
    """What to print and where: for scans, ``show`` and ``resume`` alike."""
    o = p.add_argument_group("output (as nmap's; hosts in address order, ports ascending)")
    o.add_argument("--open", dest="only_open", action="store_true",
                   help="only hosts with open ports, only their open ports")  # fmt: skip
    o.add_argument("--reason", action="store_true", help="why each port and host has its state")
    o.add_argument("-v", "--verbose", action="count", default=0,
                   help="verbosity: 'Discovered open port' as found, down hosts listed, up to"
                   " 25 more ports of a state before folding them (-vv: 50)")  # fmt: skip
    o.add_argument("-d", "--debug", action="count", default=0,
                   help="debugging: log what the scanner and engines decide to stderr")  # fmt: skip
    o.add_argument("-q", "--quiet", action="store_true", help="no host reports, only the summary")
    o.add_argument("-oN", dest="normal_out", metavar="FILE", help="nmap's normal output")
    o.add_argument("-oX", dest="xml_out", metavar="FILE", help="nmap-compatible XML")
    o.add_argument("-oG", dest="grep_out", metavar="FILE", help="nmap grepable format")
    o.add_argument("-oJ", dest="json_out", metavar="FILE", help="JSON lines ('-' = stdout)")
    o.add_argument("--csv", dest="csv_out", metavar="FILE", help="CSV, one row per port")
    o.add_argument("-oA", dest="all_out", metavar="BASE",
                   help="BASE.nmap, .xml, .gnmap, .jsonl and .csv at once")  # fmt: skip
    o.add_argument("--no-fold", action="store_true",
                   help="JSON lines: a line for every port (default: open ports, and the"
                   " others only where a host has at most 25 of that state)")  # fmt: skip


def _duration(option: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        return parse_duration(text, option=option)

    return parse


def add_timing_options(p: argparse.ArgumentParser) -> None:
    """nmap's timing options; -T picks a template, the others override single values."""
    t = p.add_argument_group("timing (nmap's meanings; times like 500ms, 2s, 1m)")
    t.add_argument("-T", dest="template", type=parse_template, metavar="0-5",
                   help="paranoid|sneaky|polite|normal|aggressive|insane (default 3)")  # fmt: skip
    for flag in ("--initial-rtt-timeout", "--min-rtt-timeout", "--max-rtt-timeout",
                 "--scan-delay", "--max-scan-delay", "--host-timeout"):  # fmt: skip
        t.add_argument(flag, type=_duration(flag), metavar="TIME")
    t.add_argument("--max-retries", type=int, metavar="N", help="retransmissions at most")
    t.add_argument("--min-rate", type=float, metavar="PPS", help="probes per second at least")
    t.add_argument("--max-rate", "--rate", dest="max_rate", type=float, metavar="PPS",
                   help="probes per second at most")  # fmt: skip
    t.add_argument("--min-parallelism", type=int, metavar="N", help="probes in flight at least")
    t.add_argument("--timeout", type=_duration("--timeout"), metavar="TIME",
                   help="first and highest probe timeout (seed engines: every try's)")  # fmt: skip


TIMING_FIELDS = (
    "initial_rtt_timeout", "min_rtt_timeout", "max_rtt_timeout", "scan_delay",
    "max_scan_delay", "host_timeout", "max_retries", "min_rate", "max_rate",
    "min_parallelism", "max_parallelism",
)  # fmt: skip


def timing_from_args(args: argparse.Namespace) -> TimingPolicy:
    if args.host_timeout is not None:
        # Probes of all hosts are interleaved (the keyed permutation), so every host is
        # being scanned from the first second to the last: a per-host clock would cut
        # every host of a long scan short, not just the slow one nmap's option is for.
        raise UsageError(
            "--host-timeout is not supported: hosts are scanned interleaved, not in turn"
            " (bound slow hosts with --max-rtt-timeout and --max-retries)"
        )
    base = TimingPolicy.template(3 if args.template is None else args.template)
    return base.with_options(
        timeout=args.timeout, **{name: getattr(args, name) for name in TIMING_FIELDS}
    )


def config_from_args(args: argparse.Namespace, argv: Sequence[str]) -> ScanConfig:
    specs = list(args.targets)
    if args.input_list:
        specs.extend(read_target_file(args.input_list))
    excludes: list[str] = []
    if args.exclude:
        excludes.extend(s for s in args.exclude.split(",") if s.strip())
    if args.exclude_file:
        excludes.extend(read_target_file(args.exclude_file))
    if not specs:
        raise UsageError("no targets given (try 'portscout 127.0.0.1' or 'portscout demo')")
    ports: str | None = "-" if args.all_ports else args.ports
    top = 100 if args.fast else args.top_ports
    return ScanConfig(
        targets=specs,
        ports=ports,
        top_ports=top,
        excludes=excludes,
        engine=args.engine,
        family=6 if args.ipv6 else None,
        discovery=not args.Pn,
        ping_only=args.sn,
        timing=timing_from_args(args),  # every timing option, --timeout included
        workers=args.workers,
        processes=args.processes,
        key=args.seed,
        randomize=not args.ordered,
        keep_closed=False,  # closed ports reach the outputs grouped (see run_scan)
        args=("portscout", *argv),
        hostgroup=args.max_hostgroup,
        service_detection=args.service_detection,
        version_intensity=7 if args.version_intensity is None else args.version_intensity,
        service_probes=args.service_probes,
    )


def output_options(args: argparse.Namespace) -> OutputOptions:
    """The output options of ``args`` (a scan's, ``show``'s or ``resume``'s)."""
    named = {
        "normal": args.normal_out,
        "xml": args.xml_out,
        "grep": args.grep_out,
        "json": args.json_out,
        "csv": args.csv_out,
    }
    return OutputOptions(
        files=file_outputs(named, args.all_out),
        verbose=args.verbose,
        only_open=args.only_open,
        reason=args.reason,
        quiet=args.quiet,
        no_fold=args.no_fold,
        versions=bool(getattr(args, "service_detection", False)),
    )


def _open_outputs(
    args: argparse.Namespace, files: contextlib.ExitStack, *, live: bool = False
) -> Outputs:
    """Open every file output (closed by ``files``) and build the writers over them."""
    options = output_options(args)
    streams: list[tuple[str, TextIO]] = []
    human: TextIO = sys.stderr if options.to_stdout else sys.stdout
    for kind, path in options.files:
        if path == "-":
            streams.append((kind, sys.stdout))
            continue
        try:
            # closed by the caller's ExitStack
            stream = files.enter_context(open(path, "w", encoding="utf-8", newline=""))  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot write '{path}': {exc.strerror}") from exc
        streams.append((kind, stream))
    named = not args.quiet or any(kind != "json" for kind, _ in options.files)
    names = service_names() if named else {}  # only the JSON lines have no service names
    reverse = _reverse_lookup if getattr(args, "reverse", False) else None
    discovered = None if live else human
    return Outputs(options, streams, human, names, discovered=discovered, reverse=reverse)


def _reverse_lookup(address: IPAddress) -> str | None:
    """-R: the system resolver's name for ``address`` (a PTR record or /etc/hosts)."""
    try:
        return socket.gethostbyaddr(str(address))[0]
    except (OSError, UnicodeError):
        return None


def _monitors(args: argparse.Namespace) -> list[Monitor]:
    """A live bar when stderr is a terminal (and not -q); status lines with --stats-every."""
    monitors: list[Monitor] = []
    if not args.quiet and sys.stderr.isatty():
        monitors.append(LiveProgress(sys.stderr))
    if args.stats_every is not None:
        monitors.append(StatsLines(sys.stderr, args.stats_every))
    return monitors


def _recorder(
    store: Store | None, scan: Scan, resume: StoredScan | None, prior: Sequence[Result]
) -> Recorder | None:
    """Record a new scan, or take up ``resume`` again (its report seeded with ``prior``)."""
    if resume is not None:
        for result in prior:
            scan.report.add(result)
        scan.report.started = resume.meta.started  # probes: this run's, as planned
    if store is None:
        return None
    if resume is None:
        scan_id = store.begin(scan.meta, config_record(scan), scan.plan.size)
    else:
        store.reopen(resume.id)
        scan_id = resume.id
    return Recorder(store, scan_id)


def _long_duration(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:,.0f} hours" if hours < 72 else f"{hours / 24:,.0f} days"


def run_scan(
    config: ScanConfig,
    args: argparse.Namespace,
    *,
    store: Store | None = None,
    resume: StoredScan | None = None,
    prior: Sequence[Result] = (),
) -> int:
    """Run one scan (or the rest of ``resume``, which found ``prior``) with its writers,
    its history record in ``store`` and its progress monitors; returns the exit code."""
    # Closed ports of a scan split over processes come as compact per-host groups: the
    # outputs need them per host ("Not shown: 995 closed"), a resume needs them recorded.
    config = dataclasses.replace(config, keep_closed=False, record_closed=True)
    scan = Scan(config)
    estimate = scan.estimated_seconds()
    if estimate > 3600:
        print(f"portscout: {scan.targets.size:,} addresses x {len(scan.ports):,} ports may take"
              f" about {_long_duration(estimate)}; Ctrl-C stops it, 'resume' goes on",
              file=sys.stderr)  # fmt: skip
    monitors = _monitors(args)
    with contextlib.ExitStack() as files:
        outputs = _open_outputs(
            args, files, live=any(isinstance(m, LiveProgress) for m in monitors)
        )
        recorder = _recorder(store, scan, resume, prior)
        outputs.start(scan.meta if resume is None else resume.meta)
        outputs.add(prior)
        connect_outputs(scan, outputs)
        code, status = _drive_scan(scan, outputs, recorder, monitors)
        outputs.finish(scan.report)
        if recorder is not None and (status is not ScanStatus.DONE or not args.quiet):
            again = f"; 'portscout resume {recorder.scan_id}' continues it" if code else ""
            print(f"portscout: recorded as scan {recorder.scan_id} ({status}){again}",
                  file=sys.stderr)  # fmt: skip
    return code


def connect_outputs(scan: Scan, outputs: Outputs) -> None:
    """Tell ``outputs`` the targets in order, and when each host group is done (its hosts
    are then written, with what discovery found)."""
    report = scan.report
    outputs.plan(scan.targets, discovery=scan.config.discovery or scan.config.ping_only)

    def group_done(group: HostGroup) -> None:
        outputs.group_done(group.stop, report.hosts_up or {}, report.latency)

    scan.on_group_done = group_done


def _drive_scan(
    scan: Scan, outputs: Outputs, recorder: Recorder | None, monitors: list[Monitor]
) -> tuple[int, ScanStatus]:
    code, status = EXIT_OK, ScanStatus.FAILED
    report = scan.report
    for monitor in monitors:
        monitor.start(scan.total, sum(report.counts.values()), report.counts[State.OPEN])
    sent = report.probes_sent
    try:
        for batch in drive(scan):
            closed = scan.take_closed()
            outputs.add(batch, closed)
            if recorder is not None:
                recorder.add(batch, report.probes_sent - sent, closed)
                sent = report.probes_sent
            for monitor in monitors:
                monitor.update(sum(report.counts.values()), batch, scan.total)
        status = ScanStatus.DONE
    except KeyboardInterrupt:
        report.interrupted = True
        code, status = EXIT_INTERRUPTED, ScanStatus.INTERRUPTED
    finally:
        for monitor in monitors:
            monitor.finish()
        closed = scan.take_closed()
        outputs.add((), closed)
        if recorder is not None:
            recorder.add((), report.probes_sent - sent, closed)
            recorder.close(status, report.finished or time.time())
    return code, status


# -- the scan history -------------------------------------------------------------------

_UNRECORDED = frozenset({"done", "keep_closed", "record_closed"})


def config_record(scan: Scan) -> dict[str, object]:
    """``scan.config`` as JSON-ready values, with the key it drew: rebuilds the same plan."""
    record: dict[str, object] = {}
    for f in dataclasses.fields(scan.config):
        value = getattr(scan.config, f.name)
        if f.name in _UNRECORDED:
            continue
        if isinstance(value, TimingPolicy):
            value = dataclasses.asdict(value)
        elif isinstance(value, list | tuple):
            value = list(value)
        record[f.name] = value
    record["key"] = scan.plan.key
    return record


def config_from_record(record: Mapping[str, Any], done: frozenset[Probe]) -> ScanConfig:
    """The ``ScanConfig`` of a recorded scan, skipping ``done``; StoreError if it cannot be."""
    unknown = sorted(set(record) - {f.name for f in dataclasses.fields(ScanConfig)})
    if unknown:
        raise StoreError(f"the scan has options this portscout does not know: {unknown}")
    values = dict(record)
    try:
        if values.get("timing") is not None:
            values["timing"] = TimingPolicy(**values["timing"])
        for name in ("targets", "excludes", "args"):
            values[name] = tuple(values.get(name, ()))
        if isinstance(values.get("ports"), list):
            values["ports"] = tuple(values["ports"])
        return ScanConfig(**values, done=done, keep_closed=True)
    except (TypeError, ValueError, PortscoutError) as exc:
        raise StoreError(f"the scan's recorded options cannot be used: {exc}") from exc


def _db_path(args: argparse.Namespace) -> Path:
    return Path(args.db) if args.db else default_path()


def _command_parser(command: str) -> argparse.ArgumentParser:
    p = _Parser(prog=f"portscout {command}")
    if command in ("show", "resume"):
        p.add_argument("id", type=int, metavar="ID", help="the scan's id (portscout history)")
        add_output_options(p)
    if command == "forget":
        p.add_argument("ids", type=int, nargs="+", metavar="ID", help="scans to delete")
    if command == "diff":
        p.add_argument("a", type=int, metavar="A", help="the earlier scan's id")
        p.add_argument("b", type=int, metavar="B", help="the later scan's id")
    if command in ("diff", "history"):
        p.add_argument("--json", action="store_true", help="JSON instead of text")
    if command == "history":
        p.add_argument("-n", "--last", type=int, default=None, metavar="N", help="newest N")
    if command == "resume":
        p.add_argument("--stats-every", type=_duration("--stats-every"), metavar="TIME")
    p.add_argument("--db", metavar="PATH", help=f"history database ({default_path()})")
    return p


def run_command(command: str, argv: Sequence[str]) -> int:
    """``history``, ``show``, ``diff``, ``resume`` and ``forget``."""
    args = _command_parser(command).parse_args(argv)
    setup_logging(getattr(args, "debug", 0))
    if command == "resume":
        # run_scan reads scan options too: take their defaults from the scan parser.
        args = argparse.Namespace(**{**vars(build_parser().parse_args([])), **vars(args)})
        with Store.open(_db_path(args)) as store:
            stored = store.load(args.id)
            if stored.status is ScanStatus.DONE:
                raise OptionError(f"scan {args.id} is complete: nothing to resume")
            if stored.alive:
                raise StoreError(f"scan {args.id} is still running (pid {stored.pid})")
            prior = store.results(args.id)
            done = frozenset(Probe(r.host, r.port) for r in prior)
            config = config_from_record(stored.config, done)
            return run_scan(config, args, store=store, resume=stored, prior=prior)
    if command == "forget":
        if not _db_path(args).is_file():
            raise StoreError(f"no history database at '{_db_path(args)}'")
        with Store.open(_db_path(args)) as store:
            store.forget(args.ids)
        print(f"portscout: forgot scan(s) {', '.join(map(str, args.ids))}", file=sys.stderr)
        return EXIT_OK
    with Store.open(_db_path(args), readonly=True) as store:
        if command == "history":
            _print_history(store.scans(args.last), as_json=args.json)
        elif command == "diff":
            diff = diff_scans(store, args.a, args.b)
            text = json.dumps(diff.to_dict(), indent=2) + "\n"
            sys.stdout.write(text if args.json else diff.text(service_names()))
        else:
            stored = store.load(args.id)
            _show(stored, store.results(args.id), args)
    return EXIT_OK


def _show(stored: StoredScan, results: Sequence[Result], args: argparse.Namespace) -> None:
    """A recorded scan through the writers, as if it had just run."""
    report = rebuild_report(stored, results)
    with contextlib.ExitStack() as files:
        outputs = _open_outputs(args, files)
        outputs.start(stored.meta)
        outputs.add(results)
        outputs.finish(report)


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
            "command": " ".join(s.meta.args),
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


def setup_logging(debug: int) -> None:
    """Warnings to stderr; with ``-d`` portscout's own DEBUG records too (what the scanner
    and the engines decide: plan, discovery, timeouts, windows, retries), not those of
    the libraries below it."""
    logging.basicConfig(level=logging.WARNING, format="portscout: %(levelname)s: %(message)s")
    logging.getLogger("portscout").setLevel(logging.DEBUG if debug else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "demo":
            from portscout.demo import run_demo

            return run_demo(argv[1:])
        if argv and argv[0] in COMMANDS:
            return run_command(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        setup_logging(args.debug)
        config = config_from_args(args, argv)
        if args.no_db:
            return run_scan(config, args)
        with Store.open(_db_path(args)) as store:
            return run_scan(config, args, store=store)
    except UsageError as exc:
        print(f"portscout: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PortscoutError as exc:
        print(f"portscout: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("portscout: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
