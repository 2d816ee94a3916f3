"""The default connect engine: non-blocking connect() on asyncio, scheduled by
``schedule.Scheduler`` (nmap's timing; the same scheduler as the SYN engine's).

Per probe: ``connect_ex`` on a non-blocking socket, then ``connect_ex`` again at once,
which reports what happened meanwhile (0: connected, an errno: decided, EALREADY: still
under way). On loopback and other fast paths the handshake (or the RST) has already been
processed when connect() returns, so such ports are decided without touching the event
loop, and a socket refused this way is unconnected again and serves the next probe: no
``socket()`` and ``close()`` a closed port, which halves the kernel's cost of a loopback
probe (9 us against 16 us here). Probes still under way get a writer callback; one timer,
set to the scheduler's ``next_due``, wakes the engine for timeouts and paced sends.

A try that timed out keeps its socket, watched, so that a late answer still decides the
port (a timeout a little short costs a retransmission, never a wrong "filtered"): until
the port is decided, its next try times out in turn, its descriptor is needed, or a
second has passed since it was sent (the kernel would send its SYN again). Such
lingering sockets do not count as in flight, and the oldest is closed whenever a send
needs its descriptor: the descriptor budget can never fill up with sockets that wait for
nothing to be sent.

OS errors are translated here once: ``CONNECT_ERRORS`` decide a port, ``BACKPRESSURE``
(out of descriptors, buffers) hands the probe back to the scheduler and shrinks the
budget, anything else is a ``ScanError``.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator

from portscout.engines.base import BACKPRESSURE, EngineOptions
from portscout.engines.connect import decided_result, family, still_connecting
from portscout.errors import ScanError
from portscout.plan import Probe
from portscout.results import Protocol, Reason, Result, State
from portscout.schedule import Flight, Scheduler, Stage

log = logging.getLogger(__name__)
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
# Linux retransmits a connect()'s SYN after 1 s (TCP_TIMEOUT_INIT), then 3 s, 7 s, ...:
# an answer later than this may be to the kernel's resend, its round trip unknown.
KERNEL_SYN_TIMEOUT = 1.0
# Probes sent per pass of the loop at most: answers that arrive while the engine sends
# wait for the next pass, and their round trips carry that wait. At 1024 a pass, pings to
# a /20 of mostly silent lab hosts (10 ms away) measured 0.3-0.8 s and timed out that
# late (discovery 7.5 s); at 128, 0.2 s (4.1 s).
SEND_BUDGET = 128
NO_SOCKET = -1
_DECIDED = Stage.DECIDED
# An enum member costs a class attribute lookup (0.2 us in 3.11): per probe, these.
_CLOSED, _CONN_REFUSED, _TCP = State.CLOSED, Reason.CONN_REFUSED, Protocol.TCP


class AsyncConnectEngine:
    name = "async"

    async def run(self, probes: Iterator[Probe], options: EngineOptions) -> AsyncIterator[Result]:
        policy = options.timing
        # Each probe in flight holds a descriptor and a kernel socket: --max-parallelism
        # caps them as well as the descriptor budget does.
        limit = max(1, min(options.max_in_flight, policy.max_parallelism))
        scheduler = Scheduler(
            policy, iter(probes), now=time.monotonic(), max_in_flight=limit,
            rtt_hints=options.rtt_hints,
        )  # fmt: skip
        scan = _ConnectScan(asyncio.get_running_loop(), scheduler, options.max_in_flight)
        done = scheduler.done
        try:
            while True:
                scan.step()
                while done:
                    yield done.popleft()
                if scan.idle():
                    return
                await scan.wait()
        finally:
            scan.close_all()
            if scan.spurious:
                log.debug("%d socket wakeups carried no answer (ignored)", scan.spurious)


class _ConnectScan:
    """One run's sockets: the tries under way and lingering, by descriptor. Not reusable."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, scheduler: Scheduler, descriptors: int
    ) -> None:
        self.loop, self.scheduler = loop, scheduler
        self.descriptors = max(1, descriptors)  # sockets open at most (spares aside)
        # descriptor -> the flight, its socket and the try it carries (0: the first)
        self.sockets: dict[int, tuple[Flight, _socket.socket, int]] = {}
        # A flight's socket of the try before its latest, still listened to (see the
        # module docstring), and those descriptors oldest first (stale ones skipped).
        self.lingering: dict[Flight, int] = {}
        self.lingering_order: deque[tuple[float, int]] = deque()  # (try sent, descriptor)
        self.spare: dict[int, list[_socket.socket]] = {socket.AF_INET: [], socket.AF_INET6: []}
        self.spurious = 0  # wakeups that carried no answer (see still_connecting)
        self._wake: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- sending ---------------------------------------------------------------------------

    def step(self) -> None:
        """Let timeouts pass, then send what the scheduler hands out."""
        scheduler = self.scheduler
        now = time.monotonic()
        for flight in scheduler.expire(now):
            self._linger(flight)
        self._close_ended()
        self._retire_lingering(now)
        budget = SEND_BUDGET
        while budget > 0:
            batch = scheduler.next_batch(time.monotonic(), budget)
            if not batch:
                return
            budget -= len(batch)
            for index, flight in enumerate(batch):
                if not self._send(flight):
                    for later in batch[index + 1 :]:
                        scheduler.unsent(later)
                    return

    def _send(self, flight: Flight) -> bool:
        """Start ``flight``'s latest try; False when out of descriptors (it is handed back)."""
        host = flight.host
        if host.tag is None:
            host.tag = (str(host.address), family(host.address))
        target: tuple[str, int] = host.tag  # type: ignore[assignment]  # ours: see above
        text, fam = target
        spare = self.spare[fam]
        sock = spare.pop() if spare else self._new_socket(fam)
        if sock is None:
            self.scheduler.unsent(flight)
            return False
        tryno = flight.tries - 1
        target = (text, flight.probe.port)
        sent = time.monotonic()
        code = sock.connect_ex(target)
        if code == _EINPROGRESS:
            # Asked again, connect() reports what has happened since: 0 connected, an
            # error (which also resets the socket for reuse), or EALREADY, still under way.
            code = sock.connect_ex(target)
            if code == _EALREADY:
                fd = sock.fileno()
                self.sockets[fd] = (flight, sock, tryno)
                flight.tag = fd
                self.loop.add_writer(fd, self._on_writable, fd)
                return True
        if code in BACKPRESSURE:
            sock.close()
            self._shrink()
            self.scheduler.unsent(flight)
            return False
        now = time.monotonic()
        if code == _ECONNREFUSED:
            if len(spare) < MAX_SPARE:
                spare.append(sock)  # unconnected again, its source port released
            else:
                sock.close()
            self._answered(flight, tryno, now, code)
            probe = flight.probe
            self.scheduler.done.append(
                Result(probe.host, probe.port, _CLOSED, _CONN_REFUSED, _TCP,
                       now - sent, flight.tries)
            )  # fmt: skip
            return True
        try:
            self._answered(flight, tryno, now, code)
            self._decided(flight, code, sock, now - sent)
        finally:
            sock.close()
        return True

    def _new_socket(self, fam: int) -> _socket.socket | None:
        """A fresh socket, a lingering one closed first if the budget is full; None when
        the system is out of descriptors (the budget shrinks)."""
        while len(self.sockets) >= self.descriptors and self._evict():
            pass
        if len(self.sockets) >= self.descriptors:
            return None
        try:
            return _new_socket(fam, _STREAM_NONBLOCK)
        except OSError as exc:
            if exc.errno not in BACKPRESSURE:
                raise ScanError(f"cannot open a socket: {exc.strerror}") from exc
            if not self._evict():
                self._shrink()
            return None

    def _shrink(self) -> None:
        """Out of descriptors or buffers: fly fewer probes from now on (never below one)."""
        in_flight = self.scheduler.in_flight
        self.descriptors = max(1, min(self.descriptors, len(self.sockets)) * 3 // 4)
        self.scheduler.limit = max(1, min(self.scheduler.limit, in_flight, self.descriptors))

    # -- answers ---------------------------------------------------------------------------

    def _answered(self, flight: Flight, tryno: int, now: float, code: int) -> float | None:
        """Tell the scheduler; the round trip of the try, where it is known."""
        scheduler = self.scheduler
        if code == _ECONNREFUSED and scheduler.answered_quietly(flight, now):
            self._close_lingering(flight)
            return None
        sent = flight.sent if tryno == flight.tries - 1 else flight.lost
        rtt = scheduler.answered(
            flight, tryno, now,
            icmp_error=code not in (0, _ECONNREFUSED, errno.ECONNRESET),
            ambiguous=now - sent >= KERNEL_SYN_TIMEOUT,
        )  # fmt: skip
        self._close_lingering(flight)
        return rtt

    def _decided(self, flight: Flight, code: int, sock: _socket.socket, rtt: float) -> None:
        try:
            result = decided_result(code, sock, flight.probe, rtt, flight.tries)
        except OSError as exc:
            raise ScanError(str(exc)) from exc
        self.scheduler.done.append(result)

    def _on_writable(self, fd: int) -> None:
        entry = self.sockets.pop(fd, None)
        if entry is None:
            return  # a wakeup for a socket already closed: not ours to judge
        flight, sock, tryno = entry
        self.loop.remove_writer(fd)
        keep = False
        try:
            if flight.stage is _DECIDED:
                return  # decided by another try meanwhile
            code = sock.getsockopt(_SOL_SOCKET, _SO_ERROR)
            if code == 0 and (pending := still_connecting(sock)) is not False:
                # A wakeup without an answer (see still_connecting): nothing is learnt.
                self.spurious += 1
                if pending:  # still connecting: keep listening
                    self.sockets[fd] = entry
                    self.loop.add_writer(fd, self._on_writable, fd)
                    keep = True
                else:  # closed with nothing to say: the try times out
                    self._forget(flight, fd)
                return
            if code in BACKPRESSURE:
                if flight.tag == fd and flight.tries - 1 == tryno:
                    flight.tag = NO_SOCKET
                    self.scheduler.unsent(flight)
                self._forget(flight, fd)
                return
            now = time.monotonic()
            sent = flight.sent if tryno == flight.tries - 1 else flight.lost
            if flight.tag == fd:
                flight.tag = NO_SOCKET
            self._answered(flight, tryno, now, code)
            self._close_current(flight)
            self._decided(flight, code, sock, now - sent)
        finally:
            if not keep:
                sock.close()
        self._notify()

    def _forget(self, flight: Flight, fd: int) -> None:
        """``fd`` (being closed) is no longer ``flight``'s: a descriptor number kept after
        its socket is gone would close whichever socket gets that number next."""
        if flight.tag == fd:
            flight.tag = NO_SOCKET
        if self.lingering.get(flight) == fd:
            del self.lingering[flight]

    # -- lingering tries -------------------------------------------------------------------

    def _linger(self, flight: Flight) -> None:
        """``flight``'s latest try timed out: keep listening to it, not to the one before."""
        self._close_lingering(flight)
        fd = flight.tag
        if fd == NO_SOCKET:
            return
        flight.tag = NO_SOCKET
        self.lingering[flight] = fd
        self.lingering_order.append((flight.sent, fd))

    def _close_lingering(self, flight: Flight) -> None:
        fd = self.lingering.pop(flight, NO_SOCKET)
        if fd != NO_SOCKET:
            self._close(fd)

    def _close_current(self, flight: Flight) -> None:
        fd = flight.tag
        if fd != NO_SOCKET:
            flight.tag = NO_SOCKET
            self._close(fd)

    def _close(self, fd: int) -> None:
        entry = self.sockets.pop(fd, None)
        if entry is not None:
            self.loop.remove_writer(fd)
            entry[1].close()

    def _evict(self) -> bool:
        """Close the oldest lingering socket; False when there is none."""
        order = self.lingering_order
        while order:
            if self._close_if_lingering(order.popleft()[1]):
                return True
        return False

    def _retire_lingering(self, now: float) -> None:
        """Close lingering sockets whose try went out ``KERNEL_SYN_TIMEOUT`` ago: the kernel
        would send their SYN again (1 s, 3 s, 7 s later: packets nobody asked for, which
        thousands of filtered ports multiply), and an answer that late is ambiguous."""
        order = self.lingering_order
        while order and order[0][0] + KERNEL_SYN_TIMEOUT <= now:
            self._close_if_lingering(order.popleft()[1])

    def _close_if_lingering(self, fd: int) -> bool:
        entry = self.sockets.get(fd)
        if entry is None or self.lingering.get(entry[0]) != fd:
            return False  # answered, or its descriptor serves another try now
        del self.lingering[entry[0]]
        self._close(fd)
        return True

    def _close_ended(self) -> None:
        """Close what the flights the scheduler decided (filtered) still hold."""
        ended = self.scheduler.ended
        for flight in ended:
            self._close_lingering(flight)
            self._close_current(flight)
        ended.clear()

    # -- waiting ---------------------------------------------------------------------------

    def idle(self) -> bool:
        idle = self.scheduler.idle()
        self._close_ended()
        return idle and not self.scheduler.done

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def wait(self) -> None:
        """Sleep until a try is answered or something is due (a timeout, a paced send)."""
        if self.scheduler.done:
            return
        seconds = self.scheduler.next_due(time.monotonic())
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        self._wake = self.loop.create_future()
        if seconds < float("inf"):
            self._timer = self.loop.call_later(seconds, self._notify)
        try:
            await self._wake
        finally:
            self._wake = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def close_all(self) -> None:
        for spare in self.spare.values():
            for sock in spare:
                sock.close()
            spare.clear()
        for fd in list(self.sockets):
            self._close(fd)
        self.lingering.clear()
        self.lingering_order.clear()
        if self._timer is not None:
            self._timer.cancel()


__all__ = ["AsyncConnectEngine"]
