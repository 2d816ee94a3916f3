"""The engine interface, the errno -> (state, reason) map, and the bridge that lets blocking
engines (threads) feed the same async interface.

Engines own sockets and nothing else: they turn ``Probe``s into ``Result``s. They import
the core (plan, results, timing, errors) only, never output, store or cli.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from portscout.errors import ScanError
from portscout.plan import Probe
from portscout.results import IPAddress, Reason, Result, State
from portscout.timing import TimingPolicy

# Errors of connect() that decide a port. Anything not here is a local problem (see
# BACKPRESSURE), a destination with no route (see UNROUTABLE) or a bug, never a port state.
CONNECT_ERRORS: dict[int, tuple[State, Reason]] = {
    errno.ECONNREFUSED: (State.CLOSED, Reason.CONN_REFUSED),  # RST (or ICMP port unreach)
    # The handshake completed, then the peer reset: a service that hangs up at once, or a
    # SYN proxy's backend. Open, as nmap -sT and a SYN scan say (a refused SYN is
    # ECONNREFUSED).
    errno.ECONNRESET: (State.OPEN, Reason.SYN_ACK),
    errno.ETIMEDOUT: (State.FILTERED, Reason.NO_RESPONSE),  # the kernel's SYN retries ran out
    errno.EHOSTUNREACH: (State.FILTERED, Reason.HOST_UNREACH),  # ICMP host unreach/prohibited
    errno.ENETUNREACH: (State.FILTERED, Reason.NET_UNREACH),
    errno.EACCES: (State.FILTERED, Reason.ADMIN_PROHIBITED),  # local firewall reject
    errno.EPERM: (State.FILTERED, Reason.ADMIN_PROHIBITED),
    errno.ENOPROTOOPT: (State.FILTERED, Reason.PROTO_UNREACH),
    errno.EHOSTDOWN: (State.FILTERED, Reason.HOST_UNREACH),
    errno.ENONET: (State.FILTERED, Reason.NET_UNREACH),
}

# Local resource exhaustion: the probe is retried later with fewer sockets in flight.
BACKPRESSURE = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# What the kernel says of a destination it has no source address for: ::1 or any IPv6
# host with IPv6 disabled (Docker's default), a link-local address without an interface,
# IPv6 itself disabled at boot. A property of the host, not of a port or of the load: the
# host's ports are filtered, with nmap's reason ``no-route``. EADDRNOTAVAIL also means
# "no local port left for this very destination", which is back-pressure: ``unroutable``
# tells the two apart.
UNROUTABLE = frozenset({errno.EADDRNOTAVAIL, errno.EINVAL, errno.EAFNOSUPPORT})
NO_ROUTE: tuple[State, Reason] = (State.FILTERED, Reason.NO_ROUTE)


def route_verdict(code: int) -> tuple[State, Reason] | None:
    """The state of every port of a host whose route lookup failed with ``code``; None
    when ``code`` says nothing of the host (a local problem, or a bug)."""
    if code in UNROUTABLE:
        return NO_ROUTE
    return CONNECT_ERRORS.get(code)


@contextlib.contextmanager
def os_errors(doing: str) -> Iterator[None]:
    """Translate an OSError escaping the block into a ScanError (exit code 1) saying what
    failed: the one boundary of an engine, after which no bare OSError reaches the user
    (httpcore's ``map_exceptions``). Errors that decide a port never get here."""
    try:
        yield
    except OSError as exc:
        raise ScanError(f"{doing}: {exc.strerror or exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineOptions:
    """Settings every engine honours: one ``TimingPolicy`` (timeouts, retries, rates,
    parallelism, merged and checked by ``TimingPolicy.with_options``), and what the scanner
    adds to it.

    ``max_in_flight`` is the policy's parallelism sized below the descriptor limit by
    ``scanner``; ``workers`` the threadpool engine's threads.
    """

    timing: TimingPolicy
    max_in_flight: int = 1024
    workers: int = 50
    # Round trips measured by host discovery: each host's first probes wait for a timeout
    # derived from its own (as nmap carries a target's timing from its ping phase into the
    # port scan), not for the initial timeout, which is a second at -T3.
    rtt_hints: Mapping[IPAddress, float] = field(default_factory=dict)


class Engine(Protocol):
    """Turns probes into results. Owns the sockets; parsing is core's, formatting output's."""

    name: str

    def run(self, probes: Iterator[Probe], options: EngineOptions) -> AsyncIterator[Result]:
        """Yield one Result per probe, in completion order.

        Pulls probes lazily, never more than ``options.max_in_flight`` outstanding. On
        cancellation closes every socket; results already yielded stand.
        """
        ...


class ThreadBridge:
    """Hands results from worker threads to the event loop in batches.

    A wake-up per result would cost a loop iteration each (call_soon_threadsafe writes to
    the self-pipe); instead producers append to a deque and schedule one wake-up until
    the consumer has drained it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque[Result] = deque()
        self._lock = threading.Lock()
        self._wake_pending = False
        self._ready = asyncio.Event()
        self.done = False
        self.error: BaseException | None = None
        self.stop = threading.Event()  # set by the consumer: producers must wind down

    def emit(self, result: Result) -> None:
        with self._lock:
            self._items.append(result)
            if self._wake_pending:
                return
            self._wake_pending = True
        self._loop.call_soon_threadsafe(self._ready.set)

    def finish(self, error: BaseException | None = None) -> None:
        self.error = error
        self.done = True
        self._loop.call_soon_threadsafe(self._ready.set)

    async def drain(self) -> AsyncIterator[Result]:
        while True:
            await self._ready.wait()
            with self._lock:
                self._ready.clear()
                self._wake_pending = False
                batch, self._items = self._items, deque()
            for result in batch:
                yield result
            if self.done and not self._items:
                if self.error is not None:
                    raise self.error
                return


async def run_blocking(
    producer: Callable[[ThreadBridge], None], engine: str
) -> AsyncIterator[Result]:
    """Run ``producer(bridge)`` in a thread and yield what it emits; stop it on cancel.

    The blocking engines' one boundary: an OSError the producer raises reaches the
    consumer as a ScanError naming ``engine``.
    """
    bridge = ThreadBridge(asyncio.get_running_loop())

    def target() -> None:
        try:
            with os_errors(f"the {engine} engine"):
                producer(bridge)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            bridge.finish(exc)
        else:
            bridge.finish()

    thread = threading.Thread(target=target, name="portscout-blocking-engine", daemon=True)
    thread.start()
    try:
        async for result in bridge.drain():
            yield result
    finally:
        bridge.stop.set()
        await asyncio.to_thread(thread.join)
