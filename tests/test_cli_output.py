"""What the command line writes, through the real CLI in a subprocess: every format for
-sn, nmap's own -oG and -oN for the same scan, a stable order, the terminal view.

nmap runs inside this session's private namespace against 127.0.0.x only, with ``-n``
(portscout does no reverse DNS unless -R); times, latencies and the program's name are
masked where they legitimately differ.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import ExitStack
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from portscout.lab import Host, Lab, Link
from tests.engines.conftest import nft_rules, serve

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("isolated")]

LISTENERS = {("127.0.0.1", 22): "accept", ("127.0.0.1", 80): "accept"}
# 127.0.0.2: ports 1-50 silent; 127.0.0.4: everything silent; the rest answer RST.
RULES = ("ip daddr 127.0.0.2 tcp dport 1-50 drop", "ip daddr 127.0.0.4 drop")
QUICK = ("--max-retries", "0", "--max-rtt-timeout", "200ms")


def portscout(
    *args: str, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portscout", *args, "--no-db"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def loopback_lab() -> Iterator[None]:
    """Listeners on 127.0.0.1:22 and :80 and the filter RULES, for the whole module."""
    with ExitStack() as stack:
        stack.enter_context(serve(LISTENERS))
        stack.enter_context(nft_rules(*RULES, hook="input"))
        yield


def run_both(tmp_path: Path, args: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """The same scan by nmap and by portscout: {"grep": text, "normal": text} of each."""
    outs: list[dict[str, str]] = []
    for tool in ("nmap", "portscout"):
        grep, normal = tmp_path / f"{tool}.gnmap", tmp_path / f"{tool}.nmap"
        files = ["-oG", str(grep), "-oN", str(normal)]
        if tool == "nmap":
            done = subprocess.run(["nmap", "-n", *args, *files], capture_output=True, timeout=120)
        else:
            done = portscout("-n", *args, *files)  # type: ignore[assignment]
        assert done.returncode == 0, done.stderr
        outs.append({"grep": grep.read_text(), "normal": normal.read_text()})
    return outs[0], outs[1]


def masked(text: str) -> list[str]:
    """Lines with what legitimately differs masked: the program's name, times, versions,
    latencies, nmap's data-file note."""
    lines = []
    for line in text.splitlines():
        if line.startswith(("Read data files from", "Warning: ")):
            continue  # nmap's notes on stdout and in -oN (retransmission caps)
        if line.startswith("# ") and (" scan initiated " in line or " done at " in line):
            line = re.sub(r"^# \S+ .* scan initiated .*$", "# START", line)
            line = re.sub(r"^# \S+ done at .* -- (.*) scanned in .*$", r"# DONE \1", line)
        line = line.replace("Nmap scan report", "portscout scan report")
        lines.append(re.sub(r"\([\d.]+s latency\)", "(Ns latency)", line))
    return lines


NMAP_CASES = [
    ["-p", "1-100", "127.0.0.1-3"],  # opens listed, all-closed hosts folded
    ["--open", "-p", "1-100", "127.0.0.1-3"],  # hosts without open ports counted, not shown
    ["-p", "20-25", "127.0.0.1", "--reason"],  # nothing folded: every port, REASON column
    ["-p", "45-60", "127.0.0.2", *QUICK],  # filtered and closed, both listed
    ["-p", "1-100", "127.0.0.2", *QUICK],  # two states folded: empty Ports, no Ignored
    ["-Pn", "-p", "1-30", "127.0.0.4", *QUICK],  # nothing answered: still up (-Pn)
    ["-v", "-p", "1-30", "127.0.0.3"],  # -v: '# Ports scanned', fold limit 50
    ["-sn", "127.0.0.0/30"],  # ping scan: status lines only
]


@pytest.mark.usefixtures("loopback_lab")
@pytest.mark.parametrize("args", NMAP_CASES, ids=" ".join)
def test_grepable_and_normal_match_nmap_line_for_line(tmp_path: Path, args: list[str]) -> None:
    nmap, ours = run_both(tmp_path, args)
    assert masked(ours["grep"]) == masked(nmap["grep"])
    assert masked(ours["normal"]) == masked(nmap["normal"])


@pytest.mark.usefixtures("loopback_lab")
def test_ping_scan_reaches_every_file_format(tmp_path: Path) -> None:
    files = {k: tmp_path / f"a.{k}" for k in ("xml", "gnmap", "jsonl", "csv")}
    done = portscout(
        "127.0.0.0/30", "-sn", "-oX", str(files["xml"]), "-oG", str(files["gnmap"]),
        "-oJ", str(files["jsonl"]), "--csv", str(files["csv"]),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    hosts = [f"127.0.0.{i}" for i in range(4)]
    root = ET.fromstring(files["xml"].read_text())
    assert [h.find("address").attrib["addr"] for h in root.findall("host")] == hosts  # type: ignore[union-attr]
    assert {h.find("status").attrib["state"] for h in root.findall("host")} == {"up"}  # type: ignore[union-attr]
    assert root.find("runstats/hosts").attrib == {"up": "4", "down": "0", "total": "4"}  # type: ignore[union-attr]
    assert [line for line in files["gnmap"].read_text().splitlines() if "Up" in line] == [
        f"Host: {h} ()\tStatus: Up" for h in hosts
    ]
    records = [json.loads(line) for line in files["jsonl"].read_text().splitlines()]
    assert [(r["host"], r["status"]) for r in records] == [(h, "up") for h in hosts]
    assert all("latency" in r for r in records)
    rows = list(csv.DictReader(io.StringIO(files["csv"].read_text())))
    assert [(r["host"], r["state"]) for r in rows] == [(h, "up") for h in hosts]
    # The terminal: every host, then the summary line last.
    lines = done.stdout.splitlines()
    assert [line for line in lines if "scan report for" in line] == [
        f"portscout scan report for {h}" for h in hosts
    ]
    assert lines[-1].startswith("portscout done: 4 hosts up, 0 down;")


@pytest.mark.usefixtures("loopback_lab")
def test_two_runs_give_the_same_outputs_in_address_and_port_order(tmp_path: Path) -> None:
    texts = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        base = tmp_path / run / "scan"
        args = ["127.0.0.5", "127.0.0.1-3", "-p", "1-300", *QUICK, "-oA", "scan", "--no-fold"]
        done = portscout(*args, cwd=tmp_path / run)
        assert done.returncode == 0, done.stderr
        texts.append(
            {
                s: Path(f"{base}{s}").read_text()
                for s in (".xml", ".gnmap", ".jsonl", ".csv", ".nmap")
            }
        )
    for suffix, text in texts[0].items():
        assert _timeless(text) == _timeless(texts[1][suffix]), suffix
    rows = [json.loads(line) for line in texts[0][".jsonl"].splitlines()]
    order = [(IPv4Address(r["host"]), r.get("port", -1)) for r in rows]
    assert order == sorted(order)
    assert len([r for r in rows if "port" in r]) == 4 * 300
    csv_rows = list(csv.DictReader(io.StringIO(texts[0][".csv"])))
    csv_order = [(IPv4Address(r["host"]), int(r["port"])) for r in csv_rows]
    assert csv_order == sorted(csv_order)
    root = ET.fromstring(texts[0][".xml"])
    hosts = [h.find("address").attrib["addr"] for h in root.findall("host")]  # type: ignore[union-attr]
    assert hosts == ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.5"]


def _timeless(text: str) -> str:
    """``text`` without times: dates, epoch seconds, durations, round trips."""
    text = re.sub(r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}", "DATE", text)
    text = re.sub(r'(time|start|endtime|starttime|srtt|rttvar|to|elapsed)="[^"]*"', r'\1=""', text)
    text = re.sub(r'"(rtt|latency)":[^,}]+', r'"\1":T', text)
    text = re.sub(r"\d+\.\d+", "T", text)  # CSV rtt, summary seconds, latencies
    return text


def test_oa_dash_is_refused_in_one_line() -> None:
    done = portscout("127.0.0.1", "-p", "22", "-oA", "-")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "-oA needs a file name base, not '-'" in done.stderr
    assert not Path("-.xml").exists()


@pytest.mark.usefixtures("loopback_lab")
def test_json_lines_fold_as_nmap_unless_no_fold(tmp_path: Path) -> None:
    out = tmp_path / "a.jsonl"
    assert portscout("127.0.0.5", "127.0.0.1", "-p", "1-100", "-oJ", str(out)).returncode == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    records = [r for r in rows if "port" not in r]
    assert [r["host"] for r in records] == ["127.0.0.1", "127.0.0.5"]
    first = records[0]
    assert first["ports"] == {"open": 2, "closed": 98, "filtered": 0}
    assert first["extraports"] == [{"state": "closed", "count": 98, "reasons": {"reset": 98}}]
    # 127.0.0.5: 100 closed, all folded; 127.0.0.1: its two open ports only.
    assert [(r["host"], r["port"]) for r in rows if "port" in r] == [
        ("127.0.0.1", 22),
        ("127.0.0.1", 80),
    ]
    every = tmp_path / "b.jsonl"
    assert portscout("127.0.0.1", "-p", "1-100", "-oJ", str(every), "--no-fold").returncode == 0
    ports = [json.loads(line) for line in every.read_text().splitlines()][1:]
    assert [r["port"] for r in ports] == list(range(1, 101))
    for r in ports:  # seconds, to the microsecond at most
        assert r["rtt"] is None or round(r["rtt"], 6) == r["rtt"]


@pytest.mark.usefixtures("loopback_lab")
def test_terminal_shows_every_host_up_as_nmap(tmp_path: Path) -> None:
    done = portscout("127.0.0.1", "127.0.0.3", "127.0.0.5", "-p", "22,80")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for host in ("127.0.0.1", "127.0.0.3", "127.0.0.5"):  # closed-only hosts too
        assert f"portscout scan report for {host}\n" in text
    assert re.search(r"Host is up \(\d\.\d+s latency\)\.\n", text)
    assert "22/tcp closed ssh" in text
    assert "RTT" not in text  # nmap has no RTT column; a port's own is in the JSON lines
    top = portscout("127.0.0.3", "--top-ports", "100", "-v")
    assert "Not shown: 100 closed tcp ports (reset)" in top.stdout
    assert top.stdout.count("/tcp") == 0  # -v is verbosity: closed ports stay folded


@pytest.mark.usefixtures("loopback_lab")
def test_summary_is_one_line_after_the_hosts_even_past_80_columns() -> None:
    done = portscout("127.0.0.1", "127.0.0.3", "127.0.0.5", "-p", "1-30", "--reason")
    lines = done.stdout.splitlines()
    summary = lines[-1]
    assert re.fullmatch(
        r"portscout done: 3 hosts up, 0 down; ports: 1 open, 89 closed, 0 filtered; "
        r"90 probes sent \(0 retries\), \d+/s, \d+\.\d\d s \(engine \w+\)",
        summary,
    ), summary
    assert all("scan report" not in line for line in lines[lines.index(summary) :])
    assert len(summary) > 80  # piped: still one line
    assert "Host is up, received localhost-response" in done.stdout
    assert re.search(r"\n22/tcp +open +ssh +syn-ack ttl 64\n", done.stdout)


@pytest.mark.usefixtures("loopback_lab")
def test_verbose_debug_and_reverse_dns() -> None:
    verbose = portscout("127.0.0.1", "-p", "20-25", "-v")
    assert "Discovered open port 22/tcp on 127.0.0.1" in verbose.stdout
    debug = portscout("127.0.0.1", "-p", "22", "-d")
    assert "portscout: DEBUG: scan: engine" in debug.stderr
    assert "portscout: DEBUG: discovery: 1 of 1 hosts up" in debug.stderr
    assert "DEBUG" not in portscout("127.0.0.1", "-p", "22").stderr
    named = portscout("127.0.0.1", "-p", "22", "-R", "-oG", "-")
    assert "Host: 127.0.0.1 (localhost)\tStatus: Up" in named.stdout
    plain = portscout("127.0.0.1", "-p", "22", "-n", "-oG", "-")
    assert "Host: 127.0.0.1 ()\tStatus: Up" in plain.stdout


def test_a_host_that_does_not_answer_discovery_gets_nmaps_hint() -> None:
    down = IPv4Address("198.18.7.12")
    with Lab([Host(address=down, up=False)], link=Link(rtt=0.010)):
        done = portscout(str(down), "-p", "22", *QUICK)
    assert done.returncode == 0, done.stderr
    assert (
        "Note: Host seems down. If it is really up, but blocking our ping probes, try -Pn"
        in done.stdout
    )
    assert done.stdout.splitlines()[-1].startswith("portscout done: 0 hosts up, 1 down;")
