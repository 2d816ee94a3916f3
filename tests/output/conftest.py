"""What the writer tests share: results of a given shape, and a writer driven as the CLI does."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from portscout.output import Writer
from portscout.output.hosts import HostOrder, ignore_limit
from portscout.plan import HostList
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
    verbose: int = 0,
    up: Mapping[IPAddress, Reason] | None = None,
    hosts: Sequence[IPAddress] | None = None,
) -> None:
    """start / the ordering stage's hosts / finish, with the report filled alongside, as
    the command line drives writers. ``up`` and ``hosts``: what discovery found of which
    targets (None: -Pn, the hosts of ``results``)."""
    report = Report(engine=meta.engine, key=meta.key, started=meta.started)
    order = HostOrder(
        ports_per_host=len(meta.ports), limit=ignore_limit(verbose), detail=True,
        names=meta.hostnames,
    )  # fmt: skip
    if hosts is not None:
        order.plan(HostList(hosts), discovery=up is not None)
    writer.start(meta)
    for result in results:
        report.add(result)
        order.add([result])
        for host in order.ready():
            writer.host(host)
    report.finished = finished
    report.interrupted = interrupted
    report.hosts_up = None if up is None else dict(up)
    if hosts is not None and up is not None:
        order.group_done(len(hosts), up, {})
    for host in order.rest():
        writer.host(host)
    writer.finish(report)
