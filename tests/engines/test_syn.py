"""The SYN engine: the hot-path matcher against ``packets``, then real scans in the test
session's private network namespace (tests/conftest.py): listeners, nftables rules (a
private table in this namespace, removed afterwards) and forged answers, all on ``lo``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import replace
from ipaddress import IPv4Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portscout.engines import ENGINES, rawsock
from portscout.engines.async_connect import AsyncConnectEngine
from portscout.engines.base import Engine, EngineOptions
from portscout.engines.processes import ClosedAs, run_sharded
from portscout.engines.syn import AnswerMatcher, SynEngine, scan_secret
from portscout.packets import ACK, RST, SYN, build_ipv4_syn, checksum, match_ipv4, tcp_checksum
from portscout.plan import ScanPlan
from portscout.results import Reason, Result, State
from portscout.schedule import BURST
from portscout.targets import parse_targets
from portscout.timing import TimingPolicy
from tests.engines.conftest import nft_rules, serve

KEY = 0x5EED
SECRET = scan_secret(KEY)
SPORTS = range(61000, 61016)
ME, HOST = IPv4Address("192.0.2.1"), IPv4Address("198.51.100.7")
FAST = EngineOptions(timing=TimingPolicy().with_options(timeout=0.25, max_retries=1))
LO = IPv4Address("127.0.0.1")
SO_TIMESTAMPNS = 35  # <asm-generic/socket.h>; also the control message's type


# -- forging answers ----------------------------------------------------------------------


def ipv4(src: IPv4Address, dst: IPv4Address, payload: bytes, proto: int = 6) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
                         src.packed, dst.packed)  # fmt: skip
    return header[:10] + checksum(header).to_bytes(2, "big") + header[12:] + payload


def answer(peer: IPv4Address, local: IPv4Address, sport: int, dport: int, *, ack: int,
           flags: int) -> bytes:  # fmt: skip
    """A TCP answer from ``(peer, sport)`` to ``(local, dport)``, as an IPv4 datagram."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 777, ack & 0xFFFFFFFF, 5 << 4, flags, 512, 0, 0)
    csum = tcp_checksum(peer, local, tcp)
    return ipv4(peer, local, tcp[:16] + csum.to_bytes(2, "big") + tcp[18:])


def icmp_unreachable(router: IPv4Address, quoted: bytes, code: int = 13) -> bytes:
    body = struct.pack("!BBHI", 3, code, 0, 0) + quoted[:28]
    body = body[:2] + checksum(body).to_bytes(2, "big") + body[4:]
    return ipv4(router, IPv4Address(quoted[12:16]), body, proto=1)


def cookie(local: IPv4Address, peer: IPv4Address, sport: int, dport: int) -> int:
    return AnswerMatcher(SECRET, SPORTS).cookie(local.packed, peer.packed, sport, dport)


def genuine(flags: int = SYN | ACK, port: int = 443, sport: int = SPORTS.start) -> bytes:
    ack = cookie(ME, HOST, sport, port) + 1
    return answer(HOST, ME, port, sport, ack=ack, flags=flags)


# -- the matcher equals packets.match_ipv4 ------------------------------------------------


def _agree(packet: bytes) -> tuple[object, object]:
    fast = AnswerMatcher(SECRET, SPORTS).ipv4(packet)
    slow = match_ipv4(SECRET, packet, sports=SPORTS)
    if slow is not None and slow.host.version == 4 and packet[9] == 6:
        expected: object = (slow.host.packed, slow.port, slow.state, slow.reason, slow.ttl)
    else:
        expected = None
    got = None if fast is None else (fast[0], fast[1], fast[3], fast[4], fast[5])
    return got, expected


@pytest.mark.parametrize(
    ("packet", "accepted"),
    [
        pytest.param(genuine(), True, id="syn-ack"),
        pytest.param(genuine(RST | ACK), True, id="rst-ack"),
        pytest.param(genuine(SYN | ACK | RST), True, id="syn-rst-ack"),
        pytest.param(genuine(RST), False, id="bare-rst"),
        pytest.param(genuine(ACK), False, id="bare-ack"),
        pytest.param(genuine(sport=SPORTS.stop), False, id="port-outside-block"),
        pytest.param(
            answer(HOST, ME, 443, SPORTS.start, ack=1, flags=SYN | ACK), False, id="wrong-ack"
        ),
        pytest.param(
            answer(
                HOST,
                ME,
                444,
                SPORTS.start,
                ack=cookie(ME, HOST, SPORTS.start, 443) + 1,
                flags=SYN | ACK,
            ),
            False,
            id="cookie-of-another-port",
        ),
        pytest.param(
            build_ipv4_syn(ME, HOST, SPORTS.start, 443, seq=cookie(ME, HOST, SPORTS.start, 443)),
            False,
            id="our-own-syn",
        ),
        pytest.param(genuine()[:39], False, id="truncated"),
        pytest.param(genuine()[:6] + b"\x00\x01" + genuine()[8:], False, id="fragment"),
    ],
)
def test_matcher_agrees_with_packets(packet: bytes, accepted: bool) -> None:
    got, expected = _agree(packet)
    assert got == expected
    assert (got is not None) is accepted


@given(st.integers(0, 39), st.integers(1, 255))
def test_matcher_agrees_on_any_corruption(offset: int, xor: int) -> None:
    packet = bytearray(genuine())
    packet[offset] ^= xor
    got, expected = _agree(bytes(packet))
    assert got == expected


def test_secret_is_fresh_unless_keyed() -> None:
    assert scan_secret(None) != scan_secret(None)
    assert scan_secret(KEY) == SECRET
    assert len(SECRET) == 16


def test_filter_programs_end_in_accept_and_drop() -> None:
    for program in (
        rawsock.tcp_answer_filter(SPORTS, ip_header=True),
        rawsock.tcp_answer_filter(SPORTS, ip_header=False),
        rawsock.icmp_answer_filter(SPORTS, version=4),
        rawsock.icmp_answer_filter(SPORTS, version=6),
    ):
        assert program[-2].k == 0xFFFF
        assert program[-1].k == 0
        for i, insn in enumerate(program):  # every jump lands inside the program
            if insn.code & 0x07 == 0x05:  # BPF_JMP
                assert i + 1 + max(insn.jt, insn.jf) < len(program)


# -- scanning in the namespace ------------------------------------------------------------


def scan(
    target: str,
    ports: Iterable[int],
    engine: Engine | None = None,
    options: EngineOptions = FAST,
) -> dict[int, Result]:
    plan = ScanPlan.create(parse_targets([target]), sorted(ports), KEY)
    chosen = engine or SynEngine()

    async def collect() -> list[Result]:
        return [r async for r in chosen.run(plan.probes(), options)]

    results = asyncio.run(collect())
    found = {r.port: r for r in results}
    assert len(found) == len(results), "a port was reported twice"
    return found


def input_rules(*rules: str) -> contextlib.AbstractContextManager[None]:
    """Input-hook rules (the SYN engine's answers come back through input)."""
    return nft_rules(*rules, hook="input")


def opened(found: dict[int, Result]) -> list[int]:
    return sorted(p for p, r in found.items() if r.state is State.OPEN)


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_open_and_closed_on_ipv4_loopback() -> None:
    with serve({("127.0.0.1", 7101): "accept", ("127.0.0.1", 7105): "banner"}):
        found = scan("127.0.0.1", range(7100, 7111))
    assert set(found) == set(range(7100, 7111))
    assert opened(found) == [7101, 7105]
    assert (found[7101].state, found[7101].reason) == (State.OPEN, Reason.SYN_ACK)
    assert (found[7100].state, found[7100].reason) == (State.CLOSED, Reason.RESET)
    assert found[7101].reason_ttl == 64
    assert found[7101].tries == 1
    assert found[7101].rtt is not None


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_ipv6_loopback() -> None:
    with serve({("::1", 7201): "accept"}):
        found = scan("::1", range(7200, 7203))
    assert {p: r.state for p, r in found.items()} == {
        7200: State.CLOSED, 7201: State.OPEN, 7202: State.CLOSED,
    }  # fmt: skip
    assert all(r.host == ip_address("::1") for r in found.values())
    assert found[7201].reason_ttl == 64  # the hop limit, from IPV6_HOPLIMIT


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_same_states_as_the_connect_engine() -> None:
    listeners = {("127.0.0.1", p): "accept" for p in (7500, 7507, 7555)}
    with serve(listeners), input_rules("tcp dport 7520 drop"):
        syn = scan("127.0.0.1", range(7500, 7561))
        connect = scan("127.0.0.1", range(7500, 7561), AsyncConnectEngine())
    assert {p: r.state for p, r in syn.items()} == {p: r.state for p, r in connect.items()}
    assert opened(syn) == [7500, 7507, 7555]
    assert syn[7520].state is State.FILTERED


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_no_phantom_port_in_the_ephemeral_range() -> None:
    ephemeral = rawsock.ephemeral_port_range()
    ports = range(ephemeral.start, ephemeral.start + 2000)
    listening = [ephemeral.start + 7, ephemeral.start + 1500]
    engine = SynEngine()
    blocks: list[range] = []

    async def collect() -> list[Result]:
        plan = ScanPlan.create(parse_targets(["127.0.0.1"]), list(ports), KEY)
        out = []
        async for result in engine.run(plan.probes(), FAST):
            if engine.source_ports is not None:
                blocks.append(engine.source_ports)
            out.append(result)
        return out

    with serve({("127.0.0.1", p): "accept" for p in listening}):
        results = asyncio.run(collect())
    assert sorted(r.port for r in results if r.state is State.OPEN) == listening
    assert len(results) == len(ports)
    (block,) = set(map(tuple, blocks))
    assert not set(block) & set(ephemeral)


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_dropped_port_is_filtered_after_retries() -> None:
    """A host that answered much and lost nothing gives a silent port one retry (nmap's
    allowance); one that answered once has shown little, and gives one more."""
    options = EngineOptions(timing=TimingPolicy().with_options(timeout=0.2, max_retries=2))
    with input_rules("tcp dport 7301 drop"):
        found = scan("127.0.0.1", range(7300, 7700), options=options)
        few = scan("127.0.0.1", [7300, 7301], options=options)
    assert all(r.state is State.CLOSED for p, r in found.items() if p != 7301)
    assert (found[7301].state, found[7301].reason) == (State.FILTERED, Reason.NO_RESPONSE)
    assert found[7301].tries == 2
    assert found[7301].rtt is None
    assert few[7300].state is State.CLOSED
    assert (few[7301].state, few[7301].tries) == (State.FILTERED, 3)


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize("target", ["127.0.0.1", "::1"])
def test_icmp_admin_prohibited_is_filtered(target: str) -> None:
    with input_rules("tcp dport 7302 reject with icmpx type admin-prohibited"):
        found = scan(target, [7302, 7303])
    assert (found[7302].state, found[7302].reason) == (State.FILTERED, Reason.ADMIN_PROHIBITED)
    assert found[7302].reason_ttl is not None
    assert found[7303].state is State.CLOSED


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_rate_is_respected() -> None:
    """A sniffer timestamps every SYN in the kernel: no interval may hold more than
    ``rate * t + BURST`` of them (give or take 2 ms of scheduling between the bucket's
    clock and the sendto), and each probe went out exactly once."""
    rate, count = 2000.0, 400
    jitter = 0.002  # seconds between the bucket's clock and the kernel's stamp
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP) as sniffer:
        sniffer.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        rawsock.enlarge_receive_buffer(sniffer)
        scan("127.0.0.1", range(20000, 20000 + count), SynEngine(rate=rate))
        sniffer.setblocking(False)
        times = []
        with contextlib.suppress(BlockingIOError):
            while True:
                data, ancillary, _, _ = sniffer.recvmsg(128, 64)
                flags, dport = data[33], struct.unpack_from("!H", data, 22)[0]
                if flags & (SYN | ACK) == SYN and dport in range(20000, 20000 + count):
                    (_, _, stamp), *_ = ancillary
                    seconds, nanos = struct.unpack("qq", stamp[:16])
                    times.append(seconds + nanos / 1e9)
    assert len(times) == count
    times.sort()  # stamps from two CPUs reach the queue slightly out of order
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            assert j - i + 1 <= rate * (times[j] - times[i] + jitter) + BURST


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_forged_answers_are_never_reported(caplog: pytest.LogCaptureFixture) -> None:
    """While port 7401 is silent (dropped), a forger floods our source ports with SYN-ACKs,
    RST-ACKs and bare RSTs with wrong acks and ICMP errors quoting a wrong seq: the port
    stays filtered. A forgery carrying the right cookie (the test knows the key) does
    get through, so the flood is not vacuous."""
    target, silent, forged_open, never_probed = LO, 7401, 7402, 7403
    secret = scan_secret(KEY)
    engine = SynEngine(key=KEY)
    plan = ScanPlan.create(parse_targets(["127.0.0.1"]), [silent, forged_open], KEY)
    options = EngineOptions(timing=TimingPolicy().with_options(timeout=0.3, max_retries=1))

    def flood(block: range, sender: socket.socket) -> None:
        matcher = AnswerMatcher(secret, block)
        for sport in block:
            for flags in (SYN | ACK, RST | ACK, RST):
                bad = answer(target, LO, silent, sport, ack=12345, flags=flags)
                sender.sendto(bad, ("127.0.0.1", 0))
            probe = build_ipv4_syn(LO, target, sport, silent, seq=999)
            sender.sendto(icmp_unreachable(LO, probe), ("127.0.0.1", 0))
            right = matcher.cookie(LO.packed, target.packed, sport, forged_open) + 1
            good = answer(target, LO, forged_open, sport, ack=right, flags=SYN | ACK)
            sender.sendto(good, ("127.0.0.1", 0))
            unasked = matcher.cookie(LO.packed, target.packed, sport, never_probed) + 1
            sender.sendto(answer(target, LO, never_probed, sport, ack=unasked, flags=SYN | ACK),
                          ("127.0.0.1", 0))  # fmt: skip

    async def run() -> list[Result]:
        results: list[Result] = []

        async def collect() -> None:
            results.extend([r async for r in engine.run(plan.probes(), options)])

        task = asyncio.create_task(collect())
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as sender:
            for _ in range(100):  # bounded: at most 100 rounds of 5 x 16 packets, 1 s
                if task.done():
                    break
                if engine.source_ports is not None:
                    flood(engine.source_ports, sender)
                await asyncio.sleep(0.01)
        await task
        return results

    rules = (f"tcp dport {silent} drop", f"tcp dport {forged_open} drop")
    caplog.set_level(logging.DEBUG, logger="portscout.engines.syn")
    with input_rules(*rules):
        found = {r.port: r for r in asyncio.run(run())}
    assert (found[silent].state, found[silent].reason) == (State.FILTERED, Reason.NO_RESPONSE)
    assert found[forged_open].state is State.OPEN
    assert never_probed not in found
    # Counted, never reported (issue 13), and said with -d: SYN-ACKs failing the cookie,
    # and SYN-ACKs for a port never probed (or already decided).
    assert engine.forged_synacks > 0
    assert engine.stray_synacks > 0
    assert "SYN-ACKs for no probe in flight" in caplog.text


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_sharded_workers_each_see_only_their_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """``engines.processes`` as it is: forked workers, each claiming its own source-port
    block and filtering its raw sockets to it, give exactly one result per port."""
    monkeypatch.setitem(ENGINES, "syn", replace(ENGINES["syn"], create=SynEngine))
    listening = [9001, 12000, 45678, 65535]
    plan = ScanPlan.create(parse_targets(["127.0.0.1"]), range(1, 65536), KEY)

    async def collect() -> list[Result]:
        out: list[Result] = []
        async for _closed, _tries, batch, _ports in run_sharded(
            [(plan, s, None) for s in plan.shards(2)], "syn", FAST, closed_as="results"
        ):
            out.extend(batch)
        return out

    with serve({("127.0.0.1", p): "accept" for p in listening}):
        results = asyncio.run(collect())
    assert len(results) == 65535
    assert len({r.port for r in results}) == 65535
    assert sorted(r.port for r in results if r.state is State.OPEN) == listening


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_closed_ports_counted_not_yielded() -> None:
    """``keep_closed=False``: every other result as before, closed ports only counted."""
    engine = SynEngine(keep_closed=False)
    with serve({("127.0.0.1", 7601): "accept"}), input_rules("tcp dport 7602 drop"):
        found = scan("127.0.0.1", range(7600, 7611), engine)
    assert {p: r.state for p, r in found.items()} == {7601: State.OPEN, 7602: State.FILTERED}
    assert engine.closed == 9


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize("closed_as", ["count", "ports"])
def test_sharded_workers_count_closed_ports(
    monkeypatch: pytest.MonkeyPatch, closed_as: ClosedAs
) -> None:
    """``run_sharded`` with the syn engine and closed ports not as results: the counts add
    up to every port not open, and ``"ports"`` hands each closed port out once, compactly."""
    monkeypatch.setitem(ENGINES, "syn", replace(ENGINES["syn"], create=SynEngine))
    listening = [22, 45678]
    plan = ScanPlan.create(parse_targets(["127.0.0.1"]), range(1, 65536), KEY)

    async def collect() -> tuple[int, list[Result], list[int]]:
        closed, out, ports, sent = 0, list[Result](), list[int](), 0
        async for count, tries, batch, groups in run_sharded(
            [(plan, s, None) for s in plan.shards(2)], "syn", FAST, closed_as=closed_as
        ):
            closed += count
            sent += tries + sum(r.tries for r in batch)
            out.extend(batch)
            for group in groups:
                assert group.host == IPv4Address("127.0.0.1")
                assert group.reason is Reason.RESET
                ports.extend(group.ports)
        assert sent >= 65535  # every probe counted, retransmissions too
        return closed, out, ports

    with serve({("127.0.0.1", p): "accept" for p in listening}):
        closed, results, ports = asyncio.run(collect())
    assert sorted(r.port for r in results) == listening
    assert closed == 65535 - len(listening)
    if closed_as == "ports":
        assert sorted(ports) == sorted(set(range(1, 65536)) - set(listening))
    else:
        assert ports == []


@pytest.mark.skipif(os.geteuid() != 0, reason="root only: a capability could also allow it")
def test_raw_sockets_allowed_as_root() -> None:
    assert rawsock.raw_sockets_allowed()


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_sharded_workers_report_closed_ports_as_they_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker whose engine only counts closed ports (nothing yielded) still sends its
    counts every batch tick, not at its end: progress moves, and a Ctrl-C keeps what was
    found (a rate-limited full scan had reported 0 probes after 2 s)."""
    monkeypatch.setitem(ENGINES, "syn", replace(ENGINES["syn"], create=SynEngine))
    plan = ScanPlan.create(parse_targets(["127.0.0.1"]), range(1, 65536), KEY)
    slow = EngineOptions(timing=TimingPolicy().with_options(max_rate=1000.0))

    async def first_count() -> int:
        batches = run_sharded([(plan, s, None) for s in plan.shards(2)], "syn", slow,
                              closed_as="count")  # fmt: skip
        try:
            async for count, _tries, _batch, _groups in batches:
                if count:
                    return count
            return 0
        finally:
            await batches.aclose()

    # 65,535 ports at 1,000/s take a minute: counts must come long before the end.
    assert asyncio.run(asyncio.wait_for(first_count(), timeout=5)) > 0
