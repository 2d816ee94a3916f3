"""Scan timing as pure objects: round-trip estimation, probe timeouts, adaptive retries,
congestion windows, rate limits and the -T0..-T5 templates.

Events go in (a probe was sent, answered, given up on) with the time they happened; decisions
come out (may I send, how long to wait, how long to wait for an answer, may I retransmit).
Times are float seconds on a monotonic clock, always passed in: nothing here reads the clock,
sleeps, or touches a socket. Imports only the standard library and ``errors``.

The model is nmap's ``ultra_scan`` (``timing.cc``, ``scan_engine.cc``):

* RTT: SRTT/RTTVAR as RFC 6298 §2, timeout ``srtt + 4*rttvar`` clamped to
  ``[min_rtt_timeout, max_rtt_timeout]``, ``initial_rtt_timeout`` before any sample.
* Congestion: per-host and group windows (``ultra_timing_vals``): slow start up to
  ``ssthresh``, then congestion avoidance. Growth is scaled by expected/received replies
  (``cc_scale``) so that hosts whose ports are mostly filtered still grow their window.
* A *drop* is not "a probe went unanswered": a filtered port never answers. As in nmap, a
  drop is an answer to a retransmission (the earlier try was lost although the port
  answers) or an unanswered probe to a port known to answer (nmap's timing "ping"). One
  decrease per burst of drops: only probes sent after the last decrease count.
* Retries: a host may use ``max(1, highest try number that got an answer + 1)``
  retransmissions, capped by ``max_retries``; losses raise it, so ports behind RST or
  ICMP rate limiting get enough tries before they are called filtered.
* Send delay: raised when drops are frequent (nmap's ``boostScanDelay``), never above
  ``max_scan_delay``.

This module holds the policy and the estimators; ``host_timing`` holds the state of one
scan (``HostTiming`` per host, ``ScanTiming`` for the group) and where it departs from nmap.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

from portscout.errors import OptionError

__all__ = [
    "INITIAL_CWND",
    "TEMPLATE_NAMES",
    "CongestionWindow",
    "RttEstimator",
    "TimingPolicy",
    "TokenBucket",
    "behind_min_rate",
    "loss_retries",
    "parse_duration",
    "parse_template",
]

TEMPLATE_NAMES = ("paranoid", "sneaky", "polite", "normal", "aggressive", "insane")

# nmap scan_performance_vars::init(): window constants.
INITIAL_CWND = 10  # probes in flight to a host at first (and to the group)
_INITIAL_SSTHRESH = 75
# Also beyond nmap: a silent port gets enough tries that, at the loss its host has shown,
# an answering port stays silent through all of them with at most this probability. At
# 1e-5 a 1%-lossy host's closed port got through 3 silent tries about once in 130,000
# ports: a full scan of such a host would differ from run to run, and the lab tests
# (12,000 answering ports a run) failed about one run in ten. At 1e-7 such a host's silent
# ports get 5 tries instead of 3. A host that has lost nothing is held to 1e-5: its
# estimated loss is only the prior of Laplace's rule, 1/(answers + 2), and 1e-7 would give
# every filtered port of every quiet host a third try that nmap does not.
_SILENT_THROUGH_ALL = 1e-7
_SILENT_THROUGH_ALL_NO_LOSS = 1e-5
_SLOW_INCR = 1.0
_CC_SCALE_MAX = 50.0
_GROUP_DROP_CWND_DIVISOR = 2.0


def _fmt(seconds: float) -> str:
    """A duration as nmap spells it: ``500ms``, ``2s``."""
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)?")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str, *, option: str | None = None) -> float:
    """Parse an nmap time spec into seconds: ``500ms``, ``2s``, ``1m``, ``1h``; a bare
    number (``0.5``) is seconds, as nmap's ``tval2secs``.

    Raises OptionError naming the text (and ``option``, when given) for anything else,
    including negative, empty or non-finite values.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        where = f" for {option}" if option else ""
        raise OptionError(
            f"invalid time '{text}'{where} (use e.g. 500ms, 2s, 1m, 1h; a bare number is seconds)"
        )
    return float(match[1]) * _UNIT[match[2]]


def parse_template(text: str) -> int:
    """The -T argument: ``0``..``5`` or a name (``paranoid`` .. ``insane``, any case)."""
    if text in {"0", "1", "2", "3", "4", "5"}:
        return int(text)
    if text.lower() in TEMPLATE_NAMES:
        return TEMPLATE_NAMES.index(text.lower())
    raise OptionError(f"invalid timing template '{text}' (use 0-5 or {', '.join(TEMPLATE_NAMES)})")


# (low field, high field) pairs that must be ordered; override() bends one to the other.
_ORDERED = (
    ("min_rtt_timeout", "max_rtt_timeout"),
    ("min_rtt_timeout", "initial_rtt_timeout"),
    ("initial_rtt_timeout", "max_rtt_timeout"),
    ("min_parallelism", "max_parallelism"),
    ("min_rate", "max_rate"),
    ("scan_delay", "max_scan_delay"),
)


def _check_values(values: dict[str, Any]) -> None:
    """Each value alone in its bounds, or OptionError naming its option. Run before any
    ordering is bent (``override``), so that the message names what the user gave."""
    if values["level"] not in range(6):
        raise OptionError(f"invalid timing level {values['level']} (use 0-5)")
    for name in ("initial_rtt_timeout", "max_rtt_timeout", "host_timeout", "min_rtt_timeout",
                 "scan_delay", "max_scan_delay"):  # fmt: skip
        value, positive = values[name], name in _POSITIVE
        if value is None and name == "host_timeout":
            continue
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            bound = "positive" if positive else "at least 0"
            raise OptionError(f"{_flag(name)} {value:g} must be {bound} seconds")
    for name in ("min_rate", "max_rate"):
        value = values[name]
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise OptionError(f"{_flag(name)} {value:g} must be a positive number")
    if values["max_retries"] < 0:
        raise OptionError(f"--max-retries {values['max_retries']} must not be negative")
    for name in ("min_parallelism", "max_parallelism"):
        if values[name] < 1:
            raise OptionError(f"{_flag(name)} {values[name]} must be at least 1")


_POSITIVE = frozenset({"initial_rtt_timeout", "max_rtt_timeout", "host_timeout"})


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _show(name: str, value: float) -> str:
    return f"{value:g}" if "rate" in name or "parallelism" in name else _fmt(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class TimingPolicy:
    """Every timing knob of a scan, validated when built; defaults are nmap's -T3.

    Durations are seconds; ``min_rate``/``max_rate`` are probes per second (None: no
    bound); parallelism counts probes in flight. ``host_timeout`` None: never give up on a
    host; it is kept for nmap's templates (-T5 sets 15 min) and ``HostTiming.expired``, but
    no engine applies it yet (the command line refuses ``--host-timeout``, see ``cli``).
    ``level`` is the -T level, which also picks nmap's congestion constants.
    Raises OptionError with one line naming the option(s) at fault.
    """

    level: int = 3
    initial_rtt_timeout: float = 1.0
    min_rtt_timeout: float = 0.1
    max_rtt_timeout: float = 10.0
    max_retries: int = 10
    host_timeout: float | None = None
    min_rate: float | None = None
    max_rate: float | None = None
    min_parallelism: int = 1
    # nmap caps its window at 300; portscout at 2500 (descriptors bound it too), so that a
    # mostly filtered host is not scanned 300 probes per timeout at a time.
    max_parallelism: int = 2500
    scan_delay: float = 0.0
    max_scan_delay: float = 1.0

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        _check_values(values)
        for low, high in _ORDERED:
            lo, hi = values[low], values[high]
            if lo is not None and hi is not None and lo > hi:
                raise OptionError(
                    f"{_flag(low)} {_show(low, lo)} exceeds {_flag(high)} {_show(high, hi)}"
                )

    @classmethod
    def template(cls, level: int) -> TimingPolicy:
        """nmap's timing template -T<level> (values from nmap.cc and its manual):

        0 paranoid    one probe at a time, 5 min between probes, 5 min initial timeout:
                      IDS evasion.
        1 sneaky      one at a time, 15 s between probes, 15 s initial timeout.
        2 polite      one at a time, 0.4 s between probes: spares the target and the link.
        3 normal      the defaults: timeout 1 s initially, 100 ms..10 s; 10 retries.
        4 aggressive  timeout 500 ms initially, 100 ms..1.25 s; 6 retries; send delay at
                      most 10 ms; faster window growth. For fast, reliable networks.
        5 insane      timeout 250 ms initially, 50 ms..300 ms; 2 retries; 15 min per host;
                      send delay at most 5 ms. Trades accuracy for speed.

        Change single fields with ``override`` (or ``dataclasses.replace``).
        """
        values: dict[int, dict[str, float | int | None]] = {
            0: {"max_parallelism": 1, "scan_delay": 300.0, "initial_rtt_timeout": 300.0},
            1: {"max_parallelism": 1, "scan_delay": 15.0, "initial_rtt_timeout": 15.0},
            2: {"max_parallelism": 1, "scan_delay": 0.4},
            3: {},
            4: {
                "min_rtt_timeout": 0.1,
                "max_rtt_timeout": 1.25,
                "initial_rtt_timeout": 0.5,
                "max_retries": 6,
                "max_scan_delay": 0.01,
            },
            5: {
                "min_rtt_timeout": 0.05,
                "max_rtt_timeout": 0.3,
                "initial_rtt_timeout": 0.25,
                "max_retries": 2,
                "host_timeout": 900.0,
                "max_scan_delay": 0.005,
            },
        }
        if level not in values:
            raise OptionError(f"invalid timing template -T{level} (use 0-5)")
        # nmap's setInitialRttTimeout raises max_rtt_timeout with it (-T0, -T1); a
        # scan delay above max_scan_delay raises that too.
        return cls(level=level).override(**values[level])

    def with_options(
        self, *, timeout: float | None = None, **changes: float | int | None
    ) -> TimingPolicy:
        """The user's options on top of this policy (a template): the one place where the
        command line's and the library's options are merged and checked.

        ``changes`` are fields; None means "not given". ``timeout`` (--timeout) is one
        probe timeout for every engine: the initial one and the highest (the lowest bends
        down to it), so that the seed engines, which measure no round trip and wait the
        initial timeout, wait exactly that. It is applied first: a field given beside it
        wins (``--timeout 2s --max-rtt-timeout 5s`` starts at 2 s and may adapt up to 5 s).
        Raises OptionError naming the option at fault.
        """
        policy = self
        if timeout is not None:
            if not (timeout > 0 and math.isfinite(timeout)):
                raise OptionError(f"--timeout {timeout:g} must be positive seconds")
            policy = policy.override(initial_rtt_timeout=timeout, max_rtt_timeout=timeout)
        given = {name: value for name, value in changes.items() if value is not None}
        return policy.override(**given) if given else policy

    def override(self, **changes: float | int | None) -> TimingPolicy:
        """A copy with the named fields set, as the user's options on top of a template.

        Fields given here win; an ordered partner that was not given bends to fit, as in
        nmap (``--max-rtt-timeout 1s`` on -T0 lowers the initial timeout to 1 s). Two given
        fields that conflict raise OptionError; an unknown field name raises TypeError.
        """
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"unknown timing fields: {', '.join(sorted(unknown))}")
        merged = {f.name: getattr(self, f.name) for f in fields(self)} | changes
        _check_values(merged)
        given = set(changes)
        changed = True
        while changed:
            changed = False
            for low, high in _ORDERED:
                lo, hi = merged[low], merged[high]
                if lo is None or hi is None or lo <= hi:
                    continue
                if high in given and low not in given:
                    merged[low], changed = hi, True
                    given.add(low)
                elif low in given and high not in given:
                    merged[high], changed = lo, True
                    given.add(high)
        return replace(self, **merged)


def loss_retries(base: int, *, losses: int, answers: int, max_retries: int) -> int:
    """Retries for a silent port: ``base`` (nmap's allowance), or enough that at the loss
    shown (``losses`` of ``answers`` came only to a retransmission) an answering port is
    silent through every try with probability at most _SILENT_THROUGH_ALL (or
    _SILENT_THROUGH_ALL_NO_LOSS while nothing was lost); never above
    ``max_retries``. The loss is estimated by Laplace's rule of succession (little shown,
    little trusted); until two losses are seen it adds at most one retry to ``base``, and
    none to a host that never answered (likely all filtered)."""
    loss = min((losses + 1) / (answers + 2), 0.5)
    target = _SILENT_THROUGH_ALL if losses else _SILENT_THROUGH_ALL_NO_LOSS
    needed = math.ceil(math.log(target) / math.log(loss)) - 1
    if losses < 2:
        needed = min(needed, base + 1 if answers else base)
    return max(base, min(needed, max_retries))


def behind_min_rate(*, min_rate: float | None, sent: int, started: float, now: float) -> bool:
    """True when fewer than ``min_rate * (now - started)`` probes went out: the scheduler
    should then send regardless of congestion windows and send delay (nmap --min-rate),
    though never faster than --max-rate."""
    return min_rate is not None and sent < min_rate * (now - started)


class RttEstimator:
    """Smoothed round-trip time and retransmission timeout of RFC 6298 §2.

    First sample r: ``srtt = r``, ``rttvar = r/2``; then ``rttvar = 3/4 rttvar +
    1/4 |srtt - r|`` and ``srtt = 7/8 srtt + 1/8 r``. ``timeout`` is ``srtt + 4*rttvar``
    clamped to ``[minimum, maximum]``, or ``initial`` (clamped too) before any sample.
    """

    __slots__ = ("_initial", "_maximum", "_minimum", "rttvar", "samples", "srtt")
    ALPHA: ClassVar[float] = 1 / 8
    BETA: ClassVar[float] = 1 / 4
    K: ClassVar[int] = 4

    def __init__(self, *, initial: float, minimum: float, maximum: float) -> None:
        if not 0 <= minimum <= maximum:
            raise ValueError(f"bad timeout bounds {minimum}..{maximum}")
        self._initial, self._minimum, self._maximum = initial, minimum, maximum
        self.srtt: float | None = None
        self.rttvar: float | None = None
        self.samples = 0

    @classmethod
    def from_policy(cls, policy: TimingPolicy) -> RttEstimator:
        return cls(
            initial=policy.initial_rtt_timeout,
            minimum=policy.min_rtt_timeout,
            maximum=policy.max_rtt_timeout,
        )

    def observe(self, rtt: float, *, ambiguous: bool = False) -> bool:
        """Take one RTT sample (seconds); return whether it was used.

        ``ambiguous``: the probe went out more than once and the answer cannot be tied to
        one transmission, so the sample is dropped (Karn's algorithm, RFC 6298 §3). An
        engine that tells tries apart (a try number in the sequence number or the source
        port, as nmap does; a fresh socket per connect) passes the RTT of the try that
        was answered and ``ambiguous=False``. Raises ValueError for a negative or NaN rtt.
        """
        if not rtt >= 0:
            raise ValueError(f"rtt must be a non-negative number of seconds, not {rtt}")
        if ambiguous:
            return False
        if self.srtt is None or self.rttvar is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = (1 - self.BETA) * self.rttvar + self.BETA * abs(self.srtt - rtt)
            self.srtt = (1 - self.ALPHA) * self.srtt + self.ALPHA * rtt
        self.samples += 1
        return True

    @property
    def timeout(self) -> float:
        """Seconds to wait for an answer before the probe counts as unanswered."""
        if self.srtt is None or self.rttvar is None:
            raw = self._initial
        else:
            raw = self.srtt + self.K * self.rttvar
        return min(max(raw, self._minimum), self._maximum)


class CongestionWindow:
    """nmap's ``ultra_timing_vals``: how many probes may be in flight (to one host, or to
    the whole group with ``group=True``), as TCP congestion control (RFC 5681) adapted.

    Answers grow the window: by ``slow_incr * scale`` below ``ssthresh`` (slow start),
    then by ``ca_incr / cwnd * scale`` (congestion avoidance), where ``scale`` is
    expected/received replies capped at 50, so a host that answers 1 probe in 10 still
    grows as if it answered all. A drop sets ``ssthresh = max(in_flight / d, 2)`` and
    halves ``cwnd`` (nmap drops a host's window to ``min_parallelism``; halving is TCP's
    answer, RFC 5681, and keeps a lossy host from crawling). Slow start runs up to the
    ceiling until the first drop. The window stays within ``[min_parallelism,
    max_parallelism]``.
    """

    __slots__ = (
        "_ca_incr",
        "_cwnd",
        "_group",
        "_high",
        "_low",
        "_ssthresh_divisor",
        "drops",
        "last_drop",
        "replies_expected",
        "replies_received",
        "ssthresh",
    )

    def __init__(
        self, policy: TimingPolicy, *, group: bool = False, initial: int = INITIAL_CWND
    ) -> None:
        self._low = float(policy.min_parallelism)
        self._high = float(max(policy.min_parallelism, policy.max_parallelism))
        self._cwnd = min(max(float(initial), self._low), self._high)
        self._group = group
        self._ca_incr = 1.0 if policy.level < 4 else 2.0
        self._ssthresh_divisor = {4: 4 / 3, 5: 5 / 4}.get(policy.level, 3 / 2)
        # nmap starts congestion avoidance at 75; without a congestion signal there is no
        # reason to: slow start runs up to the ceiling (departure from nmap, see above).
        self.ssthresh = max(float(_INITIAL_SSTHRESH), self._high)
        self.replies_expected = 0
        self.replies_received = 0
        self.drops = 0
        self.last_drop = -math.inf

    @property
    def cwnd(self) -> int:
        """The window rounded up: ``in_flight < cwnd`` is exactly the send test."""
        return math.ceil(self._cwnd)

    def can_send(self, in_flight: int) -> bool:
        return in_flight < self._cwnd

    def on_answer(self, scale: float = 1.0) -> None:
        """A reply came back. ``scale`` weighs it (nmap counts timing pings thrice)."""
        self.replies_expected += 1
        self.replies_received += 1
        factor = min(self.replies_expected / self.replies_received, _CC_SCALE_MAX) * scale
        if self._cwnd < self.ssthresh:
            self._cwnd = min(self._cwnd + _SLOW_INCR * factor, self.ssthresh)
        else:
            self._cwnd += self._ca_incr / self._cwnd * factor
        self._cwnd = min(max(self._cwnd, self._low), self._high)

    def forget_expected(self, count: int) -> None:
        """``count`` probes counted unanswered by ``on_no_answer`` were drops after all (a
        later try answered): they must not make answers count more, or a host that drops
        most probes (RST rate limits) would grow its window fastest."""
        self.replies_expected = max(self.replies_received, self.replies_expected - count)

    def on_no_answer(self) -> None:
        """A probe was given up on without it being a drop (a filtered port, most likely).
        It only makes later answers count more (``cc_scale``)."""
        self.replies_expected += 1

    def on_drop(self, in_flight: int, *, sent: float, now: float) -> bool:
        """A drop of a probe sent at ``sent``, seen at ``now``; ``in_flight`` counts the
        probes still outstanding. Returns False, changing nothing, when the probe was sent
        before the last decrease: drops come in bursts and one decrease covers a burst.
        """
        if sent <= self.last_drop:
            return False
        self._cwnd = max(self._low, self._cwnd / _GROUP_DROP_CWND_DIVISOR)
        self.ssthresh = max(in_flight / self._ssthresh_divisor, 2.0)
        self.last_drop = now
        self.drops += 1
        return True


class TokenBucket:
    """At most ``rate`` sends per second on average, bursts of at most ``burst`` sends.

    ``rate`` None: no limit. Over any interval of length t at most ``rate*t + burst``
    sends pass, provided ``consume`` is called only when ``delay`` returned 0. Kept as the
    time the bucket would next be full (GCRA, ITU-T I.371), so waiting exactly ``delay``
    suffices at any clock value; the bucket starts full, a clock that steps back adds
    nothing.
    """

    __slots__ = ("_full_at", "burst", "rate")

    def __init__(self, rate: float | None, burst: int = 1) -> None:
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be positive, not {rate}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        self.rate, self.burst = rate, burst
        self._full_at: float | None = None

    def delay(self, now: float) -> float:
        """Seconds to wait before the next send; 0.0 when a send may go now."""
        if self.rate is None or self._full_at is None:
            return 0.0
        allowed_at = self._full_at - (self.burst - 1) / self.rate
        wait = allowed_at - now
        # A few ulps of the operands: rounding, not a real wait.
        return wait if wait > 8 * math.ulp(max(abs(self._full_at), abs(now))) else 0.0

    def consume(self, now: float) -> None:
        """Record one send at ``now``. Raises ValueError if ``delay(now)`` was not 0."""
        if self.delay(now) > 0:
            raise ValueError("send before the token bucket allowed it")
        if self.rate is not None:
            base = now if self._full_at is None else max(self._full_at, now)
            self._full_at = base + 1 / self.rate
