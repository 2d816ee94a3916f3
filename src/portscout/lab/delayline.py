"""User-space delay line between two TUN devices: latency, jitter and loss, both directions.

The kernel here has no netem, so one process holds a TUN descriptor per side (side A in the
scanner's namespace, side B in the target namespace), reads every IPv4 packet, drops it with
probability ``loss`` (a seeded ``random.Random``), and releases the rest after ``delay`` plus
uniform jitter in ``[-jitter, +jitter]`` (clamped at 0; jitter can reorder, as netem's does).
Parameters are per lab host: the host address (destination from A, source from B) picks its
link, others get the default. ``delay`` is one way; a round trip costs two.

Bounds: at most ``queue_limit`` packets wait (more are dropped and counted, as a router
queue would); the process stops after ``--max-seconds`` or ``--max-packets`` received, at end
of file on stdin, or when its parent dies. ``select`` (microsecond timeouts) and a 1 us timer
slack keep releases within ~0.1 ms of schedule on an idle machine; ``late_max`` in the stats
says how late the worst one was, ``queue_drops`` whether the queue overflowed: a benchmark
must check both, so that it measures the scanner rather than this process.

Measured capacity (2 vCPU AMD EPYC VM shared with other work, CPython 3.11; one process
floods 64-byte UDP at a lab host, which answers each with ICMP port unreachable; the delay
line saturated, as the scanner TUN's tx_dropped showed; packets/s counted both directions,
3 runs of 2 s each): 124k, 200k, 206k packets/s at zero delay; 77k, 92k, 140k packets/s
with 40 ms RTT (through the heap). Saturated, releases fall 40-130 ms behind schedule, so
the line is only accurate well below that: keep a benchmark under ~50,000 packets/s in
total (~25,000 probes/s with their answers) and check ``late_max`` and ``queue_drops``.

Run as ``python -m portscout.lab.delayline --parent-pid P --fd-a A --fd-b B``; the first
stdin line is the JSON config ``{"default": [delay, jitter, loss], "links": {"198.18.1.5":
[...]}, "seed": 0, "queue_limit": 100000}``; then each ``{"cmd": "stats"}`` line is answered
with a stats line, and the final stats are written on exit. Imports only the standard library
and ``portscout.lab.process``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import select
import sys
import time
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address
from typing import Any

from portscout.lab.process import die_with_parent, read_first_line, write_message

READ_BATCH = 256  # packets read from one TUN before looking at the other and the clock
IDLE_WAKE = 0.25  # s: longest sleep, so that the deadline is noticed
LinkParams = tuple[float, float, float]  # (one-way delay s, jitter s, loss probability)


@dataclass(slots=True)
class DirectionStats:
    """Counters of one direction (0: A->B, scanner to target; 1: B->A)."""

    received: int = 0
    lost: int = 0  # dropped on purpose, with probability ``loss``
    forwarded: int = 0
    queue_drops: int = 0  # dropped because ``queue_limit`` packets were already waiting
    write_errors: int = 0
    non_ipv4: int = 0  # IPv6 or garbage: dropped, never forwarded
    late_max: float = 0.0  # s: worst release after its scheduled time
    late_sum: float = 0.0


class DelayLine:
    """The pure part: which packets pass, and when. ``admit`` is called once per packet."""

    def __init__(
        self,
        *,
        default: LinkParams,
        links: dict[bytes, LinkParams],
        seed: int,
        queue_limit: int,
    ) -> None:
        self.default = default
        self.links = links
        self.random = random.Random(seed)
        self.queue_limit = queue_limit
        self.stats = (DirectionStats(), DirectionStats())

    def admit(self, direction: int, packet: bytes, now: float) -> float | None:
        """Release time for ``packet``, or None when it is dropped (lost or not IPv4)."""
        stats = self.stats[direction]
        if len(packet) < 20 or packet[0] >> 4 != 4:
            stats.non_ipv4 += 1
            return None
        stats.received += 1
        key = packet[16:20] if direction == 0 else packet[12:16]
        delay, jitter, loss = self.links.get(key, self.default)
        if loss and self.random.random() < loss:
            stats.lost += 1
            return None
        if jitter:
            delay = max(0.0, delay + self.random.uniform(-jitter, jitter))
        return now + delay

    def snapshot(self, queued: int, elapsed: float, stop: str | None) -> dict[str, Any]:
        return {
            "directions": [asdict(s) for s in self.stats],
            "queued": queued,
            "elapsed": elapsed,
            "stop": stop,
        }


def _write(fd: int, packet: bytes, stats: DirectionStats) -> None:
    try:
        os.write(fd, packet)
    except OSError:  # the far TUN is gone or full: the packet is lost, as on a wire
        stats.write_errors += 1
    else:
        stats.forwarded += 1


class Runner:
    """The I/O loop: two TUN fds and stdin, one heap of waiting packets."""

    def __init__(self, line: DelayLine, fd_a: int, fd_b: int) -> None:
        self.line = line
        self.fds = (fd_a, fd_b)
        self.heap: list[tuple[float, int, int, bytes]] = []  # (release, seq, direction, packet)
        self.seq = 0
        self.stdin_buffer = b""
        self.started = time.monotonic()

    def run(self, max_seconds: float, max_packets: int) -> str:
        """Forward until a bound is reached; return why it stopped."""
        deadline = self.started + max_seconds
        stats = self.line.stats
        while True:
            now = time.monotonic()
            if now >= deadline:
                return "max-seconds"
            if stats[0].received + stats[1].received >= max_packets:
                return "max-packets"
            self._release(now)
            timeout = min(self.heap[0][0] - now, IDLE_WAKE) if self.heap else IDLE_WAKE
            readable = select.select([0, *self.fds], [], [], max(timeout, 0.0))[0]
            now = time.monotonic()
            for fd in readable:
                stop = self._on_stdin() if fd == 0 else self._on_tun(fd, now)
                if stop:
                    return stop

    def _release(self, now: float) -> None:
        heap, stats = self.heap, self.line.stats
        while heap and heap[0][0] <= now:
            release, _, direction, packet = heapq.heappop(heap)
            late = now - release
            stats[direction].late_sum += late
            stats[direction].late_max = max(stats[direction].late_max, late)
            _write(self.fds[1 - direction], packet, stats[direction])

    def _on_tun(self, fd: int, now: float) -> str | None:
        direction = self.fds.index(fd)
        out_fd = self.fds[1 - direction]
        stats = self.line.stats[direction]
        admit, heap = self.line.admit, self.heap
        for _ in range(READ_BATCH):
            try:
                packet = os.read(fd, 65536)
            except BlockingIOError:
                return None
            except OSError:  # the device was deleted under us: the lab is going away
                return "tun-gone"
            release = admit(direction, packet, now)
            if release is None:
                continue
            if release <= now and not heap:
                _write(out_fd, packet, stats)
            elif len(heap) >= self.line.queue_limit:
                stats.queue_drops += 1
            else:
                self.seq += 1
                heapq.heappush(heap, (release, self.seq, direction, packet))
        return None

    def _on_stdin(self) -> str | None:
        chunk = os.read(0, 4096)
        if not chunk:
            return "stdin-closed"
        self.stdin_buffer += chunk
        while b"\n" in self.stdin_buffer:
            _, self.stdin_buffer = self.stdin_buffer.split(b"\n", 1)
            write_message(self.snapshot(None))
        return None

    def snapshot(self, stop: str | None) -> dict[str, Any]:
        return self.line.snapshot(len(self.heap), time.monotonic() - self.started, stop)


def parse_config(config: dict[str, Any]) -> DelayLine:
    def params(raw: list[float]) -> LinkParams:
        delay, jitter, loss = (float(x) for x in raw)
        return (delay, jitter, loss)

    links = {IPv4Address(a).packed: params(p) for a, p in config.get("links", {}).items()}
    return DelayLine(
        default=params(config["default"]),
        links=links,
        seed=int(config.get("seed", 0)),
        queue_limit=int(config.get("queue_limit", 100_000)),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m portscout.lab.delayline")
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--fd-a", type=int, required=True, help="TUN fd, scanner side")
    parser.add_argument("--fd-b", type=int, required=True, help="TUN fd, target side")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--max-packets", type=int, default=50_000_000)
    args = parser.parse_args(argv)
    die_with_parent(args.parent_pid, timer_slack_ns=1000)
    config_line, rest = read_first_line(timeout=10.0)
    runner = Runner(parse_config(json.loads(config_line)), args.fd_a, args.fd_b)
    runner.stdin_buffer = rest
    write_message({"ready": True})
    stop = runner.run(args.max_seconds, args.max_packets)
    write_message(runner.snapshot(stop))
    return 0


if __name__ == "__main__":
    sys.exit(main())
