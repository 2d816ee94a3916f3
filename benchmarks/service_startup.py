"""What ``-sV`` on one port costs from start to end: ``portscout 127.0.0.1 -p 80 -sV`` with
nmap's file, its signature cache cold (an empty ``$XDG_CACHE_HOME``) and warm (filled by
an earlier run), next to ``nmap -sV`` on the same port, one run each per round, rounds
interleaved (issue 13: one port must not pay for preparing thousands of patterns).

Run as root: ``.venv/bin/python benchmarks/service_startup.py [--rounds N] [--port P]``.
It enters a fresh private network namespace with no route out before anything else and
starts Debian's nginx there on 127.0.0.1 (``portscout.lab.servers``). Per tool: wall and
CPU time (user + system of the whole process, from ``wait4``), best and median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness import Measurement, compile_package, enter_isolation, measure

from portscout.lab.servers import ServerError, running

TARGET = "127.0.0.1"


@dataclass(slots=True)
class Row:
    name: str
    cmd: tuple[str, ...]
    cold: bool = False  # empty the cache directory before each run
    runs: list[Measurement] = field(default_factory=list)


def rows(port: int, cache: Path) -> list[Row]:
    portscout = ("env", f"XDG_CACHE_HOME={cache}", sys.executable, "-m", "portscout",
                 TARGET, "-p", str(port), "-Pn", "-sV", "--no-db", "-q", "-oJ", "-")  # fmt: skip
    return [
        Row("nmap -sV", ("nmap", "-sV", "-Pn", "-n", "-p", str(port), "-oX", "-", TARGET)),
        Row("portscout -sV, cache cold", portscout, cold=True),
        Row("portscout -sV, cache warm", portscout),
    ]


def empty(directory: Path) -> None:
    for path in sorted(directory.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()


def run(table: list[Row], rounds: int, cache: Path) -> None:
    warm = table[-1]
    if not measure(warm.cmd, timeout=300).ok:  # fills the cache for the warm rows
        raise SystemExit("portscout -sV failed")
    for _ in range(rounds):
        for row in table:
            if row.cold:
                empty(cache)
            m = measure(row.cmd, timeout=300)
            if not m.ok:
                raise SystemExit(f"{row.name} failed ({m.returncode})")
            row.runs.append(m)
        if not measure(warm.cmd, timeout=300).ok:  # the cold row emptied it: fill it again
            raise SystemExit("portscout -sV failed")


def report(table: list[Row]) -> None:
    print("| tool | wall best | wall median | CPU best | CPU median | CPU x nmap (median) |")
    print("| --- | --- | --- | --- | --- | --- |")
    base = statistics.median(m.cpu for m in table[0].runs)
    for row in table:
        walls, cpus = [m.wall for m in row.runs], [m.cpu for m in row.runs]
        print(f"| {row.name} | {min(walls):.3f} s | {statistics.median(walls):.3f} s | "
              f"{min(cpus):.3f} s | {statistics.median(cpus):.3f} s | "
              f"{statistics.median(cpus) / base:.2f} |")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs of each, interleaved")
    parser.add_argument("--port", type=int, default=80, choices=(80, 443))
    args = parser.parse_args()
    enter_isolation("service_startup.py")
    compile_package()
    try:
        with running(["nginx"]), tempfile.TemporaryDirectory(prefix="sv-cache-") as tmp:
            table = rows(args.port, Path(tmp))
            run(table, args.rounds, Path(tmp))
    except ServerError as exc:
        print(f"cannot start nginx (make test installs it): {exc}", file=sys.stderr)
        return 2
    report(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
