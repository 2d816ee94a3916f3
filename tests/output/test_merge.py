"""``portscout merge``: the JSON lines of --shard parts joined into one scan's output."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from portscout.errors import UsageError
from portscout.output.merge import merge_parts, read_part
from portscout.results import State
from tests.engines.conftest import serve

HOST_UP = (
    '{"host":"%s","status":"up","reason":"syn-ack","reason_ttl":null,"latency":0.001,'
    '"hostname":null,"ports":{"open":%d,"closed":%d,"filtered":0},"extraports":[]}\n'
)
HOST_DOWN = (
    '{"host":"%s","status":"down","reason":"no-response","reason_ttl":null,"latency":null,'
    '"hostname":null}\n'
)
PORT = (
    '{"host":"%s","port":%d,"protocol":"tcp","state":"%s","reason":"%s","rtt":null,'
    '"tries":1,"reason_ttl":null}\n'
)


def part(*hosts: tuple[str, list[int], list[int]]) -> list[str]:
    """JSON lines of hosts (address, open ports, closed ports); no ports at all: down."""
    lines: list[str] = []
    for address, opened, closed in hosts:
        if not opened and not closed:
            lines.append(HOST_DOWN % address)
            continue
        lines.append(HOST_UP % (address, len(opened), len(closed)))
        ports = [(p, "open", "syn-ack") for p in opened] + [
            (p, "closed", "conn-refused") for p in closed
        ]
        lines += [PORT % (address, p, s, r) for p, s, r in sorted(ports)]
    return lines


def test_hosts_of_parts_merge_in_address_order_with_each_port_once() -> None:
    a = part(("198.18.0.1", [22], [23]), ("198.18.0.9", [], []))
    b = part(("198.18.0.2", [80], []), ("198.18.0.9", [443], [1]))
    c = part(("198.18.0.1", [22], [24]))  # port 22 again: a shard run twice
    merged = list(merge_parts([read_part("a", a), read_part("b", b), read_part("c", c)]))
    assert [str(h.address) for h, _ in merged] == ["198.18.0.1", "198.18.0.2", "198.18.0.9"]
    first, _, down_in_a = (h for h, _ in merged)
    assert [(r.port, r.state) for r in first.results] == [
        (22, State.OPEN), (23, State.CLOSED), (24, State.CLOSED),
    ]  # fmt: skip
    assert [dropped for _, dropped in merged] == [1, 0, 0]
    assert down_in_a.up  # up in one part is up
    assert [r.port for r in down_in_a.results] == [1, 443]


def test_a_folded_part_is_refused() -> None:
    lines = part(("198.18.0.1", [22], [23, 24]))
    del lines[2]  # port 23 folded into extraports: counted, not listed
    with pytest.raises(UsageError, match=r"lists 2 of its 3 ports.*--no-fold"):
        list(read_part("p.jsonl", lines))


def test_hosts_out_of_order_are_refused() -> None:
    lines = part(("198.18.0.2", [22], []), ("198.18.0.1", [22], []))
    with pytest.raises(UsageError, match=r"p\.jsonl:3: host 198\.18\.0\.1 out of address order"):
        list(read_part("p.jsonl", lines))


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portscout", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_merge_of_a_non_jsonl_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.xml").write_text("<nmaprun>\n")
    proc = run("merge", "x.xml", "missing.jsonl", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == "portscout: x.xml:1: not a line of portscout's JSON lines (-oJ)\n"


def lines_without_timing(path: Path) -> list[dict[str, object]]:
    """Every line but what differs between two runs: round trips, tries, latency."""
    out = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for key in ("rtt", "tries", "latency", "reason_ttl"):
            record.pop(key, None)
        out.append(record)
    return out


def xml_ports(path: Path) -> list[tuple[str | None, ...]]:
    root = ET.parse(path).getroot()
    return [
        (p.get("portid"), p.find("state").get("state"))  # type: ignore[union-attr]
        for p in root.iter("port")
    ]


OPEN = (22, 80, 443, 1500, 1999)


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_two_shard_halves_merge_to_the_single_process_scan(tmp_path: Path) -> None:
    scan = ["127.0.0.1", "-p", "1-2000", "--seed", "11", "--no-db", "-q", "--no-fold"]
    with serve({("127.0.0.1", port): "accept" for port in OPEN}):
        whole = run(*scan, "-oJ", "whole.jsonl", "-oX", "whole.xml", cwd=tmp_path)
        halves = [
            run(*scan, "--shard", f"{i}/2", "-oJ", f"part{i}.jsonl", cwd=tmp_path) for i in (1, 2)
        ]
    assert whole.returncode == 0, whole.stderr
    assert [h.returncode for h in halves] == [0, 0], [h.stderr for h in halves]
    parts = [lines_without_timing(tmp_path / f"part{i}.jsonl") for i in (1, 2)]
    assert all(len(p) > 900 for p in parts)  # each half did about half the ports
    merged = run("merge", "part1.jsonl", "part2.jsonl", "-oX", "merged.xml", "-oJ",
                 "merged.jsonl", "--no-fold", "-q", cwd=tmp_path)  # fmt: skip
    assert merged.returncode == 0, merged.stderr
    assert lines_without_timing(tmp_path / "merged.jsonl") == lines_without_timing(
        tmp_path / "whole.jsonl"
    )
    assert xml_ports(tmp_path / "merged.xml") == xml_ports(tmp_path / "whole.xml")
    again = run("merge", "part1.jsonl", "part2.jsonl", "part1.jsonl", cwd=tmp_path)
    assert again.stdout == (tmp_path / "merged.jsonl").read_text()  # nothing doubled
    assert "duplicate port line(s) kept once" in again.stderr


def port_lines(path: Path) -> list[dict[str, object]]:
    return [r for r in lines_without_timing(path) if "port" in r]


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_show_from_joins_the_history_files_of_shard_parts(tmp_path: Path) -> None:
    """Each part recorded in its own history file, as on its own machine: ``show --from``
    gives every port of the single-process scan once; a part given twice doubles
    nothing; JSON lines parts join as ``merge`` joins them; parts of another key are
    refused in one line."""
    scan = ["127.0.0.1-2", "-p", "1-1000", "--seed", "12", "-q", "--no-fold"]
    with serve({("127.0.0.1", port): "accept" for port in OPEN}):
        whole = run(*scan, "--no-db", "-oJ", "whole.jsonl", "-oX", "whole.xml", cwd=tmp_path)
        halves = [
            run(*scan, "--shard", f"{i}/2", "--db", f"part{i}.db", "-oJ", f"part{i}.jsonl",
                cwd=tmp_path)
            for i in (1, 2)
        ]  # fmt: skip
        other = run(*scan, "--seed", "13", "--shard", "2/2", "--db", "other.db", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    assert [h.returncode for h in [*halves, other]] == [0, 0, 0], [h.stderr for h in halves]
    shown = run("show", "--from", "part1.db", "part2.db", "-oJ", "shown.jsonl", "-oX",
                "shown.xml", "--no-fold", "-q", cwd=tmp_path)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert len(port_lines(tmp_path / "shown.jsonl")) == 2000
    assert port_lines(tmp_path / "shown.jsonl") == port_lines(tmp_path / "whole.jsonl")
    assert xml_ports(tmp_path / "shown.xml") == xml_ports(tmp_path / "whole.xml")
    hosts = [r for r in lines_without_timing(tmp_path / "shown.jsonl") if "port" not in r]
    assert [(h["host"], h["status"]) for h in hosts] == [("127.0.0.1", "up"), ("127.0.0.2", "up")]
    again = run("show", "--from", "part1.db", "part2.db", "part1.db", "-oJ", "-", "--no-fold",
                cwd=tmp_path)  # fmt: skip
    assert again.stdout == (tmp_path / "shown.jsonl").read_text()  # nothing doubled
    assert "duplicate port line(s) kept once" in again.stderr
    jsonl = run("show", "--from", "part1.jsonl", "part2.jsonl", "-oJ", "-", "--no-fold",
                cwd=tmp_path)  # fmt: skip
    merged = run("merge", "part1.jsonl", "part2.jsonl", cwd=tmp_path)
    assert jsonl.returncode == merged.returncode == 0
    assert jsonl.stdout == merged.stdout
    assert port_lines(tmp_path / "whole.jsonl") == [
        {k: v for k, v in json.loads(line).items() if k not in ("rtt", "tries", "reason_ttl")}
        for line in jsonl.stdout.splitlines()
        if '"port"' in line
    ]
    refused = run("show", "--from", "part1.db", "other.db", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "another key" in refused.stderr
