"""A scan's shards on Dask distributed: ``--dask ADDRESS``, ``--dask local:N``,
``scan(..., executor=client)``.

The unit of work is one part of one host group, ``Unit(start, stop, i, n)``: targets
``[start, stop)`` of the target set and the i-th of n parts of their probes (``--shard``'s
``part_of``, the same keyed permutation every worker derives from the key). What crosses
the network is a few integers and the scan's options (``Job``) in, the unit's results out.

On the worker, ``run_unit`` is a plain function: Dask runs it in a worker thread, and it
runs the scan's own event loop there (``asyncio.Runner``), never on Dask's loop.

The client keeps at most two units per worker thread running or queued, learns of units
finished as they finish (``as_completed``), fetches their results in group order (a unit
finished ahead of its turn leaves them on its worker until its group is next), and calls
``Scan.on_group_done`` once every part of a group is in, so outputs stay in address order
and the client holds the results of one group's units, never the scan's (a Ctrl-C loses
the units finished ahead of their turn: a resume runs them again). Delivery is
at-least-once: a worker that dies mid-unit has its unit run again by Dask (nothing of a
unit arrives before it ends), and a unit that runs far longer than its peers (a
straggler) is submitted a second time, the first copy to finish winning. Results are
de-duplicated by unit: a unit's results are taken once, whichever copy brings them, and
units are disjoint in (host, port), so no port is counted twice (a set of every port
seen would grow with the scan).

Rates: each of the cluster's worker threads gets ``1/threads`` of ``--max-rate`` and of
the parallelism (``per_process``), so the whole scan keeps the rate asked for. Per-host
timing stays per unit: every unit of a group touches every host of it (the permutation
spreads a host's ports over all parts), so an RST-rate-limited host meets n scanners, each
learning its limit on its own (see docs/benchmarks.md).

Dask is optional (``pip install 'portscout[dask]'``): imported only when a scan uses it.
Imports scanner, plan, engines and core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from array import array
from collections.abc import Callable, Collection, Generator, Hashable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from portscout.api import PortsArg, _config
from portscout.api import scan as local_scan
from portscout.errors import Interrupted, OptionError, ScanError, TargetError, UsageError
from portscout.plan import HostGroup, Probe, host_groups
from portscout.results import ClosedPorts, IPAddress, Protocol, Reason, Report, Result, State
from portscout.running import deferred_signals, loop_factory
from portscout.scanner import Scan, ScanConfig, part_of, per_process

if TYPE_CHECKING:
    from distributed import Client, Future

log = logging.getLogger(__name__)

INSTALL_HINT = "--dask needs Dask: pip install 'portscout[dask]'"
TICK_SECONDS = 0.05  # how often the client looks for finished units (progress, Ctrl-C)
# A unit is a straggler past STRAGGLER_FACTOR times the median time of those finished
# (at least STRAGGLER_MIN_SECONDS, after STRAGGLER_SAMPLES units): it is submitted again.
STRAGGLER_FACTOR = 4.0
STRAGGLER_MIN_SECONDS = 10.0
STRAGGLER_SAMPLES = 3
CONNECT_SECONDS = 10  # to reach a running scheduler (--dask ADDRESS)
UNITS_PER_THREAD = 4  # units of a large scan per worker thread (see unit_shape)


@dataclass(frozen=True, slots=True)
class Unit:
    """Targets ``[start, stop)`` (one host group) and its part ``index`` of ``count``."""

    start: int
    stop: int
    index: int
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """What every unit of one scan shares: the options a worker rebuilds the scan from."""

    config: ScanConfig  # with the key drawn, the engine resolved, each worker's timing
    # Host names as the client resolved them: a worker resolving them again could get
    # other addresses, another target set, and parts that no longer fit together.
    names: dict[str, tuple[IPAddress, ...]] = field(default_factory=dict)

    def resolve(self, name: str) -> list[IPAddress]:
        """The worker's resolver: the client's answer, never the worker's own DNS."""
        if name not in self.names:
            raise TargetError(f"'{name}' was not resolved by the client")
        return list(self.names[name])


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitResult:
    """A unit's outcome: results (closed ports compactly, an array of port numbers per
    host and reason: most of a scan, 2 bytes each), discovery's findings, probes sent."""

    unit: Unit
    results: list[Result]
    closed: list[ClosedPorts]
    hosts_up: dict[IPAddress, Reason]
    latency: dict[IPAddress, float]
    probes_sent: int
    probes_planned: int
    seconds: float


def run_unit(job: Job, unit: Unit) -> UnitResult:
    """Scan one unit in this worker thread, on an event loop of its own."""
    started = time.monotonic()
    config = replace(job.config, shard=(unit.index, unit.count))
    scan = Scan(config, resolver=job.resolve)
    results: list[Result] = []

    async def collect() -> None:
        for group in unit_groups(scan, unit):
            async for batch in scan.group_batches(group):
                results.extend(batch)

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(collect())
    report = scan.report
    closed: dict[tuple[IPAddress, Reason, Protocol], array[int]] = {}
    for r in results:
        if r.state is State.CLOSED:
            closed.setdefault((r.host, r.reason, r.protocol), array("H")).append(r.port)
    return UnitResult(
        unit=unit,
        results=[r for r in results if r.state is not State.CLOSED],
        closed=[
            ClosedPorts(h, reason, ports, proto) for (h, reason, proto), ports in closed.items()
        ],
        hosts_up=dict(report.hosts_up or {}),
        latency=dict(report.latency),
        probes_sent=report.probes_sent,
        probes_planned=report.probes_planned,
        seconds=time.monotonic() - started,
    )


@contextlib.contextmanager
def connect(address: str) -> Iterator[Client]:
    """A client of the scheduler at ``address``, or of a scheduler and N worker processes
    started here for ``local:N`` (``dask_local``); closed (the cluster too) on exit.
    UsageError (exit 2) without Dask or for a bad ``local:N``."""
    try:
        from distributed import Client
    except ImportError as exc:
        raise UsageError(INSTALL_HINT) from exc
    if not address.startswith("local:"):
        try:
            client = Client(address, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError) as exc:
            raise ScanError(f"cannot reach the Dask scheduler at '{address}': {exc}") from exc
        with client:
            yield client
        return
    count = address.removeprefix("local:")
    if not count.isdigit() or int(count) < 1:
        raise OptionError(f"invalid --dask '{address}': want ADDRESS or local:N, N >= 1")
    from portscout.dask_local import local_cluster

    with local_cluster(int(count), 1) as client:
        yield client


def resolved_names(scan: Scan) -> dict[str, tuple[IPAddress, ...]]:
    """Each host name of the targets with the addresses the client resolved it to."""
    names: dict[str, list[IPAddress]] = {}
    for address, name in scan.targets.hostnames.items():
        names.setdefault(name, []).append(address)
    return {name: tuple(addresses) for name, addresses in names.items()}


def unit_groups(scan: Scan, unit: Unit) -> Iterator[HostGroup]:
    """The host groups (``config.hostgroup`` hosts) of a unit's targets, in order."""
    size = scan.config.hostgroup
    for start in range(unit.start, unit.stop, size):
        yield HostGroup(scan.targets, start, min(start + size, unit.stop))


def unit_shape(scan: Scan, threads: int) -> tuple[int, int]:
    """(host groups a unit spans, parts each span is split into).

    Each unit costs Dask about 10 ms of the client's CPU (submitting, the scheduler, the
    result's transfer; docs/benchmarks.md), so a scan has about ``UNITS_PER_THREAD``
    units a worker thread, no more: a /24 on 8 threads is 8 parts of its one group, a /8
    on 64 threads 256 units of 16 groups. Fewer would leave threads idle at the end.
    """
    groups = -(-scan.targets.size // scan.config.hostgroup)
    wanted = threads * UNITS_PER_THREAD
    if groups >= wanted:
        return groups // wanted, 1
    return 1, max(1, -(-threads // groups))


def worker_threads(client: Client) -> int:
    """Units the cluster runs at once (each worker's threads); waits for one worker."""
    client.wait_for_workers(1)
    workers = client.scheduler_info()["workers"].values()
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers))


class DaskRun:
    """One scan's units on a cluster: ``batches()`` is ``drive(scan)`` for Dask."""

    def __init__(
        self,
        scan: Scan,
        client: Client,
        *,
        parts: int | None = None,
        task: Callable[[Job, Unit], UnitResult] = run_unit,
        finished: Collection[Unit] = (),
    ) -> None:
        self.scan = scan
        self.client = client
        self.task = task  # run_unit; a benchmark's simulation
        self.threads = worker_threads(client)
        self.span, self.parts = unit_shape(scan, self.threads)
        self.parts = parts or self.parts
        # Units an earlier run finished (the history's): not run again. The run takes
        # their shape, whatever the cluster now has, so that its units are the same.
        self.finished = frozenset(finished)
        if self.finished:
            self.parts = next(iter(self.finished)).count
            widest = max(u.stop - u.start for u in self.finished)
            self.span = max(1, -(-widest // scan.config.hostgroup))
        # Told of each unit whose results were just handed out (the history records it).
        self.on_unit_done: Callable[[Unit], None] | None = None
        config = scan.config
        policy = per_process(scan.policy, self.threads)
        self.job = Job(
            config=replace(
                config, key=scan.plan.key, engine=scan.engine.name, timing=policy,
                timeout=None, max_retries=None, max_in_flight=None, rate=None,
                processes=1, keep_closed=True, record_closed=False, done=frozenset(),
            ),
            names=resolved_names(scan),
        )  # fmt: skip
        self.submitted = 0  # units submitted (re-submissions included)
        self.resubmitted = 0  # stragglers submitted again
        self.skipped = 0  # units with nothing left to scan (a resumed scan)
        self.durations: list[float] = []  # worker seconds of each unit in
        self.latencies: list[float] = []  # client seconds from submit to result, each unit
        self.covered = 0  # probes (of every target) in the units finished
        self.planned_in = 0  # probes those units planned (hosts up)
        self._arrived: list[Future[UnitResult]] = []  # finished, results not fetched yet

    def units(self) -> Iterator[tuple[HostGroup, list[Unit]]]:
        """Each span of host groups with its units, those with probes left only."""
        scan = self.scan
        for span in host_groups(scan.targets, scan.config.hostgroup * self.span):
            units = [Unit(span.start, span.stop, i, self.parts) for i in range(1, self.parts + 1)]
            yield span, [u for u in units if self._left(u)]

    def _probes(self, unit: Unit) -> Iterator[Probe]:
        """Every probe of ``unit``: its part of each host group it spans."""
        scan, shard = self.scan, (unit.index, unit.count)
        for group in unit_groups(scan, unit):
            plan, part = part_of(group, scan.ports, scan.plan.key, shard, scan.config.randomize)
            yield from plan.probes(part)

    def _left(self, unit: Unit) -> bool:
        """Whether ``unit`` has a probe not answered in an earlier run (``config.done``).

        Probes of hosts found down were never answered: their units run again, unless
        the history recorded the unit done (``finished``)."""
        if unit in self.finished:
            self.skipped += 1
            return False
        done = self.scan.config.done
        if not done or any(probe not in done for probe in self._probes(unit)):
            return True
        self.skipped += 1
        return False

    def _job_for(self, unit: Unit) -> Job:
        """The job with the probes of ``unit`` answered before (a resumed scan)."""
        done = self.scan.config.done
        if not done:
            return self.job
        answered = frozenset(p for p in self._probes(unit) if p in done)
        return replace(self.job, config=replace(self.job.config, done=answered))

    def batches(self) -> Generator[list[Result], None, None]:
        """Run every unit; yield results as units finish (an empty batch every tick)."""
        from distributed import as_completed

        report = self.scan.report
        report.hosts_total = self.scan.targets.size
        if self.scan.config.discovery or self.scan.config.ping_only:
            report.hosts_up = report.hosts_up or {}
        pending = _Pending(self.scan, self.threads * 2)
        finished = as_completed()
        groups = self.units()
        # A stop signal (Ctrl-C, SIGTERM, SIGHUP) is noted and acted on at the next tick,
        # here in the client's loop, never inside Dask's calls.
        with deferred_signals() as stopped:
            yield from self._run(pending, finished, groups, stopped)

    def _run(
        self, pending: _Pending, finished: Any, groups: Iterator[tuple[HostGroup, list[Unit]]],
        stopped: list[int],
    ) -> Generator[list[Result], None, None]:  # fmt: skip
        report = self.scan.report
        try:
            while True:
                if stopped:
                    raise Interrupted(stopped[0])
                for future in pending.fill(groups, self._submit):
                    finished.add(future)
                if pending.empty():
                    return
                ready = finished.next_batch(block=False)
                for future in ready:
                    pending.arrive(future)
                    self._arrived.append(future)
                taken = False
                for batch in self._take_in_order(pending):
                    taken = True
                    yield batch
                if not taken:
                    self._restart_stragglers(pending, finished)
                    time.sleep(TICK_SECONDS)
                    yield []
        except (KeyboardInterrupt, asyncio.CancelledError):
            report.interrupted = True
            raise
        finally:
            pending.cancel_all(self.client)
            report.finished = time.time()

    def _take_in_order(self, pending: _Pending) -> Generator[list[Result], None, None]:
        """The results of the units finished of the first group not yet written, then
        (that group written) of the next, and so on.

        A unit finished ahead of its turn leaves its results on its worker until then:
        fetched early they would wait in the client's outputs for the groups before them
        (with 2 units a worker thread in flight, a quarter of a /8's hosts up: 100 MB),
        where now the client holds the units of one group at a time."""
        while True:
            head = pending.head()
            take = [f for f in self._arrived if pending.start_of(f) in (None, head)]
            if not take:
                return
            keys = {f.key for f in take}
            self._arrived = [f for f in self._arrived if f.key not in keys]
            for future in take:
                yield self._take(future, pending)
            pending.flush()  # after the outputs have the group's last results

    def _submit(self, group: HostGroup, unit: Unit) -> Future[UnitResult]:
        self.submitted += 1
        log.debug("unit %d-%d part %d/%d submitted", unit.start, unit.stop, unit.index,
                  unit.count)  # fmt: skip
        return self.client.submit(self.task, self._job_for(unit), unit, pure=False)

    def _take(self, future: Future[UnitResult], pending: _Pending) -> list[Result]:
        """A finished unit's results into the report (once per unit, each port once)."""
        entry = pending.finish(future, self.client)
        if entry is None:
            return []  # a second copy of a unit already in, or cancelled
        try:
            outcome: UnitResult = future.result()
        except Exception as exc:  # any worker error ends the scan, named
            raise ScanError(f"a shard failed on the cluster: {exc!r}") from exc
        self.durations.append(outcome.seconds)
        self.latencies.append(time.monotonic() - entry.since)
        report = self.scan.report
        if report.hosts_up is not None:
            report.hosts_up.update(outcome.hosts_up)
        report.latency.update(outcome.latency)
        report.probes_sent += outcome.probes_sent
        results = outcome.results
        for result in results:
            report.add(result)
        if self.scan.config.keep_closed:  # the iterator APIs: a Result each
            results = results + [
                Result(host=g.host, port=p, state=State.CLOSED, reason=g.reason,
                       protocol=g.protocol)
                for g in outcome.closed for p in g.ports
            ]  # fmt: skip
            for result in results[len(outcome.results) :]:
                report.add(result)
        else:
            for group in outcome.closed:
                report.count_closed(len(group.ports))
            self.scan.defer_closed(outcome.closed)
        self._estimate(entry.unit, outcome.probes_planned)
        pending.unit_done(entry)
        if self.on_unit_done is not None:
            self.on_unit_done(entry.unit)
        return results

    def _estimate(self, unit: Unit, planned: int) -> None:
        """The progress total: probes of the units in, and the rest of the scan at the
        share of its probes those units planned (discovery finds some hosts down)."""
        total = self.scan.plan.size
        self.covered += min(total, (unit.stop - unit.start) * len(self.scan.ports) // unit.count)
        self.planned_in += planned
        rest = max(0, total - self.covered)
        share = self.planned_in / self.covered if self.covered else 1.0
        self.scan.report.probes_planned = self.planned_in + round(rest * share)

    def _restart_stragglers(self, pending: _Pending, finished: Any) -> None:
        if len(self.durations) < STRAGGLER_SAMPLES:
            return
        limit = max(STRAGGLER_FACTOR * statistics.median(self.durations), STRAGGLER_MIN_SECONDS)
        for group, unit in pending.overdue(limit):
            log.debug("unit %s runs past %.1f s: submitted again", unit, limit)
            self.resubmitted += 1
            finished.add(pending.again(unit, self._submit(group, unit)))


@dataclass(slots=True)
class _Entry:
    group: HostGroup
    unit: Unit
    since: float
    futures: list[Future[UnitResult]]
    arrived: bool = False  # a copy finished (its results may wait on the worker)


class _Pending:
    """Units submitted and not in yet, and the groups they belong to, in order."""

    def __init__(self, scan: Scan, window: int) -> None:
        self.scan = scan
        self.window = window
        self.by_future: dict[Hashable, _Entry] = {}
        self.open = 0  # units submitted, not finished yet
        self.groups: list[tuple[HostGroup, int]] = []  # (group, units not in), in order
        self.exhausted = False
        self.entries: list[_Entry] = []

    def fill(
        self,
        groups: Iterator[tuple[HostGroup, list[Unit]]],
        submit: Callable[[HostGroup, Unit], Future[UnitResult]],
    ) -> list[Future[UnitResult]]:
        """Submit units until ``window`` are out (whole groups at a time)."""
        out: list[Future[UnitResult]] = []
        while not self.exhausted and self.open < self.window:
            item = next(groups, None)
            if item is None:
                self.exhausted = True
                break
            group, units = item
            self.groups.append((group, len(units)))
            for unit in units:
                future = submit(group, unit)
                entry = _Entry(group, unit, time.monotonic(), [future])
                self.by_future[future.key] = entry
                self.entries.append(entry)
                self.open += 1
                out.append(future)
            self.flush()  # a group with no unit left to run (a resumed scan)
        return out

    def empty(self) -> bool:
        return self.exhausted and self.open == 0 and not self.groups

    def finish(self, future: Future[UnitResult], client: Client) -> _Entry | None:
        """The entry of a finished future, its other copies cancelled; None if its unit
        is already in."""
        entry = self.by_future.pop(future.key, None)
        if entry is None:
            return None
        for other in entry.futures:
            if other.key != future.key:
                self.by_future.pop(other.key, None)
                client.cancel(other)
        return entry

    def arrive(self, future: Future[UnitResult]) -> None:
        """A copy of a unit finished: room for another unit in the window."""
        entry = self.by_future.get(future.key)
        if entry is not None and not entry.arrived:
            entry.arrived = True
            self.open -= 1

    def head(self) -> int | None:
        """Where the first group not yet written starts (None: none is left)."""
        return self.groups[0][0].start if self.groups else None

    def start_of(self, future: Future[UnitResult]) -> int | None:
        """Where the group of ``future``'s unit starts; None for a copy already in."""
        entry = self.by_future.get(future.key)
        return None if entry is None else entry.group.start

    def unit_done(self, entry: _Entry) -> None:
        if not entry.arrived:
            entry.arrived = True
            self.open -= 1
        self.entries.remove(entry)
        for i, (group, left) in enumerate(self.groups):
            if group.start == entry.group.start:
                self.groups[i] = (group, left - 1)

    def flush(self) -> None:
        """Tell the scan which groups are done, in order (outputs write their hosts)."""
        while self.groups and self.groups[0][1] == 0:
            group, _ = self.groups.pop(0)
            if self.scan.on_group_done is not None:
                self.scan.on_group_done(group)

    def overdue(self, limit: float) -> list[tuple[HostGroup, Unit]]:
        now = time.monotonic()
        return [
            (e.group, e.unit)
            for e in self.entries
            if len(e.futures) == 1 and not e.arrived and now - e.since > limit
        ]

    def again(self, unit: Unit, future: Future[UnitResult]) -> Future[UnitResult]:
        entry = next(e for e in self.entries if e.unit == unit)
        entry.futures.append(future)
        self.by_future[future.key] = entry
        return future

    def cancel_all(self, client: Client) -> None:
        futures = [f for e in self.entries for f in e.futures]
        if futures:
            with contextlib.suppress(Exception):
                client.cancel(futures)


def scan(
    targets: str | Iterable[str],
    ports: PortsArg = None,
    *,
    executor: Client | None = None,
    **options: object,
) -> Report:
    """``portscout.scan``; with ``executor`` (a ``distributed.Client``) the scan's shards
    run on that Dask cluster (see ``portscout.distributed``)."""
    if executor is None:
        return local_scan(targets, ports, **options)
    job = Scan(_config(targets, ports, {"keep_closed": False, **options}))
    for _ in DaskRun(job, executor).batches():
        pass
    return job.report


scan.__doc__ = (local_scan.__doc__ or "").rstrip() + (
    "\n    - ``executor`` (``distributed.Client``): run the scan's shards on that Dask"
    " cluster\n      (``--dask``); needs ``pip install 'portscout[dask]'``.\n"
)
__all__ = ["DaskRun", "Job", "Unit", "connect", "run_unit", "scan"]
