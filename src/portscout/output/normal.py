"""nmap's normal output: the per-host report people paste into documents (``-oN FILE``) and
the terminal view, line for line as nmap 7.93 prints them.

Owns ``NormalWriter`` and the summary line. Imports ``results`` and ``output`` only.

::

    portscout scan report for 127.0.0.1
    Host is up (0.000011s latency).
    Not shown: 998 closed tcp ports (reset)
    PORT   STATE SERVICE
    22/tcp open  ssh
    80/tcp open  http

As nmap (``printportoutput``): a state with more than ``ignore_limit(verbose)`` ports of a
host is folded into ``Not shown``, one entry per state and reason, most ports first; a host
whose every port is folded says so ("All 100 scanned ports on ... are in ignored states.");
a table follows a blank line when nothing was folded; ``--reason`` adds ``received ...`` to
the host line and a ``REASON`` column (with the TTL where the engine saw one). The latency
has two significant digits (``num_to_string_sigdigits``); without a measured round trip the
line is just ``Host is up.``. Lines say ``portscout`` where nmap's say ``Nmap``. There is no
RTT column (nmap has none): a port's own round trip is in the JSON lines and CSV.

The file form (``comments``) opens with the ``# ... scan initiated`` line and ends with the
``# ... done at`` line; the terminal form ends with ``summary_line`` instead, after every host,
and with nmap's hint when discovery found no host up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import TextIO

from portscout.output.hosts import HostResults, spoke
from portscout.output.nmap_xml import HostCount, initiated, nmap_time, plural, shown
from portscout.results import Report, Result, ScanMeta, State

DOWN_HINT = "Note: Host seems down. If it is really up, but blocking our ping probes, try -Pn"


def sig_digits(value: float, digits: int = 2) -> str:
    """``value`` with ``digits`` significant digits, never in exponent form (nmap's
    ``num_to_string_sigdigits``): 7e-06 -> ``0.0000070``, 0.000114 -> ``0.00011``."""
    if value <= 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(value)))
    return f"{value:.{decimals}f}"


class NormalWriter:
    """Writes nmap's normal output to ``stream`` (which it never closes).

    ``service_names`` maps port -> name; ``verbose``, ``only_open`` and ``reason`` are
    ``-v``, ``--open`` and ``--reason``. ``comments``: the ``-oN`` file form; else the
    terminal form, which with ``quiet`` (``-q``) prints only the summary line.
    ``discovery``: whether hosts were pinged (the hint for a scan that found none up).
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        service_names: Mapping[int, str] | None = None,
        verbose: int = 0,
        only_open: bool = False,
        reason: bool = False,
        comments: bool = True,
        quiet: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._out = stream
        self._services = service_names or {}
        self._verbose = verbose
        self._only_open = only_open
        self._reason = reason
        self._comments = comments
        self._quiet = quiet
        self._clock = clock
        self._count = HostCount()
        self._port_scan = True

    def start(self, meta: ScanMeta) -> None:
        self._port_scan = bool(meta.ports)
        if self._comments:
            self._out.write(f"# {initiated(meta)}\n")

    def hosts_down(self, count: int) -> None:
        self._count.down += count

    def host(self, host: HostResults) -> None:
        self._count.add(host)
        if self._quiet or not shown(host, verbose=self._verbose, only_open=self._only_open):
            return
        self._out.write("".join(self._host_lines(host)))
        self._out.flush()

    def finish(self, report: Report) -> None:
        count = self._count
        if self._comments:
            end = report.finished if report.finished is not None else self._clock()
            if report.interrupted:
                self._out.write(f"# portscout scan {report.ending}: results are incomplete\n")
            elapsed = max(end - report.started, 0.0)
            self._out.write(f"# portscout done at {nmap_time(end)} -- {count.summary(elapsed)}\n")
        else:
            if report.hosts_up is not None and count.down and not count.up:
                self._out.write(DOWN_HINT + "\n" if count.down == 1 else _many_down(count.down))
            if report.service_database is not None:
                self._out.write(f"Service detection: signatures from {report.service_database}\n")
            self._out.write(summary_line(report, up=count.up, down=count.down) + "\n")
        self._out.flush()

    def _host_lines(self, host: HostResults) -> list[str]:
        name = f"{host.hostname} ({host.address})" if host.hostname else str(host.address)
        if not host.up:
            why = f", received {host.reason}" if self._reason else ""
            return [f"portscout scan report for {name} [host down{why}]\n"]
        lines = [f"portscout scan report for {name}\n", self._status(host)]
        if not self._port_scan:
            return lines
        listed = host.listed(only_open=self._only_open)
        folded = host.folded()
        if host.answers_every_port:  # once, instead of thousands of doubtful open ports
            lines.append(f"Note: {host.note()}.\n")
            listed = [r for r in listed if r.state is not State.OPEN or spoke(r)]
        if folded and not listed:
            total = sum(host.counts.values())
            lines.append(
                f"{'The' if total == 1 else 'All'} {total} scanned {plural(total, 'port', 'ports')}"
                f" on {name} {'is' if total == 1 else 'are'} in ignored states.\n"
            )
        if folded:
            lines.append(f"Not shown: {_not_shown(host, folded)}\n")
        else:
            lines.append("\n")
        if listed:
            lines.append(self._table(listed))
            lines += [_certificate_line(r) for r in listed if r.service and r.service.certificate]
        lines.append("\n")
        return lines

    def _status(self, host: HostResults) -> str:
        text = "Host is up"
        if self._reason:
            ttl = f" ttl {host.reason_ttl}" if host.reason_ttl else ""
            text += f", received {host.reason}{ttl}"
        if host.latency is not None:
            text += f" ({sig_digits(host.latency)}s latency)"
        return text + ".\n"

    def _table(self, listed: list[Result]) -> str:
        versions = any(r.service is not None for r in listed)  # -sV: nmap's VERSION column
        header = ["PORT", "STATE", "SERVICE"] + (["REASON"] if self._reason else [])
        header += ["VERSION"] if versions else []
        rows = [header]
        for r in listed:
            name = self._services.get(r.port, "unknown")
            if r.service is not None:  # a name only from the table: nmap's "?"
                name = r.service.full_name + ("?" if r.service.method == "table" else "")
            row = [f"{r.port}/{r.protocol}", r.state.value, name]
            if self._reason:
                row.append(r.reason.value + (f" ttl {r.reason_ttl}" if r.reason_ttl else ""))
            if versions:
                row.append(r.service.summary() if r.service is not None else "")
            rows.append(row)
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        return "".join(
            " ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]) + "\n"
            for row in rows
        )


def _certificate_line(r: Result) -> str:
    """A line under the table per TLS port: whom the certificate names, until when."""
    service = r.service
    assert service is not None
    cert = service.certificate
    assert cert is not None
    sans = f"; SAN {', '.join(cert.sans)}" if cert.sans else ""
    alpn = f"; ALPN {service.alpn}" if service.alpn else ""
    return (
        f"| {r.port}/{r.protocol} certificate: {cert.subject} (issuer {cert.issuer}){sans};"
        f" valid {cert.not_before} to {cert.not_after}{alpn}\n"
    )


def _not_shown(host: HostResults, folded: list[State]) -> str:
    """``50 closed tcp ports (reset), 50 filtered tcp ports (no-response)``."""
    parts = []
    for state in folded:
        for reason, proto, ports in host.groups(state):
            n = len(ports)
            parts.append(f"{n} {state} {proto} {plural(n, 'port', 'ports')} ({reason})")
    return ", ".join(parts)


def _many_down(count: int) -> str:
    return (
        f"Note: all {count} hosts seem down. If they are really up, but blocking our ping"
        " probes, try -Pn\n"
    )


def summary_line(report: Report, *, up: int, down: int) -> str:
    """One line (never wrapped): hosts up and down, ports by state, probes sent with the
    retries among them, the rate and the time; says so if interrupted."""
    counts = report.counts
    duration = report.duration or 0.0
    retries = max(0, report.probes_sent - sum(counts.values()))
    rate = report.probes_sent / duration if duration > 0 else 0.0
    status = report.ending
    sent = report.probes_sent
    return (
        f"portscout {status}: {up} {plural(up, 'host', 'hosts')} up, {down} down; "
        f"ports: {counts[State.OPEN]} open, {counts[State.CLOSED]} closed, "
        f"{counts[State.FILTERED]} filtered; "
        f"{sent} {plural(sent, 'probe', 'probes')} sent "
        f"({retries} {plural(retries, 'retry', 'retries')}), "
        f"{rate:.0f}/s, {duration:.2f} s (engine {report.engine})"
    )
