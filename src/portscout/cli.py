"""The command line: ``portscout TARGETS [options]``, ``portscout demo`` and ``portscout
bench``; the history commands (``history``, ``show``, ``diff``, ``resume``, ``forget``) are
``history_cli``'s.

Exit codes: 0 done, 1 the scan failed at run time (or its history or an output did: the
scan still ran to its end), 2 bad usage (one line naming the bad value, never a
traceback), 130/143/129 stopped by SIGINT/SIGTERM/SIGHUP (results found so far are
written and recorded as resumable), 141 when the reader of standard output went away.
All printing of the program lives here, in ``history_cli`` and in ``output/``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from portscout._version import __version__
from portscout.cli_args import (
    Parser,
    add_output_options,
    build_parser,
    config_from_args,
    output_options,
)
from portscout.errors import Interrupted, OptionError, PortscoutError, StoreError, UsageError
from portscout.history_config import RecordingResolver, config_record
from portscout.outfiles import Faults, OutputFile, console, open_outputs, refuse_shared
from portscout.output.progress import LiveProgress, Monitor, StatsLines
from portscout.output.session import Outputs
from portscout.plan import HostGroup
from portscout.ports import service_names
from portscout.recorder import Recorder
from portscout.results import IPAddress, Reason, Report, Result, ScanMeta, State, printable
from portscout.running import deferred_signals, drive, stop_signals_raise
from portscout.scanner import Scan, ScanConfig, system_resolver
from portscout.store import ScanStatus, Store, StoredScan, UnitRow, default_path
from portscout.targets import Resolver

if TYPE_CHECKING:
    from portscout.distributed import DaskRun
    from portscout.output.merge import PartHost

log = logging.getLogger("portscout")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # 141: what cat's shell reports when the reader left
COMMANDS = ("demo", "bench", "history", "show", "diff", "resume", "forget")


@dataclasses.dataclass
class OpenOutputs:
    """A command's outputs, opened: the writers behind their ordering stage (``outputs``),
    the files they write (``outfiles``: put in place whole at the end, removed on a
    failure), every stream they write to, and what went wrong writing (``faults``).

    Every stream is guarded: a failing one is recorded in ``faults``, never raised, so
    that the scan, the other outputs and the history go on.
    """

    outputs: Outputs
    files: list[OutputFile]
    streams: list[TextIO]
    faults: Faults

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()

    def finish(self, report: Report) -> None:
        """Every host left and each writer's end, then each file put in place."""
        self.outputs.finish(report)
        self.flush()
        for output in self.files:
            output.commit()

    def discard(self) -> None:
        for output in self.files:
            output.discard()


def open_writers(args: argparse.Namespace, *, live: bool = False) -> OpenOutputs:
    """Open every file output and build the writers over them (UsageError if a file
    cannot be opened: those opened before are removed). ``live``: a progress bar shows
    what is found, so ``-v`` does not print it too."""
    options = output_options(args)
    faults = Faults()
    files = open_outputs([(kind, path) for kind, path in options.files if path != "-"], faults)
    try:
        stdout = console(sys.stdout, faults)
        human = console(sys.stderr, faults) if options.to_stdout else stdout
        opened = iter(files)
        streams = [
            (kind, stdout if path == "-" else next(opened).stream) for kind, path in options.files
        ]
        named = not args.quiet or any(kind != "json" for kind, _ in options.files)
        names = service_names() if named else {}  # only the JSON lines have no service names
        reverse = _reverse_lookup if getattr(args, "reverse", False) else None
        discovered = None if live else human
        outputs = Outputs(options, streams, human, names, discovered=discovered, reverse=reverse)
    except BaseException:
        for output in files:
            output.discard()
        raise
    guarded = [output.stream for output in files] + [stdout, human]
    return OpenOutputs(outputs, files, guarded, faults)


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
    store: Store | None,
    scan: Scan,
    resume: StoredScan | None,
    prior: Sequence[Result],
    resolved: Mapping[str, list[IPAddress]],
) -> Recorder | str | None:
    """The scan's recorder (a resume's scan is already claimed); the reason, if the
    history could not begin it: the scan runs anyway."""
    if resume is not None:
        report = scan.report
        if scan.config.discovery or scan.config.ping_only:
            # A host with results was up; where discovery does not ping it again (a
            # Dask unit done), its results must not go out as a down host's.
            report.hosts_up = report.hosts_up or {}
        for result in prior:
            report.add(result)
            if report.hosts_up is not None:
                report.hosts_up.setdefault(result.host, answer_reason(result))
        scan.report.started = resume.meta.started  # probes: this run's, as planned
    if store is None:
        return None
    if resume is not None:
        return Recorder(store, resume.id)
    try:
        scan_id = store.begin(scan.meta, config_record(scan, resolved), scan.plan.size)
    except StoreError as exc:
        log.warning("%s; the scan goes on without recording", exc)
        return str(exc)
    return Recorder(store, scan_id)


def answer_reason(result: Result) -> Reason:
    """Why a host with ``result`` from an earlier run is up: its port's answer."""
    answered = (Reason.SYN_ACK, Reason.RESET, Reason.CONN_REFUSED, Reason.LOCALHOST_RESPONSE)
    return result.reason if result.reason in answered else Reason.USER_SET


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
    resolver: Resolver | None = None,
) -> int:
    """Run one scan (or the rest of ``resume``, which found ``prior``) with its writers,
    its history record in ``store`` and its progress monitors; returns the exit code.

    A stop signal ends the sending (``drive``); one that arrives while the outputs are
    being finished waits for them. Faults of the history and of an output are reported
    once the outputs are complete, and make the exit code 1.
    """
    # Closed ports of a scan split over processes come as compact per-host groups: the
    # outputs need them per host ("Not shown: 995 closed"), a resume needs them recorded.
    config = dataclasses.replace(config, keep_closed=False, record_closed=True)
    recording = RecordingResolver(resolver or system_resolver)
    scan = Scan(config, resolver=recording)
    if args.dask is not None and config.shard is not None:
        raise OptionError("give --shard or --dask, not both (--dask shards the scan itself)")
    estimate = scan.estimated_seconds()
    if estimate > 3600:
        _say(f"portscout: {scan.targets.size:,} addresses x {len(scan.ports):,} ports may take"
             f" about {_long_duration(estimate)}; Ctrl-C stops it, 'resume' goes on")  # fmt: skip
    monitors = _monitors(args)
    cluster = contextlib.ExitStack()  # --dask: the client (and a local cluster), closed last
    finished = store.units(resume.id) if store is not None and resume is not None else ()
    dask = _dask_run(scan, args.dask, cluster, finished) if args.dask is not None else None
    opened = open_writers(args, live=any(isinstance(m, LiveProgress) for m in monitors))
    try:
        with cluster, deferred_signals() as late:
            recorder = _recorder(store, scan, resume, prior, recording.answers)
            opened.outputs.start(scan.meta if resume is None else resume.meta)
            opened.outputs.add(prior)
            connect_outputs(scan, opened.outputs)
            active = recorder if isinstance(recorder, Recorder) else None
            source = None if dask is None else dask.batches()
            if dask is not None and active is not None:
                dask.on_unit_done = lambda u: active.add_unit((u.start, u.stop, u.index, u.count))
            code, status = _drive_scan(scan, opened, active, monitors, late, source)
            opened.finish(scan.report)
            _epilogue(args, active, code, status)
    except BaseException:
        opened.discard()
        raise
    failure = recorder.failure if isinstance(recorder, Recorder) else recorder
    return _exit_code(code, late, opened.faults, failure)


def _dask_run(
    scan: Scan, address: str, files: contextlib.ExitStack, finished: Iterable[UnitRow]
) -> DaskRun:
    """``--dask``: the scan's run on the cluster (closed with ``files``); ``finished``:
    the units a resumed scan's history records done."""
    from portscout.distributed import INSTALL_HINT, DaskRun, Unit, connect

    try:
        import distributed  # noqa: F401  # configures its loggers: quieted below
    except ImportError as exc:
        raise UsageError(INSTALL_HINT) from exc
    # Dask's client logs its connections lost while a cluster closes (a traceback): not
    # the user's business unless -d (local:N's own processes log to nowhere).
    quiet = logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.CRITICAL
    logging.getLogger("distributed").setLevel(quiet)
    client = files.enter_context(connect(address))
    return DaskRun(scan, client, finished=[Unit(*row) for row in finished])


def connect_outputs(scan: Scan, outputs: Outputs) -> None:
    """Tell ``outputs`` the targets in order, and when each host group is done (its hosts
    are then written, with what discovery found, and the report forgets them: it keeps
    counts, so that a /8's report holds its groups in flight, not every host up)."""
    report, targets = scan.report, scan.targets
    outputs.plan(targets, discovery=scan.config.discovery or scan.config.ping_only)

    def group_done(group: HostGroup) -> None:
        outputs.group_done(group.stop, report.hosts_up or {}, report.latency)
        if group.stop >= targets.size:
            report.release(lambda address: True)
            return
        end = targets[group.stop]
        end_key = (end.version, int(end))
        report.release(lambda address: (address.version, int(address)) < end_key)

    scan.on_group_done = group_done


def _epilogue(
    args: argparse.Namespace, recorder: Recorder | None, code: int, status: ScanStatus
) -> None:
    """What follows the outputs: the record's id (and how to go on with it)."""
    shown = status is not ScanStatus.DONE or not args.quiet
    if recorder is not None and recorder.failure is None and shown:
        again = f"; 'portscout resume {recorder.scan_id}' continues it" if code else ""
        _say(f"portscout: recorded as scan {recorder.scan_id} ({status}){again}")


def _exit_code(code: int, late: Sequence[int], faults: Faults, failure: str | None) -> int:
    """The exit code once everything is written; each fault said in one line."""
    if faults.broken_pipe:
        return EXIT_BROKEN_PIPE  # the reader went away: quietly, as cat does
    for name, reason in faults.errors.items():
        _say(f"portscout: error: cannot write '{name}': {reason}")
        code = code or EXIT_FAILURE
    if failure is not None:
        _say(f"portscout: error: the scan is not fully recorded in the history: {failure}")
        code = code or EXIT_FAILURE
    if late and not code:
        code = 128 + late[0]
    return code


def _say(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(one_line(line), file=sys.stderr)


def _drive_scan(
    scan: Scan,
    opened: OpenOutputs,
    recorder: Recorder | None,
    monitors: list[Monitor],
    late: Sequence[int],
    source: Generator[list[Result], None, None] | None = None,
) -> tuple[int, ScanStatus]:
    """Run the scan (here, or ``source``: its batches from elsewhere) into the outputs,
    the history and the monitors."""
    code, status = EXIT_OK, ScanStatus.FAILED
    report, outputs = scan.report, opened.outputs
    for monitor in monitors:
        monitor.start(scan.total, sum(report.counts.values()), report.counts[State.OPEN])
    sent = report.probes_sent
    try:
        if late:  # stopped while the outputs were being opened
            raise Interrupted(late[0])
        batches = drive(scan) if source is None else source
        try:
            for batch in batches:
                closed = scan.take_closed()
                outputs.add(batch, closed)
                opened.flush()  # whole hosts on disk as the scan goes: tail -f works
                if recorder is not None:
                    recorder.add(batch, report.probes_sent - sent, closed)
                    sent = report.probes_sent
                for monitor in monitors:
                    monitor.update(sum(report.counts.values()), batch, scan.total)
                if opened.faults.broken_pipe:  # nobody reads on: stop, as cat would
                    raise Interrupted(signal.SIGPIPE)
        finally:
            batches.close()  # cancels the scan if it still runs
        status = ScanStatus.DONE
    except KeyboardInterrupt as exc:
        report.interrupted = True
        status = ScanStatus.INTERRUPTED
        code = exc.exit_code if isinstance(exc, Interrupted) else EXIT_INTERRUPTED
    finally:
        for monitor in monitors:
            monitor.finish()
        closed = scan.take_closed()
        outputs.add((), closed)
        if recorder is not None:
            recorder.add((), report.probes_sent - sent, closed)
            recorder.close(status, report.finished or time.time())
    return code, status


_EXCERPT = re.compile(r"'([^']{81,})'")


def one_line(message: str, limit: int = 400) -> str:
    """A message fit for a terminal: control characters escaped, a long quoted value cut
    to a bounded excerpt (a 50 MB target is not echoed whole)."""
    text = _EXCERPT.sub(
        lambda m: f"'{m.group(1)[:60]}...' ({len(m.group(1))} characters)", printable(message)
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."


def setup_logging(debug: int) -> None:
    """Warnings to stderr; with ``-d`` portscout's own DEBUG records too (what the scanner
    and the engines decide: plan, discovery, timeouts, windows, retries), not those of
    the libraries below it."""
    logging.basicConfig(level=logging.WARNING, format="portscout: %(levelname)s: %(message)s")
    logging.getLogger("portscout").setLevel(logging.DEBUG if debug else logging.WARNING)


def run_merge(argv: Sequence[str]) -> int:
    """``merge FILE...``: the parts' hosts, merged, through the outputs as one scan's.
    Without an output option: JSON lines of every port on stdout, as the parts."""
    p = Parser(prog="portscout merge")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="the parts (-oJ FILE --no-fold of each --shard I/N)")  # fmt: skip
    add_output_options(p)
    args = p.parse_args(argv)
    setup_logging(args.debug)
    if not output_options(args).files:
        args.json_out, args.no_fold = "-", True
    return write_joined(
        args,
        ("portscout", "merge", *argv),
        lambda files: (_read_part(f, files) for f in args.files),
    )


def write_joined(
    args: argparse.Namespace,
    command: Sequence[str],
    parts: Callable[[contextlib.ExitStack | None], Iterable[Iterator[PartHost]]],
    meta_ports: tuple[int, ...] | None = None,
    scan_type: str | None = None,
) -> int:
    """The hosts of ``parts`` (each part's hosts in address order; ``parts(files)`` opens
    them anew, closed by ``files``) merged into one scan through the outputs of ``args``:
    each port once, a host up where any part found it up (``merge``, ``show --from``).
    The ports and scan type are the parts' own unless given."""
    from portscout.output.merge import SeenHosts, merge_parts, survey  # merge's own

    if meta_ports is None or scan_type is None:
        meta_ports, scan_type = survey(parts(None))
    meta = ScanMeta(
        args=tuple(command), scan_type=scan_type, engine="merged", ports=meta_ports,
        started=time.time(), version=__version__, key=0,
    )  # fmt: skip
    report = Report(engine="merged", key=0, started=meta.started, hosts_up={})
    dropped = 0
    opened = open_writers(args)
    try:
        with contextlib.ExitStack() as files:
            opened.outputs.start(meta)
            seen = SeenHosts()
            opened.outputs.plan(seen, discovery=True)
            for host, duplicates in merge_parts(list(parts(files))):
                dropped += duplicates
                seen.append(host.address)
                # Each host is written as it comes: the report keeps counts only.
                up = {host.address: host.reason} if host.up else {}
                latency = {} if host.latency is None else {host.address: host.latency}
                for result in host.results:
                    report.add(result)
                opened.outputs.add(host.results)
                opened.outputs.group_done(seen.size, up, latency)
                report.results.clear()
                report.released_up += len(up)
            report.hosts_total, report.finished = seen.size, time.time()
            opened.finish(report)
    except BaseException:
        opened.discard()
        raise
    if dropped:
        _say(f"portscout: {command[1]}: {dropped} duplicate port line(s) kept once")
    return _exit_code(EXIT_OK, (), opened.faults, None)


def _read_part(path: str, files: contextlib.ExitStack | None) -> Iterator[PartHost]:
    """The hosts of the part file ``path``; closed by ``files`` (or at the end)."""
    from portscout.output.merge import read_part

    try:
        stream = open(path, encoding="utf-8")  # noqa: SIM115  # closed below or by files
    except OSError as exc:
        raise UsageError(f"cannot read '{path}': {exc.strerror}") from exc
    if files is not None:
        files.enter_context(stream)
        return read_part(path, stream)
    return _closing(read_part(path, stream), stream)


def _closing(hosts: Iterator[PartHost], stream: TextIO) -> Iterator[PartHost]:
    with stream:
        yield from hosts


def _scan_from_args(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.debug)
    refuse_shared(output_options(args).files, None if args.no_db else str(_db_path(args)))
    config = config_from_args(args, argv)
    if args.no_db:
        return run_scan(config, args)
    with Store.open(_db_path(args)) as store:
        return run_scan(config, args, store=store)


def _db_path(args: argparse.Namespace) -> Path:
    return Path(args.db) if args.db else default_path()


def main(argv: Sequence[str] | None = None) -> int:
    """The command; returns its exit code. Every failure is one line on stderr:
    2 for bad usage, 1 for what failed at run time, 128 + N for stop signal N."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with stop_signals_raise():
            if argv and argv[0] == "demo":
                from portscout.demo import run_demo

                return run_demo(argv[1:])
            if argv and argv[0] == "merge":
                return run_merge(argv[1:])
            if argv and argv[0] == "bench":
                from portscout.bench.command import run_bench

                return run_bench(argv[1:])
            if argv and argv[0] in COMMANDS:
                from portscout.history_cli import run_command

                return run_command(argv[0], argv[1:])
            return _scan_from_args(argv)
    except UsageError as exc:
        _say(f"portscout: {exc}")
        return EXIT_USAGE
    except PortscoutError as exc:
        _say(f"portscout: error: {exc}")
        return EXIT_FAILURE
    except BrokenPipeError:  # the reader of standard output went away: quietly, as cat
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # the last boundary: a file the checks above did not foresee
        where = f" '{exc.filename}'" if exc.filename else ""
        _say(f"portscout: error: cannot use{where}: {exc.strerror or exc}")
        return EXIT_FAILURE
    except KeyboardInterrupt as exc:
        _say("portscout: interrupted")
        return exc.exit_code if isinstance(exc, Interrupted) else EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
