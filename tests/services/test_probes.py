"""The probe file parser: hand-written cases for each directive, then the real file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from portscout.errors import UsageError
from portscout.services.probes import (
    ProbeDatabase,
    ProbeFileError,
    find_probe_file,
    load_probe_file,
    parse_match_line,
    parse_port_list,
    parse_probe_file,
    unescape,
)

SMALL = rb"""# a comment
Exclude T:9100-9102,U:53
Probe TCP NULL q||
totalwaitms 6000
tcpwrappedms 3000
match ssh m|^SSH-([\d.]+)-OpenSSH_([\w._-]+)\r?\n| p/OpenSSH/ v/$2/ i/protocol $1/ cpe:/a:o:o:$2/
softmatch ftp m=^220[ -]=i

Probe TCP GetRequest q|GET / HTTP/1.0\r\n\r\n|
rarity 1
ports 80-82,8080
sslports 443
fallback NULL,Other
match http m@^HTTP/1\.[01] \d\d\d@s p|thing| d/router/ o/Linux/ h/$1/ cpe:/o:linux:linux_kernel/a
Probe UDP Raw q|\x00\xffA\0\t\\| no-payload
"""


def test_small_file_parses_every_directive() -> None:
    db = parse_probe_file(SMALL, source="small")
    assert db.source == "small"
    assert db.excluded == frozenset({9100, 9101, 9102})
    null, get, raw = db.probes
    assert null.is_null
    assert null.totalwaitms == 6000
    assert null.tcpwrappedms == 3000
    ssh, ftp = null.matches
    assert (ssh.service, ssh.soft, ssh.line) == ("ssh", False, 6)
    assert ssh.template.product == "OpenSSH"
    assert ssh.template.version == "$2"
    assert ssh.template.info == "protocol $1"
    assert ssh.template.cpes == ("cpe:/a:o:o:$2",)
    assert (ftp.service, ftp.soft, ftp.flags) == ("ftp", True, re.IGNORECASE)
    assert ftp.pattern == b"^220[ -]"
    assert get.payload == b"GET / HTTP/1.0\r\n\r\n"
    assert get.rarity == 1
    assert get.ports == frozenset({80, 81, 82, 8080})
    assert get.sslports == frozenset({443})
    assert get.fallback == ("NULL", "Other")
    http = get.matches[0]
    assert http.flags == re.DOTALL
    assert http.pattern == rb"^HTTP/1\.[01] \d\d\d"
    assert (http.template.product, http.template.devicetype) == ("thing", "router")
    assert (http.template.ostype, http.template.hostname) == ("Linux", "$1")
    assert http.template.cpes == ("cpe:/o:linux:linux_kernel",)
    assert raw.protocol == "UDP"
    assert raw.no_payload
    assert not raw.is_null
    assert raw.payload == b"\x00\xffA\x00\t\\"
    assert db.get("TCP", "GetRequest") is get
    assert db.null_probe() is null


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\0\a\b\f\n\r\t\v", b"\x00\x07\x08\x0c\x0a\x0d\x09\x0b"),
        (r"\x41\xfF\\", b"A\xff\\"),
        (r"a\|b", b"a|b"),
        ("\xe9", b"\xe9"),  # a Latin-1 character is its byte
    ],
)
def test_unescape(text: str, expected: bytes) -> None:
    assert unescape(text) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"match x m|a|\n", "small:1: 'match' before the first Probe line"),
        (b"Probe TCP X q|a\n", "small:1: probe X: unterminated payload"),
        (b"Probe TCP X q|a|\nrarity 12\n", "small:2: rarity must be 1-9, got '12'"),
        (b"Probe TCP X q|a|\nports 90-80\n", "small:2: bad port range '90-80'"),
        (b"Probe TCP X q|a|\nmatch x m|a| p/x\n", "small:2: unterminated version field 'p' (x)"),
        (b"Probe TCP X q|a|\nmatch x m|a| z/x/\n", "small:2: bad version field at 'z/x/' (x)"),
        (b"Probe TCP X q|a|\nwhatever 1\n", "small:2: unknown directive 'whatever'"),
        (b"Probe TCP X q|\\xZZ|\n", "small:1: bad \\x escape in '\\xZZ'"),
    ],
)
def test_bad_lines_are_one_line_usage_errors(data: bytes, message: str) -> None:
    with pytest.raises(ProbeFileError) as info:
        parse_probe_file(data, source="small")
    assert str(info.value) == message
    assert isinstance(info.value, UsageError)


def test_a_pattern_that_does_not_compile_never_matches_and_is_listed() -> None:
    db = parse_probe_file(b"Probe TCP NULL q||\nmatch x m|a(b|\nmatch y m|^ok|\n")
    bad, good = db.probes[0].matches
    assert bad.regex is None
    assert bad.error is not None
    assert "missing )" in bad.error
    assert good.regex is not None
    assert db.failed_patterns() == [(bad, bad.error)]


def test_pcre_escapes_python_lacks_are_rewritten() -> None:
    match = parse_match_line(r"x m|^a\e\hb\H|")
    assert match.regex is not None
    assert match.regex.match(b"a\x1b\tbZ")


def test_port_list() -> None:
    assert parse_port_list("1, 3-5") == frozenset({1, 3, 4, 5})
    assert parse_port_list("T:1,U:2,3", tcp_only=True) == frozenset({1})


def test_file_search_order(tmp_path: Path) -> None:
    (tmp_path / "nmap-service-probes").write_bytes(SMALL)
    assert find_probe_file({"NMAPDIR": str(tmp_path)}, dirs=()) == tmp_path / "nmap-service-probes"
    assert find_probe_file({}, dirs=(str(tmp_path),)) == tmp_path / "nmap-service-probes"
    assert find_probe_file({}, dirs=()) is None
    assert find_probe_file({}, "given") == Path("given")


def test_unreadable_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ProbeFileError, match=r"cannot read probe file '.*nope'"):
        load_probe_file(tmp_path / "nope")


def test_real_file_parses_and_compiles(nmap_db: ProbeDatabase) -> None:
    """Debian's file: ~150 probes, ~12,000 lines; every pattern compiles with Python's re."""
    assert len(nmap_db.probes) > 100
    lines = list(nmap_db.matches())
    assert len(lines) > 10_000
    assert sum(m.soft for m in lines) > 100
    null = nmap_db.null_probe()
    assert null is not None
    assert null.totalwaitms == 6000
    assert null.tcpwrappedms == 3000
    get = nmap_db.get("TCP", "GetRequest")
    assert get is not None
    assert get.payload == b"GET / HTTP/1.0\r\n\r\n"
    assert 80 in get.ports
    assert 443 in get.sslports
    failed = nmap_db.failed_patterns()
    assert len(failed) <= len(lines) // 100, failed[:5]
    assert 9100 in nmap_db.excluded
