"""Service detection's connections against servers the test starts on 127.0.0.1 (inside
the session's private namespace): real answers, and hostile servers that must cost
bounded time and memory."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from portscout.engines.service import (
    CUT_GRACE,
    DetectOptions,
    Exchange,
    ServiceDetector,
    _may_cut,
)
from portscout.engines.service_stage import ServiceStage
from portscout.results import Reason, Report, Result, Service, State
from portscout.services.builtin import builtin_database
from portscout.services.probes import ProbeDatabase
from portscout.services.session import PortSession

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("isolated")]
LOCAL = IPv4Address("127.0.0.1")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
QUICK = DetectOptions(max_wait=0.3, port_budget=3.0, connect_timeout=1.0)


@contextlib.asynccontextmanager
async def serve(handler: Handler, context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError, asyncio.IncompleteReadError):
            await handler(reader, writer)
        writer.transport.abort()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 1)


def detect(handler: Handler, options: DetectOptions = QUICK, *,
           db: ProbeDatabase | None = None, context: ssl.SSLContext | None = None,
           ) -> tuple[Service | None, float]:  # fmt: skip
    async def run() -> tuple[Service | None, float]:
        async with serve(handler, context) as port:
            detector = ServiceDetector(db or builtin_database(), options)
            started = time.monotonic()
            found = await detector.detect(LOCAL, port)
            return found, time.monotonic() - started

    return asyncio.run(run())


async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
    await reader.read(100)


async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Like nginx: a 400 for what is not HTTP (a TLS ClientHello), else a 200."""
    request = await reader.read(1000)
    status = b"200 OK" if request.startswith(b"GET ") else b"400 Bad Request"
    writer.write(b"HTTP/1.1 " + status + b"\r\nServer: nginx/1.22.1\r\n\r\n")
    await writer.drain()


def test_banner_is_named_at_once() -> None:
    found, took = detect(banner, DetectOptions(max_wait=6.0))
    assert found is not None
    assert (found.name, found.product, found.version) == ("ssh", "OpenSSH", "9.2p1")
    assert took < 3.0  # a hard match ends the NULL wait; it does not wait 6 s


def test_silent_until_asked_cuts_the_null_wait() -> None:
    """LZR-style: the probe on the second connection matched while the NULL connection
    heard nothing: the 6 s banner wait is not spent."""
    found, took = detect(http, DetectOptions(max_wait=6.0))
    assert found is not None
    assert (found.name, found.product, found.version) == ("http", "nginx", "1.22.1")
    assert took < 3.0
    without, slow = detect(http, DetectOptions(max_wait=1.0, parallel_probes=1))
    assert without == found
    assert slow >= 1.0  # nmap's order, serially: the NULL wait first


async def postgres_like(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Silent until spoken to; hangs up on what it does not understand, answers a startup
    packet with an error: the NULL wait must end once a later probe is answered."""
    request = await reader.read(1000)
    if request[4:8] == struct.pack("!i", 196608):
        body = b"SFATAL\x00C28000\x00Mno such role\x00\x00"
        writer.write(b"E" + struct.pack("!i", 4 + len(body)) + body)
        await writer.drain()


def test_silence_is_cut_when_a_later_probe_is_answered() -> None:
    found, took = detect(postgres_like, DetectOptions(max_wait=6.0, port_budget=10.0))
    assert found is not None
    assert (found.name, found.probe) == ("postgresql", "PostgresStartup")
    assert took < 3.0  # not the NULL probe's 6 s
    serial, slow = detect(postgres_like, DetectOptions(max_wait=1.0, parallel_probes=1))
    assert serial == found
    assert slow >= 1.0


def test_nmap_file_names_the_same(nmap_db: ProbeDatabase) -> None:
    found, _ = detect(banner, db=nmap_db)
    assert found is not None
    assert (found.name, found.product, found.version) == (
        "ssh",
        "OpenSSH",
        "9.2p1 Debian 2+deb12u3",
    )
    assert found.database == nmap_db.source


# -- hostile servers -----------------------------------------------------------------


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for _ in range(300):
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.1)


async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    chunk = bytes(range(256)) * 256  # 64 KiB
    for _ in range(8 * 16):  # 8 MiB
        writer.write(chunk)
        await writer.drain()


async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def reset_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def fake_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers a ClientHello with a ServerHello's first bytes, then garbage."""
    first = await reader.read(5)
    if first.startswith(b"\x16\x03"):
        writer.write(b"\x16\x03\x03\x00\x40\x02\x00\x00\x3c" + b"\xee" * 4000)
        await writer.drain()
        await asyncio.sleep(30)


@pytest.mark.parametrize(
    ("handler", "name"),
    [
        (silent, None),
        (trickle, None),
        (flood, None),
        (close_at_once, "tcpwrapped"),
        (reset_at_once, "tcpwrapped"),
        (fake_tls, "ssl"),
    ],
    ids=["silent", "trickle", "flood", "close", "reset", "tls-garbage"],
)
def test_hostile_servers_cost_bounded_time(handler: Handler, name: str | None) -> None:
    budget = QUICK.port_budget
    found, took = detect(handler)
    assert (found.name if found else None) == name
    assert took < budget + 1.0


def test_a_flood_is_cut_at_the_read_limit() -> None:
    async def run() -> Exchange:
        async with serve(flood) as port:
            detector = ServiceDetector(builtin_database(), QUICK)
            session = PortSession(detector.signatures, port, intensity=7)
            probe = session.next_probe()
            assert probe is not None
            return await detector._exchange(LOCAL, port, probe, session, None)

    exchange = asyncio.run(run())
    assert len(exchange.data) == QUICK.read_limit
    assert not exchange.closed


def test_trickle_is_matched_a_bounded_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    original = PortSession.check

    def counting(self: PortSession, probe: object, response: bytes) -> object:
        nonlocal calls
        calls += 1
        return original(self, probe, response)  # type: ignore[arg-type]

    monkeypatch.setattr(PortSession, "check", counting)

    async def fast_trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(3000):
            writer.write(b"y")
            await writer.drain()
            await asyncio.sleep(0.0005)

    detect(fast_trickle, DetectOptions(max_wait=0.5, port_budget=1.0, intensity=0))
    assert 0 < calls <= 1.0 / 0.05 + 5  # at most one check per CHECK_INTERVAL


# -- TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    where = tmp_path_factory.mktemp("tls")
    key, cert = where / "key.pem", where / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
         "-keyout", str(key), "-out", str(cert), "-subj", "/O=Portscout/CN=tls.test",
         "-addext", "subjectAltName=DNS:tls.test,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(Path(cert), Path(key))
    context.set_alpn_protocols(["http/1.1"])
    return context


def test_https_is_ssl_http_with_its_certificate(server_context: ssl.SSLContext) -> None:
    found, took = detect(http, DetectOptions(max_wait=1.0), context=server_context)
    assert found is not None
    assert (found.full_name, found.product, found.version) == ("ssl/http", "nginx", "1.22.1")
    assert found.certificate is not None
    assert found.certificate.subject == "O=Portscout, CN=tls.test"
    assert found.certificate.sans == ("DNS:tls.test", "IP:127.0.0.1")
    assert found.alpn == "http/1.1"
    assert took < QUICK.port_budget


def test_when_a_silent_probe_may_be_cut() -> None:
    """The NULL probe: once a later probe heard anything. A probe that sent a payload: only
    once connected ``CUT_GRACE`` ago and a later probe hard-matched."""
    answered, matched = Exchange(data=bytearray(b"400")), Exchange(data=bytearray(b"x"), hard=True)
    assert _may_cut(Exchange(), [answered], True, 0.0)
    assert not _may_cut(Exchange(), [Exchange()], True, 0.0)
    sent = Exchange(sent_at=0.0)
    assert not _may_cut(sent, [answered], False, 5 * CUT_GRACE)  # names nothing
    assert not _may_cut(sent, [matched], False, CUT_GRACE / 2)  # too early
    assert _may_cut(sent, [matched], False, CUT_GRACE)
    assert not _may_cut(Exchange(), [matched], False, 99.0)  # never connected: says nothing
    assert not _may_cut(Exchange(data=bytearray(b"a"), sent_at=0.0), [matched], False, 9.0)


async def slow_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTPS that answers GET (and a ClientHello sent inside TLS) 0.3 s late but anything
    else at once with a 400: as nginx does when, on a loaded machine, the connections of
    the probes that name HTTP finish their handshakes last (issue 13: an intermittent
    ``ssl`` without ``http`` on 443 with the built-in database)."""
    request = await reader.read(1000)
    if request.startswith((b"GET ", b"\x16")):
        await asyncio.sleep(0.3)
    status = b"200 OK" if request.startswith(b"GET ") else b"400 Bad Request"
    writer.write(b"HTTP/1.1 " + status + b"\r\nServer: nginx/1.22.1\r\n\r\n")
    await writer.drain()


def test_a_later_answer_without_a_match_does_not_cut_a_probe(
    server_context: ssl.SSLContext,
) -> None:
    """A probe that sent its payload is not given up because a later probe got an answer
    that names nothing: that answer only says the server is up, not that this probe's
    request will go unanswered. The port gets what nmap's serial order gives."""
    options = DetectOptions(max_wait=2.0, port_budget=10.0)
    found, _ = detect(slow_http, options, context=server_context)
    serial, _ = detect(slow_http, dataclasses.replace(options, parallel_probes=1),
                       context=server_context)  # fmt: skip
    assert serial is not None
    assert (serial.full_name, serial.product) == ("ssl/http", "nginx")
    assert found is not None
    assert (found.full_name, found.product, found.probe) == ("ssl/http", "nginx", serial.probe)


def test_tls_with_a_banner_inside(server_context: ssl.SSLContext) -> None:
    found, _ = detect(banner, DetectOptions(max_wait=1.0), context=server_context)
    assert found is not None
    assert found.full_name == "ssl/ssh"


def test_stage_names_unmatched_ports_from_the_table() -> None:
    """A port where nothing matched keeps its usual name, marked as a guess (conf 3)."""

    async def run() -> tuple[list[Result], Report]:
        async with serve(silent) as port, serve(banner) as ssh:
            opened = [Result(host=LOCAL, port=p, state=State.OPEN, reason=Reason.SYN_ACK)
                      for p in (port, ssh)]  # fmt: skip
            report = Report(engine="test", key=1, started=0.0)
            for result in opened:
                report.add(result)
            stage = ServiceStage(builtin_database(), DetectOptions(max_wait=0.2, intensity=0))
            held = {(r.host, r.port): r for r in opened}
            out = [r async for batch in stage.run(held, report) for r in batch]
            return out, report

    out, report = asyncio.run(run())
    by_port = {r.port: r.service for r in out}
    assert len(by_port) == 2
    services = sorted(by_port.items())
    silent_service = next(s for _, s in services if s is not None and s.method == "table")
    assert silent_service.confidence == 3
    assert {s.name for _, s in services if s is not None} >= {"ssh"}
    assert all(r.service is not None for r in report.results)  # the report has them too
    assert set(report.services) == {(LOCAL, p) for p in by_port}
