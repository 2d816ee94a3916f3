"""The ordering stage: results in any order in, whole hosts out in address order."""

from __future__ import annotations

import random
from ipaddress import ip_address

from hypothesis import given
from hypothesis import strategies as st

from portscout.output.hosts import BarePort, HostOrder, HostResults, smoothed_rtt
from portscout.plan import HostList
from portscout.results import ClosedPorts, IPAddress, Reason, Result, Service, State
from tests.output.conftest import results_for

HOSTS = [ip_address(f"198.18.0.{i}") for i in range(1, 5)]


@given(st.randoms(use_true_random=False))
def test_hosts_come_out_in_address_order_whatever_the_arrival_order(rng: random.Random) -> None:
    results = [r for h in HOSTS for r in results_for(h, range(1, 11), {3: State.OPEN})]
    rng.shuffle(results)
    order = HostOrder(ports_per_host=10)
    order.plan(HostList(HOSTS), discovery=False)
    out: list[HostResults] = []
    for result in results:
        order.add([result])
        out += order.ready()
    out += order.rest()
    assert [h.address for h in out] == HOSTS
    for host in out:
        assert [r.port for r in host.listed()] == list(range(1, 11))


def test_a_host_is_handed_out_once_it_and_those_before_it_are_done() -> None:
    order = HostOrder(ports_per_host=2)
    order.plan(HostList(HOSTS[:2]), discovery=False)
    first, second = (results_for(h, [1, 2], {}) for h in HOSTS[:2])
    order.add(second)  # the later host completes first: held back
    assert order.ready() == []
    order.add(first[:1])
    assert order.ready() == []
    order.add(first[1:])
    assert [h.address for h in order.ready()] == HOSTS[:2]


def test_with_discovery_a_group_goes_out_when_done_down_hosts_in_place() -> None:
    order = HostOrder(ports_per_host=1)
    order.plan(HostList(HOSTS[:3]), discovery=True)
    order.add(results_for(HOSTS[1], [80], {80: State.OPEN}))
    assert order.ready() == []  # the group is not done: who is down is not known yet
    order.group_done(3, {HOSTS[1]: Reason.ECHO_REPLY}, {HOSTS[1]: 0.002})
    (down1, up, down2) = order.ready()
    assert [(h.address, h.up) for h in (down1, up, down2)] == [
        (HOSTS[0], False), (HOSTS[1], True), (HOSTS[2], False),
    ]  # fmt: skip
    assert (up.reason, up.latency, [r.port for r in up.listed()]) == (
        Reason.ECHO_REPLY, 0.002, [80],
    )  # fmt: skip
    assert (order.handed_up, order.handed_down) == (1, 2)


def test_ping_scan_hosts_go_out_with_their_group() -> None:
    order = HostOrder(ports_per_host=0)
    order.plan(HostList(HOSTS[:2]), discovery=True)
    order.group_done(2, dict.fromkeys(HOSTS[:2], Reason.LOCALHOST_RESPONSE), {})
    assert [h.address for h in order.ready()] == HOSTS[:2]


def test_memory_beyond_the_fold_limit_is_port_numbers_only() -> None:
    host = HostResults(HOSTS[0], limit=25)
    for r in results_for(HOSTS[0], range(1, 1001), {22: State.OPEN}):
        host.add(r)
    assert len(host.kept) == 26  # the open port and 25 closed ones, whole
    assert sum(len(ports) for ports in host.bare.values()) == 974
    assert host.folded() == [State.CLOSED]
    assert [r.port for r in host.listed()] == [22]
    (reason, _, ports) = host.groups(State.CLOSED)[0]
    assert (reason, len(ports), ports[:3]) == (Reason.CONN_REFUSED, 999, [1, 2, 3])
    rows = host.every_port()
    assert [row.port for row in rows] == list(range(1, 1001))
    assert isinstance(rows[-1], BarePort)


def test_closed_groups_from_worker_processes_count_per_host() -> None:
    order = HostOrder(ports_per_host=100)
    address: IPAddress = HOSTS[0]
    order.plan(HostList([address]), discovery=False)
    order.add_closed([ClosedPorts(address, Reason.RESET, list(range(1, 100)))])
    order.add([Result(address, 100, State.OPEN, Reason.SYN_ACK, rtt=0.001)])
    (host,) = order.ready()
    assert host.counts == {State.CLOSED: 99, State.OPEN: 1}
    assert host.latency == 0.001  # no discovery round trip: the ports' smoothed one


def test_smoothed_rtt_is_rfc_6298() -> None:
    assert smoothed_rtt([]) is None
    assert smoothed_rtt([0.1]) == (0.1, 0.05)
    srtt, rttvar = smoothed_rtt([0.1, 0.2]) or (0, 0)
    assert (round(srtt, 6), round(rttvar, 6)) == (0.1125, 0.0625)


def _host(opened: int, closed: int) -> HostResults:
    host = HostResults(HOSTS[0])
    for port in range(1, opened + closed + 1):
        state = State.OPEN if port <= opened else State.CLOSED
        host.add(Result(HOSTS[0], port, state, Reason.SYN_ACK if port <= opened else Reason.RESET))
    return host


def test_a_host_answering_nearly_every_port_is_flagged() -> None:
    """Issue 13: >= 90% of >= 100 probed ports open is a SYN proxy, cookies or a tarpit."""
    assert _host(100, 0).answers_every_port
    assert _host(90, 10).answers_every_port
    assert not _host(89, 11).answers_every_port  # a busy host, not every port
    assert not _host(99, 0).answers_every_port  # too few ports to judge
    flagged = _host(100, 0)
    assert str(flagged.note()).startswith("all-ports-answer: 100 of 100 probed ports")
    assert _host(50, 50).note() is None


def test_only_a_service_that_spoke_makes_a_port_confident() -> None:
    host = _host(120, 0)
    silent = host.kept[0]
    spoke = silent._replace(service=Service(name="ssh", method="probed", confidence=10))
    wrapped = silent._replace(service=Service(name="tcpwrapped", method="probed"))
    guessed = silent._replace(service=Service(name="ssh", method="table", confidence=3))
    assert host.confidence(spoke) == 1.0
    assert host.confidence(silent) == host.confidence(wrapped) == host.confidence(guessed) == 0.2
    assert _host(10, 110).confidence(spoke) is None  # an ordinary host: nothing to doubt


def test_without_listing_down_hosts_only_hosts_up_come_out_and_down_ones_are_counted() -> None:
    order = HostOrder(ports_per_host=1, list_down=False)
    order.plan(HostList(HOSTS), discovery=True)
    order.add(results_for(HOSTS[1], [80], {80: State.OPEN}))
    order.add(results_for(HOSTS[0], [80], {}))  # a host found down (a resumed scan's result)
    order.group_done(3, {HOSTS[1]: Reason.ECHO_REPLY, HOSTS[3]: Reason.SYN_ACK}, {})
    (up,) = order.ready()  # HOSTS[3] is up but its group is not done
    assert (up.address, up.up, up.reason, [r.port for r in up.listed()]) == (
        HOSTS[1], True, Reason.ECHO_REPLY, [80],
    )  # fmt: skip
    assert (order.take_down(), order.take_down()) == (2, 0)
    order.group_done(4, {HOSTS[3]: Reason.SYN_ACK}, {})
    assert [h.address for h in order.ready()] == [HOSTS[3]]
    assert (order.handed_up, order.handed_down, order.take_down()) == (2, 2, 0)
    assert order.rest() == []  # the down host's results were dropped with it


@given(st.sets(st.integers(0, 39)), st.lists(st.integers(1, 40), max_size=6))
def test_hosts_up_and_down_counts_agree_with_listing_them(up: set[int], stops: list[int]) -> None:
    hosts = [ip_address(f"198.18.1.{i}") for i in range(40)]
    found = {hosts[i]: Reason.ECHO_REPLY for i in up}
    listed, counted = HostOrder(ports_per_host=0), HostOrder(ports_per_host=0, list_down=False)
    out: dict[bool, list[HostResults]] = {True: [], False: []}
    for order in (listed, counted):
        order.plan(HostList(hosts), discovery=True)
        for stop in [*sorted(stops), 40]:
            order.group_done(stop, found, {})
            out[order.list_down] += order.ready()
    assert [h.address for h in out[False]] == [h.address for h in out[True] if h.up]
    assert counted.take_down() == listed.handed_down == 40 - len(up)
