"""A scan: parse the request, plan it, run an engine, keep a report (``api`` gives the
library's scan(), iscan() and ascan() on top, ``running`` runs it from blocking code).

This is where the pieces meet: targets and ports become a ``ScanPlan``, the plan is split
into shards for worker processes when it is large, the engine turns probes into results,
and the ``Report`` counts them. Descriptors are budgeted here, so that no engine can run
into "Too many open files".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import secrets
import socket
import time
from collections import Counter
from collections.abc import (
    AsyncGenerator,
    Callable,
    Container,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass, field, replace
from ipaddress import ip_address
from typing import TYPE_CHECKING, NamedTuple

from portscout._version import __version__
from portscout.engines import ENGINES, resolve_engine_name
from portscout.engines.base import EngineOptions
from portscout.engines.processes import ClosedAs, run_sharded
from portscout.engines.rawsock import raw_sockets_allowed
from portscout.errors import OptionError, TargetError
from portscout.permutation import Shard
from portscout.plan import HostGroup, HostList, Probe, ScanPlan, host_groups
from portscout.ports import parse_ports, top_ports
from portscout.results import ClosedPorts, IPAddress, Report, Result, ScanMeta, State
from portscout.targets import Resolver, parse_targets
from portscout.timing import TimingPolicy

if TYPE_CHECKING:
    from portscout.engines.pinger import Discovered
    from portscout.engines.service_stage import ServiceStage

log = logging.getLogger(__name__)

DEFAULT_TOP_PORTS = 1000
# Descriptors kept free for the interpreter, the event loop, output files and the history
# database: at most this many, at most half the limit (a tiny limit still scans).
FD_RESERVE = 64
# Below this many probes a second process costs more (fork, pipe, start-up) than it saves.
PROCESS_THRESHOLD = 8192
BATCH_SIZE = 256
BATCH_SECONDS = 0.05
# Hosts discovered and scanned together (nmap's --max-hostgroup): what a scan holds is
# bounded by a group and the probes in flight, never by the number of targets. A /24 is
# one group (scanned as fast as before groups), a /8 4096 of them.
DEFAULT_HOSTGROUP = 4096
# Target sets past this many addresses are refused before anything is sent (nmap refuses
# ::/0): 2^32 is all of IPv4, or an IPv6 /96; a longer scan of them could not end.
MAX_ADDRESSES = 1 << 32
# Probes a second a scan of a real network keeps up, for the estimate printed before long
# scans: connect probes are bounded by --max-parallelism (2500) per timeout (about 1 s
# for silent hosts), raw SYNs by the send rate the receivers keep up with.
ESTIMATE_RATE = {"syn": 100_000.0}  # by scan type (EngineSpec.scan_type)
ESTIMATE_RATE_CONNECT = 2_500.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanConfig:
    """Everything a scan is asked to do; validated by ``Scan``, not here."""

    targets: Sequence[str]
    ports: str | Sequence[int] | None = None  # None: the top ``top_ports`` ports
    top_ports: int | None = None
    excludes: Sequence[str] = ()
    engine: str = "auto"
    # Every engine follows ``timing`` (None: nmap's -T3). The four below are the library's
    # shortcuts for --timeout, --max-retries, --max-rate and --max-parallelism, merged into
    # it by ``TimingPolicy.with_options`` (None: not given). Descriptors bound the
    # parallelism further (``fd_budget``).
    timing: TimingPolicy | None = None
    timeout: float | None = None
    max_retries: int | None = None
    max_in_flight: int | None = None
    workers: int = 50  # threadpool engine
    rate: float | None = None  # probes per second in total
    processes: int | None = None  # None: one per core for large scans, else 1
    key: int | None = None  # the permutation key; None: a fresh secret one
    randomize: bool = True
    keep_closed: bool = True  # stream closed results too (the iterator APIs want them)
    # Without keep_closed: still collect closed ports compactly (``Scan.take_closed``), as
    # the history database needs them to resume; else large scans only count them.
    record_closed: bool = False
    args: tuple[str, ...] = field(default_factory=tuple)
    discovery: bool = True  # ping hosts first, scan only those up (-Pn: False)
    ping_only: bool = False  # -sn: discovery only, no port scan
    # Probes answered in an earlier run of this same scan (same key): not sent again.
    done: frozenset[Probe] = frozenset()
    hostgroup: int = DEFAULT_HOSTGROUP  # hosts discovered and scanned together at most
    family: int | None = None  # 6: IPv6 targets only (nmap's -6); None: both
    # -sV: name the services on open ports, each as soon as the port scan finds it open.
    service_detection: bool = False
    version_intensity: int = 7  # 0-9; --version-light 2, --version-all 9
    service_probes: str | None = None  # nmap-service-probes path or "built-in"; None: find
    # (i, n), 1-based as masscan's --shard i/n: only the i-th of n disjoint parts of every
    # host group's probes (``part_of``); the parts agree only under the same ``key``.
    shard: tuple[int, int] | None = None


def system_resolver(name: str) -> list[IPAddress]:
    """Resolve a host name once with the system resolver (getaddrinfo)."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetError(f"cannot resolve '{name}': {exc}") from exc
    return [ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit where allowed; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.debug("could not raise RLIMIT_NOFILE from %d", soft)
    return soft


def _parse_port_request(config: ScanConfig) -> tuple[int, ...]:
    if config.ports is not None and config.top_ports is not None:
        raise OptionError("give either ports or top ports, not both")
    if config.ports is None:
        return top_ports(DEFAULT_TOP_PORTS if config.top_ports is None else config.top_ports)
    if isinstance(config.ports, str):
        return parse_ports(config.ports)
    ports = tuple(sorted(set(config.ports)))
    bad = [p for p in ports if not 0 <= p <= 65535]
    if bad:
        raise OptionError(f"port '{bad[0]}' out of range 0-65535")
    return ports


def timing_policy(config: ScanConfig) -> TimingPolicy:
    """The scan's one policy: ``config.timing`` (or -T3) with the library's shortcuts on
    top. Raises OptionError, naming the command line's option, for a bad value."""
    return (config.timing or TimingPolicy()).with_options(
        timeout=config.timeout,
        max_retries=config.max_retries,
        max_rate=config.rate,
        max_parallelism=config.max_in_flight,
    )


def fd_budget(limit: int, processes: int) -> int:
    """Probes each of ``processes`` may have in flight (a descriptor each) under a
    descriptor limit of ``limit``: at least one, whatever the limit."""
    reserve = min(FD_RESERVE, limit // 2)
    return max(1, (limit - reserve) // processes)


def per_process(policy: TimingPolicy, processes: int) -> TimingPolicy:
    """Each of ``processes`` workers gets its share of the rates and the parallelism."""
    if processes == 1:
        return policy
    share = max(1, policy.max_parallelism // processes)
    return replace(
        policy,
        max_rate=None if policy.max_rate is None else policy.max_rate / processes,
        min_rate=None if policy.min_rate is None else policy.min_rate / processes,
        max_parallelism=share,
        min_parallelism=min(policy.min_parallelism, share),
    )


class Part(NamedTuple):
    """A --shard part of a host group's plan: its positions, and the hosts (found up) of
    which it scans the probes."""

    shard: Shard
    hosts: Container[IPAddress]


class Scan:
    """One scan: its plan, its engine settings and the report it fills while it runs."""

    def __init__(self, config: ScanConfig, *, resolver: Resolver = system_resolver) -> None:
        self.policy = timing_policy(config)
        self.config = config
        self.spec = ENGINES[resolve_engine_name(config.engine)]
        self.engine = self.spec.create()
        self.skipped: list[tuple[str, str]] = []  # targets passed over, with why
        self.targets = parse_targets(
            config.targets, excludes=config.excludes, resolver=resolver,
            family=config.family, on_skip=self._skip,
        )  # fmt: skip
        if self.targets.size > MAX_ADDRESSES:
            raise TargetError(
                f"{self.targets.size:,} addresses are more than 2^32 (all of IPv4, an IPv6"
                " /96) and could never be scanned: give smaller ranges"
            )
        if config.hostgroup < 1:
            raise OptionError(f"--max-hostgroup {config.hostgroup} must be at least 1")
        self.ports = _parse_port_request(config)
        _check_shard(config)
        key = config.key if config.key is not None else secrets.randbits(64)
        self.plan = ScanPlan.create(self.targets, self.ports, key, randomized=config.randomize)
        self.processes = self._choose_processes()
        # Called with each host group once its last result was handed out (outputs that
        # write a group's hosts in address order flush then).
        self.on_group_done: Callable[[HostGroup], None] | None = None
        self._planned = 0  # probes of the groups planned so far
        # The next group's discovery, started while this group's ports are scanned
        # (``_ping_ahead``): that group's first target index and the pings' task.
        self._ahead: tuple[int, asyncio.Task[Discovered]] | None = None
        self._unflushed: list[Result] = []
        self._closed: list[ClosedPorts] = []
        self.detection = _service_detection(config)
        # -sV runs beside the port scan: its sockets come out of the scan's descriptors.
        self.options = self._shared(
            EngineOptions(timing=self.policy, workers=config.workers), self.processes
        )
        self.report = Report(
            engine=self.engine.name,
            key=key,
            started=time.time(),
            probes_planned=self.plan.size - len(config.done),
        )
        self._held: dict[tuple[IPAddress, int], Result] = {}  # -sV: open, not yet named
        if self.detection is not None:
            self.report.service_database = self.detection.database_source
        self.meta = ScanMeta(
            args=config.args,
            scan_type=self.spec.scan_type,
            engine=self.engine.name,
            ports=() if config.ping_only else self.ports,
            started=self.report.started,
            version=__version__,
            key=key,
            hostnames=dict(self.targets.hostnames),
        )

    def _skip(self, spec: str, why: str) -> None:
        """A target that cannot be had: said as nmap says it, and the scan goes on."""
        self.skipped.append((spec, why))
        if why.startswith("cannot resolve"):
            log.warning('Failed to resolve "%s".', spec)
        else:
            log.warning('Skipping "%s": %s.', spec, why)

    async def _in_process_batches(
        self, plan: ScanPlan, options: EngineOptions, probes: Iterator[Probe] | None = None
    ) -> AsyncGenerator[list[Result], None]:
        """Run the engine as a task; hand out what it found every 256 results or 50 ms.

        Batches keep the per-result cost of the blocking ``drive()`` low; the time limit
        keeps a slow scan's results (and Ctrl-C's) flowing to the writers promptly.
        """
        full = asyncio.Event()
        if probes is None:
            probes = plan.probes(skip=self.config.done)

        async def pump() -> None:
            try:
                async for result in self.engine.run(probes, options):
                    self.report.add(result)
                    self.report.probes_sent += result.tries
                    self._unflushed.append(result)
                    if len(self._unflushed) >= BATCH_SIZE:
                        full.set()
            finally:
                full.set()  # the end wakes the waiter: no batch tick (50 ms) after the last

        task = asyncio.create_task(pump())
        try:
            while not task.done():
                # Not wait_for(shield(...)): that left a pending task behind every tick,
                # destroyed pending ("Task was destroyed") when a host group ended.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(BATCH_SECONDS):
                        await full.wait()
                full.clear()
                yield self.take_unflushed()  # even empty: a tick (progress, history commits)
            task.result()  # re-raise what the engine raised
            if self._unflushed:
                yield self.take_unflushed()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _discover(self, group: HostGroup) -> tuple[ScanPlan, EngineOptions]:
        """Ping the group's hosts (or take the pings started ahead for it); plan its port
        scan over those that answered (same key), with options that start each host's
        timing from its ping's round trip."""
        hosts = list(group)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == group.start:
            found = self._account(hosts, await ahead[1])
        else:
            await _cancelled(ahead[1] if ahead is not None else None)
            found = await self._ping(hosts)
        report = self.report
        up_hosts = HostList(h for h in hosts if h in found.up)
        plan = ScanPlan.create(
            up_hosts, self.ports, self.plan.key, randomized=self.config.randomize
        )
        # The total follows what discovery found: the groups planned, and the rest at the
        # share of hosts up so far.
        self._planned += plan.size
        rest = self.targets.size - group.stop
        expected = round(rest * report.up_count / group.stop) * len(self.ports)
        report.probes_planned = self._planned + expected - len(self.config.done)
        if self.config.ping_only:
            report.probes_planned = 0
        return plan, replace(self._options_for(plan.size), rtt_hints=found.rtts)

    async def _ping(self, hosts: list[IPAddress]) -> Discovered:
        """Discovery of ``hosts`` (those of a group, or of a shard's part of it), its
        answers kept in the report."""
        return self._account(hosts, await self._pings(hosts))

    async def _pings(self, hosts: list[IPAddress]) -> Discovered:
        from portscout.engines.discovery import discover  # imports the connect engine

        options = replace(self.options, timing=self.policy)
        return await discover(hosts, options, raw=raw_sockets_allowed())

    def _ping_ahead(self, group: HostGroup | None) -> None:
        """Start ``group``'s discovery now, while the current group's ports are scanned:
        its pings and waits then cost no wall time of their own. Not under --max-rate
        (the pings and the port scan would each send at the rate; nmap's rate is the
        scan's)."""
        if group is None or self.policy.max_rate is not None:
            return
        self._ahead = (group.start, asyncio.ensure_future(self._pings(list(group))))

    def _account(self, hosts: list[IPAddress], found: Discovered) -> Discovered:
        """Keep ``found`` (the discovery of ``hosts``) in the report, once its group's
        turn has come (a group pinged ahead is not up yet if the scan stops first)."""
        report = self.report
        if report.hosts_up is None:
            report.hosts_up = {}
        report.hosts_up.update(found.up)
        report.latency.update(found.rtts)
        log.debug("discovery: %d of %d hosts up", len(found.up), len(hosts))
        return found

    async def _part_batches(
        self, group: HostGroup, shard: tuple[int, int]
    ) -> AsyncGenerator[list[Result], None]:
        """The ``shard`` part of ``group``'s probes, here or over this machine's worker
        processes as a whole scan's group would be (``_plan_batches``).

        The part is fixed before discovery (``part_of`` every target of the group, not
        only those up), so that machines that disagree on which hosts are up still run
        disjoint parts; discovery pings only the hosts the part has probes for.
        """
        plan, part = part_of(group, self.ports, self.plan.key, shard, self.config.randomize)
        if part == plan.shards(1)[0]:  # whole hosts (``part_of``): every port of each
            hosts = plan.targets
            per_host = Counter({hosts[i]: len(self.ports) for i in range(hosts.size)})
        else:  # a group smaller than the parts: walk it for the hosts it has probes of
            per_host = Counter(probe.host for probe in plan.probes(part))
        options = self._options_for(len(part))
        if self.config.discovery or self.config.ping_only:
            found = await self._ping([h for h in group if h in per_host])
            up: Container[IPAddress] = found.up
            options = replace(options, rtt_hints=found.rtts)
        else:
            up = per_host
        self._planned += sum(n for host, n in per_host.items() if host in up)
        self.report.probes_planned = self._planned - len(self.config.done)
        if self.config.ping_only:
            self.report.probes_planned = 0
            return
        async for batch in self._group_batches(plan, options, Part(part, up)):
            yield batch

    def _options_for(self, size: int) -> EngineOptions:
        """The engine options for ``size`` probes: each worker's share where they are
        split over processes, the whole policy where they run in this process."""
        if self._processes_for(size) > 1:
            return self.options
        return replace(self.options, timing=self.policy)

    def _shared(self, options: EngineOptions, workers: int) -> EngineOptions:
        """``options`` for each of ``workers`` processes: its share of the rates and the
        parallelism, and of the descriptors (-sV runs beside the port scan: its sockets
        come out of the scan's)."""
        detecting = self.detection.sockets if self.detection is not None else 0
        share = per_process(self.policy, workers)
        budget = fd_budget(raise_fd_limit() - detecting, workers)
        return replace(options, timing=share, max_in_flight=min(share.max_parallelism, budget))

    def _processes_for(self, size: int) -> int:
        if self.config.processes is not None or size >= PROCESS_THRESHOLD:
            return self.processes
        return 1

    def estimated_seconds(self) -> float:
        """A rough duration before anything is sent: discovery's two TCP pings a host (on
        the connect engine) and every port of every host, at ``ESTIMATE_RATE`` or
        --max-rate, whichever is lower."""
        limit = self.policy.max_rate or float("inf")
        probes = self.plan.size - len(self.config.done)
        rate = min(ESTIMATE_RATE.get(self.spec.scan_type, ESTIMATE_RATE_CONNECT), limit)
        pings = 2 * self.targets.size if self.config.discovery else 0
        return pings / min(ESTIMATE_RATE_CONNECT, limit) + probes / rate

    @property
    def total(self) -> int:
        """Probes the whole scan is expected to take, those of an earlier run included:
        every port of every target, until discovery finds out how many hosts are up."""
        return self.report.probes_planned + len(self.config.done)

    def take_unflushed(self) -> list[Result]:
        """Results counted in the report but not yet handed out (after an interrupt)."""
        batch, self._unflushed = self._unflushed, []
        return batch

    def take_closed(self) -> list[ClosedPorts]:
        """Closed ports counted in the report but in no batch, collected since the last
        call (``record_closed`` without ``keep_closed``, on a scan split over processes;
        a scan in one process hands every result out in its batches)."""
        closed, self._closed = self._closed, []
        return closed

    def defer_closed(self, closed: Iterable[ClosedPorts]) -> None:
        """Closed ports counted in the report elsewhere (a Dask unit), for the next
        ``take_closed``."""
        self._closed.extend(closed)

    def _choose_processes(self) -> int:
        requested = self.config.processes
        if requested is not None:
            if requested < 1:
                raise OptionError(f"processes must be 1 or more, got {requested}")
            return requested
        if self.spec.blocking or self.plan.size < PROCESS_THRESHOLD:
            return 1
        return max(1, min(os.cpu_count() or 1, 8))

    async def _plan_batches(
        self, plan: ScanPlan, options: EngineOptions, part: Part | None = None
    ) -> AsyncGenerator[list[Result], None]:
        """One group's port scan (or its ``part``: a --shard's positions and the hosts
        up), in this process or split over worker processes."""
        config, report = self.config, self.report
        processes = self._processes_for(plan.size if part is None else len(part.shard))
        if processes == 1:
            probes = None
            if part is not None:
                probes = (
                    p for p in plan.probes(part.shard, skip=config.done) if p.host in part.hosts
                )
            async for batch in self._in_process_batches(plan, options, probes):
                yield batch
            return
        pieces = (
            plan.pieces(processes)
            if part is None
            else plan.pieces(processes, part.shard, part.hosts)
        )
        log.debug("group of %d probes over %d worker processes", plan.size, len(pieces))
        if len(pieces) != processes:  # fewer hosts than processes: each gets a larger share
            options = self._shared(options, len(pieces))
        closed_as: ClosedAs = (
            "results" if config.keep_closed else "ports" if config.record_closed else "count"
        )
        async for closed, closed_tries, results, closed_ports in run_sharded(
            pieces, self.engine.name, options, closed_as=closed_as, skip=config.done,
        ):  # fmt: skip
            self._closed.extend(closed_ports)
            report.count_closed(closed)
            report.probes_sent += closed_tries
            for result in results:
                report.add(result)
                report.probes_sent += result.tries
            yield results  # even empty: closed ones were counted

    async def group_batches(
        self, group: HostGroup, following: HostGroup | None = None
    ) -> AsyncGenerator[list[Result], None]:
        """One host group: discovery (unless -Pn), then its port scan (unless -sn) and
        -sV; only the part ``config.shard`` of it where one is set (a Dask unit runs this).
        ``following``, the next group, is pinged during this group's port scan."""
        if self.config.shard is not None:
            async for batch in self._part_batches(group, self.config.shard):
                yield batch
            return
        if self.config.discovery or self.config.ping_only:
            plan, options = await self._discover(group)
            if not self.config.ping_only:
                self._ping_ahead(following)
        else:
            plan = ScanPlan.create(
                group, self.ports, self.plan.key, randomized=self.config.randomize
            )
            options = self._options_for(plan.size)
        if not self.config.ping_only:
            async for batch in self._group_batches(plan, options):
                yield batch

    async def batches(self) -> AsyncGenerator[list[Result], None]:
        """Run the scan, yielding results in batches as they arrive; fills ``report``.

        A batch may be empty: in-process scans yield every 50 ms, found or not, so that a
        caller can refresh its progress and commit its history on time.
        """
        report = self.report
        report.hosts_total = self.targets.size
        log.debug(
            "scan: engine %s, %d probes (%d hosts x %d ports), %d process(es), %d in flight"
            " at most, groups of %d hosts, timing %s",
            self.engine.name, self.plan.size, self.targets.size, len(self.ports),
            self.processes, self.options.max_in_flight, self.config.hostgroup, self.policy,
        )  # fmt: skip
        groups = host_groups(self.targets, self.config.hostgroup)
        group = next(groups, None)
        try:
            while group is not None:
                following = next(groups, None)
                async for batch in self.group_batches(group, following):
                    yield batch
                if self.on_group_done is not None:
                    self.on_group_done(group)
                group = following
        except (asyncio.CancelledError, KeyboardInterrupt):
            report.interrupted = True
            self._unflushed.extend(self._held.values())  # -sV unfinished: kept, unnamed
            self._held.clear()
            raise
        finally:
            ahead, self._ahead = self._ahead, None
            await _cancelled(ahead[1] if ahead is not None else None)
            report.finished = time.time()

    async def _group_batches(
        self, plan: ScanPlan, options: EngineOptions, part: Part | None = None
    ) -> AsyncGenerator[list[Result], None]:
        """One group's port scan (``part`` of ``plan``: a --shard part) and (-sV) its
        open ports' services, each port detected as soon as the scan finds it open, while
        the scan goes on: open results are held until named, so that the group's outputs
        carry them when it is done."""
        if self.detection is None:
            async for batch in self._plan_batches(plan, options, part):
                yield batch
            return
        held = self._held
        detection = self.detection.follow(held, self.report)
        try:
            async for batch in self._plan_batches(plan, options, part):
                for r in batch:
                    if r.state is State.OPEN:
                        held[(r.host, r.port)] = r
                        detection.add(r.host, r.port)  # detected while the scan goes on
                yield [r for r in batch if r.state is not State.OPEN] + detection.ready()
            async for found in detection.rest():
                yield found
        finally:
            await detection.aclose()


async def _cancelled(task: asyncio.Task[Discovered] | None) -> None:
    """Cancel ``task`` (pings ahead no longer wanted) and wait until it has closed its
    sockets; what it raised no longer matters."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def _check_shard(config: ScanConfig) -> None:
    """OptionError unless ``config.shard`` is a part ``i`` of ``n`` (1-based) whose walk
    order every part agrees on: a key given, or no shuffle."""
    if config.shard is None:
        return
    i, n = config.shard
    if not 1 <= i <= n:
        raise OptionError(f"--shard {i}/{n}: want I/N with 1 <= I <= N")
    if config.key is None and config.randomize:
        raise OptionError(
            f"--shard {i}/{n} needs --seed (the same on every part) or -r: with another"
            " key each part walks another order, and the parts overlap"
        )


def part_of(
    group: HostGroup, ports: Sequence[int], key: int, shard: tuple[int, int], randomize: bool
) -> tuple[ScanPlan, Shard]:
    """The plan of part ``shard`` (``(i, n)``, 1-based) of ``group`` and the positions of
    it to scan: the n parts of a group are disjoint and cover its probes.

    A group of n targets or more is split by host: part i scans every n-th target from
    the i-th, all its ports, so that each host meets one scanner (each learns the host's
    RST rate limit from its own drops: 4 parts by position made 102-300 closed ports
    filtered on lab (b)), and each part pings only its own hosts. A smaller group is
    split by position in its keyed permutation (its hosts' ports shared out).
    """
    i, n = shard
    if group.size >= n:
        hosts = HostList(group[j] for j in range(i - 1, group.size, n))
        plan = ScanPlan.create(hosts, ports, key, randomized=randomize)
        (whole,) = plan.shards(1)  # the whole cycle (longer than the plan when shuffled)
        return plan, whole
    plan = ScanPlan.create(group, ports, key, randomized=randomize)
    return plan, plan.shards(n)[i - 1]


def _service_detection(config: ScanConfig) -> ServiceStage | None:
    if not config.service_detection:
        return None
    if not 0 <= config.version_intensity <= 9:
        raise OptionError(f"version intensity must be 0-9, got {config.version_intensity}")
    from portscout.engines.service_stage import ServiceStage  # ssl, matcher: only for -sV

    return ServiceStage.create(config.service_probes, intensity=config.version_intensity)


__all__ = ["Scan", "ScanConfig"]
