"""A host behind the kernel's SYN proxy (nftables ``synproxy`` in the lab's target
namespace) answers a SYN-ACK on every port: issue 13 wants it flagged, not reported as
thousands of open ports. Through the CLI, in the session's private namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from portscout.lab import Host, Lab, Link, ListenerMode

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("isolated")]
PROXIED = IPv4Address("198.18.42.10")
OPEN = {22: ListenerMode.BANNER, 8080: ListenerMode.ACCEPT}
PORTS = "1-1000,8080"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    host = Host(address=PROXIED, open=OPEN, synproxy=True)
    with Lab([host], link=Link(rtt=0.002), seed=7, max_seconds=120) as running:
        yield running


def portscout(*argv: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "portscout", str(PROXIED), "-Pn", "--no-db", "-sS", *argv],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def scan_json(*extra: str, ports: str = PORTS) -> list[dict[str, object]]:
    done = portscout("-p", ports, "-oJ", "-", "--no-fold", "-q", *extra)
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_syn_proxy_answers_every_port(lab: Lab) -> None:
    """The lab reproduces the problem: a SYN scan sees every probed port answer."""
    records = scan_json()
    opened = {r["port"] for r in records if r.get("state") == "open"}
    assert len(opened) == 1001  # 1-1000 and 8080: every probed port


def test_a_host_answering_every_port_is_flagged(lab: Lab) -> None:
    records = scan_json()
    hosts = [r for r in records if "port" not in r]
    assert len(hosts) == 1
    assert str(hosts[0]["note"]).startswith("all-ports-answer: 1001 of 1001 probed ports")
    confidences = {r["port"]: r.get("confidence") for r in records if r.get("state") == "open"}
    assert len(confidences) == 1001
    assert set(confidences.values()) == {0.2}


def test_the_terminal_says_it_once_and_xml_conf_is_low(lab: Lab, tmp_path: Path) -> None:
    done = portscout("-p", PORTS, "-oX", str(tmp_path / "out.xml"))
    assert done.stdout.count("all-ports-answer") == 1
    assert "/tcp" not in done.stdout  # no port listed: none was confirmed
    xml = (tmp_path / "out.xml").read_text()
    assert xml.count('method="table" conf="2"') > 900  # every port nmap-services names
    assert 'conf="3"' not in xml


def test_with_sv_only_the_ports_that_speak_are_confident(lab: Lab) -> None:
    records = scan_json("-sV", "--service-probes", "built-in", "--version-light",
                        ports="1-120,8080")  # fmt: skip
    hosts = [r for r in records if "port" not in r]
    assert "all-ports-answer" in str(hosts[0]["note"])
    confident = {r["port"] for r in records if r.get("confidence") == 1.0}
    assert confident == {22}  # the SSH banner; 8080 holds the connection silently
    doubtful = [r for r in records if r.get("state") == "open" and r["port"] != 22]
    assert len(doubtful) == 120
    assert all(isinstance(c := r["confidence"], float) and c < 0.5 for r in doubtful)
