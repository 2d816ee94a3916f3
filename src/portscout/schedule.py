"""The probe scheduler every adaptive engine drives: which probe to send next, how long to
wait for it, when to retry it and when to call it filtered. Sans-IO, as h11 and h2: events
go in with the time they happened (``next_batch`` says what to send, the engine reports
``answered``, ``unsent`` or ``decided``, and ``expire(now)`` lets time pass); decisions
come out (the flights to send, the ``Result`` of each port called filtered in ``done``,
the flights it ended in ``ended``, ``next_due``). Nothing here reads the clock, touches a
socket or logs per probe; ``tests/test_schedule.py`` runs it on a virtual clock against
simulated hosts.

Imports the core only: ``host_timing``, ``timing``, ``plan``, ``results``.

The life of one probe (a ``Flight``), h11-style (``TRANSITIONS`` is the table)::

    (fresh) --> IN_FLIGHT --answered--> DECIDED
       |          |   ^ \\--timed out, allowance left--> WAITING --sent--> IN_FLIGHT
       |          |   |                                    |
       |          |   \\--unsent (local back-pressure)------/ (answered late: DECIDED)
       |          \\--timed out, allowance used--> BENCHED --host quiet--> WAITING | DECIDED
       \\--its host throttled--> WAITING                    (answered late: DECIDED)

A try that timed out stays answerable until its port is decided: an answer to it decides
the port wherever the flight waits (a timeout that proved a little short costs a
retransmission, never a wrong "filtered"); the engine keeps what it needs to hear it.

How probes are paced (masscan's speed where hosts keep up, nmap's care where they do not):

* The rate (``--max-rate``, a token bucket paying for ``unit`` probes a token) and
  ``max_in_flight`` bound every send. While a host answers what it is sent, nothing else
  holds its probes back: a window that only answers can grow would keep a host whose
  ports are mostly filtered (or a silent host in discovery) at a few probes per timeout.
* A host that drops what it answers (answers to retransmissions, a quarter of its answers
  and at least ``MIN_DROPS``), or whose send delay timing boosted, is *throttled*: its
  probes wait in a backlog of their own and leave as its congestion window and send delay
  (``HostTiming.send_delay``) allow, while other hosts' probes go on. ``--scan-delay``
  throttles every host from the start. Tries a port spent before its host was throttled,
  or before its delay was last boosted, went out at a pace found too fast and are not held
  against its allowance (at most --max-retries + 1 of them: ``Flight.free``).
* Retries follow nmap's probe bench: a port whose tries reached its host's allowance is
  held until the host has nothing in flight or waiting (or the bench is ``MAX_BENCH``
  long), since a late answer may still raise the allowance; then it is retried or called
  filtered. The allowance is nmap's, or more where the host's drops say an answering port
  could still be silent (``timing.loss_retries``).
* Timing hears every answer of a host that has lost or left unanswered a probe; of other
  hosts, one answer per ``SAMPLE_INTERVAL`` (a loopback scan answers 100,000 a second).
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Final

from portscout.host_timing import HostTiming, ScanTiming
from portscout.plan import Probe
from portscout.results import IPAddress, Reason, Result, State
from portscout.timing import TimingPolicy, TokenBucket, loss_retries

log = logging.getLogger(__name__)

__all__ = ["TRANSITIONS", "Flight", "HostState", "Scheduler", "Stage", "send_pacer"]

BURST: Final = 128  # probes a token bucket lets through at once, at most
SEND_BATCH: Final = 64  # probes one token pays for, at most (a sendmmsg(2) batch)
# Probes pulled from the stream but held in backlogs, in all hosts; beyond, no fresh ones
# are pulled (memory stays bounded by the work in flight).
MAX_BACKLOG: Final = 4096
# A bench this long is settled even while its host still has probes out: a host with
# thousands of filtered ports must not hold them all until its last probe.
MAX_BENCH: Final = 1024
SAMPLE_INTERVAL: Final = 0.001  # seconds between answers fed to timing from quiet hosts
# A host is throttled once at least DROP_SHARE of its answers, and MIN_DROPS, were drops:
# random loss of a few percent stays well below, a rate limit the scan outruns far above.
DROP_SHARE: Final = 0.25
MIN_DROPS: Final = 8


class Stage(enum.Enum):
    """Where a probe is in its life (see the module's diagram)."""

    WAITING = "waiting"  # in its host's backlog: a retry, or a throttled host's probe
    IN_FLIGHT = "in flight"
    BENCHED = "benched"  # its tries reached the allowance; held until its host is quiet
    DECIDED = "decided"


# An enum member costs a class attribute lookup (0.2 us in 3.11): the hot paths use these.
_WAITING, _IN_FLIGHT, _BENCHED, _DECIDED = (
    Stage.WAITING, Stage.IN_FLIGHT, Stage.BENCHED, Stage.DECIDED,
)  # fmt: skip

# (stage, event) -> next stage: every move a flight makes. Tests hold the code to it.
TRANSITIONS: Final[Mapping[tuple[Stage | None, str], Stage]] = {
    (None, "pulled"): Stage.IN_FLIGHT,
    (None, "throttled"): Stage.WAITING,
    (Stage.WAITING, "sent"): Stage.IN_FLIGHT,
    (Stage.IN_FLIGHT, "answered"): Stage.DECIDED,
    (Stage.IN_FLIGHT, "decided"): Stage.DECIDED,
    (Stage.IN_FLIGHT, "unsent"): Stage.WAITING,
    (Stage.IN_FLIGHT, "timed out"): Stage.WAITING,
    (Stage.IN_FLIGHT, "timed out, allowance used"): Stage.BENCHED,
    (Stage.WAITING, "answered"): Stage.DECIDED,
    (Stage.BENCHED, "answered"): Stage.DECIDED,
    (Stage.BENCHED, "retried"): Stage.WAITING,
    (Stage.BENCHED, "given up"): Stage.DECIDED,
}


@dataclass(slots=True, eq=False)
class HostState:
    """What the scheduler keeps per target host, next to its ``HostTiming``.

    ``backlog``: flights waiting to be sent (retries, and every probe of a ``throttled``
    host), made on first use: most hosts never need one. ``bench``: flights whose tries
    reached the allowance. ``watched``: the host lost a probe or left one unanswered, so
    every answer from it goes to timing. ``delay``/``boosted_at``: its boosted send delay
    as last seen, and since when. ``tag``: the engine's (a route, say).
    """

    address: IPAddress
    timing: HostTiming
    throttled: bool
    in_flight: int = 0
    sent: int = 0  # tries sent, retransmissions included
    timeouts: int = 0
    drops: int = 0  # answers to retransmissions (not ICMP errors: routers rate-limit those)
    watched: bool = False
    backlog: deque[Flight] | None = None
    bench: list[Flight] = field(default_factory=list)
    delay: float = 0.0
    boosted_at: float = -math.inf
    tag: object = None

    @property
    def answers(self) -> int:
        """Tries that were answered (or decided without an answer)."""
        return max(0, self.sent - self.in_flight - self.timeouts)


class Flight:
    """One probe's life: its tries so far, when the last went out, and its stage.

    ``lost``: when the last try that timed out was sent (its answer may still come).
    ``free``: tries not held against the allowance (see the module docstring). ``tag``:
    the engine's (what an answer must carry, or a descriptor).
    """

    __slots__ = ("free", "host", "lost", "probe", "sent", "stage", "tag", "tries")

    def __init__(self, probe: Probe, host: HostState, sent: float) -> None:
        """A flight whose first try goes out at ``sent``."""
        self.probe, self.host = probe, host
        self.tries = 1
        self.sent = sent
        self.lost = -math.inf
        self.stage: Stage | None = _IN_FLIGHT
        self.free = 0
        self.tag = -1

    def __repr__(self) -> str:
        stage = self.stage.value if self.stage else "fresh"
        return f"Flight({self.probe.host} port {self.probe.port}, {stage}, tries={self.tries})"


def send_pacer(rate: float | None, unit: int = SEND_BATCH) -> tuple[TokenBucket, int]:
    """A token bucket whose token pays for up to ``unit`` probes sent together, and the
    ``unit`` it settled on.

    At most ``rate * t + BURST`` probes leave in any interval of length t, as with a token
    per probe, because at most ``rate / unit * t + BURST // unit`` tokens are spent in it.
    A token costs one bucket call instead of ``unit``; a batch smaller than ``unit`` spends
    a whole token, which the choice of ``unit`` keeps under a millisecond of the rate.
    """
    if rate is None:
        return TokenBucket(None, BURST), unit
    unit = max(1, min(unit, int(rate // 1000)))
    return TokenBucket(rate / unit, max(1, BURST // unit)), unit


class Scheduler:
    """One scan's probes from pulled to decided (see the module docstring).

    ``probes`` is pulled lazily: at most ``max_in_flight`` flights out and ``MAX_BACKLOG``
    held. ``distinct_tries``: how many tries an engine can tell apart in an answer (the
    SYN engine's source ports; a connect engine's sockets: all), beyond which an answer's
    round trip is ambiguous. ``rtt_hints``: round trips measured by host discovery.
    """

    def __init__(
        self,
        policy: TimingPolicy,
        probes: Iterator[Probe],
        *,
        now: float,
        max_in_flight: int,
        unit: int = SEND_BATCH,
        distinct_tries: int = 1 << 30,
        rtt_hints: Mapping[IPAddress, float] | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self.policy = policy
        self.timing = ScanTiming(policy, started=now, burst=BURST, rtt_hints=rtt_hints)
        self.pacer, self.unit = send_pacer(policy.max_rate, unit)
        self.limit = max_in_flight
        self.distinct_tries = distinct_tries
        self._source = probes
        self.exhausted = False  # the stream ran dry
        self.hosts: dict[IPAddress, HostState] = {}
        self.waiting: deque[HostState] = deque()  # hosts with a backlog, served in turn
        self.held = 0  # flights in all backlogs
        self.throttled = 0  # hosts whose probes wait for their window and send delay
        self.benched: set[HostState] = set()
        self.expiry: deque[tuple[float, Flight, int]] = deque()  # (sent, flight, tries)
        self.in_flight = 0
        self.sent = 0  # tries handed out to send, retransmissions included
        self.done: deque[Result] = deque()  # ports the scheduler decided (filtered)
        self.ended: list[Flight] = []  # flights it decided: the engine forgets them
        self._release_due = -math.inf  # when a waiting host may send next (-inf: now)
        self._last_sample = -math.inf
        self._last_address: IPAddress | None = None
        self._last_host: HostState | None = None

    # -- sending ---------------------------------------------------------------------------

    def host(self, address: IPAddress, now: float) -> HostState:
        """The host's state, made on first use."""
        host = self.hosts.get(address)
        if host is None:
            throttled = self.policy.scan_delay > 0
            host = self.hosts[address] = HostState(
                address, self.timing.host(address, now), throttled
            )
            self.throttled += throttled
        return host

    def next_batch(self, now: float, want: int | None = None) -> list[Flight]:
        """Flights to send now: at most ``want``, ``unit`` and the room in flight, one
        token of the pacer (none: an empty list). Backlogged flights come first, as their
        hosts allow; then fresh probes, those of throttled hosts going to backlogs. Each
        returned flight counts as sent at ``now`` (``unsent`` takes one back)."""
        room = min(self.unit, self.limit - self.in_flight)
        if want is not None:
            room = min(room, want)
        if room <= 0 or self.pacer.delay(now) > 0:
            return []
        if self.exhausted and not self.waiting:
            return []
        self.pacer.consume(now)  # a token spent on a short or empty batch: harmless
        batch: list[Flight] = []
        if self.waiting:
            self._release(batch, room, now)
            expiry = self.expiry
            for flight in batch:  # retries, and throttled hosts' first tries
                flight.tries += 1
                flight.sent = now
                flight.stage = _IN_FLIGHT
                host = flight.host
                host.in_flight += 1
                host.sent += 1
                expiry.append((now, flight, flight.tries))
        wanted = room - len(batch)
        if wanted and not self.exhausted and self.held < MAX_BACKLOG:
            self._pull(batch, wanted, now)
        self.in_flight += len(batch)
        self.sent += len(batch)
        return batch

    def _pull(self, batch: list[Flight], wanted: int, now: float) -> None:
        """Fresh probes into ``batch`` as flights sent at ``now``, or into their throttled
        hosts' backlogs. The hot path of a fast scan: hosts looked up once per run of
        their probes, counted once per run."""
        fresh = 0
        last_address, host, hosts = self._last_address, self._last_host, self.hosts
        run = 0  # flights of ``host`` in a row, counted when the run ends
        append, expire = batch.append, self.expiry.append
        for probe in islice(self._source, wanted):
            fresh += 1
            address = probe.host
            if address is not last_address or host is None:
                if run and host is not None:
                    host.in_flight += run
                    host.sent += run
                    run = 0
                host = hosts.get(address) or self.host(address, now)
                last_address = address
            flight = Flight(probe, host, now)
            if host.throttled:
                flight.tries, flight.stage = 0, _WAITING
                self._hold(host, flight)
                continue
            append(flight)
            expire((now, flight, 1))
            run += 1
        if run and host is not None:
            host.in_flight += run
            host.sent += run
        self._last_address, self._last_host = last_address, host
        if fresh < wanted:
            self.exhausted = True

    def _release(self, batch: list[Flight], room: int, now: float) -> None:
        """Move backlogged flights into ``batch``, up to ``room`` in all: all of an
        unthrottled host's, a throttled host's as its window and send delay allow. Notes
        in ``_release_due`` when a host left waiting may send next."""
        waiting, due = self.waiting, math.inf
        ignore_windows = self.timing.behind_min_rate(now)
        for _ in range(len(waiting)):
            if len(batch) >= room:
                due = -math.inf
                break
            host = waiting.popleft()
            backlog = host.backlog
            assert backlog  # a waiting host has a backlog
            timing = host.timing if host.throttled else None
            released = 0
            while backlog and len(batch) < room:
                flight = backlog[0]
                if flight.stage is _DECIDED:
                    backlog.popleft()  # a late answer decided it
                    self.held -= 1
                    continue
                if timing is not None and not ignore_windows:
                    wait = timing.send_delay(now, host.in_flight + released)
                    if wait is None:  # the window is full: an answer or timeout frees it
                        break
                    if wait > 0:
                        due = min(due, now + wait)
                        break
                if timing is not None:
                    timing.on_send(now)
                backlog.popleft()
                batch.append(flight)
                released += 1
            self.held -= released
            if backlog:
                waiting.append(host)
                if timing is None:
                    due = -math.inf
        self._release_due = due

    def _hold(self, host: HostState, flight: Flight, *, first: bool = False) -> None:
        """Put a flight into its host's backlog (at the head with ``first``)."""
        backlog = host.backlog
        if backlog is None:
            backlog = host.backlog = deque()
        if not backlog:
            self.waiting.append(host)
        if first:
            backlog.appendleft(flight)
        else:
            backlog.append(flight)
        self.held += 1
        self._release_due = -math.inf  # the next pass finds out when it may go

    def unsent(self, flight: Flight) -> None:
        """The engine could not send ``flight`` for a local reason that passes (out of
        descriptors, buffers, source ports): it goes back to the head of its backlog, its
        try not counted."""
        assert flight.stage is _IN_FLIGHT
        host = flight.host
        flight.tries -= 1
        flight.sent = flight.lost
        flight.stage = _WAITING
        host.in_flight -= 1
        host.sent -= 1
        self.in_flight -= 1
        self.sent -= 1
        self._hold(host, flight, first=True)

    def decided(self, flight: Flight, result: Result) -> None:
        """The engine decided ``flight`` without an answer (no route, a local firewall
        refused the send): ``result`` goes to ``done``."""
        self._leave_flight(flight)
        self.done.append(result)

    def _leave_flight(self, flight: Flight) -> None:
        """Take ``flight`` out of where it waits (lazily for backlogs and benches)."""
        if flight.stage is _IN_FLIGHT:
            flight.host.in_flight -= 1
            self.in_flight -= 1
        flight.stage = _DECIDED

    # -- answers ---------------------------------------------------------------------------

    def answered(
        self,
        flight: Flight,
        tryno: int,
        now: float,
        *,
        icmp_error: bool = False,
        ambiguous: bool = False,
    ) -> float | None:
        """``flight``'s try ``tryno`` (0: the first) was answered at ``now``: its port is
        decided, wherever it waited. Returns the round trip of that try, or None where it
        is unknown (an answer to an earlier try, or to one the engine cannot tell apart).
        ``icmp_error``: the answer was an ICMP error (filtered); ``ambiguous``: the engine
        knows the answer may be to a resend it did not make (the kernel's own)."""
        if flight.stage is _DECIDED:
            return None
        host, tries, sent = flight.host, flight.tries, flight.sent
        now = max(now, sent)  # a receive stamp from another clock may read a hair early
        self._leave_flight(flight)
        exact = tryno == tries - 1 and tries <= self.distinct_tries and not ambiguous
        if host.watched:  # a retry, or an answer to one, comes only after a timeout
            self._watched_answer(flight, tryno, sent, now, icmp=icmp_error, ambiguous=ambiguous)
        elif now - self._last_sample >= SAMPLE_INTERVAL:
            self._last_sample = now
            self.timing.on_answer(
                host.address, sent=sent, now=now, host_in_flight=host.in_flight,
                total_in_flight=self.in_flight, tryno=tryno, ambiguous=not exact,
                icmp_error=icmp_error,
            )  # fmt: skip
        return now - sent if exact else None

    def answered_quietly(self, flight: Flight, now: float) -> bool:
        """``answered`` for the hot path of an answer whose round trip nobody wants: True,
        with ``flight`` decided, when it was in flight to a host timing need not hear from
        now (not watched, sampled within ``SAMPLE_INTERVAL``); else False, nothing done."""
        host = flight.host
        if (
            flight.stage is not _IN_FLIGHT
            or host.watched
            or now - self._last_sample >= SAMPLE_INTERVAL
        ):
            return False
        flight.stage = _DECIDED
        host.in_flight -= 1
        self.in_flight -= 1
        return True

    def _watched_answer(
        self, flight: Flight, tryno: int, sent: float, now: float, *, icmp: bool, ambiguous: bool
    ) -> None:
        """Timing's share of an answer from a host that has lost or left unanswered a probe:
        every answer counts, a drop may throttle the host, and its bench may settle."""
        host, tries = flight.host, flight.tries
        exact = tryno == tries - 1 and tries <= self.distinct_tries and not ambiguous
        if tries > 1:
            if tryno:
                # A drop counts against the host's send delay and window only if the lost
                # try went out after the last boost or decrease (nmap compares
                # ``prevSent``), or the retries of a throttled host, each answer a drop,
                # would boost it forever. Timing takes one send time: the lost try's, and
                # no RTT sample (Karn's rule).
                sent, exact = flight.lost, False
                host.drops += not icmp
            elif tryno == tries - 2 and tries <= self.distinct_tries:
                # The try that timed out was answered after all: its round trip is known,
                # and without it a host slower than the group's timeout would never get one.
                sent, exact = flight.lost, not ambiguous
        self.timing.on_answer(
            host.address, sent=sent, now=now, host_in_flight=host.in_flight,
            total_in_flight=self.in_flight, tryno=tryno, ambiguous=not exact,
            icmp_error=icmp,
        )  # fmt: skip
        delay = host.timing.boosted_delay
        if delay > host.delay:
            host.delay, host.boosted_at = delay, now
        if not host.throttled:
            self._throttle_if_congested(host)
        if host.bench:
            self._settle_if_quiet(host)

    # -- time ------------------------------------------------------------------------------

    def timeout(self, host: HostState) -> float:
        """How long ``host``'s tries are waited for now: its own timeout once it has RTT
        samples, else the group's (as nmap); never below --scan-delay."""
        timing = host.timing
        if timing.rtt.samples:
            return timing.probe_timeout
        return max(self.timing.rtt.timeout, self.policy.scan_delay)

    def flight_timeout(self, flight: Flight) -> float:
        """How long ``flight``'s latest try is waited for. A host that never answered is
        timed by the group's estimate, which other, nearer hosts may have made far too
        short for it (a 200 ms host among 10 ms ones waits 100 ms): each retry of its
        ports waits twice as long as the try before (RFC 6298 5.5), up to
        --max-rtt-timeout, so its answers are not all lost to a timeout it never had."""
        host = flight.host
        if host.timing.rtt.samples or flight.tries < 2 or not self.timing.rtt.samples:
            return self.timeout(host)
        backed_off = self.timeout(host) * (1 << min(flight.tries - 1, 16))
        return max(self.timeout(host), min(backed_off, self.policy.max_rtt_timeout))

    def expire(self, now: float) -> list[Flight]:
        """Retry, bench or give up on flights whose timeout passed, oldest first; return
        those that timed out (still answerable: an engine that must keep something to hear
        a late answer keeps it until the flight is decided).

        ``expiry`` is in send order; entries of answered or re-sent flights are skipped. A
        host whose timeout shrank may wait for an older flight of a slower host: at most
        the largest timeout, never a wrong state.
        """
        expiry, expired = self.expiry, []
        while expiry:
            sent, flight, tries = expiry[0]
            if flight.stage is not _IN_FLIGHT or flight.tries != tries or flight.sent != sent:
                expiry.popleft()
                continue
            if sent + self.flight_timeout(flight) > now:  # as next_due computes it
                break
            expiry.popleft()
            self._timed_out(flight, now)
            expired.append(flight)
        return expired

    def _timed_out(self, flight: Flight, now: float) -> None:
        host, port = flight.host, flight.probe.port
        host.in_flight -= 1
        self.in_flight -= 1
        host.timeouts += 1
        host.watched = True
        self.timing.on_timeout(
            host.address, sent=flight.sent, now=now, host_in_flight=host.in_flight,
            total_in_flight=self.in_flight,
        )  # fmt: skip
        flight.lost = flight.sent
        if (
            host.throttled
            and flight.sent < host.boosted_at
            and flight.free <= self.policy.max_retries
        ):
            flight.free += 1
        if flight.tries - flight.free <= self.allowed(host):
            flight.stage = _WAITING
            self._hold(host, flight, first=True)
        else:
            flight.stage = _BENCHED
            host.bench.append(flight)
            self.benched.add(host)
            log.debug("%s port %d benched after %d tries", host.address, port, flight.tries)
        self._settle_if_quiet(host)

    def allowed(self, host: HostState) -> int:
        """Retransmissions a silent port of ``host`` may get now: ``timing.loss_retries``
        over nmap's allowance, with the scheduler's own counts (answers not sampled never
        reach timing)."""
        return loss_retries(
            host.timing.nmap_retries_allowed,
            losses=host.drops,
            answers=host.answers,
            max_retries=self.policy.max_retries,
        )

    def _throttle_if_congested(self, host: HostState) -> None:
        """Throttle a host whose drops show that the rate sends it more than it answers:
        a large share of its answers were drops, or timing boosted its send delay."""
        drops = host.drops
        congested = drops >= MIN_DROPS and drops >= DROP_SHARE * host.answers
        if not congested and host.timing.delay_between_sends <= 0:
            return
        host.throttled = True
        self.throttled += 1
        log.debug("%s throttled: %d drops in %d answers", host.address, drops, host.answers)
        for flight in chain(host.backlog or (), host.bench):
            flight.free = flight.tries
        for _sent, flight, tries in self.expiry:
            if flight.host is host and flight.stage is _IN_FLIGHT and flight.tries == tries:
                flight.free = tries - 1  # its last try is judged at its timeout

    def _settle_if_quiet(self, host: HostState) -> None:
        """Decide benched flights once the host is quiet (or the bench is long): retry those
        the host's allowance, which may have grown meanwhile, still covers; call the rest
        filtered (nmap's probe bench)."""
        bench = host.bench
        if not bench or ((host.in_flight or host.backlog) and len(bench) < MAX_BENCH):
            return
        allowed = self.allowed(host)
        host.bench = []
        self.benched.discard(host)
        for flight in bench:
            if flight.stage is not _BENCHED:
                continue  # a late answer decided it
            if flight.tries - flight.free <= allowed:
                flight.stage = _WAITING
                self._hold(host, flight)
            else:
                flight.stage = _DECIDED
                self.ended.append(flight)
                probe = flight.probe
                self.done.append(
                    Result(host=probe.host, port=probe.port, state=State.FILTERED,
                           reason=Reason.NO_RESPONSE, tries=flight.tries)
                )  # fmt: skip

    def idle(self) -> bool:
        """Every probe pulled is decided and the stream ran dry. Settles the benches first,
        every host being quiet when nothing is in flight."""
        if self.in_flight or not self.exhausted:
            return False
        for host in list(self.benched):
            self._settle_if_quiet(host)
        return not self.waiting

    def next_due(self, now: float) -> float:
        """Seconds until something is due: a send the pacer and the hosts allow, or a
        timeout (``math.inf``: nothing, until an answer comes)."""
        waits = [math.inf]
        if self.in_flight < self.limit:
            if not self.exhausted and self.held < MAX_BACKLOG:
                due = now
            else:
                due = self._release_due if self.waiting else math.inf
            if due < math.inf:
                waits.append(max(self.pacer.delay(now), due - now))
        expiry = self.expiry
        while expiry:
            sent, flight, tries = expiry[0]
            if flight.stage is _IN_FLIGHT and flight.tries == tries and flight.sent == sent:
                waits.append(max(0.0, sent + self.flight_timeout(flight) - now))
                break
            expiry.popleft()
        return max(0.0, min(waits))
