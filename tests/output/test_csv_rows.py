"""The --csv writer: a row per port, hosts in address order; csv.DictReader gives them back."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from ipaddress import ip_address
from pathlib import Path

from portscout.output import Writer
from portscout.output.csv_rows import FIELDS, CsvWriter
from portscout.output.hosts import HostResults
from portscout.results import Protocol, Reason, Report, Result, ScanMeta, State
from tests.output.conftest import drive

STARTED = 1_700_000_000.0

RESULTS = [
    Result(
        host=ip_address("198.18.0.1"),
        port=443,
        state=State.OPEN,
        reason=Reason.SYN_ACK,
        rtt=0.000123456789,
        tries=1,
        reason_ttl=64,
    ),
    Result(host=ip_address("::1"), port=22, state=State.CLOSED, reason=Reason.RESET, rtt=1e-05),
    Result(
        host=ip_address("127.0.0.1"),
        port=8080,
        state=State.FILTERED,
        reason=Reason.NO_RESPONSE,
        tries=3,
    ),
    Result(
        host=ip_address("198.18.255.254"),
        port=1,
        state=State.FILTERED,
        reason=Reason.ADMIN_PROHIBITED,
        rtt=2.5,
        tries=2,
        reason_ttl=250,
    ),
]


def meta() -> ScanMeta:
    return ScanMeta(
        args=("portscout", "--csv", "out.csv"),
        scan_type="syn",
        engine="syn",
        ports=(1, 22, 443, 8080),
        started=STARTED,
        version="0.1.0",
        key=9,
    )


def write(
    stream: io.TextIOBase | io.StringIO, results: Iterable[Result], **options: object
) -> None:
    writer = CsvWriter(stream, **options)  # type: ignore[arg-type]  # test-only splat
    drive(writer, meta(), results, finished=STARTED + 1)


def in_address_order(results: Iterable[Result]) -> list[Result]:
    """What the rows hold: hosts in address order, ports ascending, RTT to the microsecond."""
    ordered = sorted(results, key=lambda r: (r.host.version, int(r.host), r.port))
    return [r._replace(rtt=None if r.rtt is None else round(r.rtt, 6)) for r in ordered]


def from_row(row: dict[str, str]) -> Result:
    return Result(
        host=ip_address(row["host"]),
        port=int(row["port"]),
        protocol=Protocol(row["protocol"]),
        state=State(row["state"]),
        reason=Reason(row["reason"]),
        rtt=float(row["rtt"]) if row["rtt"] else None,
        tries=int(row["tries"]),
        reason_ttl=int(row["reason_ttl"]) if row["reason_ttl"] else None,
    )


def test_round_trip_every_result_in_address_order() -> None:
    out = io.StringIO()
    write(out, RESULTS)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [from_row(row) for row in rows] == in_address_order(RESULTS)  # closed included
    assert out.getvalue().splitlines()[0] == ",".join(FIELDS)


def test_a_host_is_written_whole_when_handed_over() -> None:
    out = io.StringIO()
    writer = CsvWriter(out)
    writer.start(meta())
    host = HostResults(RESULTS[0].host)
    host.add(RESULTS[0])
    writer.host(host)
    assert out.getvalue().splitlines() == [
        "host,port,protocol,state,reason,rtt,tries,reason_ttl",
        "198.18.0.1,443,tcp,open,syn-ack,0.000123,1,64",
    ]


def test_open_only() -> None:
    out = io.StringIO()
    write(out, RESULTS, only_open=True)
    assert [row["port"] for row in csv.DictReader(io.StringIO(out.getvalue()))] == ["443"]


def test_service_column_when_names_are_given() -> None:
    out = io.StringIO()
    write(out, RESULTS, service_names={22: "ssh", 443: "https"})
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == [*FIELDS, "service"]
    assert [row["service"] for row in rows] == ["", "https", "", "ssh"]


def test_an_empty_scan_is_a_header(tmp_path: Path) -> None:
    path = tmp_path / "scan.csv"
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = CsvWriter(stream)
        writer.finish(Report(engine="syn", key=9, started=STARTED, interrupted=True))
    assert path.read_bytes() == (",".join(FIELDS) + "\r\n").encode()


def test_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "scan.csv"
    with path.open("w", newline="", encoding="utf-8") as stream:
        write(stream, RESULTS)
    with path.open(newline="", encoding="utf-8") as stream:
        assert [from_row(row) for row in csv.DictReader(stream)] == in_address_order(RESULTS)


def test_it_is_a_writer() -> None:
    """Driven through the ``Writer`` protocol alone, as the CLI drives it: the result is a
    row in the stream it was given, which the writer leaves open to its owner."""
    stream = io.StringIO()
    writer: Writer = CsvWriter(stream)  # mypy checks the protocol
    drive(writer, meta(), RESULTS[2:3], finished=STARTED + 1)
    assert not stream.closed
    assert (
        stream.getvalue()
        == ",".join(FIELDS) + "\r\n127.0.0.1,8080,tcp,filtered,no-response,,3,\r\n"
    )
