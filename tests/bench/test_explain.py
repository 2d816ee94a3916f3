"""The explanation: each sentence follows the figures it is given (no machine needed)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from portscout.bench.explain import explain
from portscout.bench.measure import Figures


def fig(strategy: str, wall: float, *, place: str = "loopback", rtt: int | None = None,
        cpu: float | None = None, rss_mb: float = 30.0, ports: int = 35_536,
        exact: bool = True, error: str | None = None) -> Figures:  # fmt: skip
    cpu = wall * 0.9 if cpu is None else cpu
    expected = (45678,)
    return Figures(
        strategy=strategy, place=place, rtt_ms=rtt, ports=ports, wall=wall,
        cpu_user=cpu * 0.6, cpu_sys=cpu * 0.4, peak_rss_kb=int(rss_mb * 1024),
        process_wall=wall + 0.2, found_open=expected if exact else (), expected_open=expected,
        filtered=0, error=error,
    )  # fmt: skip


def loopback(seq: float, pool50: float, tpp: float = 10.0) -> list[Figures]:
    return [
        fig("sequential", seq),
        fig("thread-per-port", tpp, rss_mb=110.0),
        fig("threadpool 10", pool50 * 1.3),
        fig("threadpool 50", pool50),
        fig("threadpool 100", pool50 * 1.05),
        fig("async", 0.5),
        fig("async --processes 2", 0.3, cpu=0.55),
        fig("syn", 0.4),
    ]


def lab(rtt: int, seq: float, pool: float) -> list[Figures]:
    at = {"place": f"{rtt} ms", "rtt": rtt, "ports": 1000}
    return [
        fig("sequential", seq, cpu=0.1, **at),  # type: ignore[arg-type]
        fig("threadpool 10", pool * 8, cpu=0.1, **at),  # type: ignore[arg-type]
        fig("threadpool 100", pool, cpu=0.1, **at),  # type: ignore[arg-type]
    ]


def test_threads_lose_on_loopback_when_sequential_is_faster() -> None:
    text = "\n".join(explain(loopback(seq=1.9, pool50=4.3), cores=2))
    assert "Threads did not pay on loopback: sequential took 1.90 s" in text
    assert "the best pool (threadpool 50) 4.30 s" in text
    assert "no waiting to overlap" in text
    assert "beat sequential" not in text


def test_threads_win_on_loopback_when_the_pool_is_faster() -> None:
    text = "\n".join(explain(loopback(seq=3.8, pool50=3.0), cores=2))
    assert "On loopback threadpool 50 beat sequential (3.00 s against 3.80 s)" in text
    assert "did not pay" not in text


def test_thread_per_port_cost_and_memory_from_the_figures() -> None:
    text = "\n".join(explain(loopback(seq=1.9, pool50=4.0, tpp=10.0), cores=2))
    assert "One thread per port took 2.5x the best pool's time" in text
    assert "110 MB at its peak against 30 MB" in text
    assert "169 us" in text  # (10.0 - 4.0) s / 35,536 threads


def test_fastest_named_per_place_and_only_among_exact_runs() -> None:
    runs = [*loopback(seq=1.9, pool50=4.3), fig("syn --processes 2", 0.1, exact=False)]
    lines = explain(runs, cores=2)
    assert lines[0].startswith("On loopback (35,536 ports) the fastest was async --processes 2")


def test_failed_runs_are_left_out() -> None:
    runs = [*loopback(seq=1.9, pool50=4.3), fig("syn --processes 2", 0.0, error="boom")]
    assert "syn --processes 2" not in "\n".join(explain(runs, cores=2))


def test_waiting_behind_a_round_trip_is_overlapped_by_threads() -> None:
    text = "\n".join(explain(lab(50, seq=50.4, pool=0.6), cores=2))
    assert "At a 50 ms round trip (1,000 ports) the fastest was threadpool 100 (0.60 s)" in text
    assert "At 50 ms sequential took 50.40 s (ports x round trip = 1,000 x 50 ms = 50.00 s)" in text
    assert "84x faster" in text
    assert "the threads were mostly waiting" in text


def test_short_round_trip_where_the_pool_does_not_win() -> None:
    text = "\n".join(explain(lab(1, seq=0.2, pool=0.21), cores=2))
    assert "the round trip is too short for waiting to dominate" in text


@pytest.mark.parametrize(
    ("cores", "cpu", "phrase"),
    [
        (2, 0.8, "kept 1.3 cores busy against 0.9"),
        (2, 0.3, "held by other work"),
        (1, 0.8, "nothing to run on"),
    ],
)
def test_processes_sentence_follows_the_cores(cores: int, cpu: float, phrase: str) -> None:
    runs = loopback(seq=1.9, pool50=4.3)
    runs = [f for f in runs if not f.strategy.startswith("async --")]
    runs.append(fig("async --processes 2", 0.6, cpu=cpu))
    text = "\n".join(explain(runs, cores=cores))
    assert "Sharding async over processes did not help here (0.60 s against 0.50 s" in text
    assert phrase in text


def test_a_busy_machine_is_said_when_sequential_waited_for_a_cpu() -> None:
    runs = [fig("sequential", 11.0, cpu=4.4), *loopback(seq=1.9, pool50=5.0)[1:]]
    text = "\n".join(explain(runs, cores=2))
    assert "Sequential kept only 0.40 cores busy on loopback" in text
    quiet = "\n".join(explain(loopback(seq=1.9, pool50=4.3), cores=2))
    assert "cores busy on loopback, where nothing waits" not in quiet


def test_a_lagging_delay_line_is_named() -> None:
    runs = lab(10, seq=10.4, pool=0.3)
    assert "delay line" not in "\n".join(explain(runs, cores=2))
    runs = [replace(f, lab_dropped=0, lab_late_ms=0.9) for f in runs]  # under 10% of 10 ms
    assert "delay line" not in "\n".join(explain(runs, cores=2))
    runs[1] = replace(runs[1], lab_dropped=12, lab_late_ms=0.1)
    runs[2] = replace(runs[2], lab_late_ms=2.5)
    text = "\n".join(explain(runs, cores=2))
    assert (
        "The delay line fell behind at 10 ms in 2 of 3 runs (up to 2.5 ms late on average, "
        "12 packets dropped)"
    ) in text


def test_pool_sweep_names_where_it_stops_helping() -> None:
    text = "\n".join(explain(loopback(seq=1.9, pool50=4.3), cores=2))
    assert "The pool on loopback was fastest at 50 threads (4.30 s; 100: 4.51 s)" in text
    far = "\n".join(explain(lab(50, seq=50.4, pool=0.6), cores=2))
    assert "The pool at 50 ms kept gaining up to its largest size (threadpool 100, 0.60 s)" in far
