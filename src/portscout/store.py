"""The scan history: one SQLite database holding every scan, its results and what resumes it.

Owns opening and checking the database, writing scans and loading them back (``ScanMeta``,
``Report``, results, the probes already answered). The SQL of the schema and its migration
is ``store_schema``'s, its files' ``store_files``', the running scan's ``Recorder`` is in
``recorder``. Imports the core, ``store_schema`` and ``store_files`` only: the scan
configuration arrives as a JSON-ready mapping (``history_config``), the text of a diff is
``output.ndiff``'s.

Safety of the user's files comes first:

* A file is used only if it is empty or carries our ``application_id`` (SQLite header
  offset 68). Anything else -- another program's SQLite database, a text file, a truncated
  or corrupt database -- raises ``StoreError`` naming the file, before anything is
  written: WAL mode is switched on only after the check, since it rewrites the header.
* ``PRAGMA user_version`` is the schema version; a newer one is refused, not downgraded;
  an older one is migrated in one transaction after its tables are checked, and only by
  a command that writes: ``history``, ``show`` and ``diff`` read older schemas as they are.
* Readers open the file read-only and never create it; ``resume`` and ``forget`` never
  create it either. Created files are private (``store_files``).
* ``forget`` overwrites what it deletes (``secure_delete``).

A scan is written by one process at a time: ``begin`` and ``claim`` take the scan's lock
(``store_files.ScanLocks``) inside the transaction that marks it running, so two
``resume`` of one scan cannot both run; results and closed ports have keys that make a
second copy impossible (closed ports are bitmaps merged on insert).

Durability: WAL with ``synchronous=NORMAL``. A commit is in the WAL file as soon as it
returns, so killing the process (SIGKILL included) loses only what was not committed yet;
the ``Recorder`` commits at least every second while results arrive. The history is a
record, not the scan: when it fails (locked too long, disk full) the ``Recorder`` warns
once and lets the scan finish.

Every sqlite3 error is translated here, once, into ``StoreError`` (one line, the path).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portscout.errors import StoreBusyError, StoreError
from portscout.plan import Probe
from portscout.results import (
    ClosedPorts,
    IPAddress,
    Protocol,
    Reason,
    Report,
    Result,
    ScanMeta,
    State,
)
from portscout.store_files import (
    MAX_SCAN_ID,
    ScanLocks,
    check_writable,
    create_private,
    match_owner,
    os_errors,
)
from portscout.store_schema import (
    SCHEMA_VERSION,
    TABLES,
    bits_of,
    check_tables,
    count_bits,
    has_service_column,
    migrate,
    or_bits,
    ports_of,
    runs,
    service_of,
    service_text,
    set_bits,
    unpack,
    unrun,
)

if TYPE_CHECKING:
    from portscout.diff import ScanDiff

log = logging.getLogger(__name__)

APPLICATION_ID = 0x70536E48  # "pSnH": portscout history, in the SQLite header
BUSY_SECONDS = 5.0  # how long a command waits for another's write lock

_COLUMNS = "host, protocol, port, state, reason, rtt, tries, reason_ttl"
_COUNTS = {State.OPEN: "n_open", State.CLOSED: "n_closed", State.FILTERED: "n_filtered"}
_SQLITE_BUSY = 5
# A Dask unit done (``distributed.Unit``): targets [start, stop), the part-th of parts.
UnitRow = tuple[int, int, int, int]


class ScanStatus(StrEnum):
    RUNNING = "running"  # being written, or its process died (see ``StoredScan.running``)
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM, SIGHUP: resumable
    FAILED = "failed"  # the scan raised: resumable
    DONE = "done"


def default_path(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_DATA_HOME/portscout/history.sqlite3``, else under ``~/.local/share``."""
    base = environ.get("XDG_DATA_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "portscout" / "history.sqlite3"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredScan:
    """One scan's row: what writers need (``meta``), its progress and its configuration."""

    id: int
    meta: ScanMeta
    config: Mapping[str, object]
    status: ScanStatus
    finished: float | None
    pid: int | None
    runs: int
    probes_planned: int
    probes_sent: int
    counts: Counter[State] = field(default_factory=Counter)
    running: bool = False  # a process holds the scan's lock: it is being written now

    @property
    def shown_status(self) -> str:
        """The status for people: a 'running' scan that nobody writes was killed."""
        if self.status is ScanStatus.RUNNING and not self.running:
            return "killed"
        return self.status.value


def _describe(exc: sqlite3.Error, path: Path) -> str:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == 8:  # SQLITE_READONLY
        return f"history database '{path}' is read-only here ({exc})"
    if code == 13:  # SQLITE_FULL
        return f"history database '{path}': the disk is full ({exc})"
    return f"history database '{path}': {exc}"


@contextlib.contextmanager
def _translated(path: Path) -> Iterator[None]:
    """The one place sqlite3 errors become ``StoreError``."""
    try:
        yield
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_BUSY:
            raise StoreBusyError(f"history database '{path}' is locked by another process") from exc
        raise StoreError(_describe(exc, path)) from exc


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    uri = path.resolve().as_uri() + f"?{mode}"
    db = sqlite3.connect(uri, uri=True, timeout=BUSY_SECONDS, isolation_level=None)
    db.create_function("ps_or", 2, or_bits, deterministic=True)
    db.create_function("ps_count", 1, count_bits, deterministic=True)
    return db


class Store:
    """An open history database. Use ``Store.open``; close it (or use ``with``)."""

    def __init__(
        self, connection: sqlite3.Connection, path: Path, locks: ScanLocks, version: int
    ) -> None:
        self._db = connection
        self.path = path
        self._locks = locks
        self._version = version
        self._pending_locks: list[int] = []  # taken in the open write transaction

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, readonly: bool = False, create: bool = True
    ) -> Store:
        """Open and check the database at ``path``; create it when writable and ``create``.

        Raises ``StoreError`` when it is missing (read-only, or not ``create``), not
        SQLite, another application's database, of a newer schema, damaged, not
        writable by this user (writable opens), or cannot be opened.
        """
        where = Path(path)
        with os_errors("open the history database", where):
            if where.is_dir():
                raise StoreError(f"history database '{where}' is a directory")
            if (readonly or not create) and not where.is_file():
                raise StoreError(f"no history database at '{where}'")
            if readonly:
                return cls._open_readonly(where)
            create_private(where)
            check_writable(where)
        with _translated(where):
            db = _connect(where, "mode=rw")
        try:
            with _translated(where):
                version = cls._check(db, where, readonly=False)
            locks = ScanLocks(where, writable=True)
        except BaseException:
            db.close()
            raise
        match_owner(where)
        return cls(db, where, locks, version)

    @classmethod
    def _open_readonly(cls, where: Path) -> Store:
        """Read-only; in a directory this user cannot write (no ``-shm`` can be made), a
        WAL database with nothing uncheckpointed is read as immutable."""
        wal = Path(f"{where}-wal")
        for mode in ("mode=ro", "mode=ro&immutable=1"):
            with _translated(where):
                db = _connect(where, mode)
            try:
                with _translated(where):
                    version = cls._check(db, where, readonly=True)
                return cls(db, where, ScanLocks(where, writable=False), version)
            except StoreError as exc:
                db.close()
                # No -shm can be made (CANTOPEN, or READONLY_CANTINIT): nothing to share.
                cannot_share = isinstance(exc.__cause__, sqlite3.OperationalError) and (
                    getattr(exc.__cause__, "sqlite_errorcode", 0) & 0xFF in (8, 14)
                )
                if not cannot_share or wal.exists() or "immutable" in mode:
                    raise
            except BaseException:
                db.close()
                raise
        raise AssertionError("not reached")

    @classmethod
    def _check(cls, db: sqlite3.Connection, path: Path, *, readonly: bool) -> int:
        """Check the file is ours (creating the schema in an empty one); its version."""
        try:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.OperationalError:
            raise  # cannot open, locked, read-only: said as such by _translated
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"'{path}' is not a portscout history database ({exc})") from exc
        if app_id == 0 and tables == 0 and version == 0:
            if readonly:
                raise StoreError(f"'{path}' is an empty database, not a portscout history")
            db.execute("PRAGMA journal_mode=WAL")
            schema = "; ".join(TABLES.values())
            db.executescript(  # one transaction: the id is set only with the whole schema
                f"BEGIN IMMEDIATE; {schema}; PRAGMA application_id={APPLICATION_ID};"
                f" PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
            )
            version = SCHEMA_VERSION
        elif app_id != APPLICATION_ID:
            raise StoreError(f"'{path}' is a database of another application, not portscout's")
        elif version > SCHEMA_VERSION:
            raise StoreError(f"'{path}' has schema {version}, newer than this portscout's")
        else:
            check_tables(db, path)
            if not readonly:
                if version < SCHEMA_VERSION:  # before WAL: a failed one changes no byte
                    migrate(db, path)
                    version = SCHEMA_VERSION
                db.execute("PRAGMA journal_mode=WAL")
        if not readonly:
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA secure_delete=ON")  # forgotten scans leave no free pages
        db.execute("PRAGMA foreign_keys=ON")
        return int(version)

    def close(self) -> None:
        self._locks.close()
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, sql: str, params: Sequence[object] | Mapping[str, object] = ()) -> list[Any]:
        with _translated(self.path):
            return self._db.execute(sql, params).fetchall()

    def wait_for_lock(self, seconds: float) -> None:
        """How long writes wait for another process's write lock before StoreBusyError."""
        self._run(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction (BEGIN IMMEDIATE: the write lock from the start)."""
        self._pending_locks.clear()
        with _translated(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                for scan_id in self._pending_locks:
                    self._locks.release(scan_id)
                raise
        match_owner(self.path)  # a -wal made by root in a user's directory: theirs

    # -- writing -------------------------------------------------------------------------

    def begin(self, meta: ScanMeta, config: Mapping[str, object], planned: int) -> int:
        """Record a new scan as 'running', holding its lock; returns its id."""
        row = (
            json.dumps(list(meta.args)), json.dumps(dict(config)), meta.engine,
            meta.scan_type, json.dumps(runs(meta.ports)), str(meta.key), meta.version,
            json.dumps({str(a): n for a, n in meta.hostnames.items()}), meta.started,
            ScanStatus.RUNNING.value, os.getpid(), min(planned, MAX_SCAN_ID),
        )  # fmt: skip
        with self._write():
            cursor = self._db.execute(
                "INSERT INTO scan (args, config, engine, scan_type, ports, key, version,"
                " hostnames, started, status, pid, probes_planned)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            scan_id = cursor.lastrowid
            assert scan_id is not None
            self._take(scan_id)
        return scan_id

    def _take(self, scan_id: int) -> None:
        """Lock the scan, inside the write transaction that marks it running (the caller's):
        the lock is let go again if that transaction does not commit."""
        if not self._locks.acquire(scan_id):
            raise StoreError(f"scan {scan_id} is still running in another process")
        self._pending_locks.append(scan_id)

    def claim(self, scan_id: int) -> StoredScan:
        """Take up a stopped scan again (a resume): compare-and-set, under the write lock.

        Raises ``StoreError`` when it is complete or another process is writing it: of
        two resumes started together, exactly one gets the scan.
        """
        with self._write():
            stored = self.load(scan_id)
            if stored.status is ScanStatus.DONE:
                raise StoreError(f"scan {scan_id} is complete: nothing to resume")
            if stored.running:
                raise StoreError(f"scan {scan_id} is still running in another process")
            self._take(scan_id)
            self._db.execute(
                "UPDATE scan SET status = ?, pid = ?, runs = runs + 1 WHERE id = ?",
                (ScanStatus.RUNNING.value, os.getpid(), scan_id),
            )
        return stored

    def insert(
        self,
        scan_id: int,
        results: Sequence[Result],
        sent: int = 0,
        closed_ports: Sequence[ClosedPorts] = (),
        units: Sequence[UnitRow] = (),
    ) -> None:
        """Add results, closed ports (and ``sent`` probes) in one transaction, counters
        included (``end`` recounts them exactly), with the Dask ``units`` whose results are
        now all in (``(start, stop, part, parts)``): a resume skips those.

        Closed ports are merged into 256-port bitmaps per host and reason, without RTT,
        tries and TTL: a row each cost a full scan 0.3 s and 3.5 MB; its bitmaps are 256
        rows of 32 bytes, and a port offered twice is stored once.
        """
        counts = Counter(r.state for r in results)
        rows = []
        closed: dict[tuple[str, str, str, int], int] = defaultdict(int)
        for group in closed_ports:
            set_bits(closed, str(group.host), group.protocol, group.reason, group.ports)
            counts[State.CLOSED] += len(group.ports)
        for r in results:
            if r.state is State.CLOSED:
                set_bits(closed, str(r.host), r.protocol, r.reason, (r.port,))
            else:
                rows.append((scan_id, str(r.host), r.protocol.value, r.port, r.state.value,
                             r.reason.value, r.rtt, r.tries, r.reason_ttl,
                             service_text(r.service)))  # fmt: skip
        with self._write():
            self._db.executemany(f"INSERT OR IGNORE INTO result (scan_id, {_COLUMNS}, service)"
                                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)  # fmt: skip
            self._db.executemany(
                "INSERT INTO closed (scan_id, host, protocol, block, reason, bits, n)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
                " bits = ps_or(bits, excluded.bits), n = ps_count(ps_or(bits, excluded.bits))",
                [(scan_id, host, proto, block, reason, bits_of(value), value.bit_count())
                 for (host, proto, reason, block), value in closed.items()],
            )  # fmt: skip
            self._db.executemany(
                "INSERT OR IGNORE INTO unit (scan_id, start, stop, part, parts)"
                " VALUES (?, ?, ?, ?, ?)", [(scan_id, *unit) for unit in units],
            )  # fmt: skip
            self._db.execute(
                "UPDATE scan SET n_open = n_open + ?, n_closed = n_closed + ?,"
                " n_filtered = n_filtered + ?, probes_sent = probes_sent + ? WHERE id = ?",
                (counts[State.OPEN], counts[State.CLOSED], counts[State.FILTERED], sent, scan_id),
            )

    def forget(self, scan_ids: Sequence[int]) -> None:
        """Delete scans with their results, in one transaction: all of them or none.

        Raises ``StoreError`` for an id that is not here or a scan still being written.
        The pages freed are overwritten (``secure_delete``) and reused by later scans;
        the file does not shrink (no VACUUM).
        """
        with self._write():
            for scan_id in scan_ids:
                if self.load(scan_id).running:
                    raise StoreError(f"scan {scan_id} is still running")
            self._db.executemany("DELETE FROM scan WHERE id = ?", [(i,) for i in scan_ids])

    def end(self, scan_id: int, status: ScanStatus, finished: float) -> None:
        """Close the record: its status, counters recounted from what is stored; let go of
        the scan's lock."""
        with self._write():
            self._db.execute(
                "UPDATE scan SET status = :status, finished = :finished,"
                " n_open = (SELECT count(*) FROM result WHERE scan_id = :id AND state = 'open'),"
                " n_filtered = (SELECT count(*) FROM result"
                "               WHERE scan_id = :id AND state = 'filtered'),"
                " n_closed = (SELECT coalesce(sum(n), 0) FROM closed WHERE scan_id = :id)"
                " WHERE id = :id",
                {"id": scan_id, "status": status.value, "finished": finished},
            )
        self._locks.release(scan_id)

    # -- reading -------------------------------------------------------------------------

    def scans(self, limit: int | None = None) -> list[StoredScan]:
        """Recorded scans, newest first."""
        count = -1 if limit is None else min(limit, MAX_SCAN_ID)
        rows = self._run(f"SELECT {_SCAN_COLUMNS} FROM scan ORDER BY id DESC LIMIT ?",
                         (count,))  # fmt: skip
        return [self._scan(row) for row in rows]

    def load(self, scan_id: int) -> StoredScan:
        rows = []
        if 0 < scan_id <= MAX_SCAN_ID:
            rows = self._run(f"SELECT {_SCAN_COLUMNS} FROM scan WHERE id = ?", (scan_id,))
        if not rows:
            raise StoreError(f"no scan {scan_id} in '{self.path}'")
        return self._scan(rows[0])

    def _scan(self, row: Any) -> StoredScan:
        (scan_id, args, config, engine, scan_type, ports, key, version, hostnames, started,
         finished, status, pid, runs, planned, sent, *counts) = row  # fmt: skip
        try:
            meta = ScanMeta(
                args=tuple(json.loads(args)), scan_type=scan_type, engine=engine,
                ports=tuple(unrun(json.loads(ports))), started=started, version=version,
                key=int(key),
                hostnames={ip_address(a): n for a, n in json.loads(hostnames).items()},
            )  # fmt: skip
            state = ScanStatus(status)
            return StoredScan(
                id=scan_id, meta=meta, config=json.loads(config), status=state,
                finished=finished, pid=pid, runs=runs, probes_planned=planned,
                probes_sent=sent, counts=Counter(dict(zip(_COUNTS, counts, strict=True))),
                running=state is ScanStatus.RUNNING and self._locks.running(scan_id),
            )  # fmt: skip
        except (ValueError, TypeError, AttributeError) as exc:
            raise StoreError(f"scan {scan_id} in '{self.path}' is damaged: {exc}") from exc

    def results(self, scan_id: int) -> list[Result]:
        """Every stored result of a scan, in (host, port) order."""
        service = "service" if has_service_column(self._db) else "NULL"  # older, read as is
        rows = self._run(f"SELECT {_COLUMNS}, {service} FROM result WHERE scan_id = ?", (scan_id,))
        hosts: dict[str, IPAddress] = {}
        out = []
        try:
            for host, protocol, port, state, reason, rtt, tries, ttl, found in rows:
                if host not in hosts:
                    hosts[host] = ip_address(host)
                out.append(Result(host=hosts[host], protocol=Protocol(protocol), port=port,
                                  state=State(state), reason=Reason(reason), rtt=rtt,
                                  tries=tries, reason_ttl=ttl,
                                  service=service_of(found)))  # fmt: skip
            for host, protocol, reason, ports in self._closed_rows(scan_id):
                if host not in hosts:
                    hosts[host] = ip_address(host)
                address, proto, why = hosts[host], Protocol(protocol), Reason(reason)
                out.extend(Result(host=address, protocol=proto, port=port, state=State.CLOSED,
                                  reason=why) for port in ports)  # fmt: skip
        except (ValueError, TypeError) as exc:
            raise StoreError(f"scan {scan_id} in '{self.path}' is damaged: {exc}") from exc
        out.sort(key=lambda r: (r.host.version, int(r.host), r.port))
        return out

    def _closed_rows(self, scan_id: int) -> Iterator[tuple[str, str, str, Iterable[int]]]:
        """(host, protocol, reason, ports) of the closed ports, in either layout: a
        read-only command reads schema 1 and 2 files without migrating them."""
        if self._version >= 3:
            sql = "SELECT host, protocol, reason, block, bits FROM closed WHERE scan_id = ?"
            for host, protocol, reason, block, bits in self._run(sql, (scan_id,)):
                yield host, protocol, reason, ports_of(block, bits)
            return
        sql = "SELECT host, protocol, reason, ports FROM closed WHERE scan_id = ?"
        for host, protocol, reason, ports in self._run(sql, (scan_id,)):
            yield host, protocol, reason, unpack(ports)

    def units(self, scan_id: int) -> frozenset[UnitRow]:
        """The Dask units of ``scan_id`` recorded done, ``(start, stop, part, parts)``
        (none in a file older than schema 5, read as it is)."""
        if self._version < 5:
            return frozenset()
        rows = self._run("SELECT start, stop, part, parts FROM unit WHERE scan_id = ?", (scan_id,))
        return frozenset((int(a), int(b), int(c), int(d)) for a, b, c, d in rows)

    def done_probes(self, scan_id: int) -> frozenset[Probe]:
        """The probes a scan has answered: what a resume must not send again."""
        return done_probes(self.results(scan_id))


_SCAN_COLUMNS = (
    "id, args, config, engine, scan_type, ports, key, version, hostnames, started, finished,"
    " status, pid, runs, probes_planned, probes_sent, n_open, n_closed, n_filtered"
)


def done_probes(results: Iterable[Result]) -> frozenset[Probe]:
    """The probes these stored results answered: what a resume must not send again."""
    return frozenset(Probe(r.host, r.port) for r in results)


def rebuild_report(scan: StoredScan, results: Iterable[Result]) -> Report:
    """The ``Report`` a scan would have ended with, from its stored row and results."""
    report = Report(
        engine=scan.meta.engine,
        key=scan.meta.key,
        started=scan.meta.started,
        finished=scan.finished,
        probes_planned=scan.probes_planned,
        probes_sent=scan.probes_sent,
        interrupted=scan.status is not ScanStatus.DONE,
        failed=scan.status is ScanStatus.FAILED,
    )
    for result in results:
        report.add(result)
    return report


def diff_scans(store: Store, a_id: int, b_id: int) -> ScanDiff:
    """What changed from scan ``a_id`` to scan ``b_id``: hosts and ports, by state."""
    from portscout.diff import DiffSide, compare  # only the diff command needs it

    a, b = store.load(a_id), store.load(b_id)
    return compare(
        DiffSide(a.id, a.meta), store.results(a.id), DiffSide(b.id, b.meta), store.results(b.id)
    )
