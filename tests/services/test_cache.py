"""The prepared probe file on disk (``services.cache``): the same database back, a new
one whenever the probe file (or the cache) is not what was stored, and the patterns that
do not compile remembered so that ``-d`` does not compile them all again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from portscout.services import cache, probes
from portscout.services.cache import Prepared, prepare, record_failures
from portscout.services.match import first_bytes
from portscout.services.probes import ProbeDatabase, find_probe_file

SMALL = b"""Probe TCP NULL q||
totalwaitms 6000
match ssh m|^SSH-([\\d.]+)-OpenSSH_([\\w.]+)| p/OpenSSH/ v/$2/ i/protocol $1/ cpe:/a:o:o:$2/
softmatch ftp m|^220 |i
match broken m|^(unclosed| p/never/
Probe TCP GetRequest q|GET / HTTP/1.0\\r\\n\\r\\n|
rarity 1
ports 80,8080-8081
sslports 443
fallback NULL
match http m|^HTTP/1\\.[01] \\d\\d\\d .*\\r\\nServer: nginx/([\\d.]+)|s p/nginx/ v/$1/
"""


def described(database: ProbeDatabase) -> list[object]:
    """Everything a scan reads from a database, as plain values."""
    return [
        (p.protocol, p.name, p.payload, p.no_payload, p.rarity, p.ports, p.sslports,
         p.totalwaitms, p.tcpwrappedms, p.fallback,
         [(m.service, m.pattern, m.flags, m.soft, m.template, m.line) for m in p.matches])
        for p in database.probes
    ]  # fmt: skip


def parsed_again(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records each parse of a probe file (a cache miss)."""
    calls: list[Path] = []
    original = probes.load_probe_file

    def counting(path: Path) -> ProbeDatabase:
        calls.append(path)
        return original(path)

    monkeypatch.setattr(probes, "load_probe_file", counting)
    return calls


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "nmap-service-probes"
    path.write_bytes(SMALL)
    return path


def test_the_cache_gives_the_same_database(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses = parsed_again(monkeypatch)
    first = prepare(small, tmp_path / "cache")
    second = prepare(small, tmp_path / "cache")
    assert parses == [small]  # the second came from the cache
    assert described(second.database) == described(first.database)
    assert second.database.source == str(small)
    assert second.database.excluded == first.database.excluded
    lines = list(second.database.matches())
    assert [second.first[m] for m in lines] == [first_bytes(m.pattern, m.flags) for m in lines]
    assert second.first[lines[0]] == frozenset(b"S")


def test_the_real_file_round_trips(nmap_db: ProbeDatabase, tmp_path: Path) -> None:
    path = find_probe_file(os.environ)
    assert path is not None
    prepare(path, tmp_path)
    again = prepare(path, tmp_path)
    assert described(again.database) == described(nmap_db)
    assert len(again.first) == sum(1 for _ in nmap_db.matches())


@pytest.mark.parametrize("change", ["content", "mtime", "garbage", "group-writable", "no-dir"])
def test_a_cache_that_does_not_fit_is_not_used(
    change: str, small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "cache"
    prepare(small, directory)
    (stored,) = directory.iterdir()
    if change == "content":
        small.write_bytes(SMALL.replace(b"p/nginx/", b"p/NGINX/"))
    elif change == "mtime":
        os.utime(small, ns=(1, 1))
    elif change == "garbage":
        stored.write_bytes(b"\x00not marshal")
    elif change == "group-writable":
        stored.chmod(0o620)
    else:
        directory = tmp_path / "file-in-the-way"
        directory.write_text("")
    parses = parsed_again(monkeypatch)
    again = prepare(small, directory)
    assert parses == [small]
    product = list(again.database.matches())[-1].template.product
    assert product == ("NGINX" if change == "content" else "nginx")
    if change not in ("group-writable", "no-dir"):
        parses.clear()
        prepare(small, directory)  # rewritten: the next start is warm again
        assert parses == []


def test_failures_are_remembered_without_compiling(small: Path, tmp_path: Path) -> None:
    cold = prepare(small, tmp_path)
    assert not cold.failures_known
    found = cold.failures()  # what -d does: compiles every pattern
    assert [(m.service, m.line) for m, _ in found] == [("broken", 5)]
    record_failures(small, tmp_path, cold)
    warm = prepare(small, tmp_path)
    assert warm.failures_known
    assert [(m.service, m.line) for m, _ in warm.failures()] == [("broken", 5)]
    assert "missing )" in warm.failures()[0][1]
    assert all(m._regex is None for m in warm.database.matches())  # none compiled
    assert [m.service for m in warm.database.matches() if m.regex is None] == ["broken"]


def test_no_directory_means_no_cache(small: Path) -> None:
    prepared = prepare(small, None)
    assert isinstance(prepared, Prepared)
    assert not prepared.failures_known


def test_cache_dir_follows_xdg() -> None:
    assert cache.cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/portscout")
    assert cache.cache_dir({"HOME": "/home/u"}) == Path("/home/u/.cache/portscout")


def test_two_versions_sharing_a_cache_stay_warm(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two checkouts (or versions) of portscout with one cache directory: each keeps its
    own file, so neither makes the other's start cold."""
    for version in ("1.0", "2.0"):
        monkeypatch.setattr(cache, "__version__", version)
        prepare(small, tmp_path)
    parses = parsed_again(monkeypatch)
    for version in ("1.0", "2.0"):
        monkeypatch.setattr(cache, "__version__", version)
        prepare(small, tmp_path)
    assert parses == []
    assert len(list(tmp_path.glob("service-probes-*.marshal"))) == 2
