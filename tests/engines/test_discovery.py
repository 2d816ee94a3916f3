"""Host discovery in the lab: up hosts found by TCP or ICMP ping, down hosts cost no probes.

As root, each of nmap's pings finds a host alone: a lab host's nftables rules drop every
probe but one kind (``Lab(input_rules=...)``)."""

from __future__ import annotations

import asyncio
import logging
from ipaddress import IPv4Address, IPv6Address

import pytest

from portscout import Reason, State
from portscout.engines.pinger import Found, Ping, raw_pings
from portscout.lab import Host, Lab, Link, ListenerMode
from portscout.results import IPAddress
from portscout.running import drive
from portscout.scanner import Scan, ScanConfig
from portscout.timing import TimingPolicy

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("isolated")]

UP_OPEN = IPv4Address("198.18.7.10")
UP_SILENT = IPv4Address("198.18.7.11")  # no listener, every port closed
DOWN = IPv4Address("198.18.7.12")


def lab_hosts() -> list[Host]:
    return [
        Host(address=UP_OPEN, open={22: ListenerMode.ACCEPT}),
        Host(address=UP_SILENT),
        Host(address=DOWN, up=False),
    ]


@pytest.mark.parametrize("engine", ["async", "syn"])
def test_down_hosts_get_no_port_probes(engine: str) -> None:
    with Lab(lab_hosts(), link=Link(rtt=0.010)):
        scan = Scan(ScanConfig(targets=["198.18.7.10-12"], ports="20-25", engine=engine))
        results = [r for batch in drive(scan) for r in batch]
    report = scan.report
    assert report.hosts_up is not None
    assert set(report.hosts_up) == {UP_OPEN, UP_SILENT}
    assert report.hosts_total == 3
    assert {r.host for r in results} == {UP_OPEN, UP_SILENT}
    assert [r.port for r in results if r.state is State.OPEN] == [22]
    assert report.probes_planned == 12


def test_ping_only_and_no_ping() -> None:
    with Lab(lab_hosts(), link=Link(rtt=0.010)):
        ping_only = Scan(ScanConfig(targets=["198.18.7.10-12"], ping_only=True))
        assert not [r for batch in drive(ping_only) for r in batch]
        no_ping = Scan(
            ScanConfig(
                targets=["198.18.7.12"], ports="22", discovery=False, engine="async", timeout=0.2
            )
        )
        (result,) = [r for batch in drive(no_ping) for r in batch]
    assert ping_only.report.hosts_up is not None
    assert set(ping_only.report.hosts_up) == {UP_OPEN, UP_SILENT}
    assert no_ping.report.hosts_up is None
    assert (result.state, result.reason) == (State.FILTERED, Reason.NO_RESPONSE)


def test_loopback_is_up_without_a_probe() -> None:
    scan = Scan(ScanConfig(targets=["127.0.0.1"], ports="1", ping_only=True))
    list(drive(scan))
    assert scan.report.hosts_up == {IPv4Address("127.0.0.1"): Reason.LOCALHOST_RESPONSE}


@pytest.mark.parametrize("engine", ["async", "syn"])
def test_host_groups_give_the_same_scan(engine: str) -> None:
    with Lab(lab_hosts(), link=Link(rtt=0.010)):
        scans = [
            Scan(
                ScanConfig(targets=["198.18.7.10-12"], ports="20-25", engine=engine, hostgroup=size)
            )
            for size in (1, 2, 4096)
        ]
        found = [{(r.host, r.port, r.state) for b in drive(s) for r in b} for s in scans]
    assert found[0] == found[1] == found[2]
    assert all(s.report.hosts_up is not None and len(s.report.hosts_up) == 2 for s in scans)
    assert [s.report.probes_planned for s in scans] == [12, 12, 12]


def test_icmpv6_echo_finds_an_ipv6_host() -> None:
    # ::1 stands for an IPv6 host whose TCP ports 80 and 443 are filtered: only the
    # ICMPv6 echo can find it (the TCP pings are not sent here).
    found = Found([IPv6Address("::1")], TimingPolicy())
    asyncio.run(raw_pings([IPv6Address("::1")], TimingPolicy(), found, kinds=[Ping.ECHO]))
    assert found.result.up == {IPv6Address("::1"): Reason.ECHO_REPLY}
    assert IPv6Address("::1") in found.result.rtts


@pytest.mark.parametrize(("kind", "reason"), [(Ping.SYN, Reason.RESET), (Ping.ACK, Reason.RESET)])
def test_tcp_pings_find_an_ipv6_host(kind: Ping, reason: Reason) -> None:
    # ::1 has no listener on 443 or 80: the SYN's RST-ACK and the ACK's RST.
    found = Found([IPv6Address("::1")], TimingPolicy())
    asyncio.run(raw_pings([IPv6Address("::1")], TimingPolicy(), found, kinds=[kind]))
    assert found.result.up == {IPv6Address("::1"): reason}


ACK_ONLY = IPv4Address("198.18.7.20")  # answers only the ACK to 80 (with its RST)
TIMESTAMP_ONLY = IPv4Address("198.18.7.21")  # answers only the ICMP timestamp request
ECHO_ONLY = IPv4Address("198.18.7.22")  # answers only the ICMP echo request
SYN_ONLY = IPv4Address("198.18.7.23")  # answers only the SYN to 443 (with a RST-ACK)
SILENT = IPv4Address("198.18.7.24")  # up, but drops every ping: not found, as with nmap
SYN = "tcp flags & (syn | ack) == syn"
ONE_KIND_ONLY = (
    f"ip daddr {ACK_ONLY} icmp type {{ echo-request, timestamp-request }} drop",
    f"ip daddr {ACK_ONLY} {SYN} drop",
    f"ip daddr {TIMESTAMP_ONLY} icmp type echo-request drop",
    f"ip daddr {TIMESTAMP_ONLY} meta l4proto tcp drop",
    f"ip daddr {ECHO_ONLY} icmp type timestamp-request drop",
    f"ip daddr {ECHO_ONLY} meta l4proto tcp drop",
    f"ip daddr {SYN_ONLY} meta l4proto icmp drop",
    f"ip daddr {SYN_ONLY} tcp dport 80 drop",
    f"ip daddr {SILENT} meta l4proto {{ tcp, icmp }} drop",
)


def one_kind_lab() -> Lab:
    hosts = [Host(address=a) for a in (ACK_ONLY, TIMESTAMP_ONLY, ECHO_ONLY, SYN_ONLY, SILENT)]
    return Lab(hosts, link=Link(rtt=0.010), input_rules=ONE_KIND_ONLY, max_seconds=60)


@pytest.mark.timeout(60)
def test_a_host_answering_one_ping_kind_is_up() -> None:
    """nmap -PE -PS443 -PA80 -PP: any one answer finds the host, each with its reason."""
    with one_kind_lab():
        scan = Scan(ScanConfig(targets=["198.18.7.20-24"], ping_only=True))
        list(drive(scan))
    assert scan.report.hosts_up == {
        ACK_ONLY: Reason.RESET,
        TIMESTAMP_ONLY: Reason.TIMESTAMP_REPLY,
        ECHO_ONLY: Reason.ECHO_REPLY,
        SYN_ONLY: Reason.RESET,
    }


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("kind", "host"),
    [(Ping.ACK, ACK_ONLY), (Ping.TIMESTAMP, TIMESTAMP_ONLY), (Ping.ECHO, ECHO_ONLY),
     (Ping.SYN, SYN_ONLY)],
)  # fmt: skip
def test_each_ping_kind_alone_finds_only_its_host(kind: Ping, host: IPv4Address) -> None:
    hosts = [ACK_ONLY, TIMESTAMP_ONLY, ECHO_ONLY, SYN_ONLY, SILENT]
    with one_kind_lab():
        found = Found(hosts, TimingPolicy())
        asyncio.run(raw_pings(hosts, TimingPolicy(), found, kinds=[kind]))
    assert set(found.result.up) == {host}
    assert host in found.result.rtts


@pytest.mark.parametrize(("retries", "packets"), [(0, 1), (1, 2), (10, 2)])
def test_ping_rounds_follow_max_retries(
    retries: int, packets: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A silent host gets a ping of each kind a round: two rounds (nmap retransmits a
    ping once), one where --max-retries 0 gives every probe a single try."""
    policy = TimingPolicy(max_retries=retries)
    with Lab(lab_hosts(), link=Link(rtt=0.010)), caplog.at_level(logging.DEBUG):
        found = Found([DOWN], policy)
        asyncio.run(raw_pings([DOWN], policy, found, kinds=[Ping.ECHO]))
    assert not found.result.up
    assert f"pings: {packets} packets to 1 hosts, 0 up" in caplog.text


def test_a_group_pinged_ahead_is_reported_in_its_turn() -> None:
    """The next group is pinged while this one's ports are scanned; its hosts join the
    report (and the outputs) only once its own turn comes."""
    with Lab(lab_hosts(), link=Link(rtt=0.010)):
        scan = Scan(ScanConfig(targets=["198.18.7.10-12"], ports="20-25", hostgroup=1))
        seen: list[set[IPAddress]] = []
        scan.on_group_done = lambda group: seen.append(set(scan.report.hosts_up or ()))
        results = [r for batch in drive(scan) for r in batch]
    assert seen == [{UP_OPEN}, {UP_OPEN, UP_SILENT}, {UP_OPEN, UP_SILENT}]
    assert {r.host for r in results} == {UP_OPEN, UP_SILENT}
