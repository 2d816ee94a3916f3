"""The lab accuracy test's mixed labs in a loop, both engines, for a given time: how often
does any port come out in a wrong state? One line per scan that had a problem, then the
count.

Run as root (it enters a private network namespace itself): ``sudo .venv/bin/python
benchmarks/soak.py SECONDS``. Several in parallel, beside a busy loop, reproduce a loaded
machine (the async engine's false opens of session 3 were seen only there). The async
engine's wakeups that carried no answer are logged (debug level) as they are counted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path

from harness import enter_isolation

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "lab"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", type=float, help="how long to go on (the last lab ends)")
    args = parser.parse_args()
    enter_isolation("soak.py")  # before any thread, lab or child process
    accuracy = importlib.import_module("test_scan_accuracy")  # the lab tests' labs, truth

    logging.basicConfig(level=logging.WARNING, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(message)s")  # fmt: skip
    logging.getLogger("portscout.engines.async_connect").setLevel(logging.DEBUG)
    deadline = time.monotonic() + args.seconds
    runs = bad = 0
    while time.monotonic() < deadline:
        seed = 1 + runs % 3
        with accuracy.mixed_lab(seed) as lab:
            for engine in ("async", "syn"):
                results = accuracy.scan(lab, engine, accuracy.PORTS, seed)
                problems = accuracy.mismatches(lab, engine, accuracy.PORTS, results)
                bad += bool(problems)
                if problems:
                    print(f"run {runs} seed {seed} {engine}: {problems[:5]}", flush=True)
        runs += 1
    print(f"labs {runs}, scans {2 * runs}, scans with a problem {bad}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
