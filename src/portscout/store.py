"""The scan history: one SQLite database holding every scan, its results and what resumes it.

Owns the database schema and its checks, the incremental ``Recorder``, loading scans back
(``ScanMeta``, ``Report``, results, the probes already answered) and comparing two scans
(``diff_scans``, text like nmap's ``ndiff``). Imports ``results``, ``plan`` and ``errors``
only: the scan configuration arrives as a JSON-ready mapping that ``cli`` builds and reads.

Safety of the user's files comes first:

* A file is used only if it is empty or carries our ``application_id`` (SQLite header
  offset 68). Anything else -- another program's SQLite database, a text file, a truncated
  or corrupt database -- raises ``StoreError`` naming the file, before anything is
  written: WAL mode is switched on only after the check, since it rewrites the header.
* ``PRAGMA user_version`` is the schema version; a newer one is refused, not downgraded.
* Readers (``history``, ``show``, ``diff``) open the file read-only and never create it.

Durability: WAL with ``synchronous=NORMAL``. A commit is in the WAL file as soon as it
returns, so killing the process (SIGKILL included) loses only what was not committed yet;
the ``Recorder`` commits at least every second while results arrive. Power loss may also
lose the last commits (SQLite's documented trade-off for NORMAL in WAL mode).

Every sqlite3 error is translated here, once, into ``StoreError`` (one line, the path).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from portscout.errors import StoreError
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

APPLICATION_ID = 0x70536E48  # "pSnH": portscout history, in the SQLite header
# 2: closed.ports holds packed 16-bit ports (a blob); schema 1 rows (JSON runs) still read.
SCHEMA_VERSION = 2
COMMIT_SECONDS = 1.0  # the most a crash may lose, while results keep arriving
COMMIT_ROWS = 20_000  # or this many buffered rows, whichever comes first
BUSY_SECONDS = 5.0

_SCHEMA = """
CREATE TABLE scan (
    id INTEGER PRIMARY KEY,
    args TEXT NOT NULL,            -- JSON array: the command line as given
    config TEXT NOT NULL,          -- JSON object: what rebuilds the identical plan (cli)
    engine TEXT NOT NULL,
    scan_type TEXT NOT NULL,
    ports TEXT NOT NULL,           -- JSON array of [first, last] runs
    key TEXT NOT NULL,             -- decimal: the permutation key, up to 128 bits
    version TEXT NOT NULL,
    hostnames TEXT NOT NULL,       -- JSON object: address -> name the user gave
    started REAL NOT NULL,         -- epoch seconds
    finished REAL,
    status TEXT NOT NULL,          -- ScanStatus
    pid INTEGER,                   -- of the process writing it while 'running'
    runs INTEGER NOT NULL DEFAULT 1,
    probes_planned INTEGER NOT NULL,
    probes_sent INTEGER NOT NULL DEFAULT 0,
    n_open INTEGER NOT NULL DEFAULT 0,
    n_closed INTEGER NOT NULL DEFAULT 0,
    n_filtered INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE result (
    scan_id INTEGER NOT NULL REFERENCES scan (id) ON DELETE CASCADE,
    host TEXT NOT NULL,
    protocol TEXT NOT NULL,
    port INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    rtt REAL,
    tries INTEGER NOT NULL,
    reason_ttl INTEGER,
    PRIMARY KEY (scan_id, host, protocol, port)
) WITHOUT ROWID;
CREATE TABLE closed (              -- closed ports, the bulk of a scan, kept compactly:
    scan_id INTEGER NOT NULL REFERENCES scan (id) ON DELETE CASCADE,
    host TEXT NOT NULL,            -- one row per host and reason in each commit
    protocol TEXT NOT NULL,
    reason TEXT NOT NULL,
    ports BLOB NOT NULL,           -- little-endian 16-bit ports (schema 1: JSON runs)
    n INTEGER NOT NULL
);
CREATE INDEX closed_scan ON closed (scan_id);
"""
_COLUMNS = "host, protocol, port, state, reason, rtt, tries, reason_ttl"
_COUNTS = {State.OPEN: "n_open", State.CLOSED: "n_closed", State.FILTERED: "n_filtered"}


class ScanStatus(StrEnum):
    RUNNING = "running"  # being written, or its process died (see ``StoredScan.alive``)
    INTERRUPTED = "interrupted"  # Ctrl-C: resumable
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

    @property
    def alive(self) -> bool:
        """Whether a 'running' scan's process still exists (on this machine)."""
        if self.status is not ScanStatus.RUNNING or self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    @property
    def shown_status(self) -> str:
        """The status for people: a 'running' scan whose process is gone was killed."""
        if self.status is ScanStatus.RUNNING and not self.alive:
            return "killed"
        return self.status.value


@contextlib.contextmanager
def _translated(path: Path) -> Iterator[None]:
    """The one place sqlite3 errors become ``StoreError``."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"history database '{path}': {exc}") from exc


class Store:
    """An open history database. Use ``Store.open``; close it (or use ``with``)."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False) -> Store:
        """Open (creating when writable) and check the database at ``path``.

        Raises ``StoreError`` when it is missing (read-only), not SQLite, another
        application's database, of a newer schema, corrupt, or cannot be opened.
        """
        where = Path(path)
        if readonly and not where.is_file():
            raise StoreError(f"no history database at '{where}'")
        if where.is_dir():
            raise StoreError(f"history database '{where}' is a directory")
        with _translated(where):
            if not readonly:
                where.parent.mkdir(parents=True, exist_ok=True)
            uri = where.resolve().as_uri() + ("?mode=ro" if readonly else "?mode=rwc")
            db = sqlite3.connect(uri, uri=True, timeout=BUSY_SECONDS, isolation_level=None)
        try:
            with _translated(where):
                cls._check(db, where, readonly)
        except BaseException:
            db.close()
            raise
        return cls(db, where)

    @staticmethod
    def _check(db: sqlite3.Connection, path: Path, readonly: bool) -> None:
        try:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"'{path}' is not a portscout history database ({exc})") from exc
        if app_id == 0 and tables == 0 and version == 0:
            if readonly:
                raise StoreError(f"'{path}' is an empty database, not a portscout history")
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(  # one transaction: the id is set only with the whole schema
                f"BEGIN IMMEDIATE; {_SCHEMA}; PRAGMA application_id={APPLICATION_ID};"
                f" PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
            )
        elif app_id != APPLICATION_ID:
            raise StoreError(f"'{path}' is a database of another application, not portscout's")
        elif version > SCHEMA_VERSION:
            raise StoreError(f"'{path}' has schema {version}, newer than this portscout's")
        elif not readonly:
            db.execute("PRAGMA journal_mode=WAL")
            if version < SCHEMA_VERSION:  # 1 -> 2: new rows pack their ports, old ones stay
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, sql: str, params: Sequence[object] | Mapping[str, object] = ()) -> list[Any]:
        with _translated(self.path):
            return self._db.execute(sql, params).fetchall()

    # -- writing -------------------------------------------------------------------------

    def begin(self, meta: ScanMeta, config: Mapping[str, object], planned: int) -> int:
        """Record a new scan as 'running'; returns its id."""
        row = (
            json.dumps(list(meta.args)), json.dumps(dict(config)), meta.engine,
            meta.scan_type, json.dumps(_runs(meta.ports)), str(meta.key), meta.version,
            json.dumps({str(a): n for a, n in meta.hostnames.items()}), meta.started,
            ScanStatus.RUNNING.value, os.getpid(), planned,
        )  # fmt: skip
        with _translated(self.path), self._db:
            cursor = self._db.execute(
                "INSERT INTO scan (args, config, engine, scan_type, ports, key, version,"
                " hostnames, started, status, pid, probes_planned)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def reopen(self, scan_id: int) -> None:
        """Mark a stopped scan 'running' again, by this process (a resume)."""
        with _translated(self.path), self._db:
            self._db.execute(
                "UPDATE scan SET status = ?, pid = ?, runs = runs + 1 WHERE id = ?",
                (ScanStatus.RUNNING.value, os.getpid(), scan_id),
            )

    def insert(
        self,
        scan_id: int,
        results: Sequence[Result],
        sent: int = 0,
        closed_ports: Sequence[ClosedPorts] = (),
    ) -> None:
        """Add results, closed ports (and ``sent`` probes) in one transaction, counters
        included.

        Closed ports are stored packed per host and reason (``closed`` table), without
        RTT, tries and TTL: a row each cost a full scan 0.3 s and 3.5 MB, JSON runs of
        randomly ordered ports 50 ms and 0.5 MB, packed ports 2 ms and 131 kB. The caller
        offers each result and each closed port once (``Recorder.flush``).
        """
        counts = Counter(r.state for r in results)
        rows = []
        closed: dict[tuple[IPAddress, Protocol, Reason], array[int]] = {}
        for group in closed_ports:
            key = (group.host, group.protocol, group.reason)
            ports = closed.get(key)
            if ports is None:
                ports = closed[key] = array("H")
            ports.extend(group.ports)
            counts[State.CLOSED] += len(group.ports)
        for r in results:
            if r.state is State.CLOSED:
                key = (r.host, r.protocol, r.reason)
                ports = closed.get(key)
                if ports is None:
                    ports = closed[key] = array("H")
                ports.append(r.port)
            else:
                rows.append((scan_id, str(r.host), r.protocol.value, r.port, r.state.value,
                             r.reason.value, r.rtt, r.tries, r.reason_ttl))  # fmt: skip
        with _translated(self.path), self._db:
            self._db.execute("BEGIN")
            self._db.executemany(f"INSERT OR IGNORE INTO result (scan_id, {_COLUMNS}) VALUES"
                                 " (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)  # fmt: skip
            self._db.executemany(
                "INSERT INTO closed (scan_id, host, protocol, reason, ports, n)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(scan_id, str(host), protocol.value, reason.value, _pack(ports), len(ports))
                 for (host, protocol, reason), ports in closed.items()],
            )  # fmt: skip
            self._db.execute(
                "UPDATE scan SET n_open = n_open + ?, n_closed = n_closed + ?,"
                " n_filtered = n_filtered + ?, probes_sent = probes_sent + ? WHERE id = ?",
                (counts[State.OPEN], counts[State.CLOSED], counts[State.FILTERED], sent, scan_id),
            )

    def forget(self, scan_ids: Sequence[int]) -> None:
        """Delete scans with their results, in one transaction: all of them or none.

        Raises ``StoreError`` for an id that is not here or a scan still being written.
        The space is reused by later scans; the file does not shrink (no VACUUM).
        """
        for scan_id in scan_ids:
            if self.load(scan_id).alive:
                raise StoreError(f"scan {scan_id} is still running")
        with _translated(self.path), self._db:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM scan WHERE id = ?", [(i,) for i in scan_ids])

    def end(self, scan_id: int, status: ScanStatus, finished: float) -> None:
        """Close the record: its status, and counters recounted from what is stored."""
        with _translated(self.path), self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE scan SET status = :status, finished = :finished, pid = NULL,"
                " n_open = (SELECT count(*) FROM result WHERE scan_id = :id AND state = 'open'),"
                " n_filtered = (SELECT count(*) FROM result"
                "               WHERE scan_id = :id AND state = 'filtered'),"
                " n_closed = (SELECT coalesce(sum(n), 0) FROM closed WHERE scan_id = :id)"
                " WHERE id = :id",
                {"id": scan_id, "status": status.value, "finished": finished},
            )

    # -- reading -------------------------------------------------------------------------

    def scans(self, limit: int | None = None) -> list[StoredScan]:
        """Recorded scans, newest first."""
        rows = self._run(f"SELECT {_SCAN_COLUMNS} FROM scan ORDER BY id DESC LIMIT ?",
                         (-1 if limit is None else limit,))  # fmt: skip
        return [self._scan(row) for row in rows]

    def load(self, scan_id: int) -> StoredScan:
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
                ports=tuple(_unrun(json.loads(ports))), started=started, version=version,
                key=int(key),
                hostnames={ip_address(a): n for a, n in json.loads(hostnames).items()},
            )  # fmt: skip
            return StoredScan(
                id=scan_id, meta=meta, config=json.loads(config), status=ScanStatus(status),
                finished=finished, pid=pid, runs=runs, probes_planned=planned,
                probes_sent=sent, counts=Counter(dict(zip(_COUNTS, counts, strict=True))),
            )  # fmt: skip
        except (ValueError, TypeError, AttributeError) as exc:
            raise StoreError(f"scan {scan_id} in '{self.path}' is damaged: {exc}") from exc

    def results(self, scan_id: int) -> list[Result]:
        """Every stored result of a scan, in (host, port) order."""
        rows = self._run(f"SELECT {_COLUMNS} FROM result WHERE scan_id = ?", (scan_id,))
        hosts: dict[str, IPAddress] = {}
        out = []
        try:
            for host, protocol, port, state, reason, rtt, tries, ttl in rows:
                if host not in hosts:
                    hosts[host] = ip_address(host)
                out.append(Result(host=hosts[host], protocol=Protocol(protocol), port=port,
                                  state=State(state), reason=Reason(reason), rtt=rtt,
                                  tries=tries, reason_ttl=ttl))  # fmt: skip
            runs = self._run(
                "SELECT host, protocol, reason, ports FROM closed WHERE scan_id = ?", (scan_id,)
            )
            for host, protocol, reason, ports in runs:
                if host not in hosts:
                    hosts[host] = ip_address(host)
                address, proto, why = hosts[host], Protocol(protocol), Reason(reason)
                out.extend(Result(host=address, protocol=proto, port=port, state=State.CLOSED,
                                  reason=why) for port in _unpack(ports))  # fmt: skip
        except (ValueError, TypeError) as exc:
            raise StoreError(f"scan {scan_id} in '{self.path}' is damaged: {exc}") from exc
        out.sort(key=lambda r: (r.host.version, int(r.host), r.port))
        return out

    def done_probes(self, scan_id: int) -> frozenset[Probe]:
        """The probes a scan has answered: what a resume must not send again."""
        return frozenset(Probe(r.host, r.port) for r in self.results(scan_id))


_SCAN_COLUMNS = (
    "id, args, config, engine, scan_type, ports, key, version, hostnames, started, finished,"
    " status, pid, runs, probes_planned, probes_sent, n_open, n_closed, n_filtered"
)


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
    )
    for result in results:
        report.add(result)
    return report


class Recorder:
    """Buffers a running scan's results and commits them every ``interval`` seconds.

    Call ``add`` with each batch, empty ones included (they are the clock tick), and
    ``close`` at the end; ``clock`` is monotonic seconds.
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
        self._clock = clock
        self._interval = interval
        self._max_rows = max_rows
        self._buffer: list[Result] = []
        self._closed: list[ClosedPorts] = []
        self._closed_count = 0
        self._sent = 0
        self._committed = clock()

    def add(
        self, results: Iterable[Result], sent: int = 0, closed_ports: Iterable[ClosedPorts] = ()
    ) -> None:
        """Buffer results, closed ports (and the count of probes ``sent`` for them);
        commit when due."""
        self._buffer.extend(results)
        for group in closed_ports:
            self._closed.append(group)
            self._closed_count += len(group.ports)
        self._sent += sent
        due = self._clock() - self._committed >= self._interval
        buffered = len(self._buffer) + self._closed_count
        if buffered >= self._max_rows or (due and (buffered or self._sent)):
            self.flush()

    def flush(self) -> None:
        """Commit what is buffered. Taken out first: if Ctrl-C cuts the transaction, its
        results are not stored, so a resume scans those probes again (never twice stored)."""
        batch, closed, sent = self._buffer, self._closed, self._sent
        self._buffer, self._closed, self._closed_count, self._sent = [], [], 0, 0
        if batch or closed or sent:
            self.store.insert(self.scan_id, batch, sent, closed)
        self._committed = self._clock()

    def close(self, status: ScanStatus, finished: float) -> None:
        self.flush()
        self.store.end(self.scan_id, status, finished)


def _runs(ports: Iterable[int]) -> list[list[int]]:
    """Sorted ports as ``[first, last]`` runs: a full range is one pair, not 65535 numbers."""
    ordered = sorted(set(ports))
    if not ordered:
        return []
    if ordered[-1] - ordered[0] + 1 == len(ordered):  # one run: the usual port list
        return [[ordered[0], ordered[-1]]]
    breaks = [i for i in range(1, len(ordered)) if ordered[i] != ordered[i - 1] + 1]
    firsts = [0, *breaks]
    lasts = [*(i - 1 for i in breaks), len(ordered) - 1]
    return [[ordered[a], ordered[b]] for a, b in zip(firsts, lasts, strict=True)]


def _pack(ports: array[int]) -> bytes:
    packed = array("H", ports)  # a copy: the byte swap must not touch the caller's
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def _unpack(stored: bytes | str) -> Iterable[int]:
    """Packed ports (schema 2), or JSON runs (rows written by schema 1)."""
    if isinstance(stored, str):
        return _unrun(json.loads(stored))
    if len(stored) % 2:
        raise ValueError("packed ports of odd length")
    packed = array("H", stored)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed


def _unrun(runs: Iterable[Sequence[int]]) -> Iterator[int]:
    for first, last in runs:
        yield from range(first, last + 1)


# -- comparing two scans (nmap's ndiff) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortChange:
    """A port whose state differs; ``None`` on a side that has no result for it."""

    port: int
    protocol: Protocol
    before: State | None
    after: State | None


@dataclass(frozen=True, slots=True)
class HostChange:
    """A host that changed: its status (``up``/``down``, ``None`` when not scanned), ports."""

    host: IPAddress
    before: str | None
    after: str | None
    ports: tuple[PortChange, ...]


@dataclass(frozen=True, slots=True)
class ScanDiff:
    a: StoredScan
    b: StoredScan
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
            "hosts": [
                {
                    "host": str(h.host),
                    "a": h.before,
                    "b": h.after,
                    "ports": [
                        {"port": p.port, "protocol": p.protocol.value, "a": p.before, "b": p.after}
                        for p in h.ports
                    ],
                }
                for h in self.hosts
            ],
        }

    def text(self, service_names: Mapping[int, str]) -> str:
        """ndiff's text form: ``-`` lines of scan A, ``+`` lines of scan B, per host."""
        lines = [
            f"{sign}portscout {s.meta.version} scan {s.id} initiated"
            f" {time.ctime(s.meta.started)} as: {' '.join(s.meta.args)}"
            for sign, s in (("-", self.a), ("+", self.b))
        ]
        names = {**self.a.meta.hostnames, **self.b.meta.hostnames}
        for h in self.hosts:
            title = f"{names[h.host]} ({h.host})" if h.host in names else str(h.host)
            lines += ["", f" {title}:"]
            if h.before != h.after:
                lines += [f"{sign}Host is {st}." for sign, st in _sides(h.before, h.after)]
            if h.ports:
                lines.append(" PORT        STATE     SERVICE")
            for p in h.ports:
                name = service_names.get(p.port, "")
                port = f"{p.port}/{p.protocol}"
                lines += [f"{sign}{port:<11} {st:<9} {name}".rstrip()
                          for sign, st in _sides(p.before, p.after)]  # fmt: skip
        return "\n".join(lines) + "\n"


def _sides(before: str | None, after: str | None) -> list[tuple[str, str]]:
    return [(sign, st) for sign, st in (("-", before), ("+", after)) if st is not None]


def _host_status(states: Iterable[State]) -> str:
    """nmap_xml's rule: up when any port answered (open or closed), else down."""
    return "up" if any(s is not State.FILTERED for s in states) else "down"


def diff_scans(store: Store, a_id: int, b_id: int) -> ScanDiff:
    """What changed from scan ``a_id`` to scan ``b_id``: hosts and ports, by state."""
    scans = [store.load(a_id), store.load(b_id)]
    maps: list[dict[IPAddress, dict[tuple[int, Protocol], State]]] = [{}, {}]
    for scan, by_host in zip(scans, maps, strict=True):
        for r in store.results(scan.id):
            by_host.setdefault(r.host, {})[(r.port, r.protocol)] = r.state
    a, b = maps
    changes = []
    for host in sorted(a.keys() | b.keys(), key=lambda h: (h.version, int(h))):
        pa, pb = a.get(host, {}), b.get(host, {})
        ports = tuple(
            PortChange(port, proto, pa.get((port, proto)), pb.get((port, proto)))
            for port, proto in sorted(pa.keys() | pb.keys())
            if pa.get((port, proto)) is not pb.get((port, proto))
        )
        before = _host_status(pa.values()) if host in a else None
        after = _host_status(pb.values()) if host in b else None
        if ports or before != after:
            changes.append(HostChange(host, before, after, ports))
    return ScanDiff(scans[0], scans[1], tuple(changes))
