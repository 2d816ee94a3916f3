"""The lab scenarios, scanned by nmap, portscout and masscan side by side in one run.

Run as root: ``sudo .venv/bin/python benchmarks/lab.py [--quick] [--scenario a|b|c ...]
[--seed N ...] [--json FILE]``. Before anything else the script enters a fresh private
network namespace and checks that no route leads out; it then builds each scenario's ``Lab`` (from
``portscout.lab.scenarios``) in it and runs every tool there as a child process. The only
targets are the lab hosts the script created, in 198.18.0.0/15.

* (a) ``one_filtered_host``: 198.18.1.1, ports 1-10000, 20 open, 90% of the closed ports
  dropped; 80 ms round trip, 1% loss per packet and direction.
* (b) ``sparse_network``: 198.18.1.0/24, 30% of hosts up with 1-20 of the 100 common ports
  open, the rest closed; 40 ms round trip; each host sends at most 50 RSTs/s.
* (c) ``large_sparse_network``: 198.19.0.0/16, about 1% of hosts up, nmap's top 20 ports,
  10 ms; one up host in ten drops 16 of its 20 ports (issue 11). ``--seed`` picks the
  layout (repeatable: one lab per seed, default 7).

Rows: ``nmap -sT -T4``, ``nmap -sS -T4``, portscout ``--engine async`` and ``--engine syn``
(their defaults otherwise, but ``--rate`` for syn: see ``SYN_RATE``) and, on (b),
``masscan``. nmap scans (a) and (b) with ``-Pn`` (one host; a /24 mostly up); on (c) it
runs as the issue timed it, ``nmap -sT -T4`` with its default host discovery (as root:
ICMP echo, SYN 443, ACK 80, ICMP timestamp), and ``nmap -sS`` is left out (another ten
minutes). Each tool runs once per scenario, in that order, against the same lab, bounded
by a timeout. Packets are counted by the lab's delay line for every tool alike (the same
yardstick: every packet from the scanner towards the lab, SYNs and the ACKs/RSTs that
follow an answer, and every answer). After each tool the delay line's queue drops and
worst release lateness are checked, so that a row measures the scanner, not the lab; a
row where the delay line fell behind says so. Memory per row: the largest single process
(``ru_maxrss``) and the peaks of the whole process tree's summed RSS and PSS, sampled
(``harness.measure``).

``--quick`` scans ports 1-2000 in (a) and the first 64 addresses in (b).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from harness import Measurement, build_launcher, compile_package, enter_isolation, measure

from portscout.lab import DelayLineStats, Host, Lab
from portscout.lab.scenarios import (
    COMMON_PORTS,
    TOP20_PORTS,
    large_sparse_network,
    one_filtered_host,
    sparse_network,
)
from portscout.ports import parse_ports

REPO = Path(__file__).resolve().parent.parent
GOAL_RATIO = 0.3  # portscout's wall time / nmap's, at most ((a), (b))
GOAL_RATIO_C = 0.15  # issue 11: (c) against nmap -sT -T4 with its host discovery
TREE_RSS_GOAL_MB = 100.0  # issue 11: (c), the whole process tree's summed RSS
# The delay line forwards ~50,000 packets/s in total at best (delayline_rate.py); 20,000
# SYNs/s and their answers stay under it. portscout's syn engine defaults to 300,000/s,
# masscan to 100/s: both get this rate.
SYN_RATE = 20_000
LATE_LIMIT = 0.002  # s: mean lateness above this: the delay line, not the tool, lagged
PAUSE = 2.0  # s between tools: RST buckets refill, held connections close
NMAP_TIMEOUT = 900.0  # s: the slowest nmap run allowed
TOOL_TIMEOUT = 300.0
MASSCAN_WAIT = 3  # s masscan waits for answers after its last probe (default 10)

Found = dict[IPv4Address, frozenset[int]]
States = dict[IPv4Address, dict[int, str]]  # port -> state reported, per host
GREPABLE_HOST = re.compile(r"^Host: (\S+) .*?Ports: (.*)$", re.MULTILINE)
GREPABLE_OPEN = re.compile(r"(\d+)/open/")
MASSCAN_OPEN = re.compile(r"^open tcp (\d+) (\S+)", re.MULTILINE)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    key: str
    title: str
    lab: dict[str, Any]  # Lab's keyword arguments
    targets: tuple[str, ...]
    ports: str
    masscan: bool  # whether masscan gets a row
    # nmap pings hosts first (its default discovery) instead of -Pn; only nmap -sT then
    nmap_discovery: bool = False
    goal_ratio: float = GOAL_RATIO  # portscout's wall / nmap -sT's (and -sS's), at most
    tree_rss_goal_mb: float | None = None  # the tree's summed RSS, at most


@dataclass(slots=True, kw_only=True)
class Row:
    """One tool on one scenario: what it ran, what it found, what the delay line saw."""

    tool: str
    cmd: tuple[str, ...]
    timeout: float
    read_found: Callable[[Measurement], Found]
    # Every scanned port's state, for tools that report them all (portscout).
    read_states: Callable[[Measurement], States] | None = None
    run: Measurement | None = None
    found: Found = field(default_factory=dict)
    states: States | None = None
    wrong_state: int | None = None  # see wrong_states
    packets_out: int = 0
    packets_in: int = 0
    lab_late_max: float = 0.0  # s: the worst release during this row (0 if no new worst)
    lab_late_mean: float = 0.0  # s: mean lateness of the packets released during this row
    lab_dropped: int = 0  # queue drops and write errors of the delay line during this row


def grepable(m: Measurement) -> Found:
    found = {}
    for host, ports in GREPABLE_HOST.findall(m.stdout):
        opened = frozenset(int(p) for p in GREPABLE_OPEN.findall(ports))
        if opened:
            found[IPv4Address(host)] = opened
    return found


def masscan_list(m: Measurement) -> Found:
    found: dict[IPv4Address, set[int]] = {}
    for port, host in MASSCAN_OPEN.findall(m.stdout):
        found.setdefault(IPv4Address(host), set()).add(int(port))
    return {h: frozenset(p) for h, p in found.items()}


def json_records(path: Path) -> list[dict[str, Any]]:
    """The results in portscout's -oJ file (none if it is missing)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [record for record in map(json.loads, lines) if "port" in record]


def json_lines(path: Path) -> Callable[[Measurement], Found]:
    """Open ports in portscout's -oJ file."""

    def read(_: Measurement) -> Found:
        found: dict[IPv4Address, set[int]] = {}
        for record in json_records(path):
            if record.get("state") == "open":
                found.setdefault(IPv4Address(record["host"]), set()).add(int(record["port"]))
        return {h: frozenset(p) for h, p in found.items()}

    return read


def json_states(path: Path) -> Callable[[Measurement], States]:
    """Every result's state in portscout's -oJ file."""

    def read(_: Measurement) -> States:
        states: States = {}
        for record in json_records(path):
            host = states.setdefault(IPv4Address(record["host"]), {})
            host[int(record["port"])] = record["state"]
        return states

    return read


def wrong_states(states: States | None, s: Scenario, lab: Lab) -> int | None:
    """Ports of up hosts whose reported state is not the lab's truth (unreported ones
    included): closed ports called filtered under RST limits, filtered ones called closed."""
    if states is None:
        return None
    ports = parse_ports(s.ports)
    nets = [IPv4Network(t) for t in s.targets]
    wrong = 0
    for host in lab.hosts:
        if not host.up or not any(host.address in n for n in nets):
            continue
        reported = states.get(host.address, {})
        wrong += sum(1 for p in ports if reported.get(p) != host.expected(p)[0])
    return wrong


def scenarios(quick: bool, seeds: Sequence[int] = ()) -> list[Scenario]:
    a = one_filtered_host()
    b = sparse_network()
    if quick:
        b = {**b, "hosts": b["hosts"][:64]}
    b_hosts: list[Host] = b["hosts"]
    b_net = "198.18.1.0/24" if len(b_hosts) == 256 else "198.18.1.0/26"
    return [
        Scenario(
            key="a",
            title="(a) one host, 80 ms, 1% loss, 90% of closed ports filtered",
            lab=a,
            targets=(str(a["hosts"][0].address),),
            ports="1-2000" if quick else "1-10000",
            masscan=False,
        ),
        Scenario(
            key="b",
            title=f"(b) {b_net}: 30% up, 100 common ports, 40 ms, RST limit 50/s per host",
            lab=b,
            targets=(b_net,),
            ports=",".join(map(str, COMMON_PORTS)),
            masscan=True,
        ),
        *(
            Scenario(
                key="c",
                title=f"(c) 198.19.0.0/16: 1% up, top 20 ports, 10 ms, 1 in 10 up hosts "
                f"dropping (seed {seed})",
                lab=large_sparse_network(seed),
                targets=("198.19.0.0/16",),
                ports=",".join(map(str, TOP20_PORTS)),
                masscan=False,
                nmap_discovery=True,
                goal_ratio=GOAL_RATIO_C,
                tree_rss_goal_mb=TREE_RSS_GOAL_MB,
            )
            for seed in (seeds or (7,))
        ),
    ]


def rows_for(s: Scenario, lab: Lab, workdir: Path) -> list[Row]:
    # nmap with --open: 1.6-2.8x faster on (a) than without (5.7-6.0 s against 9.3-16 s
    # for ports 1-2000, 2026-11-26), so the faster reference; it then reports no closed or
    # filtered ports, so its states are not judged.
    ping = () if s.nmap_discovery else ("-Pn",)
    nmap = ("nmap", "-T4", "-n", *ping, "-p", s.ports, "--open", "-oG", "-", *s.targets)
    rows = [
        Row(tool="nmap -sT -T4", cmd=(nmap[0], "-sT", *nmap[1:]), timeout=NMAP_TIMEOUT,
            read_found=grepable),
    ]  # fmt: skip
    if not s.nmap_discovery:
        rows.append(Row(tool="nmap -sS -T4", cmd=(nmap[0], "-sS", *nmap[1:]),
                        timeout=NMAP_TIMEOUT, read_found=grepable))  # fmt: skip
    for engine, extra in (("async", ()), ("syn", ("--rate", str(SYN_RATE)))):
        out = workdir / f"{s.key}-{engine}.jsonl"
        cmd = (sys.executable, "-m", "portscout", *s.targets, "-p", s.ports)
        cmd += ("--engine", engine, *extra, "-q", "-oJ", str(out), *every_port())
        rows.append(
            Row(tool=f"portscout {engine}", cmd=cmd, timeout=TOOL_TIMEOUT,
                read_found=json_lines(out), read_states=json_states(out))
        )  # fmt: skip
    if s.masscan:
        rows.append(masscan_row(s, lab))
    return rows


def masscan_row(s: Scenario, lab: Lab) -> Row:
    """masscan on the scanner TUN, its status lines (stderr) silenced.

    masscan sends and reads through libpcap on the TUN (no Ethernet: ``--router-mac`` is
    required but unused). Once its ``--wait`` is over its receive thread stays blocked in
    pcap until a packet arrives, so it would never exit on a quiet link: ``nudging`` sends
    one datagram a second to a closed lab port while it runs, whose ICMP answer wakes it.
    """
    assert lab.scanner_tun is not None
    args = (
        "masscan", *s.targets, "-p", s.ports, "--rate", str(SYN_RATE),
        "--adapter", lab.scanner_tun, "--adapter-ip", str(lab.scanner),
        "--router-mac", "02:00:00:00:00:01", "--wait", str(MASSCAN_WAIT), "-oL", "-",
    )  # fmt: skip
    cmd = ("sh", "-c", 'exec "$@" 2>/dev/null', "sh", *args)
    return Row(tool="masscan", cmd=cmd, timeout=TOOL_TIMEOUT, read_found=masscan_list)


@contextlib.contextmanager
def nudging(lab: Lab, every: float = 1.0) -> Iterator[None]:
    """A thread sending a UDP datagram to port 9 of the first up host every ``every`` s."""
    target = next(str(h.address) for h in lab.hosts if h.up)
    stop = threading.Event()

    def run() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while not stop.wait(every):
                with contextlib.suppress(OSError):
                    sock.sendto(b"wake", (target, 9))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_row(row: Row, lab: Lab, launcher: Path) -> None:
    before = lab.delay_line_stats()
    with nudging(lab) if row.tool == "masscan" else contextlib.nullcontext():
        row.run = measure(row.cmd, timeout=row.timeout, launcher=launcher)
    after = lab.delay_line_stats()
    row.found = row.read_found(row.run)
    if row.read_states is not None:
        row.states = row.read_states(row.run)
    row.packets_out = after.outbound.received - before.outbound.received
    row.packets_in = after.inbound.received - before.inbound.received
    worst = max(after.outbound.late_max, after.inbound.late_max)
    row.lab_late_max = (
        worst if worst > max(before.outbound.late_max, before.inbound.late_max) else 0
    )
    released = sum(d.forwarded for d in (after.outbound, after.inbound)) - sum(
        d.forwarded for d in (before.outbound, before.inbound)
    )
    late = sum(d.late_sum for d in (after.outbound, after.inbound)) - sum(
        d.late_sum for d in (before.outbound, before.inbound)
    )
    row.lab_late_mean = late / released if released else 0.0
    row.lab_dropped = dropped(after) - dropped(before)
    status = "" if row.run.ok else f"  FAILED rc={row.run.returncode} timed_out={row.run.timed_out}"
    print(f"  {row.tool:16} {row.run.wall:8.2f} s{status}", file=sys.stderr, flush=True)


def dropped(stats: DelayLineStats) -> int:
    return sum(d.queue_drops + d.write_errors for d in (stats.outbound, stats.inbound))


def scanned(s: Scenario, lab: Lab) -> dict[IPv4Address, frozenset[int]]:
    """Open ports the scenario's targets and port list cover (all of them, here)."""
    nets = [IPv4Network(t) for t in s.targets]
    return {a: p for a, p in lab.expected_open().items() if any(a in n for n in nets) and p}


def compare(found: Found, expected: Found) -> tuple[int, int, int]:
    """(open found that are open, open expected, reported open that are not)."""
    hits = sum(len(found.get(h, frozenset()) & p) for h, p in expected.items())
    wrong = sum(len(p - expected.get(h, frozenset())) for h, p in found.items())
    return hits, sum(map(len, expected.values())), wrong


def mb(kb: int) -> str:
    return f"{kb / 1024:.1f}" if kb else "-"


def table(rows: Sequence[Row], expected: Found) -> list[str]:
    ref = {r.tool: r.run.wall for r in rows if r.run and r.run.ok and r.tool.startswith("nmap")}
    lines = [
        "| tool | wall (s) | cpu (s) | peak RSS (MB) | tree RSS (MB) | tree PSS (MB) "
        "| packets out | packets in | open found / expected "
        "| wrongly open | wrong state | x nmap -sT | x nmap -sS | delay line |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        if r.run is None:
            continue
        hits, total, wrong = compare(r.found, expected)
        wall = f"{r.run.wall:.2f}" + ("" if r.run.ok else f" (rc {r.run.returncode})")
        if r.run.timed_out:
            wall = f">{r.timeout:.0f} (timed out)"
        late = f"late mean {r.lab_late_mean * 1000:.2f} ms" + (
            f", new max {r.lab_late_max * 1000:.1f} ms" if r.lab_late_max else ""
        )
        lagged = r.lab_dropped or r.lab_late_mean > LATE_LIMIT
        lab = (f"LAGGED: {r.lab_dropped} dropped, " if lagged else "ok: ") + late
        lines.append(
            f"| {r.tool} | {wall} | {r.run.cpu:.2f} | {mb(r.run.peak_rss_kb)} "
            f"| {mb(r.run.tree_rss_kb)} | {mb(r.run.tree_pss_kb)} "
            f"| {r.packets_out:,} | {r.packets_in:,} "
            f"| {hits} / {total} | {wrong} | {'-' if r.wrong_state is None else r.wrong_state} "
            f"| {ratio(r, ref.get('nmap -sT -T4'))} "
            f"| {ratio(r, ref.get('nmap -sS -T4'))} | {lab} |"
        )  # fmt: skip
    return lines


def ratio(row: Row, reference: float | None) -> str:
    if row.run is None or not row.run.ok or not reference:
        return "-"
    return f"{row.run.wall / reference:.2f}x"


def goals(rows: Sequence[Row], expected: Found, s: Scenario) -> list[str]:
    """The goals (async vs nmap -sT, syn vs nmap -sS, or both vs nmap -sT where only it
    ran: every open port, closed and filtered told apart, at most the scenario's ratio of
    nmap's time, and the tree's memory under its goal), judged on this run."""
    by_tool = {r.tool: r for r in rows}
    verdicts = []
    syn_ref = "nmap -sT -T4" if s.nmap_discovery else "nmap -sS -T4"
    for mine, theirs in (("portscout async", "nmap -sT -T4"), ("portscout syn", syn_ref)):
        a, b = by_tool.get(mine), by_tool.get(theirs)
        if a is None or b is None or a.run is None or b.run is None:
            continue
        hits, total, _ = compare(a.found, expected)
        every = a.run.ok and hits == total
        fast = a.run.ok and b.run.ok and a.run.wall <= s.goal_ratio * b.run.wall
        told_apart = (
            "not checked"
            if a.wrong_state is None
            else ("met" if a.wrong_state == 0 else f"MISSED ({a.wrong_state} ports)")
        )
        verdicts.append(
            f"{mine}: every open port {'met' if every else f'MISSED ({hits}/{total})'}; "
            f"closed and filtered told apart: {told_apart}; "
            f"<= {s.goal_ratio}x {theirs}: {'met' if fast else 'MISSED'} "
            f"({a.run.wall:.2f} s vs {b.run.wall:.2f} s)" + memory_goal(a, s.tree_rss_goal_mb)
        )
    return verdicts


def memory_goal(row: Row, goal_mb: float | None) -> str:
    if goal_mb is None or row.run is None:
        return ""
    tree = row.run.tree_rss_kb / 1024
    verdict = "met" if 0 < tree < goal_mb else "MISSED"
    return f"; process tree RSS < {goal_mb:g} MB: {verdict} ({tree:.1f} MB)"


def run_scenario(s: Scenario, workdir: Path, launcher: Path, only: set[str]) -> dict[str, Any]:
    print(f"{s.title}: building the lab", file=sys.stderr, flush=True)
    with Lab(**s.lab, max_seconds=7200) as lab:
        expected = scanned(s, lab)
        rows = [r for r in rows_for(s, lab, workdir) if not only or r.tool in only]
        for row in rows:
            run_row(row, lab, launcher)
            row.wrong_state = wrong_states(row.states, s, lab)
            time.sleep(PAUSE)
    lines = [f"### {s.title}", "", f"expected open: {sum(map(len, expected.values()))} ports "
             f"on {len(expected)} hosts", "", *table(rows, expected), ""]  # fmt: skip
    lines += [f"- {v}" for v in goals(rows, expected, s)]
    lines += ["", "commands:", ""] + [f"    {' '.join(r.cmd)}" for r in rows]
    for r in rows:
        if r.run is not None and not r.run.ok and not r.found:
            lines.append(f"\n{r.tool} output (tail):\n    " + r.run.stdout[-600:])
    return {"title": s.title, "lines": lines, "rows": [summary(r, expected) for r in rows]}


def summary(r: Row, expected: Found) -> dict[str, Any]:
    hits, total, wrong = compare(r.found, expected)
    return {
        "tool": r.tool, "cmd": r.cmd, "wall": r.run.wall if r.run else None,
        "ok": r.run.ok if r.run else False, "timed_out": r.run.timed_out if r.run else None,
        "packets_out": r.packets_out, "packets_in": r.packets_in, "open_found": hits,
        "open_expected": total, "wrongly_open": wrong, "wrong_state": r.wrong_state,
        "lab_late_max": r.lab_late_max,
        "cpu": r.run.cpu if r.run else None,
        "peak_rss_kb": r.run.peak_rss_kb if r.run else None,
        "tree_rss_kb": r.run.tree_rss_kb if r.run else None,
        "tree_pss_kb": r.run.tree_pss_kb if r.run else None,
        "lab_late_mean": r.lab_late_mean, "lab_dropped": r.lab_dropped,
    }  # fmt: skip


def machine() -> str:
    def output(cmd: Sequence[str]) -> str:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
        return done.stdout.strip()

    dirty = len(output(["git", "status", "--porcelain", "--", "src"]).splitlines())
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}, {os.cpu_count()} cores, "
        f"kernel {platform.release()}, Python {platform.python_version()}, "
        f"{output(['nmap', '--version']).splitlines()[0]}, "
        f"{next(v for v in output(['masscan', '--version']).splitlines() if 'version' in v)}, "
        "portscout "
        f"{output(['git', 'rev-parse', '--short', 'HEAD'])} ({dirty} files changed under "
        f"src/), load {load}"
    )


def every_port() -> tuple[str, ...]:
    """``--no-fold`` where the portscout run knows it: its JSON lines then list every
    port, whose state is judged (an older checkout, --portscout-src, lists every port
    anyway)."""
    source = os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parents[1] / "src")
    folds = (Path(source) / "portscout" / "output" / "hosts.py").exists()
    return ("--no-fold",) if folds else ()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="(a) ports 1-2000, (b) 64 addresses")
    p.add_argument("--scenario", choices=("a", "b", "c"), action="append",
                   help="default: a and b (c, a /16, takes minutes: only when named)")  # fmt: skip
    p.add_argument("--tool", action="append", default=[], help="only this row (repeatable)")
    p.add_argument("--seed", type=int, action="append", default=[],
                   help="(c): the lab layout's seed (repeatable; default 7)")  # fmt: skip
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    p.add_argument(
        "--portscout-src",
        metavar="DIR",
        help="run portscout from DIR (a src/ of another checkout) instead of this one",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    compile_package()
    enter_isolation("lab.py")  # before any thread, lab or child process
    wanted = set(args.scenario or ("a", "b"))
    header = machine()
    with tempfile.TemporaryDirectory(prefix="portscout-lab-") as tmp:
        workdir = Path(tmp)
        launcher = build_launcher(workdir)
        # portscout records every scan in a history database: a fresh one, not the user's
        os.environ["XDG_DATA_HOME"] = str(workdir / "data")
        if args.portscout_src:
            os.environ["PYTHONPATH"] = str(Path(args.portscout_src).resolve())
        only = set(args.tool)
        results = [
            run_scenario(s, workdir, launcher, only)
            for s in scenarios(args.quick, args.seed)
            if s.key in wanted
        ]
    print(f"\n{header}\n")
    for r in results:
        print("\n".join(r["lines"]) + "\n")
    if args.json:
        data = {"machine": header, "scenarios": [{k: r[k] for k in ("title", "rows")}
                                                 for r in results]}  # fmt: skip
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
