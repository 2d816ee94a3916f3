"""CPU of the SYN engine alone on half of a full loopback scan (what one of two worker
processes does), against another checkout's: the engine's own cost, without start-up,
discovery, pipes or outputs.

Run as root: ``sudo .venv/bin/python benchmarks/syn_worker.py [--baseline SRC] [--runs N]``.
With ``--baseline`` it runs itself again with the other ``src/`` first on the path, and
prints both lines (median and best of N runs, after one to warm up).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

from harness import enter_isolation


def measure(runs: int) -> str:
    from portscout.engines import create_engine
    from portscout.scanner import Scan, ScanConfig

    scan = Scan(ScanConfig(targets=["127.0.0.1"], ports="1-65535", engine="syn",
                           discovery=False, keep_closed=False))  # fmt: skip
    plan, options = scan.plan, scan.options
    shard = plan.shards(2)[0]

    async def one() -> int:
        engine = create_engine("syn")
        engine.keep_closed = False  # type: ignore[attr-defined]
        engine.closed_ports = None  # type: ignore[attr-defined]
        async for _ in engine.run(plan.probes(shard), options):
            pass
        return int(engine.closed)  # type: ignore[attr-defined]

    asyncio.run(one())  # warm-up
    cpu = []
    for _ in range(runs):
        start = time.process_time()
        asyncio.run(one())
        cpu.append(time.process_time() - start)
    return f"cpu median {statistics.median(cpu):.3f} s, best {min(cpu):.3f} s ({runs} runs)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="SRC", help="another checkout's src/")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.child:
        enter_isolation("syn_worker.py")
    if args.baseline:
        env = {**os.environ, "PYTHONPATH": args.baseline}
        command = [sys.executable, __file__, "--child", "--runs", str(args.runs)]
        base = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        print(f"base: {base.stdout.strip()}")
    print(f"{'this' if args.baseline else ''}{': ' if args.baseline else ''}{measure(args.runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
