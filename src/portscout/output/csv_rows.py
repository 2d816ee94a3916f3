"""CSV output (``--csv FILE``): one row per result, written as it arrives.

Owns the CSV writer. Imports ``results`` only.

Columns: ``host,port,protocol,state,reason,rtt,tries,reason_ttl`` and, when service names
are given, ``service``. Every result handed to ``add`` becomes a row, closed ones included:
which results reach the writer (``--open``, ``-v``) is the CLI's choice. ``rtt`` is in
seconds (Python's shortest round-tripping float text); an unknown ``rtt`` or
``reason_ttl`` is an empty field. Rows are in arrival order, which in a randomised scan is
not port order. The ``csv`` module does the quoting (RFC 4180, ``\\r\\n`` line ends).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from typing import TextIO

from portscout.results import Report, Result, ScanMeta

FIELDS = ("host", "port", "protocol", "state", "reason", "rtt", "tries", "reason_ttl")


class CsvWriter:
    """Writes results as CSV rows to ``stream`` (which it never closes).

    ``service_names`` maps port -> name (``nmap_xml.load_service_names``); when given, a
    ``service`` column is added, empty for ports without a name. Open ``stream`` with
    ``newline=""`` when it is a file, as the ``csv`` module asks.
    """

    def __init__(self, stream: TextIO, *, service_names: Mapping[int, str] | None = None) -> None:
        self._out = stream
        self._services = service_names
        fields = (*FIELDS, "service") if service_names is not None else FIELDS
        self._rows = csv.DictWriter(stream, fieldnames=fields)
        self._header_written = False

    def start(self, meta: ScanMeta) -> None:
        self._write_header()

    def add(self, result: Result) -> None:
        self._write_header()
        row = result.to_dict()
        if self._services is not None:
            row["service"] = self._services.get(result.port, "")
        self._rows.writerow(row)

    def finish(self, report: Report) -> None:
        self._write_header()  # an empty scan is still a valid CSV file
        self._out.flush()

    def _write_header(self) -> None:
        if not self._header_written:
            self._rows.writeheader()
            self._header_written = True
