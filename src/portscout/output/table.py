"""The human view: a table of ports per host, then one summary line.

Rendered with rich at the end of the scan, grouped by host in address order (results
arrive in a random order). Closed ports are shown only when asked (``-v``), and then only
as a count when there are many, as nmap does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import TextIO

from portscout.results import IPAddress, Report, Result, ScanMeta, State

SHOW_CLOSED_LIMIT = 25  # more closed ports than this are summarised as a count


class TableWriter:
    def __init__(
        self,
        stream: TextIO,
        *,
        show: frozenset[State] = frozenset({State.OPEN}),
        service_names: Mapping[int, str] | None = None,
        color: bool | None = None,
    ) -> None:
        self._stream = stream
        self._show = show
        self._names = service_names or {}
        self._color = color
        self._meta: ScanMeta | None = None
        self._closed: dict[IPAddress, list[Result]] = defaultdict(list)

    def start(self, meta: ScanMeta) -> None:
        self._meta = meta

    def add(self, result: Result) -> None:
        if result.state is State.CLOSED and State.CLOSED in self._show:
            self._closed[result.host].append(result)

    def finish(self, report: Report) -> None:
        from rich.console import Console
        from rich.table import Table

        console = Console(file=self._stream, force_terminal=self._color, highlight=False)
        by_host: dict[IPAddress, list[Result]] = defaultdict(list)
        for result in report.results:
            if result.state in self._show:
                by_host[result.host].append(result)
        for host, closed in self._closed.items():
            if len(closed) <= SHOW_CLOSED_LIMIT:
                by_host[host].extend(closed)
        hostnames = self._meta.hostnames if self._meta else {}
        for host in sorted(by_host, key=lambda a: (a.version, int(a))):
            name = hostnames.get(host)
            title = f"{name} ({host})" if name else str(host)
            table = Table(title=title, title_justify="left", box=None, pad_edge=False)
            for column in ("PORT", "STATE", "SERVICE", "REASON", "RTT"):
                table.add_column(column)
            for r in sorted(by_host[host], key=lambda r: r.port):
                rtt = f"{r.rtt * 1000:.2f} ms" if r.rtt is not None else "-"
                service = self._names.get(r.port, "unknown")
                table.add_row(f"{r.port}/{r.protocol}", _styled(r.state), service, r.reason, rtt)
            console.print(table)
            console.print()
        console.print(summary_line(report))


def _styled(state: State) -> str:
    color = {State.OPEN: "green", State.CLOSED: "red", State.FILTERED: "yellow"}[state]
    return f"[{color}]{state}[/{color}]"


def summary_line(report: Report) -> str:
    """One line: what was found, how many probes, how long; says so if interrupted."""
    counts = report.counts
    duration = report.duration or 0.0
    hosts = len({r.host for r in report.results if r.state is State.OPEN})
    status = "interrupted" if report.interrupted else "done"
    if report.hosts_up is not None:
        status += f", {len(report.hosts_up)} of {report.hosts_total} host(s) up"
    return (
        f"portscout {status}: {counts[State.OPEN]} open, {counts[State.CLOSED]} closed, "
        f"{counts[State.FILTERED]} filtered on {hosts} host(s) with open ports; "
        f"{report.probes_sent} probes of {report.probes_planned} planned "
        f"in {duration:.2f} s (engine {report.engine})"
    )
