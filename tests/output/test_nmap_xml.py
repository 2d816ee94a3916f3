"""The -oX writer: nmap's XML as nmap's own tools read it (libnmap, nmap.xsl, ndiff)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import ip_address
from pathlib import Path

import pytest
from libnmap.parser import NmapParser

from portscout.output import Writer
from portscout.output.hosts import ignore_limit
from portscout.output.nmap_xml import NmapXmlWriter, load_service_names
from portscout.ports import format_ports
from portscout.results import IPAddress, Reason, Report, Result, ScanMeta, State
from tests.output.conftest import drive, results_for

STARTED = 1_700_000_000.0
FINISHED = STARTED + 2.5
NMAP_XSL = Path("/usr/share/nmap/nmap.xsl")
NMAP_SERVICES = Path("/usr/share/nmap/nmap-services")
SERVICES = {22: "ssh", 80: "http", 443: "https"}
LOCAL4 = ip_address("127.0.0.1")
LOCAL6 = ip_address("::1")
BENCH = ip_address("198.18.0.7")


def meta_for(ports: Iterable[int], **extra: object) -> ScanMeta:
    fields: dict[str, object] = {
        "args": ("portscout", "-oX", "out.xml", "-p", "1-100", "127.0.0.1"),
        "scan_type": "connect",
        "engine": "async",
        "ports": tuple(sorted(ports)),
        "started": STARTED,
        "version": "0.1.0",
        "key": 7,
    }
    fields.update(extra)
    return ScanMeta(**fields)  # type: ignore[arg-type]  # test-only keyword splat


def render(
    meta: ScanMeta,
    results: Iterable[Result],
    *,
    interrupted: bool = False,
    up: Mapping[IPAddress, Reason] | None = None,
    hosts: Sequence[IPAddress] | None = None,
    **options: object,
) -> str:
    """Drive a writer through start/add/finish as the scanner does; return the document."""
    out = io.StringIO()
    writer = NmapXmlWriter(out, clock=lambda: STARTED + 1, **options)  # type: ignore[arg-type]
    verbose = options.get("verbose", 0)
    assert isinstance(verbose, int)
    drive(
        writer, meta, results, finished=FINISHED, interrupted=interrupted, verbose=verbose,
        up=up, hosts=hosts,
    )  # fmt: skip
    return out.getvalue()


@pytest.fixture
def two_hosts() -> tuple[ScanMeta, list[Result]]:
    """127.0.0.1 and ::1 over ports 1-100: 22 and 80 open, the rest refused."""
    ports = range(1, 101)
    meta = meta_for(ports, hostnames={LOCAL4: "localhost"})
    opened = {22: State.OPEN, 80: State.OPEN}
    results = results_for(LOCAL4, ports, opened) + results_for(LOCAL6, ports, opened)
    return meta, results


def test_document_has_nmaps_shape(two_hosts: tuple[ScanMeta, list[Result]]) -> None:
    meta, results = two_hosts
    text = render(meta, results, service_names=SERVICES)

    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE nmaprun>\n')
    assert '<?xml-stylesheet href="file:///usr/share/nmap/nmap.xsl" type="text/xsl"?>' in text
    root = ET.fromstring(text)
    assert root.tag == "nmaprun"
    assert root.attrib == {
        "scanner": "portscout",
        "args": "portscout -oX out.xml -p 1-100 127.0.0.1",
        "start": "1700000000",
        "startstr": root.attrib["startstr"],
        "version": "0.1.0",
        "xmloutputversion": "1.05",
    }
    assert [child.tag for child in root] == [
        "scaninfo",
        "verbose",
        "debugging",
        "host",
        "host",
        "runstats",
    ]
    scaninfo = root.find("scaninfo")
    assert scaninfo is not None
    assert scaninfo.attrib == {
        "type": "connect",
        "protocol": "tcp",
        "numservices": "100",
        "services": "1-100",
    }

    host = root.find("host")
    assert host is not None
    assert [child.tag for child in host] == ["status", "address", "hostnames", "ports", "times"]
    assert host.find("status").attrib == {  # type: ignore[union-attr]
        "state": "up",
        "reason": "user-set",  # no discovery (-Pn): nmap's reason
        "reason_ttl": "0",
    }
    assert host.find("hostnames/hostname").attrib == {"name": "localhost", "type": "user"}  # type: ignore[union-attr]
    extra = host.find("ports/extraports")
    assert extra is not None
    assert extra.attrib == {"state": "closed", "count": "98"}
    assert [r.attrib for r in extra] == [
        {"reason": "conn-refused", "count": "98", "proto": "tcp", "ports": "1-21,23-79,81-100"}
    ]
    port = host.find("ports/port")
    assert port is not None
    assert port.attrib == {"protocol": "tcp", "portid": "22"}
    assert port.find("state").attrib == {  # type: ignore[union-attr]
        "state": "open",
        "reason": "syn-ack",
        "reason_ttl": "0",
    }
    assert port.find("service").attrib == {"name": "ssh", "method": "table", "conf": "3"}  # type: ignore[union-attr]

    finished = root.find("runstats/finished")
    assert finished is not None
    assert finished.attrib["exit"] == "success"
    assert finished.attrib["elapsed"] == "2.50"
    assert finished.attrib["time"] == "1700000002"
    assert "2 IP addresses (2 hosts up) scanned in 2.50 seconds" in finished.attrib["summary"]
    assert root.find("runstats/hosts").attrib == {"up": "2", "down": "0", "total": "2"}  # type: ignore[union-attr]


def test_libnmap_reads_it_unchanged(two_hosts: tuple[ScanMeta, list[Result]]) -> None:
    meta, results = two_hosts
    report = NmapParser.parse_fromstring(render(meta, results, service_names=SERVICES))

    assert report.is_consistent()
    assert report.scan_type == "connect"
    assert report.numservices == 100
    assert report.commandline == "portscout -oX out.xml -p 1-100 127.0.0.1"
    assert report.version == "0.1.0"
    assert report.started == 1_700_000_000
    assert report.endtime == 1_700_000_002
    assert report.elapsed == 2.5
    assert (report.hosts_up, report.hosts_down, report.hosts_total) == (2, 0, 2)
    assert "2 IP addresses (2 hosts up)" in report.summary

    by_address = {host.address: host for host in report.hosts}
    assert set(by_address) == {"127.0.0.1", "::1"}
    v4, v6 = by_address["127.0.0.1"], by_address["::1"]
    assert (v4.ipv4, v6.ipv6) == ("127.0.0.1", "::1")
    assert v4.hostnames == ["localhost"]
    assert v6.hostnames == []
    for host in (v4, v6):
        assert host.is_up()
        assert host.get_open_ports() == [(22, "tcp"), (80, "tcp")]
        assert [(s.port, s.state, s.reason, s.reason_ttl, s.service) for s in host.services] == [
            (22, "open", "syn-ack", "0", "ssh"),
            (80, "open", "syn-ack", "0", "http"),
        ]
        assert host.extraports_state["state"] == {"state": "closed", "count": "98"}
        assert host.extraports_reasons == [
            {"reason": "conn-refused", "count": "98", "proto": "tcp", "ports": "1-21,23-79,81-100"}
        ]


@pytest.mark.parametrize(
    ("closed", "verbose", "folded"),
    [(25, 0, False), (26, 0, True), (50, 1, False), (51, 1, True)],
)
def test_closed_ports_are_listed_up_to_nmaps_limit(closed: int, verbose: int, folded: bool) -> None:
    ports = range(1, closed + 2)  # port 1 open, the rest closed
    meta = meta_for(ports)
    root = ET.fromstring(render(meta, results_for(LOCAL4, ports, {1: State.OPEN}), verbose=verbose))

    listed = root.findall("host/ports/port")
    extra = root.findall("host/ports/extraports")
    if folded:
        assert [p.attrib["portid"] for p in listed] == ["1"]
        assert [e.attrib for e in extra] == [{"state": "closed", "count": str(closed)}]
    else:
        assert len(listed) == closed + 1
        assert extra == []
        assert root.find("verbose").attrib == {"level": str(verbose)}  # type: ignore[union-attr]
    assert ignore_limit(verbose) == 25 * (verbose + 1)


def test_folded_states_go_most_ports_first_with_reasons_grouped() -> None:
    ports = range(1, 201)
    states = dict.fromkeys(range(101, 201), State.FILTERED) | dict.fromkeys((7, 9), State.OPEN)
    results = results_for(BENCH, ports, states)  # 98 closed, 100 filtered, 2 open
    # A few filtered ports answered with ICMP instead of silence: a second reason.
    icmp = {150, 151, 152}
    results = [
        Result(host=r.host, port=r.port, state=r.state, reason=Reason.ADMIN_PROHIBITED)
        if r.port in icmp
        else r
        for r in results
    ]
    root = ET.fromstring(render(meta_for(ports), results))

    extra = root.findall("host/ports/extraports")
    assert [e.attrib for e in extra] == [
        {"state": "filtered", "count": "100"},
        {"state": "closed", "count": "98"},
    ]
    assert [r.attrib for r in extra[0]] == [
        {"reason": "no-response", "count": "97", "proto": "tcp", "ports": "101-149,153-200"},
        {"reason": "admin-prohibited", "count": "3", "proto": "tcp", "ports": "150-152"},
    ]
    assert [p.attrib["portid"] for p in root.findall("host/ports/port")] == ["7", "9"]


def test_a_host_down_in_discovery_is_shown_only_when_verbose() -> None:
    ports = range(1, 4)
    meta = meta_for(ports)
    results = results_for(LOCAL4, ports, {2: State.OPEN})  # BENCH got no probe: down
    found: dict[str, object] = {"up": {LOCAL4: Reason.ECHO_REPLY}, "hosts": [LOCAL4, BENCH]}

    quiet = ET.fromstring(render(meta, results, **found))  # type: ignore[arg-type]
    assert [h.find("address").attrib["addr"] for h in quiet.findall("host")] == ["127.0.0.1"]  # type: ignore[union-attr]
    assert quiet.find("runstats/hosts").attrib == {"up": "1", "down": "1", "total": "2"}  # type: ignore[union-attr]

    verbose = NmapParser.parse_fromstring(render(meta, results, verbose=1, **found))  # type: ignore[arg-type]
    down = [h for h in verbose.hosts if not h.is_up()]
    assert [h.address for h in down] == ["198.18.0.7"]
    assert down[0].status == "down"
    assert down[0].services == []
    assert (verbose.hosts_up, verbose.hosts_down) == (1, 1)


def test_pn_hosts_with_nothing_answered_are_up_as_nmap_says() -> None:
    ports = range(1, 4)
    silent = results_for(BENCH, ports, {}, default=State.FILTERED)
    root = ET.fromstring(render(meta_for(ports), silent))
    assert root.find("host/status").attrib == {  # type: ignore[union-attr]
        "state": "up",
        "reason": "user-set",
        "reason_ttl": "0",
    }
    assert root.find("runstats/hosts").attrib == {"up": "1", "down": "0", "total": "1"}  # type: ignore[union-attr]


def test_an_interrupted_scan_is_still_a_whole_document() -> None:
    ports = range(1, 1001)
    meta = meta_for(ports)
    partial = results_for(LOCAL4, range(1, 400), {22: State.OPEN})  # stopped part way
    text = render(meta, partial, interrupted=True)

    root = ET.fromstring(text)  # well-formed, </nmaprun> included
    finished = root.find("runstats/finished")
    assert finished is not None
    assert finished.attrib["exit"] == "error"
    assert finished.attrib["errormsg"]
    assert root.find("host/ports/extraports").attrib == {"state": "closed", "count": "398"}  # type: ignore[union-attr]
    report = NmapParser.parse_fromstring(text)
    assert report.hosts[0].get_open_ports() == [(22, "tcp")]


def test_finish_without_start_or_results_is_well_formed() -> None:
    out = io.StringIO()
    writer = NmapXmlWriter(out)
    writer.finish(Report(engine="async", key=1, started=STARTED, interrupted=True))
    root = ET.fromstring(out.getvalue())
    assert root.find("runstats/hosts").attrib == {"up": "0", "down": "0", "total": "0"}  # type: ignore[union-attr]


def test_text_is_escaped() -> None:
    args = ("portscout", "--top-ports", "10", "-oX", "a&b<c>\"d'e.xml", "x--y")
    name = 'wëird & <host> "name"'
    meta = meta_for([80], args=args, hostnames={LOCAL4: name})
    text = render(meta, results_for(LOCAL4, [80], {80: State.OPEN}))

    root = ET.fromstring(text)
    assert root.attrib["args"] == " ".join(args)
    assert root.find("host/hostnames/hostname").attrib["name"] == name  # type: ignore[union-attr]
    comment = text.split("<!--", 1)[1].split("-->", 1)[0]
    assert "--" not in comment  # a comment may not contain "--"


def test_times_come_from_the_rtts() -> None:
    meta = meta_for([22, 80])
    results = [
        Result(host=LOCAL4, port=22, state=State.OPEN, reason=Reason.SYN_ACK, rtt=0.010),
        Result(host=LOCAL4, port=80, state=State.CLOSED, reason=Reason.RESET, rtt=0.010),
    ]
    times = ET.fromstring(render(meta, results)).find("host/times")
    assert times is not None
    # RFC 6298: srtt 10 ms; rttvar 5 ms then 3/4 of it; timeout floored at 100 ms.
    assert times.attrib == {"srtt": "10000", "rttvar": "3750", "to": "100000"}

    silent = results_for(LOCAL4, [22, 80], {22: State.OPEN, 80: State.FILTERED})
    silent = [Result(host=r.host, port=r.port, state=r.state, reason=r.reason) for r in silent]
    assert ET.fromstring(render(meta, silent)).find("host/times") is None


def test_reason_ttl_is_carried() -> None:
    meta = meta_for([443], scan_type="syn")
    result = Result(
        host=BENCH, port=443, state=State.OPEN, reason=Reason.SYN_ACK, reason_ttl=63, rtt=0.001
    )
    root = ET.fromstring(render(meta, [result]))
    assert root.find("scaninfo").attrib["type"] == "syn"  # type: ignore[union-attr]
    assert root.find("host/ports/port/state").attrib["reason_ttl"] == "63"  # type: ignore[union-attr]
    assert root.find("host/ports/port/state").attrib["reason_ttl"] == "63"  # type: ignore[union-attr]


def test_no_service_element_without_a_name() -> None:
    meta = meta_for([22, 31337])
    results = results_for(LOCAL4, [22, 31337], {22: State.OPEN, 31337: State.OPEN})
    with_table = ET.fromstring(render(meta, results, service_names=SERVICES))
    names = [p.find("service") for p in with_table.findall("host/ports/port")]
    assert [s.attrib["name"] if s is not None else None for s in names] == ["ssh", None]
    without = ET.fromstring(render(meta, results))
    assert without.findall("host/ports/port/service") == []


@pytest.mark.parametrize(
    ("ports", "text"),
    [
        ([], ""),
        ([80], "80"),
        ([3, 1, 2, 2], "1-3"),
        ([1, 3, 4, 6, 7, 9], "1,3-4,6-7,9"),
        ([*range(1, 1001), 8080], "1-1000,8080"),
    ],
)
def test_format_ports(ports: list[int], text: str) -> None:
    assert format_ports(ports) == text


def test_load_service_names(tmp_path: Path) -> None:
    table = tmp_path / "nmap-services"
    table.write_text(
        "# comment line\n"
        "ssh\t22/tcp\t0.182286\t# Secure Shell Login\n"
        "ssh\t22/udp\t0.003905\n"
        "rare\t80/tcp\t0.000100\n"
        "http\t80/tcp\t0.484143\t# World Wide Web HTTP\n"
        "broken line\n"
        "odd\tx/tcp\t0.1\n",
        encoding="utf-8",
    )
    assert load_service_names(table) == {22: "ssh", 80: "http"}


@pytest.mark.skipif(not NMAP_SERVICES.exists(), reason="nmap's nmap-services is not installed")
def test_load_nmaps_own_table() -> None:
    names = load_service_names(NMAP_SERVICES)
    assert (names[22], names[80], names[443]) == ("ssh", "http", "https")


def _write_scan(path: Path, opened: dict[int, State]) -> Path:
    ports = range(1, 1001)
    meta = meta_for(ports, hostnames={LOCAL4: "localhost"})
    results = results_for(LOCAL4, ports, opened) + results_for(LOCAL6, ports, opened)
    path.write_text(render(meta, results, service_names=SERVICES), encoding="utf-8")
    return path


@pytest.mark.skipif(shutil.which("xsltproc") is None, reason="xsltproc is not installed")
@pytest.mark.skipif(not NMAP_XSL.exists(), reason="nmap's nmap.xsl is not installed")
def test_nmap_xsl_renders_it(tmp_path: Path) -> None:
    xml = _write_scan(tmp_path / "scan.xml", {22: State.OPEN, 443: State.OPEN})
    html = subprocess.run(
        ["xsltproc", str(NMAP_XSL), str(xml)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert "<html" in html
    for needle in ("127.0.0.1", "::1", "localhost"):
        assert needle in html
    # One table row per listed port: port, protocol, state, service, reason.
    rows = re.findall(
        r'<tr class="open">\s*<td>(\d+)</td>\s*<td>(\w+)</td>\s*<td>(\w+)</td>'
        r"\s*<td>([\w-]+)\W*</td>\s*<td>([\w-]+)</td>",
        html,
    )
    row22 = ("22", "tcp", "open", "ssh", "syn-ack")
    row443 = ("443", "tcp", "open", "https", "syn-ack")
    assert rows == [row22, row443, row22, row443]
    assert "2 IP addresses (2 hosts up)" in html


@pytest.mark.skipif(shutil.which("ndiff") is None, reason="nmap's ndiff is not installed")
def test_ndiff_compares_two_scans(tmp_path: Path) -> None:
    before = _write_scan(tmp_path / "before.xml", {22: State.OPEN, 80: State.OPEN})
    after = _write_scan(tmp_path / "after.xml", {22: State.OPEN, 443: State.OPEN})
    again = _write_scan(tmp_path / "again.xml", {22: State.OPEN, 80: State.OPEN})

    same = subprocess.run(["ndiff", str(before), str(again)], capture_output=True, timeout=30)
    assert same.returncode == 0, same.stderr

    diff = subprocess.run(
        ["ndiff", str(before), str(after)], capture_output=True, text=True, timeout=30
    )
    assert diff.returncode == 1, diff.stderr  # 1: the scans differ
    lines = diff.stdout.splitlines()
    assert "localhost (127.0.0.1):" in [line.strip() for line in lines]
    assert any(line.startswith("-80/tcp") and "open" in line for line in lines)
    assert any(line.startswith("+443/tcp") and "https" in line for line in lines)

    as_xml = subprocess.run(
        ["ndiff", "--xml", str(before), str(after)], capture_output=True, text=True, timeout=30
    )
    assert as_xml.returncode == 1, as_xml.stderr
    ET.fromstring(as_xml.stdout)


def test_it_is_a_writer() -> None:
    """Driven through the ``Writer`` protocol alone, as the CLI drives it: the open port is
    in the document written to the stream it was given, which the writer leaves open."""
    stream = io.StringIO()
    writer: Writer = NmapXmlWriter(stream)  # mypy checks the protocol
    drive(writer, meta_for([443]), results_for(BENCH, [443], {443: State.OPEN}), finished=FINISHED)
    assert not stream.closed
    port = ET.fromstring(stream.getvalue()).find("host/ports/port")
    state = None if port is None else port.find("state")
    assert port is not None
    assert state is not None
    assert (port.attrib["portid"], state.attrib["state"]) == ("443", "open")
