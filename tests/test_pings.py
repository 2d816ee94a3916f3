"""Discovery's ping packets (``pings``): built as the RFCs say, and only their own answers
match. No socket: answers are built here as a host's kernel would build them."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

from hypothesis import given
from hypothesis import strategies as st

from portscout.packets import ACK, RST, SYN, checksum
from portscout.pings import (
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_TIMESTAMP_REPLY,
    ICMP_TIMESTAMP_REQUEST,
    cookie,
    icmp_request,
    icmp_seq,
    match_icmp,
    match_ipv4_icmp,
    match_ipv4_tcp,
    match_tcp,
    ping_hasher,
    tcp_ping,
)
from portscout.results import Reason

KEY = bytes(range(16))
HASHER = ping_hasher(KEY)
LOCAL4, PEER4 = IPv4Address("198.18.0.1").packed, IPv4Address("198.18.7.20").packed
SPORTS = range(40000, 40002)
TCP = struct.Struct("!HHIIBBHHH")


def pseudo4(local: bytes, peer: bytes, length: int) -> bytes:
    return local + peer + struct.pack("!BBH", 0, 6, length)


def answer(segment: bytes, flags: int, *, seq: int = 0, ack: int = 0) -> bytes:
    """The header a host sends back to ``segment``: ports swapped, ``flags``."""
    sport, dport = struct.unpack_from("!HH", segment)
    return TCP.pack(dport, sport, seq, ack, 5 << 4, flags, 0, 0, 0)


def ipv4(payload: bytes, proto: int, src: bytes, dst: bytes) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0, src,
                       dst) + payload  # fmt: skip


def test_ack_ping_is_answered_by_the_rst_carrying_its_ack() -> None:
    value = cookie(HASHER, PEER4, 40001, 80)
    segment = tcp_ping(LOCAL4, PEER4, 40001, 80, ACK, value)
    sport, dport, _, ack, offset, flags, _, _, _ = TCP.unpack(segment)
    assert (sport, dport, ack, offset, flags) == (40001, 80, value, 0x50, ACK)
    assert checksum(pseudo4(LOCAL4, PEER4, 20) + segment) == 0
    # RFC 9293 3.10.7.1: <SEQ=SEG.ACK><CTL=RST>, no ACK flag.
    rst = answer(segment, RST, seq=ack)
    assert match_tcp(HASHER, rst, PEER4, SPORTS) == (Reason.RESET, 1)
    assert match_ipv4_tcp(HASHER, ipv4(rst, 6, PEER4, LOCAL4), SPORTS) == (PEER4, Reason.RESET, 1)
    assert match_tcp(HASHER, answer(segment, RST, seq=ack ^ 1), PEER4, SPORTS) is None
    other = IPv4Address("198.18.7.21").packed  # the same RST from another host: forged
    assert match_tcp(HASHER, rst, other, SPORTS) is None


def test_syn_ping_is_answered_by_syn_ack_or_rst_ack() -> None:
    value = cookie(HASHER, PEER4, 40000, 443)
    segment = tcp_ping(LOCAL4, PEER4, 40000, 443, SYN, value)
    seq, flags = TCP.unpack(segment)[2], TCP.unpack(segment)[5]
    assert (seq, flags) == (value, SYN)
    assert checksum(pseudo4(LOCAL4, PEER4, 20) + segment) == 0
    good = (seq + 1) % (1 << 32)
    assert match_tcp(HASHER, answer(segment, SYN | ACK, ack=good), PEER4, SPORTS) == (
        Reason.SYN_ACK, 0,
    )  # fmt: skip
    assert match_tcp(HASHER, answer(segment, RST | ACK, ack=good), PEER4, SPORTS) == (
        Reason.RESET, 0,
    )  # fmt: skip
    assert match_tcp(HASHER, answer(segment, RST | ACK, ack=seq), PEER4, SPORTS) is None
    assert match_tcp(HASHER, answer(segment, SYN, ack=good), PEER4, SPORTS) is None


@given(st.sampled_from([ICMP_ECHO_REQUEST, ICMP_TIMESTAMP_REQUEST]), st.integers(0, 0xFFFF))
def test_icmp_requests_carry_their_checksum(kind: int, ident: int) -> None:
    message = icmp_request(kind, ident, 77)
    assert checksum(message) == 0
    assert struct.unpack_from("!BBxxHH", message) == (kind, 0, ident, 77)


def test_icmp_replies_match_by_ident_and_the_peers_seq() -> None:
    seq = icmp_seq(HASHER, PEER4)
    idents = range(500, 502)
    for request, reply, reason in (
        (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY, Reason.ECHO_REPLY),
        (ICMP_TIMESTAMP_REQUEST, ICMP_TIMESTAMP_REPLY, Reason.TIMESTAMP_REPLY),
    ):
        sent = icmp_request(request, 501, seq)
        back = bytes([reply]) + sent[1:]  # the host changes the type (and the checksum)
        assert match_icmp(HASHER, back, PEER4, idents) == (reason, 1)
        assert match_ipv4_icmp(HASHER, ipv4(back, 1, PEER4, LOCAL4), idents) == (
            PEER4, reason, 1,
        )  # fmt: skip
        assert match_icmp(HASHER, sent, PEER4, idents) is None  # our own request looped
        other = IPv4Address("198.18.7.30").packed
        assert match_icmp(HASHER, back, other, idents) is None
        assert match_icmp(HASHER, back, PEER4, range(502, 504)) is None


def test_ipv6_tcp_checksum_over_the_ipv6_pseudo_header() -> None:
    local, peer = IPv6Address("fd00::1").packed, IPv6Address("fd00::2").packed
    segment = tcp_ping(local, peer, 40000, 443, SYN, 12345)
    pseudo = local + peer + struct.pack("!IxxxB", 20, 6)
    assert checksum(pseudo + segment) == 0
