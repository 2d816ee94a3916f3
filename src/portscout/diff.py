"""What changed between two scans, as nmap's ``ndiff`` sees it: hosts and ports by state.

Core module: pure values and one comparison over two lists of results; ``store`` loads the
scans, ``output.ndiff`` renders the text form. Imports ``results`` and ``ports`` only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from portscout.ports import format_ports
from portscout.results import IPAddress, Protocol, Result, ScanMeta, Service, State


@dataclass(frozen=True, slots=True)
class PortChange:
    """A port whose state differs, or whose service (-sV on both sides) does; ``None`` on a
    side that has no result for it. Services as nmap's VERSION column says them."""

    port: int
    protocol: Protocol
    before: State | None
    after: State | None
    before_service: str | None = None
    after_service: str | None = None


# Changes between two states neither of which is open, more than this many alike on one
# host, are shown as one count (nmap folds a state with more than 25 ports into
# "Not shown"): a top-1000 scan against a full one otherwise lists 64,535 ports "not
# scanned -> closed". Changes to or from open are always listed.
FOLD_OVER = 25


@dataclass(frozen=True, slots=True)
class FoldedChange:
    """``ports`` of one host that all changed from ``before`` to ``after``, none open."""

    before: State | None
    after: State | None
    ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class HostChange:
    """A host that changed: its status (``up``/``down``, ``None`` when not scanned), ports."""

    host: IPAddress
    before: str | None
    after: str | None
    ports: tuple[PortChange, ...]

    def split(self) -> tuple[tuple[PortChange, ...], tuple[FoldedChange, ...]]:
        """The port changes to list one by one, and the bulk ones folded (``FOLD_OVER``)."""
        groups: dict[tuple[State | None, State | None], list[PortChange]] = {}
        for p in self.ports:
            if p.before is not State.OPEN and p.after is not State.OPEN:
                groups.setdefault((p.before, p.after), []).append(p)
        folded = {key for key, members in groups.items() if len(members) > FOLD_OVER}
        listed = tuple(p for p in self.ports if (p.before, p.after) not in folded)
        return listed, tuple(
            FoldedChange(before, after, tuple(p.port for p in groups[before, after]))
            for before, after in sorted(folded, key=str)
        )


@dataclass(frozen=True, slots=True)
class DiffSide:
    """One of the two scans compared: its history id and what its writers were given."""

    id: int
    meta: ScanMeta


@dataclass(frozen=True, slots=True)
class ScanDiff:
    a: DiffSide
    b: DiffSide
    hosts: tuple[HostChange, ...]

    def summary(self) -> dict[str, int]:
        """How many hosts came up / went down, ports became open / closed / filtered / gone."""
        ports = [p for h in self.hosts for p in h.ports]
        return {
            "hosts_up": sum(h.before != "up" and h.after == "up" for h in self.hosts),
            "hosts_down": sum(h.before == "up" and h.after != "up" for h in self.hosts),
            "opened": sum(p.after is State.OPEN for p in ports),
            "closed": sum(p.after is State.CLOSED for p in ports),
            "filtered": sum(p.after is State.FILTERED for p in ports),
            "gone": sum(p.after is None for p in ports),
        }

    def to_dict(self) -> dict[str, object]:
        """The JSON form (``portscout diff --json``); states ``null`` where not scanned."""
        side = {"a": self.a, "b": self.b}
        return {
            **{
                name: {"id": s.id, "started": s.meta.started, "args": list(s.meta.args)}
                for name, s in side.items()
            },
            "summary": self.summary(),
            "hosts": [_host_dict(h) for h in self.hosts],
        }

    @property
    def changed(self) -> bool:
        """Whether anything differs (``portscout diff`` exits 1 then, as diff(1))."""
        return bool(self.hosts)


def _host_dict(h: HostChange) -> dict[str, object]:
    listed, folded = h.split()
    return {
        "host": str(h.host),
        "a": h.before,
        "b": h.after,
        "ports": [_port_dict(p) for p in listed],
        "folded": [
            {"a": f.before, "b": f.after, "count": len(f.ports), "ports": format_ports(f.ports)}
            for f in folded
        ],
    }


def _port_dict(p: PortChange) -> dict[str, object]:
    out: dict[str, object] = {"port": p.port, "protocol": p.protocol.value, "a": p.before,
                              "b": p.after}  # fmt: skip
    if p.before_service is not None or p.after_service is not None:
        out["a_service"], out["b_service"] = p.before_service, p.after_service
    return out


def _host_status(states: Iterable[State]) -> str:
    """nmap_xml's rule: up when any port answered (open or closed), else down."""
    return "up" if any(s is not State.FILTERED for s in states) else "down"


_Seen = tuple[State, str | None]  # a port's state and service line, as one scan saw it


def _service_line(service: Service) -> str:
    return " ".join(p for p in (service.full_name, service.summary()) if p)


def _differs(a: _Seen | None, b: _Seen | None) -> bool:
    """The state changed, or both scans named the port's service and named it otherwise."""
    if a is None or b is None:
        return a is not b
    return a[0] is not b[0] or (a[1] is not None and b[1] is not None and a[1] != b[1])


def _pair(
    a: _Seen | None, b: _Seen | None
) -> tuple[State | None, State | None, str | None, str | None]:
    return (
        None if a is None else a[0], None if b is None else b[0],
        None if a is None else a[1], None if b is None else b[1],
    )  # fmt: skip


def compare(
    a: DiffSide, a_results: Iterable[Result], b: DiffSide, b_results: Iterable[Result]
) -> ScanDiff:
    """What changed from scan ``a`` to scan ``b``: hosts and ports, by state."""
    maps: list[dict[IPAddress, dict[tuple[int, Protocol], tuple[State, str | None]]]] = [{}, {}]
    for results, by_host in zip((a_results, b_results), maps, strict=True):
        for r in results:
            service = None if r.service is None else _service_line(r.service)
            by_host.setdefault(r.host, {})[(r.port, r.protocol)] = (r.state, service)
    before_map, after_map = maps
    changes = []
    for host in sorted(before_map.keys() | after_map.keys(), key=lambda h: (h.version, int(h))):
        pa, pb = before_map.get(host, {}), after_map.get(host, {})
        ports = tuple(
            PortChange(port, proto, *_pair(pa.get((port, proto)), pb.get((port, proto))))
            for port, proto in sorted(pa.keys() | pb.keys())
            if _differs(pa.get((port, proto)), pb.get((port, proto)))
        )
        before = _host_status(s for s, _ in pa.values()) if host in before_map else None
        after = _host_status(s for s, _ in pb.values()) if host in after_map else None
        if ports or before != after:
            changes.append(HostChange(host, before, after, ports))
    return ScanDiff(a, b, tuple(changes))
