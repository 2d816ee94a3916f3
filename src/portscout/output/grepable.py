"""nmap's grepable output (``-oG``), line for line as nmap 7.93 writes it.

Owns the grepable writer; the per-host summary (nmap's ignored-state rule, up/down) comes
from ``nmap_xml`` so the two formats always agree. Imports ``results`` and ``output`` only.

::

    # portscout 0.1.0 scan initiated Tue Nov 26 10:00:00 2024 as: portscout -oG - 127.0.0.1
    Host: 127.0.0.1 (localhost)\tStatus: Up
    Host: 127.0.0.1 (localhost)\tPorts: 22/open/tcp//ssh///\tIgnored State: closed (999)
    # portscout done at Tue Nov 26 10:00:01 2024 -- 1 IP address (1 host up) scanned in 0.05 seconds

Port fields are nmap's ``port/state/protocol/owner/service/rpcinfo/version/``. As in nmap
(``printportoutput``): ``Ignored State`` appears only when exactly one state was folded;
a host whose every port was folded gets its ``Status: Up`` line twice and no ``Ports``;
down hosts appear (``Status: Down``) only at verbose >= 1.

Comment lines say ``portscout`` where nmap says ``Nmap`` (as masscan says ``Masscan``):
grepable parsers read the ``Host:`` lines and skip ``#`` lines. An interrupted scan gets a
``# portscout scan interrupted`` comment before the ``done`` line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TextIO

from portscout.output.nmap_xml import HostPorts, HostTally, ignore_limit, nmap_time
from portscout.results import IPAddress, Report, Result, ScanMeta


class GrepableWriter:
    """Writes nmap's ``-oG`` format to ``stream`` (which it never closes).

    ``service_names`` maps port -> name (``nmap_xml.load_service_names``); ``verbose`` is
    nmap's ``-v`` level; ``clock`` (epoch seconds) is read only for the ``done`` line when
    the report has no finish time.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        service_names: Mapping[int, str] | None = None,
        verbose: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._out = stream
        self._services = service_names
        self._verbose = verbose
        self._clock = clock
        self._names: Mapping[IPAddress, str] = {}
        self._tally = HostTally(ignore_limit(verbose), 0, clock)
        self._started = False

    def start(self, meta: ScanMeta) -> None:
        self._started = True
        self._names = meta.hostnames
        self._tally = HostTally(ignore_limit(self._verbose), len(meta.ports), self._clock)
        self._out.write(
            f"# portscout {meta.version} scan initiated {nmap_time(meta.started)}"
            f" as: {' '.join(meta.args)}\n"
        )

    def add(self, result: Result) -> None:
        host = self._tally.add(result)
        if host is not None:
            self._write_host(host)

    def finish(self, report: Report) -> None:
        for host in self._tally.drain():
            self._write_host(host)
        end = report.finished if report.finished is not None else self._clock()
        if report.interrupted:
            self._out.write("# portscout scan interrupted: results are incomplete\n")
        elapsed = max(end - report.started, 0.0)
        self._out.write(f"# portscout done at {nmap_time(end)} -- {self._tally.summary(elapsed)}\n")
        self._out.flush()

    def _write_host(self, host: HostPorts) -> None:
        prefix = f"Host: {host.address} ({_clean(self._names.get(host.address, ''))})"
        if not host.up:
            if self._verbose >= 1:
                self._out.write(f"{prefix}\tStatus: Down\n")
            return
        lines = f"{prefix}\tStatus: Up\n"
        shown = host.shown()
        if not shown:
            self._out.write(lines + f"{prefix}\tStatus: Up\n")
            return
        fields = ", ".join(self._port_field(r) for r in shown)
        ignored = host.ignored_states()
        tail = ""
        if len(ignored) == 1:
            tail = f"\tIgnored State: {ignored[0]} ({host.counts[ignored[0]]})"
        self._out.write(f"{lines}{prefix}\tPorts: {fields}{tail}\n")

    def _port_field(self, result: Result) -> str:
        service = self._services.get(result.port, "") if self._services else ""
        return f"{result.port}/{result.state}/{result.protocol}//{_clean(service)}///"


def _clean(text: str) -> str:
    """nmap replaces '/' (the field separator) with '|'; tabs and newlines would split lines."""
    return text.replace("/", "|").replace("\t", " ").replace("\n", " ")
