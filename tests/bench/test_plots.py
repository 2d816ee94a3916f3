"""The plots: titles and axis labels read back through matplotlib's API, files written."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from portscout.bench.measure import Figures
from portscout.bench.plots import (
    cpu_against_wall,
    peak_memory,
    pool_workers,
    wall_per_strategy,
    write_plots,
)


def figures() -> list[Figures]:
    out = []
    for place, rtt, scale in (("loopback", None, 1.0), ("10 ms", 10, 0.2)):
        for name, wall in (("sequential", 2.0), ("threadpool 10", 1.5), ("threadpool 50", 1.0),
                           ("thread-per-port", 9.0), ("async", 0.5)):  # fmt: skip
            out.append(Figures(
                strategy=name, place=place, rtt_ms=rtt, ports=1000, wall=wall * scale,
                cpu_user=wall * scale / 2, cpu_sys=0.1, peak_rss_kb=30_000, process_wall=wall,
                found_open=(1,), expected_open=(1,), filtered=0,
            ))  # fmt: skip
    return out


def test_every_plot_has_a_title_and_axis_labels() -> None:
    runs = figures()
    for fig in (wall_per_strategy(runs), pool_workers(runs), cpu_against_wall(runs, 2),
                peak_memory(runs)):  # fmt: skip
        (ax,) = fig.axes
        assert ax.get_title()
        assert ax.get_xlabel()
        assert ax.get_ylabel()
        assert ax.get_legend() is not None


def test_pool_plot_draws_sequential_as_one_thread() -> None:
    ax = pool_workers(figures()).axes[0]
    first = ax.get_lines()[0]
    points = np.asarray(first.get_xydata()).tolist()
    assert points == [[1, 2.0], [10, 1.5], [50, 1.0]]


def test_write_plots_skips_failed_runs(tmp_path: Path) -> None:
    runs = [*figures(), Figures(
        strategy="syn", place="loopback", rtt_ms=None, ports=1000, wall=0.0, cpu_user=0.0,
        cpu_sys=0.0, peak_rss_kb=0, process_wall=1.0, found_open=(), expected_open=(1,),
        filtered=0, error="failed",
    )]  # fmt: skip
    written = write_plots(runs, 2, tmp_path / "new")
    assert len(written) == 8
    assert all(p.stat().st_size > 1000 for p in written)
    root = ET.parse(tmp_path / "new" / "wall_per_strategy.svg").getroot()
    texts = {el.text.strip() for el in root.iter() if el.text and el.text.strip()}
    assert "async" in texts
    assert "syn" not in texts
