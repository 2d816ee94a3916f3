"""The bench's figures as plots (matplotlib, the optional ``bench`` extra), PNG and SVG.

Four plots, each with a title and labelled axes: wall time per strategy and place; the
pool's wall time against its thread count (where it stops helping); CPU time against wall
time (the GIL shows as threads stuck near the one-core line); peak memory per strategy.
Figures are built as ``matplotlib.figure.Figure`` objects, never through pyplot: no global
figure registry, no GUI backend. SVG text is kept as text (``svg.fonttype: none``), so the
labels can be read and searched in the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from portscout.bench.measure import Figures

FORMATS = ("png", "svg")
MARKERS = ("o", "s", "^", "D", "v", "P")


def _good(figures: Sequence[Figures]) -> list[Figures]:
    return [f for f in figures if f.error is None and f.wall > 0]


def _order(figures: Sequence[Figures], key: str) -> list[str]:
    seen: dict[str, None] = {}
    for f in figures:
        seen.setdefault(getattr(f, key), None)
    return list(seen)


def _label(figures: Sequence[Figures], place: str) -> str:
    ports = next(f.ports for f in figures if f.place == place)
    return f"{place} ({ports:,} ports)"


def _grouped_bars(ax: Axes, figures: Sequence[Figures], value: str) -> None:
    """Bars per strategy (x), one per place, side by side; ``value`` a Figures attribute."""
    strategies, places = _order(figures, "strategy"), _order(figures, "place")
    width = 0.8 / max(1, len(places))
    for i, place in enumerate(places):
        row = {f.strategy: getattr(f, value) for f in figures if f.place == place}
        xs = [x + (i - (len(places) - 1) / 2) * width for x in range(len(strategies))]
        ax.bar(xs, [row.get(name, 0.0) for name in strategies], width,
               label=_label(figures, place))  # fmt: skip
    ax.set_xticks(range(len(strategies)), strategies, rotation=35, ha="right")
    ax.legend(title="place")
    ax.grid(axis="y", alpha=0.3)


def wall_per_strategy(figures: Sequence[Figures]) -> Figure:
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    ax = fig.add_subplot()
    _grouped_bars(ax, figures, "wall")
    ax.set_yscale("log")
    ax.set_xlabel("strategy")
    ax.set_ylabel("wall time (s, log scale)")
    ax.set_title("Wall time per strategy, on loopback and at each round trip")
    return fig


def pool_workers(figures: Sequence[Figures]) -> Figure:
    """Wall time against threads: the pool's sizes, sequential drawn as one thread."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    for i, place in enumerate(_order(figures, "place")):
        points = sorted(
            (1 if f.strategy == "sequential" else int(f.strategy.split()[-1]), f.wall)
            for f in figures
            if f.place == place
            and (f.strategy == "sequential" or f.strategy.startswith("threadpool"))
        )
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker=MARKERS[i % len(MARKERS)], label=_label(figures, place))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("threads in the pool (1 = sequential)")
    ax.set_ylabel("wall time (s, log scale)")
    ax.set_title("Thread pool: wall time against worker count")
    ax.legend(title="place")
    ax.grid(alpha=0.3, which="both")
    return fig


def cpu_against_wall(figures: Sequence[Figures], cores: int) -> Figure:
    """Each run a point; lines where CPU = wall (one core busy) and CPU = cores x wall."""
    fig = Figure(figsize=(9, 6), layout="constrained")
    ax = fig.add_subplot()
    places = _order(figures, "place")
    for i, place in enumerate(places):
        runs = [f for f in figures if f.place == place]
        ax.scatter([f.wall for f in runs], [f.cpu for f in runs], label=_label(figures, place),
                   marker=MARKERS[i % len(MARKERS)])  # fmt: skip
        for f in runs if place in (places[0], places[-1]) else ():  # the others crowd
            ax.annotate(f.strategy, (f.wall, f.cpu), fontsize=6, alpha=0.7,
                        xytext=(3, 2), textcoords="offset points")  # fmt: skip
    low = min(min(f.wall for f in figures), min(max(f.cpu, 1e-3) for f in figures))
    high = max(f.wall for f in figures)
    ax.plot([low, high], [low, high], "k--", lw=0.8, label="CPU = wall (one core)")
    if cores > 1:
        ax.plot([low, high], [cores * low, cores * high], "k:", lw=0.8,
                label=f"CPU = {cores} x wall (every core)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("wall time (s, log scale)")
    ax.set_ylabel("CPU time, user + system, children included (s, log scale)")
    ax.set_title("CPU time against wall time: threads under the GIL stay near one core")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig


def peak_memory(figures: Sequence[Figures]) -> Figure:
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    ax = fig.add_subplot()
    _grouped_bars(ax, figures, "peak_rss_mb")
    ax.set_xlabel("strategy")
    ax.set_ylabel("peak RSS of the largest process (MB)")
    ax.set_title("Peak memory per strategy")
    return fig


def write_plots(figures: Sequence[Figures], cores: int, out: Path) -> list[Path]:
    """Draw the four plots of the successful runs into ``out`` (made if missing), each as
    PNG and SVG; the paths written."""
    good = _good(figures)
    out.mkdir(parents=True, exist_ok=True)
    plots = {
        "wall_per_strategy": wall_per_strategy(good),
        "pool_workers": pool_workers(good),
        "cpu_against_wall": cpu_against_wall(good, cores),
        "peak_memory": peak_memory(good),
    }
    written = []
    with rc_context({"svg.fonttype": "none"}):
        for name, fig in plots.items():
            for fmt in FORMATS:
                path = out / f"{name}.{fmt}"
                fig.savefig(path, format=fmt, dpi=120)
                written.append(path)
    return written
