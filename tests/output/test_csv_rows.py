"""The --csv writer: one row per result as it arrives; csv.DictReader gives the input back."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from ipaddress import ip_address
from pathlib import Path

from portscout.output import Writer
from portscout.output.csv_rows import FIELDS, CsvWriter
from portscout.results import Protocol, Reason, Report, Result, ScanMeta, State

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
    report = Report(engine="syn", key=9, started=STARTED)
    writer.start(meta())
    for result in results:
        report.add(result)
        writer.add(result)
    report.finished = STARTED + 1
    writer.finish(report)


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


def test_round_trip_every_result_in_arrival_order() -> None:
    out = io.StringIO()
    write(out, RESULTS)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [from_row(row) for row in rows] == RESULTS  # closed and filtered included
    assert out.getvalue().splitlines()[0] == ",".join(FIELDS)


def test_rows_are_written_as_results_arrive() -> None:
    out = io.StringIO()
    writer = CsvWriter(out)
    writer.start(meta())
    writer.add(RESULTS[0])
    assert out.getvalue().splitlines() == [
        "host,port,protocol,state,reason,rtt,tries,reason_ttl",
        "198.18.0.1,443,tcp,open,syn-ack,0.000123456789,1,64",
    ]


def test_service_column_when_names_are_given() -> None:
    out = io.StringIO()
    write(out, RESULTS, service_names={22: "ssh", 443: "https"})
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == [*FIELDS, "service"]
    assert [row["service"] for row in rows] == ["https", "ssh", "", ""]


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
        assert [from_row(row) for row in csv.DictReader(stream)] == RESULTS


def test_it_is_a_writer() -> None:
    writer: Writer = CsvWriter(io.StringIO())  # mypy checks the protocol
    assert writer is not None
