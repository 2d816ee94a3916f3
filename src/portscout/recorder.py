"""The incremental record of a running scan: results buffered, committed every second.

The history is a record, not the scan: while another process holds the write lock the
batch waits for the next commit; any other failure is logged once and recording stops,
``failure`` saying why (the command exits 1 once its outputs are complete). Imports the
core and ``store``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from portscout.errors import StoreBusyError, StoreError
from portscout.results import ClosedPorts, Result
from portscout.store import BUSY_SECONDS, ScanStatus, Store, UnitRow

log = logging.getLogger(__name__)

COMMIT_SECONDS = 1.0  # the most a crash may lose, while results keep arriving
COMMIT_ROWS = 20_000  # or this many buffered rows, whichever comes first
SCAN_BUSY_SECONDS = 0.05  # ... and one while the scan runs: it retries at the next


class Recorder:
    """Buffers a running scan's results and commits them every ``interval`` seconds.

    Call ``add`` with each batch, empty ones included (they are the clock tick), and
    ``close`` at the end; ``clock`` is monotonic seconds. The history never stops the
    scan: while another process holds the write lock the batch waits for the next
    commit; any other failure is logged once, recording stops, and ``failure`` says why
    (the command then exits 1 once its outputs are complete).
    """

    def __init__(
        self,
        store: Store,
        scan_id: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = COMMIT_SECONDS,
        max_rows: int = COMMIT_ROWS,
    ) -> None:
        self.store = store
        self.scan_id = scan_id
        self.failure: str | None = None
        self._clock = clock
        self._interval = interval
        self._max_rows = max_rows
        self._buffer: list[Result] = []
        self._closed: list[ClosedPorts] = []
        self._closed_count = 0
        self._units: list[UnitRow] = []
        self._sent = 0
        self._committed = clock()

    def add_unit(self, unit: UnitRow) -> None:
        """A Dask unit is done: recorded with the next commit, which also holds its
        results (give them to ``add`` next): a unit is recorded done only with them."""
        if self.failure is None:
            self._units.append(unit)

    def add(
        self, results: Iterable[Result], sent: int = 0, closed_ports: Iterable[ClosedPorts] = ()
    ) -> None:
        """Buffer results, closed ports (and the count of probes ``sent`` for them);
        commit when due."""
        if self.failure is not None:
            return
        self._buffer.extend(results)
        for group in closed_ports:
            self._closed.append(group)
            self._closed_count += len(group.ports)
        self._sent += sent
        due = self._clock() - self._committed >= self._interval
        buffered = len(self._buffer) + self._closed_count
        if buffered >= self._max_rows or (due and (buffered or self._sent or self._units)):
            self.flush(wait=buffered >= 50 * self._max_rows)  # a lock held too long: wait

    def flush(self, *, wait: bool = True) -> None:
        """Commit what is buffered; without ``wait``, a locked database keeps it for later."""
        if self.failure is not None:
            return
        if self._buffer or self._closed or self._sent or self._units:
            try:
                self.store.wait_for_lock(BUSY_SECONDS if wait else SCAN_BUSY_SECONDS)
                self.store.insert(self.scan_id, self._buffer, self._sent, self._closed, self._units)
            except StoreBusyError as exc:
                if wait:
                    self._fail(exc)
                log.debug("%s: keeping %d results for the next commit", exc, len(self._buffer))
                self._committed = self._clock()
                return
            except StoreError as exc:
                self._fail(exc)
                return
        self._buffer, self._closed, self._closed_count, self._sent = [], [], 0, 0
        self._units = []
        self._committed = self._clock()

    def _fail(self, exc: StoreError) -> None:
        self.failure = str(exc)
        self._buffer, self._closed, self._closed_count, self._sent = [], [], 0, 0
        self._units = []
        log.warning("%s; the scan goes on without recording", exc)

    def close(self, status: ScanStatus, finished: float) -> None:
        """Commit the rest and the scan's end; a failure is kept in ``failure``."""
        self.flush()
        if self.failure is not None:
            return
        try:
            self.store.wait_for_lock(BUSY_SECONDS)
            self.store.end(self.scan_id, status, finished)
        except StoreError as exc:
            self._fail(exc)
