"""Timing decisions seen from outside, in the lab: what a scan waits for, and what not.

Each test checks that a scan did not wait for something it had no reason to wait for: the
initial timeout, once a round trip is known. It is set to 5 s here (-T3's is 1 s), so that
waiting for it or not differ by seconds, where the lab needs a few 80 ms round trips: the
bound (half the initial timeout) tells the two apart on any machine. These are no speed
tests; ``benchmarks/lab.py`` measures speed.
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
INITIAL_TIMEOUT = 5.0
POLICY = TimingPolicy().override(initial_rtt_timeout=INITIAL_TIMEOUT)


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
    scan gets the echo's round trip (its first timeout comes from it, not the initial)."""
    with quiet_host():
        started = time.monotonic()
        found = asyncio.run(discover([HOST], EngineOptions(timing=POLICY), raw=True))
        elapsed = time.monotonic() - started
    assert found.up == {HOST: Reason.ECHO_REPLY}
    assert 0.07 <= found.rtts[HOST] < 0.5
    assert elapsed < INITIAL_TIMEOUT / 2, "discovery waited for the silent TCP pings"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("engine", ["async", "syn"])
def test_first_answer_shortens_the_initial_timeout(engine: str) -> None:
    """-Pn, no round trip known: the silent ports' first tries were sent with the initial
    timeout, and the first answer (half the ports answer: one comes in the first window
    but for a chance of 2e-4) brings their wait down to what the answer suggests."""
    with quiet_host():
        started = time.monotonic()
        report = portscout.scan(
            str(HOST),
            "2000-2049",
            engine=engine,
            timing=POLICY,
            discovery=False,
            max_retries=0,
            key=1,
        )
        elapsed = time.monotonic() - started
    assert report.open_ports(HOST) == [2048, 2049]
    assert report.counts[State.FILTERED] == 24
    assert elapsed < INITIAL_TIMEOUT / 2, "the silent ports waited the initial timeout"
