"""connect.py's pure parts: the blocking engines' timing, fed from many threads."""

from __future__ import annotations

import threading

from portscout.engines.connect import BlockingTiming
from portscout.host_timing import HostTiming
from portscout.timing import TimingPolicy, loss_retries

POLICY = TimingPolicy(max_retries=8)


def allowance(host: HostTiming) -> int:
    """The scheduler's rule (``schedule.Scheduler.allowed``) over a host's timing."""
    return loss_retries(
        host.nmap_retries_allowed, losses=host.late_answers, answers=host.answers,
        max_retries=POLICY.max_retries,
    )  # fmt: skip


def test_blocking_timing_decides_as_a_host_timing_told_every_answer() -> None:
    """Answers counted without a lock from 8 threads reach the host's timing, all of them
    and in order: the retry allowance is the one a HostTiming told each answer gives."""
    timing, reference = BlockingTiming(POLICY), HostTiming(POLICY, started=0.0)
    for late in range(3):  # an answer to a retry after each burst: a loss each time

        def answer() -> None:
            for _ in range(250):
                timing.on_answer("198.18.0.1", sent=0.0, now=0.0, tryno=0)

        threads = [threading.Thread(target=answer) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        timing.on_answer("198.18.0.1", sent=0.0, now=0.0, tryno=1 + late)
        for _ in range(8 * 250):
            reference.on_answer(sent=0.0, now=0.0, in_flight=0, tryno=0)
        reference.on_answer(sent=0.0, now=0.0, in_flight=0, tryno=1 + late)
        assert timing.retries_allowed("198.18.0.1", 0.0) == allowance(reference)
    assert allowance(reference) > 1  # the losses counted: more than nmap's one retry
    assert timing.retries_allowed("198.18.0.2", 0.0) == 1  # a host never heard of: nmap's


def test_the_timeout_is_the_initial_one() -> None:
    assert BlockingTiming(TimingPolicy()).timeout == 1.0
    assert BlockingTiming(TimingPolicy.template(4)).timeout == 0.5
