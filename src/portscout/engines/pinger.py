"""Raw host-discovery pings, as nmap sends them as root: ICMP echo, SYN to 443, ACK to 80
and, for IPv4, ICMP timestamp (``nmap -PE -PS443 -PA80 -PP``). A host that answers any of
them is up.

Owns the raw sockets of discovery and its rounds of sends; the packets and their matching
are ``pings``'s (pure). Imports the core and ``rawsock``; never output, store or cli.

Why not the SYN engine: a ping needs no port state, no per-probe retry timer and no
congestion window, only "did this host answer anything". Each round sends every probe
kind to every host not yet found, paced at the scan's --max-rate (else ``PING_RATE``),
then waits for the answers the round trips so far suggest; ``TRIES`` rounds (one with
--max-retries 0). What is kept
per host is its first send time of the round and our address for it, for the hosts of
one call (one host group) only. Answers are matched statelessly by their keyed cookies,
and each socket is filtered in the kernel to our source-port block or to the reply types.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Iterable, Sequence
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address
from typing import Final, NamedTuple

from portscout.engines import rawsock
from portscout.packets import ACK, SYN
from portscout.pings import (
    ACK_PING_PORT,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_TIMESTAMP_REPLY,
    ICMP_TIMESTAMP_REQUEST,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    SYN_PING_PORT,
    cookie,
    icmp_request,
    icmp_seq,
    match_icmp,
    match_ipv4_icmp,
    match_ipv4_tcp,
    match_tcp,
    ping_hasher,
    tcp_ping,
)
from portscout.results import IPAddress, Reason
from portscout.timing import RttEstimator, TimingPolicy

log = logging.getLogger(__name__)

TRIES: Final = 2  # rounds: nmap -T3/-T4 retransmit a ping once when nothing came back
# Packets a second without --max-rate: the lab's delay line (and a small LAN) keep up with
# it, and a /16's 4 probes a host take 9 s a round.
PING_RATE: Final = 30_000.0
CHUNK: Final = 64  # packets between two looks at the clock (and the event loop's turn)
RECHECK: Final = 0.05  # s: how often a round's wait is recomputed from new answers
MAX_READS: Final = 1024  # packets one reader call takes at most


class Ping(StrEnum):
    """The kinds of ping (nmap's options)."""

    ECHO = "echo"  # -PE: ICMP (ICMPv6) echo request
    SYN = "syn"  # -PS443
    ACK = "ack"  # -PA80
    TIMESTAMP = "timestamp"  # -PP: IPv4 only


DEFAULT_PINGS: Final = (Ping.ECHO, Ping.SYN, Ping.ACK, Ping.TIMESTAMP)


class Discovered(NamedTuple):
    """The hosts found up, each with the reason of its first answer, and the round trip
    of that answer where one was timed (the port scan starts its timing from it)."""

    up: dict[IPAddress, Reason]
    rtts: dict[IPAddress, float]


class Found:
    """What the pings have found so far; ``everyone`` is set once every host is up, and
    ``rtt`` estimates how long an answer takes from the answers so far."""

    def __init__(self, hosts: Iterable[IPAddress], policy: TimingPolicy) -> None:
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


class _Sockets(NamedTuple):
    """One family's raw sockets: TCP and ICMP, each sending and (filtered) receiving."""

    tcp: socket.socket
    icmp: socket.socket

    def close(self) -> None:
        self.tcp.close()
        self.icmp.close()


def _open(version: int, sports: range) -> _Sockets:
    """Raises ``PrivilegeError`` without the privilege, ``OSError`` without the family."""
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    icmp_proto = socket.IPPROTO_ICMP if version == 4 else socket.IPPROTO_ICMPV6
    replies = (ICMP_ECHO_REPLY, ICMP_TIMESTAMP_REPLY) if version == 4 else (ICMPV6_ECHO_REPLY,)
    tcp = rawsock.raw_socket(family, socket.IPPROTO_TCP)
    try:
        icmp = rawsock.raw_socket(family, icmp_proto)
    except BaseException:
        tcp.close()
        raise
    sockets = _Sockets(tcp, icmp)
    try:
        rawsock.attach_filter(tcp, rawsock.tcp_answer_filter(sports, ip_header=version == 4,
                                                              ack=False))  # fmt: skip
        rawsock.attach_filter(icmp, rawsock.icmp_type_filter(replies, version=version))
        rawsock.enlarge_receive_buffer(tcp, 1 << 22)
        rawsock.enlarge_receive_buffer(icmp, 1 << 22)
    except BaseException:
        sockets.close()
        raise
    return sockets


class _Pinger:
    """One call's pings: sockets per family, our address per host, the rounds."""

    def __init__(self, found: Found, kinds: Sequence[Ping], rate: float, sports: range) -> None:
        self.found, self.kinds, self.rate, self.sports = found, kinds, rate, sports
        self.hasher = ping_hasher(secrets.token_bytes(16))
        base = secrets.randbelow(0x10000 - TRIES)
        self.idents = range(base, base + TRIES)
        self.loop = asyncio.get_running_loop()
        self.sockets: dict[int, _Sockets | None] = {}
        self.routes: dict[int, socket.socket] = {}  # a UDP socket per family, for lookups
        self.local: dict[bytes, bytes] = {}  # our address for each peer pinged
        self.sent: dict[bytes, tuple[int, float]] = {}  # peer -> (round, first send time)
        self.silent: set[bytes] = set()  # peers of this round not answered yet
        self.answered = asyncio.Event()  # set when ``silent`` empties
        self.packets = 0  # sent by this call

    def _family(self, version: int) -> _Sockets | None:
        if version not in self.sockets:
            try:
                sockets: _Sockets | None = _open(version, self.sports)
            except OSError:  # no such family here (IPv6 disabled): its hosts get no pings
                sockets = None
            self.sockets[version] = sockets
            if sockets is not None:
                self.loop.add_reader(sockets.tcp.fileno(), self._read, sockets.tcp, version, True)
                self.loop.add_reader(sockets.icmp.fileno(), self._read, sockets.icmp, version,
                                     False)  # fmt: skip
        return self.sockets[version]

    def _local_for(self, host: IPAddress) -> bytes | None:
        """Our address towards ``host`` (a UDP connect() sends nothing), None without a
        route: such a host is simply not up from here."""
        peer = host.packed
        local = self.local.get(peer)
        if local is None:
            route = self.routes.get(host.version)
            if route is None:
                family = socket.AF_INET if host.version == 4 else socket.AF_INET6
                route = self.routes[host.version] = socket.socket(family, socket.SOCK_DGRAM)
            try:
                route.connect((str(host), 9))
            except OSError:
                return None
            name = str(route.getsockname()[0]).split("%")[0]
            local = socket.inet_pton(route.family, name)
            self.local[peer] = local
        return local

    def _probes(self, host: IPAddress, local: bytes, round_: int) -> list[tuple[bool, bytes]]:
        """``(tcp, packet)`` of every kind of ping for ``host``."""
        peer, sport, ident = host.packed, self.sports.start + round_, self.idents[round_]
        seq = icmp_seq(self.hasher, peer)
        out: list[tuple[bool, bytes]] = []
        for kind in self.kinds:
            if kind is Ping.SYN:
                value = cookie(self.hasher, peer, sport, SYN_PING_PORT)
                out.append((True, tcp_ping(local, peer, sport, SYN_PING_PORT, SYN, value)))
            elif kind is Ping.ACK:
                value = cookie(self.hasher, peer, sport, ACK_PING_PORT)
                out.append((True, tcp_ping(local, peer, sport, ACK_PING_PORT, ACK, value)))
            elif kind is Ping.ECHO:
                echo = ICMP_ECHO_REQUEST if host.version == 4 else ICMPV6_ECHO_REQUEST
                out.append((False, icmp_request(echo, ident, seq)))
            elif host.version == 4:  # Ping.TIMESTAMP: no ICMPv6 twin
                out.append((False, icmp_request(ICMP_TIMESTAMP_REQUEST, ident, seq)))
        return out

    def _send(self, host: IPAddress, round_: int) -> int:
        """Every ping to ``host``; the packets sent (0: no route, no family)."""
        sockets = self._family(host.version)
        local = self._local_for(host) if sockets is not None else None
        if sockets is None or local is None:
            return 0
        address = (str(host), 0)
        sent = 0
        for tcp, packet in self._probes(host, local, round_):
            try:
                (sockets.tcp if tcp else sockets.icmp).sendto(packet, address)
            except (BlockingIOError, InterruptedError):
                continue  # the queue is full: the next round sends it again
            except OSError:  # no route after all, or our own firewall: not up from here
                return sent
            sent += 1
        if sent:
            self.sent[host.packed] = (round_, time.monotonic())
            self.silent.add(host.packed)
        return sent

    async def round(self, hosts: Sequence[IPAddress], round_: int) -> None:
        """Send every ping of try ``round_`` to every host not found yet, paced at
        ``rate``, then wait for answers (``backoff`` doubles each round)."""
        self.silent.clear()
        self.answered.clear()
        started, packets, chunk = time.monotonic(), 0, 0
        for host in hosts:
            if host in self.found:
                continue
            sent = self._send(host, round_)
            packets, chunk = packets + sent, chunk + sent
            if chunk >= CHUNK:
                chunk = 0
                ahead = started + packets / self.rate - time.monotonic()
                await asyncio.sleep(max(0.0, ahead))  # the readers run meanwhile
        self.packets += packets
        await self._wait(backoff=1 << round_)

    async def _wait(self, *, backoff: int) -> None:
        """Until the timeout the answers so far suggest (the initial one before any), times
        ``backoff``: the silent hosts of a /24 need not keep the others waiting 1 s, and a
        host farther than those that answered gets a longer wait each round (the estimate
        is theirs, not its own: RFC 6298 5.5)."""
        started = time.monotonic()
        timeout = self.found.rtt
        while self.silent and (left := started + backoff * timeout.timeout - time.monotonic()) > 0:
            self.answered.clear()  # set while sending, when the silent set emptied for a time
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, RECHECK)):
                    await self.answered.wait()

    def _read(self, sock: socket.socket, version: int, tcp: bool) -> None:
        now = time.monotonic()
        for _ in range(MAX_READS):
            try:
                packet, address = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            if version == 4:
                match = (match_ipv4_tcp if tcp else match_ipv4_icmp)(
                    self.hasher, packet, self.sports if tcp else self.idents
                )
            else:
                peer = socket.inet_pton(socket.AF_INET6, str(address[0]).split("%")[0])
                found = (match_tcp if tcp else match_icmp)(
                    self.hasher, packet, peer, self.sports if tcp else self.idents
                )
                match = None if found is None else (peer, *found)
            if match is not None:
                self._answered(*match, now)

    def _answered(self, peer: bytes, reason: Reason, tryno: int, now: float) -> None:
        host: IPAddress = IPv4Address(peer) if len(peer) == 4 else IPv6Address(peer)
        sent = self.sent.get(peer)
        # Timed only when the answer is to the latest try (Karn's rule).
        rtt = now - sent[1] if sent is not None and sent[0] == tryno else None
        self.found.mark(host, reason, rtt)
        self.silent.discard(peer)
        if not self.silent:
            self.answered.set()

    def close(self) -> None:
        for sockets in self.sockets.values():
            if sockets is not None:
                self.loop.remove_reader(sockets.tcp.fileno())
                self.loop.remove_reader(sockets.icmp.fileno())
                sockets.close()
        for route in self.routes.values():
            route.close()
        self.sockets.clear()
        self.routes.clear()


def rounds_for(policy: TimingPolicy) -> int:
    """Rounds of pings: ``TRIES``, or fewer where --max-retries allows fewer (0: one
    round, as every probe of the scan gets one try)."""
    return max(1, min(TRIES, policy.max_retries + 1))


async def raw_pings(
    hosts: Sequence[IPAddress],
    policy: TimingPolicy,
    found: Found,
    kinds: Sequence[Ping] = DEFAULT_PINGS,
) -> None:
    """Ping ``hosts`` (none loopback) with ``kinds``, ``rounds_for(policy)`` rounds,
    marking in ``found`` each host that answers. Raises ``PrivilegeError`` without raw sockets,
    ``OSError`` when no source port block is free."""
    claim = rawsock.claim_source_ports(TRIES)
    pinger = _Pinger(found, kinds, policy.max_rate or PING_RATE, claim.ports)
    rounds = rounds_for(policy)
    try:
        for round_ in range(rounds):
            await pinger.round(hosts, round_)
            if all(host in found for host in hosts):
                break
    finally:
        pinger.close()
        claim.release()
        log.debug("pings: %d packets to %d hosts, %d up", pinger.packets, len(hosts),
                  len(found.result.up))  # fmt: skip
