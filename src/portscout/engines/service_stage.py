"""-sV as a stage of a scan: the probe database chosen once, and open ports detected while
the port scan goes on (``Detection``), each result handed out again with its ``Service``.

Owns ``ServiceStage`` and ``Detection``; the connections are ``engines/service.py``'s.
Imports core and ``engines.service`` only.

Concurrently with the port scan (issue 13: "run detection concurrently with the port
scan on large scans"): an open port found by the scanner is queued for detection at once
(``Detection.add``) and up to ``DetectOptions.concurrency`` ports are detected at a time,
each within its ``port_budget``, while the scan's own probes keep going; the scanner
collects the named results with each batch (``ready``) and the rest once its port scan
is over (``rest``). The queue holds (host, port) pairs only, and workers are started as
ports arrive, never more than ``concurrency``: a host answering on every port queues
65,535 small tuples, not 65,535 tasks.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping

from portscout.engines.service import DetectOptions, ServiceDetector
from portscout.ports import service_names
from portscout.results import IPAddress, Report, Result, Service, State
from portscout.services.builtin import SOURCE as BUILTIN
from portscout.services.builtin import builtin_database
from portscout.services.cache import cache_dir, prepare, record_failures
from portscout.services.match import Analyses
from portscout.services.probes import Match, ProbeDatabase, find_probe_file

log = logging.getLogger(__name__)


def _log_failures(failed: Callable[[], list[tuple[Match, str]]]) -> None:
    """With ``-d``: the patterns Python's ``re`` cannot compile (``failed`` compiles those
    not yet tried: only when asked)."""
    if log.isEnabledFor(logging.DEBUG):
        found = failed()
        log.debug("%d patterns do not compile with Python's re", len(found))
        for match, error in found:
            log.debug("line %d (%s): %s", match.line, match.service, error)


class ServiceStage:
    """-sV for a scan: the database chosen once; ``follow`` detects ports as a group's
    scan finds them, ``run`` a set found already. ``Report.services`` is filled."""

    def __init__(
        self, database: ProbeDatabase, options: DetectOptions, analyses: Analyses | None = None
    ) -> None:
        self.detector = ServiceDetector(database, options, analyses)
        self.database_source = database.source

    @property
    def sockets(self) -> int:
        """Descriptors detection may hold at once (the scanner keeps them free)."""
        options = self.detector.options
        return options.concurrency * options.parallel_probes

    @classmethod
    def create(
        cls, probes_path: str | None, *, intensity: int, environ: Mapping[str, str] = os.environ
    ) -> ServiceStage:
        """nmap's file (``probes_path``, ``$NMAPDIR``, system dirs), else the built-in set
        (also when ``probes_path`` is ``built-in``). A given file that is missing or
        malformed: ``ProbeFileError`` (a usage error). nmap's file comes prepared from the
        cache (``services.cache``) when it holds this very file."""
        path = None if probes_path == BUILTIN else find_probe_file(environ, probes_path)
        if path is None:
            database = builtin_database()
            log.info("service detection: signatures from %s", database.source)
            _log_failures(database.failed_patterns)
            return cls(database, DetectOptions(intensity=intensity))
        directory = cache_dir(environ)
        prepared = prepare(path, directory)
        log.info("service detection: signatures from %s", prepared.database.source)
        if log.isEnabledFor(logging.DEBUG) and not prepared.failures_known:
            prepared.failures()  # compiles every pattern: once per file, then cached
            prepared = record_failures(path, directory, prepared)
        _log_failures(prepared.failures)
        return cls(prepared.database, DetectOptions(intensity=intensity),
                   Analyses(prepared.first))  # fmt: skip

    def follow(self, held: dict[tuple[IPAddress, int], Result], report: Report) -> Detection:
        """A detection to feed with open ports as they are found (see ``Detection``)."""
        return Detection(self, held, report)

    async def run(
        self, held: dict[tuple[IPAddress, int], Result], report: Report
    ) -> AsyncIterator[list[Result]]:
        """Detect every held open port; yield each result with its service as it ends.
        A port nothing matched gets its table name (``method="table"``, confidence 3)."""
        detection = self.follow(held, report)
        try:
            for host, port in list(held):
                detection.add(host, port)
            async for batch in detection.rest():
                yield batch
        finally:
            await detection.aclose()


class Detection:
    """One host group's -sV, fed while its port scan runs.

    ``add`` queues an open port (its result is in ``held`` until named); ``ready`` takes
    the results named so far, without waiting; ``rest`` waits for the others once no more
    ports will come; ``aclose`` cancels what is left (results stay in ``held``) and
    gives ``report.results`` the services found.
    """

    def __init__(
        self, stage: ServiceStage, held: dict[tuple[IPAddress, int], Result], report: Report
    ) -> None:
        self._stage = stage
        self._held = held
        self._report = report
        self._names = service_names()
        self._queue: asyncio.Queue[tuple[IPAddress, int]] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._added: set[tuple[IPAddress, int]] = set()
        self._named: list[Result] = []
        self._waiting = 0  # ports added and not yet named
        self._changed = asyncio.Event()
        self._failure: Exception | None = None  # a worker's, raised by ready() and rest()

    def add(self, host: IPAddress, port: int) -> None:
        """Queue ``host:port`` (open, its result in ``held``) for detection now; a port
        added before is not detected again."""
        if (host, port) in self._added:
            return
        self._added.add((host, port))
        self._queue.put_nowait((host, port))
        self._waiting += 1
        limit = self._stage.detector.options.concurrency
        if len(self._workers) < limit and len(self._workers) < self._waiting:
            self._workers.append(asyncio.create_task(self._work()))

    def ready(self) -> list[Result]:
        """The results named since the last call (each with its service)."""
        if self._failure is not None:
            raise self._failure
        named, self._named = self._named, []
        return named

    async def rest(self) -> AsyncIterator[list[Result]]:
        """Every result still to be named, as each is: call when no more ports come."""
        while self._waiting or self._named:
            if not self._named and self._failure is None:
                self._changed.clear()
                await self._changed.wait()
            yield self.ready()

    async def aclose(self) -> None:
        """Stop the workers (detections not finished stay unnamed in ``held``) and give
        the report's results their services."""
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        services = self._report.services
        self._report.results = [
            r._replace(service=services[(r.host, r.port)])
            if r.state is State.OPEN and (r.host, r.port) in services
            else r
            for r in self._report.results
        ]

    async def _work(self) -> None:
        try:
            await self._detect_queued()
        except Exception as exc:
            self._failure = exc  # a bug, not a port's answer: the scan must not hang on it
            self._changed.set()
            raise

    async def _detect_queued(self) -> None:
        detector = self._stage.detector
        while True:
            host, port = await self._queue.get()
            found = await detector.detect(host, port)
            service = found or Service(
                name=self._names.get(port, "unknown"), method="table", confidence=3,
                database=self._stage.database_source,
            )  # fmt: skip
            self._report.services[(host, port)] = service
            self._named.append(self._held.pop((host, port))._replace(service=service))
            self._waiting -= 1
            self._changed.set()
