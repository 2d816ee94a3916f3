"""portscout's own signatures, for hosts without nmap's file: a dozen protocols, each
probe and pattern written from the protocol's specification (cited beside it), none taken
from ``nmap-service-probes``. Output says ``database: built-in`` when these were used.

Service names and product names are spelled as nmap spells them (``ssh``, ``OpenSSH``,
``Apache httpd``) so that results compare with nmap's. Core: data and a builder only.
"""

from __future__ import annotations

import re
import struct

from portscout.services.probes import (
    Match,
    ProbeDatabase,
    ServiceProbe,
    VersionTemplate,
    parse_port_list,
)

SOURCE = "built-in"
_I, _S = re.IGNORECASE, re.DOTALL
# HTTP header lines before the one a pattern looks for: linear (each line is consumed one
# way), so a hostile response cannot make it backtrack (RFC 9112 section 2.1 message form).
_HEADERS = rb"^HTTP/1\.[01] \d\d\d[^\r\n]*\r\n(?:[^\r\n]*\r\n)*?"


def _m(service: str, pattern: bytes, flags: int = 0, *, soft: bool = False, **fields: str) -> Match:
    cpes = tuple(v for k, v in sorted(fields.items()) if k.startswith("cpe"))
    values = {k: v for k, v in fields.items() if not k.startswith("cpe")}
    return Match(service, pattern, flags=flags, soft=soft,
                 template=VersionTemplate(**values, cpes=cpes))  # fmt: skip


def tls_client_hello() -> bytes:
    """A TLS 1.2 ClientHello (RFC 5246 7.4.1.2) with the suites and extensions (RFC 8422
    groups and point formats, RFC 5246 signature_algorithms) a current server accepts:
    any TLS server answers it with a ServerHello or an alert."""
    suites = [0xC02F, 0xC02B, 0xC030, 0xC02C, 0xCCA8, 0xCCA9, 0x009C, 0x009D, 0x002F, 0x0035]
    groups = [0x001D, 0x0017, 0x0018]  # x25519, secp256r1, secp384r1
    algorithms = [0x0403, 0x0503, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0201]

    def extension(kind: int, body: bytes) -> bytes:
        return struct.pack("!HH", kind, len(body)) + body

    def u16_list(values: list[int]) -> bytes:
        return struct.pack("!H", 2 * len(values)) + b"".join(struct.pack("!H", v) for v in values)

    extensions = (
        extension(0x000A, u16_list(groups))
        + extension(0x000B, b"\x01\x00")
        + extension(0x000D, u16_list(algorithms))
    )
    body = (
        b"\x03\x03"
        + b"portscout-tls-probe-random-bytes!"[:32]
        + b"\x00"
        + u16_list(suites)
        + b"\x01\x00"
        + struct.pack("!H", len(extensions))
        + extensions
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


def postgres_startup() -> bytes:
    """A protocol 3.0 StartupMessage (PostgreSQL docs, "Message Formats") for a user that
    should not exist: the server answers with an authentication request or an error."""
    params = b"user\x00portscout\x00database\x00portscout\x00\x00"
    return struct.pack("!ii", 8 + len(params), 196608) + params


def mqtt_connect() -> bytes:
    """An MQTT 3.1.1 CONNECT (OASIS MQTT 3.1.1, 3.1), clean session, client id portscout."""
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c"
    payload = b"\x00\x09portscout"
    return b"\x10" + bytes([len(variable) + len(payload)]) + variable + payload


def _banner_matches() -> list[Match]:
    """Services that speak first (the NULL probe): SSH (RFC 4253 4.2), FTP (RFC 959 220
    reply), SMTP (RFC 5321 4.2), POP3 (RFC 1939 4), IMAP (RFC 9051 7.1), MySQL/MariaDB
    (the server's Initial Handshake packet, protocol 10)."""
    return [
        _m(
            "ssh",
            rb"^SSH-([\d.]+)-OpenSSH_([\w.]+)(?:[ -]([^\r\n]+))?\r?\n",
            product="OpenSSH",
            version="$2",
            info="$3 protocol $1",
            cpe="cpe:/a:openbsd:openssh:$2",
        ),
        _m("ssh", rb"^SSH-([\d.]+)-dropbear_([\w.]+)", product="Dropbear sshd", version="$2"),
        _m("ssh", rb"^SSH-([\d.]+)-([^\r\n]+)", product="$2", info="protocol $1"),
        _m(
            "ftp",
            rb"^220 \(vsFTPd ([\d.]+)\)",
            product="vsftpd",
            version="$1",
            cpe="cpe:/a:beasts:vsftpd:$1",
        ),
        _m(
            "ftp",
            rb"^220[ -]ProFTPD(?: ([\d.]+[a-z]?))? Server",
            product="ProFTPD",
            version="$1",
            cpe="cpe:/a:proftpd:proftpd:$1",
        ),
        _m("ftp", rb"^220[ -][^\r\n]*Pure-FTPd", product="Pure-FTPd"),
        _m(
            "smtp",
            rb"^220[ -](\S+) ESMTP Exim ([\d.]+)",
            product="Exim smtpd",
            version="$2",
            hostname="$1",
            cpe="cpe:/a:exim:exim:$2",
        ),
        _m("smtp", rb"^220[ -](\S+) ESMTP Postfix", product="Postfix smtpd", hostname="$1"),
        _m("smtp", rb"^220[ -](\S+) [^\r\n]*\bE?SMTP\b", hostname="$1"),
        _m("ftp", rb"^220[ -][^\r\n]*\bFTP\b", _I),
        _m("pop3", rb"^\+OK [^\r\n]*Dovecot", product="Dovecot pop3d"),
        _m("pop3", rb"^\+OK[^\r\n]*\r\n"),
        _m("imap", rb"^\* OK [^\r\n]*Dovecot", product="Dovecot imapd"),
        _m("imap", rb"^\* (?:OK|PREAUTH) [^\r\n]*\r\n"),
        _m(
            "mysql",
            rb"^.\x00\x00\x00\x0a5\.5\.5-(\d+\.\d+\.\d+)-MariaDB",
            _S,
            product="MariaDB",
            version="$1",
            cpe="cpe:/a:mariadb:mariadb:$1",
        ),
        _m(
            "mysql",
            rb"^.\x00\x00\x00\x0a(\d+\.\d+\.\d+)-MariaDB",
            _S,
            product="MariaDB",
            version="$1",
            cpe="cpe:/a:mariadb:mariadb:$1",
        ),
        _m(
            "mysql",
            rb"^.\x00\x00\x00\x0a(\d+\.\d+\.\d+)[-\x00]",
            _S,
            product="MySQL",
            version="$1",
            cpe="cpe:/a:mysql:mysql:$1",
        ),
        _m("mysql", rb"^.\x00\x00\x00\xff..[^\x00]*Host '[^']*' is not allowed", _S),
        _m("ftp", rb"^220[ -]", soft=True),
    ]


def _http_matches() -> list[Match]:
    """HTTP/1.x responses (RFC 9110 10.2.4: ``Server: product/version (comment)``)."""
    return [
        _m(
            "http",
            _HEADERS + rb"Server: nginx(?:/([\d.]+))?",
            _I,
            product="nginx",
            version="$1",
            cpe="cpe:/a:nginx:nginx:$1",
        ),
        _m(
            "http",
            _HEADERS + rb"Server: Apache(?:/([\d.]+))?(?: \(([^)\r\n]+)\))?",
            _I,
            product="Apache httpd",
            version="$1",
            info="$2",
            cpe="cpe:/a:apache:http_server:$1",
        ),
        _m(
            "http",
            _HEADERS + rb"Server: lighttpd(?:/([\d.]+))?",
            _I,
            product="lighttpd",
            version="$1",
        ),
        _m(
            "http",
            _HEADERS + rb"Server: Microsoft-IIS/([\d.]+)",
            _I,
            product="Microsoft IIS httpd",
            version="$1",
            ostype="Windows",
        ),
        _m("http", _HEADERS + rb"Server: Caddy", _I, product="Caddy httpd"),
        _m(
            "http",
            _HEADERS + rb"Server: ([^\r\n/]+)(?:/([^\s\r\n]+))?",
            _I,
            product="$1",
            version="$2",
        ),
        _m("http", rb"^HTTP/1\.[01] \d\d\d"),
    ]


def _tls_matches() -> list[Match]:
    """A TLS record (RFC 8446 5.1, RFC 5246 6.2.1) of type handshake (22) holding a
    ServerHello (2), or an alert (21): TLS, whatever the version."""
    return [
        _m("ssl", rb"^\x16\x03[\x00-\x04]..\x02", _S),
        _m("ssl", rb"^\x15\x03[\x00-\x04]\x00\x02[\x01\x02]", _S),
    ]


def _probe(name: str, payload: bytes, matches: list[Match], *, rarity: int,
           ports: str = "", sslports: str = "", wait: int = 5000,
           fallback: tuple[str, ...] = ()) -> ServiceProbe:  # fmt: skip
    return ServiceProbe(
        protocol="TCP",
        fallback=fallback,
        name=name,
        payload=payload,
        rarity=rarity,
        ports=parse_port_list(ports) if ports else frozenset(),
        sslports=parse_port_list(sslports) if sslports else frozenset(),
        totalwaitms=wait,
        matches=matches,
    )


def builtin_database() -> ProbeDatabase:
    """A fresh copy of the built-in signatures (its matchers compile on first use)."""
    null = _probe("NULL", b"", _banner_matches(), rarity=1, wait=5000)
    null.tcpwrappedms = 3000
    probes = [
        null,
        _probe(
            "TLSClientHello",
            tls_client_hello(),
            _tls_matches(),
            rarity=1,
            ports="443,465,563,636,853,989-995,4443,5061,6697,8443,8883,9443",
            fallback=("GetRequest",),  # an HTTP server answers a ClientHello with a 400
        ),
        _probe(
            "GetRequest",
            b"GET / HTTP/1.0\r\n\r\n",
            _http_matches(),
            rarity=1,
            ports="80,81,591,2080,3000,5000,8000,8008,8080,8081,8888,9000",
            sslports="443,4443,8443,9443",
        ),
        _probe(
            "RedisInfo",
            b"*1\r\n$4\r\nINFO\r\n",
            [
                _m(
                    "redis",
                    rb"^\$\d+\r\n# Server\r\n(?:[^\r\n]*\r\n)*?redis_version:([\d.]+)",
                    product="Redis key-value store",
                    version="$1",
                    cpe="cpe:/a:redislabs:redis:$1",
                ),
                _m("redis", rb"^-NOAUTH ", product="Redis key-value store", info="password"),
                _m(
                    "redis",
                    rb"^-DENIED Redis ",
                    product="Redis key-value store",
                    info="protected mode",
                ),
            ],
            rarity=5,
            ports="6379,6380",
        ),
        _probe(
            "MemcachedVersion",
            b"version\r\n",
            [
                _m(
                    "memcached",
                    rb"^VERSION ([\d.]+)\r\n",
                    product="Memcached",
                    version="$1",
                    cpe="cpe:/a:memcached:memcached:$1",
                ),
            ],
            rarity=5,
            ports="11211",
        ),
        _probe(
            "PostgresStartup",
            postgres_startup(),
            [
                _m(
                    "postgresql",
                    rb"^R\x00\x00\x00[\x08-\x40]\x00\x00\x00[\x00-\x0c]",
                    _S,
                    product="PostgreSQL DB",
                ),
                _m(
                    "postgresql",
                    rb"^E\x00\x00[\x00-\x01].S(?:FATAL|ERROR|PANIC)\x00",
                    _S,
                    product="PostgreSQL DB",
                ),
            ],
            rarity=5,
            ports="5432,5433",
        ),
        _probe(
            "MQTTConnect",
            mqtt_connect(),
            [
                _m("mqtt", rb"^\x20\x02[\x00\x01][\x00-\x05]", product="MQTT broker"),
            ],
            rarity=5,
            ports="1883",
            sslports="8883",
        ),
    ]
    return ProbeDatabase(source=SOURCE, probes=probes)
