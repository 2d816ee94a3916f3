"""The history as a user meets it: scans recorded, shown in every format, compared, and
resumed after SIGINT or SIGKILL with exactly the results of an uninterrupted scan."""

from __future__ import annotations

import json
import os
import pty
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from libnmap.parser import NmapParser

from portscout.cli import main
from tests.engines.conftest import nft_rules, serve

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("isolated")]

# A slow scan: dropped ports wait for the timeout, in order, one at a time.
SLOW = ["127.0.0.1", "-p", "1-140", "-r", "--engine", "sequential", "--timeout", "0.15",
        "--max-retries", "0", "-q"]  # fmt: skip
DROP = "tcp dport { 20-30, 60-70, 100-110 } drop"


def _states(db: Path, scan_id: int) -> dict[int, str]:
    """port -> state as stored, read the way a user would: portscout show -oJ -."""
    out = subprocess.run(
        [sys.executable, "-m", "portscout", "show", str(scan_id), "--db", str(db), "-oJ", "-",
         "--no-fold"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    rows = [r for r in map(json.loads, out.splitlines()) if "port" in r]  # not host records
    states = {r["port"]: r["state"] for r in rows}
    assert len(states) == len(rows), "a result stored twice"
    return states


def _stored_rows(db: Path) -> int:
    """Results committed so far, read without disturbing the writer."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute("SELECT count(*) FROM result").fetchone()[0]
            closed = conn.execute("SELECT coalesce(sum(n), 0) FROM closed").fetchone()[0]
        return int(rows) + int(closed)
    except sqlite3.Error:
        return 0


def _interrupt_slow_scan(db: Path, sig: signal.Signals, *extra: str) -> tuple[int, str]:
    """SLOW into ``db`` (with ``extra`` options), sent ``sig`` once 40 ports are stored:
    its exit code and what it said."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "portscout", *SLOW, "--db", str(db), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None and _stored_rows(db) < 40:
        time.sleep(0.05)
    assert proc.poll() is None, "the scan ended before it could be interrupted"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    return proc.returncode, stderr


def _interrupted_then_resumed(tmp_path: Path, sig: signal.Signals) -> dict[int, str]:
    db = tmp_path / "history.db"
    returncode, stderr = _interrupt_slow_scan(db, sig)
    assert "Traceback" not in stderr
    assert returncode == (130 if sig is signal.SIGINT else -signal.SIGKILL), stderr
    partial = _states(db, 1)
    assert 40 <= len(partial) < 140
    listed = subprocess.run(
        [sys.executable, "-m", "portscout", "history", "--db", str(db), "--json"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    expected_status = "interrupted" if sig is signal.SIGINT else "killed"
    assert json.loads(listed)[0]["status"] == expected_status
    resumed = subprocess.run(
        [sys.executable, "-m", "portscout", "resume", "1", "--db", str(db), "-q", "-oJ",
         str(tmp_path / "resumed.jsonl"), "--no-fold"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "2 open, 105 closed, 33 filtered" in resumed.stdout  # the whole scan's counts
    # The writers of a resume see the whole scan, earlier results first.
    lines = (tmp_path / "resumed.jsonl").read_text().splitlines()
    rows = [r for r in map(json.loads, lines) if "port" in r]
    assert sorted(r["port"] for r in rows) == list(range(1, 141))
    return _states(db, 1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_killed_then_resumed_equals_uninterrupted(tmp_path: Path, sig: signal.Signals) -> None:
    with serve({("127.0.0.1", 5): "accept", ("127.0.0.1", 90): "accept"}), nft_rules(DROP):
        resumed = _interrupted_then_resumed(tmp_path / "a", sig)
        whole = tmp_path / "b.db"
        assert main([*SLOW, "--db", str(whole)]) == 0
    assert resumed == _states(whole, 1)
    assert sorted(p for p, s in resumed.items() if s == "open") == [5, 90]
    assert sum(s == "filtered" for s in resumed.values()) == 33


def test_show_writes_every_format_and_diff_sees_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "h.db")
    with serve({("127.0.0.1", 22): "banner", ("127.0.0.1", 8080): "accept"}):
        assert main(["127.0.0.1", "-sT", "-p", "1-1024,8080", "-q", "--db", db]) == 0
    with serve({("127.0.0.1", 22): "banner", ("127.0.0.1", 443): "accept"}):
        assert main(["127.0.0.1", "-sT", "-p", "1-1024,8080", "-q", "--db", db]) == 0
    capsys.readouterr()
    base = tmp_path / "shown"
    assert main(["show", "1", "--db", db, "-oA", str(base), "-q"]) == 0
    (host,) = NmapParser.parse_fromfile(f"{base}.xml").hosts
    assert sorted(host.get_open_ports()) == [(22, "tcp"), (8080, "tcp")]
    assert "Ports: 22/open/tcp//ssh///" in Path(f"{base}.gnmap").read_text()
    assert len(Path(f"{base}.jsonl").read_text().splitlines()) == 3  # host, 2 open ports
    assert len(Path(f"{base}.csv").read_text().splitlines()) == 1026
    capsys.readouterr()
    assert main(["diff", "1", "2", "--db", db, "--json"]) == 1  # they differ, as diff(1)
    diff = json.loads(capsys.readouterr().out)
    changes = {(p["port"], p["a"], p["b"]) for h in diff["hosts"] for p in h["ports"]}
    assert changes == {(443, "closed", "open"), (8080, "open", "closed")}
    assert main(["diff", "1", "2", "--db", db]) == 1
    text = capsys.readouterr().out
    assert "-8080/tcp    open      http-proxy" in text
    assert "+443/tcp     open      https" in text
    assert main(["diff", "1", "1", "--db", db]) == 0  # nothing differs


def test_no_db_records_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert main(["127.0.0.1", "-p", "1-10", "-q", "--no-db"]) == 0
    assert not (tmp_path / "data").exists()
    assert main(["127.0.0.1", "-p", "1-10", "-q"]) == 0
    assert (tmp_path / "data" / "portscout" / "history.sqlite3").is_file()


def _stderr_of(argv: list[str], *, terminal: bool) -> str:
    """Run a scan with stderr on a pseudo-terminal (or a pipe); return what stderr got."""
    command = [sys.executable, "-m", "portscout", *argv]
    if not terminal:
        return subprocess.run(command, capture_output=True, text=True, timeout=30).stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=30)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_progress_only_on_a_terminal(tmp_path: Path) -> None:
    argv = ["127.0.0.1", "-sT", "-p", "7000-7100", "--db", str(tmp_path / "h.db")]
    with serve({("127.0.0.1", 7007): "accept"}):
        live = _stderr_of(argv, terminal=True)
        piped = _stderr_of(argv, terminal=False)
        quiet = _stderr_of([*argv, "-q"], terminal=True)
        stats = _stderr_of([*argv, "-q", "--stats-every", "1ms"], terminal=False)
    assert "Discovered open port 7007/tcp on 127.0.0.1" in live
    assert "Discovered" not in piped
    assert "\x1b" not in piped
    assert "Discovered" not in quiet
    assert "\x1b" not in quiet
    assert stats.splitlines()[-1].startswith("Stats: ")
    assert "101/101 probes (100.0%)" in stats


@pytest.mark.parametrize("engine", ["async", "syn"])
def test_scan_split_over_processes_records_every_port(tmp_path: Path, engine: str) -> None:
    """Worker processes hand closed ports to the history compactly (no result each); the
    stored scan still has every port, so that a resume skips every answered probe."""
    db = tmp_path / "history.db"
    with serve({("127.0.0.1", 7001): "accept", ("127.0.0.1", 19999): "accept"}):
        argv = ["127.0.0.1", "-p", "1-20000", "--engine", engine, "--processes", "2", "-q"]
        assert main([*argv, "--db", str(db)]) == 0
    states = _states(db, 1)
    assert len(states) == 20000
    assert sorted(p for p, s in states.items() if s == "open") == [7001, 19999]
    assert sum(s == "closed" for s in states.values()) == 19998
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT n_closed, probes_sent FROM scan").fetchone()
    assert stored == (19998, 20000)


def test_history_before_any_scan_and_pruning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "h.db")
    assert main(["history", "--db", db]) == 0  # nothing yet: said, not an error
    assert "no scans recorded yet" in capsys.readouterr().err
    for _ in range(4):
        assert main(["127.0.0.1", "-sT", "-p", "1-5", "-q", "--db", db]) == 0
    assert main(["forget", "--keep", "2", "--db", db]) == 0
    assert "forgot scan(s) 1, 2" in capsys.readouterr().err
    assert main(["forget", "--before", "2000-01-01", "--db", db]) == 0  # none that old
    assert "nothing forgotten" in capsys.readouterr().err
    assert main(["forget", "--before", "2999-01-01", "--db", db]) == 0
    assert "forgot scan(s) 3, 4" in capsys.readouterr().err
    assert main(["forget", "--before", "yesterday", "--db", db]) == 2
    assert main(["forget", "--db", db]) == 2


def test_resume_goes_on_writing_the_first_runs_outputs(tmp_path: Path) -> None:
    # Was: a resume wrote no file unless given outputs again; now the first run's files
    # are written again, whole: its results and the resume's.
    db, xml, jsonl = tmp_path / "h.db", tmp_path / "scan.xml", tmp_path / "scan.jsonl"
    outputs = ["-oX", str(xml), "-oJ", str(jsonl), "--no-fold"]
    with serve({("127.0.0.1", 5): "accept", ("127.0.0.1", 90): "accept"}), nft_rules(DROP):
        assert _interrupt_slow_scan(db, signal.SIGINT, *outputs)[0] == 130
        first = len([line for line in jsonl.read_text().splitlines() if '"port"' in line])
        assert 0 < first < 140
        assert main(["resume", "1", "--db", str(db), "-q"]) == 0
    ports = [json.loads(line) for line in jsonl.read_text().splitlines() if '"port"' in line]
    assert sorted(p["port"] for p in ports) == list(range(1, 141))
    (host,) = NmapParser.parse_fromfile(str(xml)).hosts
    assert sorted(host.get_open_ports()) == [(5, "tcp"), (90, "tcp")]
