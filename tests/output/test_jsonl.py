"""-oJ: a host record, then ports; nmap's folding by default, every port with no_fold."""

from __future__ import annotations

import io
import json
from ipaddress import ip_address

from portscout.output.hosts import HostResults
from portscout.output.jsonl import JsonLinesWriter, port_line
from portscout.results import ClosedPorts, Reason, Result, ScanMeta, State

HOST = ip_address("198.18.0.9")


def host_with_many_closed() -> HostResults:
    host = HostResults(HOST, reason=Reason.ECHO_REPLY, latency=0.0001234567)
    host.add(Result(HOST, 22, State.OPEN, Reason.SYN_ACK, rtt=0.000123456789, reason_ttl=64))
    host.add_closed(ClosedPorts(HOST, Reason.RESET, [p for p in range(1, 101) if p != 22]))
    return host


def lines(host: HostResults, **options: bool) -> list[dict[str, object]]:
    out = io.StringIO()
    writer = JsonLinesWriter(out, **options)
    writer.start(ScanMeta(args=(), scan_type="syn", engine="syn", ports=tuple(range(1, 101)),
                          started=0.0, version="0", key=1))  # fmt: skip
    writer.host(host)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_default_folds_a_big_state_into_the_host_record() -> None:
    record, *ports = lines(host_with_many_closed())
    assert record == {
        "host": "198.18.0.9", "status": "up", "reason": "echo-reply", "reason_ttl": None,
        "latency": 0.000123, "hostname": None,
        "ports": {"open": 1, "closed": 99, "filtered": 0},
        "extraports": [{"state": "closed", "count": 99, "reasons": {"reset": 99}}],
    }  # fmt: skip
    assert ports == [
        {"host": "198.18.0.9", "port": 22, "protocol": "tcp", "state": "open",
         "reason": "syn-ack", "rtt": 0.000123, "tries": 1, "reason_ttl": 64},
    ]  # fmt: skip


def test_no_fold_writes_every_port_in_order() -> None:
    record, *ports = lines(host_with_many_closed(), no_fold=True)
    assert record["extraports"] == []
    assert [p["port"] for p in ports] == list(range(1, 101))
    assert ports[0] == {"host": "198.18.0.9", "port": 1, "protocol": "tcp", "state": "closed",
                        "reason": "reset", "rtt": None, "tries": 1, "reason_ttl": None}  # fmt: skip
    assert ports[-1]["tries"] is None  # counted in a worker process beyond the fold limit


def test_port_line_is_to_dict() -> None:
    result = Result(HOST, 443, State.OPEN, Reason.SYN_ACK, rtt=1.23456789, tries=2, reason_ttl=3)
    assert json.loads(port_line(str(HOST), result)) == result.to_dict()
    assert result.to_dict()["rtt"] == 1.234568
