"""Starting one strategy's child and reading back its figures.

The child (``portscout.bench.child``) measures itself; this side adds the wall time of the
whole process (interpreter start-up included), enforces a deadline (the child's session is
killed with everything it forked) and judges the result against the ports known open.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from portscout.bench.strategies import Place, Strategy

STARTUP_ALLOWANCE = 60.0  # s on top of the expected scan time before a child is killed


@dataclass(frozen=True, slots=True, kw_only=True)
class Figures:
    """One strategy at one place. Times in seconds, memory in KiB; ``error`` if it failed."""

    strategy: str
    place: str
    rtt_ms: int | None
    ports: int
    wall: float
    cpu_user: float
    cpu_sys: float
    peak_rss_kb: int
    process_wall: float
    found_open: tuple[int, ...]
    expected_open: tuple[int, ...]
    filtered: int
    error: str | None = None
    # Behind the delay line: packets it dropped (its queue full) and how late it released
    # packets on average (ms), while this strategy ran; None on loopback.
    lab_dropped: int | None = None
    lab_late_ms: float | None = None
    walls: tuple[float, ...] = ()  # every repetition's wall time, this one's included

    @property
    def cpu(self) -> float:
        return self.cpu_user + self.cpu_sys

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss_kb / 1024

    @property
    def cores(self) -> float:
        """CPU time over wall time: how many cores' worth the strategy kept busy."""
        return self.cpu / self.wall if self.wall > 0 else 0.0

    @property
    def exact(self) -> bool:
        """Found exactly the listening ports open, and no port filtered."""
        return self.error is None and self.found_open == self.expected_open and not self.filtered

    def as_json(self) -> dict[str, object]:
        return {
            "strategy": self.strategy, "place": self.place, "rtt_ms": self.rtt_ms,
            "ports": self.ports, "wall_s": round(self.wall, 6),
            "cpu_user_s": round(self.cpu_user, 6), "cpu_sys_s": round(self.cpu_sys, 6),
            "cpu_s": round(self.cpu, 6), "cores_busy": round(self.cores, 3),
            "peak_rss_kb": self.peak_rss_kb, "process_wall_s": round(self.process_wall, 6),
            "found_open": list(self.found_open), "expected_open": list(self.expected_open),
            "filtered": self.filtered, "exact": self.exact, "error": self.error,
            "lab_dropped": self.lab_dropped, "lab_late_mean_ms": self.lab_late_ms,
            "walls_s": [round(w, 6) for w in self.walls or (self.wall,)],
        }  # fmt: skip


def deadline(strategy: Strategy, place: Place) -> float:
    """Seconds a child may take: generous for a sequential scan paying every round trip."""
    rtt = (place.rtt_ms or 1) / 1000
    return STARTUP_ALLOWANCE + 3 * place.port_count * rtt


def run_child(strategy: Strategy, place: Place) -> Figures:
    """Run ``strategy`` against ``place`` in a fresh interpreter and return its figures."""
    spec = {
        "target": place.target, "ports": place.port_spec, "engine": strategy.engine,
        "workers": strategy.workers, "processes": strategy.processes,
    }  # fmt: skip
    argv = [sys.executable, "-m", "portscout.bench.child", json.dumps(spec)]
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=deadline(strategy, place))
    except subprocess.TimeoutExpired:
        out, err = "", f"timed out after {deadline(strategy, place):.0f} s"
    finally:
        if proc.poll() is None:  # timed out, or Ctrl-C here: its whole session goes
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    process_wall = time.perf_counter() - start
    return _figures(strategy, place, out, err, process_wall)


def _figures(strategy: Strategy, place: Place, out: str, err: str, process_wall: float) -> Figures:
    try:
        data = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        last = err.strip().splitlines()[-1] if err.strip() else "no output"
        data = {"error": f"child failed: {last}"}
    failed = "error" in data
    return Figures(
        strategy=strategy.name,
        place=place.name,
        rtt_ms=place.rtt_ms,
        ports=place.port_count,
        wall=0.0 if failed else float(data["wall"]),
        cpu_user=0.0 if failed else float(data["cpu_user"]),
        cpu_sys=0.0 if failed else float(data["cpu_sys"]),
        peak_rss_kb=0 if failed else int(data["peak_rss_kb"]),
        process_wall=process_wall,
        found_open=() if failed else tuple(sorted(int(p) for p in data["open"])),
        expected_open=place.expected_open,
        filtered=0 if failed else int(data["filtered"]),
        error=str(data["error"]) if failed else None,
    )
