"""Scan 127.0.0.1 ports 1-65535 with every engine, nmap and the machine's floors; one table.

Run as root (it needs a network namespace of its own): ``sudo .venv/bin/python
benchmarks/loopback.py [--quick] [--json FILE]`` or ``make bench``. It refuses to run
anywhere but a fresh private namespace with no route out, which it enters before anything
else; every listener, scanner and floor runs inside it, and the only target is 127.0.0.1.

Rows are measured in interleaved rounds (one run of each tool per round), so a burst of
load on a shared machine hurts every tool alike; each row shows its best wall time. The
floors are the C programs of ../shared/floors (or $PORTSCOUT_FLOORS), built with cc -O2:
connect rows are compared with connect_floor, SYN rows with syn_floor. A second table
repeats thread-study.md's experiment: ports 30000-65535, one run per strategy.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import Measurement, best, build_launcher, compile_package, enter_isolation, measure

from portscout.demo import listeners
from portscout.engines import CONNECT_ENGINE, ENGINES

REPO = Path(__file__).resolve().parent.parent
TARGET = "127.0.0.1"
# port -> listener mode of portscout.demo.listeners: one in the ephemeral range 32768-60999
# (where a closed port can self-connect) and one that accepts and hangs up at once.
LISTENERS: dict[int, str] = {
    22: "banner",
    80: "accept",
    8080: "accept",
    9000: "accept-close",
    45678: "accept",
}
STUDY_RANGE = (30000, 65535)
# thread-study.md's timings for ports 30000-65535 on its author's machine, for reference.
STUDY_FIGURES = {
    "sequential": "3.7-3.9 s",
    "thread-per-port": "6.5 s",
    "threadpool 50": "3.0 s",
    "threadpool 100": "3.4 s",
}
SLOW_ENGINES = frozenset({"sequential", "thread-per-port"})  # one run each on 1-65535
GOAL_RATIO, GOAL_RSS_MB = 1.3, 60.0
GOAL_OUTPUT_RATIO = 1.15  # writing every port: -oJ FILE --no-fold at most 15% over -q

OPEN_JSON = re.compile(r'"port":(\d+),[^\n]*"state":"open"')
OPEN_GREPABLE = re.compile(r"(\d+)/open/")
OPEN_FLOOR = re.compile(r"^open (\d+)$", re.MULTILINE)
SUMMARY = re.compile(r"(\d+) open, (\d+) closed, (\d+) filtered")


@dataclass(slots=True, kw_only=True)
class Tool:
    """A row: a command, how often to run it, and how to read the open ports it found."""

    name: str
    kind: str  # "connect" or "syn": which floor it is held against
    cmd: tuple[str, ...]
    reps: int
    found: Callable[[Measurement], frozenset[int]]
    timeout: float = 300.0
    is_floor: bool = False
    runs: list[Measurement] = field(default_factory=list)
    found_sets: list[frozenset[int]] = field(default_factory=list)


def from_stdout(pattern: re.Pattern[str]) -> Callable[[Measurement], frozenset[int]]:
    return lambda m: frozenset(int(p) for p in pattern.findall(m.stdout))


def from_json_file(path: Path) -> Callable[[Measurement], frozenset[int]]:
    """Open ports in portscout's -oJ file (JSON lines), which the next run overwrites."""

    def read(_: Measurement) -> frozenset[int]:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            return frozenset()
        return frozenset(int(p) for p in OPEN_JSON.findall(text))

    return read


def portscout_tool(
    name: str, engine: str, ports: str, workdir: Path, *, reps: int, extra: Sequence[str] = ()
) -> Tool:
    out = workdir / f"{name.replace(' ', '-')}.jsonl"
    cmd: tuple[str, ...] = (sys.executable, "-m", "portscout", TARGET, "-p", ports)
    cmd += ("--engine", engine)
    cmd += (*extra, "-q", "--open", "-oJ", str(out))
    kind = "syn" if engine == "syn" else "connect"
    return Tool(name=name, kind=kind, cmd=cmd, reps=reps, found=from_json_file(out))


def build_floors(workdir: Path) -> dict[str, Path]:
    """Compile connect_floor.c and syn_floor.c with cc -O2 into ``workdir``."""
    source = Path(os.environ.get("PORTSCOUT_FLOORS", REPO.parent / "shared" / "floors"))
    built = {}
    for kind in ("connect", "syn"):
        src = source / f"{kind}_floor.c"
        if not src.is_file():
            sys.exit(f"loopback.py: floor source {src} not found (set PORTSCOUT_FLOORS)")
        exe = workdir / f"{kind}_floor"
        subprocess.run(["cc", "-O2", "-o", str(exe), str(src)], check=True)
        built[kind] = exe
    return built


def full_scan_tools(workdir: Path, floors: dict[str, Path], quick: bool) -> list[Tool]:
    def reps(n: int) -> int:
        return max(1, n // 2) if quick else n

    nmap = ("nmap", "-T5", "-n", "-Pn", "-p-", "-oG", "-", TARGET)
    tools = [
        Tool(name="connect_floor (C)", kind="connect", cmd=(str(floors["connect"]),),
             reps=reps(5), found=from_stdout(OPEN_FLOOR), timeout=60, is_floor=True),
        Tool(name="syn_floor (C)", kind="syn", cmd=(str(floors["syn"]),),
             reps=reps(5), found=from_stdout(OPEN_FLOOR), timeout=60, is_floor=True),
        Tool(name="nmap -sT -T5", kind="connect", cmd=(nmap[0], "-sT", *nmap[1:]),
             reps=reps(5), found=from_stdout(OPEN_GREPABLE), timeout=120),
        Tool(name="nmap -sS -T5", kind="syn", cmd=(nmap[0], "-sS", *nmap[1:]),
             reps=reps(5), found=from_stdout(OPEN_GREPABLE), timeout=120),
    ]  # fmt: skip
    for engine in ENGINES:
        label = f"portscout {engine}" + (" (default connect)" if engine == CONNECT_ENGINE else "")
        n = 1 if engine in SLOW_ENGINES else reps(5)
        tools.append(portscout_tool(label, engine, "1-65535", workdir, reps=n))
    tools.extend(output_tools(workdir, reps(5)))
    tools.extend(  # the same without the history database
        portscout_tool(
            f"portscout {engine} --no-db",
            engine,
            "1-65535",
            workdir,
            reps=reps(5),
            extra=("--no-db",),
        )
        for engine in ("async", "syn")
    )
    return tools


def baseline_tools(tools: Sequence[Tool], src: Path) -> list[Tool]:
    """The portscout rows of ``tools`` again, run from another checkout's ``src`` (a
    before/after comparison in one run, under the same load). Its scan history goes to a
    directory of its own: an older checkout refuses a database of a newer schema."""
    compile_package(src)
    history = Path(os.environ.get("XDG_DATA_HOME", tempfile.gettempdir())) / "baseline"
    prefix = ("env", f"PYTHONPATH={src.resolve()}", f"XDG_DATA_HOME={history}")
    return [
        Tool(name=f"{t.name} @base", kind=t.kind, cmd=(*prefix, *t.cmd), reps=t.reps,
             found=t.found, timeout=t.timeout)
        for t in tools
        if t.name.startswith("portscout")
    ]  # fmt: skip


def from_summary(m: Measurement) -> frozenset[int]:
    """-q prints only the summary: the listeners when it counts as many open ports (a
    count, not the set: the -oJ row beside it checks the set)."""
    found = SUMMARY.search(m.stdout)
    return frozenset(LISTENERS) if found and int(found.group(1)) == len(LISTENERS) else frozenset()


def output_tools(workdir: Path, reps: int) -> list[Tool]:
    """What writing every port costs: the default engine with -q, and with
    -q -oJ FILE --no-fold (a JSON line for each of the 65,535 ports); no history database."""
    out = workdir / "outputs-no-fold.jsonl"
    base: tuple[str, ...] = (sys.executable, "-m", "portscout", TARGET, "-p", "1-65535")
    base += ("--no-db", "-q")
    return [
        Tool(name="portscout outputs -q", kind="syn", cmd=base, reps=reps, found=from_summary),
        Tool(name="portscout outputs -q -oJ --no-fold", kind="syn",
             cmd=(*base, "-oJ", str(out), "--no-fold"), reps=reps, found=from_json_file(out)),
    ]  # fmt: skip


def study_tools(workdir: Path) -> list[Tool]:
    ports = "-".join(map(str, STUDY_RANGE))
    return [
        portscout_tool("sequential", "sequential", ports, workdir, reps=1),
        portscout_tool("thread-per-port", "thread-per-port", ports, workdir, reps=1),
        portscout_tool(
            "threadpool 50", "threadpool", ports, workdir, reps=1, extra=("--workers", "50")
        ),
        portscout_tool(
            "threadpool 100", "threadpool", ports, workdir, reps=1, extra=("--workers", "100")
        ),
    ]


def run_rounds(tools: Sequence[Tool], label: str, launcher: Path) -> None:
    """Run every tool ``reps`` times, one run of each per round (bounded by max reps)."""
    for rnd in range(max(t.reps for t in tools)):
        for tool in tools:
            if rnd >= tool.reps:
                continue
            m = measure(tool.cmd, timeout=tool.timeout, launcher=launcher)
            tool.runs.append(m)
            tool.found_sets.append(tool.found(m) if m.ok else frozenset())
            status = "" if m.ok else f"  FAILED rc={m.returncode} timed_out={m.timed_out}"
            print(
                f"  [{label} round {rnd + 1}] {tool.name:28} {m.wall:7.3f} s{status}",
                file=sys.stderr,
            )


def exact_text(tool: Tool, expected: frozenset[int]) -> str:
    good = sum(1 for m, f in zip(tool.runs, tool.found_sets, strict=True) if m.ok and f == expected)
    return "yes" if good == len(tool.runs) else f"NO ({good}/{len(tool.runs)} runs)"


def mismatches(tools: Sequence[Tool], expected: frozenset[int]) -> list[str]:
    notes = []
    for tool in tools:
        for i, (m, f) in enumerate(zip(tool.runs, tool.found_sets, strict=True), 1):
            if not m.ok:
                notes.append(f"{tool.name} run {i}: rc={m.returncode} timed_out={m.timed_out}")
            elif f != expected:
                extra, missing = sorted(f - expected), sorted(expected - f)
                notes.append(f"{tool.name} run {i}: extra open {extra}, missing {missing}")
            summary = SUMMARY.search(m.stdout)
            if summary and int(summary.group(3)):
                notes.append(f"{tool.name} run {i}: {summary.group(3)} ports reported filtered")
    return notes


def mb(kb: int) -> str:
    return f"{kb / 1024:.1f}"


def ratio(a: float, b: float | None) -> str:
    return f"{a / b:.2f}x" if b else "-"


def full_table(tools: Sequence[Tool], expected: frozenset[int]) -> list[str]:
    floor = {t.kind: best(t.runs).wall for t in tools if t.is_floor}
    nmap_st = next(best(t.runs).wall for t in tools if t.name.startswith("nmap -sT"))
    rows = [
        "| tool | kind | runs | wall best (s) | cpu (s) | peak RSS (MB) | tree PSS (MB) "
        "| x floor | x nmap -sT | exact |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for t in tools:
        b = best(t.runs)
        rss = max(m.peak_rss_kb for m in t.runs)
        tree = max(m.tree_pss_kb for m in t.runs)
        rows.append(
            f"| {t.name} | {t.kind} | {len(t.runs)} | {b.wall:.3f} | {b.cpu:.2f} | {mb(rss)} "
            f"| {mb(tree)} | {ratio(b.wall, floor.get(t.kind))} | {ratio(b.wall, nmap_st)} "
            f"| {exact_text(t, expected)} |"
        )
    return rows


def study_table(tools: Sequence[Tool], expected: frozenset[int]) -> list[str]:
    rows = [
        "| strategy | wall (s) | cpu (s) | peak RSS (MB) | study (its machine) | exact |",
        "|---|--:|--:|--:|--:|---|",
    ]
    for t in tools:
        m = best(t.runs)
        rows.append(
            f"| {t.name} | {m.wall:.3f} | {m.cpu:.2f} | {mb(m.peak_rss_kb)} "
            f"| {STUDY_FIGURES[t.name]} | {exact_text(t, expected)} |"
        )
    return rows


def goals(tools: Sequence[Tool], expected: frozenset[int]) -> dict[str, object]:
    """The goals for the full loopback scan (the default engine within GOAL_RATIO of the
    connect floor, exact, under GOAL_RSS_MB), judged on this run."""
    floor = best(next(t for t in tools if t.is_floor and t.kind == "connect").runs).wall
    default = next((t for t in tools if t.name.endswith("(default connect)")), None)
    if default is None:  # --only without the default engine's row
        return output_goal(tools)
    engines = [t for t in tools if t.name.startswith("portscout")]
    ratio_ = best(default.runs).wall / floor
    rss_mb = max(m.peak_rss_kb for m in default.runs) / 1024
    tree_mb = max(m.tree_pss_kb for m in default.runs) / 1024
    return {
        "default_engine": default.name,
        "ratio_to_connect_floor": round(ratio_, 3),
        "ratio_met": ratio_ <= GOAL_RATIO,
        "default_exact": exact_text(default, expected) == "yes",
        "peak_rss_mb": round(rss_mb, 1),
        "tree_pss_mb": round(tree_mb, 1),
        "rss_met": rss_mb < GOAL_RSS_MB,
        "every_engine_exact": all(exact_text(t, expected) == "yes" for t in engines),
        **output_goal(tools),
    }


def output_goal(tools: Sequence[Tool]) -> dict[str, object]:
    """-oJ --no-fold's best wall time over -q's, when both rows ran."""
    rows = {t.name: best(t.runs).wall for t in tools if t.name.startswith("portscout outputs")}
    if len(rows) < 2:
        return {}
    ratio_ = rows["portscout outputs -q -oJ --no-fold"] / rows["portscout outputs -q"]
    return {"no_fold_json_over_quiet": round(ratio_, 3), "output_met": ratio_ <= GOAL_OUTPUT_RATIO}


def machine() -> dict[str, object]:
    def output(cmd: Sequence[str]) -> str:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
        return done.stdout.strip()

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), "?")  # fmt: skip
    dirty = output(["git", "status", "--porcelain", "--", "src"]).splitlines()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nmap": output(["nmap", "--version"]).splitlines()[0],
        "commit": output(["git", "rev-parse", "--short", "HEAD"]),
        "src_files_changed_since_commit": len(dirty),
        "loadavg_start": loadavg(),
    }


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="fewer repetitions (about half)")
    p.add_argument("--json", metavar="FILE", help="also write every raw figure to FILE")
    p.add_argument(
        "--only",
        metavar="NAMES",
        help="comma-separated substrings: run only the portscout rows whose name has one"
        " (floors and nmap always run; the study table is skipped)",
    )
    p.add_argument(
        "--baseline",
        metavar="SRC",
        help="also run the portscout rows from SRC (the src/ of another checkout, e.g. a git"
        " worktree of the previous commit): before and after in one run",
    )
    return p.parse_args(argv)


def dump(path: str, info: dict[str, object], groups: dict[str, Sequence[Tool]]) -> None:
    def runs(t: Tool) -> list[dict[str, object]]:
        return [
            {"wall": m.wall, "cpu_user": m.cpu_user, "cpu_sys": m.cpu_sys,
             "peak_rss_kb": m.peak_rss_kb, "tree_pss_kb": m.tree_pss_kb,
             "returncode": m.returncode, "timed_out": m.timed_out, "open": sorted(f)}
            for m, f in zip(t.runs, t.found_sets, strict=True)
        ]  # fmt: skip

    data = dict(info)
    for key, tools in groups.items():
        data[key] = [{"tool": t.name, "kind": t.kind, "cmd": t.cmd, "runs": runs(t)} for t in tools]
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    compile_package()
    enter_isolation("loopback.py")  # before any thread, listener or child process

    expected = frozenset(LISTENERS)
    study_expected = frozenset(p for p in LISTENERS if STUDY_RANGE[0] <= p <= STUDY_RANGE[1])
    info = machine()
    with tempfile.TemporaryDirectory(prefix="portscout-bench-") as tmp:
        workdir = Path(tmp)
        os.environ["XDG_DATA_HOME"] = str(workdir)  # scan history of the runs goes here
        floors = build_floors(workdir)
        launcher = build_launcher(workdir)
        full = full_scan_tools(workdir, floors, args.quick)
        study = study_tools(workdir)
        if args.only:
            wanted = args.only.split(",")
            full = [t for t in full if t.is_floor or t.name.startswith("nmap")
                    or any(w in t.name for w in wanted)]  # fmt: skip
            study = []
        if args.baseline:
            full += baseline_tools(full, Path(args.baseline))
        with listeners({("127.0.0.1", p): mode for p, mode in LISTENERS.items()}, lifetime=3600.0):
            run_rounds(full, "1-65535", launcher)
            if study:
                run_rounds(study, "30000-65535", launcher)
    info["loadavg_end"] = loadavg()
    info["expected_open"] = sorted(expected)
    info["goals"] = goals(full, expected)
    print(
        f"\n{info['date']}, {info['nproc']} cores ({info['cpu']}), kernel {info['kernel']}, "
        f"Python {info['python']}, {info['nmap']}, portscout {info['commit']}; "
        f"load {info['loadavg_start']} -> {info['loadavg_end']}"
    )
    print(f"\n127.0.0.1 ports 1-65535, open: {sorted(expected)}\n")
    print("\n".join(full_table(full, expected)))
    print(f"\nthread-study.md: ports 30000-65535, open: {sorted(study_expected)}, one run each\n")
    print("\n".join(study_table(study, study_expected)))
    notes = mismatches(full, expected) + mismatches(study, study_expected)
    print("\n" + ("\n".join(f"note: {n}" for n in notes) if notes else "every run exact"))
    print(f"goals: {json.dumps(info['goals'])}")
    if args.json:
        dump(args.json, info, {"full": full, "study": study})
    return 0


if __name__ == "__main__":
    sys.exit(main())
