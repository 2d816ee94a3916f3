"""What ``portscout bench`` measures, as data: the strategies and the places they scan.

A strategy is an engine with its knobs (threads, processes): the threads study's three
(sequential, a thread per port, a pool) at several pool sizes, then what portscout does
past them (one event loop, the loop sharded over processes, raw SYN packets). A place is
a target and port range with its round trip: 127.0.0.1 (no waiting at all) and lab hosts
behind the delay line (waiting dominates). Pure data; imports nothing of the package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"
STUDY_PORTS = (30000, 65535)  # thread-study.md's range; the demo's 45678 listens inside
QUICK_LOOPBACK_PORTS = (43000, 47999)  # 5,000 ports, 45678 still inside
LAB_PORTS = (1000, 1999)  # behind the delay line sequential pays ports x round trip
QUICK_LAB_PORTS = (1000, 1099)
LAB_OPEN = (1022, 1080, 1099)  # open on every lab host: banner, accept, accept-and-close
RTTS_MS = (1, 10, 50)
POOL_SIZES = (10, 50, 100, 500)


@dataclass(frozen=True, slots=True)
class Strategy:
    """One way to scan: ``name`` as the table shows it, the engine and its knobs."""

    name: str
    engine: str
    workers: int = 50  # threadpool threads
    processes: int = 1

    @property
    def pool(self) -> bool:
        return self.engine == "threadpool"

    @property
    def threaded(self) -> bool:
        """Blocking connect() in threads: the strategies the GIL governs."""
        return self.engine in {"threadpool", "thread-per-port"}


@dataclass(frozen=True, slots=True)
class Place:
    """Where a strategy scans: ``name`` as shown, target address, port range, round trip
    (None: loopback, no delay line) and the ports expected open there."""

    name: str
    target: str
    ports: tuple[int, int]
    rtt_ms: int | None
    expected_open: tuple[int, ...]

    @property
    def port_count(self) -> int:
        return self.ports[1] - self.ports[0] + 1

    @property
    def port_spec(self) -> str:
        return f"{self.ports[0]}-{self.ports[1]}"


def sharded_processes(cores: int | None = None) -> int:
    """Processes for the sharded rows: one per core, at least two (so the row differs
    from the single-process one even on one core) and at most eight, as the scanner does."""
    return max(2, min(cores if cores is not None else (os.cpu_count() or 1), 8))


def strategies(processes: int) -> list[Strategy]:
    """Every strategy, the study's first, in the order the table shows them."""
    return [
        Strategy("sequential", "sequential"),
        Strategy("thread-per-port", "thread-per-port"),
        *(Strategy(f"threadpool {n}", "threadpool", workers=n) for n in POOL_SIZES),
        Strategy("async", "async"),
        Strategy(f"async --processes {processes}", "async", processes=processes),
        Strategy("syn", "syn"),
        Strategy(f"syn --processes {processes}", "syn", processes=processes),
    ]


def lab_address(rtt_ms: int) -> str:
    """The lab host at ``rtt_ms``: 198.18.1.<rtt> (RFC 2544's range, never routed out)."""
    return f"198.18.1.{rtt_ms}"


def places(quick: bool, loopback_open: tuple[int, ...], *, lab: bool = True) -> list[Place]:
    """Loopback first, then one lab host per round trip of ``RTTS_MS`` (unless not ``lab``)."""
    ports = QUICK_LOOPBACK_PORTS if quick else STUDY_PORTS
    found = tuple(p for p in loopback_open if ports[0] <= p <= ports[1])
    result = [Place("loopback", LOOPBACK, ports, None, found)]
    if lab:
        lab_ports = QUICK_LAB_PORTS if quick else LAB_PORTS
        result += [
            Place(f"{rtt} ms", lab_address(rtt), lab_ports, rtt, LAB_OPEN) for rtt in RTTS_MS
        ]
    return result
