"""Results grouped per host and handed out in address order: what every writer formats.

Engines answer in a random order (the keyed permutation interleaves hosts and ports), and
``diff`` of two outputs is only useful when the order is not random. ``HostOrder`` is the
small ordering stage between the scan and the writers: it buffers each host's results until
the scan is done with that host (every port answered; with ``-sn`` at once), then hands the
hosts out in target order, which is address order (``TargetSet`` sorts and merges), each
as one ``HostResults`` whose ports a writer lists ascending. A writer only formats.

Memory is what is buffered, per host not yet handed out: a full ``Result`` for every port a
writer may list one by one (every open port, the first ``limit`` ports of a state nmap may
fold, or every port with ``detail``), and 2 bytes per other port (its number, grouped by
state and reason, for nmap's ``extraports``/``extrareasons`` and for writers that list
every port). Imports ``results`` only.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import NamedTuple, Protocol

from portscout.results import ClosedPorts, IPAddress, Reason, Result, State
from portscout.results import Protocol as IpProtocol

# States nmap may fold into "Not shown: ..." / <extraports>, in nmap's state-number order.
IGNORABLE = (State.CLOSED, State.FILTERED)
MIN_TIMEOUT = 0.1  # seconds: nmap's default --min-rtt-timeout, the floor of <times to>


# A host where (nearly) every probed port answers SYN-ACK is a SYN proxy, SYN cookies on a
# firewall or a tarpit, not that many services (issue 13). The lab's nftables synproxy
# answers 100% of ports; a real host with many ports scanned has far fewer than 90% open,
# and a scan of few ports (< 100) says too little to judge.
ALL_ANSWER_MIN_PORTS = 100
ALL_ANSWER_FRACTION = 0.9
ALL_ANSWER_NOTE = "all-ports-answer"
UNCONFIRMED = 0.2  # confidence of an open port of such a host that no service confirmed


def ignore_limit(verbose: int) -> int:
    """How many ports of one state nmap lists before folding them into a summary.

    ``PortList::isIgnoredState``: more than 25 ports, times ``verbose + 1`` with ``-v``.
    """
    return 25 * (max(verbose, 0) + 1)


def address_key(address: IPAddress) -> tuple[int, int]:
    return (address.version, int(address))


def spoke(result: Result) -> bool:
    """-sV heard a service on the port (a probe matched; tcpwrapped is no service)."""
    service = result.service
    return service is not None and service.method == "probed" and service.name != "tcpwrapped"


class BarePort(NamedTuple):
    """A port known only by its state and reason (folded, or counted in a worker process):
    no round trip, try count or TTL was kept for it."""

    port: int
    state: State
    reason: Reason
    protocol: IpProtocol = IpProtocol.TCP


GroupKey = tuple[State, Reason, IpProtocol]


@dataclass(slots=True)
class HostResults:
    """One host as the writers see it: its status and its ports, summarised as nmap does.

    ``up`` and ``reason``: discovery's answer (``user-set`` with ``-Pn``, as nmap);
    ``latency`` (seconds): discovery's round trip, else smoothed from the ports' round
    trips (``smoothed_rtt``), None when nothing was timed. ``hostname`` is the name the
    user gave (``hostname_type`` "user") or a reverse lookup's (``-R``, "PTR").
    """

    address: IPAddress
    limit: int = 25
    detail: bool = False
    up: bool = True
    reason: Reason = Reason.USER_SET
    reason_ttl: int | None = None
    latency: float | None = None
    hostname: str = ""
    hostname_type: str = "user"
    counts: Counter[State] = field(default_factory=Counter)
    kept: list[Result] = field(default_factory=list)
    bare: dict[GroupKey, array[int]] = field(default_factory=dict)

    @property
    def seen(self) -> int:
        """Ports with a result so far."""
        return sum(self.counts.values())

    @property
    def answers_every_port(self) -> bool:
        """(Nearly) every probed port answered SYN-ACK: see ``ALL_ANSWER_FRACTION``."""
        seen = self.seen
        return (
            seen >= ALL_ANSWER_MIN_PORTS and self.counts[State.OPEN] >= ALL_ANSWER_FRACTION * seen
        )

    def note(self) -> str | None:
        """The host record's note when it answers every port, else None."""
        if not self.answers_every_port:
            return None
        return (
            f"{ALL_ANSWER_NOTE}: {self.counts[State.OPEN]} of {self.seen} probed ports answered"
            " SYN-ACK (SYN proxy, SYN cookies or tarpit); an open port is confirmed only where"
            " a service spoke (-sV)"
        )

    def confidence(self, result: Result) -> float | None:
        """An open port's confidence (0-1) on a host that answers every port: low unless
        -sV heard a service speak; None elsewhere (nothing to doubt)."""
        if result.state is not State.OPEN or not self.answers_every_port:
            return None
        return 1.0 if spoke(result) else UNCONFIRMED

    def add(self, result: Result) -> None:
        state = result.state
        self.counts[state] += 1
        if self.detail or state not in IGNORABLE or self.counts[state] <= self.limit:
            self.kept.append(result)
            return
        key = (state, result.reason, result.protocol)
        ports = self.bare.get(key)
        if ports is None:
            ports = self.bare[key] = array("H")
        ports.append(result.port)

    def add_closed(self, group: ClosedPorts) -> None:
        """Closed ports a worker process only counted (no ``Result`` each)."""
        ports = group.ports
        room = max(0, self.limit - self.counts[State.CLOSED])
        self.counts[State.CLOSED] += len(ports)
        for port in ports[:room]:
            self.kept.append(Result(self.address, port, State.CLOSED, group.reason, group.protocol))
        if len(ports) > room:
            key = (State.CLOSED, group.reason, group.protocol)
            self.bare.setdefault(key, array("H")).extend(ports[room:])

    def folded(self) -> list[State]:
        """States folded into a summary, most ports first (nmap's ``nextIgnoredState``)."""
        states = [s for s in IGNORABLE if self.counts[s] > self.limit]
        return sorted(states, key=lambda s: -self.counts[s])

    def listed(self, *, only_open: bool = False) -> list[Result]:
        """Results listed one by one (not folded), in port order."""
        folded = self.folded()
        shown = [
            r
            for r in self.kept
            if r.state not in folded and (not only_open or r.state is State.OPEN)
        ]
        return sorted(shown, key=_port_order)

    def groups(self, state: State) -> list[tuple[Reason, IpProtocol, list[int]]]:
        """(reason, protocol, sorted ports) of ``state``, most ports first, then by reason."""
        by_group: dict[tuple[Reason, IpProtocol], list[int]] = {}
        for r in self.kept:
            if r.state is state:
                by_group.setdefault((r.reason, r.protocol), []).append(r.port)
        for (s, reason, proto), ports in self.bare.items():
            if s is state:
                by_group.setdefault((reason, proto), []).extend(ports)
        return sorted(
            ((reason, proto, sorted(ports)) for (reason, proto), ports in by_group.items()),
            key=lambda g: (-len(g[2]), g[0].value),
        )

    def every_port(self) -> list[Result | BarePort]:
        """Every port of the host in port order: ``Result`` where kept, else ``BarePort``."""
        rows: list[Result | BarePort] = list(self.kept)
        for (state, reason, proto), ports in self.bare.items():
            rows.extend(BarePort(port, state, reason, proto) for port in ports)
        rows.sort(key=attrgetter("port"))
        return rows

    def rtts(self) -> Iterator[float]:
        """Round trips of the kept results, in port order (deterministic smoothing)."""
        for r in sorted(self.kept, key=_port_order):
            if r.rtt is not None:
                yield r.rtt

    def times_us(self) -> tuple[int, int, int] | None:
        """nmap's ``<times>`` srtt, rttvar, to (microseconds), or None without samples."""
        smoothed = smoothed_rtt(self.rtts())
        if smoothed is None:
            return None
        srtt, rttvar = smoothed
        timeout = max(srtt + 4 * rttvar, MIN_TIMEOUT)
        return round(srtt * 1e6), round(rttvar * 1e6), round(timeout * 1e6)


def _port_order(result: Result) -> tuple[str, int]:
    return (result.protocol.value, result.port)


def smoothed_rtt(samples: Iterable[float]) -> tuple[float, float] | None:
    """(srtt, rttvar) of RFC 6298 section 2 (alpha 1/8, beta 1/4), None without samples."""
    srtt: float | None = None
    rttvar = 0.0
    for rtt in samples:
        if srtt is None:
            srtt, rttvar = rtt, rtt / 2
        else:
            rttvar = 0.75 * rttvar + 0.25 * abs(srtt - rtt)
            srtt = 0.875 * srtt + 0.125 * rtt
    return None if srtt is None else (srtt, rttvar)


class Hosts(Protocol):
    """The scan's targets in order (``TargetSet``, ``HostList``): size and indexing."""

    @property
    def size(self) -> int: ...

    def __getitem__(self, index: int) -> IPAddress: ...


@dataclass(slots=True, kw_only=True)
class HostOrder:
    """The ordering stage: results in, whole hosts out in target order.

    Without discovery a host goes out as soon as it has ``ports_per_host`` results and
    every host before it is out; with discovery, hosts go out when their host group is done
    (``group_done``: the scan holds one group at a time). ``limit`` is
    ``ignore_limit(verbose)``; ``detail`` keeps every result whole (writers that list every
    port with its round trip). ``names`` are the host names the user gave.

    ``list_down``: hand out a ``HostResults`` for each down host, in place (``-v`` lists
    them, as nmap). Without it only hosts up are handed out and the down ones are only
    counted (``take_down``): a /8 is 16 million targets, nearly all down, and building
    each one's record cost about 70 us (20 minutes of CPU), where the walk over the hosts
    up of a group costs what they are.
    """

    ports_per_host: int
    limit: int = 25
    detail: bool = False
    names: Mapping[IPAddress, str] = field(default_factory=dict)
    list_down: bool = True
    _hosts: Hosts | None = None
    _discovery: bool = False
    _known: int = 0  # targets [0, _known) have been through discovery
    _up: Mapping[IPAddress, Reason] = field(default_factory=dict)
    _latency: Mapping[IPAddress, float] = field(default_factory=dict)
    _cursor: int = 0
    _buffered: dict[IPAddress, HostResults] = field(default_factory=dict)
    handed_up: int = 0
    handed_down: int = 0
    _down_untaken: int = 0  # down hosts counted (not listed) since the last take_down

    def plan(self, hosts: Hosts, *, discovery: bool) -> None:
        """The scan's targets in order, and whether they are pinged first (without
        discovery, ``-Pn``, every target is up and a host goes out once complete)."""
        self._hosts, self._discovery = hosts, discovery

    def group_done(
        self, stop: int, up: Mapping[IPAddress, Reason], latency: Mapping[IPAddress, float]
    ) -> None:
        """Targets before index ``stop`` have been discovered and scanned (a host group
        is done): ``up`` and ``latency`` are discovery's findings so far."""
        self._known = max(self._known, stop)
        self.discovered(up, latency)

    def discovered(
        self, up: Mapping[IPAddress, Reason], latency: Mapping[IPAddress, float]
    ) -> None:
        """Discovery's findings so far (at the end of an interrupted group, too)."""
        self._up, self._latency = up, latency

    def add(self, results: Iterable[Result]) -> None:
        buffered = self._buffered
        for result in results:
            host = buffered.get(result.host)
            if host is None:
                host = buffered[result.host] = self._new(result.host)
            host.add(result)

    def add_closed(self, groups: Iterable[ClosedPorts]) -> None:
        for group in groups:
            host = self._buffered.get(group.host)
            if host is None:
                host = self._buffered[group.host] = self._new(group.host)
            host.add_closed(group)

    def ready(self) -> list[HostResults]:
        """Hosts the scan is done with, in order, up to the first one it is not done with
        (with discovery: hosts of groups not done yet wait; their status is not known)."""
        out: list[HostResults] = []
        hosts = self._hosts
        if hosts is None:
            return out
        limit = self._known if self._discovery else hosts.size
        if self._discovery and not self.list_down:
            return self._ready_up(hosts, limit)
        while self._cursor < limit:
            address = hosts[self._cursor]
            host = self._buffered.get(address)
            if self._is_down(address):
                out.append(self._hand_out(self._new(address), down=True))
            elif self._discovery or (host and host.seen >= self.ports_per_host):
                out.append(self._hand_out(host or self._new(address)))  # group done
            else:
                break
            self._cursor += 1
        return out

    def _ready_up(self, hosts: Hosts, limit: int) -> list[HostResults]:
        """``ready`` without listing down hosts: the hosts up of targets ``[cursor,
        limit)`` in address order (targets are in address order), the rest counted down.
        Costs what is up or buffered (a group or a few), not what the range holds."""
        if self._cursor >= limit:
            return []
        low = address_key(hosts[self._cursor])
        high = address_key(hosts[limit]) if limit < hosts.size else None

        def inside(address: IPAddress) -> bool:
            key = address_key(address)
            return low <= key and (high is None or key < high)

        up = sorted((a for a in self._up if inside(a)), key=address_key)
        for address in [a for a in self._buffered if inside(a) and a not in self._up]:
            del self._buffered[address]  # results of a host found down (a resumed scan)
        out = [self._hand_out(self._buffered.get(a) or self._new(a)) for a in up]
        down = limit - self._cursor - len(up)
        self.handed_down += down
        self._down_untaken += down
        self._cursor = limit
        return out

    def take_down(self) -> int:
        """Down hosts counted, not handed out (``list_down`` False), since the last call."""
        down, self._down_untaken = self._down_untaken, 0
        return down

    def rest(self) -> list[HostResults]:
        """Every host not handed out yet, in order: at the end, or after an interrupt (a
        host with no result then is left out)."""
        out = self.ready()
        for address in sorted(self._buffered, key=address_key):
            out.append(self._hand_out(self._buffered[address]))
        return out

    def _is_down(self, address: IPAddress) -> bool:
        return self._discovery and address not in self._up

    def _new(self, address: IPAddress) -> HostResults:
        return HostResults(address, self.limit, self.detail, hostname=self.names.get(address, ""))

    def _hand_out(self, host: HostResults, *, down: bool = False) -> HostResults:
        self._buffered.pop(host.address, None)
        if down:
            host.up, host.reason = False, Reason.NO_RESPONSE
            self.handed_down += 1
            return host
        if self._discovery:
            host.reason = self._up.get(host.address, Reason.USER_SET)
        host.latency = self._latency.get(host.address)
        if host.latency is None:
            smoothed = smoothed_rtt(host.rtts())
            host.latency = None if smoothed is None else smoothed[0]
        self.handed_up += 1
        return host
