"""nmap's grepable output (``-oG``), line for line as nmap 7.93 writes it.

Owns the grepable writer; the per-host summary (nmap's ignored-state rule, up/down) comes
from ``nmap_xml`` so the two formats always agree. Imports ``results`` and ``output`` only.

::

    # portscout 0.1.0 scan initiated Tue Nov 26 10:00:00 2024 as: portscout -oG - 127.0.0.1
    Host: 127.0.0.1 (localhost)\tStatus: Up
    Host: 127.0.0.1 (localhost)\tPorts: 22/open/tcp//ssh///\tIgnored State: closed (999)
    # portscout done at Tue Nov 26 10:00:01 2024 -- 1 IP address (1 host up) scanned in 0.05 seconds

Port fields are nmap's ``port/state/protocol/owner/service/rpcinfo/version/``. As nmap
7.93 (``printportoutput``): the ``Ports:`` line lists the ports not folded (none: ``Ports: ``
and nothing after), then ``Ignored State`` when exactly one state was folded; a ping scan
(``-sn``) has only ``Status`` lines; down hosts appear (``Status: Down``) only at verbose >= 1,
which also adds nmap's ``# Ports scanned:`` line. With ``--open`` only hosts with an open
port appear, and only their open ports (the footer still counts every host).

Comment lines say ``portscout`` where nmap says ``Nmap`` (as masscan says ``Masscan``):
grepable parsers read the ``Host:`` lines and skip ``#`` lines. An interrupted scan gets a
``# portscout scan interrupted`` comment before the ``done`` line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TextIO

from portscout.output.hosts import HostResults
from portscout.output.nmap_xml import HostCount, initiated, nmap_time, shown
from portscout.ports import format_ports
from portscout.results import Report, Result, ScanMeta


class GrepableWriter:
    """Writes nmap's ``-oG`` format to ``stream`` (which it never closes).

    ``service_names`` maps port -> name (``nmap_xml.load_service_names``); ``verbose`` is
    nmap's ``-v`` level; ``only_open`` is ``--open``; ``clock`` (epoch seconds) is read only
    for the ``done`` line when the report has no finish time.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        service_names: Mapping[int, str] | None = None,
        verbose: int = 0,
        only_open: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._out = stream
        self._services = service_names
        self._verbose = verbose
        self._only_open = only_open
        self._clock = clock
        self._count = HostCount()
        self._port_scan = True

    def start(self, meta: ScanMeta) -> None:
        self._port_scan = bool(meta.ports)
        self._out.write(f"# {initiated(meta)}\n")
        if self._verbose >= 1:
            tcp = f"{len(meta.ports)};{format_ports(meta.ports)}"
            self._out.write(f"# Ports scanned: TCP({tcp}) UDP(0;) SCTP(0;) PROTOCOLS(0;)\n")

    def hosts_down(self, count: int) -> None:
        self._count.down += count

    def host(self, host: HostResults) -> None:
        self._count.add(host)
        if shown(host, verbose=self._verbose, only_open=self._only_open):
            self._write_host(host)

    def finish(self, report: Report) -> None:
        end = report.finished if report.finished is not None else self._clock()
        if report.interrupted:
            self._out.write("# portscout scan interrupted: results are incomplete\n")
        elapsed = max(end - report.started, 0.0)
        self._out.write(f"# portscout done at {nmap_time(end)} -- {self._count.summary(elapsed)}\n")
        self._out.flush()

    def _write_host(self, host: HostResults) -> None:
        prefix = f"Host: {host.address} ({_clean(host.hostname)})"
        if not host.up:
            self._out.write(f"{prefix}\tStatus: Down\n")
            return
        if not self._port_scan:
            self._out.write(f"{prefix}\tStatus: Up\n")
            return
        fields = ", ".join(self._port_field(r) for r in host.listed(only_open=self._only_open))
        folded = host.folded()
        tail = (
            f"\tIgnored State: {folded[0]} ({host.counts[folded[0]]})" if len(folded) == 1 else ""
        )
        self._out.write(f"{prefix}\tStatus: Up\n{prefix}\tPorts: {fields}{tail}\n")

    def _port_field(self, result: Result) -> str:
        service = self._services.get(result.port, "") if self._services else ""
        version = ""
        if result.service is not None:  # -sV: nmap writes ssl|http and the version text
            service, version = result.service.full_name, result.service.summary()
        fields = f"{_clean(service)}//{_clean(version)}"
        return f"{result.port}/{result.state}/{result.protocol}//{fields}/"


def _clean(text: str) -> str:
    """nmap replaces '/' (the field separator) with '|'; tabs and newlines would split lines."""
    return text.replace("/", "|").replace("\t", " ").replace("\n", " ")
