"""The command line: ``portscout TARGETS [options]`` and ``portscout demo``.

Exit codes: 0 done, 1 the scan failed at run time, 2 bad usage (one line naming the bad
value, never a traceback), 130 interrupted by Ctrl-C (results found so far are printed).
All printing of the program lives here and in ``output/``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO

from portscout._version import __version__
from portscout.engines import engine_names
from portscout.errors import OptionError, PortscoutError, UsageError
from portscout.output import Writer
from portscout.output.csv_rows import CsvWriter
from portscout.output.grepable import GrepableWriter
from portscout.output.jsonl import JsonLinesWriter
from portscout.output.nmap_xml import NmapXmlWriter
from portscout.output.table import TableWriter, summary_line
from portscout.ports import service_names
from portscout.results import State
from portscout.scanner import Scan, ScanConfig, drive
from portscout.targets import read_target_file

log = logging.getLogger("portscout")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
COMMANDS = ("demo",)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        raise OptionError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="portscout",
        description="Scan TCP ports. Targets: addresses, names, CIDR, nmap ranges.",
        epilog="Commands: 'portscout demo' scans listeners in a private network namespace.",
    )
    p.add_argument("targets", nargs="*", metavar="TARGET", help="198.18.0.1, ::1, 198.18.0.0/24")
    p.add_argument("-V", "--version", action="version", version=f"portscout {__version__}")
    t = p.add_argument_group("targets")
    t.add_argument("-iL", dest="input_list", metavar="FILE", help="read targets from FILE")
    t.add_argument("--exclude", metavar="SPECS", help="comma-separated targets to skip")
    t.add_argument("--exclude-file", metavar="FILE", help="skip the targets listed in FILE")
    t.add_argument("-n", action="store_true", help="no reverse DNS (portscout never does it)")
    t.add_argument("-Pn", action="store_true", help="treat every host as up (the default)")
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
    e.add_argument("-sT", dest="engine", action="store_const", const="async",
                   help="TCP connect scan (the async engine)")  # fmt: skip
    e.add_argument("-sS", dest="engine", action="store_const", const="syn",
                   help="SYN scan with raw sockets (root or CAP_NET_RAW)")  # fmt: skip
    e.add_argument("--rate", type=float, metavar="PPS", help="syn engine: packets per second")
    e.add_argument("--workers", type=int, default=50, help="threadpool engine threads (50)")
    e.add_argument("--processes", type=int, help="worker processes (default: one per core)")
    e.add_argument("--max-parallelism", type=int, metavar="N", help="probes in flight at most")
    e.add_argument("--timeout", type=float, default=1.0, metavar="SECONDS",
                   help="connect timeout per attempt (1.0)")  # fmt: skip
    e.add_argument("--max-retries", type=int, default=1, metavar="N",
                   help="extra attempts after a timeout (1)")  # fmt: skip
    o = p.add_argument_group("output")
    o.add_argument("--open", dest="only_open", action="store_true", help="only open ports")
    o.add_argument("-v", "--verbose", action="count", default=0, help="show closed/filtered too")
    o.add_argument("-q", "--quiet", action="store_true", help="no table, only the summary")
    o.add_argument("-oJ", dest="json_out", metavar="FILE", help="JSON lines ('-' = stdout)")
    o.add_argument("-oX", dest="xml_out", metavar="FILE", help="nmap-compatible XML")
    o.add_argument("-oG", dest="grep_out", metavar="FILE", help="nmap grepable format")
    o.add_argument("--csv", dest="csv_out", metavar="FILE", help="CSV, one row per result")
    o.add_argument("-oA", dest="all_out", metavar="BASE",
                   help="BASE.xml, BASE.gnmap, BASE.jsonl and BASE.csv at once")  # fmt: skip
    o.add_argument("-d", "--debug", action="store_true", help="debug logging to stderr")
    return p


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
        timeout=args.timeout,
        max_retries=args.max_retries,
        max_in_flight=args.max_parallelism,
        workers=args.workers,
        rate=args.rate,
        processes=args.processes,
        key=args.seed,
        randomize=not args.ordered,
        keep_closed=_wants_closed(args),
        args=("portscout", *argv),
    )


def _file_outputs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(format, path) for every file output asked for; -oA adds one of each."""
    outputs = [
        (kind, path)
        for kind, path in (
            ("json", args.json_out),
            ("xml", args.xml_out),
            ("grep", args.grep_out),
            ("csv", args.csv_out),
        )
        if path
    ]
    if args.all_out:
        suffixes = {"xml": ".xml", "grep": ".gnmap", "json": ".jsonl", "csv": ".csv"}
        outputs += [(kind, args.all_out + suffix) for kind, suffix in suffixes.items()]
    if sum(1 for _, path in outputs if path == "-") > 1:
        raise UsageError("only one output may go to stdout ('-')")
    return outputs


def _wants_closed(args: argparse.Namespace) -> bool:
    """Whether closed results must be streamed (files list every result) or only counted."""
    return bool(_file_outputs(args)) and not args.only_open


def _make_writer(kind: str, stream: TextIO, names: dict[int, str], verbose: int) -> Writer:
    if kind == "json":
        return JsonLinesWriter(stream)
    if kind == "xml":
        return NmapXmlWriter(stream, service_names=names, verbose=verbose)
    if kind == "grep":
        return GrepableWriter(stream, service_names=names, verbose=verbose)
    return CsvWriter(stream, service_names=names)


def run_scan(config: ScanConfig, args: argparse.Namespace) -> int:
    """Run one scan with its writers; returns the exit code."""
    scan = Scan(config)
    show = {State.OPEN}
    if args.verbose and not args.only_open:
        show |= {State.CLOSED, State.FILTERED}
    names = service_names()
    with contextlib.ExitStack() as files:
        writers: list[Writer] = []
        streams: list[TextIO] = []
        human: TextIO = sys.stdout
        for kind, path in _file_outputs(args):
            if path == "-":
                stream: TextIO = sys.stdout
                human = sys.stderr
            else:
                try:
                    stream = files.enter_context(open(path, "w", encoding="utf-8", newline=""))
                except OSError as exc:
                    raise UsageError(f"cannot write '{path}': {exc.strerror}") from exc
            writers.append(_make_writer(kind, stream, names, args.verbose))
            streams.append(stream)
        if not args.quiet:
            writers.append(TableWriter(human, show=frozenset(show), service_names=names))
        for writer in writers:
            writer.start(scan.meta)
        code = EXIT_OK
        try:
            for batch in drive(scan):
                for result in batch:
                    if args.only_open and result.state is not State.OPEN:
                        continue
                    for writer in writers:
                        writer.add(result)
                for stream in streams:
                    stream.flush()  # whole lines on disk as the scan goes: tail -f works
        except KeyboardInterrupt:
            scan.report.interrupted = True
            code = EXIT_INTERRUPTED
        for writer in writers:
            writer.finish(scan.report)
        if args.quiet:
            print(summary_line(scan.report), file=human)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "demo":
            from portscout.demo import run_demo

            return run_demo(argv[1:])
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.debug else logging.WARNING,
            format="portscout: %(levelname)s: %(message)s",
        )
        return run_scan(config_from_args(args, argv), args)
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
