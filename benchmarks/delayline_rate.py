"""How many packets per second the lab's delay line forwards before it saturates.

Run as root: ``sudo .venv/bin/python benchmarks/delayline_rate.py [--rtt S ...] [--senders
N ...] [--down]``. The script enters a private network namespace first (refusing to run
otherwise), builds a one-host ``Lab`` in it, and floods the lab host with 64-byte UDP
datagrams (to port 9) from ``senders`` forked processes for ``FLOOD_SECONDS``. The host
answers each with ICMP port unreachable, so both directions of the delay line are loaded;
with ``--down`` the host is down and only the outbound direction is. Over a window of
``WINDOW_SECONDS`` in the middle of the flood it reports the delay line's packets per
second in both directions, the forwarded rate, whether the scanner TUN dropped packets on
transmit (``tx_dropped`` grew: the delay line did not read fast enough, it is saturated),
the worst release lateness and the queue length. The only target is the lab host, in
198.18.0.0/15, reachable only inside the namespace.

This is the measurement behind the capacity quoted in ``portscout/lab/delayline.py`` and
``docs/benchmarks.md``: a lab benchmark must stay well below it (about 50,000 packets/s in
total) and check ``DelayLineStats.saturated()`` and ``late_max``.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from harness import enter_isolation

from portscout.lab import Host, Lab, Link

TARGET = IPv4Address("198.18.1.6")
FLOOD_SECONDS = 4.0  # each sender stops after this long ...
MAX_DATAGRAMS = 3_000_000  # ... or after this many datagrams
SETTLE_SECONDS = 1.0  # wait before the window opens
WINDOW_SECONDS = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Rate:
    rtt: float  # s
    senders: int
    target_up: bool
    total_pps: float  # packets received by the delay line, both directions
    forwarded_pps: float  # packets released towards the target
    tx_dropped: int  # scanner TUN packets dropped on transmit during the window
    late_max_ms: float
    queued: int

    def line(self) -> str:
        target = "up (answers ICMP)" if self.target_up else "down (silent)"
        return (
            f"| {self.rtt * 1000:g} | {self.senders} | {target} | {self.total_pps:,.0f} "
            f"| {self.forwarded_pps:,.0f} | {self.tx_dropped} | {self.late_max_ms:.1f} "
            f"| {self.queued} |"
        )


def tx_dropped(device: str) -> int:
    """The device's transmit drops, from this namespace's /proc/self/net/dev."""
    with open("/proc/self/net/dev") as table:
        for line in table:
            name, _, counters = line.partition(":")
            if name.strip() == device:
                return int(counters.split()[11])
    raise LookupError(f"no device {device} in this namespace")


def flood() -> None:
    """One sender: UDP datagrams to the lab host until the time or count bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        end, sent = time.monotonic() + FLOOD_SECONDS, 0
        while time.monotonic() < end and sent < MAX_DATAGRAMS:
            try:
                sock.sendto(b"x" * 36, (str(TARGET), 9))
                sent += 1
            except OSError:  # ENOBUFS or an ICMP error reported on the socket: keep going
                pass


def measure(rtt: float, senders: int, *, target_up: bool) -> Rate:
    host = (
        Host(address=TARGET, drop=frozenset({1})) if target_up else Host(address=TARGET, up=False)
    )
    with Lab([host], link=Link(rtt=rtt), max_seconds=60) as lab:
        assert lab.scanner_tun is not None
        pids = []
        for _ in range(senders):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                try:
                    flood()
                finally:
                    os._exit(0)
            pids.append(pid)
        time.sleep(SETTLE_SECONDS)
        a, drops_a = lab.delay_line_stats(), tx_dropped(lab.scanner_tun)
        time.sleep(WINDOW_SECONDS)
        b, drops_b = lab.delay_line_stats(), tx_dropped(lab.scanner_tun)
        for pid in pids:
            os.waitpid(pid, 0)
    seconds = b.elapsed - a.elapsed
    received = b.outbound.received + b.inbound.received - a.outbound.received - a.inbound.received
    return Rate(
        rtt=rtt,
        senders=senders,
        target_up=target_up,
        total_pps=received / seconds,
        forwarded_pps=(b.outbound.forwarded - a.outbound.forwarded) / seconds,
        tx_dropped=drops_b - drops_a,
        late_max_ms=max(b.outbound.late_max, b.inbound.late_max) * 1000,
        queued=b.queued,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rtt", type=float, nargs="+", default=[0.0, 0.040], help="seconds")
    p.add_argument("--senders", type=int, nargs="+", default=[1, 2], help="flooding processes")
    p.add_argument("--runs", type=int, default=3, help="runs of each combination")
    p.add_argument("--down", action="store_true", help="the host is down: outbound only")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    enter_isolation("delayline_rate.py")  # before any thread or child
    print("| RTT (ms) | senders | target | total pkt/s | forwarded pkt/s | tx_dropped "
          "| late max (ms) | queued |")  # fmt: skip
    print("|--:|--:|---|--:|--:|--:|--:|--:|")
    for rtt in args.rtt:
        for senders in args.senders:
            for _ in range(max(1, min(args.runs, 10))):
                print(measure(rtt, senders, target_up=not args.down).line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
