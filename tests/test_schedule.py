"""The scheduler on a virtual clock: simulated hosts (round trip, loss, RST rate limits,
silence) answer what it sends, and the tests assert exact states and exact times, in
milliseconds of CPU (trio's ``Scenario`` of fake hosts is the model).

``Lab`` plays the engine: it sends what ``next_batch`` hands out, delivers each answer
after its host's round trip, and lets time jump to the next answer or to the scheduler's
``next_due``. Were the scheduler ever to wait for nothing (no answer coming, nothing due,
probes left), ``Lab.run`` fails with "stalled": the hang the async engine had.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address

import pytest

from portscout.plan import Probe
from portscout.results import IPAddress, Reason, Result, State
from portscout.schedule import MAX_BACKLOG, TRANSITIONS, Flight, Scheduler, Stage
from portscout.timing import TimingPolicy


@dataclass(slots=True, kw_only=True)
class SimHost:
    """A fake target: which ports answer how, after what round trip, with what loss."""

    rtt: float = 0.01
    open: frozenset[int] = frozenset()
    filtered: frozenset[int] = frozenset()  # ports that never answer
    silent: bool = False  # a down host: nothing answers
    loss: float = 0.0  # chance that a probe or its answer is lost, each way
    rst_per_second: float | None = None  # RSTs sent at most (burst 5), as kernels limit
    _bucket: float = 5.0
    _bucket_at: float = 0.0

    def answer(self, port: int, now: float, rng: random.Random) -> State | None:
        if self.silent or port in self.filtered:
            return None
        if rng.random() < self.loss or rng.random() < self.loss:
            return None
        if port in self.open:
            return State.OPEN
        if self.rst_per_second is not None:
            self._bucket = min(5.0, self._bucket + (now - self._bucket_at) * self.rst_per_second)
            self._bucket_at = now
            if self._bucket < 1:
                return None
            self._bucket -= 1
        return State.CLOSED


@dataclass(slots=True)
class Lab:
    """A scan of ``ports`` on ``hosts`` driven to its end on a virtual clock."""

    hosts: dict[IPAddress, SimHost]
    ports: Sequence[int]
    policy: TimingPolicy = field(default_factory=TimingPolicy)
    max_in_flight: int = 2500
    seed: int = 1
    now: float = 0.0
    results: dict[tuple[IPAddress, int], Result] = field(default_factory=dict)
    sent: int = 0
    transitions: set[tuple[Stage | None, Stage | None]] = field(default_factory=set)

    def probes(self) -> Iterator[Probe]:
        return (Probe(h, p) for p in self.ports for h in self.hosts)

    def run(self, *, limit: float = 3600.0) -> Scheduler:
        rng = random.Random(self.seed)
        scheduler = Scheduler(self.policy, self.probes(), now=0.0, max_in_flight=self.max_in_flight)
        answers: list[tuple[float, int, Flight, int, State]] = []
        order = itertools.count()
        seen: dict[Flight, Stage | None] = {}
        while True:
            scheduler.expire(self.now)
            while batch := scheduler.next_batch(self.now):
                for flight in batch:
                    self.sent += 1
                    host = self.hosts[flight.probe.host]
                    state = host.answer(flight.probe.port, self.now, rng)
                    if state is not None:
                        due = self.now + host.rtt
                        heapq.heappush(answers, (due, next(order), flight, flight.tries - 1, state))
                self._observe(batch, seen)
            self._collect(scheduler)
            assert scheduler.in_flight <= scheduler.limit
            assert scheduler.held <= MAX_BACKLOG + scheduler.unit
            if scheduler.idle():
                self._collect(scheduler)
                return scheduler
            due = self.now + scheduler.next_due(self.now)
            if answers:
                due = min(due, answers[0][0])
            assert due < math.inf, f"stalled at {self.now:.3f} s with probes left"
            assert due <= limit, f"still running at {limit} s"
            self.now = max(self.now, due)
            while answers and answers[0][0] <= self.now:
                _, _, flight, tryno, state = heapq.heappop(answers)
                if flight.stage is Stage.DECIDED:
                    continue
                before = flight.stage
                tries = flight.tries
                rtt = scheduler.answered(flight, tryno, self.now)
                self.transitions.add((before, flight.stage))
                reason = Reason.SYN_ACK if state is State.OPEN else Reason.RESET
                probe = flight.probe
                scheduler.done.append(
                    Result(host=probe.host, port=probe.port, state=state, reason=reason,
                           rtt=rtt, tries=tries)
                )  # fmt: skip
            self._observe(list(seen), seen)

    def _observe(self, flights: Sequence[Flight], seen: dict[Flight, Stage | None]) -> None:
        for flight in flights:
            before = seen.get(flight)
            if flight.stage is not before:
                self.transitions.add((before, flight.stage))
                seen[flight] = flight.stage
            if flight.stage is Stage.DECIDED:
                seen.pop(flight, None)

    def _collect(self, scheduler: Scheduler) -> None:
        while scheduler.done:
            result = scheduler.done.popleft()
            key = (result.host, result.port)
            assert key not in self.results, f"{key} decided twice"
            self.results[key] = result
        scheduler.ended.clear()

    def states(self) -> dict[tuple[IPAddress, int], State]:
        return {key: result.state for key, result in self.results.items()}

    def expected(self) -> dict[tuple[IPAddress, int], State]:
        def state(host: SimHost, port: int) -> State:
            if host.silent or port in host.filtered:
                return State.FILTERED
            return State.OPEN if port in host.open else State.CLOSED

        return {(a, p): state(h, p) for a, h in self.hosts.items() for p in self.ports}


def hosts(n: int, **kw: object) -> dict[IPAddress, SimHost]:
    return {IPv4Address(0xC6120000 + i + 1): SimHost(**kw) for i in range(n)}  # type: ignore[arg-type]


def test_a_host_that_drops_everything_ends_at_the_exact_time() -> None:
    # 10 ports, 4 in flight: batches of 4, 4 and 2, each a first try at the 1 s initial
    # timeout and one retry (a host that never answered gets nmap's one retransmission).
    lab = Lab(hosts(1, silent=True), range(1, 11), max_in_flight=4)
    lab.run()
    assert lab.states() == lab.expected()
    assert lab.now == 6.0
    assert {r.tries for r in lab.results.values()} == {2}


def test_silent_hosts_are_pinged_all_at_once() -> None:
    # Discovery of 64 down hosts (TCP pings to 80 and 443): every ping out at once, one
    # retry after the 1 s initial timeout. The async engine took 26 s with its windows.
    lab = Lab(hosts(64, silent=True), (80, 443))
    lab.run()
    assert lab.now == 2.0
    assert lab.sent == 256


def test_filtered_ports_at_t4_take_two_timeouts() -> None:
    # 1000 filtered ports at -T4 (500 ms initial timeout): 1.0 s. nmap -sT -T4: 100 s.
    lab = Lab(hosts(1, filtered=frozenset(range(1, 1001))), range(1, 1001),
              policy=TimingPolicy.template(4))  # fmt: skip
    lab.run()
    assert lab.now == 1.0
    assert set(lab.states().values()) == {State.FILTERED}


def test_a_clean_host_is_decided_in_one_round_trip() -> None:
    lab = Lab(hosts(1, rtt=0.05, open=frozenset({22, 80, 443})), range(1, 1001))
    scheduler = lab.run()
    assert lab.states() == lab.expected()
    assert lab.now == pytest.approx(0.05)
    assert lab.sent == 1000
    assert scheduler.timing.rtt.samples >= 1
    assert all(r.rtt == pytest.approx(0.05) for r in lab.results.values())


def test_a_late_answer_to_a_timed_out_try_decides_the_port() -> None:
    # 1.5 s round trip, 1 s initial timeout: the first try times out and is retried at
    # 1.0 s; its answer at 1.5 s decides the port (open), the retry's answer is ignored.
    lab = Lab(hosts(1, rtt=1.5, open=frozenset({22})), (22,))
    lab.run()
    (result,) = lab.results.values()
    assert (result.state, result.tries, lab.now) == (State.OPEN, 2, 1.5)
    assert result.rtt is None  # answered by the earlier of two tries: not this try's


@pytest.mark.parametrize("seed", range(5))
def test_a_lossy_host_loses_no_answering_port(seed: int) -> None:
    # 5% loss each way: about 10% of tries go unanswered; every answering port still
    # comes out right (loss-based retries), over 2000 ports.
    opened = frozenset(range(1, 2001, 20))
    lab = Lab(hosts(1, rtt=0.02, loss=0.05, open=opened), range(1, 2001), seed=seed)
    lab.run()
    assert lab.states() == lab.expected()
    assert lab.now < 10


@pytest.mark.parametrize("seed", range(3))
def test_rst_rate_limited_hosts_are_throttled_not_filtered(seed: int) -> None:
    # Two hosts answering at most 50 RSTs a second (burst 5), 300 closed ports each.
    lab = Lab(hosts(2, rtt=0.01, rst_per_second=50.0), range(1, 301), seed=seed)
    scheduler = lab.run()
    assert lab.states() == lab.expected()
    assert all(host.throttled for host in scheduler.hosts.values())
    assert lab.now < 30  # 600 RSTs at 100 a second: 6 s, with the retries that found out


def test_the_rate_bounds_every_send() -> None:
    # 1000 probes a second, 128 at once: the 500th leaves at 0.372 s, answered 1 ms later.
    policy = TimingPolicy(max_rate=1000.0)
    lab = Lab(hosts(1, rtt=0.001), range(1, 501), policy=policy)
    lab.run()
    assert lab.now == pytest.approx(0.373)


def test_scan_delay_spaces_a_hosts_probes() -> None:
    lab = Lab(hosts(1, rtt=0.01), range(1, 6), policy=TimingPolicy(scan_delay=0.1))
    lab.run()
    assert lab.now == pytest.approx(0.41)
    assert lab.states() == lab.expected()


def test_memory_is_bounded_by_the_work_in_flight() -> None:
    # 20,000 hosts x 5 ports through a window of 100: never more than 100 in flight and
    # MAX_BACKLOG held (Lab.run asserts both at every step).
    lab = Lab(hosts(20_000, rtt=0.01), range(1, 6), max_in_flight=100)
    lab.run()
    assert len(lab.results) == 100_000


def test_flights_move_only_as_the_table_says() -> None:
    allowed = set(TRANSITIONS.values())
    pairs = {(before, after) for (before, _), after in TRANSITIONS.items()}
    lab = Lab(hosts(3, rtt=0.05, loss=0.2, open=frozenset({1, 7})), range(1, 40), seed=3)
    lab.run()
    lab.transitions.discard((None, None))
    for before, after in lab.transitions:
        assert after in allowed | {None}
        direct = (before, after) in pairs
        # Several moves may happen between two looks (timed out, benched, given up).
        twice = any((before, mid) in pairs and (mid, after) in pairs for mid in Stage)
        assert direct or twice, (before, after)


def test_unsent_flights_go_back_first_and_keep_their_try_count() -> None:
    address = ip_address("198.18.0.1")
    scheduler = Scheduler(
        TimingPolicy(), iter([Probe(address, 1), Probe(address, 2)]), now=0.0, max_in_flight=10
    )
    first, second = scheduler.next_batch(0.0)
    scheduler.unsent(second)
    assert (second.stage, second.tries, scheduler.in_flight) == (Stage.WAITING, 0, 1)
    (again,) = scheduler.next_batch(0.1)
    assert again is second
    assert (again.tries, again.sent) == (1, 0.1)
    # Its expiry is the resend's: nothing times out at 1.0 s but the first try.
    assert scheduler.expire(1.05) == [first]


def test_a_far_host_among_near_ones_is_not_timed_out_by_their_estimate() -> None:
    # 20 hosts at 10 ms make the group's timeout 100 ms (the floor); a host at 250 ms has
    # no sample of its own. Without backing off, both its tries timed out before the first
    # answer came (at 250 ms) and its closed ports came out filtered: host discovery lost
    # such hosts in the lab. Each retry now waits twice as long: the answer is heard.
    near = hosts(20, rtt=0.01)
    far = {ip_address("198.18.1.1"): SimHost(rtt=0.25)}
    lab = Lab(near | far, (80, 443))
    lab.run()
    assert lab.states() == lab.expected()
    assert {r.state for (h, _), r in lab.results.items() if h in far} == {State.CLOSED}


def test_an_answer_stamped_a_hair_before_its_send_is_no_crash() -> None:
    # Receive stamps come from the kernel's realtime clock, sends from the monotonic one:
    # converted, a stamp can read earlier than the send it answers (a ValueError in the
    # RTT estimator once stopped a SYN scan's receiver).
    address = ip_address("198.18.0.1")
    scheduler = Scheduler(TimingPolicy(), iter([Probe(address, 1)]), now=0.0, max_in_flight=4)
    (flight,) = scheduler.next_batch(1.0)
    assert scheduler.answered(flight, 0, 0.9995) == 0.0
    assert flight.stage is Stage.DECIDED
