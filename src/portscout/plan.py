"""The scan space: targets x ports as one index range, walked in a keyed order.

Index ``v`` in ``range(len(targets) * len(ports))`` is the probe
``(targets[v % hosts], ports[v // hosts])``; a ``Permutation`` decides the order, and a
``Shard`` (two integers) plus the key is all another process or machine needs to scan its
part. Targets stay lazy: a ``Sequence``-like set (``TargetSet``) is indexed per probe, so
a /8 never sits in memory.

Core module: no I/O.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from portscout.permutation import Permutation, Shard
from portscout.results import IPAddress

# Host lists up to this size are materialised once, so that the hot loop indexes a list
# instead of building an address object per probe (0.2 us each).
_MATERIALISE_HOSTS = 1 << 16
# What one worker process scans: a plan, a shard of it, and the only hosts whose probes it
# sends (None: all of them). See ``ScanPlan.pieces``.
Piece = tuple["ScanPlan", Shard, "Container[IPAddress] | None"]


class Probe(NamedTuple):
    """One (host, port) to try. A NamedTuple: built once per probe, so it must be cheap."""

    host: IPAddress
    port: int


class Addressable(Protocol):
    """What the plan needs of a target set (``TargetSet``): exact length, random access."""

    @property
    def size(self) -> int:
        """The exact count; ``len()`` cannot exceed sys.maxsize (an IPv6 /64 does)."""
        ...

    def __getitem__(self, index: int) -> IPAddress: ...


class HostList(tuple[IPAddress, ...]):
    """A materialised target list (the hosts discovery found up), addressable like a set."""

    __slots__ = ()

    @property
    def size(self) -> int:
        return len(self)


@dataclass(frozen=True, slots=True)
class HostGroup:
    """Targets ``start`` to ``stop`` (exclusive) of a target set, addressable like it:
    hosts discovered and scanned together (nmap's host groups), so that what a scan holds
    is bounded by a group, never by the target count."""

    targets: Addressable
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> IPAddress:
        if not 0 <= index < self.stop - self.start:
            raise IndexError("HostGroup index out of range")
        return self.targets[self.start + index]

    def __iter__(self) -> Iterator[IPAddress]:
        targets = self.targets
        return (targets[i] for i in range(self.start, self.stop))


def host_groups(targets: Addressable, size: int) -> Iterator[HostGroup]:
    """``targets`` in groups of ``size`` hosts, in index (address) order."""
    if size < 1:
        raise ValueError(f"host group size must be at least 1, not {size}")
    for start in range(0, targets.size, size):
        yield HostGroup(targets, start, min(start + size, targets.size))


@dataclass(frozen=True, slots=True)
class ScanPlan:
    targets: Addressable
    ports: tuple[int, ...]
    permutation: Permutation
    _hosts: Addressable | list[IPAddress] = field(repr=False, compare=False)

    @classmethod
    def create(
        cls,
        targets: Addressable,
        ports: Sequence[int],
        key: int,
        *,
        randomized: bool = True,
    ) -> ScanPlan:
        ports_t = tuple(ports)
        size = targets.size * len(ports_t)
        hosts: Addressable | list[IPAddress] = targets
        if targets.size <= _MATERIALISE_HOSTS:
            hosts = [targets[i] for i in range(targets.size)]
        return cls(
            targets=targets,
            ports=ports_t,
            permutation=Permutation.create(size, key, randomized=randomized),
            _hosts=hosts,
        )

    @property
    def size(self) -> int:
        """How many probes the plan holds (each port of each host once)."""
        return self.permutation.n

    @property
    def key(self) -> int:
        return self.permutation.key

    def shards(self, count: int) -> list[Shard]:
        return self.permutation.shards(count)

    def pieces(
        self, count: int, shard: Shard | None = None, hosts: Container[IPAddress] | None = None
    ) -> list[Piece]:
        """``shard`` of the plan (the whole plan without one), only the probes of ``hosts``
        (all without), split for ``count`` worker processes by host: each piece sends the
        probes of every ``count``-th host, in the plan's order of walk.

        By host, not by position: a process is a scanner with its own per-host timing,
        and a host that meets several (each learning its RST rate limit from its own
        drops) is sent more than it answers: with 4 processes on lab (b)'s hosts of 50
        RSTs/s, 51 closed ports came out filtered. A single host's ports are split by
        position over 2 processes at most (2 scanners a host stayed exact).
        """
        (whole,) = self.shards(1)  # the whole cycle (longer than the plan when shuffled)
        shard = whole if shard is None else shard
        every = (self.targets[i] for i in range(self.targets.size))
        chosen = [h for h in every if hosts is None or h in hosts]
        if len(chosen) < 2:
            return [(self, s, hosts) for s in shard.split(min(count, 2))]
        count = min(count, len(chosen))
        return [(self, shard, frozenset(chosen[first::count])) for first in range(count)]

    def probe_at(self, index: int) -> Probe:
        hosts = self._hosts
        n_hosts = self.targets.size
        return Probe(hosts[index % n_hosts], self.ports[index // n_hosts])

    def probes(
        self, shard: Shard | None = None, *, skip: Container[Probe] | None = None
    ) -> Iterator[Probe]:
        """The probes of ``shard`` (the whole plan without one), in walk order.

        ``skip`` holds probes already answered (a resumed scan): they are passed over.
        """
        if skip:
            yield from (probe for probe in self.probes(shard) if probe not in skip)
            return
        hosts, ports = self._hosts, self.ports
        n_hosts = self.targets.size
        if n_hosts == 1:
            host = hosts[0]
            for index in self.permutation.walk(shard):
                yield Probe(host, ports[index])
            return
        for index in self.permutation.walk(shard):
            yield Probe(hosts[index % n_hosts], ports[index // n_hosts])
