"""Every connect engine gives the same, correct states on the same targets.

Runs in the test session's private network namespace (tests/conftest.py): listeners are
opened here, firewall rules are this namespace's own, nothing leaves the machine.
"""

from __future__ import annotations

import socket
from ipaddress import ip_address

import pytest

from portscout import Reason, State, iscan
from portscout.engines import CONNECT_ENGINES
from tests.engines.conftest import ephemeral_range, nft_rules, serve

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("isolated")]

ENGINE_NAMES = sorted(CONNECT_ENGINES)
FAST = {"timeout": 0.3, "max_retries": 1}


def states(
    target: str, ports: str, engine: str, **options: object
) -> dict[int, tuple[State, Reason]]:
    results = list(iscan(target, ports, engine=engine, **FAST, **options))
    found = {r.port: (r.state, r.reason) for r in results}
    assert len(found) == len(results), "a port was reported twice"
    return found


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_open_closed_and_accept_close(engine: str) -> None:
    listeners = {("127.0.0.1", 7101): "accept", ("127.0.0.1", 7102): "accept-close",
                 ("127.0.0.1", 7103): "banner"}  # fmt: skip
    with serve(listeners):
        found = states("127.0.0.1", "7100-7110", engine)
    assert set(found) == set(range(7100, 7111))
    opened = {p for p, (s, _) in found.items() if s is State.OPEN}
    assert opened == {7101, 7102, 7103}
    assert found[7101] == (State.OPEN, Reason.SYN_ACK)
    assert found[7100] == (State.CLOSED, Reason.CONN_REFUSED)


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_ipv6_loopback(engine: str) -> None:
    with serve({("::1", 7201): "accept"}):
        results = list(iscan("::1", "7200-7202", engine=engine, **FAST))
    assert {r.port: r.state for r in results} == {
        7200: State.CLOSED, 7201: State.OPEN, 7202: State.CLOSED,
    }  # fmt: skip
    assert all(r.host == ip_address("::1") for r in results)


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_self_connect_is_never_open(engine: str) -> None:
    """With a 16-port ephemeral range, connects to those very ports meet themselves."""
    with ephemeral_range(40000, 40015):
        assert _self_connect_happens(40000, 40015), "the trap did not arm; test is void"
        found = states("127.0.0.1", "40000-40015", engine)
    assert {s for s, _ in found.values()} == {State.CLOSED}


def _self_connect_happens(low: int, high: int) -> bool:
    """Naive connects, as the study's scripts made them, do hit a phantom open port (the
    kernel's choice of source port is not uniform: 50 rounds once missed, in CI)."""
    for _ in range(500):
        for port in range(low, high + 1):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    local_port: int = sock.getsockname()[1]
                    return local_port == port
    return False


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_filtered_ports(engine: str) -> None:
    rules = ("tcp dport 7301 drop", "tcp dport 7302 reject with icmp type admin-prohibited")
    with nft_rules(*rules):
        found = states("127.0.0.1", "7300-7302", engine)
    assert found[7300] == (State.CLOSED, Reason.CONN_REFUSED)
    assert found[7301] == (State.FILTERED, Reason.NO_RESPONSE)
    assert found[7302] == (State.FILTERED, Reason.HOST_UNREACH)


def test_dropped_port_is_retried_before_filtered() -> None:
    """A host that has lost nothing gets one retransmission (nmap's allowance), no more."""
    with nft_rules("tcp dport 7401 drop"):
        (result,) = list(iscan("127.0.0.1", "7401", engine="async", timeout=0.2, max_retries=5))
    assert result.state is State.FILTERED
    assert result.tries == 2


def test_engines_agree_on_a_mixed_range() -> None:
    listeners = {("127.0.0.1", p): "accept" for p in (7500, 7507, 7555)}
    with serve(listeners), nft_rules("tcp dport 7520 drop"):
        per_engine = {engine: states("127.0.0.1", "7500-7560", engine) for engine in ENGINE_NAMES}
    reference = per_engine["async"]
    for engine, found in per_engine.items():
        assert found == reference, engine


def test_sharded_processes_equal_one_process() -> None:
    listeners = {("127.0.0.1", p): "accept" for p in (9001, 12000, 45678, 65535)}
    with serve(listeners):
        one = states("127.0.0.1", "1-65535", "async", processes=1)
        two = states("127.0.0.1", "1-65535", "async", processes=2)
    assert one == two
    assert sorted(p for p, (s, _) in one.items() if s is State.OPEN) == [9001, 12000, 45678, 65535]


def test_fd_exhaustion_is_backpressure_not_a_crash() -> None:
    """With almost no descriptors left, the scan slows down but stays exact."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hog: list[socket.socket] = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
        with serve({("127.0.0.1", 7601): "accept"}):
            with pytest.raises(OSError, match="Too many open files"):  # noqa: PT012
                while True:
                    hog.append(socket.socket())
            for sock in hog[-3:]:  # leave a few descriptors free
                sock.close()
            del hog[-3:]
            found = states("127.0.0.1", "7590-7610", "async", max_in_flight=64, processes=1)
    finally:
        for sock in hog:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert sorted(p for p, (s, _) in found.items() if s is State.OPEN) == [7601]
    assert len(found) == 21
