"""Host discovery: which targets answer at all, so that down hosts cost no port probes.

As nmap does by default: a loopback address is up without a probe (``localhost-response``);
other hosts get TCP pings to ports 80 and 443 (any answer, SYN-ACK or RST, means up):
raw SYNs through the SYN engine where raw sockets are allowed, else connect()s through the
connect engine, each with its timing; and, where raw sockets are allowed, an ICMP echo
request (ICMPv6 for IPv6 hosts: a host whose 80 and 443 are filtered still
answers it). A host that answers none of them after the timing's retries is down.
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
from portscout.engines.base import EngineOptions, os_errors
from portscout.packets import checksum
from portscout.plan import Probe
from portscout.results import IPAddress, Reason, State
from portscout.timing import RttEstimator, TimingPolicy

PING_PORTS = (80, 443)
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY = 128, 129
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
    tries (a host that answers the ICMP echo is not kept waiting for its TCP pings).

    Raises ScanError for a local problem (an OS error no host explains)."""
    with os_errors("host discovery"):
        return await _discover(hosts, options, icmp=icmp)


async def _discover(
    hosts: Sequence[IPAddress], options: EngineOptions, *, icmp: bool
) -> Discovered:
    found = _Found(hosts, options.timing)
    for host in hosts:
        if host.is_loopback:
            found.mark(host, Reason.LOCALHOST_RESPONSE, None)
    remote = [h for h in hosts if not h.is_loopback]
    if not remote:
        return found.result
    pings = [_tcp_pings(remote, options, found, raw=icmp)]
    for version in (4, 6):
        family = [h for h in remote if h.version == version]
        if icmp and family:
            pings.append(_icmp_echo(family, options, found, version))
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


async def _tcp_pings(
    hosts: Sequence[IPAddress], options: EngineOptions, found: _Found, *, raw: bool
) -> None:
    """TCP pings to ``PING_PORTS``: raw SYNs where raw sockets are allowed (as nmap, whose
    default pings as root are raw; a SYN costs a tenth of a connect(), and a /16 of
    silent addresses is 131,072 of them), else connect()s."""
    from portscout.engines.syn import SynEngine  # raw sockets: only where allowed

    # Lazy: a host found up meanwhile (by its echo reply) gets no more TCP pings.
    probes = (Probe(host, port) for port in PING_PORTS for host in hosts if host not in found)
    engine = SynEngine() if raw else AsyncConnectEngine()
    async for result in engine.run(probes, options):
        if result.state is State.OPEN:
            found.mark(result.host, Reason.SYN_ACK, result.rtt)
        elif result.state is State.CLOSED:
            found.mark(result.host, Reason.RESET, result.rtt)


def _echo_request(version: int, ident: int, seq: int) -> bytes:
    """An ICMP (type 8) or ICMPv6 (type 128) echo request. The kernel computes an ICMPv6
    checksum itself (RFC 3542, 3.1); ICMP's is ours."""
    payload = b"portscout"
    if version == 6:
        return struct.pack("!BBHHH", ICMPV6_ECHO_REQUEST, 0, 0, ident, seq) + payload
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    return (
        struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, checksum(header + payload), ident, seq)
        + payload
    )


def _echo_reply(version: int, packet: bytes) -> tuple[int, int] | None:
    """``(id, seq)`` of an echo reply: an IPv4 datagram with its header (raw ICMP
    sockets give it), or an ICMPv6 message alone."""
    start = (packet[0] & 0x0F) * 4 if version == 4 and packet else 0
    if len(packet) < start + 8:
        return None
    kind, _, _, ident, seq = struct.unpack_from("!BBHHH", packet, start)
    if kind != (ICMP_ECHO_REPLY if version == 4 else ICMPV6_ECHO_REPLY):
        return None
    return ident, seq


def _icmp_socket(version: int) -> socket.socket | None:
    family, proto = (
        (socket.AF_INET, socket.IPPROTO_ICMP) if version == 4
        else (socket.AF_INET6, socket.IPPROTO_ICMPV6)
    )  # fmt: skip
    try:
        sock = socket.socket(family, socket.SOCK_RAW, proto)
    except OSError:  # no privilege, or no such family here (IPv6 disabled)
        return None
    sock.setblocking(False)
    return sock


async def _icmp_echo(
    hosts: Sequence[IPAddress], options: EngineOptions, found: _Found, version: int
) -> None:
    """Echo requests to every host of one family, ``ICMP_TRIES`` rounds; replies matched
    by id and seq. A host the request cannot even leave for (no route) is not waited for.
    """
    sock = _icmp_socket(version)
    if sock is None:
        return
    loop = asyncio.get_running_loop()
    ident = os.getpid() & 0xFFFF
    index = {h: i & 0xFFFF for i, h in enumerate(hosts)}
    policy = options.timing
    sent: dict[IPAddress, float] = {}  # first requests, until a second makes replies ambiguous
    silent: set[IPAddress] = set()  # asked and not answered yet: a set, a /16 answers a lot
    everyone = asyncio.Event()

    def on_readable() -> None:
        while True:
            try:
                packet, peer = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            reply = _echo_reply(version, packet)
            host = ip_address(str(peer[0]).split("%")[0])
            if reply is not None and reply == (ident, index.get(host)):
                # Timed only when one request went out (Karn's rule).
                rtt = time.monotonic() - sent[host] if host in sent else None
                found.mark(host, Reason.ECHO_REPLY, rtt)
                silent.discard(host)
                if not silent:
                    everyone.set()

    with sock:
        loop.add_reader(sock.fileno(), on_readable)
        try:
            for round_ in range(ICMP_TRIES):
                silent.clear()
                everyone.clear()
                for host in hosts:
                    if host in found:
                        continue
                    if round_:
                        sent.pop(host, None)  # a reply could be to either request now
                    try:
                        sock.sendto(_echo_request(version, ident, index[host]), (str(host), 0))
                    except OSError:  # unreachable from here: simply not up
                        continue
                    silent.add(host)
                    if not round_:
                        sent[host] = time.monotonic()
                    if policy.max_rate:
                        await asyncio.sleep(1 / policy.max_rate)
                await _wait_for_answers(found, everyone, silent, backoff=1 << round_)
        finally:
            loop.remove_reader(sock.fileno())


async def _wait_for_answers(
    found: _Found, everyone: asyncio.Event, silent: set[IPAddress], *, backoff: int
) -> None:
    """Until the timeout the answers so far suggest (the initial one before any), times
    ``backoff``: the silent hosts of a /24 need not keep the others waiting 1 s, and a
    host farther than those that answered gets a longer wait each round (the estimate is
    theirs, not its own: RFC 6298 5.5)."""
    started = time.monotonic()
    while silent and (left := started + backoff * found.rtt.timeout - time.monotonic()) > 0:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(left, ICMP_RECHECK)):
                await everyone.wait()
