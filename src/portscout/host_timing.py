"""The timing state of one scan: ``HostTiming`` for each target host and ``ScanTiming`` for
the group (nmap's ``GroupScanStats``), fed with events and asked for decisions.

Events go in (a probe was sent, answered, given up on) with the time they happened; decisions
come out (may I send, how long to wait, how long to wait for an answer, may I retransmit).
Times are passed in: nothing here reads the clock. Built on ``timing`` (the policy, the RTT
estimator, the windows, the token bucket); imports only it and the standard library.

Where portscout departs from nmap is explained next to each constant below, and measured
in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Mapping
from typing import Any

from portscout.timing import (
    INITIAL_CWND,
    CongestionWindow,
    RttEstimator,
    TimingPolicy,
    TokenBucket,
    behind_min_rate,
)

__all__ = ["HostTiming", "ScanTiming"]

# Beyond nmap: when host discovery has found which hosts are up, the scan's first flight is
# _FIRST_FLIGHT_SHARE of --max-parallelism (1000 probes at -T3: 60 kB of SYNs, a few times
# TCP's own first flight of 14.6 kB, RFC 6928; each worker process has its share), shared
# among those hosts, each getting between INITIAL_CWND and _MAX_INITIAL_CWND. nmap starts
# every host at 10, which holds a host whose ports are mostly filtered to 10 probes a
# timeout until answers grow the window (2 s of a 1-host, 10000-port lab scan). A large
# first flight, though, floods a host that limits its RSTs before a single drop can show:
# 100 for each of 73 hosts turned up to 394 closed ports filtered, and 100 for each of 2
# hosts (50 RSTs/s, burst 5) left one closed port of 340 silent through 7 tries in a third
# to half of the lab test's runs; 30 passed 5 runs of 5 and keeps most of the gain.
_FIRST_FLIGHT_SHARE = 0.4
_MAX_INITIAL_CWND = 30
# Where portscout departs from nmap: random loss is not congestion. nmap cuts the window
# on every answer to a retransmission, so 1% loss keeps a scan crawling at a few dozen
# probes in flight. portscout keeps an average of the share of answers that needed a
# retransmission (over about 1/_LOSS_ALPHA answers) and treats a retransmission's answer
# as a drop only while that share is above _CONGESTION_SHARE: a lossy link keeps its pace,
# a host that rate-limits its RSTs (most answers come on retries) is slowed down at once.
_LOSS_ALPHA = 1 / 16
_CONGESTION_SHARE = 0.25
# Beyond nmap: once a host is found congested (late_share above _CONGESTION_SHARE), and
# while most of its silent tries have been proved drops (an answer to try k proves k tries
# lost), its sends are paced at _PACING_GAIN times the rate of its last _PACING_ANSWERS
# answers. A host that limits its RSTs to 50/s answers at 50/s however fast it is probed,
# so the pace settles at 62/s within a few dozen answers, where nmap's doubling boosts
# overshoot (5, 10, 20, 40, 80 ms: 12 probes/s where 50 were possible) or, boosted late,
# leave retries to carry the excess (a /24 with RST limits needed 3-4 tries a closed
# port). The gain above 1 keeps probing: a host that answers faster raises the measured
# rate and the pace follows. A host whose silent tries are mostly unproved (filtered
# ports) answers far below what it takes, and at the end of its scan only to
# retransmissions: its answer rate says nothing of its capacity, and it keeps nmap's
# window and boosts.
_PACING_GAIN = 1.25
_PACING_ANSWERS = 16
_PACING_PROVED_SHARE = 0.1
# nmap boostScanDelay(): first boost of a TCP send delay, and the doubling ceiling.
_FIRST_BOOST = 0.005
_BOOST_DOUBLING_LIMIT = 1.0


class HostTiming:
    """Everything timing knows about one target host: RTT, window, retries, send delay.

    The scheduler reports each send, answer and give-up with its times; it asks
    ``send_delay`` before sending, ``probe_timeout`` for how long to wait, and
    ``nmap_retries_allowed`` for how many retransmissions a silent port gets before it is
    called filtered. That may still grow while probes are out (a late answer to a
    retransmission raises it): ``schedule`` holds ports that reached it until the host
    has nothing in flight (nmap's probe bench).
    """

    __slots__ = (
        "_bad_since_boost",
        "_congested_once",
        "_dropped",
        "_good_since_boost",
        "_last_boost",
        "_last_sent",
        "_marks",
        "answers",
        "boosted_delay",
        "late_answers",
        "late_share",
        "max_successful_tryno",
        "policy",
        "rtt",
        "sent",
        "started",
        "timeouts",
        "window",
    )

    def __init__(
        self, policy: TimingPolicy, *, started: float, initial_window: int = INITIAL_CWND
    ) -> None:
        self.policy, self.started = policy, started
        self.rtt = RttEstimator.from_policy(policy)
        self.window = CongestionWindow(policy, initial=initial_window)
        self.max_successful_tryno = 0
        self.sent = self.answers = self.timeouts = 0
        self.boosted_delay = 0.0
        self.late_share = 0.0  # running share of answers that came to a retransmission
        self.late_answers = 0  # answers that came only to a retransmission
        self._last_sent: float | None = None
        self._last_boost = -math.inf
        self._good_since_boost = self._bad_since_boost = 0
        self._marks: deque[float] = deque(maxlen=_PACING_ANSWERS)  # last answers' times
        self._dropped = 0  # tries proved lost by answers to later tries
        self._congested_once = False

    @property
    def probe_timeout(self) -> float:
        """Seconds to wait for an answer; never below --scan-delay (as nmap)."""
        return max(self.rtt.timeout, self.policy.scan_delay)

    @property
    def nmap_retries_allowed(self) -> int:
        """Retransmissions a silent port may get by nmap's rule, at most --max-retries:
        ``allowedTryno`` (``max(1, highest try number answered + 1)``: a host that never
        lost a probe gets 1, each loss repaired by a retry raises it), or all of them while
        the host is congested. ``schedule.Scheduler.allowed`` adds what the host's losses
        call for (``timing.loss_retries``), with its own counts of answers."""
        if self.late_share > _CONGESTION_SHARE:
            # Most answers come only to retransmissions: the host drops (rate limits) more
            # than chance explains, so a silent port gets every retry --max-retries allows.
            return self.policy.max_retries
        return min(max(1, self.max_successful_tryno + 1), self.policy.max_retries)

    @property
    def congested(self) -> bool:
        """Whether answers to retransmissions are now a congestion signal (see
        _CONGESTION_SHARE); always at -T0..-T2, where nmap's caution is asked for."""
        return self.policy.level < 3 or self.late_share > _CONGESTION_SHARE

    @property
    def answer_rate(self) -> float | None:
        """Answers per second over the last ``_PACING_ANSWERS`` (None: too few yet)."""
        marks = self._marks
        if len(marks) < _PACING_ANSWERS // 2:
            return None
        span = marks[-1] - marks[0]
        return (len(marks) - 1) / span if span > 0 else None

    @property
    def paced(self) -> bool:
        """Whether sends follow the answers (see _PACING_GAIN): the host was found
        congested, and its silent tries were mostly proved drops."""
        return self._congested_once and self.drops_proved

    @property
    def drops_proved(self) -> bool:
        """Whether most silent tries were proved drops (their port answered a later try),
        so that the host's answers measure what it takes (see _PACING_PROVED_SHARE)."""
        return self._dropped >= _PACING_PROVED_SHARE * self.timeouts

    @property
    def delay_between_sends(self) -> float:
        """--scan-delay, or more after frequent drops (at most --max-scan-delay): the pace
        of the answers once the host is ``paced``, else nmap's boosted delay."""
        if self.paced:
            rate = self.answer_rate
            if rate is not None:
                pace = 1 / (_PACING_GAIN * rate)
                return max(self.policy.scan_delay, min(pace, self.policy.max_scan_delay))
        return max(self.policy.scan_delay, self.boosted_delay)

    def expired(self, now: float) -> bool:
        """True once --host-timeout has passed since the host's scan started."""
        timeout = self.policy.host_timeout
        return timeout is not None and now - self.started >= timeout

    def send_delay(self, now: float, in_flight: int) -> float | None:
        """None: the window is full, wait for an answer or a timeout. Else seconds to wait
        before the next probe to this host (0.0: send now)."""
        if not self.window.can_send(in_flight):
            return None
        if self._last_sent is None:
            return 0.0
        return max(0.0, self._last_sent + self.delay_between_sends - now)

    def on_send(self, now: float) -> None:
        self._last_sent = now
        self.sent += 1

    def on_answer(
        self,
        *,
        sent: float,
        now: float,
        in_flight: int,
        tryno: int = 0,
        ambiguous: bool = False,
        icmp_error: bool = False,
    ) -> None:
        """The probe try number ``tryno`` (0: first transmission), sent at ``sent``, was
        answered at ``now``; ``in_flight`` probes to this host remain outstanding.

        An answer to a retransmission is a drop: the earlier try was lost. ``icmp_error``:
        the answer was an ICMP error (filtered), which routers rate-limit (RFC 1812), so
        at ``tryno > 0`` it updates only the RTT, never window or retries (as nmap).
        """
        self.rtt.observe(now - sent, ambiguous=ambiguous)
        self.answers += 1
        self._marks.append(now)
        if icmp_error and tryno > 0:
            return
        self._dropped += tryno
        if tryno:  # proved drops, not filtered ports: they must not scale the growth
            self.window.forget_expected(tryno)
        self.late_share += _LOSS_ALPHA * ((1.0 if tryno > 0 else 0.0) - self.late_share)
        if self.late_share > _CONGESTION_SHARE and self.policy.level >= 3:
            self._congested_once = True
        self.late_answers += tryno > 0
        if tryno > 0 and self.congested:
            if not self.paced:  # a paced host's rate follows its answers, not its drops
                self.window.on_drop(in_flight, sent=sent, now=now)
            self._count_for_delay(dropped=sent > self._last_boost, now=now)
        else:
            self._count_for_delay(dropped=False, now=now)
        self.window.on_answer()
        if tryno > self.max_successful_tryno:
            self.max_successful_tryno = tryno
            if tryno > (4 if self.policy.level >= 4 else 3):
                self._boost(now)

    def on_timeout(self, *, sent: float, now: float, in_flight: int, ping: bool = False) -> None:
        """The probe sent at ``sent`` got no answer within ``probe_timeout``. ``ping``: it
        went to a port that answered before (a timing probe), so silence is a drop."""
        self.timeouts += 1
        self.window.on_no_answer()
        if ping:
            self.window.on_drop(in_flight, sent=sent, now=now)
            if sent > self._last_boost:
                self._count_for_delay(dropped=True, now=now)

    def _count_for_delay(self, *, dropped: bool, now: float) -> None:
        if dropped:
            self._bad_since_boost += 1
        else:
            self._good_since_boost += 1
        bad, good = self._bad_since_boost, self._good_since_boost
        threshold = 0.40 if self.policy.level >= 4 else 0.30
        if bad > 10 and bad / (bad + good) > threshold:
            self._boost(now)

    def _boost(self, now: float) -> None:
        """nmap's boostScanDelay: 5 ms first, then doubling (up to 1 s by doubling),
        never above --max-scan-delay. Unlike nmap, the last boost gets two timeouts to show
        its effect first: answers to probes sent before it still come late, and would
        double the delay again and again (a host limiting RSTs to 50/s ended at 160 ms
        between probes, 8 times slower than it needs)."""
        if now - self._last_boost <= 2 * self.probe_timeout:
            return
        old = self.boosted_delay
        grown = min(old * 2, max(old, _BOOST_DOUBLING_LIMIT)) if old else _FIRST_BOOST
        self.boosted_delay = min(grown, self.policy.max_scan_delay)
        self._last_boost = now
        self._good_since_boost = self._bad_since_boost = 0


class ScanTiming:
    """Group timing (nmap's ``GroupScanStats``): one ``HostTiming`` per host, a group
    window and RTT estimate over all hosts, --max-rate as a token bucket and --min-rate.

    Hosts are keyed by any hashable (an address). The engine counts probes in flight,
    per host and in total, and passes the counts in.
    """

    __slots__ = (
        "_hosts",
        "_initial_window",
        "_rtt_hints",
        "bucket",
        "policy",
        "rtt",
        "sent",
        "started",
        "window",
    )

    def __init__(
        self,
        policy: TimingPolicy,
        *,
        started: float,
        burst: int = 1,
        rtt_hints: Mapping[Any, float] | None = None,  # keyed like the hosts
    ) -> None:
        self.policy, self.started = policy, started
        self._rtt_hints = rtt_hints or {}
        self._initial_window = INITIAL_CWND  # per host; see _FIRST_FLIGHT
        if self._rtt_hints:
            first_flight = int(_FIRST_FLIGHT_SHARE * policy.max_parallelism)
            share = first_flight // len(self._rtt_hints)
            self._initial_window = max(INITIAL_CWND, min(share, _MAX_INITIAL_CWND))
        group_initial = max(INITIAL_CWND, self._initial_window * len(self._rtt_hints))
        self.window = CongestionWindow(policy, group=True, initial=group_initial)
        self.rtt = RttEstimator.from_policy(policy)
        self.bucket = TokenBucket(policy.max_rate, burst)
        self.sent = 0
        self._hosts: dict[Hashable, HostTiming] = {}

    def host(self, key: Hashable, now: float) -> HostTiming:
        """The host's timing, created (its host timeout starting) on first use; a round
        trip measured before the scan (``rtt_hints``: host discovery) is its first sample."""
        timing = self._hosts.get(key)
        if timing is None:
            timing = self._hosts[key] = HostTiming(
                self.policy, started=now, initial_window=self._initial_window
            )
            hint = self._rtt_hints.get(key)
            if hint is not None:
                timing.rtt.observe(hint)
        return timing

    def forget(self, key: Hashable) -> None:
        """Drop a finished host's state."""
        self._hosts.pop(key, None)

    def probe_timeout(self, key: Hashable, now: float) -> float:
        """The host's timeout once it has RTT samples, else the group's (as nmap)."""
        host = self.host(key, now)
        if host.rtt.samples:
            return host.probe_timeout
        return max(self.rtt.timeout, self.policy.scan_delay)

    def behind_min_rate(self, now: float) -> bool:
        return behind_min_rate(
            min_rate=self.policy.min_rate, sent=self.sent, started=self.started, now=now
        )

    def send_delay(
        self, key: Hashable, now: float, *, host_in_flight: int, total_in_flight: int
    ) -> float | None:
        """None: a window is full, wait for an event. Else seconds to wait before sending
        the next probe to ``key`` (0.0: now). Behind --min-rate, windows and send delay
        are ignored; --max-rate always holds."""
        rate_wait = self.bucket.delay(now)
        if self.behind_min_rate(now):
            return rate_wait
        if not self.window.can_send(total_in_flight):
            return None
        host_wait = self.host(key, now).send_delay(now, host_in_flight)
        return None if host_wait is None else max(host_wait, rate_wait)

    def on_send(self, key: Hashable, now: float) -> None:
        self.bucket.consume(now)
        self.sent += 1
        self.host(key, now).on_send(now)

    def on_answer(
        self,
        key: Hashable,
        *,
        sent: float,
        now: float,
        host_in_flight: int,
        total_in_flight: int,
        tryno: int = 0,
        ambiguous: bool = False,
        icmp_error: bool = False,
    ) -> None:
        """As ``HostTiming.on_answer``, also feeding the group RTT and window."""
        self.host(key, now).on_answer(
            sent=sent,
            now=now,
            in_flight=host_in_flight,
            tryno=tryno,
            ambiguous=ambiguous,
            icmp_error=icmp_error,
        )
        self.rtt.observe(now - sent, ambiguous=ambiguous)
        if icmp_error and tryno > 0:
            return
        if tryno:
            self.window.forget_expected(tryno)
        # No group decrease (departure from nmap): a drop shrinks the window of the host
        # that dropped. Congestion of the shared path makes every host drop, so every
        # host's window shrinks; one host that rate-limits its RSTs must not stall the
        # scan of all the others, as it does in nmap.
        self.window.on_answer()

    def on_timeout(
        self,
        key: Hashable,
        *,
        sent: float,
        now: float,
        host_in_flight: int,
        total_in_flight: int,
        ping: bool = False,
    ) -> None:
        """As ``HostTiming.on_timeout``, also feeding the group window."""
        self.host(key, now).on_timeout(sent=sent, now=now, in_flight=host_in_flight, ping=ping)
        self.window.on_no_answer()
        if ping:
            self.window.on_drop(total_in_flight, sent=sent, now=now)
