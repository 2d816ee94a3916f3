"""One strategy's scan in a fresh interpreter: ``python -m portscout.bench.child SPEC``.

Why a process of its own: its CPU time and memory must be the strategy's, not the bench's
(listener threads, the lab, a loaded matplotlib). SPEC is a JSON object (target, ports,
engine, workers, processes); the figures come back as one JSON object on stdout.

- ``wall``: the scan alone, from building it to its last result (the interpreter's
  start-up, the same for every strategy, is measured by the parent as ``process_wall``).
- ``cpu_user``/``cpu_sys``: this process and the worker processes it forked and reaped
  (``RUSAGE_CHILDREN``), over the same span.
- ``peak_rss_kb``: the largest single process. For this one ``VmHWM`` of /proc/self/status,
  not ``ru_maxrss``: Linux carries ``ru_maxrss`` across exec, so a child of the (large)
  bench would report the bench's size; ``VmHWM`` is the high-water mark of the memory map
  exec made. Workers forked from here report through ``RUSAGE_CHILDREN``'s ``ru_maxrss``
  (forked from this small process, their figure is their own).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any

from portscout.errors import PortscoutError
from portscout.results import State
from portscout.running import drive
from portscout.scanner import Scan, ScanConfig


def vm_hwm_kb() -> int:
    """Peak resident set of this process's current memory map, in KiB (0 if unknown)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + kids.ru_utime, own.ru_stime + kids.ru_stime


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Scan as ``spec`` says (no host discovery, closed ports only counted) and measure."""
    target = str(spec["target"])
    config = ScanConfig(
        targets=[target],
        ports=str(spec["ports"]),
        engine=str(spec["engine"]),
        workers=int(spec["workers"]),
        processes=int(spec["processes"]),
        discovery=False,
        keep_closed=False,
    )
    user0, sys0 = _cpu()
    start = time.perf_counter()
    scan = Scan(config)
    for _ in drive(scan):
        pass
    wall = time.perf_counter() - start
    user1, sys1 = _cpu()
    report = scan.report
    return {
        "wall": wall,
        "cpu_user": user1 - user0,
        "cpu_sys": sys1 - sys0,
        "peak_rss_kb": max(vm_hwm_kb(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss),
        "open": report.open_ports(target),
        "closed": report.counts[State.CLOSED],
        "filtered": report.counts[State.FILTERED],
    }


def main(argv: Sequence[str]) -> int:
    """Print the figures as JSON; a scan that fails prints ``{"error": ...}`` instead."""
    try:
        spec = json.loads(argv[0])
        figures = run(spec)
    except (PortscoutError, OSError) as exc:
        figures = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(figures) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
