"""Timing decisions seen from outside, in the lab: what a scan waits for, and what not.

Each test checks that a scan did not wait for something it had no reason to wait for (the
1 s initial timeout of -T3 when a round trip was already known). The bounds are a large
multiple of what the lab needs (80 ms round trips), so that a busy machine does not fail
them; the speed itself is measured by ``benchmarks/lab.py``.
"""

from __future__ import annotations

import asyncio
import time
from ipaddress import IPv4Address

import pytest

import portscout
from portscout.engines.base import EngineOptions
from portscout.engines.discovery import discover
from portscout.lab import Host, Lab, Link, ListenerMode
from portscout.results import Reason, State
from portscout.timing import TimingPolicy

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("isolated")]

HOST = IPv4Address("198.18.42.10")
INITIAL_TIMEOUT = TimingPolicy().initial_rtt_timeout  # 1 s at -T3


def quiet_host() -> Lab:
    """One host, 80 ms away, that answers ICMP echo but drops ports 80, 443 and 2000-2023;
    2048 and 2049 are open, 2024-2047 closed."""
    host = Host(
        address=HOST,
        open={2048: ListenerMode.ACCEPT, 2049: ListenerMode.ACCEPT},
        drop=frozenset({80, 443, *range(2000, 2024)}),
    )
    return Lab([host], link=Link(rtt=0.080), seed=1, max_seconds=60)


@pytest.mark.timeout(60)
def test_discovery_ends_at_the_echo_reply_and_times_it() -> None:
    """The TCP pings of a host that answered the echo are not waited for, and the port
    scan gets the echo's round trip (its first timeout comes from it, not from -T3's 1 s)."""
    with quiet_host():
        started = time.monotonic()
        found = asyncio.run(discover([HOST], EngineOptions(timing=TimingPolicy()), icmp=True))
        elapsed = time.monotonic() - started
    assert found.up == {HOST: Reason.ECHO_REPLY}
    assert 0.07 <= found.rtts[HOST] < 0.5
    assert elapsed < 0.8 * INITIAL_TIMEOUT, "discovery waited for the silent TCP pings"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("engine", ["async", "syn"])
def test_first_answer_shortens_the_initial_timeout(engine: str) -> None:
    """-Pn, no round trip known: the silent ports' first tries were sent with the initial
    timeout, and the first answer (half the ports answer: one comes in the first window
    but for a chance of 2e-4) brings their wait down to what the answer suggests."""
    with quiet_host():
        started = time.monotonic()
        report = portscout.scan(
            str(HOST), "2000-2049", engine=engine, discovery=False, max_retries=0, key=1
        )
        elapsed = time.monotonic() - started
    assert report.open_ports() == [2048, 2049]
    assert report.counts[State.FILTERED] == 24
    assert elapsed < 0.8 * INITIAL_TIMEOUT, "the silent ports waited the initial timeout"
