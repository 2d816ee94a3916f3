"""OS errors at the engines' boundary: a host without a route is a decided host, a local
failure is one ScanError line (exit 1), never a traceback or a scan that spins for ever.

Runs in the test session's private network namespace; the IPv6-less host is a fresh
namespace of its own (``unshare -n``), so that disabling IPv6 there touches nothing else.
"""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
from ipaddress import ip_address
from pathlib import Path

import pytest

from portscout import Reason, State, iscan
from portscout.cli import main
from portscout.engines import ENGINES
from portscout.timing import TimingPolicy
from tests.engines.conftest import nft_rules, serve

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("isolated")]

ALL_ENGINES = sorted(ENGINES)
BLOCKING = sorted(name for name, spec in ENGINES.items() if spec.blocking)
REPO = Path(__file__).resolve().parents[2]

# Run in a fresh namespace whose IPv6 is disabled (as in Docker by default): a listener on
# 127.0.0.1 port 7001, then the real command line against ::1 and 127.0.0.1.
NO_IPV6_DRIVER = r"""
import subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with open("/proc/sys/net/ipv6/conf/all/disable_ipv6", "w") as f:
    f.write("1")
from portscout.demo import listeners
with listeners({("127.0.0.1", 7001): "accept"}):
    argv = [sys.executable, "-m", "portscout", "::1", "127.0.0.1", "-Pn", "-p", "7000-7002",
            "--engine", sys.argv[1], "--timeout", "0.3", "--no-db", "-q", "-oJ", "-", "--no-fold"]
    sys.exit(subprocess.run(argv, timeout=float(sys.argv[2])).returncode)
"""


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_a_host_without_source_address_is_decided_not_retried(engine: str) -> None:
    """EADDRNOTAVAIL for ::1 (IPv6 disabled) says the host has no address to send from:
    its ports are filtered (``no-route``) at once, and the other host's are still exact.
    Before, the connect engines took it for back-pressure and retried it for ever."""
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", NO_IPV6_DRIVER, engine, "10"],
        capture_output=True, text=True, timeout=20, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    found = {(r["host"], r["port"]): (r["state"], r["reason"]) for r in rows if "port" in r}
    assert found == {
        ("::1", 7000): ("filtered", "no-route"),
        ("::1", 7001): ("filtered", "no-route"),
        ("::1", 7002): ("filtered", "no-route"),
        ("127.0.0.1", 7000): ("closed", "conn-refused" if engine != "syn" else "reset"),
        ("127.0.0.1", 7001): ("open", "syn-ack"),
        ("127.0.0.1", 7002): ("closed", "conn-refused" if engine != "syn" else "reset"),
    }


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_addresses_without_an_interface_are_filtered_and_the_scan_goes_on(engine: str) -> None:
    """fe80::1 without a scope and ff02::1 have no source address: before, the connect
    engines raised a bare OSError (EINVAL) and the SYN engine aborted the whole scan."""
    with serve({("127.0.0.1", 7011): "accept"}):
        results = list(
            iscan(["fe80::1", "ff02::1", "127.0.0.1"], "7010-7012", engine=engine,
                  discovery=False, timeout=0.3)
        )  # fmt: skip
    found = {(str(r.host), r.port): (r.state, r.reason) for r in results}
    assert len(found) == len(results) == 9
    for port in (7010, 7011, 7012):
        assert found["fe80::1", port] == (State.FILTERED, Reason.NO_ROUTE)
        assert found["ff02::1", port][0] is State.FILTERED
    assert found["127.0.0.1", 7011] == (State.OPEN, Reason.SYN_ACK)
    assert {found["127.0.0.1", p][0] for p in (7010, 7012)} == {State.CLOSED}


def _refuse_sockets(monkeypatch: pytest.MonkeyPatch, where: object, name: str) -> None:
    """New sockets from ``where.name`` fail; wrapping an existing descriptor (as the event
    loop's ``socketpair`` does) still works."""
    real = getattr(where, name)

    def refuse(*args: object, **kwargs: object) -> object:
        if len(args) > 3 or kwargs.get("fileno") is not None:
            return real(*args, **kwargs)
        raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")

    monkeypatch.setattr(where, name, refuse)


@pytest.mark.parametrize("engine", BLOCKING)
def test_a_local_os_error_is_one_line_and_exit_1(
    engine: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, the blocking engines' bare OSError went through cli.py as a traceback."""
    _refuse_sockets(monkeypatch, socket, "socket")
    code = main(["127.0.0.1", "-Pn", "-p", "7020", "--engine", engine, "--no-db", "-q"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"portscout: error: the {engine} engine: Protocol not supported\n" in err
    assert "Traceback" not in err


def test_host_discovery_fails_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from portscout import scanner
    from portscout.engines import async_connect

    # As an unprivileged user: discovery pings with connect() (as root, raw SYNs).
    monkeypatch.setattr(scanner, "raw_sockets_allowed", lambda: False)
    _refuse_sockets(monkeypatch, async_connect, "_new_socket")
    code = main(["198.18.9.1", "-p", "7020", "-sT", "--no-db", "-q"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.endswith(": Protocol not supported\n")
    assert err.count("\n") == 1


def _timeouts_set(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    """The timeouts given to sockets from now on, in order."""
    seen: list[float | None] = []

    class Spy(socket.socket):
        def settimeout(self, value: float | None) -> None:
            seen.append(value)
            super().settimeout(value)

    monkeypatch.setattr(socket, "socket", Spy)
    return seen


@pytest.mark.parametrize("engine", BLOCKING)
@pytest.mark.parametrize(
    ("options", "wait"),
    [({}, 1.0), ({"timing": TimingPolicy.template(5)}, 0.25), ({"timeout": 2.0}, 2.0)],
)
def test_blocking_engines_wait_the_policys_initial_timeout(
    engine: str, options: dict[str, object], wait: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blocking connect waits ``initial_rtt_timeout``: 1 s by default (the threads
    study's), -T5's 250 ms; before, -T templates never reached these engines."""
    seen = _timeouts_set(monkeypatch)
    (result,) = iscan("127.0.0.1", "7030", engine=engine, discovery=False, **options)
    assert result.state is State.CLOSED
    assert seen == [wait]


@pytest.mark.parametrize("engine", BLOCKING)
def test_blocking_engines_follow_the_retry_allowance(engine: str) -> None:
    """--max-retries caps nmap's allowance, as in every engine: a host that has lost nothing
    gets one retransmission (before: exactly --max-retries of them), --max-retries 0 none."""
    with nft_rules("tcp dport 7031 drop"):
        (capped,) = iscan("127.0.0.1", "7031", engine=engine, discovery=False, timeout=0.2,
                          max_retries=5)  # fmt: skip
        (none,) = iscan("127.0.0.1", "7031", engine=engine, discovery=False, timeout=0.2,
                        max_retries=0)  # fmt: skip
    assert (capped.state, capped.reason, capped.tries) == (State.FILTERED, Reason.NO_RESPONSE, 2)
    assert (none.state, none.tries) == (State.FILTERED, 1)
    assert capped.host == ip_address("127.0.0.1")
