"""-sV through the real command line: flags, every output format, bad input (exit 2)."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from portscout.demo import listeners

LOCAL = "127.0.0.1"
SSH_PORT, HTTP_PORT, SILENT_PORT = 2222, 8081, 7777  # SILENT: accepts, closes


def portscout(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portscout", *argv],
        capture_output=True, text=True, timeout=120, cwd=cwd, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


@contextlib.contextmanager
def http_server(port: int) -> Iterator[None]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((LOCAL, port), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def servers(isolated: None) -> Iterator[str]:
    with (
        listeners({(LOCAL, SSH_PORT): "banner", (LOCAL, SILENT_PORT): "accept"}),
        http_server(HTTP_PORT),
    ):
        yield f"{SSH_PORT},{HTTP_PORT},{SILENT_PORT}"


@pytest.mark.netns
def test_sv_in_json_lines_xml_csv_and_table(servers: str, tmp_path: Path) -> None:
    done = portscout(LOCAL, "-p", servers, "-Pn", "-sV", "--version-light", "--no-db",
                     "--service-probes", "built-in", "-oA", str(tmp_path / "out"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    services = {r["port"]: r["service"] for r in lines if "port" in r}
    assert services[SSH_PORT]["name"] == "ssh"
    assert services[SSH_PORT]["product"] == "portscout-demo"
    assert services[SSH_PORT]["method"] == "probed"
    assert services[SSH_PORT]["confidence"] == 10
    assert services[SSH_PORT]["database"] == "built-in"
    assert (services[HTTP_PORT]["product"], services[HTTP_PORT]["version"]) == ("SimpleHTTP", "0.6")
    assert services[SILENT_PORT]["name"] == "tcpwrapped"  # it hangs up before a word
    xml = (tmp_path / "out.xml").read_text()
    assert (
        '<service name="http" product="SimpleHTTP" version="0.6" method="probed" conf="10"/>' in xml
    )
    csv_text = (tmp_path / "out.csv").read_text()
    assert "product,version,extrainfo,cpe,method,conf" in csv_text.splitlines()[0]
    assert f"{LOCAL},{HTTP_PORT},tcp,open" in csv_text
    assert "SimpleHTTP,0.6" in csv_text
    gnmap = (tmp_path / "out.gnmap").read_text()
    assert f"{SSH_PORT}/open/tcp//ssh//portscout-demo (protocol 2.0)/" in gnmap
    assert "VERSION" in done.stdout
    assert "SimpleHTTP 0.6" in done.stdout
    assert "Service detection: signatures from built-in" in done.stdout


@pytest.mark.netns
def test_sv_with_nmaps_file(servers: str, nmap_db: object) -> None:
    done = portscout(LOCAL, "-p", servers, "-Pn", "-sV", "--version-intensity", "0",
                     "--no-db", "-oJ", "-")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    found = {r["port"]: r["service"] for r in lines if "port" in r}
    assert found[SSH_PORT]["name"] == "ssh"
    assert found[HTTP_PORT]["name"] == "http"
    assert found[HTTP_PORT]["database"].endswith("nmap-service-probes")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--version-intensity", "12"], "version intensity must be 0-9, got 12"),
        (["--service-probes", "/nonexistent/x"], "cannot read probe file '/nonexistent/x'"),
        (["--version-light", "--version-all"], "not allowed with argument"),
    ],
)
def test_bad_service_options_are_one_line_exit_2(
    argv: list[str], message: str, tmp_path: Path
) -> None:
    done = portscout(LOCAL, "-p", "1", "-Pn", "-sV", "--no-db", *argv, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_malformed_probe_file_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "probes"
    bad.write_text("Probe TCP NULL q||\nrarity 99\n")
    done = portscout(LOCAL, "-p", "1", "-Pn", "-sV", "--no-db", "--service-probes", str(bad))
    assert done.returncode == 2
    assert done.stderr.strip() == f"portscout: {bad}:2: rarity must be 1-9, got '99'"
