"""What nmap users type, through the real command: names that do not resolve, conflicting
scan types, -6, service names in -p, scoped IPv6. Each scan runs in the test session's
private namespace (127.0.0.1, ::1 and fe80::1%lo are all that can be reached)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("isolated")]

PORTSCOUT = str(Path(sys.executable).with_name("portscout"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([PORTSCOUT, *args, "--no-db"], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert "Traceback" not in done.stderr
    return done


def test_a_name_that_does_not_resolve_is_passed_over() -> None:
    # Was: "cannot resolve" aborted the scan and 127.0.0.1 was never scanned.
    done = run("127.0.0.1", "nosuchhost.invalid", "-p", "22", "-oG", "-")
    assert done.returncode == 0, done.stderr
    assert 'Failed to resolve "nosuchhost.invalid".' in done.stderr
    assert "Host: 127.0.0.1" in done.stdout


def test_no_target_left_is_exit_2() -> None:
    done = run("nosuchhost.invalid", "-p", "22")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "portscout: no target left to scan"


def test_conflicting_scan_types_are_refused() -> None:
    # Was: the last one quietly won.
    done = run("127.0.0.1", "-sS", "-sT", "-p", "22")
    assert done.returncode == 2
    assert done.stderr.strip() == "portscout: conflicting scan types -sS and -sT: give one"


def test_dash_six_keeps_ipv6_targets() -> None:
    # Was: "invalid target '-6'" (argparse took it for a negative number).
    done = run("-6", "::1", "127.0.0.1", "-p", "22", "-oG", "-")
    assert done.returncode == 0, done.stderr
    assert "Host: ::1" in done.stdout
    assert "Host: 127.0.0.1" not in done.stdout
    assert 'Skipping "127.0.0.1"' in done.stderr


def test_service_names_in_the_port_list() -> None:
    # Was: "invalid port 'ssh'".
    done = run("127.0.0.1", "-p", "ssh,http", "-oG", "-", "-Pn")
    assert done.returncode == 0, done.stderr
    ports = done.stdout.split("Ports: ")[1]
    assert "22/closed/tcp//ssh" in ports
    assert "80/closed/tcp//http" in ports


def test_scoped_ipv6_is_taken() -> None:
    # Was: "invalid target 'fe80::1%lo'".
    done = run("fe80::1%lo", "-Pn", "-p", "22", "-oG", "-")
    assert done.returncode == 0, done.stderr
    assert "Host: fe80::1%lo" in done.stdout
