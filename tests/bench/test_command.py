"""``portscout bench`` through the real command line, in subprocesses.

The quick run is the issue's acceptance test: every strategy at every place, each exact;
the JSON carries every figure; the plots are real PNG and SVG files with their labels; the
explanation names the strategy the figures show fastest. No speed is asserted: which
strategy wins depends on the machine, and the test reads the answer from the figures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from portscout.bench.strategies import RTTS_MS, sharded_processes, strategies

COMMAND = [sys.executable, "-m", "portscout", "bench"]
PLOTS = ("wall_per_strategy", "pool_workers", "cpu_against_wall", "peak_memory")
# Axis labels each plot must carry (x, y), as written in its SVG text.
LABELS = {
    "wall_per_strategy": ("strategy", "wall time (s, log scale)"),
    "pool_workers": ("threads in the pool (1 = sequential)", "wall time (s, log scale)"),
    "cpu_against_wall": ("wall time (s, log scale)", "CPU time, user + system"),
    "peak_memory": ("strategy", "peak RSS of the largest process (MB)"),
}
# Unprivileged: root's files, but no capability at all (no CAP_SYS_ADMIN for a namespace,
# no CAP_NET_RAW for SYN); a real uid change would also lose this venv's interpreter.
NO_CAPS = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]


def bench(*args: str, timeout: float, prefix: list[str] | None = None,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [*(prefix or []), *COMMAND, *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


def fastest_by_figures(runs: list[dict[str, Any]], place: str) -> str:
    here = [r for r in runs if r["place"] == place and r["exact"]]
    return str(min(here, key=lambda r: r["wall_s"])["strategy"])


def svg_text(path: Path) -> str:
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    return " ".join(t for el in root.iter() for t in (el.text or "",) if t.strip())


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str],
                                                             dict[str, Any], Path]:  # fmt: skip
    if os.geteuid() != 0:
        pytest.skip("netns: needs root")
    tmp = tmp_path_factory.mktemp("bench")
    out, report = tmp / "plots", tmp / "bench.json"
    proc = bench("--quick", "--json", str(report), "--out", str(out), timeout=110)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(report.read_text()), out


@pytest.mark.netns
@pytest.mark.timeout(120)
def test_quick_names_every_strategy_and_round_trip_each_exact(
    quick: tuple[subprocess.CompletedProcess[str], dict[str, Any], Path],
) -> None:
    _, data, _ = quick
    names = [s.name for s in strategies(sharded_processes())]
    assert [s["name"] for s in data["strategies"]] == names
    places = ["loopback", *(f"{rtt} ms" for rtt in RTTS_MS)]
    assert [p["name"] for p in data["places"]] == places
    assert [p["rtt_ms"] for p in data["places"]] == [None, *RTTS_MS]
    assert data["places"][0]["expected_open"] == [45678]  # the demo's listener in range
    measured = {(r["strategy"], r["place"]) for r in data["runs"]}
    assert measured == {(n, p) for n in names for p in places}
    for r in data["runs"]:
        assert r["exact"], r
        assert r["found_open"] == r["expected_open"]
        assert r["filtered"] == 0
        assert r["wall_s"] > 0
        assert r["cpu_s"] > 0
        assert r["peak_rss_kb"] > 1024
        assert r["process_wall_s"] > r["wall_s"]
        behind_lab = r["place"] != "loopback"
        assert (r["lab_dropped"] is not None) == behind_lab
        assert (r["lab_late_mean_ms"] is not None) == behind_lab
    machine = data["machine"]
    assert machine["cores"] == os.cpu_count()
    assert machine["python"].endswith(sys.version.split()[0])
    assert machine["kernel"].endswith(os.uname().release)


@pytest.mark.netns
def test_quick_explanation_names_the_fastest_strategy(
    quick: tuple[subprocess.CompletedProcess[str], dict[str, Any], Path],
) -> None:
    proc, data, _ = quick
    text = " ".join(proc.stdout.split())  # the console wraps lines
    for place in data["places"]:
        best = fastest_by_figures(data["runs"], place["name"])
        line = next(s for s in data["explanation"] if "the fastest was" in s
                    and (place["rtt_ms"] is None) == s.startswith("On loopback")
                    and (place["rtt_ms"] is None or f"At a {place['rtt_ms']} ms" in s))  # fmt: skip
        assert f"the fastest was {best} (" in line
        assert line in text
    assert "Wall time, CPU time and peak memory per strategy" in proc.stdout
    assert f"{machine_cores(data)} cores" in proc.stdout.splitlines()[0]


def machine_cores(data: dict[str, Any]) -> int:
    return int(data["machine"]["cores"])


@pytest.mark.netns
def test_quick_plots_are_png_and_svg_with_axis_labels(
    quick: tuple[subprocess.CompletedProcess[str], dict[str, Any], Path],
) -> None:
    from matplotlib.image import imread

    _, data, out = quick
    assert sorted(data["plots"]) == sorted(str(out / f"{n}.{x}") for n in PLOTS for x in
                                           ("png", "svg"))  # fmt: skip
    for name in PLOTS:
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = imread(png).shape
        assert height > 300
        assert width > 300
        text = svg_text(out / f"{name}.svg")
        for label in LABELS[name]:
            assert label in text, (name, label)


def test_unprivileged_refuses_in_one_line(tmp_path: Path) -> None:
    proc = bench(timeout=60, prefix=NO_CAPS)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "private network namespace" in lines[0]
    assert "--here" in lines[0]


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
@pytest.mark.timeout(90)
def test_here_unprivileged_scans_loopback_only(tmp_path: Path) -> None:
    """--here without privileges: loopback in this (the test session's private) namespace, the
    demo's listener on 45678 opened by the bench, no lab, SYN skipped (no raw sockets)."""
    report = tmp_path / "here.json"
    proc = bench("--here", "--quick", "--only", "async,syn", "--repeat", "2", "--json", str(report),
                 timeout=80, prefix=NO_CAPS)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(report.read_text())
    assert [p["name"] for p in data["places"]] == ["loopback"]
    assert [s["engine"] for s in data["strategies"]] == ["async", "async"]
    assert "raw sockets need root" in proc.stderr
    assert "plots: --out DIR (needs matplotlib: pip install 'portscout[bench]')" in proc.stdout
    assert all(r["exact"] and 45678 in r["found_open"] for r in data["runs"])
    for r in data["runs"]:  # the fastest of two runs stands for the strategy
        assert len(r["walls_s"]) == 2
        assert r["wall_s"] == min(r["walls_s"])


def test_without_matplotlib_plots_say_how_to_install(tmp_path: Path) -> None:
    fake = tmp_path / "site" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("no matplotlib in this test")\n')
    env = {**os.environ, "PYTHONPATH": str(fake.parent)}
    proc = bench("--quick", "--out", str(tmp_path / "plots"), timeout=60, env=env)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "portscout: bench: plots need matplotlib: pip install 'portscout[bench]'"
    ]
    assert not (tmp_path / "plots").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--only", "nope"], "names no strategy"),
        (["--repeat", "0"], "--repeat must be 1 to 100, got 0"),
    ],
)
def test_bad_options_one_line_exit_2(args: list[str], needle: str) -> None:
    proc = bench(*args, "--here", timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1
    assert needle in proc.stderr


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
@pytest.mark.timeout(90)
def test_ctrl_c_reports_what_was_measured(tmp_path: Path) -> None:
    """SIGINT after two strategies: exit 130, their rows in the table and the JSON."""
    report = tmp_path / "partial.json"
    proc = subprocess.Popen(
        [*COMMAND, "--quick", "--json", str(report)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    done = [proc.stderr.readline() for _ in range(2)]  # one progress line per strategy
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert all("exact" in line for line in done)
    data = json.loads(report.read_text())
    assert data["interrupted"] is True
    measured = [r["strategy"] for r in data["runs"]]
    assert measured[:2] == ["sequential", "thread-per-port"]
    assert "interrupted" in out
    assert "sequential" in out
