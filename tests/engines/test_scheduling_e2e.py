"""The scheduler's fixes, end to end through the real engines in the test namespace: hosts
that drop everything, tiny descriptor limits, silent hosts in discovery, filtered ports at
-T4, services that reset at once. ``tests/test_schedule.py`` has the exact times on a
virtual clock; here the pytest timeout and generous bounds catch a hang or a crawl.
"""

from __future__ import annotations

import asyncio
import errno
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from ipaddress import IPv4Address, ip_address, ip_network
from typing import Any

import pytest

from portscout import Reason, State, iscan
from portscout.engines.async_connect import AsyncConnectEngine
from portscout.engines.base import CONNECT_ERRORS, EngineOptions
from portscout.engines.discovery import discover
from portscout.lab import Host, Lab, Link, ListenerMode
from portscout.plan import Probe
from portscout.results import Result
from portscout.timing import TimingPolicy
from tests.engines.conftest import nft_rules, serve

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("isolated")]


def test_a_dropping_host_with_four_in_flight_finishes() -> None:
    # Was: 4 sockets in SYN-SENT, no connect() for 20 s and more (timed-out tries held
    # the in-flight limit their own retries needed).
    with nft_rules("ip daddr 127.0.0.5 drop"):
        started = time.monotonic()
        results = list(iscan("127.0.0.5", "1-10", engine="async", discovery=False,
                             max_in_flight=4))  # fmt: skip
        elapsed = time.monotonic() - started
    assert sorted(r.port for r in results) == list(range(1, 11))
    assert {(r.state, r.reason) for r in results} == {(State.FILTERED, Reason.NO_RESPONSE)}
    assert elapsed < 30  # 6 s on a virtual clock (tests/test_schedule.py)


@pytest.mark.parametrize("engine", ["async", "syn"])
def test_filtered_ports_at_t4_do_not_crawl(engine: str) -> None:
    # Was: 100 s for the async engine (a window of 10 that only answers can grow).
    with nft_rules("ip daddr 127.0.0.6 drop"):
        started = time.monotonic()
        results = list(iscan("127.0.0.6", "1-1000", engine=engine, discovery=False,
                             timing=TimingPolicy.template(4)))  # fmt: skip
        elapsed = time.monotonic() - started
    assert len(results) == 1000
    assert {r.state for r in results} == {State.FILTERED}
    assert elapsed < 20  # 1.0 s on a virtual clock


def test_discovery_of_silent_hosts_does_not_crawl() -> None:
    # 64 addresses of this namespace whose packets are dropped: the connect pings.
    network = ip_network("198.18.9.0/26")
    subprocess.run(["ip", "addr", "add", str(network), "dev", "lo"], check=True)
    try:
        with nft_rules(f"ip daddr {network} drop"):
            options = EngineOptions(max_in_flight=64, timing=TimingPolicy())
            started = time.monotonic()
            found = asyncio.run(discover(list(network), options, raw=False))
            elapsed = time.monotonic() - started
    finally:
        subprocess.run(["ip", "addr", "del", str(network), "dev", "lo"], check=False)
    assert found.up == {}
    assert elapsed < 30  # 4 s on a virtual clock; was 0.4 s a host


@pytest.mark.parametrize("limit", [70, 100])
def test_a_tiny_descriptor_limit_on_a_filtered_host_finishes(limit: int) -> None:
    # Was: over 10 minutes at ulimit -n 70 (lingering tries filled the descriptor budget).
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))
        from portscout import iscan
        results = list(iscan("127.0.0.7", "1-20", engine="async", discovery=False))
        print(sorted({{r.state.value for r in results}}), len(results))
    """)
    with nft_rules("ip daddr 127.0.0.7 drop"):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=90, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['filtered']", "20"]


def test_a_service_that_resets_at_once_is_open() -> None:
    assert CONNECT_ERRORS[errno.ECONNRESET] == (State.OPEN, Reason.SYN_ACK)
    with serve({("127.0.0.1", 7301): "accept-reset"}):
        for engine in ("async", "syn", "sequential"):
            found = {r.port: r.state for r in iscan("127.0.0.1", "7300-7302", engine=engine)}
            assert found == {7300: State.CLOSED, 7301: State.OPEN, 7302: State.CLOSED}, engine


def test_a_target_without_source_address_does_not_stop_the_syn_scan() -> None:
    # fe80::1 has no scope here: no route, no source address. Was: ScanError, nothing
    # recorded for the other target.
    results = list(iscan(["fe80::1", "127.0.0.1"], "1-3", engine="syn", discovery=False))
    by_host = {(str(r.host), r.port): r.state for r in results}
    assert len(by_host) == 6
    assert {by_host[("127.0.0.1", p)] for p in (1, 2, 3)} == {State.CLOSED}
    assert {by_host[("fe80::1", p)] for p in (1, 2, 3)} == {State.FILTERED}
    assert ip_address("fe80::1") in {r.host for r in results}


@pytest.mark.parametrize("engine", ["async", "syn"])
def test_each_probe_reports_its_own_round_trip(engine: str) -> None:
    # 30 ms each way through the lab's delay line: each answered port's rtt is that round
    # trip, not a batch's (the event loop's wait once made loopback ports read 2-38 ms).
    host = Host(address=IPv4Address("198.18.8.10"), open={22: ListenerMode.ACCEPT})
    with Lab([host], link=Link(rtt=0.060)):
        results = list(iscan("198.18.8.10", "20-40", engine=engine, discovery=False))
    rtts = [r.rtt for r in results if r.state is not State.FILTERED]
    assert len(rtts) == 21
    assert all(rtt is not None and 0.055 < rtt < 0.2 for rtt in rtts), rtts


def test_syn_answers_are_timed_one_by_one() -> None:
    # Read 64 at a time, answers once shared their batch's read time: 2,000 closed ports
    # showed a few dozen distinct round trips. The kernel stamps each one.
    results = list(iscan("127.0.0.1", "1-2000", engine="syn", discovery=False, processes=1))
    rtts = [r.rtt for r in results if r.rtt is not None]
    assert len(rtts) == 2000
    assert len(set(rtts)) > 1800


class _SpuriousWakeups(asyncio.SelectorEventLoop):
    """Wakes every writer once as soon as it is added, before any answer could be in: the
    spurious wakeup Go's connect guards against (golang/go#14548, #19289)."""

    def add_writer(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None:  # type: ignore[override]  # the generic signature, loosened
        super().add_writer(fd, callback, *args)
        self.call_soon(callback, *args)


def test_a_wakeup_without_an_answer_decides_nothing() -> None:
    # Was: SO_ERROR 0 after any writer wakeup meant "connected", so a port whose SYN was
    # dropped (SYN-SENT, SO_ERROR 0) came out open: the async engine's two false opens
    # under load in tests/lab/test_scan_accuracy.py.
    engine = AsyncConnectEngine()
    options = EngineOptions(timing=TimingPolicy().with_options(timeout=0.2, max_retries=1))
    probes = [Probe(IPv4Address("127.0.0.9"), port) for port in range(1, 21)]
    probes += [Probe(IPv4Address("127.0.0.1"), port) for port in (7411, 7412)]

    async def run() -> list[Result]:
        return [r async for r in engine.run(iter(probes), options)]

    with (
        serve({("127.0.0.1", 7411): "accept"}),
        nft_rules("ip daddr 127.0.0.9 drop"),
        asyncio.Runner(loop_factory=_SpuriousWakeups) as runner,
    ):
        results = {(str(r.host), r.port): r for r in runner.run(run())}
    dropped = [results["127.0.0.9", port] for port in range(1, 21)]
    assert {(r.state, r.reason) for r in dropped} == {(State.FILTERED, Reason.NO_RESPONSE)}
    assert results["127.0.0.1", 7411].state is State.OPEN
    assert results["127.0.0.1", 7412].state is State.CLOSED
