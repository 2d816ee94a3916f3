"""A scan's configuration as the history keeps it: JSON-ready values that rebuild the same
plan, and the addresses its host names had, so that a resume scans the same hosts.

Owns the (de)serialisation of ``ScanConfig`` for ``store`` (which sees only a mapping) and
the resolver a resume uses instead of the system's. Imports the core and ``scanner``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from ipaddress import ip_address
from typing import Any

from portscout.errors import PortscoutError, StoreError, TargetError
from portscout.plan import Probe
from portscout.results import IPAddress
from portscout.scanner import Scan, ScanConfig
from portscout.targets import Resolver
from portscout.timing import TimingPolicy

_UNRECORDED = frozenset({"done", "keep_closed", "record_closed"})
RESOLVED = "resolved"  # name -> the addresses it had when the scan started


class RecordingResolver:
    """Wraps a resolver and keeps every answer, for the record (``config_record``)."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self.answers: dict[str, list[IPAddress]] = {}

    def __call__(self, name: str) -> list[IPAddress]:
        addresses = self._resolver(name)
        self.answers[name.lower()] = list(addresses)
        return addresses


def config_record(scan: Scan, resolved: Mapping[str, list[IPAddress]]) -> dict[str, object]:
    """``scan.config`` as JSON-ready values, with the key it drew and the addresses its
    names resolved to: together they rebuild the same plan."""
    record: dict[str, object] = {}
    for f in dataclasses.fields(scan.config):
        value = getattr(scan.config, f.name)
        if f.name in _UNRECORDED:
            continue
        if isinstance(value, TimingPolicy):
            value = dataclasses.asdict(value)
        elif isinstance(value, list | tuple):
            value = list(value)
        record[f.name] = value
    record["key"] = scan.plan.key
    record[RESOLVED] = {name: [str(a) for a in addresses] for name, addresses in resolved.items()}
    return record


def config_from_record(record: Mapping[str, Any], done: frozenset[Probe]) -> ScanConfig:
    """The ``ScanConfig`` of a recorded scan, skipping ``done``; StoreError if it cannot be."""
    values = {k: v for k, v in record.items() if k != RESOLVED}
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(ScanConfig)})
    if unknown:
        raise StoreError(f"the scan has options this portscout does not know: {unknown}")
    try:
        if values.get("timing") is not None:
            values["timing"] = TimingPolicy(**values["timing"])
        for name in ("targets", "excludes", "args"):
            values[name] = tuple(values.get(name, ()))
        if isinstance(values.get("ports"), list):
            values["ports"] = tuple(values["ports"])
        if isinstance(values.get("shard"), list):
            values["shard"] = tuple(values["shard"])
        return ScanConfig(**values, done=done, keep_closed=True)
    except (TypeError, ValueError, PortscoutError) as exc:
        raise StoreError(f"the scan's recorded options cannot be used: {exc}") from exc


def recorded_resolver(record: Mapping[str, Any], hostnames: Mapping[IPAddress, str]) -> Resolver:
    """A resolver answering only with the addresses recorded when the scan started.

    A resume must scan the hosts the scan planned: resolving again could add or swap
    addresses (``/etc/hosts`` or DNS changed meanwhile). Records written before the
    addresses were kept fall back to the scan's ``hostnames`` (address -> name).
    """
    known: dict[str, list[IPAddress]] = {}
    for address, name in hostnames.items():
        known.setdefault(name.lower(), []).append(address)
    try:
        for name, addresses in (record.get(RESOLVED) or {}).items():
            known[str(name).lower()] = [ip_address(a) for a in addresses]
    except (AttributeError, TypeError, ValueError) as exc:
        raise StoreError(f"the scan's recorded addresses cannot be used: {exc}") from exc

    def resolve(name: str) -> list[IPAddress]:
        if name.lower() not in known:
            raise TargetError(f"'{name}' has no address recorded in the scan: cannot resume")
        return known[name.lower()]

    return resolve
