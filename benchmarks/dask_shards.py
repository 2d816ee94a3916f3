"""Shards on Dask and by hand, against one process; and a simulation of 64 workers on a /8.

Run as root: ``sudo .venv/bin/python benchmarks/dask_shards.py [--quick] [--only lab|sim]``
(not ``distributed.py``: the script's directory comes first on ``sys.path``, and Dask's
package is ``distributed``).
The script enters a fresh private network namespace first and checks no route leads out.

* **lab**: scenario (b) of ``benchmarks/lab.py`` (198.18.1.0/24, 30% up, nmap's 100 common
  ports, 40 ms, RST limit 50/s per host), scanned by ``portscout`` in one process
  (``--processes 1``) and in four, with ``--dask local:2``, and as ``--shard 1/2`` and
  ``--shard 2/2`` run side by side (as two machines would) then ``portscout merge``. Wall
  time, probes sent and probes/s, open ports found, ports in a wrong state; then, in this
  process, Dask's overhead per unit: from submitting a unit to having its results, less the
  unit's own time.
* **sim**: no packets. 64 worker threads (4 worker processes of 16 threads: 64 processes
  would not fit this machine) run units of a /8 x nmap's top 100 ports, each unit answered
  from a seeded model (1% of hosts up, two open ports each, the rest closed) and taking the
  time its probes would take at 10,000 probes/s a worker. The client runs ``DaskRun`` into
  the outputs (JSON lines to /dev/null) as the command line does. Measured: wall time, the
  client process's CPU time (the output stage; Dask's client and ``DaskRun``'s merge) and
  the scheduler process's, as shares of wall time, and the client's RSS as the scan goes
  on. The /8 is never sent to: nothing here opens a socket towards it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from harness import compile_package, enter_isolation

from lab import Scenario, json_lines, json_states, scanned, wrong_states
from portscout.cli import connect_outputs
from portscout.dask_local import local_cluster
from portscout.distributed import DaskRun, Job, Unit, UnitResult, connect
from portscout.lab import Lab
from portscout.lab.scenarios import (
    COMMON_PORTS,
    TOP20_PORTS,
    large_sparse_network,
    sparse_network,
)
from portscout.output.session import OutputOptions, Outputs
from portscout.plan import HostGroup
from portscout.results import ClosedPorts, Reason, Result, State
from portscout.scanner import Scan, ScanConfig

PORTS = ",".join(map(str, COMMON_PORTS))
SCENARIO = Scenario(key="b", title="(b) sparse /24", lab=sparse_network(),
                    targets=("198.18.1.0/24",), ports=PORTS, masscan=False)  # fmt: skip


def scenario_c() -> Scenario:
    """lab.py's (c): 198.19.0.0/16, 1% up, top 20 ports, 10 ms (layout of seed 7)."""
    return Scenario(key="c", title="(c) sparse /16", lab=large_sparse_network(7),
                    targets=("198.19.0.0/16",), ports=",".join(map(str, TOP20_PORTS)),
                    masscan=False)  # fmt: skip


SENT = re.compile(r"(\d[\d,]*) probes sent")
SIM_RATE = 10_000.0  # probes/s of one simulated worker
MEMORY_LIMIT = 4_000_000_000  # bytes of address space: a /8 only under a limit


def command(*args: str, scenario: Scenario = SCENARIO) -> list[str]:
    return [sys.executable, "-m", "portscout", *scenario.targets, "-p", scenario.ports,
            "--seed", "7", "--no-db", "-q", "--no-fold", *args]  # fmt: skip


def run_all(commands: list[list[str]]) -> tuple[float, list[str]]:
    """Run ``commands`` side by side; (wall time until the last ends, their stderr)."""
    start = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in commands]  # fmt: skip
    outs = [p.communicate(timeout=600)[0] for p in procs]
    return time.perf_counter() - start, outs


def sent(stderr: str) -> int:
    match = SENT.search(stderr)
    return int(match.group(1).replace(",", "")) if match else 0


def lab_rows(
    work: Path, only: frozenset[str] = frozenset(), scenario: Scenario = SCENARIO
) -> list[str]:
    lines = ["| run | wall (s) | probes sent | probes/s | open found / expected | wrong state |",
             "|---|--:|--:|--:|--:|--:|"]  # fmt: skip
    with Lab(**scenario.lab, max_seconds=3600) as lab:
        expected = scanned(scenario, lab)
        total = sum(map(len, expected.values()))
        address = "tcp://127.0.0.1:8786"

        def portscout(*args: str) -> list[str]:
            return command(*args, scenario=scenario)

        runs = {
            "one process": [portscout("--processes", "1", "-oJ", str(work / "one.jsonl"))],
            # 4 scanners on each RST-limited host, as the two --shard parts below make
            "four processes": [portscout("--processes", "4", "-oJ", str(work / "four.jsonl"))],
            "--dask local:2": [portscout("--dask", "local:2", "-oJ", str(work / "dask.jsonl"))],
            "--dask (running, warm)": [
                portscout("--dask", address, "-oJ", str(work / "running.jsonl"))
            ],
            "--shard 1/2 + 2/2": [
                portscout("--shard", f"{i}/2", "-oJ", str(work / f"part{i}.jsonl")) for i in (1, 2)
            ],
            # 4 scanners on every host (one per part), as 4 machines would be
            "--shard 1/4 .. 4/4": [
                portscout("--shard", f"{i}/4", "-oJ", str(work / f"part{i}.jsonl"))
                for i in (1, 2, 3, 4)
            ],
        }
        if only:
            runs = {name: commands for name, commands in runs.items() if name in only}
        cluster = running_cluster(address)
        for name, commands in runs.items():
            time.sleep(2)  # RST buckets refill
            if "warm" in name:
                run_all(commands)  # the workers import portscout once
            wall, errs = run_all(commands)
            out = Path(commands[0][commands[0].index("-oJ") + 1])
            if name.startswith("--shard"):
                out = work / "merged.jsonl"
                parts = [command[command.index("-oJ") + 1] for command in commands]
                merge = [sys.executable, "-m", "portscout", "merge", "-oJ", str(out),
                         "--no-fold", "-q", *parts]  # fmt: skip
                t = time.perf_counter()
                subprocess.run(merge, check=True, capture_output=True)
                name += f" (merge {time.perf_counter() - t:.2f} s)"
            probes = sum(sent(e) for e in errs)
            found = json_lines(out)(None)  # type: ignore[arg-type]
            hits = sum(len(found.get(h, frozenset()) & p) for h, p in expected.items())
            wrong = wrong_states(json_states(out)(None), scenario, lab)  # type: ignore[arg-type]
            lines.append(f"| {name} | {wall:.2f} | {probes:,} | {probes / wall:,.0f} |"
                         f" {hits} / {total} | {wrong} |")  # fmt: skip
            print(lines[-1], file=sys.stderr, flush=True)
        for proc in cluster:
            proc.terminate()
            proc.wait(timeout=30)
        lines += ["", *dask_overhead()]
    return lines


def running_cluster(address: str) -> list[subprocess.Popen[bytes]]:
    """A Dask scheduler and 2 single-threaded workers (``dask scheduler``, ``dask worker``),
    as a cluster that is already up when the scan starts."""
    dask = str(Path(sys.executable).parent / "dask")
    port = address.rsplit(":", 1)[1]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", port,
                               "--no-dashboard"], **quiet)]  # type: ignore[call-overload]  # fmt: skip
    time.sleep(2)
    procs.append(subprocess.Popen([dask, "worker", address, "--nworkers", "2", "--nthreads",
                                   "1", "--no-dashboard"], **quiet))  # type: ignore[call-overload]  # fmt: skip
    time.sleep(4)
    return procs


def dask_overhead() -> list[str]:
    """Per unit: client latency (submit to results in) less the unit's own time."""
    t = time.perf_counter()
    with connect("local:2") as client:
        started = time.perf_counter() - t
        config = ScanConfig(targets=["198.18.1.0/24"], ports=PORTS, key=7, keep_closed=False)
        cold: list[float] = []
        overheads: list[float] = []
        for attempt in range(4):  # the first on cold workers (they import portscout)
            run = DaskRun(Scan(config), client, parts=2)
            for _ in run.batches():
                pass
            spent = [lat - dur for lat, dur in zip(run.latencies, run.durations, strict=True)]
            (cold if attempt == 0 else overheads).extend(spent)
            time.sleep(2)
    return [
        f"--dask local:2 cluster started in {started:.2f} s. Dask's overhead per unit"
        " (from submitting it to having its results, less the unit's own time on the"
        f" worker), 2 units a scan: cold workers {max(cold) * 1000:.0f} ms; warm, over"
        f" {len(overheads)} units: median {statistics.median(overheads) * 1000:.0f} ms,"
        f" max {max(overheads) * 1000:.0f} ms"
    ]


def _mix(x: int) -> int:
    """splitmix64: the model's seeded hash of a host index."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def simulated_unit(job: Job, unit: Unit) -> UnitResult:
    """A unit answered by the model, taking the time its probes would take on the wire:
    two pings per host, every port of the hosts up (its part of them)."""
    started = time.monotonic()
    ports = tuple(int(p) for p in job.config.ports or ())
    base = int(IPv4Address(job.config.targets[0].split("/")[0]))
    results: list[Result] = []
    closed: list[ClosedPorts] = []
    up: dict[Any, Reason] = {}
    probes = 2 * (unit.stop - unit.start) // unit.count
    for index in range(unit.start, unit.stop):
        h = _mix(index)
        if h % 100:
            continue
        host = IPv4Address(base + index)
        up[host] = Reason.SYN_ACK
        opened = {ports[(h >> 8) % len(ports)], ports[(h >> 24) % len(ports)]}
        mine = [p for j, p in enumerate(ports) if (index + j) % unit.count == unit.index - 1]
        probes += len(mine)
        results += [Result(host=host, port=p, state=State.OPEN, reason=Reason.SYN_ACK)
                    for p in mine if p in opened]  # fmt: skip
        closed.append(ClosedPorts(host, Reason.RESET, [p for p in mine if p not in opened]))
    time.sleep(max(0.0, probes / SIM_RATE - (time.monotonic() - started)))
    return UnitResult(unit=unit, results=results, closed=closed, hosts_up=up, latency={},
                      probes_sent=probes, probes_planned=probes,
                      seconds=time.monotonic() - started)  # fmt: skip


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024


def simulation(prefix: str, *, with_outputs: bool = True, address: str | None = None) -> list[str]:
    """The simulated scan of ``prefix``, into the output stage wired as the command line
    wires it (``connect_outputs``: each group written, then forgotten by the report), or,
    without, results only counted: Dask's own cost. ``address``: a scheduler running as
    a process of its own (``dask scheduler``), else the processes ``--dask local:N``
    starts (``dask_local``: scheduler and workers, each a process of its own)."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    config = ScanConfig(targets=[prefix], ports=COMMON_PORTS, key=1, keep_closed=False,
                        record_closed=True)  # fmt: skip
    scan = Scan(config)
    sink = open(os.devnull, "w")  # noqa: SIM115  # closed below
    options = OutputOptions(files=(("json", "-"),), quiet=True)
    outputs = Outputs(options, [("json", sink)], sink, {})  # JSON lines, discarded
    outputs.start(scan.meta)
    report = scan.report
    spent = [0.0]  # main-thread CPU seconds in the output stage
    if with_outputs:
        connect_outputs(scan, outputs)
        written = scan.on_group_done
        assert written is not None

        def group_done(group: HostGroup) -> None:
            t = time.thread_time()
            written(group)
            spent[0] += time.thread_time() - t

        scan.on_group_done = group_done
    with contextlib.closing(sink), connect_sim(address) as (client, scheduler_cpu):
        run = DaskRun(scan, client, task=simulated_unit)
        samples: list[tuple[int, float]] = []
        cpu0, t0, sched0 = time.process_time(), time.perf_counter(), scheduler_cpu()
        for batch in run.batches():
            t = time.thread_time()
            closed = scan.take_closed()
            if with_outputs:
                outputs.add(batch, closed)
            spent[0] += time.thread_time() - t
            done = len(run.durations)
            if not samples or done - samples[-1][0] >= 16:
                samples.append((done, rss_mb()))
        outputs.finish(report)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        sched = scheduler_cpu() - sched0
    units, dask = len(run.durations), cpu - spent[0]
    busy = sum(run.durations) / (run.threads * wall)
    where = (
        "dask scheduler + dask worker (--dask ADDRESS)" if address else "--dask local:N's processes"
    )
    lines = [
        f"{prefix} x {len(COMMON_PORTS)} ports{'' if with_outputs else ', no outputs'}, {where},"
        f" {units:,} units on {run.threads} worker threads"
        f" at {SIM_RATE:,.0f} probes/s each: wall {wall:.1f} s, {report.probes_sent:,} probes"
        f" simulated ({report.probes_sent / wall:,.0f}/s), {report.counts[State.OPEN]:,} open,"
        f" {report.counts[State.CLOSED]:,} closed, {report.up_count:,} hosts up; worker"
        f" threads busy {100 * busy:.0f}%",
        f"client process CPU {cpu:.1f} s = {100 * cpu / wall:.1f}% of wall: the output stage"
        f" (results in, hosts out in address order) {spent[0]:.1f} s ="
        f" {100 * spent[0] / wall:.1f}%; the rest (Dask's client, DaskRun's merge)"
        f" {dask:.1f} s = {100 * dask / wall:.1f}%",
        f"scheduler process CPU {sched:.1f} s = {100 * sched / wall:.1f}% of wall",
    ]
    lines.append(
        "client RSS (MB) by units in: "
        + ", ".join(f"{d}: {mb:.0f}" for d, mb in samples[:: max(1, len(samples) // 10)])
        + f", end: {rss_mb():.0f}; report at the end: {len(report.results):,} results,"
        f" {len(report.hosts_up or ()):,} hosts up held"
    )
    return lines


def _cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (/proc/PID/stat), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def connect_sim(address: str | None) -> Any:  # (distributed's Client, LocalCluster untyped)
    """(client, the scheduler's CPU seconds so far): 4 worker processes of 16 threads."""
    from distributed import Client

    if address is None:
        with local_cluster(4, 16) as client:  # as --dask local:N starts its processes
            pid = client.run_on_scheduler(os.getpid)
            yield client, lambda: _cpu_seconds(pid)
        return
    dask = str(Path(sys.executable).parent / "dask")
    port = address.rsplit(":", 1)[1]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", port,
                                  "--no-dashboard"], **quiet)  # type: ignore[call-overload]  # fmt: skip
    time.sleep(3)
    workers = subprocess.Popen([dask, "worker", address, "--nworkers", "4", "--nthreads", "16",
                                "--no-dashboard"], **quiet)  # type: ignore[call-overload]  # fmt: skip
    try:
        with Client(address, timeout=30) as client:
            client.wait_for_workers(4, timeout=60)
            yield client, lambda: _cpu_seconds(scheduler.pid)
    finally:
        for proc in (workers, scheduler):
            proc.terminate()
            proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="simulate a /12, not a /8")
    parser.add_argument("--only", choices=("lab", "sim"))
    parser.add_argument(
        "--scenario",
        choices=("b", "c"),
        default="b",
        help="lab: lab.py's scenario (b, a /24; or c, a /16 with 1%% up)",
    )
    parser.add_argument("--rows", metavar="NAMES",
                        help="lab: only these rows (comma-separated, e.g. 'one process,four"
                        " processes')")  # fmt: skip
    parser.add_argument("--no-outputs", action="store_true",
                        help="only simulate without the output stage")  # fmt: skip
    parser.add_argument("--outputs-only", action="store_true",
                        help="only simulate with the output stage")  # fmt: skip
    parser.add_argument("--scheduler-process", action="store_true",
                        help="sim: `dask scheduler` and `dask worker` started apart,"
                        " connected to as --dask ADDRESS")  # fmt: skip
    args = parser.parse_args()
    enter_isolation("dask_shards.py")
    compile_package()
    lines = [f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "lab"):
            rows = frozenset(args.rows.split(",")) if args.rows else frozenset()
            scenario = scenario_c() if args.scenario == "c" else SCENARIO
            lines += [*lab_rows(Path(tmp), rows, scenario), ""]
        if args.only in (None, "sim"):
            # Simulated (no packet is sent); loopback all the same, as every target here.
            prefix = "127.0.0.0/12" if args.quick else "127.0.0.0/8"
            address = "tcp://127.0.0.1:8786" if args.scheduler_process else None
            if not args.outputs_only:
                lines += [*simulation(prefix, with_outputs=False, address=address), ""]
            if not args.no_outputs:
                lines += simulation(prefix, address=address)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
