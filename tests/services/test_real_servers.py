"""-sV against real servers (Debian's packages, which ``make test`` installs), each started
by the test on 127.0.0.1 inside the session's private namespace (``lab.servers``): the
service, the product and the version that the installed package says (``dpkg-query``),
with nmap's ``nmap-service-probes`` and with the built-in database. Through the CLI.

Outside CI a missing server skips with the reason; under ``CI=true`` the skip fails (netns).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from portscout.lab.servers import (
    SERVERS,
    ServerError,
    package_version,
    running,
    upstream_version,
)
from portscout.services.probes import ProbeDatabase

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("isolated")]


@dataclass(frozen=True, slots=True)
class Expected:
    server: str
    service: str  # full name, as the table shows it (``ssl/http``)
    nmap_product: str  # with nmap's file
    builtin_product: str  # with the built-in database
    versioned: bool = True  # the version can be read without logging in


EXPECTED = {
    21: Expected("vsftpd", "ftp", "vsftpd", "vsftpd"),
    22: Expected("openssh", "ssh", "OpenSSH", "OpenSSH"),
    25: Expected("exim", "smtp", "Exim smtpd", "Exim smtpd"),
    80: Expected("nginx", "http", "nginx", "nginx"),
    443: Expected("nginx", "ssl/http", "nginx", "nginx"),
    3306: Expected("mariadb", "mysql", "MySQL", "MariaDB"),
    # PostgreSQL sends its version only after authentication: neither database can name
    # it (nmap's file says "9.6.0 or later" from a source line number in an error).
    5432: Expected("postgresql", "postgresql", "PostgreSQL DB", "PostgreSQL DB", False),
    6379: Expected("redis", "redis", "Redis key-value store", "Redis key-value store"),
    11211: Expected("memcached", "memcached", "Memcached", "Memcached"),
}


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, tuple[int, ...]]]:
    """Every server of ``lab.servers``, started once for the module."""
    missing = {n: s.missing() for n, s in SERVERS.items() if s.missing()}
    if missing:
        pytest.skip(f"servers not installed (make test installs them): {missing}")
    try:
        with running(list(SERVERS)) as ports:
            yield ports
    except ServerError as exc:
        pytest.fail(str(exc))


def detect(ports: dict[str, tuple[int, ...]], *extra: str) -> dict[int, dict[str, object]]:
    """One ``portscout -sV`` run over every server's ports; port -> JSON service object."""
    port_list = ",".join(str(p) for group in ports.values() for p in group)
    done = subprocess.run(
        [sys.executable, "-m", "portscout", "127.0.0.1", "-p", port_list, "-Pn", "-sV",
         "--no-db", "-oJ", "-", "--no-fold", *extra],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    return {r["port"]: r["service"] for r in records if "port" in r and "service" in r}


@pytest.fixture(scope="module")
def with_nmap(
    servers: dict[str, tuple[int, ...]], nmap_db: ProbeDatabase
) -> dict[int, dict[str, object]]:
    return detect(servers)


@pytest.fixture(scope="module")
def with_builtin(servers: dict[str, tuple[int, ...]]) -> dict[int, dict[str, object]]:
    return detect(servers, "--service-probes", "built-in")


def check(found: dict[str, object] | None, expected: Expected, product: str) -> None:
    assert found is not None
    assert found["name"] == expected.service, found
    assert found["product"] == product, found
    assert found["method"] == "probed"
    if expected.versioned:
        upstream = upstream_version(package_version(SERVERS[expected.server].package))
        version = str(found.get("version", ""))
        assert re.search(rf"(?<![\w.]){re.escape(upstream)}(?![\w.])", version), (
            f"{expected.server}: installed {upstream}, reported {version!r}"
        )


@pytest.mark.parametrize("port", sorted(EXPECTED))
def test_nmap_file_names_each_real_server(with_nmap: dict[int, dict[str, object]],
                                          port: int) -> None:  # fmt: skip
    expected = EXPECTED[port]
    check(with_nmap.get(port), expected, expected.nmap_product)
    assert str(with_nmap[port]["database"]).endswith("nmap-service-probes")


@pytest.mark.parametrize("port", sorted(EXPECTED))
def test_builtin_database_names_each_real_server(with_builtin: dict[int, dict[str, object]],
                                                 port: int) -> None:  # fmt: skip
    expected = EXPECTED[port]
    check(with_builtin.get(port), expected, expected.builtin_product)
    assert with_builtin[port]["database"] == "built-in"


def test_https_certificate_is_the_one_nginx_serves(
    with_nmap: dict[int, dict[str, object]], servers: dict[str, tuple[int, ...]]
) -> None:
    certificate = with_nmap[443]["certificate"]
    assert isinstance(certificate, dict)
    assert certificate["subject"] == "CN=localhost, O=portscout test"
    assert certificate["sans"] == ["DNS:localhost"]
    assert with_nmap[443].get("alpn") == "http/1.1"


def test_upstream_version() -> None:
    assert upstream_version("1:9.2p1-2+deb12u3") == "9.2p1"
    assert upstream_version("5:7.0.15-1~deb12u1") == "7.0.15"
    assert upstream_version("4.96") == "4.96"
