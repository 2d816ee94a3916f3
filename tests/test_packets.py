"""Tests for portscout.packets: known answers in hex, checksums checked by an independent
word-by-word sum, build -> parse round trips, template == slow path, and the matcher."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from portscout import packets
from portscout.packets import (
    ACK,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    RST,
    SYN,
    ICMPUnreachable,
    Match,
    SynTemplate,
    TCPHeader,
    build_ipv4_syn,
    build_syn,
    build_tcp_syn,
    checksum,
    classify,
    match_ipv4,
    match_ipv6,
    parse_icmp_unreachable,
    parse_ipv4,
    parse_tcp,
    pseudo_header,
    syn_cookie,
    tcp_checksum,
)
from portscout.results import Reason, State

KEY = bytes(range(16))
OTHER_KEY = bytes(range(1, 17))
SPORTS = range(40000, 40064)

ME4, HOST4 = IPv4Address("192.0.2.1"), IPv4Address("198.51.100.7")
ME6, HOST6 = IPv6Address("2001:db8::1"), IPv6Address("2001:db8:1::7")
ROUTER4, ROUTER6 = IPv4Address("203.0.113.254"), IPv6Address("2001:db8:ffff::1")


# -- an independent checksum: RFC 1071's loop with end-around carry ---------------------------


def ones_sum(data: bytes) -> int:
    """One's-complement sum of big-endian 16-bit words, one word at a time."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def v4_pseudo(src: IPv4Address, dst: IPv4Address, length: int) -> bytes:
    return bytes(src.packed) + bytes(dst.packed) + bytes([0, 6]) + length.to_bytes(2, "big")


def v6_pseudo(src: IPv6Address, dst: IPv6Address, length: int) -> bytes:
    return bytes(src.packed) + bytes(dst.packed) + length.to_bytes(4, "big") + bytes([0, 0, 0, 6])


def valid(data: bytes) -> bool:
    """A buffer including a correct checksum sums to 0xFFFF (one's-complement zero)."""
    return ones_sum(data) == 0xFFFF


# -- checksum ---------------------------------------------------------------------------------


def test_checksum_rfc1071_example() -> None:
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0xFFFF),
        (b"\x00\x00", 0xFFFF),
        (b"\xff\xff", 0x0000),
        (b"\x12\x34\xed\xcb", 0x0000),  # sums to ffff: negative zero, checksum 0
        (b"\x01", 0xFEFF),  # odd length: padded with a zero byte
        (b"\x80\x00\x80\x00", 0xFFFE),  # end-around carry
    ],
)
def test_checksum_edges(data: bytes, expected: int) -> None:
    assert checksum(data) == expected


@given(st.binary(max_size=200))
def test_checksum_agrees_with_word_loop(data: bytes) -> None:
    assert checksum(data) == 0xFFFF - ones_sum(data)


@given(st.binary(max_size=200))
def test_checksum_inserted_folds_to_zero(data: bytes) -> None:
    data += b"\x00" * (len(data) % 2)
    filled = data + checksum(data).to_bytes(2, "big")
    assert checksum(filled) == 0
    assert valid(filled)


def test_pseudo_headers() -> None:
    assert pseudo_header(ME4, HOST4, 24) == v4_pseudo(ME4, HOST4, 24)
    assert pseudo_header(ME6, HOST6, 24) == v6_pseudo(ME6, HOST6, 24)
    assert len(pseudo_header(ME6, HOST6, 24)) == 40  # RFC 8200 8.1
    with pytest.raises(ValueError, match="families differ"):
        pseudo_header(ME4, HOST6, 24)


# -- known answers ----------------------------------------------------------------------------

# IPv4 192.0.2.1:40000 -> 198.51.100.7:80, seq 0xdff0186a, TTL 64, id 0, window 1024, MSS 1460.
SYN4_HEX = (
    "4500002c0000000040068e90c0000201c6336407"  # IPv4 header, checksum 8e90
    "9c400050dff0186a000000006002040012ff0000020405b4"  # TCP, checksum 12ff
)
# IPv6 2001:db8::1:40000 -> 2001:db8:1::7:443, same seq: the TCP segment alone.
SYN6_HEX = "9c4001bbdff0186a0000000060020400a2550000020405b4"  # checksum a255


def test_known_answer_ipv4_syn() -> None:
    packet = build_ipv4_syn(ME4, HOST4, 40000, 80, seq=0xDFF0186A)
    assert packet.hex() == SYN4_HEX
    assert valid(packet[:20])  # IP header checksum, checked word by word
    assert valid(v4_pseudo(ME4, HOST4, 24) + packet[20:])  # TCP checksum with pseudo-header
    assert tcp_checksum(ME4, HOST4, packet[20:]) == 0


def test_known_answer_ipv6_syn() -> None:
    segment = build_tcp_syn(ME6, HOST6, 40000, 443, seq=0xDFF0186A)
    assert valid(v6_pseudo(ME6, HOST6, 24) + segment)
    assert segment.hex() == SYN6_HEX
    # The same segment is wrong under the IPv4 pseudo-header of other addresses.
    assert not valid(v4_pseudo(ME4, HOST4, 24) + segment)


def test_syn_looks_like_nmap() -> None:
    tcp = parse_tcp(build_tcp_syn(ME4, HOST4, 40000, 80, seq=1))
    assert tcp is not None
    assert (tcp.flags, tcp.window, tcp.ack, tcp.mss, tcp.options) == (
        SYN,
        1024,
        0,
        1460,
        bytes.fromhex("020405b4"),
    )


def test_build_syn_dispatch() -> None:
    assert build_syn(ME4, HOST4, 40000, 80, seq=7, include_ip_header=True) == build_ipv4_syn(
        ME4, HOST4, 40000, 80, seq=7
    )
    assert build_syn(ME6, HOST6, 40000, 80, seq=7, include_ip_header=False) == build_tcp_syn(
        ME6, HOST6, 40000, 80, seq=7
    )
    with pytest.raises(ValueError, match="only be built for IPv4"):
        build_syn(ME6, HOST6, 40000, 80, seq=7, include_ip_header=True)
    with pytest.raises(ValueError, match="only be built for IPv4"):
        SynTemplate(ME6, include_ip_header=True)


@pytest.mark.parametrize(
    ("field", "value"), [("sport", 65536), ("dport", -1), ("seq", 1 << 32), ("window", 1 << 16)]
)
def test_build_rejects_fields_out_of_range(field: str, value: int) -> None:
    fields = {"sport": 1, "dport": 2, "seq": 3, "window": 4} | {field: value}
    with pytest.raises(ValueError, match=f"{field} out of range"):
        build_tcp_syn(
            ME4, HOST4, fields["sport"], fields["dport"], seq=fields["seq"], window=fields["window"]
        )


# -- syn_cookie -------------------------------------------------------------------------------


def test_syn_cookie_pinned_and_keyed() -> None:
    cookie = syn_cookie(KEY, ME4, HOST4, 40000, 80)
    assert cookie == 0xDFF0186A  # keyed BLAKE2b is standard: this must never change
    assert syn_cookie(KEY, ME4, HOST4, 40000, 80) == cookie
    others = {
        syn_cookie(OTHER_KEY, ME4, HOST4, 40000, 80),
        syn_cookie(KEY, HOST4, ME4, 80, 40000),  # direction matters
        syn_cookie(KEY, ME4, HOST4, 40001, 80),
        syn_cookie(KEY, ME4, HOST4, 40000, 81),
        syn_cookie(KEY, ME4, IPv4Address("198.51.100.8"), 40000, 80),
    }
    assert cookie not in others
    assert len(others) == 5


@pytest.mark.parametrize("size", [0, 15, 65])
def test_syn_cookie_key_length(size: int) -> None:
    with pytest.raises(ValueError, match="16 to 64 bytes"):
        syn_cookie(bytes(size), ME4, HOST4, 1, 2)


# -- round trips and the template -------------------------------------------------------------

ipv4s = st.integers(0, 2**32 - 1).map(IPv4Address)
ipv6s = st.integers(0, 2**128 - 1).map(IPv6Address)
ports = st.integers(0, 65535)
seqs = st.integers(0, 2**32 - 1)


@given(ipv4s, ipv4s, ports, ports, seqs, st.integers(1, 255), st.integers(0, 65535))
def test_ipv4_round_trip(
    src: IPv4Address, dst: IPv4Address, sport: int, dport: int, seq: int, ttl: int, ident: int
) -> None:
    packet = build_ipv4_syn(src, dst, sport, dport, seq=seq, ttl=ttl, ident=ident)
    parsed = parse_ipv4(packet)
    assert parsed is not None
    ip, payload = parsed
    assert (ip.src, ip.dst, ip.ttl, ip.proto, ip.ident) == (src, dst, ttl, IPPROTO_TCP, ident)
    assert (ip.header_length, ip.total_length, ip.fragment_offset) == (20, 44, 0)
    assert valid(packet[:20])
    tcp = parse_tcp(payload)
    assert tcp is not None
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.flags, tcp.payload) == (sport, dport, seq, SYN, b"")
    assert valid(v4_pseudo(src, dst, len(payload)) + payload)


@given(ipv6s, ipv6s, ports, ports, seqs)
def test_ipv6_round_trip(
    src: IPv6Address, dst: IPv6Address, sport: int, dport: int, seq: int
) -> None:
    segment = build_tcp_syn(src, dst, sport, dport, seq=seq)
    assert valid(v6_pseudo(src, dst, len(segment)) + segment)
    tcp = parse_tcp(segment)
    assert tcp is not None
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.mss) == (sport, dport, seq, 1460)


@given(ipv4s, ipv4s, ports, ports, seqs, st.integers(0, 65535), st.integers(1, 255))
@example(ME4, HOST4, 0, 0, 0, 0, 64)
def test_template_ipv4_equals_slow_path(
    src: IPv4Address,
    dst: IPv4Address,
    sport: int,
    dport: int,
    seq: int,
    ident: int,
    ttl: int,
) -> None:
    with_ip = SynTemplate(src, include_ip_header=True, ttl=ttl)
    expected = build_ipv4_syn(src, dst, sport, dport, seq=seq, ttl=ttl, ident=ident)
    assert with_ip.packet(dst, sport, dport, seq, ident) == expected
    assert SynTemplate(src).packet(dst, sport, dport, seq) == expected[20:]


@given(st.one_of(ipv4s, ipv6s), st.integers(0, 2**128 - 1), ports, ports, seqs, st.booleans())
@example(ME4, int(HOST4), 0, 0, 0, True)
def test_template_pack_into_equals_packet(
    src: IPv4Address | IPv6Address, dst: int, sport: int, dport: int, seq: int, header: bool
) -> None:
    """The batch path writes the same bytes as ``packet``, at an offset, touching no more."""
    if src.version == 4:
        target: IPv4Address | IPv6Address = IPv4Address(dst % 2**32)
    else:
        target, header = IPv6Address(dst), False
    template = SynTemplate(src, include_ip_header=header)
    buffer = bytearray(b"\xaa" * (template.size + 20))
    template.pack_into(buffer, 10, int(target), sport, dport, seq)
    assert buffer[10 : 10 + template.size] == template.packet(target, sport, dport, seq)
    assert buffer[:10] == buffer[10 + template.size :] == b"\xaa" * 10
    assert template.size == (44 if header else 24)


@given(ipv6s, ipv6s, ports, ports, seqs, st.integers(0, 65535), st.integers(1, 65535))
@example(IPv6Address(0), IPv6Address(0), 0, 0, 0, 0, 1)
def test_template_ipv6_equals_slow_path(
    src: IPv6Address, dst: IPv6Address, sport: int, dport: int, seq: int, window: int, mss: int
) -> None:
    template = SynTemplate(src, window=window, mss=mss)
    expected = build_tcp_syn(src, dst, sport, dport, seq=seq, window=window, mss=mss)
    assert template.packet(dst, sport, dport, seq) == expected


@pytest.mark.parametrize(("src", "dst"), [(ME4, HOST4), (ME6, HOST6)])
def test_template_checksum_zero_edge(src: IPv4Address | IPv6Address, dst: IPv4Address) -> None:
    # Raising the seq by the checksum makes the sum ffff: the checksum field must be 0000
    # on both paths (a one's-complement sum of non-zero words is never +0).
    first = build_tcp_syn(src, dst, 1234, 80, seq=0)
    seq = int.from_bytes(first[16:18], "big")
    slow = build_tcp_syn(src, dst, 1234, 80, seq=seq)
    assert slow[16:18] == b"\x00\x00"
    assert SynTemplate(src).packet(dst, 1234, 80, seq) == slow


# -- answers: helpers that build them independently of the module -----------------------------


def ipv4(src: IPv4Address, dst: IPv4Address, proto: int, payload: bytes, ttl: int = 57) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0x1234, 0x4000, ttl, proto, 0,
        src.packed, dst.packed,
    )  # fmt: skip
    return header[:10] + checksum(header).to_bytes(2, "big") + header[12:] + payload


def tcp_reply(sport: int, dport: int, ack: int, flags: int) -> bytes:
    """An answer's TCP header (checksum left 0: the matcher does not check it)."""
    return struct.pack("!HHIIBBHHH", sport, dport, 0xABCDEF01, ack, 5 << 4, flags, 65535, 0, 0)


def reply4(
    ack_delta: int = 1, flags: int = SYN | ACK, key: bytes = KEY, sport: int = 40000
) -> bytes:
    ack = (syn_cookie(key, ME4, HOST4, sport, 80) + ack_delta) & 0xFFFFFFFF
    return ipv4(HOST4, ME4, IPPROTO_TCP, tcp_reply(80, sport, ack, flags))


def icmp4(code: int, key: bytes = KEY, sport: int = 40000, icmp_type: int = 3) -> bytes:
    probe = build_ipv4_syn(ME4, HOST4, sport, 80, seq=syn_cookie(key, ME4, HOST4, sport, 80))
    message = bytes([icmp_type, code, 0, 0, 0, 0, 0, 0]) + probe[:28]  # RFC 792: header + 8
    return ipv4(ROUTER4, ME4, IPPROTO_ICMP, message, ttl=250)


def icmp6(code: int, key: bytes = KEY, sport: int = 40000) -> bytes:
    seq = syn_cookie(key, ME6, HOST6, sport, 443)
    segment = build_tcp_syn(ME6, HOST6, sport, 443, seq=seq)
    header = struct.pack(
        "!IHBB16s16s", 6 << 28, len(segment), IPPROTO_TCP, 64, ME6.packed, HOST6.packed
    )
    return bytes([1, code, 0, 0, 0, 0, 0, 0]) + header + segment


def m6(payload: bytes, proto: int = IPPROTO_TCP, key: bytes = KEY) -> Match | None:
    peer = HOST6 if proto == IPPROTO_TCP else ROUTER6
    return match_ipv6(key, payload, proto=proto, peer=peer, local=ME6, hop_limit=60, sports=SPORTS)


def reply6(ack_delta: int = 1, flags: int = SYN | ACK, sport: int = 40000) -> bytes:
    ack = (syn_cookie(KEY, ME6, HOST6, sport, 443) + ack_delta) & 0xFFFFFFFF
    return tcp_reply(443, sport, ack, flags)


# -- matcher: accepts -------------------------------------------------------------------------


def test_match_syn_ack_and_rst_ipv4() -> None:
    opened = match_ipv4(KEY, reply4(), sports=SPORTS)
    assert opened == Match(host=HOST4, port=80, state=State.OPEN, reason=Reason.SYN_ACK, ttl=57)
    closed = match_ipv4(KEY, reply4(flags=RST | ACK), sports=SPORTS)
    assert closed == Match(host=HOST4, port=80, state=State.CLOSED, reason=Reason.RESET, ttl=57)


def test_match_ack_wraps_at_32_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packets, "syn_cookie", lambda *_: 0xFFFFFFFF)
    answer = ipv4(HOST4, ME4, IPPROTO_TCP, tcp_reply(80, 40000, 0, SYN | ACK))
    assert match_ipv4(KEY, answer, sports=SPORTS) is not None


def test_match_ignores_link_padding() -> None:
    padded = reply4() + bytes(6)  # Ethernet pads frames to 60 bytes
    assert match_ipv4(KEY, padded, sports=SPORTS) is not None


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (0, Reason.NET_UNREACH),
        (1, Reason.HOST_UNREACH),
        (2, Reason.PROTO_UNREACH),
        (3, Reason.PORT_UNREACH),
        (9, Reason.NET_PROHIBITED),
        (10, Reason.HOST_PROHIBITED),
        (13, Reason.ADMIN_PROHIBITED),
    ],
)
def test_match_icmp4_unreachable(code: int, reason: Reason) -> None:
    found = match_ipv4(KEY, icmp4(code), sports=SPORTS)
    assert found == Match(host=HOST4, port=80, state=State.FILTERED, reason=reason, ttl=250)


@pytest.mark.parametrize("code", [4, 5, 6, 7, 8, 11, 12, 14, 15])
def test_icmp4_other_codes_ignored(code: int) -> None:
    assert match_ipv4(KEY, icmp4(code), sports=SPORTS) is None


def test_icmp4_other_types_ignored() -> None:
    assert match_ipv4(KEY, icmp4(3, icmp_type=11), sports=SPORTS) is None  # time exceeded
    assert match_ipv4(KEY, icmp4(0, icmp_type=0), sports=SPORTS) is None  # echo reply


def test_match_ipv6_tcp() -> None:
    assert m6(reply6()) == Match(
        host=HOST6, port=443, state=State.OPEN, reason=Reason.SYN_ACK, ttl=60
    )
    assert m6(reply6(flags=RST | ACK)) == Match(
        host=HOST6, port=443, state=State.CLOSED, reason=Reason.RESET, ttl=60
    )


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (0, Reason.NET_UNREACH),
        (1, Reason.ADMIN_PROHIBITED),
        (2, Reason.HOST_UNREACH),
        (3, Reason.HOST_UNREACH),
        (4, Reason.PORT_UNREACH),
        (5, Reason.ADMIN_PROHIBITED),
        (6, Reason.ADMIN_PROHIBITED),
    ],
)
def test_match_icmp6_unreachable(code: int, reason: Reason) -> None:
    found = m6(icmp6(code), proto=IPPROTO_ICMPV6)
    assert found == Match(host=HOST6, port=443, state=State.FILTERED, reason=reason, ttl=60)


def test_icmp6_unknown_code_ignored() -> None:
    assert m6(icmp6(7), proto=IPPROTO_ICMPV6) is None


# -- matcher: rejects -------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [0, 2, -1, 1 << 31])
def test_wrong_ack_rejected(delta: int) -> None:
    # zmap accepts ack == cookie for RST; RFC 9293 says cookie + 1 and so do we (masscan).
    for flags in (SYN | ACK, RST | ACK):
        assert match_ipv4(KEY, reply4(ack_delta=delta, flags=flags), sports=SPORTS) is None
        assert m6(reply6(ack_delta=delta, flags=flags)) is None


def test_wrong_key_rejected() -> None:
    assert match_ipv4(OTHER_KEY, reply4(), sports=SPORTS) is None
    assert match_ipv4(KEY, reply4(key=OTHER_KEY), sports=SPORTS) is None
    assert match_ipv4(OTHER_KEY, icmp4(3), sports=SPORTS) is None
    assert m6(reply6(), key=OTHER_KEY) is None
    assert m6(icmp6(4), proto=IPPROTO_ICMPV6, key=OTHER_KEY) is None


def test_wrong_ports_rejected() -> None:
    # Our port outside the scan's range, even with a right cookie.
    assert match_ipv4(KEY, reply4(sport=39999), sports=SPORTS) is None
    assert match_ipv4(KEY, icmp4(3, sport=39999), sports=SPORTS) is None
    assert m6(icmp6(4, sport=50000), proto=IPPROTO_ICMPV6) is None
    # The answer comes from another port than the one probed: the cookie does not match.
    good = bytearray(reply4())
    good[20:22] = (81).to_bytes(2, "big")
    assert match_ipv4(KEY, bytes(good), sports=SPORTS) is None
    # Or to another of our ports in range.
    good = bytearray(reply4())
    good[22:24] = (40001).to_bytes(2, "big")
    assert match_ipv4(KEY, bytes(good), sports=SPORTS) is None


def test_answer_from_another_host_rejected() -> None:
    packet = bytearray(reply4())
    packet[12:16] = IPv4Address("198.51.100.8").packed
    assert match_ipv4(KEY, bytes(packet), sports=SPORTS) is None
    other = IPv6Address("2001:db8:1::8")
    assert (
        match_ipv6(KEY, reply6(), proto=IPPROTO_TCP, peer=other, local=ME6, hop_limit=None,
                   sports=SPORTS)
        is None
    )  # fmt: skip


def test_other_flags_rejected() -> None:
    assert match_ipv4(KEY, reply4(flags=RST), sports=SPORTS) is None  # bare RST: no ack
    assert match_ipv4(KEY, reply4(flags=ACK), sports=SPORTS) is None
    assert match_ipv4(KEY, reply4(flags=SYN), sports=SPORTS) is None


def test_fragments_and_other_protocols_rejected() -> None:
    packet = bytearray(reply4())
    packet[6:8] = (0x2001).to_bytes(2, "big")  # MF set, offset 8 bytes: a later fragment
    assert match_ipv4(KEY, bytes(packet), sports=SPORTS) is None
    udp = ipv4(HOST4, ME4, 17, bytes(reply4()[20:]))
    assert match_ipv4(KEY, udp, sports=SPORTS) is None
    assert m6(reply6(), proto=17) is None


def test_truncated_answers_rejected() -> None:
    for answer in (reply4(), icmp4(3)):
        # ICMP needs the quoted IP header and 8 bytes of TCP, no more (RFC 792).
        needed = len(answer) if answer[9] == IPPROTO_TCP else 20 + 8 + 20 + 8
        for end in range(needed):
            assert match_ipv4(KEY, answer[:end], sports=SPORTS) is None, end
        assert match_ipv4(KEY, answer[:needed], sports=SPORTS) is not None
    for payload, proto, needed in ((reply6(), IPPROTO_TCP, 20), (icmp6(4), IPPROTO_ICMPV6, 56)):
        for end in range(needed):
            assert m6(payload[:end], proto=proto) is None, end
        assert m6(payload[:needed], proto=proto) is not None


@given(st.binary(max_size=120))
@example(b"\x45" + bytes(19))  # total length 0 < header length
@example(b"\x4f" + bytes(19))  # header length 60 > data
@example(bytes.fromhex("4500001c00000000400100000000000000000000") + b"\x03\x03" + bytes(6))
def test_garbage_never_raises(data: bytes) -> None:
    assert match_ipv4(KEY, data, sports=SPORTS) is None
    for proto in (IPPROTO_TCP, IPPROTO_ICMPV6):
        assert m6(data, proto=proto) is None


@given(st.integers(0, 75), st.integers(0, 255), st.sampled_from(["syn-ack", "icmp"]))
def test_corrupted_answers_never_raise(index: int, value: int, kind: str) -> None:
    answer = bytearray(reply4() if kind == "syn-ack" else icmp4(3))
    if index < len(answer):
        answer[index] = value
    found = match_ipv4(KEY, bytes(answer), sports=SPORTS)
    assert found is None or found.host == HOST4


# -- parsing details --------------------------------------------------------------------------


def test_parse_ipv4_rejects_non_ipv4() -> None:
    assert parse_ipv4(b"\x60" + bytes(39)) is None  # an IPv6 header
    assert parse_ipv4(b"\x44" + bytes(19)) is None  # IHL 4 < 5


def test_parse_tcp_rejects_bad_offset() -> None:
    segment = bytearray(build_tcp_syn(ME4, HOST4, 1, 2, seq=3))
    segment[12] = 4 << 4
    assert parse_tcp(bytes(segment)) is None
    segment[12] = 7 << 4  # 28 bytes claimed, 24 present
    assert parse_tcp(bytes(segment)) is None


@pytest.mark.parametrize(
    ("options", "mss"),
    [
        (b"", None),
        (bytes.fromhex("020405b4"), 1460),
        (bytes.fromhex("01010204 0218"), 536),
        (bytes.fromhex("0303070204ffff00"), 65535),  # window scale, then MSS
        (bytes.fromhex("00020405b4"), None),  # after end of list
        (bytes.fromhex("0300"), None),  # bad length
        (bytes.fromhex("0204"), None),  # truncated
    ],
)
def test_mss_option(options: bytes, mss: int | None) -> None:
    header = TCPHeader(
        sport=1, dport=2, seq=3, ack=4, flags=SYN, window=5, checksum=0, urgent=0,
        options=options, payload=b"",
    )  # fmt: skip
    assert header.mss == mss


def test_parse_icmp_unreachable_quotes_probe() -> None:
    message = icmp4(13)[20:]
    found = parse_icmp_unreachable(message, 4)
    assert found == ICMPUnreachable(
        version=4, type=3, code=13, src=ME4, dst=HOST4, sport=40000, dport=80,
        seq=syn_cookie(KEY, ME4, HOST4, 40000, 80),
    )  # fmt: skip
    assert parse_icmp_unreachable(message, 6) is None  # wrong family


def test_classify() -> None:
    def tcp(flags: int) -> TCPHeader:
        return TCPHeader(
            sport=80, dport=1, seq=0, ack=0, flags=flags, window=0, checksum=0, urgent=0,
            options=b"", payload=b"",
        )  # fmt: skip

    assert classify(tcp(SYN | ACK)) == (State.OPEN, Reason.SYN_ACK)
    assert classify(tcp(RST | ACK)) == (State.CLOSED, Reason.RESET)
    assert classify(tcp(RST)) == (State.CLOSED, Reason.RESET)
    assert classify(tcp(SYN)) is None
    assert classify(tcp(ACK)) is None
    unreachable = parse_icmp_unreachable(icmp6(4)[:], 6)
    assert unreachable is not None
    assert classify(unreachable) == (State.FILTERED, Reason.PORT_UNREACH)


def test_addresses_are_typed() -> None:
    found = match_ipv4(KEY, reply4(), sports=SPORTS)
    assert found is not None
    assert found.host == ip_address("198.51.100.7")
    assert isinstance(found.host, IPv4Address)


def test_own_probe_seen_on_loopback_is_ignored() -> None:
    # On lo a raw socket also receives the SYNs we send: no ACK, so no answer.
    seq = syn_cookie(KEY, ME4, HOST4, 40000, 80)
    assert match_ipv4(KEY, build_ipv4_syn(ME4, HOST4, 40000, 80, seq=seq), sports=SPORTS) is None
    assert m6(build_tcp_syn(ME6, HOST6, 40000, 443, seq=seq)) is None
