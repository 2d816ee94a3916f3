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
from typing import TYPE_CHECKING, NoReturn, TextIO

from portscout._version import __version__
from portscout.engines import CONNECT_ENGINE, SYN_ENGINE, engine_names
from portscout.errors import Interrupted, OptionError, PortscoutError, StoreError, UsageError
from portscout.history_config import RecordingResolver, config_record
from portscout.outfiles import Faults, OutputFile, console, open_outputs, refuse_shared
from portscout.output.progress import LiveProgress, Monitor, StatsLines
from portscout.output.session import OutputOptions, Outputs, file_outputs
from portscout.plan import HostGroup
from portscout.ports import service_names
from portscout.recorder import Recorder
from portscout.results import IPAddress, Reason, Report, Result, ScanMeta, State, printable
from portscout.running import deferred_signals, drive, stop_signals_raise
from portscout.scanner import DEFAULT_HOSTGROUP, Scan, ScanConfig, system_resolver
from portscout.store import ScanStatus, Store, StoredScan, UnitRow, default_path
from portscout.targets import Resolver, read_target_file
from portscout.timing import TimingPolicy, parse_duration, parse_template

if TYPE_CHECKING:
    from portscout.distributed import DaskRun
    from portscout.output.merge import PartHost

log = logging.getLogger("portscout")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # 141: what cat's shell reports when the reader left
COMMANDS = ("demo", "bench", "history", "show", "diff", "resume", "forget")


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
        " 'portscout bench' measures the threads study's strategies on this machine;"
        " 'portscout history', 'show ID', 'diff A B', 'resume ID', 'forget ID...' use the"
        " scan history; 'portscout merge FILE...' joins the -oJ --no-fold files of --shard"
        " parts.",
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
    p.add_argument("--seed", type=_seed, help="permutation key, for a repeatable probe order")
    p.add_argument("--shard", type=parse_shard, metavar="I/N",
                   help="scan only the I-th of N disjoint parts (1-based, as masscan); every"
                   " part needs the same --seed; join the parts' -oJ with 'portscout merge'"
                   )  # fmt: skip
    e = p.add_argument_group("engine")
    e.add_argument("--engine", default="auto", metavar="NAME", help=", ".join(engine_names()))
    e.add_argument("-sT", dest="engine", action=_ScanType, const=CONNECT_ENGINE,
                   help=f"TCP connect scan (the {CONNECT_ENGINE} engine)")  # fmt: skip
    e.add_argument("-sS", dest="engine", action=_ScanType, const=SYN_ENGINE,
                   help="SYN scan with raw sockets (root or CAP_NET_RAW)")  # fmt: skip
    e.add_argument("--workers", type=int, default=50, help="threadpool engine threads (50)")
    e.add_argument("--processes", type=int,
                   help="worker processes (default: one per core, up to 8); each takes whole"
                   " hosts, and one host's ports go to 2 at most")  # fmt: skip
    e.add_argument("--max-parallelism", type=int, metavar="N", help="probes in flight at most")
    add_dask_option(e)
    e.add_argument("--max-hostgroup", type=int, metavar="N", default=DEFAULT_HOSTGROUP,
                   help=f"hosts discovered and scanned together ({DEFAULT_HOSTGROUP});"
                   " more than 2^32 addresses are refused")  # fmt: skip
    add_service_options(p)
    add_timing_options(p)
    add_output_options(p)
    add_history_options(p, scan=True)
    # "-6" is an option, so argparse would take every negative number for one too and
    # "--max-retries -1" would lose its value: an exact option string still wins over a
    # number, so "-6" stays ours and "-1" goes back to being a value.
    p._has_negative_number_optionals.clear()
    return p


def add_history_options(p: argparse.ArgumentParser, *, scan: bool) -> None:
    """--db (and, for what scans, --stats-every and --no-db): one declaration for all."""
    history = p.add_argument_group("history and progress")
    h = history.add_mutually_exclusive_group()
    h.add_argument("--db", metavar="PATH", help=f"history database ({default_path()})")
    if not scan:
        return
    h.add_argument("--no-db", action="store_true", help="do not record this scan")
    history.add_argument("--stats-every", type=_duration("--stats-every"), metavar="TIME",
                   help="print a status line to stderr every TIME (e.g. 10s)")  # fmt: skip


def _seed(text: str) -> int:
    """A permutation key: 0 to 2**128 - 1 (what ``permutation`` accepts)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise OptionError(f"--seed must be an integer, got '{text}'") from None
    if not 0 <= value < 2**128:
        raise OptionError(f"--seed must be 0 to 2**128-1, got '{text}'")
    return value


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


def add_dask_option(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--dask", metavar="ADDRESS",
                   help="run the scan's shards on the Dask scheduler at ADDRESS, or on a local"
                   " cluster of N worker processes (local:N); needs portscout[dask]"
                   )  # fmt: skip


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


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` as (I, N); UsageError (exit 2) naming the bad value."""
    i, sep, n = text.partition("/")
    if not (sep and i.strip().isdigit() and n.strip().isdigit()):
        raise UsageError(f"invalid --shard '{text}': want I/N, e.g. 1/4")
    return int(i), int(n)


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
        shard=args.shard,
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
    p = _Parser(prog="portscout merge")
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
