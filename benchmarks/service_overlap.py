"""``portscout -sV`` on a port range holding several real servers: wall time with -sV
after the port scan (an older checkout, ``--baseline SRC``) against -sV beside it (this
checkout), one run each per round, rounds interleaved; both must name the same services.

Run as root: ``.venv/bin/python benchmarks/service_overlap.py --baseline /tmp/before/src
[--ports 1-65535] [--rounds N] [--engine E] [--rate PPS]``; make the baseline with
``git archive COMMIT src | tar -x -C /tmp/before``. It enters a fresh private network
namespace with no route out first, starts Debian's nginx, OpenSSH, Redis, memcached,
PostgreSQL, MariaDB, vsftpd and exim4 there on 127.0.0.1 (``portscout.lab.servers``),
and scans the range.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from harness import Measurement, compile_package, enter_isolation, measure

from portscout.lab.servers import SERVERS, ServerError, running

TARGET = "127.0.0.1"


def command(
    src: Path | None, ports: str, engine: str, rate: float | None, cache: Path
) -> tuple[str, ...]:
    """Each checkout gets a cache of its own: their keys differ (the parser modules'
    times), and one shared file would be rewritten by each run in turn, always cold."""
    path = ("env", f"XDG_CACHE_HOME={cache}") + (() if src is None else (f"PYTHONPATH={src}",))
    limit = () if rate is None else ("--max-rate", str(rate))
    return (*path, sys.executable, "-m", "portscout", TARGET, "-p", ports, "-Pn", "-sV",
            "--no-db", "-q", "-oJ", "-", "--no-fold", "--engine", engine, *limit)  # fmt: skip


def named(m: Measurement) -> dict[int, str]:
    out = {}
    for line in m.stdout.splitlines():
        record = json.loads(line)
        if record.get("state") == "open" and record.get("service"):
            service = record["service"]
            out[record["port"]] = f"{service['name']} {service.get('product', '')}".strip()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="an older checkout's src")
    parser.add_argument("--ports", default="1-65535")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engine", default="syn")
    parser.add_argument("--rate", type=float, help="--max-rate: a port scan that takes a while")
    args = parser.parse_args()
    enter_isolation("service_overlap.py")
    compile_package()
    cache = tempfile.TemporaryDirectory()  # portscout's prepared probe file, warm below
    before, after = Path(cache.name) / "before", Path(cache.name) / "after"
    rows = {"-sV after the scan (baseline)": command(args.baseline.resolve(), args.ports,
                                                      args.engine, args.rate, before),
            "-sV beside the scan": command(None, args.ports, args.engine, args.rate,
                                           after)}  # fmt: skip
    runs: dict[str, list[Measurement]] = {name: [] for name in rows}
    try:
        with running(list(SERVERS)):
            for cmd in rows.values():  # warm-up: caches, page cache
                measure(cmd, timeout=600)
            for _ in range(args.rounds):
                for name, cmd in rows.items():
                    m = measure(cmd, timeout=600)
                    if not m.ok:
                        raise SystemExit(f"{name} failed ({m.returncode})")
                    runs[name].append(m)
    except ServerError as exc:
        print(f"cannot start the servers (make test installs them): {exc}", file=sys.stderr)
        return 2
    finally:
        cache.cleanup()
    found = [named(r[-1]) for r in runs.values()]
    print(f"ports {args.ports}, engine {args.engine}, max rate {args.rate}, {args.rounds} rounds")
    print("| run | wall best | wall median | CPU median | open ports named |")
    print("| --- | --- | --- | --- | --- |")
    for (name, measured), names in zip(runs.items(), found, strict=True):
        walls = [m.wall for m in measured]
        print(f"| {name} | {min(walls):.2f} s | {statistics.median(walls):.2f} s | "
              f"{statistics.median(m.cpu for m in measured):.2f} s | {len(names)} |")  # fmt: skip
    print("same services named:", found[0] == found[1], found[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
