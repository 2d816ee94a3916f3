"""Matching: pattern analysis (sound: never rules out a real match), the index against
nmap's plain loop on the real file, nmap's order, and version templates."""

from __future__ import annotations

import re

import pytest

from portscout.services.match import (
    MAX_MATCH_BYTES,
    Matcher,
    PatternFacts,
    analyse,
    first_bytes,
    service_from_hit,
    substitute,
)
from portscout.services.probes import Match, ProbeDatabase, parse_match_line, parse_probe_file

BANNERS = [
    b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n",
    b"220 (vsFTPd 3.0.3)\r\n",
    b"220 ProFTPD Server (Debian) [::ffff:127.0.0.1]\r\n",
    b"220 mail.example.org ESMTP Exim 4.96 Mon, 01 Jan 2024 00:00:00 +0000\r\n",
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: text/html\r\n\r\n<html>",
    b"HTTP/1.1 404 Not Found\r\nDate: Mon\r\nServer: Apache/2.4.57 (Debian)\r\n\r\n",
    b"-NOAUTH Authentication required.\r\n",
    b"+OK Dovecot ready.\r\n",
    b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n",
    b"J\x00\x00\x00\n5.5.5-10.11.6-MariaDB-0+deb12u1\x00\x08\x00\x00\x00abcdefgh\x00\xfe\xf7",
    b"\x15\x03\x01\x00\x02\x02\x28",
    bytes(range(256)),
    b"\x00" * 64,
    b"ok",
]


@pytest.mark.parametrize(
    ("pattern", "flags", "facts"),
    [
        (rb"^SSH-([\d.]+)-", 0, PatternFacts(frozenset(b"S"), b"SSH-", False)),
        (
            rb"^HTTP/1\.[01] \d+.*\r\nServer: nginx",
            re.S,
            PatternFacts(frozenset(b"H"), b"\r\nServer: nginx", False),
        ),
        (rb"^220 .*ftp", re.I, PatternFacts(frozenset(b"2"), b"220 ", True)),
        (rb"^a?bcd", 0, PatternFacts(None, b"bcd", False)),
        (rb"^ab*cde", 0, PatternFacts(frozenset(b"a"), b"cde", False)),
        (rb"^ab+cd", 0, PatternFacts(frozenset(b"a"), b"ab", False)),
        (rb"^x|yzzz", 0, PatternFacts(None, b"", False)),
        (rb"^(?i)Hello", 0, PatternFacts(None, b"hello", True)),
        (rb"^\x16\x03\0", 0, PatternFacts(frozenset({0x16}), b"\x16\x03\x00", False)),
        (rb"^\d\d\d HELLO", 0, PatternFacts(None, b" HELLO", False)),
        (rb"notanchored", 0, PatternFacts(None, b"notanchored", False)),
        (rb"^a{2}bc", 0, PatternFacts(frozenset(b"a"), b"bc", False)),
        (rb"^a{0,2}bc", 0, PatternFacts(None, b"bc", False)),
        (rb"^[ab]cd(e|f)gh", 0, PatternFacts(None, b"cd", False)),
        (rb"^\Qab", 0, PatternFacts(None, b"", False)),  # an escape it does not model
        (rb"^\1ab", 0, PatternFacts(None, b"", False)),
    ],
)
def test_analyse(pattern: bytes, flags: int, facts: PatternFacts) -> None:
    assert analyse(pattern, flags) == facts


def _corpus(matches: list[Match]) -> list[bytes]:
    """Banners, plus responses built around each pattern's required literal (those
    reach the regex through the index, so both paths get exercised)."""
    extra: list[bytes] = []
    for match in matches[::29]:
        required = analyse(match.pattern, match.flags).required
        extra += [required, b"HTTP/1.1 200 OK\r\n" + required + b"\r\n\r\n"]
    return BANNERS + extra


@pytest.mark.parametrize("probe_name", ["NULL", "GetRequest"])
def test_index_agrees_with_the_plain_loop_on_the_real_file(
    nmap_db: ProbeDatabase, probe_name: str
) -> None:
    probe = nmap_db.get("TCP", probe_name)
    assert probe is not None
    null = nmap_db.null_probe()
    assert null is not None
    lines = probe.matches + ([] if probe is null else null.matches)
    matcher = Matcher(lines)
    found = 0
    for response in _corpus(probe.matches):
        fast, plain = matcher.find(response), matcher.find_plain(response)
        assert (fast and (fast.match, fast.groups)) == (plain and (plain.match, plain.groups))
        found += fast is not None
    assert found > 50


def test_facts_hold_for_every_real_match(nmap_db: ProbeDatabase) -> None:
    """Soundness: whenever a real pattern matches a corpus response, its facts hold."""
    null = nmap_db.null_probe()
    assert null is not None
    checked = 0
    for match in null.matches:
        facts = analyse(match.pattern, match.flags)
        regex = match.regex
        assert regex is not None
        for response in BANNERS:
            if regex.search(response):
                checked += 1
                hay = response.lower() if facts.icase else response
                assert facts.required in hay, match
                assert facts.first is None or response[0] in facts.first, match
    assert checked > 5


def test_first_bytes_never_contradicts_analyse(nmap_db: ProbeDatabase) -> None:
    """The cheap first-byte index (every line of a matcher) is analyse's first byte, or
    more precise where analyse gives up on something past the first atom; never other."""
    known = 0
    for match in nmap_db.matches():
        cheap, full = first_bytes(match.pattern, match.flags), analyse(match.pattern, match.flags)
        assert full.first is None or cheap == full.first, match
        known += cheap is not None
    assert known > 10_000
    assert first_bytes(rb"^a|b") is None  # an alternative at the top: no first byte
    assert first_bytes(rb"^a*b") is None
    assert first_bytes(rb"^(?:a)") is None
    assert first_bytes(rb"^x", re.IGNORECASE) == frozenset(b"xX")


def _db() -> ProbeDatabase:
    return parse_probe_file(
        rb"""Probe TCP NULL q||
match nullsvc m|^null|
Probe TCP Base q|x|
match basesvc m|^base|
Probe TCP Probe q|y|
fallback Base
softmatch soft m|^s|
softmatch other m|^so|
match hard m|^sof(t)|
match late m|^s|
"""
    )


def test_first_hard_match_wins_over_an_earlier_softmatch() -> None:
    db = _db()
    probe, base, null = db.get("TCP", "Probe"), db.get("TCP", "Base"), db.null_probe()
    assert probe is not None
    assert base is not None
    assert null is not None
    matcher = Matcher(probe.matches + base.matches + null.matches)
    hit = matcher.find(b"soft")
    assert hit is not None
    assert hit.match.service == "hard"
    assert hit.groups == (b"t",)
    soft = matcher.find(b"sox")
    assert soft is not None
    assert soft.match.service == "late"
    only_soft = Matcher(probe.matches[:2]).find(b"so")
    assert only_soft is not None
    assert only_soft.soft
    assert only_soft.match.service == "soft"
    fallback = matcher.find(b"base")
    assert fallback is not None
    assert fallback.match.service == "basesvc"
    assert matcher.find(b"null") is not None
    assert matcher.find(b"") is None


def test_response_is_cut_before_matching() -> None:
    match = parse_match_line(r"x m|^a+b$|")
    matcher = Matcher([match])
    assert matcher.find(b"a" * 10 + b"b") is not None
    assert matcher.find(b"a" * MAX_MATCH_BYTES + b"b") is None


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$1", "9.2p1"),
        ("v$2x", "vx"),  # an empty group
        ("$9", None),  # no such group: empty field
        ('$SUBST(1,".","_")', "9_2p1"),
        ("$P(3)", "ab"),
        ('$I(4,">")', "258"),
        ('$I(4,"<")', "513"),
        ("$3", "a\\x00b"),
        ("plain", "plain"),
        (None, None),
    ],
)
def test_substitute(template: str | None, expected: str | None) -> None:
    groups = (b"9.2p1", None, b"a\x00b", b"\x01\x02")
    assert substitute(template, groups) == expected


def test_service_from_hit_fills_every_field() -> None:
    match = parse_match_line(
        r"ssh m|^SSH-([\d.]+)-OpenSSH_(\S+)| p/OpenSSH/ v/$2/ i/protocol $1/ o/Linux/"
        r" h/box/ d/router/ cpe:/a:openbsd:openssh:$2/ cpe:/o:linux:linux_kernel/a"
    )
    hit = Matcher([match]).find(b"SSH-2.0-OpenSSH_9.2p1\r\n")
    assert hit is not None
    service = service_from_hit(hit, probe="NULL", database="db", tunnel="ssl")
    assert service.full_name == "ssl/ssh"
    assert (service.product, service.version, service.info) == ("OpenSSH", "9.2p1", "protocol 2.0")
    assert (service.ostype, service.hostname, service.devicetype) == ("Linux", "box", "router")
    assert service.cpes == ("cpe:/a:openbsd:openssh:9.2p1", "cpe:/o:linux:linux_kernel")
    assert (service.method, service.confidence, service.probe) == ("probed", 10, "NULL")
    assert service.summary() == "OpenSSH 9.2p1 (protocol 2.0)"
