"""Host discovery's packets: nmap's default pings as root, built and matched as bytes.

nmap pings a host, as root, with ``-PE -PS443 -PA80 -PP``: an ICMP echo request (ICMPv6
for IPv6), a TCP SYN to port 443, a TCP ACK to port 80 and, for IPv4 only, an ICMP
timestamp request (nmap's ``nmap.cc``/``targets.cc``; the timestamp has no ICMPv6 twin).
Any answer at all means the host is up. This module builds those probes and tells an
answer to one of them from anything else, statelessly, as ``packets`` does for SYNs: each
probe carries a keyed cookie of the peer and ports that only the scan's key can make.

* SYN to 443: sequence number ``cookie``; a SYN-ACK or RST-ACK acknowledging
  ``cookie + 1`` is an answer.
* ACK to 80: acknowledgment number ``cookie``. A host with no such connection resets it
  with a RST whose sequence number is the ACK's acknowledgment number and which carries no
  ACK flag itself (RFC 9293 3.10.7.1): a RST with ``seq == cookie`` is an answer.
* ICMP echo and timestamp: identifier ``ident`` (the scan's), sequence number the low 16
  bits of the peer's cookie; the reply echoes both (RFC 792).

The cookie covers the peer, our source port and the probed port, not our own address: an
IPv6 raw socket does not say which of our addresses an answer reached, and a forger would
need the key all the same. The try number is the source port's offset in our block (and
added to the ICMP identifier), so that an answer names the try it answers (Karn's rule).

Pure: bytes in, bytes or a verdict out; imports only the standard library and ``packets``
and ``results``.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

from portscout.packets import ACK, IPPROTO_TCP, RST, SYN, checksum, packed_pseudo_header
from portscout.results import Reason

SYN_PING_PORT: Final = 443
ACK_PING_PORT: Final = 80
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMP_TIMESTAMP_REQUEST, ICMP_TIMESTAMP_REPLY = 13, 14
ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY = 128, 129
WINDOW: Final = 1024
_PERSON: Final = b"portscout.ping"
_TCP = struct.Struct("!HHIIBBHHH")  # RFC 9293 3.1: a 20-byte header, no options
_ICMP = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence number
_PORTS = struct.Struct("!HH")
_PAYLOAD: Final = b"portscout"
_2_32: Final = 1 << 32


def ping_hasher(key: bytes) -> hashlib.blake2b:
    """The keyed hash ``cookie`` copies: BLAKE2b (RFC 7693), 4 bytes, keyed by the scan's
    16 to 64 byte secret (``ValueError`` otherwise)."""
    if not 16 <= len(key) <= 64:
        raise ValueError(f"ping key must be 16 to 64 bytes, got {len(key)}")
    return hashlib.blake2b(digest_size=4, key=key, person=_PERSON)


def cookie(hasher: hashlib.blake2b, peer: bytes, sport: int, dport: int) -> int:
    """The 32-bit cookie of a probe to ``peer`` (packed address) from our ``sport`` to its
    ``dport`` (0 for ICMP)."""
    digest = hasher.copy()
    digest.update(peer + _PORTS.pack(sport, dport))
    return int.from_bytes(digest.digest(), "big")


def tcp_ping(local: bytes, peer: bytes, sport: int, dport: int, flags: int, value: int) -> bytes:
    """A 20-byte TCP segment from ``local``:``sport`` to ``peer``:``dport`` (packed
    addresses of one family) with its checksum: a SYN with sequence number ``value``
    (``flags`` SYN), or an ACK with acknowledgment number ``value`` (``flags`` ACK).

    For a raw ``IPPROTO_TCP`` socket: the kernel adds the IP header."""
    seq, ack = (value, 0) if flags & SYN else (value ^ 0x5EED5EED, value)
    header = _TCP.pack(sport, dport, seq, ack, 5 << 4, flags, WINDOW, 0, 0)
    csum = checksum(packed_pseudo_header(local, peer, len(header)) + header)
    return header[:16] + csum.to_bytes(2, "big") + header[18:]


def icmp_request(kind: int, ident: int, seq: int) -> bytes:
    """An ICMP echo (8) or timestamp (13) request, or an ICMPv6 echo request (128), with
    ``ident`` and ``seq``. ICMP's checksum is ours; the kernel computes ICMPv6's itself
    (RFC 3542 3.1). The timestamp request's originate time is 0 (nmap sends 0 too): only
    the reply matters, not the clock."""
    body = b"\0" * 12 if kind == ICMP_TIMESTAMP_REQUEST else _PAYLOAD
    if kind == ICMPV6_ECHO_REQUEST:
        return _ICMP.pack(kind, 0, 0, ident, seq) + body
    csum = checksum(_ICMP.pack(kind, 0, 0, ident, seq) + body)
    return _ICMP.pack(kind, 0, csum, ident, seq) + body


def match_tcp(
    hasher: hashlib.blake2b, segment: bytes, peer: bytes, sports: range
) -> tuple[Reason, int] | None:
    """``(reason, try)`` when the TCP ``segment`` from ``peer`` answers one of our pings
    (``try``: its source port's offset in ``sports``), else None."""
    if len(segment) < 20:
        return None
    sport, dport, seq, ack, _, flags = _TCP.unpack_from(segment)[:6]
    if dport not in sports:
        return None
    answer = flags & ACK and flags & (SYN | RST)
    if (
        sport == SYN_PING_PORT
        and answer
        and ack == (cookie(hasher, peer, dport, sport) + 1) % 2**32
    ):
        return (Reason.SYN_ACK if flags & SYN else Reason.RESET), dport - sports.start
    if sport == ACK_PING_PORT and flags & RST and seq == cookie(hasher, peer, dport, sport):
        return Reason.RESET, dport - sports.start
    return None


def match_ipv4_tcp(
    hasher: hashlib.blake2b, packet: bytes, sports: range
) -> tuple[bytes, Reason, int] | None:
    """``(peer, reason, try)`` for an IPv4 datagram (header included, as raw sockets give
    it) carrying an answer to one of our TCP pings."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != IPPROTO_TCP:
        return None
    if struct.unpack_from("!H", packet, 6)[0] & 0x1FFF:
        return None  # a later fragment: no TCP header
    peer = packet[12:16]
    found = match_tcp(hasher, packet[(packet[0] & 0x0F) * 4 :], peer, sports)
    return None if found is None else (peer, *found)


def icmp_seq(hasher: hashlib.blake2b, peer: bytes) -> int:
    """The ICMP sequence number of our pings to ``peer``."""
    return cookie(hasher, peer, 0, 0) & 0xFFFF


def match_icmp(
    hasher: hashlib.blake2b, message: bytes, peer: bytes, idents: range
) -> tuple[Reason, int] | None:
    """``(reason, try)`` when the ICMP or ICMPv6 ``message`` (its header first) from
    ``peer`` is an echo or timestamp reply to one of our requests; ``idents`` are our
    identifiers, the try the offset in them."""
    if len(message) < _ICMP.size:
        return None
    kind, _, _, ident, seq = _ICMP.unpack_from(message)
    if kind == ICMP_TIMESTAMP_REPLY:
        reason = Reason.TIMESTAMP_REPLY
    elif kind in (ICMP_ECHO_REPLY, ICMPV6_ECHO_REPLY):
        reason = Reason.ECHO_REPLY
    else:
        return None
    if ident not in idents or seq != icmp_seq(hasher, peer):
        return None
    return reason, ident - idents.start


def match_ipv4_icmp(
    hasher: hashlib.blake2b, packet: bytes, idents: range
) -> tuple[bytes, Reason, int] | None:
    """``(peer, reason, try)`` for an IPv4 datagram carrying a reply to our ICMP pings."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    peer = packet[12:16]
    found = match_icmp(hasher, packet[(packet[0] & 0x0F) * 4 :], peer, idents)
    return None if found is None else (peer, *found)
