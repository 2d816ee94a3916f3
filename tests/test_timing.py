"""Timing core: fed recorded events and a fake clock; no network, no sleep."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portscout.errors import OptionError
from portscout.host_timing import HostTiming, ScanTiming
from portscout.timing import (
    CongestionWindow,
    RttEstimator,
    TimingPolicy,
    TokenBucket,
    behind_min_rate,
    loss_retries,
    parse_duration,
    parse_template,
)

# --- parse_duration / parse_template ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("0.5", 0.5),
        ("30", 30.0),
        (".25s", 0.25),
        ("0ms", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ms", "-1s", "1 s", "1x", "inf", "nan", "1e3", "1S", "5mss"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(OptionError, match="invalid time"):
        parse_duration(text)


def test_parse_duration_names_the_option() -> None:
    with pytest.raises(OptionError, match=r"^invalid time '5x' for --host-timeout "):
        parse_duration("5x", option="--host-timeout")


@pytest.mark.parametrize(
    ("text", "level"), [("0", 0), ("5", 5), ("paranoid", 0), ("Aggressive", 4), ("INSANE", 5)]
)
def test_parse_template(text: str, level: int) -> None:
    assert parse_template(text) == level


@pytest.mark.parametrize("text", ["6", "-1", "fast", ""])
def test_parse_template_rejects(text: str) -> None:
    with pytest.raises(OptionError, match="invalid timing template"):
        parse_template(text)


# --- TimingPolicy ----------------------------------------------------------------------


def test_defaults_are_normal_template() -> None:
    assert TimingPolicy() == TimingPolicy.template(3)


# level: (initial, min, max rtt timeout, retries, host timeout, max parallelism,
#         scan delay, max scan delay), from nmap.cc's -T handling and nmap.h defaults.
TEMPLATES = {
    0: (300.0, 0.1, 300.0, 10, None, 1, 300.0, 300.0),
    1: (15.0, 0.1, 15.0, 10, None, 1, 15.0, 15.0),
    2: (1.0, 0.1, 10.0, 10, None, 1, 0.4, 1.0),
    3: (1.0, 0.1, 10.0, 10, None, 2500, 0.0, 1.0),
    4: (0.5, 0.1, 1.25, 6, None, 2500, 0.0, 0.01),
    5: (0.25, 0.05, 0.3, 2, 900.0, 2500, 0.0, 0.005),
}


@pytest.mark.parametrize("level", sorted(TEMPLATES))
def test_template_values(level: int) -> None:
    p = TimingPolicy.template(level)
    got = (
        p.initial_rtt_timeout,
        p.min_rtt_timeout,
        p.max_rtt_timeout,
        p.max_retries,
        p.host_timeout,
        p.max_parallelism,
        p.scan_delay,
        p.max_scan_delay,
    )
    assert (p.level, got) == (level, TEMPLATES[level])


@pytest.mark.parametrize("level", [-1, 6])
def test_template_rejects_level(level: int) -> None:
    with pytest.raises(OptionError, match=rf"-T{level} \(use 0-5\)"):
        TimingPolicy.template(level)


def test_policy_is_frozen() -> None:
    p = TimingPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.max_retries = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"min_rtt_timeout": 2.0, "max_rtt_timeout": 1.0, "initial_rtt_timeout": 1.0},
            "--min-rtt-timeout 2s exceeds --max-rtt-timeout 1s",
        ),
        (
            {"initial_rtt_timeout": 0.05, "min_rtt_timeout": 0.1},
            "--min-rtt-timeout 100ms exceeds --initial-rtt-timeout 50ms",
        ),
        ({"min_rate": 100.0, "max_rate": 10.0}, "--min-rate 100 exceeds --max-rate 10"),
        (
            {"min_parallelism": 20, "max_parallelism": 10},
            "--min-parallelism 20 exceeds --max-parallelism 10",
        ),
        ({"max_retries": -1}, "--max-retries -1 must not be negative"),
        ({"min_parallelism": 0}, "--min-parallelism 0 must be at least 1"),
        ({"max_rate": 0.0}, "--max-rate 0 must be a positive number"),
        ({"max_rate": math.inf}, "--max-rate inf must be a positive number"),
        ({"host_timeout": 0.0}, "--host-timeout 0 must be positive seconds"),
        ({"scan_delay": -1.0}, "--scan-delay -1 must be at least 0 seconds"),
        ({"initial_rtt_timeout": math.nan}, "--initial-rtt-timeout nan must be positive"),
        ({"level": 7}, "invalid timing level 7"),
    ],
)
def test_policy_validation(changes: dict[str, float | int | None], message: str) -> None:
    with pytest.raises(OptionError, match="^" + message.replace("+", r"\+")) as info:
        TimingPolicy().override(**changes)  # every field given: nothing bends
    assert "\n" not in str(info.value)


def test_override_bends_template_values_to_given_ones() -> None:
    # nmap: --max-rtt-timeout lowers the initial timeout; --min-parallelism raises the max.
    p = TimingPolicy.template(0).override(max_rtt_timeout=1.0)
    assert (p.initial_rtt_timeout, p.max_rtt_timeout) == (1.0, 1.0)
    p = TimingPolicy.template(2).override(min_parallelism=10)
    assert (p.min_parallelism, p.max_parallelism) == (10, 10)
    p = TimingPolicy.template(5).override(min_rtt_timeout=0.5)
    assert (p.min_rtt_timeout, p.initial_rtt_timeout, p.max_rtt_timeout) == (0.5, 0.5, 0.5)
    p = TimingPolicy().override(scan_delay=2.0)
    assert p.max_scan_delay == 2.0
    p = TimingPolicy().override(min_rate=50.0, host_timeout=None)
    assert (p.min_rate, p.max_rate) == (50.0, None)


def test_override_rejects_two_given_values_that_conflict() -> None:
    with pytest.raises(OptionError, match=r"^--min-rtt-timeout 2s exceeds --max-rtt-timeout 1s$"):
        TimingPolicy.template(4).override(min_rtt_timeout=2.0, max_rtt_timeout=1.0)


def test_override_rejects_unknown_field() -> None:
    with pytest.raises(TypeError, match="max_retrys"):
        TimingPolicy().override(max_retrys=3)


# --- RttEstimator ----------------------------------------------------------------------


def _estimator(initial: float = 1.0, minimum: float = 0.0, maximum: float = 60.0) -> RttEstimator:
    return RttEstimator(initial=initial, minimum=minimum, maximum=maximum)


def test_rtt_initial_timeout_before_samples() -> None:
    assert _estimator(initial=1.0).timeout == 1.0
    assert _estimator(initial=5.0, maximum=2.0).timeout == 2.0


def test_rtt_rfc6298_known_sequence() -> None:
    # Hand-computed with alpha 1/8, beta 1/4, K 4 (binary fractions: exact in floats).
    est = _estimator()
    expected = [  # sample -> (srtt, rttvar, timeout)
        (1.0, (1.0, 0.5, 3.0)),  # first: srtt = r, rttvar = r/2
        (2.0, (1.125, 0.625, 3.625)),  # rttvar = .75*.5 + .25*1; srtt = .875 + .25
        (1.0, (1.109375, 0.5, 3.109375)),  # rttvar = .75*.625 + .25*.125
    ]
    for sample, (srtt, rttvar, timeout) in expected:
        assert est.observe(sample)
        assert (est.srtt, est.rttvar, est.timeout) == (srtt, rttvar, timeout)
    assert est.samples == 3


def test_rtt_ambiguous_sample_is_ignored() -> None:
    # Karn: an answer that may belong to either of two transmissions says nothing.
    est = _estimator()
    est.observe(0.5)
    assert not est.observe(9.0, ambiguous=True)
    assert (est.srtt, est.rttvar, est.samples) == (0.5, 0.25, 1)


def test_rtt_timeout_is_clamped() -> None:
    est = _estimator(minimum=0.1, maximum=10.0)
    est.observe(0.001)
    assert est.timeout == 0.1
    est = _estimator(minimum=0.1, maximum=10.0)
    est.observe(8.0)
    assert est.timeout == 10.0


@pytest.mark.parametrize("rtt", [-0.001, math.nan])
def test_rtt_rejects_bad_sample(rtt: float) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        _estimator().observe(rtt)


@given(
    a=st.floats(0, 100),
    b=st.floats(0, 100),
    initial=st.floats(0.001, 1000),
    samples=st.lists(st.tuples(st.floats(0, 1e4), st.booleans()), max_size=50),
)
def test_rtt_timeout_always_within_clamps(
    a: float, b: float, initial: float, samples: list[tuple[float, bool]]
) -> None:
    low, high = min(a, b), max(a, b)
    est = RttEstimator(initial=initial, minimum=low, maximum=high)
    assert low <= est.timeout <= high
    for rtt, ambiguous in samples:
        est.observe(rtt, ambiguous=ambiguous)
        assert low <= est.timeout <= high
        assert est.rttvar is None or est.rttvar >= 0


# --- CongestionWindow ------------------------------------------------------------------


def test_window_slow_start_then_congestion_avoidance() -> None:
    w = CongestionWindow(TimingPolicy(max_parallelism=100))
    assert (w.cwnd, w.ssthresh) == (10, 100)  # slow start runs up to the ceiling
    for _ in range(50):  # slow start: +1 per answer while every probe is answered
        w.on_answer()
    assert w.cwnd == 60
    w.on_drop(60, sent=1.0, now=2.0)
    assert (w.cwnd, w.ssthresh) == (30, 40.0)
    for _ in range(10):
        w.on_answer()
    assert w.cwnd == 40
    w.on_answer()  # congestion avoidance: +ca_incr/cwnd = +1/40
    assert 40 < w.cwnd <= 41
    assert w.can_send(40)
    assert not w.can_send(41)


def test_window_answers_weigh_more_when_most_probes_are_unanswered() -> None:
    # nmap's cc_scale: 1 answer for 10 probes grows the window as 10 answers would.
    w = CongestionWindow(TimingPolicy())
    for _ in range(9):
        w.on_no_answer()
    assert w.cwnd == 10
    w.on_answer()
    assert w.cwnd == 20


def test_window_host_drop_halves_and_lowers_ssthresh() -> None:
    # nmap drops a host's window to min_parallelism; portscout halves it, as TCP does.
    w = CongestionWindow(TimingPolicy(min_parallelism=2))
    for _ in range(30):
        w.on_answer()
    assert w.on_drop(30, sent=5.0, now=6.0)
    assert (w.cwnd, w.ssthresh, w.drops) == (20, 20.0, 1)  # ssthresh = 30 / 1.5 at -T3
    for _ in range(10):
        w.on_drop(1, sent=10.0 + _, now=10.5 + _)
    assert w.cwnd == 2  # never below min_parallelism


def test_window_group_drop_halves() -> None:
    w = CongestionWindow(TimingPolicy.template(4), group=True)
    for _ in range(30):
        w.on_answer()
    assert w.cwnd == 40
    w.on_drop(40, sent=1.0, now=2.0)
    assert (w.cwnd, w.ssthresh) == (20, 30.0)  # ssthresh = 40 / (4/3) at -T4


def test_window_one_decrease_per_burst_of_drops() -> None:
    w = CongestionWindow(TimingPolicy())
    assert w.on_drop(10, sent=1.0, now=2.0)
    for _ in range(5):
        w.on_answer()
    before = w.cwnd
    assert not w.on_drop(10, sent=1.5, now=2.1)  # sent before the last decrease
    assert w.cwnd == before
    assert w.on_drop(10, sent=2.5, now=3.0)


def test_window_ssthresh_never_below_two() -> None:
    w = CongestionWindow(TimingPolicy())
    w.on_drop(0, sent=1.0, now=1.0)
    assert w.ssthresh == 2.0


@given(
    low=st.integers(1, 20),
    extra=st.integers(0, 50),
    level=st.integers(0, 5),
    group=st.booleans(),
    events=st.lists(st.tuples(st.sampled_from("adn"), st.integers(0, 100)), max_size=200),
)
def test_window_stays_within_parallelism(
    low: int, extra: int, level: int, group: bool, events: list[tuple[str, int]]
) -> None:
    policy = TimingPolicy(level=level, min_parallelism=low, max_parallelism=low + extra)
    w = CongestionWindow(policy, group=group)
    for clock, (kind, in_flight) in enumerate(events):
        if kind == "a":
            w.on_answer()
        elif kind == "d":
            w.on_drop(in_flight, sent=float(clock), now=clock + 0.5)
        else:
            w.on_no_answer()
        assert low <= w.cwnd <= low + extra
        assert w.can_send(w.cwnd - 1)
        assert not w.can_send(w.cwnd)


# --- TokenBucket and rates -------------------------------------------------------------


def test_bucket_unlimited() -> None:
    b = TokenBucket(None)
    for _ in range(1000):
        assert b.delay(0.0) == 0.0
        b.consume(0.0)


def test_bucket_spaces_sends() -> None:
    b = TokenBucket(10.0, burst=2)
    b.consume(0.0)
    b.consume(0.0)
    assert b.delay(0.0) == pytest.approx(0.1)
    assert b.delay(0.05) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="before the token bucket allowed"):
        b.consume(0.05)
    assert b.delay(0.1) == 0.0
    b.consume(0.1)


def test_bucket_clock_stepping_back_adds_nothing() -> None:
    b = TokenBucket(1.0)
    b.consume(10.0)
    assert b.delay(5.0) > 0
    assert b.delay(10.0) == pytest.approx(1.0)


@given(
    rate=st.floats(0.5, 1000),
    burst=st.integers(1, 5),
    steps=st.lists(st.one_of(st.none(), st.floats(0, 2)), min_size=1, max_size=60),
)
def test_bucket_never_exceeds_rate_times_t_plus_burst(
    rate: float, burst: int, steps: list[float | None]
) -> None:
    bucket = TokenBucket(rate, burst)
    now, sends = 0.0, []
    for step in steps:
        now += bucket.delay(now) if step is None else step  # None: wait as told
        for _ in range(10):  # greedy sender, as many as allowed at this instant
            if bucket.delay(now) > 0:
                break
            bucket.consume(now)
            sends.append(now)
    for i, start in enumerate(sends):
        for j in range(i, len(sends)):
            assert j - i + 1 <= rate * (sends[j] - start) + burst + 1e-6


@given(rate=st.floats(0.5, 1e5), burst=st.integers(1, 5), at=st.floats(0, 1e6))
def test_bucket_waiting_the_delay_suffices(rate: float, burst: int, at: float) -> None:
    bucket = TokenBucket(rate, burst)
    for _ in range(burst):
        bucket.consume(at)
    wait = bucket.delay(at)
    assert wait > 0
    assert bucket.delay(at + wait) == 0.0


def test_behind_min_rate() -> None:
    assert not behind_min_rate(min_rate=None, sent=0, started=0.0, now=100.0)
    assert not behind_min_rate(min_rate=10.0, sent=0, started=0.0, now=0.0)
    assert behind_min_rate(min_rate=10.0, sent=9, started=0.0, now=1.0)
    assert not behind_min_rate(min_rate=10.0, sent=10, started=0.0, now=1.0)


# --- HostTiming ------------------------------------------------------------------------


def allowance(host: HostTiming) -> int:
    """The retries a silent port gets by ``host``'s own counts (``Scheduler.allowed`` asks
    the same rule with the scheduler's counts)."""
    return loss_retries(
        host.nmap_retries_allowed, losses=host.late_answers, answers=host.answers,
        max_retries=host.policy.max_retries,
    )  # fmt: skip


def test_host_retries_grow_after_loss_up_to_max_retries() -> None:
    host = HostTiming(TimingPolicy(max_retries=4), started=0.0)
    assert allowance(host) == 1  # a host that never lost a probe: one retransmission
    host.on_answer(sent=1.0, now=1.1, in_flight=0, tryno=1)
    assert allowance(host) == 3  # nmap's 2, and one more: 1 answer shows little
    host.on_answer(sent=2.0, now=2.1, in_flight=0, tryno=3)
    assert allowance(host) == 4
    host.on_answer(sent=3.0, now=3.1, in_flight=0, tryno=4)
    assert allowance(host) == 4
    assert allowance(HostTiming(TimingPolicy(max_retries=0), started=0.0)) == 0


def test_host_loss_shown_sets_the_retries() -> None:
    """At 10.4% loss per try (21/202 by Laplace), 8 tries keep p(silent) under 1e-7."""
    host = HostTiming(TimingPolicy(), started=0.0)
    for i in range(200):
        host.on_answer(sent=float(i), now=i + 0.01, in_flight=0, tryno=1 if i % 10 == 0 else 0)
    assert not host.congested
    assert allowance(host) == 7
    quiet = HostTiming(TimingPolicy(), started=0.0)
    for i in range(1000):
        quiet.on_answer(sent=float(i), now=i + 0.01, in_flight=0)
    assert allowance(quiet) == 1  # much answered, nothing lost: nmap's allowance


def test_host_random_loss_is_not_congestion() -> None:
    """A few answers to retransmissions among many first-try answers: a lossy link, not a
    congested one; the window keeps growing (nmap would cut it at each)."""
    host = HostTiming(TimingPolicy(), started=0.0)
    for i in range(20):
        host.on_answer(sent=float(i), now=i + 0.01, in_flight=5)
    assert host.window.cwnd == 30
    host.on_answer(sent=30.0, now=30.01, in_flight=30, tryno=1)
    assert not host.congested
    assert (host.window.drops, host.window.cwnd) == (0, 31)


def test_host_answers_mostly_to_retransmissions_is_congested_and_paced() -> None:
    """Most answers come to retransmissions: the host drops more than chance explains. It
    gets every retry, and from then on its sends follow its answers (no window cut)."""
    host = HostTiming(TimingPolicy(), started=0.0)
    for i in range(20):
        host.on_answer(sent=float(i), now=i + 0.01, in_flight=5)
    for i in range(6):
        host.on_answer(sent=30.0 + i, now=30.01 + i, in_flight=30, tryno=1)
    assert host.congested
    assert host.paced
    assert host.window.drops == 0
    assert allowance(host) == host.policy.max_retries  # silence now likely a drop
    assert host.delay_between_sends > 0


def test_paced_host_sends_a_little_faster_than_it_answers() -> None:
    """A host that limits its RSTs to 50/s answers at 50/s however fast it is probed: once
    congested, it is paced at 1.25 times that, not boosted by doublings."""
    host = HostTiming(TimingPolicy(), started=0.0)
    now = 0.0
    for i in range(200):  # 200 answers at 50/s, the first 40 on first tries
        now = i / 50
        host.on_answer(sent=now - 0.04, now=now, in_flight=20, tryno=0 if i < 40 else 1)
    assert host.paced
    assert host.answer_rate == pytest.approx(50.0)
    assert host.delay_between_sends == pytest.approx(1 / 62.5)
    host.on_send(now)
    assert host.send_delay(now, in_flight=0) == pytest.approx(1 / 62.5)


def test_slow_templates_keep_nmaps_caution() -> None:
    host = HostTiming(TimingPolicy.template(2), started=0.0)
    host.on_answer(sent=0.0, now=0.01, in_flight=1, tryno=1)
    assert host.congested
    assert host.window.drops == 1


def test_host_silence_from_filtered_ports_is_not_a_drop() -> None:
    host = HostTiming(TimingPolicy(), started=0.0)
    for i in range(50):
        host.on_timeout(sent=float(i), now=i + 1.0, in_flight=9)
    assert (host.window.drops, host.window.cwnd, host.timeouts) == (0, 10, 50)
    host.on_timeout(sent=60.0, now=61.0, in_flight=9, ping=True)  # a port known to answer
    assert (host.window.drops, host.window.cwnd) == (1, 5)


def test_host_icmp_error_to_retransmission_does_not_slow_down() -> None:
    host = HostTiming(TimingPolicy(), started=0.0)
    host.on_answer(sent=1.0, now=1.2, in_flight=9, tryno=2, icmp_error=True)
    # nmap's 1 retry, plus 1 while the host has answered too little to trust its loss
    assert (host.window.drops, allowance(host), host.rtt.samples) == (0, 2, 1)


def test_rate_limited_resets_end_closed_not_filtered() -> None:
    # A host whose RST rate limit swallows the first tries of some ports: port p answers
    # only its try (p % 3). Ports that ran out of tries wait on the bench until the host
    # is quiet, then retry with the grown allowance (nmap's probe bench).
    host = HostTiming(TimingPolicy(), started=0.0)
    now, state = 0.0, {}
    bench = list(range(30))
    for _ in range(5):
        waiting, bench = bench, []
        for port in waiting:
            for tryno in range(allowance(host) + 1):
                now += 0.01
                host.on_send(now)
                if tryno == port % 3:
                    host.on_answer(sent=now, now=now + 0.002, in_flight=0, tryno=tryno)
                    state[port] = "closed"
                    break
                host.on_timeout(sent=now, now=now + host.probe_timeout, in_flight=0)
            else:
                bench.append(port)
        if not bench:
            break
    assert bench == []
    assert set(state.values()) == {"closed"}
    assert host.max_successful_tryno == 2


def test_host_probe_timeout_learns_and_respects_scan_delay() -> None:
    host = HostTiming(TimingPolicy(), started=0.0)
    assert host.probe_timeout == 1.0
    host.on_answer(sent=0.0, now=0.02, in_flight=0)
    assert host.probe_timeout == pytest.approx(0.1)  # 0.02 + 4*0.01 below the 100 ms floor
    slow = HostTiming(TimingPolicy.template(2), started=0.0)
    slow.on_answer(sent=0.0, now=0.02, in_flight=0)
    assert slow.probe_timeout == 0.4


def test_host_send_delay() -> None:
    host = HostTiming(TimingPolicy.template(2), started=0.0)
    assert host.send_delay(0.0, in_flight=0) == 0.0
    host.on_send(0.0)
    assert host.send_delay(0.0, in_flight=1) is None  # -T2: one probe at a time
    assert host.send_delay(0.1, in_flight=0) == pytest.approx(0.3)
    assert host.send_delay(0.5, in_flight=0) == 0.0


def test_host_frequent_drops_boost_send_delay_up_to_max() -> None:
    host = HostTiming(TimingPolicy.template(4), started=0.0)
    assert host.delay_between_sends == 0.0
    for i in range(16):  # 5 answers to retries make it congestion, then 11 drops count
        host.on_answer(sent=float(i), now=i + 0.1, in_flight=1, tryno=1)
    assert host.boosted_delay == 0.005
    for i in range(16, 27):
        host.on_answer(sent=float(i), now=i + 0.1, in_flight=1, tryno=1)
    assert host.boosted_delay == 0.01  # doubled, and -T4's --max-scan-delay
    for i in range(27, 60):
        host.on_answer(sent=float(i), now=i + 0.1, in_flight=1, tryno=1)
    assert host.boosted_delay == 0.01  # nmap's boost, as the syn engine's throttling reads it


def test_host_high_try_number_boosts_send_delay() -> None:
    host = HostTiming(TimingPolicy(), started=0.0)
    host.on_answer(sent=0.0, now=0.1, in_flight=0, tryno=3)
    assert host.boosted_delay == 0.0
    host.on_answer(sent=1.0, now=1.1, in_flight=0, tryno=4)
    assert host.boosted_delay == 0.005


def test_host_expired() -> None:
    assert not HostTiming(TimingPolicy(), started=0.0).expired(1e9)
    host = HostTiming(TimingPolicy.template(5), started=10.0)
    assert not host.expired(909.0)
    assert host.expired(910.0)


# --- ScanTiming ------------------------------------------------------------------------


def test_scan_new_host_uses_group_rtt() -> None:
    scan = ScanTiming(TimingPolicy(), started=0.0)
    scan.on_send("a", 0.0)
    scan.on_answer("a", sent=0.0, now=0.2, host_in_flight=0, total_in_flight=0)
    assert scan.probe_timeout("a", 1.0) == pytest.approx(0.6)
    assert scan.probe_timeout("b", 1.0) == pytest.approx(0.6)  # learned from "a"
    assert scan.host("b", 1.0).probe_timeout == 1.0


def test_scan_windows_block_until_min_rate_falls_behind() -> None:
    policy = TimingPolicy(max_parallelism=2, min_rate=10.0)
    scan = ScanTiming(policy, started=0.0)
    assert scan.send_delay("a", 0.0, host_in_flight=0, total_in_flight=0) == 0.0
    scan.on_send("a", 0.0)
    scan.on_send("a", 0.0)
    assert scan.send_delay("a", 0.0, host_in_flight=2, total_in_flight=2) is None
    assert scan.send_delay("a", 1.0, host_in_flight=2, total_in_flight=2) == 0.0


def test_scan_group_window_blocks_other_hosts() -> None:
    scan = ScanTiming(TimingPolicy(max_parallelism=3), started=0.0)
    assert scan.send_delay("b", 0.0, host_in_flight=0, total_in_flight=3) is None
    assert scan.send_delay("b", 0.0, host_in_flight=0, total_in_flight=2) == 0.0


def test_scan_max_rate_holds_even_behind_min_rate() -> None:
    scan = ScanTiming(TimingPolicy(min_rate=5.0, max_rate=10.0), started=0.0)
    scan.on_send("a", 1.0)
    assert scan.behind_min_rate(1.0)
    assert scan.send_delay("a", 1.0, host_in_flight=1, total_in_flight=1) == pytest.approx(0.1)


def test_scan_drop_stays_with_its_host() -> None:
    """One host that drops (rate-limits RSTs) slows itself, not the group (nmap would)."""
    scan = ScanTiming(TimingPolicy(), started=0.0)
    for i in range(10):
        scan.on_answer("a", sent=float(i), now=i + 0.1, host_in_flight=0, total_in_flight=0)
    for i in range(10):
        scan.on_answer("a", sent=20.0 + i, now=20.1 + i, host_in_flight=4, total_in_flight=20,
                       tryno=1)  # fmt: skip
    assert scan.host("a", 0.0).delay_between_sends > 0  # paced at its answers
    assert scan.host("b", 0.0).delay_between_sends == 0
    assert scan.window.drops == 0
    scan.on_timeout("b", sent=41.0, now=42.0, host_in_flight=0, total_in_flight=5)
    assert scan.window.drops == 0
    scan.forget("a")
    assert scan.host("a", 50.0).window.drops == 0


def test_mostly_filtered_host_is_not_paced_at_its_answers() -> None:
    """A host whose ports are mostly filtered answers rarely, and at the end of its scan
    only to retransmissions: its answers say nothing of what it takes, and pacing it at
    them would crawl. Its silent tries were not proved drops, so it is not paced."""
    host = HostTiming(TimingPolicy(), started=0.0)
    now = 0.0
    for _ in range(40):  # 1 answer per 10 ms, each after 20 silent tries: 2100 tries/s
        for _ in range(20):
            host.on_timeout(sent=now - 0.1, now=now, in_flight=100)
        now += 0.01
        host.on_answer(sent=now - 0.08, now=now, in_flight=100, tryno=1)  # the tail: retries
    assert host.congested
    assert not host.drops_proved
    assert host.delay_between_sends == host.boosted_delay


@pytest.mark.parametrize(
    ("hosts", "per_host", "group"), [(0, 10, 10), (1, 30, 30), (73, 13, 949), (500, 10, 2500)]
)
def test_first_flight_is_shared_by_the_hosts_found_up(
    hosts: int, per_host: int, group: int
) -> None:
    """With discovery's round trips the scan's first flight is 1000 probes at -T3 (40% of
    --max-parallelism), shared by the hosts found up (10 to 30 each); without them every
    host starts at nmap's 10."""
    hints = {f"h{i}": 0.08 for i in range(hosts)}
    scan = ScanTiming(TimingPolicy(), started=0.0, rtt_hints=hints)
    assert scan.host("h0", 0.0).window.cwnd == per_host
    assert scan.window.cwnd == group
    if hosts:
        assert scan.host("h0", 0.0).probe_timeout == pytest.approx(0.08 + 4 * 0.04)
