"""The lab seen through plain sockets: listeners, filters, delay, loss, RST limit, teardown.

Every test builds its own ``Lab`` inside the session's private namespace. Tolerances are
loose on purpose: they prove the lab does what it says, they do not benchmark it.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any

import pytest

from portscout.lab import Host, Lab, Link, ListenerMode, Reject, scenarios
from portscout.lab.lab import interfaces

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("isolated")]

HOST = IPv4Address("198.18.7.5")
DOWN = IPv4Address("198.18.7.6")
FIREWALLED = Host(
    address=HOST,
    open={22: ListenerMode.BANNER, 80: ListenerMode.ACCEPT, 81: ListenerMode.CLOSE},
    drop=frozenset({23}),
    reject={24: Reject.PORT_UNREACHABLE, 25: Reject.ADMIN_PROHIBITED, 26: Reject.TCP_RESET},
)


def connect(address: IPv4Address, port: int, timeout: float) -> tuple[int, float]:
    """errno of a blocking connect (0: connected) and how long it took."""
    with socket.socket() as sock:
        sock.settimeout(timeout)
        started = time.monotonic()
        try:
            sock.connect((str(address), port))
        except TimeoutError:
            return errno.ETIMEDOUT, time.monotonic() - started
        except OSError as exc:
            return exc.errno or -1, time.monotonic() - started
        return 0, time.monotonic() - started


def burst(address: IPv4Address, ports: range, wait: float) -> dict[int, int]:
    """Non-blocking connects to every port at once; errno per port after ``wait`` s."""
    socks: dict[int, socket.socket] = {}
    try:
        for port in ports:
            sock = socket.socket()
            sock.setblocking(False)
            socks[port] = sock
            sock.connect_ex((str(address), port))
        time.sleep(wait)
        outcome: dict[int, int] = {}
        for port, sock in socks.items():
            writable = select.select([], [sock], [], 0)[1]
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            outcome[port] = err if writable else errno.ETIMEDOUT
        return outcome
    finally:
        for sock in socks.values():
            sock.close()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab([FIREWALLED, Host(address=DOWN, up=False)], max_seconds=60) as built:
        yield built


@pytest.mark.parametrize(
    ("port", "expected_errno"),
    [
        (80, 0),  # accept
        (81, 0),  # accept-and-close
        (27, errno.ECONNREFUSED),  # closed: the kernel's RST
        (26, errno.ECONNREFUSED),  # reject with tcp reset
        (24, errno.ECONNREFUSED),  # ICMP port unreachable: Linux reports it as refused
        (25, errno.EHOSTUNREACH),  # ICMP admin prohibited
        (23, errno.ETIMEDOUT),  # drop
    ],
)
def test_port_behaviours(lab: Lab, port: int, expected_errno: int) -> None:
    assert connect(HOST, port, timeout=0.5)[0] == expected_errno


def test_banner_and_close(lab: Lab) -> None:
    with socket.create_connection((str(HOST), 22), timeout=2) as sock:
        assert sock.recv(100) == FIREWALLED.banner
    with socket.create_connection((str(HOST), 81), timeout=2) as sock:
        assert sock.recv(100) == b""  # FIN at once


def test_down_host_is_silent(lab: Lab) -> None:
    assert connect(DOWN, 80, timeout=0.5)[0] == errno.ETIMEDOUT


def test_ground_truth(lab: Lab) -> None:
    assert lab.expected_open() == {HOST: frozenset({22, 80, 81})}
    assert lab.expected(HOST, 23) == ("filtered", "no-response")
    assert lab.expected(HOST, 25) == ("filtered", "admin-prohibited")
    assert lab.expected(HOST, 27) == ("closed", "reset")
    assert lab.expected(DOWN, 80) == ("filtered", "no-response")


def test_round_trip_follows_each_hosts_link() -> None:
    rtts = {IPv4Address("198.18.2.1"): 0.0005, IPv4Address("198.18.2.2"): 0.080}
    rtts[IPv4Address("198.18.2.3")] = 0.200
    hosts = [
        Host(address=a, open={80: ListenerMode.ACCEPT}, link=Link(rtt=r)) for a, r in rtts.items()
    ]
    with Lab(hosts, max_seconds=30) as lab:
        for address, rtt in rtts.items():
            times = sorted(connect(address, port, 2.0)[1] for port in (80, 81, 80))
            assert rtt <= times[1] <= rtt + 0.010, (address, times)
        assert not lab.delay_line_stats().saturated()


def test_loss_rate_roughly_as_configured() -> None:
    address = IPv4Address("198.18.3.1")
    host = Host(address=address, open={80: ListenerMode.ACCEPT})
    with Lab([host], link=Link(rtt=0.0005, loss=0.05), seed=7, max_seconds=30) as lab:
        outcome = burst(address, range(1000, 1400), wait=0.3)  # closed ports: SYN out, RST back
        stats = lab.delay_line_stats()
    answered = sum(e == errno.ECONNREFUSED for e in outcome.values())
    # both legs must survive: 0.95 ** 2 = 90.25 %, i.e. 361 of 400, sd ~6
    assert 330 <= answered <= 390
    assert 0.02 <= stats.outbound.lost / stats.outbound.received <= 0.09


def test_rst_limit_silences_closed_ports() -> None:
    address = IPv4Address("198.18.4.1")
    host = Host(address=address)
    with Lab([host], rst_rate=50, rst_burst=5, max_seconds=30) as limited:
        outcome = burst(address, range(2000, 2300), wait=0.4)
        assert not limited.delay_line_stats().saturated()
    refused = sum(e == errno.ECONNREFUSED for e in outcome.values())
    assert 5 <= refused <= 5 + 50 * 0.4 + 15  # burst + rate x time, slack for scheduling
    with Lab([host], max_seconds=30):
        unlimited = burst(address, range(2000, 2300), wait=0.4)
    assert all(e == errno.ECONNREFUSED for e in unlimited.values())


class BodyError(Exception):
    pass


def test_teardown_after_a_failing_body() -> None:
    before = interfaces()
    host = replace(FIREWALLED, address=IPv4Address("198.18.5.1"))
    with pytest.raises(BodyError), Lab([host], max_seconds=30) as lab:  # noqa: PT012
        pids = lab.pids()
        assert lab.scanner_tun in interfaces()
        raise BodyError
    assert interfaces() == before
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}")
    assert not os.path.exists("/run/netns") or os.listdir("/run/netns") == []
    assert connect(host.address, 80, timeout=0.2)[0] == errno.ENETUNREACH  # the route went too


@pytest.mark.parametrize("scenario", [scenarios.one_filtered_host, scenarios.sparse_network])
def test_benchmark_scenarios_build(scenario: Callable[[], dict[str, Any]]) -> None:
    arguments = scenario()
    with Lab(**arguments, max_seconds=30) as lab:
        up = [h for h in lab.hosts if h.up]
        stats = lab.listener_stats()
        assert stats["held"] == 0
        host = up[0]
        port = min(host.open)
        assert connect(host.address, port, timeout=1.0)[0] == 0
