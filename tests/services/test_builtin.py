"""The built-in signatures: each protocol's answer, as its specification describes it,
is named with the product and version nmap would give."""

from __future__ import annotations

import struct

import pytest

from portscout.services.builtin import (
    SOURCE,
    builtin_database,
    mqtt_connect,
    postgres_startup,
    tls_client_hello,
)
from portscout.services.session import PortSession, Signatures, Step

MARIADB = b"\x5b\x00\x00\x00\x0a5.5.5-10.11.6-MariaDB-0+deb12u1\x00\x08\x00\x00\x00abcdefgh\x00"
REDIS_INFO = b"$3000\r\n# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n"
PG_ERROR = b"E\x00\x00\x00\x60SFATAL\x00VFATAL\x00C28000\x00Mrole does not exist\x00\x00"
HTTP_APACHE = b"HTTP/1.1 200 OK\r\nDate: Mon\r\nServer: Apache/2.4.57 (Debian)\r\n\r\n"


@pytest.mark.parametrize(
    ("port", "answers", "expected"),
    [
        (22, {"NULL": b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"},
         ("ssh", "OpenSSH", "9.2p1")),
        (21, {"NULL": b"220 (vsFTPd 3.0.3)\r\n"}, ("ftp", "vsftpd", "3.0.3")),
        (21, {"NULL": b"220 ProFTPD Server (Debian) [::ffff:127.0.0.1]\r\n"},
         ("ftp", "ProFTPD", None)),
        (25, {"NULL": b"220 box ESMTP Exim 4.96 Mon, 01 Jan 2024\r\n"},
         ("smtp", "Exim smtpd", "4.96")),
        (110, {"NULL": b"+OK Dovecot (Debian) ready.\r\n"}, ("pop3", "Dovecot pop3d", None)),
        (143, {"NULL": b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n"},
         ("imap", "Dovecot imapd", None)),
        (3306, {"NULL": MARIADB}, ("mysql", "MariaDB", "10.11.6")),
        (80, {"GetRequest": b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\r\n"},
         ("http", "nginx", "1.22.1")),
        (8080, {"GetRequest": HTTP_APACHE}, ("http", "Apache httpd", "2.4.57")),
        (6379, {"RedisInfo": REDIS_INFO}, ("redis", "Redis key-value store", "7.0.15")),
        (6379, {"RedisInfo": b"-NOAUTH Authentication required.\r\n"},
         ("redis", "Redis key-value store", None)),
        (11211, {"MemcachedVersion": b"VERSION 1.6.18\r\n"}, ("memcached", "Memcached", "1.6.18")),
        (5432, {"PostgresStartup": PG_ERROR}, ("postgresql", "PostgreSQL DB", None)),
        (1883, {"MQTTConnect": b"\x20\x02\x00\x00"}, ("mqtt", "MQTT broker", None)),
    ],
)  # fmt: skip
def test_builtin_names_the_service(
    port: int, answers: dict[str, bytes], expected: tuple[str, str | None, str | None]
) -> None:
    session = PortSession(Signatures(builtin_database()), port, intensity=7)
    while (probe := session.next_probe()) is not None:
        outcome = session.finish(probe, answers.get(probe.name, b""), closed=False, elapsed_ms=1)
        if outcome.step is Step.DONE:
            break
        assert outcome.step is Step.NEXT
    result = outcome.result
    assert result is not None
    assert (result.name, result.product, result.version) == expected
    assert result.database == SOURCE


def test_tls_server_hello_starts_tls() -> None:
    session = PortSession(Signatures(builtin_database()), 443, intensity=7)
    null = session.next_probe()
    assert null is not None
    assert session.finish(null, b"", closed=False, elapsed_ms=1).step is Step.NEXT
    hello = session.next_probe()
    assert hello is not None
    assert hello.name == "TLSClientHello"
    server_hello = b"\x16\x03\x03\x00\x5a\x02\x00\x00\x56\x03\x03" + bytes(32)
    assert session.finish(hello, server_hello, closed=False, elapsed_ms=1).step is Step.START_TLS


def test_payloads_are_well_formed() -> None:
    hello = tls_client_hello()
    (length,) = struct.unpack("!H", hello[3:5])
    assert hello[:3] == b"\x16\x03\x01"
    assert length == len(hello) - 5
    assert hello[5] == 1
    assert int.from_bytes(hello[6:9], "big") == length - 4
    startup = postgres_startup()
    assert struct.unpack("!ii", startup[:8]) == (len(startup), 196608)
    connect = mqtt_connect()
    assert connect[0] == 0x10
    assert connect[1] == len(connect) - 2


def test_every_builtin_pattern_compiles() -> None:
    db = builtin_database()
    assert db.failed_patterns() == []
    assert db.source == "built-in"
