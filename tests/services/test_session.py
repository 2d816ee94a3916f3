"""One port's detection as a state machine: nmap's probe order, softmatch narrowing,
tcpwrapped, TLS underneath. No sockets: responses are handed in."""

from __future__ import annotations

from portscout.services.probes import ProbeDatabase, parse_probe_file
from portscout.services.session import PortSession, Signatures, Step, probe_order

DB = rb"""Exclude 9100
Probe TCP NULL q||
tcpwrappedms 3000
softmatch ftp m|^220 |
match ssh m|^SSH-2\.0-(\S+)| p/ssh thing/ v/$1/
Probe TCP Rare q|r|
rarity 9
match rare m|^rare|
Probe TCP Common q|c|
rarity 1
match http m|^HTTP| p/web/
Probe TCP ForPort q|p|
rarity 9
ports 21,443
sslports 8443
match ssl m|^\x16\x03|
match ftp m|^220 hello (\S+)| p/hello ftpd/ v/$1/
Probe TCP Middle q|m|
rarity 5
match other m|^other|
"""


def _names(db: ProbeDatabase, port: int, *, tls: bool = False, intensity: int = 7) -> list[str]:
    return [p.name for p in probe_order(db, port, tls=tls, intensity=intensity)]


def test_probe_order_is_nmaps() -> None:
    db = parse_probe_file(DB)
    assert _names(db, 80) == ["NULL", "Common", "Middle"]
    assert _names(db, 21) == ["NULL", "ForPort", "Common", "Middle"]  # rarity 9, yet first
    assert _names(db, 8443, tls=True) == ["NULL", "ForPort", "Common", "Middle"]
    assert _names(db, 80, intensity=9) == ["NULL", "Rare", "Common", "ForPort", "Middle"]
    assert _names(db, 80, intensity=0) == ["NULL"]
    assert _names(db, 9100) == []


def test_real_file_order_for_443(nmap_db: ProbeDatabase) -> None:
    names = _names(nmap_db, 443)
    assert names[:2] == ["NULL", "SSLSessionReq"]
    inside = _names(nmap_db, 443, tls=True)
    assert inside.index("GetRequest") < inside.index("GenericLines")


def _run(session: PortSession, answers: dict[str, bytes]) -> list[str]:
    sent: list[str] = []
    while (probe := session.next_probe()) is not None:
        sent.append(probe.name)
        outcome = session.finish(probe, answers.get(probe.name, b""), closed=False, elapsed_ms=1)
        if outcome.step is not Step.NEXT:
            break
    return sent


def test_hard_match_ends_it() -> None:
    session = PortSession(Signatures(parse_probe_file(DB)), 22, intensity=7)
    probe = session.next_probe()
    assert probe is not None
    assert probe.is_null
    hit = session.check(probe, b"SSH-2.0-x1")
    assert hit is not None
    assert hit.match.service == "ssh"
    outcome = session.finish(probe, b"SSH-2.0-x1\r\n", closed=False, elapsed_ms=5)
    assert outcome.step is Step.DONE
    assert outcome.result is not None
    assert (outcome.result.name, outcome.result.version) == ("ssh", "x1")


def test_softmatch_narrows_to_probes_that_can_name_the_service() -> None:
    session = PortSession(Signatures(parse_probe_file(DB)), 21, intensity=7)
    sent = _run(session, {"NULL": b"220 welcome\r\n", "ForPort": b"220 hello v2\r\n"})
    assert sent == ["NULL", "ForPort"]
    session = PortSession(Signatures(parse_probe_file(DB)), 21, intensity=7)
    sent = _run(session, {"NULL": b"220 welcome\r\n"})
    assert sent == ["NULL", "ForPort"]  # Common and Middle have no ftp line of their own
    final = session.final()
    assert final is not None
    assert final.name == "ftp"


def test_softmatch_alone_is_the_answer() -> None:
    db = parse_probe_file(b"Probe TCP NULL q||\nsoftmatch ftp m|^220 |\n")
    session = PortSession(Signatures(db), 21, intensity=7)
    probe = session.next_probe()
    assert probe is not None
    outcome = session.finish(probe, b"220 hi\r\n", closed=False, elapsed_ms=1)
    assert outcome.step is Step.DONE
    assert outcome.result is not None
    assert outcome.result.soft
    assert outcome.result.name == "ftp"


def test_close_before_any_byte_is_tcpwrapped() -> None:
    session = PortSession(Signatures(parse_probe_file(DB)), 80, intensity=7)
    probe = session.next_probe()
    assert probe is not None
    outcome = session.finish(probe, b"", closed=True, elapsed_ms=10)
    assert outcome.step is Step.DONE
    assert outcome.result is not None
    assert outcome.result.name == "tcpwrapped"
    late = PortSession(Signatures(parse_probe_file(DB)), 80, intensity=7)
    probe = late.next_probe()
    assert probe is not None
    assert late.finish(probe, b"", closed=True, elapsed_ms=4000).step is Step.NEXT


def test_ssl_restarts_inside_tls_and_names_ssl_http() -> None:
    session = PortSession(Signatures(parse_probe_file(DB)), 443, intensity=7)
    assert _run(session, {"ForPort": b"\x16\x03\x01"}) == ["NULL", "ForPort"]
    probe = session.next_probe()
    assert probe is not None
    assert probe.name == "Common"
    session.start_tls()
    assert [p.name for p in session._queue] == ["NULL", "Common", "Middle"]
    probe = session.next_probe()
    assert probe is not None
    assert session.finish(probe, b"", closed=False, elapsed_ms=1).step is Step.NEXT
    probe = session.next_probe()
    assert probe is not None
    outcome = session.finish(probe, b"HTTP/1.1 200 OK\r\n", closed=False, elapsed_ms=1)
    assert outcome.result is not None
    assert outcome.result.full_name == "ssl/http"


def test_tls_with_nothing_inside_is_ssl() -> None:
    session = PortSession(Signatures(parse_probe_file(DB)), 443, intensity=0)
    _run(session, {"ForPort": b"\x16\x03\x01"})
    session.start_tls()
    assert _run(session, {}) == ["NULL"]  # ForPort names 8443 inside TLS, not 443
    final = session.final()
    assert final is not None
    assert final.full_name == "ssl"
    failed = PortSession(Signatures(parse_probe_file(DB)), 443, intensity=0)
    _run(failed, {"ForPort": b"\x16\x03\x01"})
    result = failed.tls_failed().result
    assert result is not None
    assert result.name == "ssl"
