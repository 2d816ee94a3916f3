"""Timing one command: wall time, CPU time and peak memory of a child process and its tree.

Owns the measuring, nothing about what is measured: the scripts beside it (``loopback.py``)
build the commands, start listeners and judge the output. Imports only the standard library,
never ``portscout``, so that a benchmark measures the scanner and not itself.

CPU time and ``ru_maxrss`` come from ``wait4`` on the child: the kernel folds in the
figures of every descendant the child has reaped (nmap's, the floors' and portscout's
worker processes), so CPU time is the whole tree's, while ``ru_maxrss`` is the largest
single process, not a sum. Linux keeps ``ru_maxrss`` across ``exec``, so a child forked
straight from this (30 MB) Python process would report at least 30 MB; ``spawn.c``, a tiny
C launcher built by ``build_launcher``, forks the command instead and reports its figures
(and its own wall time, without Python's fork and exec). For the whole tree, a sampler thread
adds up the PSS (proportional set size: a page mapped by n processes counts 1/n in each, so
forked workers sharing their parent's pages are not counted twice) of the command and its
descendants every ``SAMPLE_INTERVAL`` seconds (``tree_pss_kb``: sampled, so it can miss a
short peak), and their RSS too (``tree_rss_kb``: each process's resident pages summed, shared
pages counted once per process that maps them; an upper bound of what the tree holds, and
what "RSS summed over the process tree" means in the issues).
"""

from __future__ import annotations

import compileall
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from portscout.lab.netns import NamespaceError, check_isolated, enter_private_netns

PACKAGE_SOURCE = Path(__file__).resolve().parent.parent / "src" / "portscout"
SAMPLE_INTERVAL = 0.02  # seconds between two samples of the process tree's memory
MAX_TREE = 4096  # processes followed per sample, at most


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """One run of one command. Times in seconds, memory in KiB."""

    cmd: tuple[str, ...]
    wall: float
    cpu_user: float
    cpu_sys: float
    peak_rss_kb: int  # ru_maxrss: the largest single process of the tree
    tree_pss_kb: int  # sampled peak of the tree's summed PSS (0 if never sampled)
    tree_rss_kb: int = 0  # sampled peak of the tree's summed RSS (0 if never sampled)
    returncode: int
    timed_out: bool
    stdout: str

    @property
    def cpu(self) -> float:
        return self.cpu_user + self.cpu_sys

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def _children(pid: int) -> list[int]:
    """Children forked by ``pid``'s main thread (/proc/PID/task/PID/children)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of ``pid`` in KiB; PSS is private pages plus a 1/n share of pages n
    processes map. (0, 0) for a process gone meanwhile."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
                    break  # Rss comes first
    except (OSError, IndexError, ValueError):
        pass
    return rss, pss


def tree_memory_kb(root: int, *, include_root: bool = True) -> tuple[int, int]:
    """Summed (RSS, PSS) in KiB of ``root``'s descendants, and of ``root`` itself if
    ``include_root``. Follows at most ``MAX_TREE`` processes."""
    rss = pss = 0
    todo, seen = [root], 0
    while todo and seen < MAX_TREE:
        pid = todo.pop()
        if seen or include_root:
            one_rss, one_pss = _memory_kb(pid)
            rss, pss = rss + one_rss, pss + one_pss
        seen += 1
        todo.extend(_children(pid))
    return rss, pss


def tree_pss_kb(root: int, *, include_root: bool = True) -> int:
    """PSS in KiB of ``root``'s descendants, and of ``root`` itself if ``include_root``."""
    return tree_memory_kb(root, include_root=include_root)[1]


class _TreeSampler(threading.Thread):
    """Samples ``tree_memory_kb(pid)`` until stopped or ``deadline`` (monotonic) passes;
    keeps the peak of each sum."""

    def __init__(self, pid: int, deadline: float, *, include_root: bool) -> None:
        super().__init__(daemon=True)
        self.pid, self.deadline = pid, deadline
        self.peak_kb = self.peak_rss_kb = 0
        self.include_root = include_root
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set() and time.monotonic() < self.deadline:
            rss, pss = tree_memory_kb(self.pid, include_root=self.include_root)
            self.peak_kb = max(self.peak_kb, pss)
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.stopped.wait(SAMPLE_INTERVAL)


def enter_isolation(script: str) -> None:
    """Move this process into a fresh network namespace with no route out and prove it,
    or exit (code 2) with the reason: everything a benchmark sends stays inside. Call it
    before any thread or child process (they would stay behind)."""
    try:
        enter_private_netns()
        check_isolated()
    except (NamespaceError, OSError) as exc:
        where = f"sudo .venv/bin/python benchmarks/{script}"
        print(f"{script}: refusing to run outside a private network namespace ({exc});"
              f" run it as root: {where}", file=sys.stderr)  # fmt: skip
        raise SystemExit(2) from None


def compile_package(source: Path = PACKAGE_SOURCE) -> None:
    """Write portscout's bytecode, as ``pip install`` does for a user.

    An editable checkout gets its ``.pyc`` files only when Python may write them; under
    ``PYTHONDONTWRITEBYTECODE=1`` (set on the machines here) every run would compile every
    module again, about 25 ms of each scan's start-up that no installed copy pays.
    """
    compileall.compile_dir(source, quiet=1)


def build_launcher(workdir: Path) -> Path:
    """Compile spawn.c (beside this file) with cc -O2 into ``workdir``; the launcher's path."""
    exe = workdir / "spawn"
    source = Path(__file__).with_name("spawn.c")
    subprocess.run(["cc", "-O2", "-o", str(exe), str(source)], check=True)
    return exe


def measure(
    cmd: Sequence[str], *, timeout: float = 300.0, launcher: Path | None = None
) -> Measurement:
    """Run ``cmd`` to completion (killed with its session after ``timeout`` s) and measure it.

    With ``launcher`` (see ``build_launcher``) the figures are those of ``cmd`` alone;
    without, they include Python's fork (wall) and Python's RSS (a floor on peak RSS).
    The child starts a session of its own, so a timeout kills its whole process tree.
    stdout goes to a temporary file (no pipe to fill up while we wait); stderr is inherited.
    """
    killed = threading.Event()
    reaped = threading.Lock()  # held from reaping on, so the timer never signals a reused pid
    with tempfile.TemporaryDirectory(prefix="measure-") as tmp:
        report = Path(tmp) / "report"
        argv = [str(launcher), str(report), *cmd] if launcher else list(cmd)
        with open(Path(tmp) / "stdout", "w+", encoding="utf-8") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=out, start_new_session=True)
            sampler = _TreeSampler(
                proc.pid, time.monotonic() + timeout, include_root=launcher is None
            )

            def kill() -> None:
                with reaped:
                    if proc.returncode is None:
                        killed.set()
                        os.killpg(proc.pid, signal.SIGKILL)

            timer = threading.Timer(timeout, kill)
            timer.daemon = True
            timer.start()
            sampler.start()
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            with reaped:
                proc.returncode = os.waitstatus_to_exitcode(status)
            timer.cancel()
            sampler.stopped.set()
            sampler.join()
            out.seek(0)
            text = out.read()
        figures = (wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss, proc.returncode)
        if launcher and report.exists():
            w, user, sys_, rss, code = report.read_text().split()
            figures = (float(w), float(user), float(sys_), int(rss), int(code))
    return Measurement(
        cmd=tuple(cmd),
        wall=figures[0],
        cpu_user=figures[1],
        cpu_sys=figures[2],
        peak_rss_kb=figures[3],
        tree_pss_kb=sampler.peak_kb,
        tree_rss_kb=sampler.peak_rss_kb,
        returncode=figures[4],
        timed_out=killed.is_set(),
        stdout=text,
    )


def best(runs: Sequence[Measurement]) -> Measurement:
    """The successful run with the shortest wall time (any run if none succeeded)."""
    if not runs:
        raise ValueError("no runs to choose from")
    good = [m for m in runs if m.ok] or list(runs)
    return min(good, key=lambda m: m.wall)


def best_of(
    n: int, cmd: Sequence[str], *, timeout: float = 300.0, launcher: Path | None = None
) -> list[Measurement]:
    """``n`` runs of ``cmd`` one after another; pick with ``best()``."""
    return [measure(cmd, timeout=timeout, launcher=launcher) for _ in range(n)]
