"""``portscout -sV`` next to ``nmap -sV`` on real servers: what each names, and how fast.

Run as root: ``.venv/bin/python benchmarks/service_compare.py [--rounds N] [--json FILE]``.
It enters a fresh private network namespace with no route out before anything else,
starts Debian's nginx (HTTP and HTTPS), OpenSSH, Redis, memcached, PostgreSQL, MariaDB,
vsftpd and exim4 there on 127.0.0.1 at their usual ports (``portscout.lab.servers``; ``make
test`` installs them), then scans exactly those ports with ``nmap -sV``, ``portscout -sV``
(nmap's ``nmap-service-probes``) and ``portscout -sV --service-probes built-in``, one run
each per round, rounds interleaved, after one untimed portscout run that fills its cache
of the prepared probe file (a temporary ``$XDG_CACHE_HOME``). Per open port:
service/product/version per tool; per tool: wall time (best and median of the rounds)
and CPU time.

Goal (issue 13): with nmap's file, the same service and product as nmap on every port, the
same version on at least 9 of 10, in at most 0.25x nmap -sV's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from harness import Measurement, compile_package, enter_isolation, measure

from portscout.lab.servers import SERVERS, ServerError, running

TARGET = "127.0.0.1"
GOAL_RATIO, GOAL_VERSIONS = 0.25, 0.9
Named = dict[int, tuple[str, str, str]]  # port -> (service, product, version)


@dataclass(slots=True)
class Tool:
    name: str
    cmd: tuple[str, ...]
    read: str  # "xml" (nmap) or "jsonl" (portscout)
    runs: list[Measurement] = field(default_factory=list)
    named: Named = field(default_factory=dict)


def from_nmap_xml(text: str) -> Named:
    named: Named = {}
    for port in ET.fromstring(text).iter("port"):
        state, service = port.find("state"), port.find("service")
        if state is None or state.get("state") != "open" or service is None:
            continue
        name = service.get("name", "")
        if service.get("tunnel"):
            name = f"{service.get('tunnel')}/{name}"
        named[int(port.get("portid", "0"))] = (
            name, service.get("product", ""), service.get("version", ""),
        )  # fmt: skip
    return named


def from_jsonl(text: str) -> Named:
    named: Named = {}
    for line in text.splitlines():
        record = json.loads(line)
        service = record.get("service")
        if record.get("state") == "open" and service:
            named[record["port"]] = (
                service["name"], service.get("product", ""), service.get("version", ""),
            )  # fmt: skip
    return named


def tools(ports: str) -> list[Tool]:
    portscout = (sys.executable, "-m", "portscout", TARGET, "-p", ports, "-Pn", "-sV",
                 "--no-db", "-q", "-oJ", "-", "--no-fold")  # fmt: skip
    return [
        Tool("nmap -sV", ("nmap", "-sV", "-Pn", "-n", "-p", ports, "-oX", "-", TARGET), "xml"),
        Tool("portscout -sV", portscout, "jsonl"),
        Tool("portscout -sV built-in", (*portscout, "--service-probes", "built-in"), "jsonl"),
    ]


def run_rounds(rows: list[Tool], rounds: int) -> None:
    for _ in range(rounds):
        for tool in rows:
            m = measure(tool.cmd, timeout=600)
            if not m.ok:
                raise SystemExit(f"{tool.name} failed ({m.returncode}): {m.stdout[-500:]}")
            tool.runs.append(m)
            tool.named = (from_nmap_xml if tool.read == "xml" else from_jsonl)(m.stdout)


def cell(found: tuple[str, str, str] | None) -> str:
    return " / ".join(x or "-" for x in found) if found else "(none)"


def compare(nmap: Named, other: Named) -> dict[str, int]:
    ports = sorted(nmap)
    return {
        "ports": len(ports),
        "service": sum(other.get(p, ("",))[0] == nmap[p][0] for p in ports),
        "product": sum(other.get(p, ("", ""))[:2] == nmap[p][:2] for p in ports),
        "version": sum(other.get(p) == nmap[p] for p in ports),
    }


def report(rows: list[Tool]) -> dict[str, object]:
    nmap = rows[0]
    print("| port | " + " | ".join(t.name for t in rows) + " |")
    print("| --- " * (len(rows) + 1) + "|")
    for port in sorted(set().union(*(t.named for t in rows))):
        print(f"| {port} | " + " | ".join(cell(t.named.get(port)) for t in rows) + " |")
    print()
    print("| tool | wall best | wall median | CPU (best run) | x nmap (best) | same service"
          " / product / version as nmap |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    base = min(m.wall for m in nmap.runs)
    out: dict[str, object] = {}
    for tool in rows:
        walls = [m.wall for m in tool.runs]
        fastest = min(tool.runs, key=lambda m: m.wall)
        same = compare(nmap.named, tool.named)
        print(f"| {tool.name} | {min(walls):.2f} s | {statistics.median(walls):.2f} s | "
              f"{fastest.cpu:.2f} s | {min(walls) / base:.2f} | {same['service']} / "
              f"{same['product']} / {same['version']} of {same['ports']} |")  # fmt: skip
        out[tool.name] = {"walls": walls, "cpu": fastest.cpu, "named": tool.named, **same}
    mine = rows[1]
    same = compare(nmap.named, mine.named)
    ratio = min(m.wall for m in mine.runs) / base
    names_agree = same["service"] == same["product"] == same["ports"]
    goal = names_agree and same["version"] >= GOAL_VERSIONS * same["ports"] and ratio <= GOAL_RATIO
    print(f"\ngoal (same service+product everywhere, versions >= 90%, <= {GOAL_RATIO}x): "
          f"{'met' if goal else 'NOT met'} (ratio {ratio:.2f})")  # fmt: skip
    out["goal_met"] = goal
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="runs of each tool, interleaved")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    enter_isolation("service_compare.py")
    compile_package()
    try:
        with running(list(SERVERS)) as opened, tempfile.TemporaryDirectory() as cache:
            os.environ["XDG_CACHE_HOME"] = cache  # portscout's prepared probe file
            ports = ",".join(str(p) for group in opened.values() for p in group)
            rows = tools(ports)
            measure(rows[1].cmd, timeout=600)  # untimed: fills the cache (warm rounds)
            run_rounds(rows, args.rounds)
    except ServerError as exc:
        print(f"cannot start the servers (make test installs them): {exc}", file=sys.stderr)
        return 2
    figures = report(rows)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
