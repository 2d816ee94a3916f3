"""The -oG writer: nmap's grepable lines, parsed back with the regex a grep user would write."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import ip_address

from portscout.output import Writer
from portscout.output.grepable import GrepableWriter
from portscout.results import IPAddress, Reason, Result, ScanMeta, State
from tests.output.conftest import drive, results_for

STARTED = 1_700_000_000.0
FINISHED = STARTED + 0.05
SERVICES = {22: "ssh", 80: "http"}
LOCAL4 = ip_address("127.0.0.1")
LOCAL6 = ip_address("::1")
BENCH = ip_address("198.18.3.4")
HOST_LINE = re.compile(r"^Host: (?P<addr>\S+) \((?P<name>[^)]*)\)\t(?P<rest>.*)$")
PORT_FIELD = re.compile(r"(\d+)/([a-z|]+)/(\w+)/([^/]*)/([^/]*)/([^/]*)/([^/]*)/")


def make_meta(ports: Iterable[int], hostnames: Mapping[IPAddress, str] | None = None) -> ScanMeta:
    return ScanMeta(
        args=("portscout", "-oG", "-", "127.0.0.1"),
        scan_type="connect",
        engine="async",
        ports=tuple(sorted(ports)),
        started=STARTED,
        version="0.1.0",
        key=3,
        hostnames=dict(hostnames or {}),
    )


def render(
    meta: ScanMeta,
    results: Iterable[Result],
    *,
    interrupted: bool = False,
    up: Mapping[IPAddress, Reason] | None = None,
    hosts: Sequence[IPAddress] | None = None,
    **options: object,
) -> str:
    out = io.StringIO()
    writer = GrepableWriter(out, **options)  # type: ignore[arg-type]  # test-only splat
    verbose = options.get("verbose", 0)
    assert isinstance(verbose, int)
    drive(
        writer, meta, results, finished=FINISHED, interrupted=interrupted, verbose=verbose,
        up=up, hosts=hosts,
    )  # fmt: skip
    return out.getvalue()


def test_exact_lines_as_nmap_writes_them() -> None:
    ports = range(1, 1001)
    meta = make_meta(ports, {LOCAL4: "localhost"})
    opened = {22: State.OPEN, 80: State.OPEN}
    text = render(meta, results_for(LOCAL4, ports, opened, State.CLOSED), service_names=SERVICES)

    assert text.splitlines() == [
        f"# portscout 0.1.0 scan initiated {time.ctime(STARTED)} as: portscout -oG - 127.0.0.1",
        "Host: 127.0.0.1 (localhost)\tStatus: Up",
        "Host: 127.0.0.1 (localhost)\tPorts: 22/open/tcp//ssh///, 80/open/tcp//http///"
        "\tIgnored State: closed (998)",
        f"# portscout done at {time.ctime(FINISHED)} -- 1 IP address (1 host up)"
        " scanned in 0.05 seconds",
    ]
    assert text.endswith("\n")


def parse(text: str) -> dict[str, dict[int, tuple[str, str, str]]]:
    """Grepable text -> {address: {port: (state, protocol, service)}}."""
    hosts: dict[str, dict[int, tuple[str, str, str]]] = {}
    for line in text.splitlines():
        match = HOST_LINE.match(line)
        if match is None:
            assert line.startswith("#"), line
            continue
        ports = hosts.setdefault(match["addr"], {})
        for field in match["rest"].split("\t"):
            if field.startswith("Ports: "):
                for port, state, proto, _, service, _, _ in PORT_FIELD.findall(field):
                    ports[int(port)] = (state, proto, service)
    return hosts


def test_round_trip_through_a_regex() -> None:
    ports = [*range(1, 30), 80]
    meta = make_meta(ports)
    results = (
        results_for(LOCAL4, ports, {22: State.OPEN}, State.CLOSED)
        + results_for(LOCAL6, ports, {80: State.OPEN, 22: State.CLOSED}, State.FILTERED)
        + results_for(BENCH, ports, dict.fromkeys(range(1, 11), State.CLOSED), State.FILTERED)
    )
    hosts = parse(render(meta, results, service_names=SERVICES))

    def shown(host: IPAddress) -> dict[int, tuple[str, str, str]]:
        return {
            r.port: (r.state.value, "tcp", SERVICES.get(r.port, ""))
            for r in results
            if r.host == host
        }

    # 127.0.0.1: 29 closed ports exceed nmap's 25 and are folded; one open port listed.
    assert hosts["127.0.0.1"] == {22: ("open", "tcp", "ssh")}
    # ::1: 28 filtered folded; the open and the lone closed port listed.
    assert hosts["::1"] == {22: ("closed", "tcp", "ssh"), 80: ("open", "tcp", "http")}
    # 198.18.3.4: 10 closed and 20 filtered, both under the limit: every port listed.
    assert hosts["198.18.3.4"] == shown(BENCH)


def test_a_host_with_every_port_folded_has_an_empty_ports_field() -> None:
    """nmap 7.93: ``Ports: `` with nothing listed, then the one ignored state."""
    ports = range(1, 101)
    text = render(make_meta(ports), results_for(LOCAL4, ports, {}, State.CLOSED))
    assert text.splitlines()[1:3] == [
        "Host: 127.0.0.1 ()\tStatus: Up",
        "Host: 127.0.0.1 ()\tPorts: \tIgnored State: closed (100)",
    ]


def test_two_folded_states_give_no_ignored_state_field() -> None:
    ports = range(1, 101)
    states = dict.fromkeys(range(1, 50), State.CLOSED) | {80: State.OPEN}
    text = render(make_meta(ports), results_for(BENCH, ports, states, State.FILTERED))
    ports_line = [line for line in text.splitlines() if "Ports:" in line]
    assert ports_line == ["Host: 198.18.3.4 ()\tPorts: 80/open/tcp/////"]


def test_down_hosts_only_when_verbose() -> None:
    ports = range(1, 4)
    found: dict[str, object] = {"up": {}, "hosts": [BENCH]}
    quiet = render(make_meta(ports), [], **found)  # type: ignore[arg-type]
    assert "Host:" not in quiet
    assert quiet.splitlines()[-1].endswith("-- 1 IP address (0 hosts up) scanned in 0.05 seconds")
    loud = render(make_meta(ports), [], verbose=1, **found)  # type: ignore[arg-type]
    assert "Host: 198.18.3.4 ()\tStatus: Down" in loud.splitlines()
    assert "# Ports scanned: TCP(3;1-3) UDP(0;) SCTP(0;) PROTOCOLS(0;)" in loud.splitlines()


def test_interrupted_scan_says_so_and_still_ends() -> None:
    ports = range(1, 1001)
    partial = results_for(LOCAL4, range(1, 10), {5: State.OPEN}, State.CLOSED)
    lines = render(make_meta(ports), partial, interrupted=True).splitlines()
    assert lines[-2] == "# portscout scan interrupted: results are incomplete"
    assert lines[-1].startswith("# portscout done at ")
    assert parse("\n".join(lines)) == {
        "127.0.0.1": {p: ("open" if p == 5 else "closed", "tcp", "") for p in range(1, 10)}
    }


def test_slashes_in_names_become_bars() -> None:
    meta = make_meta([80], {LOCAL4: "a/b"})
    text = render(
        meta, results_for(LOCAL4, [80], {80: State.OPEN}, State.CLOSED), service_names={80: "x/y"}
    )
    assert "Host: 127.0.0.1 (a|b)\tPorts: 80/open/tcp//x|y///" in text


def test_it_is_a_writer() -> None:
    """Driven through the ``Writer`` protocol alone, as the CLI drives it: the open port is
    on its host's line in the stream it was given, which the writer leaves open."""
    stream = io.StringIO()
    writer: Writer = GrepableWriter(stream)  # mypy checks the protocol
    drive(writer, make_meta([80]), results_for(LOCAL4, [80], {80: State.OPEN}), finished=FINISHED)
    assert not stream.closed
    assert parse(stream.getvalue()) == {"127.0.0.1": {80: ("open", "tcp", "")}}
