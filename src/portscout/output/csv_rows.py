"""CSV output (``--csv FILE``): one row per port, hosts in address order, ports ascending.

Owns the CSV writer. Imports ``results`` and ``output`` only.

Columns: ``host,port,protocol,state,reason,rtt,tries,reason_ttl`` and, when service names
are given, ``service``; with ``versions`` (-sV) ``service`` is the detected name
(``ssl/http``) and ``product,version,extrainfo,cpe,method,conf`` follow. Every port scanned
of every host up gets a row, closed ones included (a spreadsheet wants them all; JSON lines
fold them), only open ones with ``--open``. Hosts come from the ordering stage
(``output.hosts``), so two runs of the same scan give the same rows. A ping scan (``-sn``)
writes a row per host up, with an empty ``port``, ``state`` "up", discovery's reason and the
latency as ``rtt``. ``rtt`` is in seconds rounded to the microsecond; an unknown ``rtt``,
``tries`` (a port only counted in a worker process) or ``reason_ttl`` is an empty field. The
``csv`` module does the quoting (RFC 4180, ``\\r\\n`` line ends).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from typing import TextIO

from portscout.output.hosts import BarePort, HostResults
from portscout.results import Report, ScanMeta, Service, State

FIELDS = ("host", "port", "protocol", "state", "reason", "rtt", "tries", "reason_ttl")
# With -sV (``versions=True``): what the service detection said, in nmap's words.
VERSION_FIELDS = ("product", "version", "extrainfo", "cpe", "method", "conf")


class CsvWriter:
    """Writes results as CSV rows to ``stream`` (which it never closes).

    ``service_names`` maps port -> name (``nmap_xml.load_service_names``); when given, a
    ``service`` column is added, empty for ports without a name; ``only_open`` is
    ``--open``. Open ``stream`` with
    ``newline=""`` when it is a file, as the ``csv`` module asks.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        service_names: Mapping[int, str] | None = None,
        only_open: bool = False,
        versions: bool = False,
    ) -> None:
        self._out = stream
        self._services = service_names
        self._only_open = only_open
        self._versions = versions
        fields = (*FIELDS, "service") if service_names is not None or versions else FIELDS
        if versions:
            fields = (*fields, *VERSION_FIELDS)
        self._rows = csv.DictWriter(stream, fieldnames=fields)
        self._header_written = False
        self._port_scan = True

    def start(self, meta: ScanMeta) -> None:
        self._port_scan = bool(meta.ports)
        self._write_header()

    def hosts_down(self, count: int) -> None:
        """Down hosts get no line here unless listed (``-v``)."""

    def host(self, host: HostResults) -> None:
        self._write_header()
        if not host.up or (self._only_open and not host.counts[State.OPEN]):
            return
        if not self._port_scan:  # -sn: a row per host up, without a port
            latency = None if host.latency is None else round(host.latency, 6)
            status = {"host": host.address, "state": "up", "reason": host.reason.value}
            self._rows.writerow({**status, "rtt": latency, "reason_ttl": host.reason_ttl})
            return
        address = str(host.address)
        for row in host.every_port():
            if self._only_open and row.state is not State.OPEN:
                continue
            values: dict[str, object] = {
                "host": address,
                "port": row.port,
                "protocol": row.protocol.value,
                "state": row.state.value,
                "reason": row.reason.value,
            }
            if not isinstance(row, BarePort):
                values["rtt"] = None if row.rtt is None else round(row.rtt, 6)
                values["tries"] = row.tries
                values["reason_ttl"] = row.reason_ttl
            if self._services is not None:
                values["service"] = self._services.get(row.port, "")
            if self._versions and not isinstance(row, BarePort) and row.service is not None:
                values.update(_version_values(row.service))
            self._rows.writerow(values)
        self._out.flush()

    def finish(self, report: Report) -> None:
        self._write_header()  # an empty scan is still a valid CSV file
        self._out.flush()

    def _write_header(self) -> None:
        if not self._header_written:
            self._rows.writeheader()
            self._header_written = True


def _version_values(service: Service) -> dict[str, object]:
    return {
        "service": service.full_name,
        "product": service.product,
        "version": service.version,
        "extrainfo": service.info,
        "cpe": " ".join(service.cpes),
        "method": service.method,
        "conf": service.confidence,
    }
