"""What a lab is made of, as values: links, hosts, listener modes, rejections, ground truth.

Pure data, validated when built; ``Lab`` turns it into namespaces, nftables rules and
processes. The expected state of every (host, port) is decided here, spelled as nmap and
``portscout.results`` spell it, so tests and benchmarks compare a scan against ground truth
without knowing how the lab is wired. Imports only the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType

LAB_NETWORK = IPv4Network("198.18.0.0/15")  # RFC 2544 benchmarking range: never routed out
DEFAULT_SCANNER = IPv4Address("198.18.0.1")


class ListenerMode(StrEnum):
    ACCEPT = "accept"  # accept and hold the connection until the peer closes it
    BANNER = "banner"  # accept, send the host's banner, hold
    CLOSE = "close"  # accept and close at once (the peer sees a FIN)


class Reject(StrEnum):
    """How an nftables ``reject`` answers a SYN: ICMP destination unreachable codes, or RST."""

    PORT_UNREACHABLE = "port-unreachable"  # code 3
    ADMIN_PROHIBITED = "admin-prohibited"  # code 13
    HOST_UNREACHABLE = "host-unreachable"  # code 1
    NET_UNREACHABLE = "net-unreachable"  # code 0
    HOST_PROHIBITED = "host-prohibited"  # code 10
    NET_PROHIBITED = "net-prohibited"  # code 9
    PROT_UNREACHABLE = "prot-unreachable"  # code 2
    TCP_RESET = "tcp-reset"  # a firewall forging RST: looks closed


# nmap's reason for each rejection (portscout.results.Reason values)
_REJECT_REASON = {
    Reject.PORT_UNREACHABLE: "port-unreach",
    Reject.ADMIN_PROHIBITED: "admin-prohibited",
    Reject.HOST_UNREACHABLE: "host-unreach",
    Reject.NET_UNREACHABLE: "net-unreach",
    Reject.HOST_PROHIBITED: "host-prohibited",
    Reject.NET_PROHIBITED: "net-prohibited",
    Reject.PROT_UNREACHABLE: "proto-unreach",
    Reject.TCP_RESET: "reset",
}


@dataclass(frozen=True, slots=True)
class Link:
    """Path properties between the scanner and a host, applied by the delay line.

    ``rtt`` (s) is split evenly between the two directions; each packet's one-way delay gets
    uniform jitter in ``[-jitter, +jitter]`` (s, clamped at 0). ``loss`` is the probability
    that a packet is dropped, per packet and per direction: a SYN and its answer both arrive
    with probability ``(1 - loss) ** 2``.
    """

    rtt: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rtt <= 10.0:
            raise ValueError(f"invalid rtt {self.rtt!r}: want 0 to 10 s")
        if not 0.0 <= self.jitter <= 10.0:
            raise ValueError(f"invalid jitter {self.jitter!r}: want 0 to 10 s")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"invalid loss {self.loss!r}: want 0 <= loss < 1")

    def one_way(self) -> tuple[float, float, float]:
        """(delay, jitter, loss) for one direction, as the delay line takes them."""
        return (self.rtt / 2, self.jitter, self.loss)


def _check_ports(what: str, ports: frozenset[int]) -> None:
    bad = sorted(p for p in ports if not 1 <= p <= 65535)
    if bad:
        raise ValueError(f"invalid {what} port {bad[0]}: want 1-65535")


@dataclass(frozen=True, slots=True, kw_only=True)
class Host:
    """One lab host: an address in 198.18.0.0/15 and what each TCP port does.

    Ports in ``open`` have a listener; ``drop`` ports are silently filtered; ``reject`` ports
    answer with the given ICMP unreachable (or RST); every other port is closed (RST from
    the kernel). A host that is not ``up`` is routed to the lab but never answers anything.
    ``link`` overrides the lab's default link for this host. ``synproxy`` puts the kernel's
    SYN proxy (nftables ``synproxy``) in front of the host: every SYN gets a SYN-ACK
    carrying a cookie, whatever the port; only the open ports then complete a connection.
    """

    address: IPv4Address
    open: Mapping[int, ListenerMode] = field(default_factory=dict)
    drop: frozenset[int] = frozenset()
    reject: Mapping[int, Reject] = field(default_factory=dict)
    up: bool = True
    link: Link | None = None
    banner: bytes = b"SSH-2.0-portscout-lab\r\n"
    synproxy: bool = False  # the kernel's SYN proxy answers every port's SYN (a cookie)

    def __post_init__(self) -> None:
        if self.address not in LAB_NETWORK:
            raise ValueError(f"invalid lab host {self.address}: want an address in {LAB_NETWORK}")
        object.__setattr__(self, "open", MappingProxyType(dict(self.open)))
        object.__setattr__(self, "reject", MappingProxyType(dict(self.reject)))
        object.__setattr__(self, "drop", frozenset(self.drop))
        opened, rejected = frozenset(self.open), frozenset(self.reject)
        for what, ports in (("open", opened), ("drop", self.drop), ("reject", rejected)):
            _check_ports(what, ports)
        overlap = (opened & self.drop) | (opened & rejected) | (self.drop & rejected)
        if overlap:
            raise ValueError(f"port {min(overlap)} of {self.address} given two behaviours")
        if not self.up and (opened or self.drop or rejected):
            raise ValueError(f"lab host {self.address} is down but has port rules")

    def expected(self, port: int) -> tuple[str, str]:
        """Ground truth (state, reason) for a SYN to ``port``, as nmap would report it.

        Reasons are those of a SYN scan (``reset`` for closed); a connect scan says
        ``conn-refused`` instead. Rate limits and loss are not counted: they are what makes
        a scanner wrong, not the truth.
        """
        if not self.up:
            return ("filtered", "no-response")
        if port in self.open:
            return ("open", "syn-ack")
        if port in self.drop:
            return ("filtered", "no-response")
        reject = self.reject.get(port)
        if reject is None or reject is Reject.TCP_RESET:
            return ("closed", "reset")
        return ("filtered", _REJECT_REASON[reject])

    def expected_open(self) -> frozenset[int]:
        return frozenset(self.open) if self.up else frozenset()
