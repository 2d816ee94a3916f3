"""nmap's probe file, prepared once and kept on disk: what every ``-sV`` start would
otherwise redo (issue 13: one port must not pay for thousands of patterns).

Owns the cache file under ``$XDG_CACHE_HOME/portscout`` (else ``~/.cache/portscout``).
I/O: reads and writes that file, and the probe file; no sockets, no clock.

What is kept, and what is not:

- the parsed file (probes, their match lines and version templates): parsing costs about
  75 ms of CPU on Debian's 12,000-line file; reading it back about half that;
- each line's first byte as ``match.first_bytes`` finds it: the index every matcher builds
  over its lines (the NULL probe's 4,029 are in every TCP probe's chain);
- which patterns Python's ``re`` cannot compile, once a ``-d`` run has compiled them all
  (3-4 s of CPU, every ``-d`` run before).

Not the compiled regexes: ``re.Pattern`` pickles as its source and flags, and compiles
again when loaded. With the index only the patterns a response's first byte and required
literal leave as candidates are compiled at all (about a dozen for an nginx on port 80).

The file is ``marshal`` data (tuples, bytes, strings, ints, frozensets): loading it runs no
code. It is read only when owned by this user and writable by no one else, and only when
its key matches: the probe file's path, size and modification time, portscout's version,
the format below, Python's version, and the size and time of the modules whose output it
holds (a parser change makes a new cache). Any failure to read or write it is a miss,
logged at debug level: the scan goes on from the probe file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import marshal
import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portscout._version import __version__
from portscout.services import match as match_module
from portscout.services import probes as probes_module
from portscout.services.match import first_bytes
from portscout.services.probes import Match, ProbeDatabase, ServiceProbe, VersionTemplate

log = logging.getLogger(__name__)

FORMAT = 1  # raise when the layout below changes
_MARSHAL_VERSION = 4
_Key = tuple[Any, ...]  # marshal data: its own types


@dataclass(frozen=True, slots=True)
class Prepared:
    """A probe database and what was prepared for it: each line's first byte (for
    ``match.Analyses``) and, when known, the lines whose patterns do not compile."""

    database: ProbeDatabase
    first: dict[Match, frozenset[int] | None]
    failures_known: bool

    def failures(self) -> list[tuple[Match, str]]:
        """The lines whose patterns do not compile: from the cache when known, else by
        compiling every pattern (seconds: for ``-d`` only)."""
        if not self.failures_known:
            return self.database.failed_patterns()
        return [(m, m.known_error) for m in self.database.matches() if m.known_error]


def cache_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_CACHE_HOME/portscout``, else ``~/.cache/portscout``."""
    base = environ.get("XDG_CACHE_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".cache"
    )
    return Path(base) / "portscout"


def prepare(path: Path, directory: Path | None) -> Prepared:
    """The database of ``path``, from the cache in ``directory`` when it holds this very
    file, else parsed (``ProbeFileError`` when unreadable or malformed) and then stored.
    ``directory`` None: no cache."""
    key = _key(path)
    where = _cache_file(directory, key) if directory is not None and key else None
    if where is not None:
        cached = _read(where, key, str(path))
        if cached is not None:
            return cached
    database = probes_module.load_probe_file(path)
    first = {m: first_bytes(m.pattern, m.flags) for m in database.matches()}
    prepared = Prepared(database, first, failures_known=False)
    if where is not None:
        _write(where, key, prepared)
    return prepared


def record_failures(path: Path, directory: Path | None, prepared: Prepared) -> Prepared:
    """After every pattern was compiled (``-d``): the same, with the failures stored."""
    key = _key(path)
    done = Prepared(prepared.database, prepared.first, failures_known=True)
    if directory is not None and key:
        _write(_cache_file(directory, key), key, done)
    return done


def _key(path: Path) -> _Key:
    """What the cache must have been made from; () when the probe file cannot be read."""
    try:
        info = path.stat()
        modules = [Path(m.__file__ or "").stat() for m in (probes_module, match_module)]
    except OSError:
        return ()
    stamps = tuple((m.st_size, m.st_mtime_ns) for m in modules)
    return (FORMAT, __version__, sys.version_info[:2], str(path.resolve()), info.st_size,
            info.st_mtime_ns, stamps)  # fmt: skip


def _cache_file(directory: Path, key: _Key) -> Path:
    """Named by the whole key, not the probe file's path alone: two checkouts (or versions)
    sharing one cache directory would otherwise overwrite each other's file in turn and
    every run of both would be cold."""
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    return directory / f"service-probes-{digest}.marshal"


def _read(where: Path, key: _Key, source: str) -> Prepared | None:
    try:
        with open(where, "rb") as file:
            info = os.fstat(file.fileno())
            if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                log.debug("service cache %s: not ours alone, ignored", where)
                return None
            stored_key, payload = marshal.loads(file.read())  # load(file): many small reads
        if stored_key != key:
            return None
        return _decode(payload, source)
    except FileNotFoundError:
        return None
    except (OSError, EOFError, ValueError, TypeError, IndexError) as exc:
        log.debug("service cache %s unreadable (%s): parsing the probe file", where, exc)
        return None


def _write(where: Path, key: _Key, prepared: Prepared) -> None:
    """Atomically (a temporary file renamed over the old one): concurrent scans may race,
    the last one wins, and none reads half a file."""
    temporary = where.with_name(f"{where.name}.{os.getpid()}.tmp")
    try:
        where.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            marshal.dump((key, _encode(prepared)), file, _MARSHAL_VERSION)
        os.replace(temporary, where)
    except (OSError, ValueError) as exc:
        log.debug("service cache %s not written: %s", where, exc)
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def _encode(prepared: Prepared) -> Any:
    def template(t: VersionTemplate) -> tuple[object, ...]:
        return (t.product, t.version, t.info, t.hostname, t.ostype, t.devicetype, t.cpes)

    def line(m: Match) -> tuple[object, ...]:
        error = m.known_error if prepared.failures_known else None
        return (m.service, m.pattern, int(m.flags), m.soft, template(m.template), m.line,
                prepared.first.get(m), error)  # fmt: skip

    probes = tuple(
        (p.protocol, p.name, p.payload, p.no_payload, p.rarity, p.ports, p.sslports,
         p.totalwaitms, p.tcpwrappedms, p.fallback, tuple(line(m) for m in p.matches))
        for p in prepared.database.probes
    )  # fmt: skip
    return (prepared.database.excluded, probes, prepared.failures_known)


def _decode(payload: Any, source: str) -> Prepared:
    """The inverse of ``_encode``; a wrong shape raises ValueError/TypeError (a miss)."""
    excluded, probes, failures_known = payload
    first: dict[Match, frozenset[int] | None] = {}
    out: list[ServiceProbe] = []
    for (protocol, name, payload_bytes, no_payload, rarity, ports, sslports, totalwaitms,
         tcpwrappedms, fallback, lines) in _tuples(probes):  # fmt: skip
        matches = []
        for service, pattern, flags, soft, fields, number, first_byte, error in _tuples(lines):
            product, version, info, hostname, ostype, devicetype, cpes = fields
            template = VersionTemplate(product=product, version=version, info=info,
                                       hostname=hostname, ostype=ostype,
                                       devicetype=devicetype, cpes=cpes)  # fmt: skip
            match = Match(service, pattern, flags=flags, soft=soft, template=template,
                          line=number, error=error)  # fmt: skip
            first[match] = first_byte
            matches.append(match)
        out.append(ServiceProbe(protocol=protocol, name=name, payload=payload_bytes,
                                no_payload=no_payload, rarity=rarity, ports=ports,
                                sslports=sslports, totalwaitms=totalwaitms,
                                tcpwrappedms=tcpwrappedms, fallback=fallback,
                                matches=matches))  # fmt: skip
    database = ProbeDatabase(source=source, probes=out, excluded=excluded)
    return Prepared(database, first, failures_known=bool(failures_known))


def _tuples(value: object) -> tuple[Any, ...]:
    """A decoded tuple whose items are untyped marshal data (a wrong shape fails when
    unpacked or used: a miss)."""
    if not isinstance(value, tuple):
        raise TypeError("service cache: expected a tuple")
    return value
