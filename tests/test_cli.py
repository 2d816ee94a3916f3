"""The command line as a user meets it: exit codes, one-line errors, outputs, Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from libnmap.parser import NmapParser

from portscout.cli import main
from tests.engines.conftest import nft_rules, serve


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["198.18.0.300"], "invalid target '198.18.0.300'"),
        (["127.0.0.1", "-p", "90-80"], "invalid port range '90-80'"),
        (["127.0.0.1", "-p", "70000"], "port '70000' out of range"),
        (["127.0.0.1", "--engine", "warp"], "unknown engine 'warp'"),
        (["127.0.0.1", "--bogus"], "unrecognized arguments: --bogus"),
        (["127.0.0.1", "--top-ports", "0"], "top-ports count '0'"),
        (["127.0.0.1", "--timeout", "0"], "--timeout 0 must be positive seconds"),
        (["127.0.0.1", "--max-retries", "-1"], "--max-retries -1 must not be negative"),
        (["127.0.0.1", "--max-parallelism", "0"], "--max-parallelism 0 must be at least 1"),
        (["-iL", "/nonexistent/targets.txt"], "/nonexistent/targets.txt"),
        ([], "no targets given"),
        (["127.0.0.1", "-oJ", "-", "-oX", "-"], "only one output may go to stdout"),
        (["127.0.0.1", "--host-timeout", "30s"], "--host-timeout is not supported"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("portscout ")


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_json_lines_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scan.jsonl"
    with serve({("127.0.0.1", 7801): "accept"}):
        assert main(["127.0.0.1", "-sT", "-p", "7800-7802", "-oJ", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["status"] for r in rows if "port" not in r] == ["up"]  # the host record
    assert [(r["port"], r["state"], r["reason"]) for r in rows if "port" in r] == [
        (7800, "closed", "conn-refused"),
        (7801, "open", "syn-ack"),
        (7802, "closed", "conn-refused"),
    ]
    text = capsys.readouterr().out
    assert "7801/tcp" in text
    assert "1 open, 2 closed, 0 filtered" in text


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_all_formats_at_once(tmp_path: Path) -> None:
    base = tmp_path / "scan"
    with serve({("127.0.0.1", 22): "banner", ("127.0.0.1", 8080): "accept"}):
        assert main(["127.0.0.1", "-p", "1-1024,8080", "-oA", str(base), "-q"]) == 0
    report = NmapParser.parse_fromfile(str(base) + ".xml")
    (host,) = report.hosts
    assert sorted(host.get_open_ports()) == [(22, "tcp"), (8080, "tcp")]
    assert "Ports: 22/open/tcp//ssh///" in (tmp_path / "scan.gnmap").read_text()
    # The host record and the two open ports; 1023 closed ports folded (--no-fold: all).
    assert len((tmp_path / "scan.jsonl").read_text().splitlines()) == 3
    assert "22/tcp   open  ssh" in (tmp_path / "scan.nmap").read_text()
    assert (tmp_path / "scan.csv").read_text().startswith("host,port,protocol,state")


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_ctrl_c_keeps_results_and_exits_130(tmp_path: Path) -> None:
    """Interrupt a slow scan: exit 130, and every result found so far is written (a host
    is written whole when the scan is done with it or, as here, at the end)."""
    out = tmp_path / "partial.jsonl"
    command = [sys.executable, "-m", "portscout", "127.0.0.1", "-p", "1-400", "-r",
               "--engine", "sequential", "--timeout", "5", "-oJ", str(out), "--no-fold",
               "--stats-every", "0.05s", "--no-db"]  # fmt: skip
    with nft_rules("tcp dport 300-400 drop"):
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stderr.readline()  # "Stats: ... 299/400 probes ..." as it goes
            if " 299/400 probes" in line:
                break
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["port"] for r in rows if "port" in r) == list(range(1, 300))
    assert "interrupted" in stdout


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_demo_finds_exactly_its_listeners() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "portscout", "demo"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "found exactly the 5 open ports" in proc.stdout


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize("engine", ["async", "threadpool"])
@pytest.mark.parametrize("limit", [64, 70])
def test_a_tiny_descriptor_limit_still_scans_exactly(engine: str, limit: int) -> None:
    """``ulimit -n 64`` said "max in flight must be positive, got 0", naming an option the
    user had not set: now the scan runs as wide as the limit allows, history included."""
    command = (f"ulimit -n {limit} && exec {sys.executable} -m portscout 127.0.0.1"
               f" -p 1-200 --engine {engine} --timeout 1s -q -oJ - --no-fold")  # fmt: skip
    with serve({("127.0.0.1", 22): "accept", ("127.0.0.1", 150): "accept"}):
        proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [row for line in proc.stdout.splitlines() if "port" in (row := json.loads(line))]
    assert len(rows) == 200
    assert sorted(r["port"] for r in rows if r["state"] == "open") == [22, 150]
    assert {r["state"] for r in rows if r["port"] not in (22, 150)} == {"closed"}
