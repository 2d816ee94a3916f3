"""The raw-socket SYN engine (nmap -sS, masscan): builds IPv4 and IPv6 SYNs itself, sends
them at a fixed rate and matches the answers statelessly.

Imports the core (packets, timing, plan, results, errors) and ``rawsock``; never output,
store or cli.

How a scan runs (masscan's design, nmap's timing):

* Stateless matching. Each SYN's sequence number is ``packets.syn_cookie`` under a per-scan
  secret, so an answer proves itself: SYN-ACK (open) or RST-ACK (closed) acknowledging
  ``cookie + 1``, or an ICMP unreachable (filtered, reason from type and code) quoting
  ``cookie``. Anything else, and anything forged without the secret, is ignored.
* What is stored per probe is what retries need: the probe, its try count and the time of
  its last send, for probes in flight only (at most ``EngineOptions.max_in_flight``).
* Rate. Probes leave in the plan's keyed order, at most ``rate`` per second (a GCRA token
  bucket from ``timing``, bursts of ``BURST``). The receiver runs on the same event loop
  (``add_reader``); the scan ends when every probe was answered or, after its retries, timed
  out, so reading goes on until the last probe's timeout after the last send.
* Timing (``host_timing.ScanTiming``, the policy of ``EngineOptions``): per-host RTT (RFC 6298)
  gives the timeout, and answers to retransmissions raise the retries a host's silent ports
  get (nmap's ``allowedTryno``). The try number is the offset of the source port in our
  block, so an RTT sample names the try it belongs to (Karn). To keep the per-answer cost
  down, RTT is sampled at most once per ``SAMPLE_INTERVAL`` until a host has lost a probe
  or left one unanswered; from then on every answer from it counts.
* Congestion, per host and only where it is needed (nmap's approach, masscan's speed
  elsewhere). The rate is the throttle while hosts answer what they are sent. An answer to
  a retransmission is a drop (the earlier try was lost); once a quarter of a host's answers
  were drops (random loss of a few percent stays far below), or timing boosted its send
  delay (nmap's ``boostScanDelay``), the host is *throttled*: its probes wait in a backlog
  of their own and leave as its send delay and congestion window (``HostTiming.send_delay``)
  allow, while other hosts' probes go on at the rate. So a host that rate-limits its RSTs
  is scanned about as fast as it answers, and its closed ports are not called filtered.
  Tries a port spent before its host was throttled, or before the host's last boost, went
  out at a pace found too fast and are not held against its allowance (at most
  --max-retries + 1 of them). ``--scan-delay`` throttles every host from the start.
* Retries follow nmap's probe bench: a port whose tries reached its host's allowance is held
  until the host has nothing in flight or waiting, since a late answer to a retransmission
  may still raise the allowance; then it is retried or called filtered. The allowance is
  timing's, or more where the host's share of drops says an answering port could still be
  silent (``timing.loss_retries``). A timed-out probe stays answerable until its retry goes
  out: a late answer decides it, and gives the RTT sample a slow host would otherwise lack.
* Source: per target, the address the routing table picks (``rawsock.source_address``) and
  a block of ``SOURCE_PORTS`` ports the kernel will not use (``rawsock.claim_source_ports``).
  Each engine instance claims its own block and filters its raw sockets to it, so worker
  processes of ``engines.processes`` each see only their own answers, although every raw
  socket is offered every packet. Each instance also draws its own secret unless given a
  key, which makes another worker's answers fail validation even if they got through.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import math
import secrets
import socket
import struct
import sys
import time
from array import array
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from itertools import chain, islice, repeat
from typing import Final

from portscout.engines import rawsock
from portscout.engines.base import BACKPRESSURE, CONNECT_ERRORS, EngineOptions
from portscout.errors import ScanError
from portscout.host_timing import ScanTiming
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
from portscout.timing import TimingPolicy, TokenBucket, loss_retries

DEFAULT_RATE: Final = 300_000.0  # packets/s per engine: loopback keeps up, answers are not lost
BURST: Final = 128  # sends per event-loop turn, and the token bucket's depth
SEND_BATCH: Final = 64  # SYNs per sendmmsg(2) at most
RECEIVE_BATCH: Final = 64  # answers per recvmmsg(2) at most
SOURCE_PORTS: Final = 16  # one block per engine; the offset in it is the try number
SAMPLE_INTERVAL: Final = 0.001  # seconds between RTT samples fed to timing
ROUTE_CACHE: Final = 4096  # routes remembered; beyond, the cache starts afresh
MAX_BACKLOG: Final = 4096  # probes held for their hosts in all; beyond, no fresh ones are pulled
MAX_BENCH: Final = 1024  # a bench this long is settled even while its host has probes out
# A host is throttled once at least DROP_SHARE of its answers, and MIN_DROPS, were drops:
# random loss of a few percent stays well below, a rate limit the scan outruns far above.
DROP_SHARE: Final = 0.25
MIN_DROPS: Final = 8
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


Pending = tuple[Probe, int]  # a probe and the tries already made


@dataclass(slots=True, eq=False)
class _Host:
    """What the engine keeps per target host, next to its ``host_timing.HostTiming``.

    ``backlog``: probes waiting to be sent (retries, and every probe of a ``throttled``
    host), made on first use: most hosts never need one. ``bench``: ports whose tries
    reached the host's allowance, until the host is quiet. ``watched``: the host lost a
    probe or left one unanswered, so every answer from it goes to timing, not a sample.
    ``lost``: port -> when its try that went unanswered was sent, for ports being retried.
    ``free``: port -> tries not held against the port's allowance: those made before the
    host was throttled (at the engine's rate, not the host's) or before its send delay
    was last boosted (at a pace since found too fast), at most --max-retries + 1.
    ``delay``/``boosted_at``: the host's boosted send delay as last seen, and since when.
    """

    address: IPAddress
    peer: bytes  # the address packed, as in-flight keys hold it
    throttled: bool
    in_flight: int = 0
    sent: int = 0  # SYNs sent, retransmissions included
    timeouts: int = 0
    drops: int = 0  # answers to retransmissions (TCP: ICMP is rate-limited by routers)
    watched: bool = False
    backlog: deque[Pending] | None = None
    bench: list[Pending] = field(default_factory=list)
    lost: dict[int, float] = field(default_factory=dict)
    free: dict[int, int] = field(default_factory=dict)
    delay: float = 0.0
    boosted_at: float = -math.inf


# A probe in flight: the probe, tries sent so far, time of the last send, what its answer
# must carry: ``(cookie + 1) << 16 | our port`` (the ack and the port it goes to) and our
# packed address, and its host. A plain tuple: one is built per send, and a tuple builds
# fastest.
_InFlight = tuple[Probe, int, float, int, bytes, _Host]


@dataclass(slots=True)
class _Route:
    """How to reach one target: the sender, the template of our source, packed addresses,
    the keyed hash with both addresses already absorbed, the destination as sendmmsg
    wants it, and the host's state."""

    batch: rawsock.SendBatch
    template: SynTemplate
    local: bytes
    peer: bytes
    peer_int: int
    hasher: hashlib.blake2b
    sockaddr: ctypes.Array[ctypes.c_char]
    host: _Host


def default_policy(options: EngineOptions, rate: float | None) -> TimingPolicy:
    """The scan's policy (``EngineOptions.policy``), with ``rate`` as --max-rate where the
    policy has none."""
    policy = options.policy()
    if policy.max_rate is None and rate is not None:
        policy = policy.override(max_rate=rate)
    return policy


def send_pacer(rate: float | None) -> tuple[TokenBucket, int]:
    """A token bucket whose token pays for up to ``unit`` SYNs sent together, and ``unit``.

    At most ``rate * t + BURST`` SYNs leave in any interval of length t, as with a token
    per SYN, because at most ``rate / unit * t + BURST // unit`` tokens are spent in it. A
    token costs one bucket call instead of ``unit``; a batch smaller than ``unit`` spends a
    whole token, which the choice of ``unit`` keeps under a millisecond of the rate.
    """
    if rate is None:
        return TokenBucket(None, BURST), SEND_BATCH
    unit = max(1, min(SEND_BATCH, int(rate // 1000)))
    return TokenBucket(rate / unit, max(1, BURST // unit)), unit


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
        self.closed_ports: dict[IPAddress, array[int]] | None = None
        self.source_ports: range | None = None  # the block the running scan holds

    async def run(self, probes: Iterator[Probe], options: EngineOptions) -> AsyncIterator[Result]:
        policy = self.timing or default_policy(
            options, options.rate if options.rate is not None else self.rate
        )
        try:
            claim = rawsock.claim_source_ports(SOURCE_PORTS)
        except OSError as exc:
            raise ScanError(f"no free source ports for the syn engine: {exc.strerror}") from exc
        scan = _SynScan(
            scan_secret(self.key), claim.ports, policy, options, self.keep_closed,
            self.closed_ports,
        )  # fmt: skip
        self.source_ports, self.closed = claim.ports, 0
        source, exhausted, done = iter(probes), False, scan.done
        try:
            while True:
                exhausted = scan.step(source, exhausted)
                while done:
                    yield done.popleft()
                if exhausted and scan.idle():
                    while done:
                        yield done.popleft()
                    return
                await scan.wait(exhausted)
                self.closed = scan.closed
                while done:
                    yield done.popleft()
        finally:
            self.sent, self.closed = scan.sent, scan.closed
            scan.close()
            claim.release()
            self.source_ports = None


class _SynScan:
    """One run: sockets, routes, probes in flight, timing. Not reusable."""

    def __init__(
        self,
        secret: bytes,
        sports: range,
        policy: TimingPolicy,
        options: EngineOptions,
        keep_closed: bool,
        closed_ports: dict[IPAddress, array[int]] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.secret, self.sports, self.limit = secret, sports, options.max_in_flight
        self.keep_closed, self.closed_ports = keep_closed, closed_ports
        self.matcher = AnswerMatcher(secret, sports)
        self.timing = ScanTiming(
            policy, started=time.monotonic(), burst=BURST, rtt_hints=options.rtt_hints
        )
        self.pacer, self.unit = send_pacer(policy.max_rate)
        self.sockets: dict[int, rawsock.RawSockets] = {}
        self.senders: dict[int, rawsock.SendBatch] = {}
        self.routes: dict[IPAddress, _Route | Result] = {}
        self.templates: dict[IPAddress, SynTemplate] = {}
        self.local6: dict[bytes, bytes] = {}  # IPv6 peer -> our address for it
        self.in_flight: dict[tuple[bytes, int], _InFlight] = {}
        # Probes whose last try timed out, waiting for a retry or on a bench: a late answer
        # still decides them (as in nmap), until the retry goes out.
        self.timed_out: dict[tuple[bytes, int], _InFlight] = {}
        self.expiry: deque[tuple[float, tuple[bytes, int], int]] = deque()
        self.hosts: dict[IPAddress, _Host] = {}
        self.waiting: deque[_Host] = deque()  # hosts with a backlog, served in turn
        self.held = 0  # probes in all backlogs
        self.throttled = 0  # hosts whose probes wait for their window and send delay
        self.benched: set[_Host] = set()  # hosts with a bench
        self._release_due = -math.inf  # when a waiting host may send next (-inf: now)
        self.done: deque[Result] = deque()
        self.sent = 0
        self.closed = 0
        self._last_sample = -1.0
        self._now = 0.0  # when the receive batch being matched was read
        self._last_host: IPAddress | None = None
        self._last_route: _Route | Result | None = None
        self._wake: asyncio.Future[None] | None = None

    def step(self, source: Iterator[Probe], exhausted: bool) -> bool:
        """Expire what timed out, then send a burst; return whether ``source`` ran dry."""
        now = time.monotonic()
        self._expire(now)
        return self._send_burst(source, exhausted, now)

    # -- sending ---------------------------------------------------------------------------

    def _send_burst(self, source: Iterator[Probe], exhausted: bool, now: float) -> bool:
        """Send up to ``BURST`` probes, in batches the pacer allows; return ``exhausted``.
        Backlogged probes go first, as their hosts allow; then fresh ones, those of
        throttled hosts going to their backlogs instead."""
        pacer, in_flight, unit = self.pacer, self.in_flight, self.unit
        budget = BURST
        while budget > 0 and (self.waiting or not exhausted):
            room = min(unit, budget, self.limit - len(in_flight))
            clock = time.monotonic()  # the clock of this very batch, or bursts bunch up
            if room <= 0 or pacer.delay(clock) > 0:
                break
            pacer.consume(clock)  # a token spent on a short or empty batch: harmless
            probes: list[Probe] = []
            tries: list[int] = []
            if self.waiting:
                self._release(probes, tries, room, clock)
            wanted = room - len(probes)
            if wanted and not exhausted and self.held < MAX_BACKLOG:
                first = len(probes)
                probes.extend(islice(source, wanted))
                fresh = len(probes) - first
                tries.extend(repeat(0, fresh))
                exhausted = fresh < wanted
                if self.throttled:
                    self._hold_throttled(probes, tries, first)
            if not probes or not self._send_batch(probes, tries, now):
                break
            budget -= len(probes)
        return exhausted

    def _release(self, probes: list[Probe], tries: list[int], room: int, now: float) -> None:
        """Move backlogged probes into the batch being built, up to ``room`` in all: all of
        an unthrottled host's, a throttled host's as its window and send delay allow. Notes
        in ``_release_due`` when a host left waiting may send next."""
        waiting, due = self.waiting, math.inf
        for _ in range(len(waiting)):
            if len(probes) >= room:
                due = -math.inf
                break
            host = waiting.popleft()
            backlog = host.backlog
            assert backlog  # a waiting host has a backlog
            timing = self.timing.host(host.address, now) if host.throttled else None
            released = 0
            while backlog and len(probes) < room:
                probe, tried = backlog[0]
                if tried and (host.peer, probe.port) not in self.timed_out:
                    backlog.popleft()  # a late answer decided it
                    self.held -= 1
                    continue
                if timing is not None:
                    wait = timing.send_delay(now, host.in_flight + released)
                    if wait is None:  # the window is full: an answer or timeout frees it
                        break
                    if wait > 0:
                        due = min(due, now + wait)
                        break
                    timing.on_send(now)
                backlog.popleft()
                probes.append(probe)
                tries.append(tried)
                released += 1
            self.held -= released
            if backlog:
                waiting.append(host)
                if timing is None:
                    due = -math.inf
        self._release_due = due

    def _hold(self, host: _Host, pending: Pending, *, first: bool = False) -> None:
        """Put a probe into its host's backlog (at the head with ``first``)."""
        backlog = host.backlog
        if backlog is None:
            backlog = host.backlog = deque()
        if not backlog:
            self.waiting.append(host)
        if first:
            backlog.appendleft(pending)
        else:
            backlog.append(pending)
        self.held += 1
        self._release_due = -math.inf  # the next pass finds out when it may go

    def _hold_throttled(self, probes: list[Probe], tries: list[int], first: int) -> None:
        """Move the probes from index ``first`` on whose hosts are throttled into their
        backlogs, keeping the others in order."""
        hosts, keep = self.hosts, first
        for i in range(first, len(probes)):
            probe = probes[i]
            host = hosts.get(probe.host)
            if host is not None and host.throttled:
                self._hold(host, (probe, tries[i]))
            else:
                probes[keep], tries[keep] = probe, tries[i]
                keep += 1
        del probes[keep:], tries[keep:]

    def _host(self, address: IPAddress) -> _Host:
        host = self.hosts.get(address)
        if host is None:
            throttled = self.timing.policy.scan_delay > 0
            host = self.hosts[address] = _Host(address, address.packed, throttled)
            self.throttled += throttled
        return host

    def _send_batch(self, probes: list[Probe], tries: list[int], now: float) -> bool:
        """Send try ``tries[i]`` (0: the first) of each ``probes[i]``; False on back-pressure,
        the probes not sent back at the head of ``pending``.

        The hot loop of the engine: per SYN one hash, one ``pack_into``, one in-flight entry
        and one expiry entry; what depends on the route only is looked up when it changes.
        """
        in_flight, expiry, done, timed_out = self.in_flight, self.expiry, self.done, self.timed_out
        low, top, ports, mask = self.sports.start, len(self.sports) - 1, _PORTS.pack, 0xFFFFFFFF
        batch: rawsock.SendBatch | None = None
        runs: list[tuple[int, _Route]] = []  # (first slot, route) of each run of one route
        n = 0
        route, last_host = self._last_route, self._last_host
        for i, (probe, tried) in enumerate(zip(probes, tries, strict=True)):
            host, port = probe
            if host is not last_host or route is None or not runs:
                if host is not last_host or route is None:
                    route = self.routes.get(host) or self._route(host)
                    self._last_host, self._last_route, last_host = host, route, host
                if isinstance(route, Result):
                    done.append(Result(host=host, port=port, state=route.state,
                                       reason=route.reason))  # fmt: skip
                    continue
                if route.batch is not batch:  # another address family: its own socket
                    if batch is not None and not self._flush(batch, n, runs):
                        for later in reversed(range(i, len(probes))):
                            back = probes[later]
                            self._hold(self._host(back.host), (back, tries[later]), first=True)
                        return False
                    batch, runs, n = route.batch, [], 0
                runs.append((n, route))
                hasher, pack, peer, peer_int, owner = (
                    route.hasher,
                    route.template.pack_into,
                    route.peer,
                    route.peer_int,
                    route.host,
                )
                local, buffer, slot = route.local, batch.buffer, batch.slot
            sport = low + (tried if tried < top else top)
            digest = hasher.copy()
            digest.update(ports(sport, port))
            seq = int.from_bytes(digest.digest(), "big")
            pack(buffer, n * slot, peer_int, sport, port, seq)
            key = (peer, port)
            if tried:
                timed_out.pop(key, None)
            in_flight[key] = (probe, tried + 1, now, ((seq + 1) & mask) << 16 | sport, local, owner)
            expiry.append((now, key, tried + 1))
            n += 1
        return batch is None or self._flush(batch, n, runs)

    def _flush(self, batch: rawsock.SendBatch, count: int, runs: list[tuple[int, _Route]]) -> bool:
        """Send the ``count`` SYNs written into ``batch``, to the routes of ``runs``; their
        in-flight and expiry entries are the last ``count`` made. False on back-pressure."""
        for (first, route), stop in zip(runs, [*(run[0] for run in runs[1:]), count], strict=True):
            batch.address(first, stop, route.sockaddr, route.template.size)
            route.host.in_flight += stop - first
            route.host.sent += stop - first
        start = 0
        while start < count:
            try:
                sent = batch.send(start, count)
            except OSError as exc:
                if not self._send_failed(exc, count - start):
                    return False
                start += 1  # decided without a send
                continue
            self.sent += sent
            start += sent
        return True

    def _send_failed(self, exc: OSError, unsent: int) -> bool:
        """The first of the last ``unsent`` SYNs made could not be sent; False (back-pressure)
        after putting it and every later one back into ``pending``, else True with its port
        decided."""
        in_flight, expiry = self.in_flight, self.expiry
        if isinstance(exc, BlockingIOError) or exc.errno in BACKPRESSURE:
            for _ in range(unsent):  # the last expiry entries are theirs
                key = expiry.pop()[1]
                entry = in_flight.pop(key)
                entry[5].in_flight -= 1
                entry[5].sent -= 1
                if entry[1] > 1:
                    self.timed_out[key] = entry
                self._hold(entry[5], (entry[0], entry[1] - 1), first=True)
            return False
        entry = in_flight.pop(expiry[-unsent][1])  # its expiry entry: skipped
        probe, tries = entry[0], entry[1]
        entry[5].in_flight -= 1
        entry[5].sent -= 1
        entry[5].lost.pop(probe.port, None)
        verdict = CONNECT_ERRORS.get(exc.errno or 0)
        if verdict is None:
            raise ScanError(f"sending a SYN to {probe.host} port {probe.port}: {exc}") from exc
        # EPERM/EACCES: our own firewall's output chain dropped or rejected the SYN.
        self.done.append(
            Result(host=probe.host, port=probe.port, state=verdict[0], reason=verdict[1],
                   tries=tries)
        )  # fmt: skip
        return True

    def _route(self, host: IPAddress) -> _Route | Result:
        if len(self.routes) >= ROUTE_CACHE:
            self.routes.clear()
            self.local6.clear()
        try:
            local = rawsock.source_address(host)
        except OSError as exc:
            verdict = CONNECT_ERRORS.get(exc.errno or 0)
            if verdict is None:
                raise ScanError(f"no source address for {host}: {exc.strerror}") from exc
            failed = Result(host=host, port=0, state=verdict[0], reason=verdict[1])
            self.routes[host] = failed
            return failed
        self._sockets(host.version)
        template = self.templates.get(local)
        if template is None:
            template = SynTemplate(local, include_ip_header=host.version == 4)
            self.templates[local] = template
        route = _Route(
            self.senders[host.version], template, local.packed, host.packed, int(host),
            self.matcher.hasher_for(local.packed, host.packed), rawsock.sockaddr(host),
            self._host(host),
        )  # fmt: skip
        if host.version == 6:
            self.local6[host.packed] = local.packed
        self.routes[host] = route
        return route

    def _sockets(self, version: int) -> rawsock.RawSockets:
        sockets = self.sockets.get(version)
        if sockets is None:
            sockets = rawsock.open_raw_sockets(version, self.sports)
            self.sockets[version] = sockets
            self.senders[version] = rawsock.SendBatch(sockets.send, SEND_BATCH)
            if version == 4:
                batch = rawsock.ReceiveBatch(sockets.tcp, RECEIVE_BATCH)
                self.loop.add_reader(sockets.tcp.fileno(), self._read_tcp4, batch)
                self.loop.add_reader(sockets.icmp.fileno(), self._read_icmp4, sockets.icmp)
            else:
                self.loop.add_reader(sockets.tcp.fileno(), self._read_v6, sockets.tcp, False)
                self.loop.add_reader(sockets.icmp.fileno(), self._read_v6, sockets.icmp, True)
        return sockets

    # -- receiving -------------------------------------------------------------------------

    def _read_tcp4(self, batch: rawsock.ReceiveBatch) -> None:
        """Match every queued IPv4 TCP answer, a ``recvmmsg`` at a time.

        ``AnswerMatcher.ipv4``'s checks, in one ``unpack`` for a 20-byte IP header (any
        other goes to it). An answer to a probe in flight is checked against the ack and
        our port and address kept with it; only one that differs (an answer to an earlier
        try, or a forgery) has its cookie computed. A closed port only counted, of a host
        timing has no need to hear from (``_decide``'s own shortcut), is decided here.
        """
        now = self._now = time.monotonic()
        before = len(self.in_flight)
        buffer, slot, size, head = batch.buffer, batch.slot, batch.size, _HEAD4.unpack_from
        low, high, matcher = self.sports.start, self.sports.stop, self.matcher
        in_flight = self.in_flight
        get, late, count_only, closed = in_flight.get, self.timed_out.get, not self.keep_closed, 0
        collected = self.closed_ports
        while True:
            lengths = batch.lengths(batch.receive())
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
                    state, reason = State.CLOSED, Reason.RESET
                elif flags & SYN:
                    state, reason = State.OPEN, Reason.SYN_ACK
                else:
                    continue
                key = (peer, port)
                entry = get(key)
                if entry is None:
                    entry = late(key)
                    if entry is None:
                        continue  # already decided: a duplicate, or a forgery
                kept = (ack << 16 | sport) == entry[3] and local == entry[4]
                if not kept and ack != (matcher.cookie(local, peer, sport, port) + 1) & 0xFFFFFFFF:
                    continue
                if (
                    count_only
                    and reason is Reason.RESET
                    and not entry[5].watched
                    and now - self._last_sample < SAMPLE_INTERVAL
                ):
                    del in_flight[key]
                    entry[5].in_flight -= 1
                    closed += 1
                    if collected is not None:
                        self._collect_closed(entry[0])
                    continue
                self._decide(key, entry, sport - low, state, reason, ttl)
            if len(lengths) < size:
                break
        self.closed += closed
        self._wake_up(before)

    def _read_icmp4(self, sock: socket.socket) -> None:
        self._now, before = time.monotonic(), len(self.in_flight)
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                found = match_ipv4(self.secret, sock.recv(1024), sports=self.sports)
                if found is not None:
                    self._answered(found.host.packed, found.port, -1, found.state,
                                   found.reason, found.ttl)  # fmt: skip
        self._wake_up(before)

    def _read_v6(self, sock: socket.socket, icmp: bool) -> None:
        self._now, before = time.monotonic(), len(self.in_flight)
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                data, ancillary, _flags, address = sock.recvmsg(1024, _HOPLIMIT_SPACE)
                hops = None
                for level, kind, value in ancillary:
                    if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT:
                        hops = int.from_bytes(value[:4], sys.byteorder)
                peer = socket.inet_pton(socket.AF_INET6, address[0].split("%")[0])
                if icmp:
                    self._icmp6(data, peer, hops)
                    continue
                local = self.local6.get(peer)
                if local is not None:
                    answer = self.matcher.tcp(data, 0, len(data), local, peer, hops)
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
        entry = self.in_flight.get(key) or self.timed_out.get(key)
        if entry is None:
            return  # already decided: a duplicate, or an answer after the last timeout
        tryno = entry[1] - 1 if sport < 0 else sport - self.sports.start
        self._decide(key, entry, tryno, state, reason, ttl)

    def _decide(
        self,
        key: tuple[bytes, int],
        entry: _InFlight,
        tryno: int,
        state: State,
        reason: Reason,
        ttl: int | None,
    ) -> None:
        """The probe ``entry`` (in flight under ``key``) was answered by its try ``tryno``
        (0: the first): its port is decided, and the answer may go to timing."""
        probe, tries, sent, host = entry[0], entry[1], entry[2], entry[5]
        if self.in_flight.pop(key, None) is None:
            del self.timed_out[key]  # a late answer: the entry in a backlog or bench is void
        else:
            host.in_flight -= 1
        now = self._now
        exact = tryno == tries - 1 and tries <= len(self.sports)
        if host.watched:  # a retry, or an answer to one, comes only after a timeout
            self._watched_answer(host, probe.port, tries, tryno, sent, exact, state)
        elif now - self._last_sample >= SAMPLE_INTERVAL:
            self._last_sample = now
            self.timing.on_answer(
                probe.host, sent=sent, now=now, host_in_flight=host.in_flight,
                total_in_flight=len(self.in_flight), tryno=tryno, ambiguous=not exact,
                icmp_error=state is State.FILTERED,
            )  # fmt: skip
        if state is State.CLOSED and not self.keep_closed:
            self.closed += 1
            if self.closed_ports is not None:
                self._collect_closed(probe)
            return
        self.done.append(
            Result(host=probe.host, port=probe.port, state=state, reason=reason,
                   rtt=now - sent if exact else None, tries=tries, reason_ttl=ttl)
        )  # fmt: skip

    def _collect_closed(self, probe: Probe) -> None:
        assert self.closed_ports is not None
        ports = self.closed_ports.get(probe.host)
        if ports is None:
            ports = self.closed_ports[probe.host] = array("H")
        ports.append(probe.port)

    def _watched_answer(
        self, host: _Host, port: int, tries: int, tryno: int, sent: float, exact: bool,
        state: State,
    ) -> None:  # fmt: skip
        """Timing's share of an answer from a host that has lost or left unanswered a probe:
        every answer counts, a drop may throttle the host, and its bench may settle."""
        now = self._now
        if tries > 1:
            host.free.pop(port, None)
            lost = host.lost.pop(port, sent)  # when the try that timed out was sent
            if tryno:
                # A drop counts against the host's send delay and window only if the
                # lost try went out after the last boost or decrease (nmap compares
                # ``prevSent``), or the retries of a throttled host, each answer a drop,
                # would boost it forever. Timing takes one send time: it gets the lost
                # try's, and no RTT sample (Karn's rule).
                sent, exact = lost, False
                host.drops += state is not State.FILTERED
            elif tryno == tries - 2 and tries <= len(self.sports):
                # The try that timed out was answered after all: its RTT is known, and
                # without it a host slower than the group's timeout would never get one.
                sent, exact = lost, True
        self.timing.on_answer(
            host.address, sent=sent, now=now, host_in_flight=host.in_flight,
            total_in_flight=len(self.in_flight), tryno=tryno, ambiguous=not exact,
            icmp_error=state is State.FILTERED,
        )  # fmt: skip
        delay = self.timing.host(host.address, now).boosted_delay
        if delay > host.delay:
            host.delay, host.boosted_at = delay, now
        if not host.throttled:
            self._throttle_if_congested(host, now)
        if host.bench:
            self._settle_if_quiet(host, now)

    # -- timeouts and waiting --------------------------------------------------------------

    def _expire(self, now: float) -> None:
        """Retry, bench or give up on probes whose timeout passed, oldest first.

        ``expiry`` is in send order; entries of answered (or re-sent) probes are skipped. A
        host whose timeout shrank may wait for an older probe of a slower host: at most the
        largest timeout, never a wrong state.
        """
        expiry, in_flight, timing = self.expiry, self.in_flight, self.timing
        while expiry:
            sent, key, tries = expiry[0]
            entry = in_flight.get(key)
            if entry is None or entry[1] != tries:
                expiry.popleft()
                continue
            probe, host = entry[0], entry[5]
            if now - sent < timing.probe_timeout(probe.host, now):
                return
            expiry.popleft()
            del in_flight[key]
            host.in_flight -= 1
            host.timeouts += 1
            host.watched = True
            timing.on_timeout(probe.host, sent=sent, now=now, host_in_flight=host.in_flight,
                              total_in_flight=len(in_flight))  # fmt: skip
            host.lost[probe.port] = sent
            self.timed_out[key] = entry
            if host.throttled and sent < host.boosted_at:
                free = host.free.get(probe.port, 0)
                if free <= timing.policy.max_retries:
                    host.free[probe.port] = free + 1
            if tries - host.free.get(probe.port, 0) <= self._allowed(host, now):
                self._hold(host, (probe, tries), first=True)
            else:
                host.bench.append((probe, tries))
                self.benched.add(host)
            self._settle_if_quiet(host, now)

    def _allowed(self, host: _Host, now: float) -> int:
        """Retransmissions a silent port of ``host`` may get now: ``timing.loss_retries``
        over nmap's allowance, with this engine's own counts (its fast path answers
        without telling timing)."""
        return loss_retries(
            self.timing.host(host.address, now).nmap_retries_allowed,
            losses=host.drops,
            answers=max(0, host.sent - host.in_flight - host.timeouts),
            max_retries=self.timing.policy.max_retries,
        )

    def _throttle_if_congested(self, host: _Host, now: float) -> None:
        """Throttle a host whose drops show that the rate sends it more than it answers:
        a large share of its answers were drops, or timing boosted its send delay."""
        drops, answers = host.drops, host.sent - host.in_flight - host.timeouts
        if (drops >= MIN_DROPS and drops >= DROP_SHARE * answers) or self.timing.host(
            host.address, now
        ).delay_between_sends > 0:
            host.throttled = True
            self.throttled += 1
            free = host.free
            for probe, tries in chain(host.backlog or (), host.bench):
                free[probe.port] = tries
            for entry in self.in_flight.values():
                if entry[5] is host:
                    free[entry[0].port] = entry[1] - 1  # its last try is judged at its timeout

    def _settle_if_quiet(self, host: _Host, now: float) -> None:
        """Decide benched ports once the host is quiet (or the bench is long): retry those
        the host's allowance, which may have grown meanwhile, still covers; call the rest
        filtered (nmap's probe bench)."""
        bench = host.bench
        if not bench or ((host.in_flight or host.backlog) and len(bench) < MAX_BENCH):
            return
        allowed = self._allowed(host, now)
        host.bench = []
        self.benched.discard(host)
        for probe, tries in bench:
            key = (host.peer, probe.port)
            if key not in self.timed_out:
                continue  # a late answer decided it
            if tries - host.free.get(probe.port, 0) <= allowed:
                self._hold(host, (probe, tries))
            else:
                del self.timed_out[key]
                host.lost.pop(probe.port, None)
                host.free.pop(probe.port, None)
                self.done.append(
                    Result(host=probe.host, port=probe.port, state=State.FILTERED,
                           reason=Reason.NO_RESPONSE, tries=tries)
                )  # fmt: skip

    def idle(self) -> bool:
        """Nothing in flight, waiting or benched: every probe taken is decided. Settles
        the benches first, every host being quiet when nothing is in flight."""
        if self.in_flight or self.waiting:
            return False
        now = time.monotonic()
        for host in list(self.benched):
            self._settle_if_quiet(host, now)
        return not self.waiting

    def _next_event(self, now: float, exhausted: bool) -> float:
        """Seconds until something is due: a send the pacer and the hosts allow, or a
        timeout."""
        waits = [0.05]  # a ceiling: re-check even if nothing seems due
        if len(self.in_flight) < self.limit:
            if not exhausted and self.held < MAX_BACKLOG:
                due = now
            else:
                due = self._release_due if self.waiting else math.inf
            if due < math.inf:
                waits.append(max(self.pacer.delay(now), due - now))
        if self.expiry:
            sent, key, _tries = self.expiry[0]
            entry = self.in_flight.get(key)
            if entry is None:
                waits.append(0.0)
            else:
                timeout = self.timing.probe_timeout(entry[0].host, now)
                waits.append(max(0.0, sent + timeout - now))
        return min(waits)

    async def wait(self, exhausted: bool) -> None:
        """Let the readers run; sleep until the next send or timeout is due, or an answer."""
        seconds = self._next_event(time.monotonic(), exhausted)
        if seconds <= 0 or self.done:
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
        decided = self.done or len(self.in_flight) != in_flight_before
        if decided and self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def close(self) -> None:
        for sockets in self.sockets.values():
            for sock in (sockets.tcp, sockets.icmp):
                self.loop.remove_reader(sock.fileno())
            sockets.close()
        self.sockets.clear()
        self.senders.clear()


__all__ = ["DEFAULT_RATE", "AnswerMatcher", "SynEngine", "scan_secret", "send_pacer"]
