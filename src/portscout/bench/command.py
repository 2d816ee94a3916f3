"""``portscout bench [--quick] [--json FILE] [--out DIR] [--here] [--only NAMES]``.

As root it moves into a private network namespace with only ``lo`` (before any thread),
opens ``portscout.demo``'s listeners on 127.0.0.1, runs each strategy's scan of the
threads study's range in a child process of its own, then builds a lab (one host per round
trip of ``RTTS_MS`` behind the delay line) and runs them all again there. Without the
privilege it refuses (exit 2) unless ``--here`` asks for the loopback part in the current
namespace. Prints a table and an explanation made from the figures; ``--json`` writes every
figure, ``--out`` the plots. Ctrl-C stops measuring and reports what was measured (130).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.table import Table

from portscout._version import __version__
from portscout.bench.explain import by_place, explain, fastest
from portscout.bench.measure import Figures, run_child
from portscout.bench.strategies import (
    LAB_OPEN,
    RTTS_MS,
    Place,
    Strategy,
    lab_address,
    places,
    sharded_processes,
    strategies,
)
from portscout.demo import DEMO_LISTENERS, LOOPBACK, listeners
from portscout.engines.rawsock import raw_sockets_allowed
from portscout.errors import OptionError, ScanError, UsageError
from portscout.lab import DelayLineStats, Host, Lab, Link, ListenerMode
from portscout.lab.netns import NamespaceError, check_isolated, enter_private_netns

EXIT_OK, EXIT_MISMATCH, EXIT_INTERRUPTED = 0, 1, 130
INSTALL_HINT = "pip install 'portscout[bench]'"
LAB_MODES = (ListenerMode.BANNER, ListenerMode.ACCEPT, ListenerMode.CLOSE)
LIFETIME = 4 * 3600.0  # s: listeners and lab stop by themselves after this, at the latest
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise OptionError(f"bench: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="portscout bench",
        description="The threads study on this machine: every strategy's scan of 127.0.0.1, "
        "then of lab hosts 1, 10 and 50 ms away; a table, an explanation from the figures, "
        "plots. Root: it builds a private network namespace.",
    )
    p.add_argument(
        "--quick", action="store_true", help="fewer ports (loopback 5,000, lab 100): about 30 s"
    )
    p.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    p.add_argument("--out", metavar="DIR", help="write the plots (PNG and SVG) into DIR")
    p.add_argument("--here", action="store_true", help="scan 127.0.0.1 in this namespace (no lab)")
    p.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="run each N times, keep the fastest"
    )
    p.add_argument(
        "--only", metavar="NAMES", help="comma-separated words: only strategies named with one"
    )
    return p


@dataclass(slots=True)
class Run:
    """What one ``bench`` measured so far, and what it was asked."""

    machine: dict[str, object]
    places: list[Place]
    strategies: list[Strategy]
    repeat: int = 1
    figures: list[Figures] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False


def machine(isolated: bool) -> dict[str, object]:
    """Cores, CPU model, Python, kernel, portscout and the load: the header's facts."""
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        names = (ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name"))
        model = next(names, "?")
    return {
        "cores": os.cpu_count() or 1,
        "cpu": model,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": f"{platform.system()} {platform.release()}",
        "portscout": __version__,
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "namespace": "private (only lo)" if isolated else "this one (--here)",
    }


def have_matplotlib() -> bool:
    """Whether the plots can be drawn: matplotlib imports (the ``bench`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def listening_ports() -> set[int]:
    """Ports something already listens on for 127.0.0.1 here (bound to it or to any
    address), from /proc/net/tcp and tcp6: found open by any exact scan."""
    found: set[int] = set()
    wanted = {"0100007F", "00000000", "0" * 32, "0000000000000000FFFF00000100007F"}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                address, port = fields[1].split(":")
                if fields[3] == LISTEN and address in wanted:
                    found.add(int(port, 16))
    return found


def enter_namespace(here: bool) -> None:
    """Move into a private namespace, or refuse in one line unless ``here`` says not to."""
    if here:
        return
    try:
        enter_private_netns()
        check_isolated()
    except (NamespaceError, OSError) as exc:
        raise UsageError(
            f"bench needs a private network namespace, which needs root ({exc}); run it as "
            "root, or pass --here to scan 127.0.0.1 in this namespace (loopback only, no lab)"
        ) from exc


def choose(args: argparse.Namespace, console: Console) -> list[Strategy]:
    chosen = strategies(sharded_processes())
    if args.only:
        words = [w.strip() for w in args.only.split(",") if w.strip()]
        chosen = [s for s in chosen if any(w in s.name for w in words)]
        if not chosen:
            raise OptionError(f"bench: --only '{args.only}' names no strategy")
    if not raw_sockets_allowed():
        console.print("syn strategies skipped: raw sockets need root or CAP_NET_RAW", style="dim")
        chosen = [s for s in chosen if s.engine != "syn"]
    return chosen


def run_bench(argv: Sequence[str]) -> int:
    """The command; returns the exit code (usage errors raise ``UsageError``)."""
    args = build_parser().parse_args(list(argv))
    if not 1 <= args.repeat <= 100:
        raise OptionError(f"bench: --repeat must be 1 to 100, got {args.repeat}")
    if args.out and not have_matplotlib():
        raise UsageError(f"bench: plots need matplotlib: {INSTALL_HINT}")
    enter_namespace(args.here)  # before any thread: unshare moves only the calling thread
    # markup off: strategy names, errors and CPU models are printed as they are
    console = Console(highlight=False, markup=False)
    if not console.is_terminal:  # a file or a pipe: room for the table's seven columns
        console = Console(highlight=False, markup=False, width=max(console.width, 100))
    progress = Console(stderr=True, highlight=False, markup=False)
    existing = listening_ports() if args.here else set()
    wanted = places(args.quick, (), lab=not args.here)
    low, high = wanted[0].ports
    # --here: only ports free and in the scanned range (22 and 80 need root to bind)
    opened = {
        p: m for p, m in DEMO_LISTENERS.items()
        if not args.here or (low <= p <= high and p not in existing)
    }  # fmt: skip
    expected = tuple(sorted(set(opened) | existing))
    run = Run(
        machine(not args.here),
        places(args.quick, expected, lab=not args.here),
        choose(args, progress),
        repeat=args.repeat,
    )
    print_header(console, run, args.quick)
    try:
        measure_all(run, opened, progress)
    except KeyboardInterrupt:
        run.interrupted = True
    return report(run, args, console)


def print_header(console: Console, run: Run, quick: bool) -> None:
    m = run.machine
    repeat = f" --repeat {run.repeat} (fastest shown)" if run.repeat > 1 else ""
    console.print(
        f"portscout bench{' --quick' if quick else ''}{repeat}: {m['cores']} cores ({m['cpu']}), "
        f"{m['python']}, {m['kernel']}, portscout {m['portscout']}, load {m['loadavg']}, "
        f"network namespace: {m['namespace']}"
    )
    for place in run.places:
        console.print(
            f"  {place.name}: {place.target} ports {place.port_spec} "
            f"({place.port_count:,}), open: {', '.join(map(str, place.expected_open)) or '-'}"
        )


def measure_all(run: Run, opened: dict[int, str], progress: Console) -> None:
    """Each strategy at each place, one child at a time, loopback first."""
    loop, *far = run.places
    with contextlib.ExitStack() as stack:
        wanted = {(LOOPBACK, p): m for p, m in opened.items()}
        try:
            stack.enter_context(listeners(wanted, lifetime=LIFETIME))
        except OSError as exc:
            raise ScanError(f"bench: cannot listen on {LOOPBACK} {sorted(opened)}: {exc}") from exc
        measure_place(run, loop, progress)
    if far:
        progress.print(f"building the lab: {len(far)} hosts behind the delay line")
        with lab(far) as built:
            for place in far:
                measure_place(run, place, progress, built)


def measure_place(run: Run, place: Place, progress: Console, built: Lab | None = None) -> None:
    """Each strategy ``run.repeat`` times in a row; its fastest exact run stands for it
    (every run's wall time kept in ``walls``): one run on a shared machine can be an outlier."""
    for strategy in run.strategies:
        tries = []
        for _ in range(run.repeat):
            before = built.delay_line_stats() if built else None
            f = run_child(strategy, place)
            if built and before:
                f = with_delay_line(f, before, built.delay_line_stats())
            tries.append(f)
            verdict = "exact" if f.exact else f"NOT EXACT: {f.error or list(f.found_open)}"
            progress.print(f"  {place.name:>8}  {strategy.name:24} {f.wall:8.3f} s  {verdict}")
        best = min([f for f in tries if f.exact] or tries, key=lambda f: f.wall)
        run.figures.append(replace(best, walls=tuple(f.wall for f in tries)))


def with_delay_line(f: Figures, before: DelayLineStats, after: DelayLineStats) -> Figures:
    """``f`` with what the delay line did meanwhile: a dropped packet or a late release
    means the lab, not only the strategy, was measured (``benchmarks/lab.py`` does the same)."""
    pairs = list(
        zip((before.outbound, before.inbound), (after.outbound, after.inbound), strict=True)
    )
    dropped = sum(a.queue_drops + a.write_errors - b.queue_drops - b.write_errors for b, a in pairs)
    released = sum(a.forwarded - b.forwarded for b, a in pairs)
    late = sum(a.late_sum - b.late_sum for b, a in pairs)
    return replace(f, lab_dropped=dropped, lab_late_ms=1000 * late / released if released else 0.0)


@contextlib.contextmanager
def lab(far: Sequence[Place]) -> Iterator[Lab]:
    """One lab host per place, each behind its own round trip; the same open ports."""
    hosts = [
        Host(
            address=IPv4Address(lab_address(p.rtt_ms or 0)),
            open=dict(zip(LAB_OPEN, LAB_MODES, strict=True)),
            link=Link(rtt=(p.rtt_ms or 0) / 1000),
        )
        for p in far
    ]
    with Lab(hosts, max_seconds=LIFETIME) as built:
        yield built


def table(run: Run) -> Table:
    t = Table(title="Wall time, CPU time and peak memory per strategy", title_justify="left")
    for name, justify in (("place", "left"), ("strategy", "left"), ("wall (s)", "right"),
                          ("CPU (s)", "right"), ("cores busy", "right"),
                          ("peak MB", "right"), ("exact", "left")):  # fmt: skip
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    best = {name: fastest(runs).strategy for name, runs in by_place(run.figures).items()}
    for i, place in enumerate(run.places):
        rows = [f for f in run.figures if f.place == place.name]
        if i and rows:
            t.add_section()
        for j, f in enumerate(rows):
            style = "bold" if best.get(place.name) == f.strategy else None
            failed = f.error is not None
            t.add_row(
                place.name if j == 0 else "", f.strategy,
                "-" if failed else f"{f.wall:.3f}", "-" if failed else f"{f.cpu:.2f}",
                "-" if failed else f"{f.cores:.2f}", "-" if failed else f"{f.peak_rss_mb:.1f}",
                "yes" if f.exact else "NO", style=style,
            )  # fmt: skip
    return t


def report(run: Run, args: argparse.Namespace, console: Console) -> int:
    """Table, explanation, plots and JSON; the exit code."""
    console.print()
    console.print(table(run))
    cores = int(str(run.machine["cores"]))
    sentences = explain(run.figures, cores)
    for sentence in sentences:
        console.print(f"- {sentence}")
    plots: list[Path] = []
    if args.out and run.figures:
        from portscout.bench.plots import write_plots

        plots = write_plots(run.figures, cores, Path(args.out))
        console.print(f"plots: {', '.join(str(p) for p in plots)}")
    elif not args.out:
        console.print(f"plots: --out DIR (needs matplotlib: {INSTALL_HINT})")
    if args.json:
        Path(args.json).write_text(json.dumps(as_json(run, sentences, plots), indent=2) + "\n")
    wrong = [f for f in run.figures if not f.exact]
    for f in wrong:
        why = f.error or f"found open {list(f.found_open)}, filtered {f.filtered}"
        console.print(f"not exact: {f.strategy} at {f.place}: {why}", style="bold")
    if run.interrupted:
        console.print("bench: interrupted; the figures above are those measured before")
        return EXIT_INTERRUPTED
    return EXIT_MISMATCH if wrong else EXIT_OK


def as_json(run: Run, sentences: list[str], plots: list[Path]) -> dict[str, object]:
    return {
        "machine": run.machine,
        "places": [
            {
                "name": p.name,
                "target": p.target,
                "ports": p.port_spec,
                "port_count": p.port_count,
                "rtt_ms": p.rtt_ms,
                "expected_open": list(p.expected_open),
            }
            for p in run.places
        ],
        "strategies": [
            {
                "name": s.name,
                "engine": s.engine,
                "workers": s.workers if s.pool else None,
                "processes": s.processes,
            }
            for s in run.strategies
        ],
        "runs": [f.as_json() for f in run.figures],
        "fastest": {name: fastest(runs).strategy for name, runs in by_place(run.figures).items()},
        "explanation": sentences,
        "plots": [str(p) for p in plots],
        "interrupted": run.interrupted,
        "rtts_ms": list(RTTS_MS),
    }
