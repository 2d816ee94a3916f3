"""The command line's options: one parser for a scan (``show``, ``resume`` and the other
history commands reuse its option groups) and their conversion into a ``ScanConfig`` and
``OutputOptions``. A bad value is an ``OptionError``: one line and exit code 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import NoReturn

from portscout._version import __version__
from portscout.engines import CONNECT_ENGINE, SYN_ENGINE, engine_names
from portscout.errors import OptionError, UsageError
from portscout.output.session import OutputOptions, file_outputs
from portscout.scanner import DEFAULT_HOSTGROUP, ScanConfig
from portscout.store import default_path
from portscout.targets import read_target_file
from portscout.timing import TimingPolicy, parse_duration, parse_template


class Parser(argparse.ArgumentParser):
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
    p = Parser(
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
