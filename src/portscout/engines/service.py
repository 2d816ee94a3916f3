"""Service detection's connections (``-sV``): asyncio TCP (and TLS) exchanges driven by
``services.session.PortSession``, which decides; this module only sends, reads and times.

Bounds, so that no server can stall a scan or fill memory (issue 13, hostile servers):

- every read: at most ``read_limit`` bytes kept per probe, a deadline (the probe's
  ``totalwaitms``, capped by ``DetectOptions.max_wait``, and the port's budget);
- every connect and TLS handshake: ``connect_timeout``;
- every port: ``port_budget`` seconds for all its probes together; then what is known
  so far (a softmatch, TLS) is the answer;
- ports at once: ``concurrency`` (a semaphore).

LZR-style, widened: while a probe waits for its answer (the NULL probe waits 6 s for a
banner, a probe a server does not understand waits its ``totalwaitms``), the next probes
in nmap's order already run on connections of their own, at most ``parallel_probes`` in
flight per port and ``LOOKAHEAD`` ahead. Outcomes are still taken in nmap's order; a
probe that has received nothing is given up early only when that cannot lose an answer:
the NULL probe once a later probe has received anything (the server waits for the client,
and the NULL probe's lines are in every later probe's chain, so that answer is matched
against them too); a probe that sent a payload once it has been connected ``CUT_GRACE``
and a later probe has hard-matched (so the port has an answer whatever this one would have
said). A later answer that names nothing does not cut a probe: on a loaded machine a
server may simply handshake or answer this probe's connection last (issue 13: 443 came
out ``ssl`` without ``http`` when a 400 to RedisInfo cut GetRequest inside TLS).

Matching runs on the event loop: the indexed matcher costs about 0.3 ms per response, and
checks during reading are spaced ``CHECK_INTERVAL`` apart, so a trickling server cannot
make it run once per byte. A process pool was measured against it and pays only past
~1,500 responses; threads cannot help (pure-Python ``re`` holds the GIL): see
docs/benchmarks.md, "Off the event loop, in a process pool?".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from portscout.results import IPAddress, Service
from portscout.services.match import MAX_MATCH_BYTES, Analyses
from portscout.services.probes import ProbeDatabase, ServiceProbe
from portscout.services.session import INTENSITY_DEFAULT, PortSession, Signatures, Step
from portscout.services.x509 import parse_certificate

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.05  # seconds between match attempts while a response trickles in
READ_CHUNK = 4096
ALPN_OFFERED = ("h2", "http/1.1")
LOOKAHEAD = 8  # probes a port may run ahead of the one whose outcome is awaited
CUT_GRACE = 0.2  # seconds a probe that sent a payload is waited for before it may be cut


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectOptions:
    """How hard and how long ``-sV`` tries (seconds, bytes)."""

    intensity: int = INTENSITY_DEFAULT
    connect_timeout: float = 5.0
    max_wait: float = 6.0  # caps a probe's totalwaitms
    read_limit: int = MAX_MATCH_BYTES
    port_budget: float = 30.0
    concurrency: int = 64
    parallel_probes: int = 4  # connections in flight per port (1: nmap's serial order)

    def __post_init__(self) -> None:
        if not 0 <= self.intensity <= 9:
            raise ValueError(f"version intensity must be 0-9, got {self.intensity}")


@dataclass(slots=True)
class Exchange:
    """One probe's connection: what came back, and how it ended."""

    data: bytearray = field(default_factory=bytearray)
    closed: bool = False  # the peer closed or reset
    failed: bool = False  # no connection (refused, timed out): the probe said nothing
    hard: bool = False  # a hard match arrived before the wait ended
    elapsed_ms: float = 0.0
    sent_at: float | None = None  # loop time the connection was up and the payload sent


@dataclass(slots=True)
class _Tls:
    """TLS state of one port: contexts, and what the handshake showed."""

    probing: ssl.SSLContext | None = None
    certificate_der: bytes | None = None
    alpn: str | None = None


def _client_context(alpn: Iterable[str] = ()) -> ssl.SSLContext:
    """No verification: detection wants to see any server's certificate, not trust it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


class ServiceDetector:
    """Detects services on open ports with one probe database (compiled lazily, once)."""

    def __init__(
        self,
        database: ProbeDatabase,
        options: DetectOptions | None = None,
        analyses: Analyses | None = None,
    ) -> None:
        self.signatures = Signatures(database, analyses)
        self.options = options or DetectOptions()

    async def detect(self, host: IPAddress, port: int) -> Service | None:
        """The service on ``host:port``, or None when nothing matched within the budget."""
        session = PortSession(self.signatures, port, intensity=self.options.intensity)
        tls = _Tls()
        result: Service | None = None
        try:
            async with asyncio.timeout(self.options.port_budget):
                result = await self._probe_all(host, port, session, tls)
        except TimeoutError:
            log.debug("%s:%d: service detection budget spent", host, port)
            result = session.final()
        if result is not None and session.tls:
            result = _with_tls(result, tls)
        return result

    async def _probe_all(
        self, host: IPAddress, port: int, session: PortSession, tls: _Tls
    ) -> Service | None:
        flight: dict[str, _InFlight] = {}
        try:
            while (probe := session.next_probe()) is not None:

                def refill(current: ServiceProbe = probe) -> None:
                    self._launch(host, port, current, session, tls, flight)

                refill()
                exchange = await _awaited(flight[probe.name], flight, refill, probe.is_null)
                del flight[probe.name]
                outcome = session.finish(
                    probe, bytes(exchange.data), closed=exchange.closed,
                    elapsed_ms=exchange.elapsed_ms,
                )  # fmt: skip
                if outcome.step is Step.DONE:
                    return outcome.result
                if outcome.step is Step.START_TLS:
                    await _drop(flight)
                    if not await self._start_tls(host, port, tls):
                        return session.tls_failed().result
                    session.start_tls()
            return session.final()
        finally:
            await _drop(flight)

    def _launch(self, host: IPAddress, port: int, probe: ServiceProbe, session: PortSession,
                tls: _Tls, flight: dict[str, _InFlight]) -> None:  # fmt: skip
        """Start ``probe`` (unless running) and the next ones while fewer than
        ``parallel_probes`` are in flight; cancel those a softmatch has taken off the plan."""
        ahead = session.upcoming(LOOKAHEAD)
        wanted = {probe.name, *(p.name for p in ahead)}
        for name in [n for n in flight if n not in wanted]:
            flight.pop(name).task.cancel()
        for candidate in [probe, *ahead]:
            running = sum(1 for f in flight.values() if not f.task.done())
            if candidate is not probe and running >= self.options.parallel_probes:
                break
            if candidate.name not in flight:
                exchange = Exchange()
                task = asyncio.create_task(
                    self._exchange(host, port, candidate, session, tls.probing, exchange)
                )
                flight[candidate.name] = _InFlight(exchange, task)

    async def _exchange(
        self,
        host: IPAddress,
        port: int,
        probe: ServiceProbe,
        session: PortSession,
        context: ssl.SSLContext | None,
        exchange: Exchange | None = None,
    ) -> Exchange:
        """Connect, send the probe's payload, read until its wait ends (see module doc)."""
        exchange = exchange if exchange is not None else Exchange()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            reader, writer = await self._connect(host, port, context)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            log.debug("%s:%d probe %s: no connection (%s)", host, port, probe.name, exc)
            exchange.failed = True
            return exchange
        try:
            if probe.payload:
                writer.write(probe.payload)
            exchange.sent_at = loop.time()
            wait = min(probe.totalwaitms / 1000, self.options.max_wait)
            await self._read(reader, probe, session, exchange, started + wait)
        finally:
            exchange.elapsed_ms = (loop.time() - started) * 1000
            writer.transport.abort()  # no lingering close handshake with a hostile peer
            log.debug("%s:%d probe %s%s: %d bytes in %.0f ms%s", host, port, probe.name,
                      " (tls)" if context else "", len(exchange.data), exchange.elapsed_ms,
                      ", closed" if exchange.closed else "")  # fmt: skip
        return exchange

    async def _connect(
        self, host: IPAddress, port: int, context: ssl.SSLContext | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        timeout = self.options.connect_timeout
        async with asyncio.timeout(timeout):
            return await asyncio.open_connection(
                str(host), port, ssl=context, ssl_handshake_timeout=timeout if context else None
            )

    async def _read(
        self,
        reader: asyncio.StreamReader,
        probe: ServiceProbe,
        session: PortSession,
        exchange: Exchange,
        deadline: float,
    ) -> None:
        """Read into ``exchange`` until the deadline, the byte limit, the peer's close or
        a hard match; match at most every ``CHECK_INTERVAL`` while bytes trickle in."""
        loop = asyncio.get_running_loop()
        limit = self.options.read_limit
        checked_at = 0.0
        data = exchange.data
        while len(data) < limit:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await reader.read(min(READ_CHUNK, limit - len(data)))
            except TimeoutError:
                return
            except (OSError, ssl.SSLError):  # reset, or TLS broken mid-stream
                exchange.closed = True
                return
            if not chunk:  # closed: the whole answer is in, match it once more
                exchange.closed = True
                exchange.hard = bool(data) and session.check(probe, bytes(data)) is not None
                return
            data += chunk
            now = loop.time()
            if now - checked_at >= CHECK_INTERVAL or len(data) >= limit:
                checked_at = now
                if session.check(probe, bytes(data)) is not None:
                    exchange.hard = True
                    return

    async def _start_tls(self, host: IPAddress, port: int, tls: _Tls) -> bool:
        """One handshake offering ALPN, for the certificate and the protocol chosen; the
        probes inside TLS then offer no ALPN (an ``h2`` server would not read HTTP/1.0)."""
        try:
            reader, writer = await self._connect(host, port, _client_context(ALPN_OFFERED))
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            log.debug("%s:%d: TLS handshake failed (%s)", host, port, exc)
            return False
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            if ssl_object is not None:
                tls.certificate_der = ssl_object.getpeercert(binary_form=True)
                tls.alpn = ssl_object.selected_alpn_protocol()
        finally:
            writer.transport.abort()
        del reader
        tls.probing = _client_context()
        return True


@dataclass(slots=True)
class _InFlight:
    """A probe running on its own connection: what it has received so far, and its task."""

    exchange: Exchange
    task: asyncio.Task[Exchange]


async def _awaited(
    current: _InFlight, flight: dict[str, _InFlight], refill: Callable[[], None], banner: bool
) -> Exchange:
    """The current probe's exchange when it ends, or cut short when ``_may_cut`` says its
    silence cannot change the port's answer. ``refill`` starts later probes as earlier ones
    end; ``banner``: the current probe is the NULL probe."""
    loop = asyncio.get_running_loop()
    while not current.task.done():
        refill()
        others = [f for f in flight.values() if f is not current]
        if _may_cut(current.exchange, [f.exchange for f in others], banner, loop.time()):
            current.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await current.task
            return current.exchange
        pending = {f.task for f in others if not f.task.done()}
        # Woken when a probe ends, else every tick: data arriving ends no task, and a
        # grace may run out while nothing ends.
        await asyncio.wait({current.task, *pending}, timeout=CHECK_INTERVAL,
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    return current.task.result()


def _may_cut(current: Exchange, later: list[Exchange], banner: bool, now: float) -> bool:
    """Whether a probe that has heard nothing may be given up (see the module docstring):
    the NULL probe once a later probe heard anything; another probe once it has been
    connected ``CUT_GRACE`` and a later probe hard-matched."""
    if current.data:
        return False
    if banner:
        return any(e.data for e in later)
    sent = current.sent_at
    return sent is not None and now - sent >= CUT_GRACE and any(e.hard for e in later)


async def _drop(flight: dict[str, _InFlight]) -> None:
    """Cancel the probes still in flight that are no longer wanted, and wait for them."""
    tasks = [f.task for f in flight.values()]
    flight.clear()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _with_tls(service: Service, tls: _Tls) -> Service:
    """The service with what the TLS handshake showed (certificate fields, ALPN)."""
    certificate = None
    if tls.certificate_der:
        try:
            certificate = parse_certificate(tls.certificate_der)
        except ValueError as exc:
            log.debug("unreadable certificate: %s", exc)
    return dataclasses.replace(service, certificate=certificate, alpn=tls.alpn)
