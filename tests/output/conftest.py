"""What the writer tests share: results of a given shape, and a writer driven as the CLI does."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from portscout.output import Writer
from portscout.results import IPAddress, Reason, Report, Result, ScanMeta, State

ANSWER = {
    State.OPEN: Reason.SYN_ACK,
    State.CLOSED: Reason.CONN_REFUSED,
    State.FILTERED: Reason.NO_RESPONSE,
}


def results_for(
    host: IPAddress,
    ports: Iterable[int],
    states: Mapping[int, State],
    default: State = State.CLOSED,
) -> list[Result]:
    """A result per port: ``states`` where given, else ``default``; 0.2 ms RTT if answered."""
    out = []
    for port in ports:
        state = states.get(port, default)
        rtt = 0.0002 if state is not State.FILTERED else None
        out.append(
            Result(host=host, port=port, state=state, reason=ANSWER[state], rtt=rtt, tries=1)
        )
    return out


def drive(
    writer: Writer,
    meta: ScanMeta,
    results: Iterable[Result],
    *,
    finished: float,
    interrupted: bool = False,
) -> None:
    """start / add per result / finish, with the report filled alongside."""
    report = Report(engine=meta.engine, key=meta.key, started=meta.started)
    writer.start(meta)
    for result in results:
        report.add(result)
        writer.add(result)
    report.finished = finished
    report.interrupted = interrupted
    writer.finish(report)
