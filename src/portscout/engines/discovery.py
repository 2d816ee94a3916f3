"""Host discovery: which targets answer at all, so that down hosts cost no port probes.

As nmap does by default: a loopback address is up without a probe (``localhost-response``);
other hosts get TCP connect pings to ports 80 and 443 (any answer, SYN-ACK or RST, means
up) through the connect engine and its timing, and, where raw sockets are allowed, an
ICMP echo request. A host that answers none of them after the timing's retries is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Sequence
from ipaddress import ip_address
from typing import Any, NamedTuple

from portscout.engines.async_connect import AsyncConnectEngine
from portscout.engines.base import EngineOptions
from portscout.packets import checksum
from portscout.plan import Probe
from portscout.results import IPAddress, Reason, State
from portscout.timing import RttEstimator, TimingPolicy

PING_PORTS = (80, 443)
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMP_TRIES = 2
ICMP_RECHECK = 0.05  # seconds: how often a round's wait is recomputed from new answers


class Discovered(NamedTuple):
    """The hosts found up, each with the reason of its first answer, and the round trip
    of that answer where one was timed (the port scan starts its timing from it)."""

    up: dict[IPAddress, Reason]
    rtts: dict[IPAddress, float]


class _Found:
    """What the pings have found so far; ``everyone`` is set once every host is up, and
    ``rtt`` estimates how long an answer takes from the answers so far."""

    def __init__(self, hosts: Sequence[IPAddress], policy: TimingPolicy) -> None:
        self.total = len(set(hosts))
        self.result = Discovered({}, {})
        self.everyone = asyncio.Event()
        self.rtt = RttEstimator.from_policy(policy)

    def __contains__(self, host: object) -> bool:
        return host in self.result.up

    def mark(self, host: IPAddress, reason: Reason, rtt: float | None) -> None:
        if host in self.result.up:
            return
        self.result.up[host] = reason
        if rtt is not None:
            self.result.rtts[host] = rtt
            self.rtt.observe(rtt)
        if len(self.result.up) >= self.total:
            self.everyone.set()


async def discover(hosts: Sequence[IPAddress], options: EngineOptions, *, icmp: bool) -> Discovered:
    """Ping every host; done once every host has answered or every ping has run out of
    tries (a host that answers the ICMP echo is not kept waiting for its TCP pings)."""
    found = _Found(hosts, options.policy())
    for host in hosts:
        if host.is_loopback:
            found.mark(host, Reason.LOCALHOST_RESPONSE, None)
    remote = [h for h in hosts if not h.is_loopback]
    if not remote:
        return found.result
    pings = [_tcp_pings(remote, options, found)]
    v4 = [h for h in remote if h.version == 4]
    if icmp and v4:
        pings.append(_icmp_echo(v4, options, found))
    all_pings: asyncio.Future[Any] = asyncio.gather(*pings)
    everyone: asyncio.Future[Any] = asyncio.ensure_future(found.everyone.wait())
    try:
        await asyncio.wait({all_pings, everyone}, return_when=FIRST_COMPLETED)
        if all_pings.done():
            all_pings.result()  # a ping that failed raises here
    finally:
        for future in (all_pings, everyone):
            future.cancel()
        await asyncio.gather(all_pings, everyone, return_exceptions=True)
    return found.result


async def _tcp_pings(hosts: Sequence[IPAddress], options: EngineOptions, found: _Found) -> None:
    # Lazy: a host found up meanwhile (by its echo reply) gets no more TCP pings.
    probes = (Probe(host, port) for port in PING_PORTS for host in hosts if host not in found)
    async for result in AsyncConnectEngine().run(probes, options):
        if result.state is State.OPEN:
            found.mark(result.host, Reason.SYN_ACK, result.rtt)
        elif result.state is State.CLOSED:
            found.mark(result.host, Reason.RESET, result.rtt)


def _echo_request(ident: int, seq: int) -> bytes:
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    payload = b"portscout"
    return (
        struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, checksum(header + payload), ident, seq)
        + payload
    )


async def _icmp_echo(hosts: Sequence[IPAddress], options: EngineOptions, found: _Found) -> None:
    """Echo requests to every host, ``ICMP_TRIES`` rounds; replies matched by id and seq."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except PermissionError:
        return
    loop = asyncio.get_running_loop()
    ident = os.getpid() & 0xFFFF
    index = {h: i & 0xFFFF for i, h in enumerate(hosts)}
    policy = options.policy()
    sent: dict[IPAddress, float] = {}  # first requests, until a second makes replies ambiguous
    silent = set(hosts)  # not answered yet: a set, as a /16 gets tens of thousands of replies
    with sock:
        sock.setblocking(False)

        def on_readable() -> None:
            while True:
                try:
                    packet, (source, _) = sock.recvfrom(2048)
                except (BlockingIOError, InterruptedError):
                    return
                header_len = (packet[0] & 0x0F) * 4
                if len(packet) < header_len + 8:
                    continue
                kind, _, _, rid, rseq = struct.unpack_from("!BBHHH", packet, header_len)
                host = ip_address(source)
                if kind == ICMP_ECHO_REPLY and rid == ident and index.get(host) == rseq:
                    # Timed only when one request went out (Karn's rule).
                    rtt = time.monotonic() - sent[host] if host in sent else None
                    found.mark(host, Reason.ECHO_REPLY, rtt)
                    silent.discard(host)
                    if not silent:
                        everyone.set()

        everyone = asyncio.Event()
        loop.add_reader(sock.fileno(), on_readable)
        try:
            for round_ in range(ICMP_TRIES):
                for host in hosts:
                    if host in found:
                        continue
                    if round_:
                        sent.pop(host, None)  # a reply could be to either request now
                    with contextlib.suppress(OSError):  # unreachable: simply not up
                        sock.sendto(_echo_request(ident, index[host]), (str(host), 0))
                        if not round_:
                            sent[host] = time.monotonic()
                    if policy.max_rate:
                        await asyncio.sleep(1 / policy.max_rate)
                # Until the timeout the answers so far suggest (the initial one before
                # any): the silent hosts of a /24 need not keep the others waiting 1 s.
                started = time.monotonic()
                while (left := started + found.rtt.timeout - time.monotonic()) > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(everyone.wait(), min(left, ICMP_RECHECK))
                    if everyone.is_set():
                        break
        finally:
            loop.remove_reader(sock.fileno())
