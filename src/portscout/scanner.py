"""scan(), iscan() and ascan(): parse the request, plan it, run an engine, keep a report.

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
import signal
import socket
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import ip_address

from portscout._version import __version__
from portscout.engines import create_engine
from portscout.engines.base import EngineOptions
from portscout.engines.processes import ClosedAs, run_sharded
from portscout.engines.rawsock import raw_sockets_allowed
from portscout.errors import OptionError, TargetError
from portscout.plan import HostList, Probe, ScanPlan
from portscout.ports import parse_ports, top_ports
from portscout.results import ClosedPorts, IPAddress, Report, Result, ScanMeta
from portscout.targets import Resolver, parse_targets
from portscout.timing import TimingPolicy

log = logging.getLogger(__name__)

DEFAULT_TOP_PORTS = 1000
SEED_TIMEOUT = 1.0  # the threads study's timeout, for the blocking engines
SEED_RETRIES = 1
FD_RESERVE = 64  # descriptors kept free for the interpreter, output files, the database
# Below this many probes a second process costs more (fork, pipe, start-up) than it saves.
PROCESS_THRESHOLD = 8192
BATCH_SIZE = 256
BATCH_SECONDS = 0.05
BLOCKING_ENGINES = frozenset({"sequential", "thread-per-port", "threadpool"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanConfig:
    """Everything a scan is asked to do; validated by ``Scan``, not here."""

    targets: Sequence[str]
    ports: str | Sequence[int] | None = None  # None: the top ``top_ports`` ports
    top_ports: int | None = None
    excludes: Sequence[str] = ()
    engine: str = "auto"
    # Adaptive engines (async, syn) follow ``timing`` (default: nmap's -T3); ``timeout``
    # caps their probe timeout and is the fixed timeout of the blocking seed engines;
    # ``max_retries`` caps retransmissions (the seed engines make at most that many).
    timing: TimingPolicy | None = None
    timeout: float | None = None
    max_retries: int | None = None
    max_in_flight: int | None = None  # None: as many as the descriptor budget allows
    workers: int = 50
    rate: float | None = None  # syn engine: packets per second in total
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
    """The scan's timing: ``config.timing`` (or -T3) with ``timeout``, ``max_retries`` and
    ``rate`` applied on top. Raises OptionError for contradictions."""
    base = config.timing or TimingPolicy()
    changes: dict[str, float | int | None] = {}
    if config.timeout is not None:
        changes["initial_rtt_timeout"] = min(base.initial_rtt_timeout, config.timeout)
        changes["max_rtt_timeout"] = config.timeout
        changes["min_rtt_timeout"] = min(base.min_rtt_timeout, config.timeout)
    if config.max_retries is not None:
        changes["max_retries"] = config.max_retries
    if config.rate is not None:
        changes["max_rate"] = config.rate
    return base.override(**changes) if changes else base


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


class Scan:
    """One scan: its plan, its engine settings and the report it fills while it runs."""

    def __init__(self, config: ScanConfig, *, resolver: Resolver = system_resolver) -> None:
        if config.timeout is not None and config.timeout <= 0:
            raise OptionError(f"timeout must be positive, got {config.timeout}")
        if config.max_retries is not None and config.max_retries < 0:
            raise OptionError(f"max retries must be 0 or more, got {config.max_retries}")
        self.policy = timing_policy(config)
        self.config = config
        self.engine = create_engine(config.engine)
        self.targets = parse_targets(config.targets, excludes=config.excludes, resolver=resolver)
        self.ports = _parse_port_request(config)
        key = config.key if config.key is not None else secrets.randbits(64)
        self.plan = ScanPlan.create(self.targets, self.ports, key, randomized=config.randomize)
        self.processes = self._choose_processes()
        self._unflushed: list[Result] = []
        self._closed: list[ClosedPorts] = []
        fd_budget = (raise_fd_limit() - FD_RESERVE) // self.processes
        wanted = config.max_in_flight or fd_budget
        if wanted < 1:
            raise OptionError(f"max in flight must be positive, got {wanted}")
        share = per_process(self.policy, self.processes)
        self.options = EngineOptions(
            max_in_flight=max(1, min(wanted, fd_budget)),
            timeout=SEED_TIMEOUT if config.timeout is None else config.timeout,
            max_retries=SEED_RETRIES if config.max_retries is None else config.max_retries,
            workers=config.workers,
            rate=share.max_rate,
            timing=share,
        )
        self.report = Report(
            engine=self.engine.name,
            key=key,
            started=time.time(),
            probes_planned=self.plan.size - len(config.done),
        )
        self.meta = ScanMeta(
            args=config.args,
            scan_type="syn" if self.engine.name == "syn" else "connect",
            engine=self.engine.name,
            ports=self.ports,
            started=self.report.started,
            version=__version__,
            key=key,
            hostnames=dict(self.targets.hostnames),
        )

    async def _in_process_batches(self) -> AsyncGenerator[list[Result], None]:
        """Run the engine as a task; hand out what it found every 256 results or 50 ms.

        Batches keep the per-result cost of the blocking ``drive()`` low; the time limit
        keeps a slow scan's results (and Ctrl-C's) flowing to the writers promptly.
        """
        full = asyncio.Event()

        async def pump() -> None:
            async for result in self.engine.run(
                self.plan.probes(skip=self.config.done), self.options
            ):
                self.report.add(result)
                self.report.probes_sent += result.tries
                self._unflushed.append(result)
                if len(self._unflushed) >= BATCH_SIZE:
                    full.set()

        task = asyncio.create_task(pump())
        try:
            while not task.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(full.wait()), BATCH_SECONDS)
                full.clear()
                yield self.take_unflushed()  # even empty: a tick (progress, history commits)
            task.result()  # re-raise what the engine raised
            if self._unflushed:
                yield self.take_unflushed()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _discover(self) -> None:
        """Ping every target; re-plan the scan over the hosts that answered (same key)."""
        from portscout.engines.discovery import discover  # imports the connect engine

        hosts = [self.targets[i] for i in range(self.targets.size)]
        options = replace(self.options, timing=self.policy)
        found = await discover(hosts, options, icmp=raw_sockets_allowed())
        up = found.up
        self.report.hosts_up = up
        self.options = replace(self.options, rtt_hints=found.rtts)
        self.report.hosts_total = len(hosts)
        up_hosts = HostList(h for h in hosts if h in up)
        self.plan = ScanPlan.create(
            up_hosts, self.ports, self.plan.key, randomized=self.config.randomize
        )
        self.report.probes_planned = self.plan.size - len(self.config.done)

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

    def _choose_processes(self) -> int:
        requested = self.config.processes
        if requested is not None:
            if requested < 1:
                raise OptionError(f"processes must be 1 or more, got {requested}")
            return requested
        if self.engine.name in BLOCKING_ENGINES or self.plan.size < PROCESS_THRESHOLD:
            return 1
        return max(1, min(os.cpu_count() or 1, 8))

    async def batches(self) -> AsyncGenerator[list[Result], None]:
        """Run the scan, yielding results in batches as they arrive; fills ``report``.

        A batch may be empty: in-process scans yield every 50 ms, found or not, so that a
        caller can refresh its progress and commit its history on time.
        """
        report = self.report
        try:
            if self.config.discovery or self.config.ping_only:
                await self._discover()
            if self.config.ping_only:
                return
            if self.processes == 1:
                async for batch in self._in_process_batches():
                    yield batch
            else:
                shards = self.plan.shards(self.processes)
                config = self.config
                closed_as: ClosedAs = (
                    "results"
                    if config.keep_closed
                    else "ports"
                    if config.record_closed
                    else "count"
                )
                async for closed, closed_tries, results, closed_ports in run_sharded(
                    self.plan,
                    shards,
                    self.engine.name,
                    self.options,
                    closed_as=closed_as,
                    skip=self.config.done,
                ):
                    self._closed.extend(closed_ports)
                    report.count_closed(closed)
                    report.probes_sent += closed_tries
                    for result in results:
                        report.add(result)
                        report.probes_sent += result.tries
                    yield results  # even empty: closed ones were counted
        except (asyncio.CancelledError, KeyboardInterrupt):
            report.interrupted = True
            raise
        finally:
            report.finished = time.time()


def _config(
    targets: str | Iterable[str], ports: str | Sequence[int] | None, **kw: object
) -> ScanConfig:
    specs = [targets] if isinstance(targets, str) else list(targets)
    return ScanConfig(targets=specs, ports=ports, **kw)  # type: ignore[arg-type]


async def ascan(
    targets: str | Iterable[str], ports: str | Sequence[int] | None = None, **options: object
) -> AsyncIterator[Result]:
    """Scan and yield every result as it arrives (``async for r in ascan(...)``).

    ``options`` are the fields of ``ScanConfig`` (engine, timeout, max_retries, ...).
    """
    scan = Scan(_config(targets, ports, **options))
    async for batch in scan.batches():
        for result in batch:
            yield result


def iscan(
    targets: str | Iterable[str], ports: str | Sequence[int] | None = None, **options: object
) -> Iterator[Result]:
    """Blocking iterator over results as they arrive; runs its own event loop."""
    scan = Scan(_config(targets, ports, **options))
    for batch in drive(scan):
        yield from batch


def drive(scan: Scan) -> Iterator[list[Result]]:
    """Run ``scan`` on a private event loop, handing out each batch as it completes.

    Ctrl-C raises KeyboardInterrupt here, after the batch found so far is handed out.
    """
    runner = asyncio.Runner(loop_factory=loop_factory())
    with runner, _sigint_cancels(runner):
        batches = scan.batches()
        try:
            while True:
                try:
                    batch = runner.run(anext(batches))
                except StopAsyncIteration:
                    return
                except (KeyboardInterrupt, asyncio.CancelledError):
                    yield scan.take_unflushed()  # found before Ctrl-C: keep them
                    raise KeyboardInterrupt from None
                yield batch
        finally:
            runner.run(batches.aclose())


@contextlib.contextmanager
def _sigint_cancels(runner: asyncio.Runner) -> Iterator[None]:
    """Turn Ctrl-C into a cancellation of the scan's tasks, delivered by the loop.

    asyncio.Runner's own handler raises KeyboardInterrupt wherever the main thread happens
    to be, which can be inside uvloop's internals and leave the loop unusable ("this event
    loop is already running"); a cancellation arrives at an await, where cleanup works.
    Only in the main thread, and only over Python's default handler.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def cancel_all(loop: asyncio.AbstractEventLoop) -> None:
        for task in asyncio.all_tasks(loop):
            task.cancel()

    def on_sigint(signum: int, frame: object) -> None:
        loop = runner.get_loop()
        loop.call_soon_threadsafe(cancel_all, loop)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def scan(
    targets: str | Iterable[str], ports: str | Sequence[int] | None = None, **options: object
) -> Report:
    """Scan and return the report once every probe is answered or timed out."""
    job = Scan(_config(targets, ports, keep_closed=False, **options))
    for _ in drive(job):
        pass
    return job.report


def loop_factory() -> type[asyncio.AbstractEventLoop] | None:
    """uvloop's loop when installed (faster callbacks), else asyncio's default."""
    try:
        import uvloop  # optional: the "fast" extra
    except ImportError:
        return None
    return uvloop.Loop


__all__ = ["Scan", "ScanConfig", "ascan", "iscan", "scan"]
