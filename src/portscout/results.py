"""What a scan finds: ``Result`` per probe, ``State`` and ``Reason`` as nmap spells them,
and ``Report``, the summary of a finished (or interrupted) scan.

Core module: imports only the standard library and ``errors``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import NamedTuple

IPAddress = IPv4Address | IPv6Address


class Protocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"


class State(StrEnum):
    """Port states, spelled as in nmap's output and XML."""

    OPEN = "open"
    CLOSED = "closed"
    FILTERED = "filtered"


class Reason(StrEnum):
    """Why a port got its state; the values are nmap's ``reason`` attribute strings."""

    SYN_ACK = "syn-ack"  # open: the handshake completed (connect) or a SYN-ACK came back (SYN)
    CONN_REFUSED = "conn-refused"  # closed: connect() failed with ECONNREFUSED
    RESET = "reset"  # closed: a RST came back (SYN scan)
    NO_RESPONSE = "no-response"  # filtered: nothing came back after every retry
    HOST_UNREACH = "host-unreach"  # filtered: ICMP host unreachable / EHOSTUNREACH
    NET_UNREACH = "net-unreach"  # filtered: ICMP network unreachable / ENETUNREACH
    PORT_UNREACH = "port-unreach"  # filtered for TCP: ICMP port unreachable
    PROTO_UNREACH = "proto-unreach"
    ADMIN_PROHIBITED = "admin-prohibited"  # ICMP communication administratively prohibited
    HOST_PROHIBITED = "host-prohibited"
    NET_PROHIBITED = "net-prohibited"
    TIME_EXCEEDED = "time-exceeded"
    NO_ROUTE = "no-route"  # filtered: no route or no source address for the host here
    LOCALHOST_RESPONSE = "localhost-response"
    USER_SET = "user-set"  # the user said so (-Pn: host assumed up)
    ECHO_REPLY = "echo-reply"  # host discovery: ICMP echo reply
    TIMESTAMP_REPLY = "timestamp-reply"  # host discovery: ICMP timestamp reply


@dataclass(frozen=True, slots=True)
class Certificate:
    """What a report shows of a TLS server's certificate (read from its DER by
    ``services.x509``): names as RFC 4514-like text, dates as ``YYYY-MM-DDTHH:MM:SSZ``."""

    subject: str
    issuer: str
    sans: tuple[str, ...] = ()
    not_before: str | None = None
    not_after: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    """What runs on an open port (``-sV``), as nmap's ``<service>`` element says it.

    ``method`` is ``probed`` (a probe's answer matched; ``confidence`` 10) or ``table``
    (only the port's usual name; 3). ``probe`` names the probe that matched, ``database``
    the signatures used (a path to nmap's file, or ``built-in``). ``tunnel`` is ``ssl``
    when the service spoke inside TLS; then ``certificate`` and ``alpn`` say what TLS
    showed. ``soft``: only a softmatch named it (no version). Kept beside ``Result``
    (``Report.services``), not in it: the port scan's hot path stays as it was.
    """

    name: str
    product: str | None = None
    version: str | None = None
    info: str | None = None
    hostname: str | None = None
    ostype: str | None = None
    devicetype: str | None = None
    cpes: tuple[str, ...] = ()
    method: str = "probed"
    confidence: int = 10
    probe: str | None = None
    database: str | None = None
    tunnel: str | None = None
    soft: bool = False
    certificate: Certificate | None = None
    alpn: str | None = None

    @property
    def full_name(self) -> str:
        """nmap's shown name: ``ssl/http`` for HTTP inside TLS."""
        return f"{self.tunnel}/{self.name}" if self.tunnel else self.name

    def summary(self) -> str:
        """Product, version and extra info on one line, as nmap's VERSION column."""
        parts = [p for p in (self.product, self.version) if p]
        if self.info:
            parts.append(f"({self.info})")
        return " ".join(parts)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, ``None`` fields left out (the JSON-lines ``service`` object)."""
        out: dict[str, object] = {"name": self.full_name}
        for key in ("product", "version", "info", "hostname", "ostype", "devicetype",
                    "probe", "database", "alpn"):  # fmt: skip
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.cpes:
            out["cpe"] = list(self.cpes)
        out["method"] = self.method
        out["confidence"] = self.confidence
        if self.certificate is not None:
            cert = self.certificate
            out["certificate"] = {
                "subject": cert.subject,
                "issuer": cert.issuer,
                "sans": list(cert.sans),
                "not_before": cert.not_before,
                "not_after": cert.not_after,
            }
        return out


class Result(NamedTuple):
    """The answer to one probe: one (host, port, protocol).

    A NamedTuple rather than a frozen dataclass: a full scan builds one per port, and a
    NamedTuple builds in a third of the time (0.4 us against 1.2 us). Build it with
    keywords; it is immutable and compares by value.

    ``rtt`` is the round trip of the probe that decided the state, in seconds, or ``None``
    when nothing came back. ``tries`` counts the probes sent for this port (1 without
    retransmissions). ``reason_ttl`` is the TTL/hop limit of the answer where the engine
    sees packets (SYN engine), else ``None``. ``service`` is what ``-sV`` found on an
    open port (else ``None``): a trailing default, so engines never pass it and building a
    Result costs what it did (measured: 1.54 against 1.56 us, within noise).
    """

    host: IPAddress
    port: int
    state: State
    reason: Reason
    protocol: Protocol = Protocol.TCP
    rtt: float | None = None
    tries: int = 1
    reason_ttl: int | None = None
    service: Service | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready mapping with stable keys (the JSON-lines schema); ``rtt`` in
        seconds rounded to the microsecond; ``service`` only when -sV named one."""
        out: dict[str, object] = {
            "host": str(self.host),
            "port": self.port,
            "protocol": self.protocol.value,
            "state": self.state.value,
            "reason": self.reason.value,
            "rtt": None if self.rtt is None else round(self.rtt, 6),
            "tries": self.tries,
            "reason_ttl": self.reason_ttl,
        }
        if self.service is not None:
            out["service"] = self.service.to_dict()
        return out


class ClosedPorts(NamedTuple):
    """Closed ports of one host that share a reason, without a ``Result`` each.

    A full scan's bulk: 65530 closed ports of one host travel from a worker process to the
    history database as one of these (an array of ports) instead of 65530 results.
    """

    host: IPAddress
    reason: Reason
    ports: Sequence[int]
    protocol: Protocol = Protocol.TCP


@dataclass(slots=True, kw_only=True)
class Report:
    """A scan's outcome, built incrementally while results arrive.

    ``results`` keeps every result whose state is not ``closed``: on large scans closed
    ports are the bulk (65,530 of a full scan of one host, 254,000 of a /24's top 1000) and
    are only counted (as nmap's "Not shown: N closed tcp ports"), while ``counts`` covers
    every state. ``iscan``/``ascan`` stream every result, closed ones included, for callers
    that want them all. ``latency`` holds discovery's round trip per host where one was
    timed (seconds).
    """

    engine: str
    key: int
    started: float  # wall-clock epoch seconds
    finished: float | None = None
    probes_planned: int = 0
    probes_sent: int = 0
    interrupted: bool = False
    failed: bool = False  # ended by an error (a recorded scan shown again): not interrupted
    results: list[Result] = field(default_factory=list)
    counts: Counter[State] = field(default_factory=Counter)
    # Host discovery (absent with -Pn): the hosts found up, with why, of how many targets.
    hosts_up: dict[IPAddress, Reason] | None = None
    hosts_total: int = 0
    latency: dict[IPAddress, float] = field(default_factory=dict)
    # -sV: what runs on the open ports, and which signatures said so (``Service``).
    services: dict[tuple[IPAddress, int], Service] = field(default_factory=dict)
    service_database: str | None = None
    released_up: int = 0  # hosts up dropped from ``hosts_up`` by ``release``

    @property
    def up_count(self) -> int:
        """Hosts found up so far, those ``release`` dropped included."""
        return len(self.hosts_up or ()) + self.released_up

    def release(self, written: Callable[[IPAddress], bool]) -> None:
        """Forget the results, the hosts up, round trips and services of the hosts
        ``written`` says are written out; ``counts`` and ``up_count`` keep them.

        The command line calls this once a host group is written (its files hold the
        hosts): a scan of a /8 then holds what its groups in flight found, not the scan
        (about 150 bytes a host up and a port not closed). The library's ``scan()`` keeps
        everything: its caller reads the report.
        """
        self.results = [r for r in self.results if not written(r.host)]
        if self.hosts_up:
            gone = [a for a in self.hosts_up if written(a)]
            for address in gone:
                del self.hosts_up[address]
            self.released_up += len(gone)
        for address in [a for a in self.latency if written(a)]:
            del self.latency[address]
        for key in [k for k in self.services if written(k[0])]:
            del self.services[key]

    def add(self, result: Result) -> None:
        self.counts[result.state] += 1
        if result.state is not State.CLOSED:
            self.results.append(result)

    def count_closed(self, count: int) -> None:
        """Count closed results that were never materialised (see ``keep_closed``)."""
        self.counts[State.CLOSED] += count

    @property
    def ending(self) -> str:
        """How the scan ended, as the outputs say it: ``done``, ``interrupted``, ``failed``."""
        return "failed" if self.failed else "interrupted" if self.interrupted else "done"

    @property
    def duration(self) -> float | None:
        return None if self.finished is None else self.finished - self.started

    def open_ports(self, host: IPAddress | str) -> list[int]:
        """Sorted open ports of ``host`` (an address or its text: ``"127.0.0.1"``).

        The host is required: one list for several hosts would hide which host a port is
        on; ``open_ports_by_host()`` gives every host's. Raises ValueError for text that is
        not an IP address.
        """
        address = host if not isinstance(host, str) else ip_address(host)
        return sorted({r.port for r in self.results if r.state is State.OPEN and r.host == address})

    def open_ports_by_host(self) -> dict[IPAddress, list[int]]:
        """Sorted open ports per host with any, hosts in address order."""
        ports: dict[IPAddress, set[int]] = {}
        for r in self.results:
            if r.state is State.OPEN:
                ports.setdefault(r.host, set()).add(r.port)
        return {h: sorted(ports[h]) for h in sorted(ports, key=lambda a: (a.version, int(a)))}

    def hosts(self) -> list[IPAddress]:
        """Hosts that have at least one kept (non-closed) result, in address order."""
        return sorted({r.host for r in self.results}, key=lambda a: (a.version, int(a)))


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanMeta:
    """What output writers need to know about a scan before its first result arrives."""

    args: tuple[str, ...]  # the command line as given (argv), for nmap's ``args`` attribute
    scan_type: str  # nmap's scaninfo type: "connect" or "syn"
    engine: str
    ports: tuple[int, ...]  # sorted
    started: float  # wall-clock epoch seconds
    version: str
    key: int
    protocol: Protocol = Protocol.TCP
    hostnames: dict[IPAddress, str] = field(default_factory=dict)  # names the user gave

    @property
    def command_line(self) -> str:
        """``args`` joined on one line, control characters escaped (``\\n``, ``\\x1b``):
        a newline in a file name must not start a line of its own in a text output."""
        return " ".join(printable(arg) for arg in self.args)


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped as Python would (``\\n``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
