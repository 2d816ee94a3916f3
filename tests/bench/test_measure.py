"""One strategy's child: its figures come back, and so does its failure."""

from __future__ import annotations

import pytest

from portscout.bench.measure import run_child
from portscout.bench.strategies import Place, Strategy
from portscout.demo import listeners

PORT = 40123


def test_a_failing_child_is_a_figure_with_its_error() -> None:
    place = Place("loopback", "127.0.0.1", (1, 10), None, ())
    f = run_child(Strategy("nonsense", "no-such-engine"), place)
    assert f.error is not None
    assert "unknown engine 'no-such-engine'" in f.error
    assert not f.exact


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize(
    "strategy",
    [
        Strategy("threadpool 10", "threadpool", workers=10),
        Strategy("async --processes 2", "async", processes=2),
    ],
    ids=lambda s: s.name,
)
def test_child_reports_its_own_figures(strategy: Strategy) -> None:
    """Found exactly the listener; CPU and memory are the child's own (its workers' CPU
    included): a Python process of tens of MB, not the pytest process's size."""
    place = Place("loopback", "127.0.0.1", (40000, 40999), None, (PORT,))
    with listeners({("127.0.0.1", PORT): "accept"}):
        f = run_child(strategy, place)
    assert f.error is None
    assert f.exact
    assert f.found_open == (PORT,)
    assert 0 < f.wall < f.process_wall
    assert f.cpu > 0
    assert 5 * 1024 < f.peak_rss_kb < 200 * 1024
