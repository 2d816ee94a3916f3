"""JSON lines (``-oJ``): per host one host record, then its ports, each line whole JSON.

Hosts come from the ordering stage (``output.hosts``) in address order, ports ascending, and
each host's lines are written and flushed together: a consumer can tail the file during the
scan, and a crash or Ctrl-C leaves only whole lines (and whole hosts) behind.

A host record has no ``port`` key::

    {"host":"127.0.0.1","status":"up","reason":"localhost-response","reason_ttl":null,
     "latency":1.1e-05,"hostname":null,"ports":{"open":2,"closed":65533,"filtered":0},
     "extraports":[{"state":"closed","count":65533,"reasons":{"reset":65533}}]}

A port line is ``Result.to_dict``: ``host, port, protocol, state, reason, rtt, tries,
reason_ttl``; ``rtt`` in seconds rounded to the microsecond, ``null`` where no round trip
of that port's own probe was measured; ``tries`` is ``null`` for a port only counted in a
worker process. By default, as nmap's outputs: every open port, and the ports of a state
only where the host has few of that state (at most ``ignore_limit(verbose)``, 25); the
others are counted in the host record's ``extraports`` (state, count, count per reason).
``no_fold`` (``--no-fold``) writes a line for every port and folds nothing. Down hosts
get a record only with ``-v``; with ``--open`` only hosts with an open port, and only their
open ports, are written. A ping scan (``-sn``) writes host records without port counts.
"""

from __future__ import annotations

import json
from typing import TextIO

from portscout.output.hosts import HostResults
from portscout.output.nmap_xml import shown
from portscout.results import Report, Result, ScanMeta, State


class JsonLinesWriter:
    """Writes JSON lines to ``stream`` (which it never closes); see the module docstring."""

    def __init__(
        self,
        stream: TextIO,
        *,
        no_fold: bool = False,
        verbose: int = 0,
        only_open: bool = False,
    ) -> None:
        self._out = stream
        self._no_fold = no_fold
        self._verbose = verbose
        self._only_open = only_open
        self._port_scan = True

    def start(self, meta: ScanMeta) -> None:
        """Nothing before the first host: every line of the file is a host or a port."""
        self._port_scan = bool(meta.ports)

    def hosts_down(self, count: int) -> None:
        """Down hosts get no line here unless listed (``-v``)."""

    def host(self, host: HostResults) -> None:
        if not shown(host, verbose=self._verbose, only_open=self._only_open):
            return
        lines = [json.dumps(self._record(host), separators=(",", ":")) + "\n"]
        if host.up and self._port_scan:
            lines += self._port_lines(host)
        self._out.write("".join(lines))
        self._out.flush()

    def finish(self, report: Report) -> None:
        self._out.flush()

    def _record(self, host: HostResults) -> dict[str, object]:
        record: dict[str, object] = {
            "host": str(host.address),
            "status": "up" if host.up else "down",
            "reason": host.reason.value,
            "reason_ttl": host.reason_ttl,
            "latency": None if host.latency is None else round(host.latency, 6),
            "hostname": host.hostname or None,
        }
        if (note := host.note()) is not None:
            record["note"] = note
        if self._port_scan and host.up:
            record["ports"] = {state.value: host.counts[state] for state in State}
            folded = [] if self._no_fold else host.folded()
            record["extraports"] = [
                {
                    "state": state.value,
                    "count": host.counts[state],
                    "reasons": {
                        reason.value: len(ports) for reason, _, ports in host.groups(state)
                    },
                }
                for state in folded
            ]
        return record

    def _port_lines(self, host: HostResults) -> list[str]:
        address = str(host.address)
        only_open = self._only_open
        if not self._no_fold:
            return [
                port_line(address, r, host.confidence(r)) for r in host.listed(only_open=only_open)
            ]
        # Every port: lines of port numbers only (the bulk, from worker processes or past
        # the fold limit) are made a group at a time, then merged by port with the rest.
        by_port: dict[int, str] = {}
        head = f'{{"host":"{address}","port":'
        for (state, reason, proto), ports in host.bare.items():
            if only_open and state is not State.OPEN:
                continue
            tail = (
                f',"protocol":"{proto}","state":"{state}","reason":"{reason}",'
                '"rtt":null,"tries":null,"reason_ttl":null}\n'
            )
            by_port.update(zip(ports, [f"{head}{port}{tail}" for port in ports], strict=True))
        for r in host.kept:
            if not only_open or r.state is State.OPEN:
                by_port[r.port] = port_line(address, r, host.confidence(r))
        return [by_port[port] for port in sorted(by_port)]


def port_line(address: str, r: Result, confidence: float | None = None) -> str:
    """``Result.to_dict`` as one JSON line, formatted directly (a full scan writes 65,535:
    ``json.dumps`` per line would cost a quarter of the scan). ``confidence`` (0-1) only
    for the open ports of a host that answers every port (``HostResults.confidence``)."""
    rtt = "null" if r.rtt is None else repr(round(r.rtt, 6))
    ttl = "null" if r.reason_ttl is None else str(r.reason_ttl)
    service = "" if r.service is None else ',"service":' + json.dumps(r.service.to_dict())
    doubt = "" if confidence is None else f',"confidence":{confidence}'
    return (
        f'{{"host":"{address}","port":{r.port},"protocol":"{r.protocol}","state":"{r.state}",'
        f'"reason":"{r.reason}","rtt":{rtt},"tries":{r.tries},"reason_ttl":{ttl}{doubt}'
        f"{service}}}\n"
    )
