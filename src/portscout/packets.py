"""TCP SYN probes and their answers as bytes: IPv4/IPv6/TCP/ICMP build and parse, checksums,
and the keyed initial sequence number that lets the SYN engine match answers statelessly.

Core module: imports only the standard library and ``results``; no socket, no clock, no
``random``. The scan key is an argument. Malformed input never raises: parsers and matchers
return ``None``, because an answer that does not validate is ignored (masscan, zmap).

Stateless matching (masscan ``syn-cookie.c``, zmap ``validate.c``): the SYN's sequence number
is ``syn_cookie(key, src, dst, sport, dport)``, so an answer carries its own proof:

* SYN-ACK and RST-ACK acknowledge ``cookie + 1`` (a SYN occupies one sequence number;
  RFC 9293 3.10.7.1 gives a RST to a SYN ``ACK = SEG.SEQ + SEG.LEN``). masscan checks exactly
  that; zmap also accepts ``ack == cookie`` for RST, which we do not.
* ICMP errors quote the probe's IP header and at least 8 bytes of TCP (RFC 792, RFC 4443
  2.4(c)): source and destination port and the sequence number, so the quoted seq must equal
  the cookie recomputed from the quoted addresses and ports.

What the receiving raw sockets deliver (Linux, see raw(7), RFC 3542 3):

* ``AF_INET, SOCK_RAW, IPPROTO_TCP`` and ``IPPROTO_ICMP`` deliver the whole IPv4 datagram,
  header included: ``match_ipv4`` takes it as is; the TTL is in the header.
* ``AF_INET6`` raw sockets never deliver the IPv6 header: ``match_ipv6`` takes the TCP segment
  or ICMPv6 message, the peer address from ``recvfrom`` and the hop limit from the
  ``IPV6_HOPLIMIT`` control message (``IPV6_RECVHOPLIMIT``), ``None`` if not available.
* Checksums of received packets are not verified: on ``lo`` and veth pairs the kernel hands
  raw sockets segments with ``CHECKSUM_PARTIAL`` (only the pseudo-header sum in the field),
  so checking would reject real answers; the 32-bit cookie is the validation.

Sending: with ``IP_HDRINCL`` (or ``IPPROTO_RAW``) Linux fills in the IPv4 total length and
header checksum, and the identification when it is 0; we compute them anyway so the bytes are
right on their own. IPv6 raw sockets never take the IPv6 header on send: ``build_tcp_syn``
computes the checksum over the IPv6 pseudo-header (RFC 8200 8.1); setting ``IPV6_CHECKSUM``
to offset 16 would let the kernel overwrite it with the same value.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Final, Literal

from portscout.results import Reason, State

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

IPAddress = IPv4Address | IPv6Address

IPPROTO_ICMP: Final = 1
IPPROTO_TCP: Final = 6
IPPROTO_ICMPV6: Final = 58

# TCP flags (RFC 9293 3.1)
FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20

# nmap -sS sends window 1024 and the single option MSS 1460, no timestamps, SACK or window
# scale (nmap's scan_engine_raw.cc); a 24-byte header. We mimic it.
DEFAULT_WINDOW: Final = 1024
DEFAULT_MSS: Final = 1460
DEFAULT_TTL: Final = 64

_IPV4 = struct.Struct("!BBHHHBBH4s4s")  # RFC 791 3.1
_IPV6 = struct.Struct("!IHBB16s16s")  # RFC 8200 3
_TCP = struct.Struct("!HHIIBBHHH")  # RFC 9293 3.1, up to the options
_ICMP = struct.Struct("!BBH4x")  # type, code, checksum, unused (RFC 792, RFC 4443 3.1)
_QUOTED_TCP = struct.Struct("!HHI")  # the 8 bytes of TCP an ICMP error must quote
_PORTS = struct.Struct("!HH")
_COOKIE_PERSON = b"portscout.syn"  # BLAKE2 personalization: the scan key is reused elsewhere

# ICMP destination unreachable codes nmap counts as "filtered" for a SYN scan (nmap book,
# "TCP SYN scan"), and the ICMPv6 type 1 codes of RFC 4443 3.1. results.Reason has no
# no-route/beyond-scope/reject-route (nmap's ICMPv6 reasons): the nearest IPv4 reasons stand in.
_ICMP4_UNREACH: Final = 3
_ICMP6_UNREACH: Final = 1
_UNREACH_REASONS: Final[dict[tuple[int, int], Reason]] = {
    (4, 0): Reason.NET_UNREACH,
    (4, 1): Reason.HOST_UNREACH,
    (4, 2): Reason.PROTO_UNREACH,
    (4, 3): Reason.PORT_UNREACH,
    (4, 9): Reason.NET_PROHIBITED,
    (4, 10): Reason.HOST_PROHIBITED,
    (4, 13): Reason.ADMIN_PROHIBITED,
    (6, 0): Reason.NET_UNREACH,  # no route to destination
    (6, 1): Reason.ADMIN_PROHIBITED,  # communication administratively prohibited
    (6, 2): Reason.HOST_UNREACH,  # beyond scope of source address
    (6, 3): Reason.HOST_UNREACH,  # address unreachable
    (6, 4): Reason.PORT_UNREACH,
    (6, 5): Reason.ADMIN_PROHIBITED,  # source address failed ingress/egress policy
    (6, 6): Reason.ADMIN_PROHIBITED,  # reject route to destination
}


# -- checksums ------------------------------------------------------------------------------


def _fold(total: int) -> int:
    """One's complement of the one's-complement sum whose plain sum is ``total``.

    As 2**16 == 1 (mod 0xFFFF), the end-around-carry sum of 16-bit words is the plain sum
    modulo 0xFFFF, except that a non-zero total that is a multiple of 0xFFFF folds to 0xFFFF
    (one's-complement "negative zero"), never to 0.
    """
    rest = total % 0xFFFF
    if rest == 0 and total:
        rest = 0xFFFF
    return 0xFFFF - rest


def checksum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 Internet checksum of ``data`` (odd length: padded with a zero byte).

    ``initial`` is a plain sum of 16-bit words to include (a pseudo-header's). Over data that
    contains a correct checksum field the result is 0. The whole buffer is read as one big
    integer, reduced modulo 0xFFFF in C: no Python loop over words.
    """
    total = int.from_bytes(data, "big")
    if len(data) % 2:
        total <<= 8
    return _fold(total + initial)


def pseudo_header(src: IPAddress, dst: IPAddress, length: int, proto: int = IPPROTO_TCP) -> bytes:
    """The pseudo-header covered by TCP's checksum: RFC 9293 3.1 (IPv4), RFC 8200 8.1 (IPv6).

    ``length`` is the TCP header plus data in bytes. Raises ``ValueError`` if the families of
    ``src`` and ``dst`` differ.
    """
    if src.version != dst.version:
        raise ValueError(f"address families differ: {src} and {dst}")
    return packed_pseudo_header(src.packed, dst.packed, length, proto)


def packed_pseudo_header(src: bytes, dst: bytes, length: int, proto: int = IPPROTO_TCP) -> bytes:
    """``pseudo_header`` of packed addresses (4 or 16 bytes each, one family)."""
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!I3xB", length, proto)


def tcp_checksum(src: IPAddress, dst: IPAddress, segment: bytes) -> int:
    """Checksum of a TCP ``segment`` over its pseudo-header; 0 if the segment's field is right
    (when computing, leave the checksum field zero)."""
    return checksum(pseudo_header(src, dst, len(segment)) + segment)


# -- the keyed initial sequence number ------------------------------------------------------


def syn_cookie(key: bytes, src: IPAddress, dst: IPAddress, sport: int, dport: int) -> int:
    """The 32-bit initial sequence number of the SYN from ``(src, sport)`` to ``(dst, dport)``.

    Keyed BLAKE2b (RFC 7693) with a 4-byte digest over the packed addresses and ports, as
    masscan uses SipHash-2-4 over the same tuple: without the per-scan ``key`` (16..64 bytes)
    nobody can forge an answer that validates. Cost: about 1.3 us per call (CPython 3.11,
    one x86-64 core), of which 0.7 us is hashing. Raises ``ValueError`` on a bad key length.
    """
    if not 16 <= len(key) <= 64:
        raise ValueError(f"scan key must be 16 to 64 bytes, got {len(key)}")
    data = src.packed + dst.packed + _PORTS.pack(sport, dport)
    digest = hashlib.blake2b(data, digest_size=4, key=key, person=_COOKIE_PERSON).digest()
    return int.from_bytes(digest, "big")


# -- building SYNs --------------------------------------------------------------------------


def _syn_header(sport: int, dport: int, seq: int, window: int, mss: int, csum: int) -> bytes:
    options = struct.pack("!BBH", 2, 4, mss)  # kind 2, length 4 (RFC 9293 3.2)
    offset = (_TCP.size + len(options)) // 4
    return _TCP.pack(sport, dport, seq, 0, offset << 4, SYN, window, csum, 0) + options


def build_tcp_syn(
    src: IPAddress,
    dst: IPAddress,
    sport: int,
    dport: int,
    *,
    seq: int,
    window: int = DEFAULT_WINDOW,
    mss: int = DEFAULT_MSS,
) -> bytes:
    """A 24-byte TCP SYN (MSS option only, ack 0) with its checksum over the IPv4 or IPv6
    pseudo-header of ``src`` -> ``dst``.

    For a raw ``IPPROTO_TCP`` socket (the kernel adds the IP header) and for every IPv6 send.
    Raises ``ValueError`` on mixed families or a field out of range.
    """
    _check_fields(sport=sport, dport=dport, seq=seq, window=window, mss=mss)
    header = _syn_header(sport, dport, seq, window, mss, 0)
    csum = tcp_checksum(src, dst, header)
    return header[:16] + csum.to_bytes(2, "big") + header[18:]


def build_ipv4_syn(
    src: IPv4Address,
    dst: IPv4Address,
    sport: int,
    dport: int,
    *,
    seq: int,
    ttl: int = DEFAULT_TTL,
    ident: int = 0,
    window: int = DEFAULT_WINDOW,
    mss: int = DEFAULT_MSS,
) -> bytes:
    """A 44-byte IPv4 datagram (20-byte header, no options, DF clear, as nmap) holding
    ``build_tcp_syn(...)``, for ``IPPROTO_RAW`` or ``IP_HDRINCL``. Raises ``ValueError``."""
    if src.version != 4 or dst.version != 4:
        raise ValueError(f"IPv4 addresses expected: {src} and {dst}")
    _check_fields(ttl=ttl, ident=ident)
    segment = build_tcp_syn(src, dst, sport, dport, seq=seq, window=window, mss=mss)
    total = _IPV4.size + len(segment)
    header = _IPV4.pack(0x45, 0, total, ident, 0, ttl, IPPROTO_TCP, 0, src.packed, dst.packed)
    csum = checksum(header)
    return header[:10] + csum.to_bytes(2, "big") + header[12:] + segment


def build_syn(
    src: IPAddress,
    dst: IPAddress,
    sport: int,
    dport: int,
    *,
    seq: int,
    include_ip_header: bool,
    ttl: int = DEFAULT_TTL,
    window: int = DEFAULT_WINDOW,
) -> bytes:
    """``build_ipv4_syn`` if ``include_ip_header`` else ``build_tcp_syn``; IPv6 has no
    header-included form on raw sockets, so asking for one raises ``ValueError``."""
    if not include_ip_header:
        return build_tcp_syn(src, dst, sport, dport, seq=seq, window=window)
    if not (isinstance(src, IPv4Address) and isinstance(dst, IPv4Address)):
        raise ValueError(f"an IP header can only be built for IPv4: {src} -> {dst}")
    return build_ipv4_syn(src, dst, sport, dport, seq=seq, ttl=ttl, window=window)


_LIMITS = {"sport": 16, "dport": 16, "window": 16, "mss": 16, "ident": 16, "ttl": 8, "seq": 32}


def _check_fields(**fields: int) -> None:
    for name, value in fields.items():
        if not 0 <= value < 1 << _LIMITS[name]:
            raise ValueError(f"{name} out of range: {value}")


class SynTemplate:
    """SYNs from one source, precomputed: per packet only dst, ports, seq (and IP ident) vary.

    Both checksums start from the sum of the fixed words, done once (the idea of RFC 1624's
    incremental update), and a whole packet is one ``struct.pack``. The output equals
    ``build_tcp_syn``/``build_ipv4_syn`` byte for byte. Cost per packet: about 0.45 us TCP
    only, 0.6 us with the IPv4 header (CPython 3.11, x86-64), against 2.3 and 3.8 us on the
    slow path; ``syn_cookie`` for the seq adds 1.3 us.
    """

    __slots__ = (
        "_ip_sum",
        "_offset",
        "_options",
        "_src_int",
        "_struct",
        "_tcp_sum",
        "_total",
        "_ttl",
        "_window",
        "include_ip_header",
        "src",
    )

    def __init__(
        self,
        src: IPAddress,
        *,
        include_ip_header: bool = False,
        ttl: int = DEFAULT_TTL,
        window: int = DEFAULT_WINDOW,
        mss: int = DEFAULT_MSS,
    ) -> None:
        if include_ip_header and src.version != 4:
            raise ValueError(f"an IP header can only be built for IPv4: {src}")
        _check_fields(ttl=ttl, window=window, mss=mss)
        self.src = src
        self.include_ip_header = include_ip_header
        header = _syn_header(0, 0, 0, window, mss, 0)
        zero = IPv4Address(0) if src.version == 4 else IPv6Address(0)
        # Any integer congruent mod 0xFFFF to the word sum will do, as long as it is non-zero
        # when the sum is (see _fold): pseudo-header and header are never all zero.
        fixed = int.from_bytes(pseudo_header(src, zero, len(header)) + header, "big")
        self._tcp_sum = fixed % 0xFFFF or 0xFFFF
        self._offset = (len(header) // 4) << 4
        self._options = header[_TCP.size :]
        self._window = window
        self._ttl = ttl
        self._src_int = int(src)
        self._total = _IPV4.size + len(header)
        self._ip_sum = 0x4500 + self._total + (ttl << 8 | IPPROTO_TCP) + int(src) % 0xFFFF
        tcp_format = f"HHIIBBHHH{len(self._options)}s"
        ip_format = "BBHHHBBHII" if include_ip_header else ""
        self._struct = struct.Struct(f"!{ip_format}{tcp_format}")

    def packet(self, dst: IPAddress, sport: int, dport: int, seq: int, ident: int = 0) -> bytes:
        """The SYN to ``(dst, dport)`` from ``(src, sport)``; ``ident`` only with the IPv4
        header. ``dst`` must be of ``src``'s family (not checked: this is the hot path).
        Raises ``struct.error`` on a field out of range."""
        d = int(dst)
        # A 32-bit seq or a 128-bit address is congruent mod 0xFFFF to the sum of its words.
        tcp_csum = _fold(self._tcp_sum + d + sport + dport + seq)
        if not self.include_ip_header:
            return self._struct.pack(
                sport, dport, seq, 0, self._offset, SYN, self._window, tcp_csum, 0, self._options
            )
        ip_csum = _fold(self._ip_sum + ident + d)
        return self._struct.pack(
            0x45, 0, self._total, ident, 0, self._ttl, IPPROTO_TCP, ip_csum, self._src_int, d,
            sport, dport, seq, 0, self._offset, SYN, self._window, tcp_csum, 0, self._options,
        )  # fmt: skip

    @property
    def size(self) -> int:
        """Bytes of every packet: 44 with the IPv4 header, 24 without."""
        return self._struct.size

    def pack_into(
        self, buffer: WriteableBuffer, offset: int, dst: int, sport: int, dport: int, seq: int
    ) -> None:
        """``packet(IPv4Address(dst) or IPv6Address(dst), sport, dport, seq)`` written into
        ``buffer`` at ``offset`` (``size`` bytes), IP ident 0: the SYN engine's batch path,
        with ``dst`` as the integer of the address, and ``_fold`` inlined (0.35 us less).
        Raises ``struct.error`` on a field out of range or a buffer too small."""
        total = self._tcp_sum + dst + sport + dport + seq
        rest = total % 0xFFFF or 0xFFFF  # _fold: total is never 0 (the fixed words are not)
        if not self.include_ip_header:
            self._struct.pack_into(
                buffer, offset, sport, dport, seq, 0, self._offset, SYN, self._window,
                0xFFFF - rest, 0, self._options,
            )  # fmt: skip
            return
        ip_rest = (self._ip_sum + dst) % 0xFFFF or 0xFFFF
        self._struct.pack_into(
            buffer, offset, 0x45, 0, self._total, 0, 0, self._ttl, IPPROTO_TCP, 0xFFFF - ip_rest,
            self._src_int, dst, sport, dport, seq, 0, self._offset, SYN, self._window,
            0xFFFF - rest, 0, self._options,
        )  # fmt: skip


# -- parsing answers ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class IPv4Header:
    """The fields of an IPv4 header (RFC 791 3.1) a scanner looks at."""

    src: IPv4Address
    dst: IPv4Address
    ttl: int
    proto: int
    ident: int
    header_length: int  # bytes, options included
    total_length: int  # as claimed by the header; a quoted header may claim more than it has
    fragment_offset: int  # in 8-byte units; non-zero: not the first fragment
    checksum: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TCPHeader:
    """A TCP header (RFC 9293 3.1); ``options`` raw, ``payload`` what follows the header."""

    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    checksum: int
    urgent: int
    options: bytes
    payload: bytes

    @property
    def mss(self) -> int | None:
        """The MSS option's value, or ``None`` if absent or malformed."""
        i, options = 0, self.options
        while i < len(options):
            kind = options[i]
            if kind == 0:  # end of option list
                break
            if kind == 1:  # no-operation
                i += 1
                continue
            if i + 1 >= len(options) or options[i + 1] < 2:
                return None
            if kind == 2 and options[i + 1] == 4 and i + 4 <= len(options):
                return int.from_bytes(options[i + 2 : i + 4], "big")
            i += options[i + 1]
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ICMPUnreachable:
    """An ICMP or ICMPv6 destination unreachable quoting a TCP segment we sent.

    ``src``/``dst``/``sport``/``dport``/``seq`` are the quoted probe's: ``dst`` and ``dport``
    are the scanned host and port, ``src`` and ``sport`` ours.
    """

    version: Literal[4, 6]
    type: int
    code: int
    src: IPAddress
    dst: IPAddress
    sport: int
    dport: int
    seq: int


def parse_ipv4(packet: bytes) -> tuple[IPv4Header, bytes] | None:
    """The header of an IPv4 datagram and its payload, or ``None`` if it is not one.

    The payload ends at the header's total length (dropping link-layer padding) or at the end
    of ``packet`` if that comes first, as in a header quoted by an ICMP error.
    """
    if len(packet) < _IPV4.size:
        return None
    vihl, _tos, total, ident, frag, ttl, proto, csum, src, dst = _IPV4.unpack_from(packet)
    header_length = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or header_length < _IPV4.size or not header_length <= total:
        return None
    if len(packet) < header_length:
        return None
    header = IPv4Header(
        src=IPv4Address(src),
        dst=IPv4Address(dst),
        ttl=ttl,
        proto=proto,
        ident=ident,
        header_length=header_length,
        total_length=total,
        fragment_offset=frag & 0x1FFF,
        checksum=csum,
    )
    return header, packet[header_length:total]


def parse_tcp(segment: bytes) -> TCPHeader | None:
    """A TCP header with its options and payload, or ``None`` if ``segment`` is too short or
    its data offset is impossible. The checksum is not checked (see the module docstring)."""
    if len(segment) < _TCP.size:
        return None
    sport, dport, seq, ack, offset, flags, window, csum, urgent = _TCP.unpack_from(segment)
    length = (offset >> 4) * 4
    if length < _TCP.size or length > len(segment):
        return None
    return TCPHeader(
        sport=sport,
        dport=dport,
        seq=seq,
        ack=ack,
        flags=flags,
        window=window,
        checksum=csum,
        urgent=urgent,
        options=segment[_TCP.size : length],
        payload=segment[length:],
    )


def parse_icmp_unreachable(message: bytes, version: Literal[4, 6]) -> ICMPUnreachable | None:
    """The quoted probe of an ICMP (``version`` 4) or ICMPv6 (6) destination unreachable.

    ``message`` starts at the ICMP type byte. ``None`` unless it is type 3 with code 0, 1, 2,
    3, 9, 10 or 13 (IPv4) or type 1 with code 0 to 6 (IPv6), quoting a TCP segment with at
    least its first 8 bytes. A quoted IPv6 header must be followed by TCP directly: our
    probes carry no extension headers.
    """
    if len(message) < _ICMP.size:
        return None
    icmp_type, code, _csum = _ICMP.unpack_from(message)
    if (version, code) not in _UNREACH_REASONS:
        return None
    quoted = message[_ICMP.size :]
    src: IPAddress
    dst: IPAddress
    if version == 4:
        parsed = parse_ipv4(quoted) if icmp_type == _ICMP4_UNREACH else None
        if parsed is None or parsed[0].proto != IPPROTO_TCP or parsed[0].fragment_offset:
            return None
        src, dst = parsed[0].src, parsed[0].dst
        tcp = quoted[parsed[0].header_length :]
    else:
        if icmp_type != _ICMP6_UNREACH or len(quoted) < _IPV6.size:
            return None
        vtcfl, _length, next_header, _hops, src6, dst6 = _IPV6.unpack_from(quoted)
        if vtcfl >> 28 != 6 or next_header != IPPROTO_TCP:
            return None
        src, dst = IPv6Address(src6), IPv6Address(dst6)
        tcp = quoted[_IPV6.size :]
    if len(tcp) < _QUOTED_TCP.size:
        return None
    sport, dport, seq = _QUOTED_TCP.unpack_from(tcp)
    return ICMPUnreachable(
        version=version, type=icmp_type, code=code, src=src, dst=dst, sport=sport, dport=dport,
        seq=seq,
    )  # fmt: skip


def classify(answer: TCPHeader | ICMPUnreachable) -> tuple[State, Reason] | None:
    """What an answer to a SYN says about the port, as nmap says it, or ``None`` if nothing.

    RST (with or without ACK) -> closed/reset; SYN+ACK -> open/syn-ack; an ICMP destination
    unreachable -> filtered with the reason of its type and code. Validation is not done
    here: see ``match_ipv4``/``match_ipv6``.
    """
    if isinstance(answer, ICMPUnreachable):
        reason = _UNREACH_REASONS.get((answer.version, answer.code))
        return None if reason is None else (State.FILTERED, reason)
    if answer.flags & RST:
        return State.CLOSED, Reason.RESET
    if answer.flags & (SYN | ACK) == SYN | ACK:
        return State.OPEN, Reason.SYN_ACK
    return None


# -- matching answers to probes -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Match:
    """A validated answer: the scanned ``host`` and ``port``, what it says, and the TTL or hop
    limit of the packet that said it (``None`` if the engine could not see it)."""

    host: IPAddress
    port: int
    state: State
    reason: Reason
    ttl: int | None


def _match_tcp(
    key: bytes, tcp: TCPHeader, local: IPAddress, peer: IPAddress, ttl: int | None, sports: range
) -> Match | None:
    verdict = classify(tcp)
    # The answer goes from (peer, tcp.sport) to (local, tcp.dport): the probe's reverse. Only
    # an ACK-carrying answer acknowledges our cookie: a bare RST proves nothing.
    if verdict is None or not tcp.flags & ACK or tcp.dport not in sports:
        return None
    if tcp.ack != (syn_cookie(key, local, peer, tcp.dport, tcp.sport) + 1) & 0xFFFFFFFF:
        return None
    return Match(host=peer, port=tcp.sport, state=verdict[0], reason=verdict[1], ttl=ttl)


def _match_icmp(key: bytes, icmp: ICMPUnreachable, ttl: int | None, sports: range) -> Match | None:
    if icmp.sport not in sports:
        return None
    if icmp.seq != syn_cookie(key, icmp.src, icmp.dst, icmp.sport, icmp.dport):
        return None
    state, reason = State.FILTERED, _UNREACH_REASONS[(icmp.version, icmp.code)]
    return Match(host=icmp.dst, port=icmp.dport, state=state, reason=reason, ttl=ttl)


def match_ipv4(key: bytes, packet: bytes, *, sports: range) -> Match | None:
    """Match an IPv4 datagram (IP header included, as raw IPv4 sockets deliver it) to a SYN
    this scan sent from a port in ``sports`` with ``key``; ``None`` if it is no valid answer.

    TCP: RST or SYN-ACK acknowledging ``cookie + 1``; ICMP: destination unreachable quoting
    ``seq == cookie``. ``Match.ttl`` is the answer's TTL (for ICMP, the reporting router's).
    Never raises on malformed input, except ``ValueError`` for a bad ``key``.
    """
    parsed = parse_ipv4(packet)
    if parsed is None or parsed[0].fragment_offset:
        return None
    ip, payload = parsed
    if ip.proto == IPPROTO_TCP:
        tcp = parse_tcp(payload)
        return None if tcp is None else _match_tcp(key, tcp, ip.dst, ip.src, ip.ttl, sports)
    if ip.proto == IPPROTO_ICMP:
        icmp = parse_icmp_unreachable(payload, 4)
        return None if icmp is None else _match_icmp(key, icmp, ip.ttl, sports)
    return None


def match_ipv6(
    key: bytes,
    payload: bytes,
    *,
    proto: int,
    peer: IPv6Address,
    local: IPv6Address,
    hop_limit: int | None,
    sports: range,
) -> Match | None:
    """Match what an IPv6 raw socket delivered (no IPv6 header) to a SYN this scan sent.

    ``proto`` is the socket's protocol (``IPPROTO_TCP``: ``payload`` is a TCP segment;
    ``IPPROTO_ICMPV6``: an ICMPv6 message), ``peer`` the address from ``recvfrom``, ``local``
    the scan's source address (the segment's destination, which the socket does not report),
    ``hop_limit`` from the ``IPV6_HOPLIMIT`` control message or ``None``. Validation as in
    ``match_ipv4``; for ICMPv6 ``peer`` is the reporting router and the host comes from the
    quoted header. Never raises on malformed input, except ``ValueError`` for a bad ``key``.
    """
    if proto == IPPROTO_TCP:
        tcp = parse_tcp(payload)
        return None if tcp is None else _match_tcp(key, tcp, local, peer, hop_limit, sports)
    if proto == IPPROTO_ICMPV6:
        icmp = parse_icmp_unreachable(payload, 6)
        return None if icmp is None else _match_icmp(key, icmp, hop_limit, sports)
    return None
