"""How a scan's options become the one ``TimingPolicy`` its engine gets, how descriptors
are budgeted, and how results are batched. No packet is sent here: ``Scan`` is built, and
run only with an engine that sends nothing."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator

import pytest

from portscout import scanner
from portscout.cli_args import build_parser, config_from_args
from portscout.engines.base import EngineOptions
from portscout.errors import OptionError
from portscout.plan import Probe
from portscout.results import Reason, Result, State
from portscout.scanner import Scan, ScanConfig, fd_budget
from portscout.timing import TimingPolicy


def built(**options: object) -> Scan:
    return Scan(ScanConfig(targets=["127.0.0.1"], ports="1-3", processes=1, **options))  # type: ignore[arg-type]


def from_command_line(*argv: str) -> Scan:
    args = build_parser().parse_args(["127.0.0.1", "-p", "1-3", *argv])
    return Scan(config_from_args(args, argv))


def test_engine_options_hold_the_policy_and_nothing_it_holds() -> None:
    names = {f.name for f in dataclasses.fields(EngineOptions)}
    assert names == {"max_in_flight", "timing", "workers", "rtt_hints"}


@pytest.mark.parametrize("engine", ["sequential", "threadpool", "async"])
def test_a_template_reaches_every_engine(engine: str) -> None:
    """-T5's retries and timeouts are in the one policy every engine reads."""
    options = from_command_line("-T5", "--engine", engine).options
    assert options.timing == TimingPolicy.template(5)


def test_max_retries_is_given_once() -> None:
    scan = from_command_line("-T4", "--max-retries", "3", "--engine", "sequential")
    assert scan.config.max_retries is None  # in the policy, not beside it
    assert scan.options.timing.max_retries == 3


def test_max_parallelism_is_given_once() -> None:
    scan = from_command_line("--max-parallelism", "7", "--engine", "threadpool")
    assert scan.config.max_in_flight is None
    assert scan.options.timing.max_parallelism == 7
    assert scan.options.max_in_flight == 7


def test_library_shortcuts_merge_into_the_policy() -> None:
    """``timeout``, ``max_retries``, ``rate`` and ``max_in_flight`` of ``scan()`` are the
    command line's --timeout, --max-retries, --max-rate and --max-parallelism."""
    library = built(engine="async", timeout=0.3, max_retries=2, rate=500.0, max_in_flight=9)
    command_line = from_command_line(
        "--engine", "async", "--timeout", "300ms", "--max-retries", "2", "--max-rate", "500",
        "--max-parallelism", "9",
    )  # fmt: skip
    assert library.options == command_line.options
    assert library.options.timing.initial_rtt_timeout == 0.3
    assert library.options.timing.max_rtt_timeout == 0.3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_retries": -1}, "--max-retries -1 must not be negative"),
        ({"timeout": 0.0}, "--timeout 0 must be positive"),
        ({"max_in_flight": 0}, "--max-parallelism 0 must be at least 1"),
    ],
)
def test_one_check_one_message(options: dict[str, object], message: str) -> None:
    """The library and the command line meet the same check, worded once."""
    with pytest.raises(OptionError, match=message):
        built(**options)


def test_timeout_sets_initial_and_highest() -> None:
    """--timeout T: a probe waits T at first and never longer; a more specific option given
    beside it wins."""
    policy = TimingPolicy().with_options(timeout=3.0)
    assert (policy.initial_rtt_timeout, policy.max_rtt_timeout) == (3.0, 3.0)
    policy = TimingPolicy().with_options(timeout=0.05)
    assert (policy.min_rtt_timeout, policy.initial_rtt_timeout) == (0.05, 0.05)
    policy = TimingPolicy().with_options(timeout=2.0, max_rtt_timeout=5.0)
    assert (policy.initial_rtt_timeout, policy.max_rtt_timeout) == (2.0, 5.0)


def test_default_policy_is_defined_once() -> None:
    """No option: the engines get nmap's -T3 as ``TimingPolicy`` defines it."""
    assert built(engine="sequential").options.timing == TimingPolicy()
    assert from_command_line("--engine", "sequential").options.timing == TimingPolicy()


@pytest.mark.parametrize(
    ("limit", "processes", "expected"),
    [(1 << 20, 1, (1 << 20) - 64), (1 << 20, 4, ((1 << 20) - 64) // 4), (64, 1, 32),
     (70, 1, 35), (8, 1, 4), (1, 1, 1), (64, 8, 4)],
)  # fmt: skip
def test_fd_budget_leaves_a_reserve_and_at_least_one(
    limit: int, processes: int, expected: int
) -> None:
    assert fd_budget(limit, processes) == expected


def test_the_last_batch_comes_when_the_engine_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batcher wakes when the engine is done, not at its next tick: a scan of one port
    had waited ``BATCH_SECONDS`` (50 ms, a third of its time) for nothing. Here the tick
    is an hour, and a fake engine sends nothing."""

    class Answering:
        name = "fake"

        async def run(
            self, probes: Iterator[Probe], options: EngineOptions
        ) -> AsyncIterator[Result]:
            for probe in probes:
                yield Result(probe.host, probe.port, State.CLOSED, Reason.RESET)

    monkeypatch.setattr(scanner, "BATCH_SECONDS", 3600.0)
    scan = built(engine="async", discovery=False)
    scan.engine = Answering()

    async def collect() -> list[Result]:
        return [result async for batch in scan.batches() for result in batch]

    found = asyncio.run(asyncio.wait_for(collect(), timeout=30))
    assert sorted(r.port for r in found) == [1, 2, 3]
