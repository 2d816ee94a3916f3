"""Joining the JSON lines of the parts of one scan (``--shard I/N``): ``portscout merge``.

Each part is a file ``output.jsonl`` wrote: hosts in address order, each a host record and
then its port lines. The parts are merged host by host (a k-way merge on the address, so
memory follows one host, not the scan), a host is up when any part found it up, and its
ports are the union of the parts' port lines with one line per (protocol, port): a port in
two parts (a shard run twice, a file given twice) is kept once, the first part's line.

Only parts that list every port can be merged exactly: a part written with folding (the
default, ports counted in ``extraports``) or ``--open`` has ports with no line, and merging
counts would double what two parts both hold. Such a part is refused with one line
(``UsageError``, exit 2) saying to write the parts with ``--no-fold``.

No I/O: the caller opens the files and hands their lines in. Imports ``results``,
``errors`` and ``output``.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

from portscout.errors import UsageError
from portscout.output.hosts import address_key
from portscout.results import IPAddress, Protocol, Reason, Result, State


@dataclass(slots=True)
class PartHost:
    """One host of one part (or of the merge): its status and the ports it lists."""

    address: IPAddress
    up: bool
    reason: Reason
    latency: float | None = None
    hostname: str = ""
    results: list[Result] = field(default_factory=list)


def read_part(name: str, lines: Iterable[str]) -> Iterator[PartHost]:
    """The hosts of the part file ``name`` (its ``lines``), in file order; UsageError for
    a line that is not portscout's JSON lines, hosts out of address order, or a host whose
    ports are not all listed."""
    host: PartHost | None = None
    expected = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        record = _json(where, line)
        if "port" in record:
            result = _result(where, record)
            if host is None or result.host != host.address:
                raise UsageError(f"{where}: a port line without its host record before it")
            host.results.append(result)
            continue
        if host is not None:
            yield _complete(name, host, expected)
        previous = host
        host, expected = _host(where, record)
        if previous is not None and address_key(host.address) <= address_key(previous.address):
            raise UsageError(f"{where}: host {host.address} out of address order")
    if host is not None:
        yield _complete(name, host, expected)


def merge_parts(parts: Sequence[Iterable[PartHost]]) -> Iterator[tuple[PartHost, int]]:
    """Each host of any part once, in address order, with its ports merged (ascending),
    and how many duplicate port lines of it were dropped."""
    merged = heapq.merge(*parts, key=lambda h: address_key(h.address))
    for _, same in itertools.groupby(merged, key=lambda h: h.address):
        copies = list(same)
        up = [h for h in copies if h.up]
        first = (up or copies)[0]
        host = PartHost(first.address, bool(up), first.reason, first.latency)
        host.hostname = next((h.hostname for h in copies if h.hostname), "")
        if host.latency is None:
            host.latency = next((h.latency for h in up if h.latency is not None), None)
        ports: dict[tuple[Protocol, int], Result] = {}
        lines = 0
        for copy in copies:
            lines += len(copy.results)
            for result in copy.results:
                ports.setdefault((result.protocol, result.port), result)
        host.results = sorted(ports.values(), key=lambda r: (r.protocol.value, r.port))
        yield host, lines - len(ports)


def survey(parts: Iterable[Iterable[PartHost]]) -> tuple[tuple[int, ...], str]:
    """(every port any part lists, sorted; the scan type: ``syn`` where answers carry a
    TTL or closed ports were reset, as only the SYN engine sees, else ``connect``)."""
    ports: set[int] = set()
    syn = False
    for part in parts:
        for host in part:
            for r in host.results:
                ports.add(r.port)
                syn = syn or r.reason_ttl is not None or r.reason is Reason.RESET
    return tuple(sorted(ports)), "syn" if syn else "connect"


class SeenHosts:
    """The hosts merged so far, in order: the ``Hosts`` the ordering stage walks. Each
    host is written before the next is merged, so only the last is kept (a merge of a
    /8's parts holds one host, not the list)."""

    def __init__(self) -> None:
        self._size = 0
        self._last: IPAddress | None = None

    def append(self, address: IPAddress) -> None:
        self._size += 1
        self._last = address

    @property
    def size(self) -> int:
        return self._size

    def __getitem__(self, index: int) -> IPAddress:
        if index != self._size - 1 or self._last is None:
            raise IndexError(f"host {index} of the merge was written and forgotten")
        return self._last


def _json(where: str, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "host" not in record:
        raise UsageError(f"{where}: not a line of portscout's JSON lines (-oJ)")
    return record


def _host(where: str, record: dict[str, Any]) -> tuple[PartHost, int]:
    """A host record as a ``PartHost``, and how many ports it says it has."""
    try:
        host = PartHost(
            ip_address(record["host"]),
            record["status"] == "up",
            Reason(record["reason"]),
            record.get("latency"),
            record.get("hostname") or "",
        )
        expected = sum(int(n) for n in (record.get("ports") or {}).values())
    except (KeyError, ValueError, TypeError) as exc:
        raise UsageError(f"{where}: a host record without a valid {exc}") from exc
    return host, expected


def _result(where: str, record: dict[str, Any]) -> Result:
    try:
        return Result(
            host=ip_address(record["host"]),
            port=int(record["port"]),
            state=State(record["state"]),
            reason=Reason(record["reason"]),
            protocol=Protocol(record.get("protocol", "tcp")),
            rtt=record.get("rtt"),
            tries=record.get("tries") or 1,
            reason_ttl=record.get("reason_ttl"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise UsageError(f"{where}: a port line without a valid {exc}") from exc


def _complete(name: str, host: PartHost, expected: int) -> PartHost:
    if len(host.results) < expected:
        raise UsageError(
            f"{name}: host {host.address} lists {len(host.results)} of its {expected} ports"
            " (folded or --open): write the parts with -oJ FILE --no-fold to merge them"
        )
    return host
