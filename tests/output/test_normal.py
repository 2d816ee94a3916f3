"""-oN and the terminal: nmap 7.93's normal output, checked against text nmap wrote."""

from __future__ import annotations

import io
from ipaddress import ip_address

from portscout.output.hosts import HostResults
from portscout.output.normal import NormalWriter, sig_digits, summary_line
from portscout.results import Reason, Report, Result, ScanMeta, State

SERVICES = {61: "ni-mail", 62: "acas"}
HOST = ip_address("127.0.0.6")


def meta(ports: range) -> ScanMeta:
    return ScanMeta(args=("portscout",), scan_type="syn", engine="syn", ports=tuple(ports),
                    started=0.0, version="0.1.0", key=1)  # fmt: skip


def test_two_reasons_of_one_state_and_the_reason_column() -> None:
    """nmap -n --reason -p 1-62 127.0.0.6, ports 1-30 dropped, 31-60 admin-prohibited."""
    host = HostResults(HOST, reason=Reason.LOCALHOST_RESPONSE, latency=0.000006)
    for port in range(1, 63):
        if port <= 30:
            result = Result(HOST, port, State.FILTERED, Reason.NO_RESPONSE)
        elif port <= 60:
            result = Result(HOST, port, State.FILTERED, Reason.ADMIN_PROHIBITED)
        else:
            result = Result(HOST, port, State.CLOSED, Reason.RESET, reason_ttl=64)
        host.add(result)
    out = io.StringIO()
    writer = NormalWriter(out, service_names=SERVICES, reason=True, comments=False, quiet=False)
    writer.start(meta(range(1, 63)))
    writer.host(host)
    assert out.getvalue().splitlines() == [
        "portscout scan report for 127.0.0.6",
        "Host is up, received localhost-response (0.0000060s latency).",
        "Not shown: 30 filtered tcp ports (admin-prohibited), 30 filtered tcp ports (no-response)",
        "PORT   STATE  SERVICE REASON",
        "61/tcp closed ni-mail reset ttl 64",
        "62/tcp closed acas    reset ttl 64",
        "",
    ]


def test_latency_has_two_significant_digits() -> None:
    assert [sig_digits(v) for v in (0.000007, 0.000114, 0.0073, 1.5, 12.3)] == [
        "0.0000070", "0.00011", "0.0073", "1.5", "12",
    ]  # fmt: skip


def test_summary_line_counts_hosts_ports_and_retries_apart() -> None:
    report = Report(engine="syn", key=1, started=0.0, finished=2.0, probes_sent=25)
    for port in range(19):
        report.add(Result(HOST, port, State.CLOSED, Reason.RESET))
    assert summary_line(report, up=1, down=2) == (
        "portscout done: 1 host up, 2 down; ports: 0 open, 19 closed, 0 filtered; "
        "25 probes sent (6 retries), 12/s, 2.00 s (engine syn)"
    )
