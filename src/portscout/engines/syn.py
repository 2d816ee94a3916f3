"""The raw-socket SYN engine (nmap -sS, masscan): builds IPv4 and IPv6 SYNs itself, sends
them at a fixed rate and matches the answers statelessly.

Imports the core (packets, timing, plan, results, errors) and ``rawsock``; never output,
store or cli.

How a scan runs (masscan's design, nmap's timing):

* Stateless matching. Each SYN's sequence number is ``packets.syn_cookie`` under a per-scan
  secret, so an answer proves itself: SYN-ACK (open) or RST-ACK (closed) acknowledging
  ``cookie + 1``, or an ICMP unreachable (filtered, reason from type and code) quoting
  ``cookie``. Anything else, and anything forged without the secret, is ignored.
* Scheduling is ``schedule.Scheduler``'s, as for the connect engine: what to send, at what
  rate, how long to wait, what to retry, what is filtered. This module holds only I/O:
  batches of SYNs out (``sendmmsg``), answers in (``recvmmsg``), the flights not yet decided
  by (peer, port) so that an answer finds its own, and the translation of OS errors.
* The try number is the offset of the source port in our block, so an RTT sample names the
  try it belongs to (Karn), and a late answer to a try that timed out still decides its
  port until the port is decided.
* Source: per target, the address the routing table picks (``rawsock.source_address``;
  a target without one has its ports filtered, ``net-unreach``, and the scan goes on) and
  a block of ``SOURCE_PORTS`` ports the kernel will not use (``rawsock.claim_source_ports``,
  at a random place). Each engine instance claims its own block and filters its raw
  sockets to it, so worker processes of ``engines.processes`` each see only their own
  answers, although every raw socket is offered every packet. Each instance also draws its
  own secret unless given a key, which makes another worker's answers fail validation even
  if they got through.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import secrets
import socket
import struct
import sys
import time
from array import array
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Final, cast

from portscout.engines import rawsock
from portscout.engines.base import BACKPRESSURE, CONNECT_ERRORS, EngineOptions, route_verdict
from portscout.errors import ScanError
from portscout.packets import (
    ACK,
    IPPROTO_ICMPV6,
    RST,
    SYN,
    SynTemplate,
    match_ipv4,
    match_ipv6,
    syn_cookie,
)
from portscout.plan import Probe
from portscout.results import IPAddress, Reason, Result, State
from portscout.schedule import BURST, SEND_BATCH, Flight, HostState, Scheduler
from portscout.timing import TimingPolicy

DEFAULT_RATE: Final = 300_000.0  # packets/s per engine: loopback keeps up, answers are not lost
RECEIVE_BATCH: Final = 64  # answers per recvmmsg(2) at most
# recvmmsg batches one reader call takes at most, then the loop runs other callbacks (the
# sender's): a flood of packets to our ports must not starve sending.
MAX_READS: Final = 16
SOURCE_PORTS: Final = 16  # one block per engine; the offset in it is the try number
ROUTE_CACHE: Final = 4096  # routes remembered; beyond, the cache starts afresh
MAX_WAIT: Final = 0.05  # seconds: the send loop looks again at least this often
# Where the system has no route or source address for a target (and says so with an
# errno that decides nothing in CONNECT_ERRORS): its ports are filtered, the scan goes on.
UNROUTABLE: Final = (State.FILTERED, Reason.NET_UNREACH)
# An enum member costs a class attribute lookup (0.2 us in 3.11): per answer, these.
_CLOSED, _OPEN, _FILTERED = State.CLOSED, State.OPEN, State.FILTERED
_NO_PORTS: array[int] = array("H")  # never appended to: replaced before the first use
_RESET, _SYN_ACK = Reason.RESET, Reason.SYN_ACK
log = logging.getLogger(__name__)
_COOKIE_PERSON: Final = b"portscout.syn"  # packets.syn_cookie's; checked in AnswerMatcher
_PORTS = struct.Struct("!HH")
_IP_FIELDS = struct.Struct("!HxxHxB")  # total length, flags+fragment offset, protocol (at 2)
_TCP_HEAD = struct.Struct("!HHxxxxIBB")  # ports, ack, data offset, flags
# An IPv4 header of 20 bytes and TCP's first 14: version+IHL, total length, flags+fragment
# offset, TTL, protocol, source, destination; ports, ack, data offset, flags.
_HEAD4 = struct.Struct("!BxHxxHBBxx4s4sHHxxxxIBB")
_HOPLIMIT_SPACE = socket.CMSG_SPACE(4)


def scan_secret(key: int | None) -> bytes:
    """The 16-byte cookie secret: fresh from ``secrets`` when ``key`` is None, else derived
    from ``key`` (reproducible runs and tests; a key the user chose is a guessable secret)."""
    if key is None:
        return secrets.token_bytes(16)
    data = key.to_bytes(max(16, (key.bit_length() + 7) // 8), "big")
    return hashlib.blake2b(data, digest_size=16, person=b"portscout.synkey").digest()


# A validated TCP answer: scanned host (packed), scanned port, our port, state, reason, TTL.
TcpAnswer = tuple[bytes, int, int, State, Reason, int | None]


class AnswerMatcher:
    """The TCP half of ``packets.match_ipv4``/``match_ipv6`` on the hot path: the same
    packets pass (``tests/engines/test_syn.py`` holds them to it), but no header objects
    are built, and the keyed hash state is copied instead of keyed anew (one BLAKE2b block
    instead of two): about 2 us per answer instead of 10.
    """

    __slots__ = ("_hasher", "_high", "_low", "sports")

    def __init__(self, secret: bytes, sports: range) -> None:
        self._hasher = hashlib.blake2b(digest_size=4, key=secret, person=_COOKIE_PERSON)
        self.sports, self._low, self._high = sports, sports.start, sports.stop
        probe = IPv4Address("192.0.2.1"), IPv4Address("198.51.100.2"), 40000, 80
        if self.cookie(probe[0].packed, probe[1].packed, 40000, 80) != syn_cookie(secret, *probe):
            raise RuntimeError("AnswerMatcher disagrees with packets.syn_cookie")

    def hasher_for(self, src: bytes, dst: bytes) -> hashlib.blake2b:
        """The keyed hash with ``src + dst`` absorbed: ``cookie``'s for those addresses,
        copied per SYN and fed only the ports."""
        hasher = self._hasher.copy()
        hasher.update(src + dst)
        return hasher

    def cookie(self, src: bytes, dst: bytes, sport: int, dport: int) -> int:
        """``packets.syn_cookie`` over packed addresses."""
        hasher = self._hasher.copy()
        hasher.update(src + dst + _PORTS.pack(sport, dport))
        return int.from_bytes(hasher.digest(), "big")

    def tcp(
        self, data: bytes, start: int, end: int, local: bytes, peer: bytes, ttl: int | None
    ) -> TcpAnswer | None:
        """Match the TCP segment ``data[start:end]`` from ``peer`` to ``local``."""
        if end - start < 20:
            return None
        sport, dport, ack, offset, flags = _TCP_HEAD.unpack_from(data, start)
        if not 20 <= (offset >> 4) * 4 <= end - start or not flags & ACK:
            return None
        if not self._low <= dport < self._high:
            return None
        if flags & RST:
            state, reason = State.CLOSED, Reason.RESET
        elif flags & SYN:
            state, reason = State.OPEN, Reason.SYN_ACK
        else:
            return None
        if ack != (self.cookie(local, peer, dport, sport) + 1) & 0xFFFFFFFF:
            return None
        return peer, sport, dport, state, reason, ttl

    def ipv4(self, data: bytes) -> TcpAnswer | None:
        """Match an IPv4 datagram carrying TCP (header included, as raw sockets give it)."""
        if len(data) < 20:
            return None
        ihl = (data[0] & 0x0F) * 4
        total, fragment, proto = _IP_FIELDS.unpack_from(data, 2)
        if data[0] >> 4 != 4 or ihl < 20 or ihl > total or len(data) < ihl:
            return None
        if fragment & 0x1FFF or proto != 6:
            return None
        return self.tcp(data, ihl, min(total, len(data)), data[16:20], data[12:16], data[8])


@dataclass(slots=True)
class _Route:
    """How to reach one target: the sender, the template of our source, packed addresses,
    the keyed hash with both addresses already absorbed, the destination as sendmmsg
    wants it, and the host's scheduling state (whose ``tag`` is our packed address)."""

    batch: rawsock.SendBatch
    template: SynTemplate
    local: bytes
    peer: bytes
    peer_int: int
    hasher: hashlib.blake2b
    sockaddr: ctypes.Array[ctypes.c_char]
    host: HostState


def default_policy(options: EngineOptions, rate: float | None) -> TimingPolicy:
    """The scan's policy (``EngineOptions.timing``), with ``rate`` (the engine's own cap)
    as --max-rate where the policy has none."""
    policy = options.timing
    if policy.max_rate is None and rate is not None:
        policy = policy.override(max_rate=rate)
    return policy


class SynEngine:
    """``--engine syn`` (-sS). ``key`` seeds the cookie secret (None: a fresh secret per
    engine instance, the safe default); ``rate`` caps packets per second for this instance
    (None: no cap); ``timing`` replaces the policy derived from ``EngineOptions``.

    ``keep_closed`` False: closed ports are only counted in ``closed``, never yielded, which
    spares a ``Result`` per closed port (``engines.processes`` sets it when its caller only
    counts them); every other result is yielded as usual. With ``closed_ports`` a dict as
    well, those closed ports (reason ``reset``) are also collected there, per host, as an
    array the caller may take and clear while the scan runs (the history database's need).

    ``run`` raises ``PrivilegeError`` without root or CAP_NET_RAW, ``ScanError`` when no
    source port block is free or a send fails for a local reason.
    """

    name = "syn"

    def __init__(
        self,
        key: int | None = None,
        *,
        rate: float | None = DEFAULT_RATE,
        timing: TimingPolicy | None = None,
        keep_closed: bool = True,
    ) -> None:
        self.key, self.rate, self.timing = key, rate, timing
        self.keep_closed = keep_closed
        self.sent = 0  # SYNs sent by the last run, retransmissions included
        self.closed = 0  # closed ports counted and not yielded (keep_closed False)
        self.stray_synacks = 0  # SYN-ACKs of the last run for no probe in flight (ignored)
        self.forged_synacks = 0  # SYN-ACKs of the last run failing the cookie (ignored)
        self.closed_ports: dict[IPAddress, array[int]] | None = None
        self.source_ports: range | None = None  # the block the running scan holds

    async def run(self, probes: Iterator[Probe], options: EngineOptions) -> AsyncIterator[Result]:
        policy = self.timing or default_policy(options, self.rate)
        try:
            claim = rawsock.claim_source_ports(SOURCE_PORTS)
        except OSError as exc:
            raise ScanError(f"no free source ports for the syn engine: {exc.strerror}") from exc
        scheduler = Scheduler(
            policy, iter(probes), now=time.monotonic(), max_in_flight=options.max_in_flight,
            distinct_tries=SOURCE_PORTS, rtt_hints=options.rtt_hints,
        )  # fmt: skip
        scan = _SynScan(
            scan_secret(self.key), claim.ports, scheduler, self.keep_closed, self.closed_ports
        )
        self.source_ports, self.closed = claim.ports, 0
        done = scheduler.done
        try:
            while True:
                scan.step()
                while done:
                    yield done.popleft()
                if scan.idle():
                    while done:
                        yield done.popleft()
                    return
                await scan.wait()
                self.closed = scan.closed
                while done:
                    yield done.popleft()
        finally:
            self.sent, self.closed = scan.sent, scan.closed
            self.stray_synacks, self.forged_synacks = scan.stray_synacks, scan.forged_synacks
            if scan.stray_synacks or scan.forged_synacks:
                log.debug("syn: ignored %d SYN-ACKs for no probe in flight (never probed, "
                          "or already decided) and %d failing the cookie check",
                          scan.stray_synacks, scan.forged_synacks)  # fmt: skip
            scan.close()
            claim.release()
            self.source_ports = None


class _SynScan:
    """One run's I/O: raw sockets, routes, and the flights out by (peer, port), for the
    answers to find; the ``Scheduler`` decides what goes out when. Not reusable."""

    def __init__(
        self,
        secret: bytes,
        sports: range,
        scheduler: Scheduler,
        keep_closed: bool,
        closed_ports: dict[IPAddress, array[int]] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.secret, self.sports, self.scheduler = secret, sports, scheduler
        self.keep_closed, self.closed_ports = keep_closed, closed_ports
        self.matcher = AnswerMatcher(secret, sports)
        self.sockets: dict[int, rawsock.RawSockets] = {}
        self.senders: dict[int, rawsock.SendBatch] = {}
        self.routes: dict[IPAddress, _Route | Result] = {}
        self.templates: dict[IPAddress, SynTemplate] = {}
        # Every flight not yet decided, by what its answers carry: the packed peer and the
        # port. A flight whose try timed out stays: a late answer still decides it.
        self.flights: dict[tuple[bytes, int], Flight] = {}
        self.sent = 0
        self.closed = 0
        # SYN-ACKs ignored (issue 13; logged at DEBUG, never reported): for no flight
        # (a port never probed or already decided: duplicates, SYN proxies' extra
        # answers) and with an ack that fails our cookie (a forgery, another scanner's).
        self.stray_synacks = 0
        self.forged_synacks = 0
        self._now = 0.0  # when the receive batch being matched was read
        self._last_host: IPAddress | None = None
        self._last_route: _Route | Result | None = None
        self._wake: asyncio.Future[None] | None = None

    def step(self) -> None:
        """Let the scheduler expire what timed out, then send a burst."""
        now = time.monotonic()
        self.scheduler.expire(now)
        self._forget_ended()
        budget = BURST
        while budget > 0:
            batch = self.scheduler.next_batch(time.monotonic(), budget)
            if not batch or not self._send_batch(batch, now):
                break
            budget -= len(batch)

    def _forget_ended(self) -> None:
        """Drop the flights the scheduler decided (filtered): no answer is awaited."""
        ended = self.scheduler.ended
        if ended:
            for flight in ended:
                self.flights.pop((flight.probe.host.packed, flight.probe.port), None)
            ended.clear()

    # -- sending ---------------------------------------------------------------------------

    def _send_batch(self, flights: list[Flight], now: float) -> bool:
        """Send each flight's latest try; False on back-pressure (the flights not sent go
        back to the scheduler).

        The hot loop of the engine: per SYN one hash, one ``pack_into`` and one map entry;
        what depends on the route only is looked up when it changes.
        """
        table = self.flights
        low, top, ports, mask = self.sports.start, len(self.sports) - 1, _PORTS.pack, 0xFFFFFFFF
        batch: rawsock.SendBatch | None = None
        runs: list[tuple[int, _Route]] = []  # (first slot, route) of each run of one route
        sent: list[Flight] = []  # in slot order
        append, offset = sent.append, 0  # offset: the next SYN's place in the batch
        route, last_host = self._last_route, self._last_host
        failed = isinstance(route, Result)  # the host has no route: its ports are decided
        current: _Route | None = None  # the route of the run being written
        for flight in flights:
            host, port = flight.probe
            if host is not last_host or route is None:
                route = self.routes.get(host) or self._route(host, flight.host)
                self._last_host, self._last_route, last_host = host, route, host
                failed = isinstance(route, Result)
            if failed:
                assert isinstance(route, Result)
                self.scheduler.decided(flight, route._replace(port=port, tries=flight.tries))
                continue
            if route is not current:
                current = cast(_Route, route)
                if current.batch is not batch:  # another address family: its own socket
                    if batch is not None and not self._flush(batch, sent, runs):
                        for later in flights[flights.index(flight) :]:
                            self.scheduler.unsent(later)
                        return False
                    batch, runs, sent = current.batch, [], []
                    append, offset = sent.append, 0
                runs.append((len(sent), current))
                hasher, pack, peer, peer_int = (
                    current.hasher, current.template.pack_into, current.peer, current.peer_int,
                )  # fmt: skip
                buffer, slot = batch.buffer, batch.slot
            tries = flight.tries  # a try's source port tells which try an answer is for
            sport = low + (tries - 1 if tries <= top else top)
            digest = hasher.copy()
            digest.update(ports(sport, port))
            seq = int.from_bytes(digest.digest(), "big")
            pack(buffer, offset, peer_int, sport, port, seq)
            offset += slot
            flight.tag = ((seq + 1) & mask) << 16 | sport
            table[(peer, port)] = flight
            append(flight)
        return batch is None or self._flush(batch, sent, runs)

    def _flush(
        self, batch: rawsock.SendBatch, flights: list[Flight], runs: list[tuple[int, _Route]]
    ) -> bool:
        """Send the SYNs written into ``batch`` for ``flights``, to the routes of ``runs``.
        False on back-pressure."""
        count = len(flights)
        for (first, route), stop in zip(runs, [*(run[0] for run in runs[1:]), count], strict=True):
            batch.address(first, stop, route.sockaddr, route.template.size)
        start = 0
        while start < count:
            try:
                sent = batch.send(start, count)
            except OSError as exc:
                if not self._send_failed(exc, flights[start:]):
                    return False
                start += 1  # decided without a send
                continue
            self.sent += sent
            start += sent
        return True

    def _send_failed(self, exc: OSError, unsent: list[Flight]) -> bool:
        """The first of ``unsent`` could not be sent; False (back-pressure) after handing
        it and every later one back to the scheduler, else True with its port decided."""
        if isinstance(exc, BlockingIOError) or exc.errno in BACKPRESSURE:
            for flight in unsent:
                self.scheduler.unsent(flight)
            return False
        flight = unsent[0]
        probe = flight.probe
        verdict = CONNECT_ERRORS.get(exc.errno or 0)
        if verdict is None:
            raise ScanError(f"sending a SYN to {probe.host} port {probe.port}: {exc}") from exc
        # EPERM/EACCES: our own firewall's output chain dropped or rejected the SYN.
        self.flights.pop((probe.host.packed, probe.port), None)
        self.scheduler.decided(
            flight,
            Result(host=probe.host, port=probe.port, state=verdict[0], reason=verdict[1],
                   tries=flight.tries),
        )  # fmt: skip
        return True

    def _route(self, address: IPAddress, host: HostState) -> _Route | Result:
        """How to reach ``address``: its source address, sender and hash state; or, where
        the system has no route or source address for it (an IPv6 link-local or
        multicast address, a family without a source), a ``Result`` for each of its ports.
        """
        if len(self.routes) >= ROUTE_CACHE:
            self.routes.clear()
        try:
            local = rawsock.source_address(address)
        except OSError as exc:
            state, reason = route_verdict(exc.errno or 0) or UNROUTABLE
            failed = Result(host=address, port=0, state=state, reason=reason)
            self.routes[address] = failed
            return failed
        self._sockets(address.version)
        template = self.templates.get(local)
        if template is None:
            template = SynTemplate(local, include_ip_header=address.version == 4)
            self.templates[local] = template
        host.tag = local.packed
        route = _Route(
            self.senders[address.version], template, local.packed, address.packed,
            int(address), self.matcher.hasher_for(local.packed, address.packed),
            rawsock.sockaddr(address), host,
        )  # fmt: skip
        self.routes[address] = route
        return route

    def _sockets(self, version: int) -> rawsock.RawSockets:
        sockets = self.sockets.get(version)
        if sockets is None:
            sockets = rawsock.open_raw_sockets(version, self.sports)
            self.sockets[version] = sockets
            self.senders[version] = rawsock.SendBatch(sockets.send, SEND_BATCH)
            if version == 4:
                batch = rawsock.ReceiveBatch(sockets.tcp, RECEIVE_BATCH, stamped=True)
                self.loop.add_reader(sockets.tcp.fileno(), self._read_tcp4, batch)
                self.loop.add_reader(sockets.icmp.fileno(), self._read_icmp4, sockets.icmp)
            else:
                self.loop.add_reader(sockets.tcp.fileno(), self._read_v6, sockets.tcp, False)
                self.loop.add_reader(sockets.icmp.fileno(), self._read_v6, sockets.icmp, True)
        return sockets

    # -- receiving -------------------------------------------------------------------------

    def _read_tcp4(self, batch: rawsock.ReceiveBatch) -> None:
        """Match the queued IPv4 TCP answers, a ``recvmmsg`` at a time, at most
        ``MAX_READS`` batches a call (a flood must not starve sending).

        ``AnswerMatcher.ipv4``'s checks, in one ``unpack`` for a 20-byte IP header (any
        other goes to it). An answer to a flight is checked against the ack and our port
        and address kept with it; only one that differs (an answer to an earlier try, or a
        forgery) has its cookie computed. A closed port only counted, of a host timing has
        no need to hear from (``Scheduler.answered_quietly``), is decided here.
        """
        now = self._now = time.monotonic()
        before = self.scheduler.in_flight
        buffer, slot, size, head = batch.buffer, batch.slot, batch.size, _HEAD4.unpack_from
        low, high, matcher = self.sports.start, self.sports.stop, self.matcher
        flights, quietly = self.flights, self.scheduler.answered_quietly
        get, count_only, closed = flights.get, not self.keep_closed, 0
        stray = forged = 0
        collected = self.closed_ports
        closed_host: object = None  # the host whose closed ports were collected last
        closed_ports = _NO_PORTS
        # Each answer is timed by the kernel's receive stamp: read later, in a batch, it
        # would carry the wait of the event loop (milliseconds) in its round trip.
        realtime = time.time() - now  # the kernel stamps on the realtime clock
        for _ in range(MAX_READS):
            count = batch.receive()
            lengths = batch.lengths(count)
            stamps = batch.stamps(count, realtime, now) or [now] * count
            for i, length in enumerate(lengths):
                if length < 40:
                    continue  # no room for two 20-byte headers: matches nothing
                offset = i * slot
                vihl, total, frag, ttl, proto, peer, local, port, sport, ack, data, flags = head(
                    buffer, offset
                )
                if vihl != 0x45:
                    answer = matcher.ipv4(bytes(memoryview(buffer)[offset : offset + length]))
                    if answer is not None:
                        self._answered(*answer)
                    continue
                end = min(total, length)
                if frag & 0x1FFF or proto != 6 or not 20 <= (data >> 4) * 4 <= end - 20:
                    continue  # (end < 40 fails the last test)
                if not flags & ACK or not low <= sport < high:
                    continue
                if flags & RST:
                    state, reason = _CLOSED, _RESET
                elif flags & SYN:
                    state, reason = _OPEN, _SYN_ACK
                else:
                    continue
                key = (peer, port)
                flight = get(key)
                if flight is None:  # already decided, never probed, or a forgery
                    stray += state is _OPEN
                    continue
                kept = (ack << 16 | sport) == flight.tag and local == flight.host.tag
                if not kept and ack != (matcher.cookie(local, peer, sport, port) + 1) & 0xFFFFFFFF:
                    forged += state is _OPEN
                    continue
                if count_only and reason is _RESET and kept and quietly(flight, stamps[i]):
                    del flights[key]
                    closed += 1
                    if collected is not None:
                        host = flight.probe.host
                        if host is not closed_host:  # hashing an address costs 1.5 us
                            closed_host, closed_ports = host, self._closed_of(host)
                        closed_ports.append(port)
                    continue
                self._now = stamps[i]
                self._decide(key, flight, sport - low, state, reason, ttl)
            if len(lengths) < size:
                break
        self.closed += closed
        self.stray_synacks += stray
        self.forged_synacks += forged
        self._wake_up(before)

    def _read_icmp4(self, sock: socket.socket) -> None:
        self._now, before = time.monotonic(), self.scheduler.in_flight
        with contextlib.suppress(BlockingIOError, InterruptedError):
            for _ in range(MAX_READS * RECEIVE_BATCH):
                found = match_ipv4(self.secret, sock.recv(1024), sports=self.sports)
                if found is not None:
                    self._answered(found.host.packed, found.port, -1, found.state,
                                   found.reason, found.ttl)  # fmt: skip
        self._wake_up(before)

    def _read_v6(self, sock: socket.socket, icmp: bool) -> None:
        self._now, before = time.monotonic(), self.scheduler.in_flight
        with contextlib.suppress(BlockingIOError, InterruptedError):
            for _ in range(MAX_READS * RECEIVE_BATCH):
                data, ancillary, _flags, address = sock.recvmsg(1024, _HOPLIMIT_SPACE)
                hops = None
                for level, kind, value in ancillary:
                    if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT:
                        hops = int.from_bytes(value[:4], sys.byteorder)
                peer = socket.inet_pton(socket.AF_INET6, address[0].split("%")[0])
                if icmp:
                    self._icmp6(data, peer, hops)
                elif len(data) >= 20:
                    # Our address for this peer is its flight's host's: no cache to lose.
                    flight = self.flights.get((peer, _PORTS.unpack_from(data)[0]))
                    if flight is not None and isinstance(flight.host.tag, bytes):
                        answer = self.matcher.tcp(data, 0, len(data), flight.host.tag, peer, hops)
                        if answer is not None:
                            self._answered(*answer)
        self._wake_up(before)

    def _icmp6(self, data: bytes, peer: bytes, hops: int | None) -> None:
        found = match_ipv6(
            self.secret, data, proto=IPPROTO_ICMPV6, peer=IPv6Address(peer),
            local=IPv6Address(peer), hop_limit=hops, sports=self.sports,
        )  # fmt: skip
        if found is not None:
            self._answered(found.host.packed, found.port, -1, found.state, found.reason, found.ttl)

    def _answered(
        self, peer: bytes, port: int, sport: int, state: State, reason: Reason, ttl: int | None
    ) -> None:
        """A validated answer from ``(peer, port)`` to our ``sport`` (-1: unknown, ICMP)."""
        key = (peer, port)
        flight = self.flights.get(key)
        if flight is None:
            return  # already decided: a duplicate, or an answer after the last timeout
        tryno = flight.tries - 1 if sport < 0 else sport - self.sports.start
        self._decide(key, flight, tryno, state, reason, ttl)

    def _decide(
        self,
        key: tuple[bytes, int],
        flight: Flight,
        tryno: int,
        state: State,
        reason: Reason,
        ttl: int | None,
    ) -> None:
        """``flight`` was answered by its try ``tryno`` (0: the first): its port is decided."""
        del self.flights[key]
        tries = flight.tries
        rtt = self.scheduler.answered(flight, tryno, self._now, icmp_error=state is _FILTERED)
        probe = flight.probe
        if state is _CLOSED and not self.keep_closed:
            self.closed += 1
            if self.closed_ports is not None:
                self._collect_closed(probe)
            return
        self.scheduler.done.append(
            Result(host=probe.host, port=probe.port, state=state, reason=reason,
                   rtt=rtt, tries=tries, reason_ttl=ttl)
        )  # fmt: skip

    def _collect_closed(self, probe: Probe) -> None:
        self._closed_of(probe.host).append(probe.port)

    def _closed_of(self, host: IPAddress) -> array[int]:
        """The closed ports of ``host`` collected so far (``closed_ports`` is a dict)."""
        assert self.closed_ports is not None
        ports = self.closed_ports.get(host)
        if ports is None:
            ports = self.closed_ports[host] = array("H")
        return ports

    # -- waiting ---------------------------------------------------------------------------

    def idle(self) -> bool:
        """Every probe is decided (the scheduler settles its benches first)."""
        idle = self.scheduler.idle()
        self._forget_ended()
        return idle

    async def wait(self) -> None:
        """Let the readers run; sleep until the next send or timeout is due, or an answer."""
        seconds = min(MAX_WAIT, self.scheduler.next_due(time.monotonic()))
        if seconds <= 0 or self.scheduler.done:
            await asyncio.sleep(0)
            return
        self._wake = self.loop.create_future()
        try:
            async with asyncio.timeout(seconds):
                await self._wake
        except TimeoutError:
            pass
        finally:
            self._wake = None

    def _wake_up(self, in_flight_before: int) -> None:
        """Wake ``wait`` when a reader decided a port: results to yield, room to send, or
        the end of the scan (closed ports may decide without a result to yield)."""
        decided = self.scheduler.done or self.scheduler.in_flight != in_flight_before
        if decided and self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def close(self) -> None:
        for sockets in self.sockets.values():
            for sock in (sockets.tcp, sockets.icmp):
                self.loop.remove_reader(sock.fileno())
            sockets.close()
        self.sockets.clear()
        self.senders.clear()


__all__ = ["DEFAULT_RATE", "AnswerMatcher", "SynEngine", "scan_secret"]
