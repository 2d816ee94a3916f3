"""The history database's schema: its tables, the checks of a file's tables, the migration
of older schemas, and the layouts of closed ports (bitmaps; packed ports and JSON runs in
schema 2 and 1 files).

Owns the SQL and the encodings ``store`` reads and writes. Imports the core only.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import sys
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from portscout.errors import StoreError
from portscout.results import Certificate, Protocol, Reason, Service

# 2: closed.ports held packed 16-bit ports; 1: JSON runs. 3: closed ports as bitmaps of
# 256-port blocks, one row per (scan, host, protocol, block, reason): a port is there once.
# 4: result.service, what -sV found on the port (JSON; NULL without -sV).
# 5: unit, the Dask units of a scan whose results are all recorded (a resume skips them).
SCHEMA_VERSION = 5
BLOCK = 256  # ports per closed-ports bitmap: 32 bytes
_BLOCK_BYTES = BLOCK // 8

TABLES = {
    "scan": """CREATE TABLE scan (
    id INTEGER PRIMARY KEY,
    args TEXT NOT NULL,            -- JSON array: the command line as given
    config TEXT NOT NULL,          -- JSON object: what rebuilds the identical plan
    engine TEXT NOT NULL,
    scan_type TEXT NOT NULL,
    ports TEXT NOT NULL,           -- JSON array of [first, last] runs
    key TEXT NOT NULL,             -- decimal: the permutation key, up to 128 bits
    version TEXT NOT NULL,
    hostnames TEXT NOT NULL,       -- JSON object: address -> name the user gave
    started REAL NOT NULL,         -- epoch seconds
    finished REAL,
    status TEXT NOT NULL,          -- ScanStatus
    pid INTEGER,                   -- of the last process that wrote it (information only)
    runs INTEGER NOT NULL DEFAULT 1,
    probes_planned INTEGER NOT NULL,  -- capped at 2**63 - 1 (an IPv6 /64 plans 2**64)
    probes_sent INTEGER NOT NULL DEFAULT 0,
    n_open INTEGER NOT NULL DEFAULT 0,
    n_closed INTEGER NOT NULL DEFAULT 0,
    n_filtered INTEGER NOT NULL DEFAULT 0
)""",
    "result": """CREATE TABLE result (
    scan_id INTEGER NOT NULL REFERENCES scan (id) ON DELETE CASCADE,
    host TEXT NOT NULL,
    protocol TEXT NOT NULL,
    port INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    rtt REAL,
    tries INTEGER NOT NULL,
    reason_ttl INTEGER,
    service TEXT,                  -- JSON of results.Service (-sV), else NULL
    PRIMARY KEY (scan_id, host, protocol, port)
) WITHOUT ROWID""",
    "closed": """CREATE TABLE closed (  -- closed ports, the bulk of a scan, as bitmaps:
    scan_id INTEGER NOT NULL REFERENCES scan (id) ON DELETE CASCADE,
    host TEXT NOT NULL,
    protocol TEXT NOT NULL,
    block INTEGER NOT NULL,        -- ports block * 256 ... block * 256 + 255
    reason TEXT NOT NULL,
    bits BLOB NOT NULL,            -- 32 bytes, little-endian: bit i is port block*256+i
    n INTEGER NOT NULL,            -- bits set
    PRIMARY KEY (scan_id, host, protocol, block, reason)
) WITHOUT ROWID""",
    "unit": """CREATE TABLE unit (    -- Dask units done: their results are all in this file
    scan_id INTEGER NOT NULL REFERENCES scan (id) ON DELETE CASCADE,
    start INTEGER NOT NULL,        -- targets start ... stop - 1 (indices of the target set)
    stop INTEGER NOT NULL,
    part INTEGER NOT NULL,         -- the part-th of parts of their probes (1-based)
    parts INTEGER NOT NULL,
    PRIMARY KEY (scan_id, start, stop, part, parts)
) WITHOUT ROWID""",
}
# What a schema 1 or 2 file must have before it is migrated (their ``closed`` differs).
REQUIRED = {
    "scan": {"id", "args", "config", "status", "probes_planned", "n_closed"},
    "result": {"scan_id", "host", "protocol", "port", "state", "reason"},
    "closed": {"scan_id", "host", "protocol", "reason"},
}


def check_tables(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a file that says it is ours but lacks a table or column we read."""
    for table, needed in REQUIRED.items():
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if not columns:
            raise StoreError(f"history database '{path}' is damaged: no table '{table}'")
        if needed - columns:
            raise StoreError(
                f"history database '{path}' is damaged: table '{table}' lacks"
                f" {', '.join(sorted(needed - columns))}"
            )


def has_service_column(db: sqlite3.Connection) -> bool:
    """Whether ``result`` keeps services (schema 4; an older file read as it is has not)."""
    return "service" in {row[1] for row in db.execute("PRAGMA table_info(result)")}


def service_text(service: Service | None) -> str | None:
    """A ``Service`` as stored: its fields as JSON."""
    return None if service is None else json.dumps(dataclasses.asdict(service))


def service_of(text: str | None) -> Service | None:
    """The ``Service`` stored as ``service_text``; raises ValueError/TypeError if damaged."""
    if text is None:
        return None
    fields = json.loads(text)
    cert = fields.pop("certificate", None)
    return Service(
        **{**fields, "cpes": tuple(fields.get("cpes", ()))},
        certificate=None if cert is None else Certificate(**{**cert, "sans": tuple(cert["sans"])}),
    )


def has_unit_table(db: sqlite3.Connection) -> bool:
    """Whether the file records Dask units (schema 5; an older file read as it is has not)."""
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'unit'")
    return found.fetchone() is not None


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Schema 1 to 4 -> 5 in one transaction: closed ports become bitmaps, results get
    a service column, the table of Dask units done is added (all or none)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        check_tables(db, path)  # again, under the lock: another process may have migrated
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version < 3:
            merged: dict[tuple[int, str, str, str, int], int] = defaultdict(int)
            old = db.execute("SELECT scan_id, host, protocol, reason, ports FROM closed")
            for scan_id, host, protocol, reason, ports in old:
                for port in unpack(ports):
                    merged[(scan_id, host, protocol, reason, port // BLOCK)] |= 1 << (port % BLOCK)
            db.execute("DROP TABLE closed")
            db.execute(TABLES["closed"])
            db.executemany(
                "INSERT INTO closed (scan_id, host, protocol, reason, block, bits, n)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*key, bits_of(value), value.bit_count()) for key, value in merged.items()],
            )
        if version < SCHEMA_VERSION:
            if not has_service_column(db):
                db.execute("ALTER TABLE result ADD COLUMN service TEXT")
            if not has_unit_table(db):
                db.execute(TABLES["unit"])
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")
    except (ValueError, TypeError) as exc:
        db.execute("ROLLBACK")
        raise StoreError(f"history database '{path}' is damaged, not migrated: {exc}") from exc
    except BaseException:
        db.execute("ROLLBACK")
        raise


def set_bits(
    into: dict[tuple[str, str, str, int], int],
    host: str,
    protocol: Protocol,
    reason: Reason,
    ports: Iterable[int],
) -> None:
    for port in ports:
        into[(host, protocol.value, reason.value, port // BLOCK)] |= 1 << (port % BLOCK)


def bits_of(value: int) -> bytes:
    return value.to_bytes(_BLOCK_BYTES, "little")


def or_bits(a: bytes, b: bytes) -> bytes:
    return bits_of(int.from_bytes(a, "little") | int.from_bytes(b, "little"))


def count_bits(a: bytes) -> int:
    return int.from_bytes(a, "little").bit_count()


def ports_of(block: int, bits: bytes) -> Iterator[int]:
    if len(bits) != _BLOCK_BYTES or not 0 <= block < 65536 // BLOCK:
        raise ValueError(f"closed-ports bitmap of block {block} is malformed")
    value, base = int.from_bytes(bits, "little"), block * BLOCK
    while value:
        low = value & -value
        yield base + low.bit_length() - 1
        value ^= low


def runs(ports: Iterable[int]) -> list[list[int]]:
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


def unpack(stored: bytes | str) -> Iterable[int]:
    """Closed ports of schema 2 (packed 16-bit) or schema 1 (JSON runs)."""
    if isinstance(stored, str):
        return unrun(json.loads(stored))
    if len(stored) % 2:
        raise ValueError("packed ports of odd length")
    packed = array("H", stored)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed


def unrun(runs: Iterable[Sequence[int]]) -> Iterator[int]:
    for first, last in runs:
        yield from range(first, last + 1)
