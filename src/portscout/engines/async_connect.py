"""The default engine: non-blocking connect() on asyncio, a bounded window of probes.

Per probe: ``socket(SOCK_NONBLOCK)``, ``connect_ex``, then ``SO_ERROR`` at once. On
loopback and other fast paths the handshake (or the RST) has already been processed when
connect() returns, so most ports are decided without touching the event loop; only
probes still in progress get a writer callback and a timer. No task per probe: the window
is refilled from the lazy probe stream as probes finish.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from portscout.engines.base import BACKPRESSURE, EngineOptions
from portscout.engines.connect import connected_result, error_result, family, sockaddr
from portscout.plan import Probe
from portscout.results import Reason, Result, State

_SOL_SOCKET = socket.SOL_SOCKET
_SO_ERROR = socket.SO_ERROR
_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK


@dataclass(slots=True)
class _Attempt:
    probe: Probe
    sock: socket.socket
    started: float
    tries: int
    timer: asyncio.TimerHandle | None = None


class AsyncConnectEngine:
    name = "async"

    async def run(self, probes: Iterator[Probe], options: EngineOptions) -> AsyncIterator[Result]:
        loop = asyncio.get_running_loop()
        window = _Window(loop, options)
        pending: deque[tuple[Probe, int]] = deque()  # retries and back-pressured probes
        source = iter(probes)
        exhausted = False
        try:
            while True:
                while len(window.in_flight) < window.limit:
                    if pending:
                        probe, tries = pending.popleft()
                    elif exhausted:
                        break
                    else:
                        next_probe = next(source, None)
                        if next_probe is None:
                            exhausted = True
                            break
                        probe, tries = next_probe, 0
                    result = window.start(probe, tries, pending)
                    if result is not None:
                        yield result
                if window.done:
                    while window.done:
                        yield window.done.popleft()
                    continue
                if not window.in_flight:
                    if exhausted and not pending:
                        return
                    await asyncio.sleep(0.005)  # back-pressure with nothing in flight
                    continue
                await window.wait()
                pending.extend(window.retries)
                window.retries.clear()
        finally:
            window.close_all()


class _Window:
    """The probes in flight, their callbacks and timers; completed results queue in ``done``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, options: EngineOptions) -> None:
        self.loop = loop
        self.options = options
        self.limit = options.max_in_flight
        self.in_flight: dict[int, _Attempt] = {}
        self.done: deque[Result] = deque()
        self.retries: deque[tuple[Probe, int]] = deque()
        self._wake: asyncio.Future[None] | None = None

    def start(self, probe: Probe, tries: int, pending: deque[tuple[Probe, int]]) -> Result | None:
        """Begin one attempt; return its result if decided at once, else None."""
        try:
            sock = socket.socket(family(probe.host), _STREAM_NONBLOCK)
        except OSError as exc:
            if exc.errno not in BACKPRESSURE:
                raise
            self._shrink()
            pending.appendleft((probe, tries))
            return None
        started = time.monotonic()
        tries += 1
        code = sock.connect_ex(sockaddr(probe.host, probe.port))
        if code == errno.EINPROGRESS:
            code = sock.getsockopt(_SOL_SOCKET, _SO_ERROR)
            if code == 0:
                try:
                    sock.getpeername()
                except OSError:  # ENOTCONN: the handshake is still under way
                    self._watch(_Attempt(probe, sock, started, tries))
                    return None
        rtt = time.monotonic() - started
        with sock:
            if code == 0:
                return connected_result(sock, probe, rtt, tries)
            if code in BACKPRESSURE:
                self._shrink()
                pending.appendleft((probe, tries - 1))
                return None
            return error_result(code, probe, rtt, tries)

    def _shrink(self) -> None:
        """Out of descriptors or ports: fly fewer probes from now on (never below one)."""
        self.limit = max(1, min(self.limit, len(self.in_flight)) * 3 // 4)

    def _watch(self, attempt: _Attempt) -> None:
        fd = attempt.sock.fileno()
        self.in_flight[fd] = attempt
        self.loop.add_writer(fd, self._on_writable, fd)
        attempt.timer = self.loop.call_later(self.options.timeout, self._on_timeout, fd)

    def _finish(self, fd: int) -> _Attempt:
        attempt = self.in_flight.pop(fd)
        self.loop.remove_writer(fd)
        if attempt.timer is not None:
            attempt.timer.cancel()
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        return attempt

    def _on_writable(self, fd: int) -> None:
        attempt = self._finish(fd)
        probe, sock = attempt.probe, attempt.sock
        rtt = time.monotonic() - attempt.started
        with sock:
            code = sock.getsockopt(_SOL_SOCKET, _SO_ERROR)
            if code == 0:
                self.done.append(connected_result(sock, probe, rtt, attempt.tries))
            elif code in BACKPRESSURE:
                self.retries.append((probe, attempt.tries - 1))
            else:
                self.done.append(error_result(code, probe, rtt, attempt.tries))

    def _on_timeout(self, fd: int) -> None:
        attempt = self._finish(fd)
        attempt.sock.close()
        if attempt.tries <= self.options.max_retries:
            self.retries.append((attempt.probe, attempt.tries))
            return
        probe = attempt.probe
        self.done.append(
            Result(
                host=probe.host,
                port=probe.port,
                state=State.FILTERED,
                reason=Reason.NO_RESPONSE,
                tries=attempt.tries,
            )
        )

    async def wait(self) -> None:
        """Sleep until at least one probe in flight completes or times out."""
        self._wake = self.loop.create_future()
        try:
            await self._wake
        finally:
            self._wake = None

    def close_all(self) -> None:
        for fd in list(self.in_flight):
            self._finish(fd).sock.close()
