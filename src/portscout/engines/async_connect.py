"""The default connect engine: non-blocking connect() on asyncio with nmap's timing.

Per probe: ``connect_ex`` on a non-blocking socket, then ``connect_ex`` again at once,
which reports what happened meanwhile (0: connected, an errno: decided, EALREADY: still
under way). On loopback and other fast paths the handshake (or the RST) has already been
processed when connect() returns, so such ports are decided without touching the event
loop, and a socket refused this way is unconnected again and serves the next probe: no
``socket()`` and ``close()`` a closed port, which halves the kernel's cost of a loopback
probe (9 us against 16 us here). Probes still in progress get a writer callback and a
timer, and the ``ScanTiming`` of ``portscout.host_timing`` decides how many may be in flight
per host and in all, how long each may take (RFC 6298 estimate per host), and how often a
silent port is retried.

A try that timed out is not abandoned: its socket is kept, and watched, until the next
try of the same port times out in turn (or, for a last try, until the bench settles). A
timeout that proved a little short (a busy machine, a jittery link) then costs a
retransmission, never a wrong "filtered".

Retries follow nmap's probe bench: a port whose tries reached the host's allowed retries
is held until the host has nothing in flight, since an answer to another port's
retransmission may still raise the allowance (the host has shown loss); only then is it
called filtered. So a host that drops probes, or rate-limits its RSTs, gets more retries
and a slower pace instead of phantom filtered ports.

No task per probe: probes are pulled lazily from the stream, and a bounded backlog per
host holds the few that wait for their host's window.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from portscout.engines.base import BACKPRESSURE, EngineOptions
from portscout.engines.connect import decided_result, family
from portscout.host_timing import HostTiming, ScanTiming
from portscout.plan import Probe
from portscout.results import IPAddress, Protocol, Reason, Result, State

_SOL_SOCKET = socket.SOL_SOCKET
_SO_ERROR = socket.SO_ERROR
_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
# The C socket type: socket.socket's Python __init__ and close() cost 4 us a probe, and
# these sockets never leave the engine.
_new_socket = _socket.socket
_EINPROGRESS = errno.EINPROGRESS
_EALREADY = errno.EALREADY
_ECONNREFUSED = errno.ECONNREFUSED
# Sockets refused at once are reused: a refused connect() leaves the socket unconnected,
# and skipping socket() and close() halves the kernel's cost of a loopback probe.
MAX_SPARE = 8
# Linux retransmits a connect()'s SYN after 1 s (TCP_TIMEOUT_INIT), then 3 s, 7 s, ...
KERNEL_SYN_TIMEOUT = 1.0
# Probes pulled from the stream but waiting for their host's window, in all hosts.
MAX_BACKLOG = 4096
# A bench this long is settled even while its host still has probes in flight.
MAX_BENCH = 256
# Answers decided inside connect() (loopback) say little about the network and cost
# per-probe bookkeeping: the estimator gets the first few, then one in this many.
IMMEDIATE_SAMPLE_EVERY = 64
IMMEDIATE_SAMPLES_FIRST = 8

Pending = tuple[Probe, int]  # a probe and the tries already made


@dataclass(slots=True)
class _Attempt:
    probe: Probe
    sock: _socket.socket
    sent: float
    tries: int
    timer: asyncio.TimerHandle | None = None
    retried_as: _Attempt | None = None  # the next try of this port, once it was sent
    guessed: bool = False  # its timeout is the initial one: no round trip was known


@dataclass(slots=True)
class _Host:
    """What the engine keeps per target host, next to the host's timing."""

    timing: HostTiming
    text: str  # the address as connect() takes it, formatted once
    family: int
    in_flight: int = 0
    immediate: int = 0  # answers decided inside connect()
    backlog: deque[Pending] = field(default_factory=deque)
    bench: list[Pending] = field(default_factory=list)


class AsyncConnectEngine:
    name = "async"

    async def run(self, probes: Iterator[Probe], options: EngineOptions) -> AsyncIterator[Result]:
        scheduler = _Scheduler(asyncio.get_running_loop(), options)
        source = iter(probes)
        exhausted = False
        try:
            while True:
                exhausted = scheduler.fill(source, exhausted)
                while scheduler.done:
                    yield scheduler.done.popleft()
                if exhausted and scheduler.idle():
                    return
                await scheduler.wait()
        finally:
            scheduler.close_all()


class _Scheduler:
    """Probes in flight, per-host backlogs and benches, and the timing that paces them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, options: EngineOptions) -> None:
        self.loop = loop
        policy = options.policy()
        self.timing = ScanTiming(policy, started=time.monotonic(), rtt_hints=options.rtt_hints)
        # Without rates or delays, only the windows can hold a probe back: check them
        # directly instead of asking for a delay per probe (a loopback scan's hot path).
        self.paced = bool(policy.max_rate or policy.min_rate or policy.scan_delay)
        self.limit = options.max_in_flight  # the descriptor budget
        self.in_flight: dict[int, _Attempt] = {}
        # Tries that timed out but are still listened to, by descriptor and by probe.
        self.lingering: dict[int, _Attempt] = {}
        self.lingering_probes: dict[Probe, _Attempt] = {}
        self.answered_late: set[Probe] = set()  # decided by a lingering try: skip retries
        self.hosts: dict[IPAddress, _Host] = {}
        self.waiting: deque[IPAddress] = deque()  # hosts with a backlog, in turn
        self.backlog_size = 0
        self.done: deque[Result] = deque()
        self.spare: dict[int, list[_socket.socket]] = {socket.AF_INET: [], socket.AF_INET6: []}
        self._wake: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0

    # -- sending ---------------------------------------------------------------------

    def fill(self, source: Iterator[Probe], exhausted: bool) -> bool:
        """Send what the windows allow: backlogged probes first, then new ones.

        Returns whether ``source`` is exhausted.
        """
        for _ in range(len(self.waiting)):
            address = self.waiting.popleft()
            host = self.hosts[address]
            while host.backlog and self._may_send(address, host):
                probe, tries = host.backlog.popleft()
                self.backlog_size -= 1
                if tries and probe in self.answered_late:
                    self.answered_late.discard(probe)
                    continue
                if not self._send(probe, tries, host):
                    break
            if host.backlog:
                self.waiting.append(address)
        unpaced = not self.paced
        last_address: IPAddress | None = None
        last_host: _Host | None = None
        while not exhausted and self.backlog_size < MAX_BACKLOG:
            if len(self.in_flight) + len(self.lingering) >= self.limit:
                break
            fresh = next(source, None)
            if fresh is None:
                return True
            address = fresh.host
            # One host's ports in a row: skip hashing the address again.
            known = last_host if address is last_address else self.hosts.get(address)
            if known is None:
                known = self.hosts[address] = _Host(
                    self.timing.host(address, time.monotonic()), str(address), family(address)
                )
            last_address, last_host = address, known
            if known.backlog or not (
                # loopback's path inlined: nothing in flight, nothing paced or boosted
                (unpaced and not self.in_flight and not known.timing.delay_between_sends)
                or self._may_send(address, known)
            ):
                self._defer(address, known, (fresh, 0))
            else:
                self._send(fresh, 0, known)
        return exhausted

    def _may_send(self, address: IPAddress, host: _Host) -> bool:
        total = len(self.in_flight)
        if total + len(self.lingering) >= self.limit:
            return False
        if not total and not self.paced and not host.timing.delay_between_sends:
            return True  # empty windows have room, and no delay applies: loopback's path
        now = time.monotonic()
        delay = self.timing.send_delay(
            address, now, host_in_flight=host.in_flight, total_in_flight=total
        )
        if delay is None:
            return False
        if delay > 0:
            self._wake_at(now + delay)
            return False
        return True

    def _defer(
        self, address: IPAddress, host: _Host, pending: Pending, *, first: bool = False
    ) -> None:
        if not host.backlog:
            self.waiting.append(address)
        if first:
            host.backlog.appendleft(pending)
        else:
            host.backlog.append(pending)
        self.backlog_size += 1

    def _send(self, probe: Probe, tries: int, host: _Host) -> bool:
        """Start one attempt; False when out of descriptors (the probe is backlogged)."""
        spare = self.spare[host.family]
        if spare:
            sock = spare.pop()
        else:
            try:
                sock = _new_socket(host.family, _STREAM_NONBLOCK)
            except OSError as exc:
                if exc.errno not in BACKPRESSURE:
                    raise
                self._shrink()
                self._defer(probe.host, host, (probe, tries), first=True)
                return False
        now = time.monotonic()
        if self.paced:
            self.timing.on_send(probe.host, now)
        tries += 1
        target = (host.text, probe.port)
        code = sock.connect_ex(target)
        if code == _EINPROGRESS:
            # Asked again, connect() reports what has happened since: 0 connected, an
            # error (which also resets the socket for reuse), or EALREADY, still under way.
            code = sock.connect_ex(target)
            if code == _EALREADY:
                attempt = _Attempt(probe, sock, now, tries)
                earlier = self.lingering_probes.get(probe) if tries > 1 else None
                if earlier is not None:
                    earlier.retried_as = attempt
                self._watch(attempt, host)
                return True
        if tries > 1:
            self._drop_lingering(probe)
        if code == _ECONNREFUSED:
            if len(spare) < MAX_SPARE:
                spare.append(sock)  # unconnected again, its source port released
            else:
                sock.close()
            rtt = self._decided_at_once(probe, host, now, tries, code)
            self.done.append(
                Result(probe.host, probe.port, State.CLOSED, Reason.CONN_REFUSED, Protocol.TCP,
                       rtt, tries)
            )  # fmt: skip
            return True
        try:
            if code in BACKPRESSURE:
                self._shrink()
                self._defer(probe.host, host, (probe, tries - 1), first=True)
                return False
            rtt = self._decided_at_once(probe, host, now, tries, code)
            self.done.append(decided_result(code, sock, probe, rtt, tries))
        finally:
            sock.close()
        return True

    def _decided_at_once(
        self, probe: Probe, host: _Host, sent: float, tries: int, code: int
    ) -> float:
        """Account for a probe that connect() decided (see IMMEDIATE_SAMPLE_EVERY); its RTT."""
        rtt = time.monotonic() - sent
        host.immediate += 1
        if (
            host.immediate <= IMMEDIATE_SAMPLES_FIRST
            or host.immediate % IMMEDIATE_SAMPLE_EVERY == 0
        ):
            self._answered(probe.host, host, sent, tries, code)
        return rtt

    def _shrink(self) -> None:
        """Out of descriptors or ports: fly fewer probes from now on (never below one)."""
        self.limit = max(1, min(self.limit, len(self.in_flight)) * 3 // 4)

    def _watch(self, attempt: _Attempt, host: _Host) -> None:
        fd = attempt.sock.fileno()
        self.in_flight[fd] = attempt
        host.in_flight += 1
        if not self.paced:
            self.timing.on_send(attempt.probe.host, attempt.sent)
        self.loop.add_writer(fd, self._on_writable, fd)
        timeout = self.timing.probe_timeout(attempt.probe.host, attempt.sent)
        attempt.guessed = not self.timing.rtt.samples and not host.timing.rtt.samples
        attempt.timer = self.loop.call_at(self.loop.time() + timeout, self._on_timeout, fd)

    # -- completions -----------------------------------------------------------------

    def _finish(self, fd: int) -> tuple[_Attempt, _Host]:
        attempt = self.in_flight.pop(fd)
        self.loop.remove_writer(fd)
        if attempt.timer is not None:
            attempt.timer.cancel()
        host = self.hosts[attempt.probe.host]
        host.in_flight -= 1
        self._notify()
        return attempt, host

    def _answered(
        self, address: IPAddress, host: _Host, sent: float, tries: int, code: int
    ) -> None:
        now = time.monotonic()
        self.timing.on_answer(
            address,
            sent=sent,
            now=now,
            host_in_flight=host.in_flight,
            total_in_flight=len(self.in_flight),
            tryno=tries - 1,
            # The kernel sends the SYN of a connect() again after its own timeout: an
            # answer after it may be to that SYN, so its RTT is unknown (Karn's rule).
            ambiguous=now - sent >= KERNEL_SYN_TIMEOUT,
            icmp_error=code not in (0, errno.ECONNREFUSED, errno.ECONNRESET),
        )
        if self.timing.rtt.samples == 1 and self.in_flight:
            self._rearm_initial_timers()

    def _rearm_initial_timers(self) -> None:
        """The scan's first RTT sample: probes sent before it wait for the initial timeout
        (1 s at -T3); they now wait for what their host's estimate, or the group's, says
        (down hosts in discovery, the filtered ports of a -Pn scan's first window)."""
        now = time.monotonic()
        for fd, attempt in self.in_flight.items():
            if not attempt.guessed or attempt.timer is None:
                continue
            address, attempt.guessed = attempt.probe.host, False
            attempt.timer.cancel()
            due = attempt.sent + self.timing.probe_timeout(address, now)
            attempt.timer = self.loop.call_at(
                self.loop.time() + max(0.0, due - now), self._on_timeout, fd
            )

    def _drop_lingering(self, probe: Probe) -> None:
        """Stop listening to an earlier try of ``probe`` (a later one decided or expired)."""
        earlier = self.lingering_probes.pop(probe, None)
        if earlier is not None:
            fd = earlier.sock.fileno()
            del self.lingering[fd]
            self.loop.remove_writer(fd)
            earlier.sock.close()

    def _linger(self, attempt: _Attempt) -> None:
        self._drop_lingering(attempt.probe)
        self.lingering[attempt.sock.fileno()] = attempt
        self.lingering_probes[attempt.probe] = attempt

    def _on_late_answer(self, fd: int) -> None:
        """An earlier try answered after its timeout: it decides; its retry is withdrawn."""
        attempt = self.lingering.pop(fd)
        del self.lingering_probes[attempt.probe]
        self.loop.remove_writer(fd)
        probe, sock = attempt.probe, attempt.sock
        host = self.hosts[probe.host]
        tries = attempt.tries
        later = attempt.retried_as
        if later is not None:
            tries = later.tries
            if (
                later.sock.fileno() in self.in_flight
                and self.in_flight[later.sock.fileno()] is later
            ):
                self._finish(later.sock.fileno())
                later.sock.close()
        elif any(p == probe for p, _ in host.bench):
            host.bench = [(p, t) for p, t in host.bench if p != probe]
        else:
            self.answered_late.add(probe)  # its retry still waits in the backlog
        try:
            code = sock.getsockopt(_SOL_SOCKET, _SO_ERROR)
            if code in BACKPRESSURE:
                return
            rtt = time.monotonic() - attempt.sent
            self._answered(probe.host, host, attempt.sent, attempt.tries, code)
            self.done.append(decided_result(code, sock, probe, rtt, tries))
        finally:
            sock.close()
        self._notify()
        self._settle_if_quiet(probe.host, host)

    def _on_writable(self, fd: int) -> None:
        if fd in self.lingering:
            self._on_late_answer(fd)
            return
        attempt, host = self._finish(fd)
        probe, sock = attempt.probe, attempt.sock
        if attempt.tries > 1:
            self._drop_lingering(probe)
        rtt = time.monotonic() - attempt.sent
        try:
            code = sock.getsockopt(_SOL_SOCKET, _SO_ERROR)
            if code in BACKPRESSURE:
                self._defer(probe.host, host, (probe, attempt.tries - 1), first=True)
                return
            self._answered(probe.host, host, attempt.sent, attempt.tries, code)
            self.done.append(decided_result(code, sock, probe, rtt, attempt.tries))
        finally:
            sock.close()
        self._settle_if_quiet(probe.host, host)

    def _on_timeout(self, fd: int) -> None:
        attempt, host = self._finish(fd)
        self.loop.add_writer(fd, self._on_writable, fd)  # still listened to, see _linger
        self._linger(attempt)
        address = attempt.probe.host
        self.timing.on_timeout(
            address,
            sent=attempt.sent,
            now=time.monotonic(),
            host_in_flight=host.in_flight,
            total_in_flight=len(self.in_flight),
        )
        pending = (attempt.probe, attempt.tries)
        if attempt.tries <= host.timing.retries_allowed:
            self._defer(address, host, pending, first=True)
        else:
            host.bench.append(pending)
        self._settle_if_quiet(address, host)

    def _settle_if_quiet(self, address: IPAddress, host: _Host) -> None:
        """Decide benched ports once the host is quiet (or the bench is long): retry those
        the host's grown allowance still covers, call the rest filtered."""
        if not host.bench or ((host.in_flight or host.backlog) and len(host.bench) < MAX_BENCH):
            return
        allowed = host.timing.retries_allowed
        bench, host.bench = host.bench, []
        for probe, tries in bench:
            if tries <= allowed:
                self._defer(address, host, (probe, tries))
            else:
                self._drop_lingering(probe)
                self.done.append(
                    Result(
                        host=probe.host,
                        port=probe.port,
                        state=State.FILTERED,
                        reason=Reason.NO_RESPONSE,
                        tries=tries,
                    )
                )

    # -- waiting ---------------------------------------------------------------------

    def idle(self) -> bool:
        """Nothing in flight, backlogged or benched: the scan of the stream is complete."""
        if self.in_flight or self.backlog_size:
            return False
        for address, host in self.hosts.items():
            if host.bench:
                self._settle_if_quiet(address, host)
        return not self.done and not self.backlog_size

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _wake_at(self, when: float) -> None:
        """Be woken at monotonic time ``when`` (a send delay or rate limit expires)."""
        if self._timer is not None:
            if self._timer_due <= when:
                return
            self._timer.cancel()
        self._timer_due = when  # uvloop's TimerHandle has no when()
        self._timer = self.loop.call_later(max(0.0, when - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._notify()

    async def wait(self) -> None:
        """Sleep until a probe completes or times out, or a send delay expires."""
        if self.done:
            return
        if not self.in_flight and self._timer is None:
            # Nothing can wake us but time: out of descriptors with nothing in flight.
            await asyncio.sleep(0.005)
            return
        self._wake = self.loop.create_future()
        try:
            await self._wake
        finally:
            self._wake = None

    def close_all(self) -> None:
        for spare in self.spare.values():
            for sock in spare:
                sock.close()
            spare.clear()
        for fd in list(self.in_flight):
            self._finish(fd)[0].sock.close()
        for probe in list(self.lingering_probes):
            self._drop_lingering(probe)
        if self._timer is not None:
            self._timer.cancel()
