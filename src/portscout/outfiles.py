"""The files a scan writes to: opened safely, written without ever raising, put in place whole.

Owns the file side of ``-oN``/``-oX``/``-oG``/``-oJ``/``--csv``/``-oA`` (the writers only
format; ``output.session`` wires them to these streams):

* Two outputs, or an output and the history database, that are one file are refused
  before anything is opened (device and inode; the path when it does not exist yet):
  ``--db h.db -oJ h.db`` would truncate every recorded scan.
* A document (XML, grepable, CSV, anything but JSON lines) is written to a temporary
  file in its directory and renamed over the name when finished: a reader never sees half
  a file, a crash never leaves an empty one, and a symbolic link at the name is replaced,
  never followed to truncate its target. JSON lines, meant to be tailed while the scan
  runs, get the same new file renamed into place before the first line. Devices and pipes
  (``/dev/null``, ``/dev/stdout``) are written in place.
* If a later output cannot be opened, the ones already created are removed.
* A write that fails (ENOSPC on ``/dev/full``, EIO) is recorded in ``Faults`` and that
  output is dropped, never raised into the scan: the scan, the other outputs and the
  history go on. A reader of standard output that went away (``| head -1``) is a
  ``broken_pipe``: the command stops quietly, as ``cat`` does.

Imports ``errors`` and ``results`` only.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TextIO, cast

from portscout.errors import UsageError
from portscout.results import printable

STREAMED = frozenset({"json"})  # formats read while the scan runs: renamed in at the start


@dataclass
class Faults:
    """What went wrong writing: the first error of each output, and a reader gone away."""

    errors: dict[str, str] = field(default_factory=dict)
    broken_pipe: bool = False

    def record(self, name: str, exc: OSError) -> None:
        if exc.errno == errno.EPIPE:
            self.broken_pipe = True
        else:
            self.errors.setdefault(name, exc.strerror or str(exc))


class _Guarded(io.TextIOBase):
    """A text stream whose write errors go to ``faults``; after one, it drops the rest."""

    def __init__(self, inner: TextIO, name: str, faults: Faults, *, owns: bool) -> None:
        super().__init__()
        self._inner, self._name, self._faults, self._owns = inner, name, faults, owns
        self.failed = False

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        with contextlib.suppress(OSError, ValueError):
            return self._inner.isatty()
        return False

    def fileno(self) -> int:
        return self._inner.fileno()

    def _guard(self, exc: OSError) -> None:
        self.failed = True
        self._faults.record(self._name, exc)

    def write(self, text: str) -> int:
        if not self.failed:
            try:
                self._inner.write(text)
            except OSError as exc:
                self._guard(exc)
        return len(text)

    def flush(self) -> None:
        if not self.failed:
            try:
                self._inner.flush()
            except OSError as exc:
                self._guard(exc)

    def close(self) -> None:
        """Close what it wraps (if it owns it); an error is recorded, not raised."""
        if self.closed:
            return
        super().close()  # flushes (guarded) first
        try:
            if self._owns:
                self._inner.close()
        except OSError as exc:
            if not self.failed:
                self._guard(exc)


def guarded(inner: TextIO, name: str, faults: Faults, *, owns: bool = True) -> TextIO:
    """``inner`` with its write errors going to ``faults`` instead of raising; closing it
    closes ``inner`` only if it ``owns`` it."""
    return cast(TextIO, _Guarded(inner, name, faults, owns=owns))


def _identity(path: str) -> tuple[str, object] | None:
    """What names a file: (device, inode) when it exists, else its path (its directory
    resolved); a link to a regular file is its own path, as the link is what is replaced.
    ``None`` for character devices, which any number of outputs may share."""
    named = ("path", os.path.join(os.path.realpath(os.path.dirname(path) or "."),
                                  os.path.basename(path)))  # fmt: skip
    try:
        info = os.stat(path)
        if os.path.islink(path) and stat.S_ISREG(info.st_mode):
            return named  # a link to a file is replaced, not written through
    except OSError:
        return named
    if stat.S_ISCHR(info.st_mode):
        return None
    return ("inode", (info.st_dev, info.st_ino))


def refuse_shared(outputs: Sequence[tuple[str, str]], database: str | None) -> None:
    """UsageError if two outputs, or an output and ``database``, are the same file, or
    if a name holds a NUL byte (no file can have it: the OS calls refuse it)."""
    named = [*outputs, *([("--db", database)] if database is not None else [])]
    for option, path in named:
        if "\0" in path:
            raise UsageError(f"{option} '{printable(path)}': a file name cannot hold a NUL byte")
    seen: dict[tuple[str, object], str] = {}
    if database is not None:
        key = _identity(database)
        if key is not None:
            seen[key] = f"the history database '{printable(database)}'"
    for option, path in outputs:
        if path == "-":
            continue
        key = _identity(path)
        if key is None:
            continue
        if key in seen:
            raise UsageError(
                f"{option} '{printable(path)}' is the same file as {seen[key]}:"
                " give each output its own file"
            )
        seen[key] = f"another output ('{printable(path)}')"


class OutputFile:
    """One output: a stream to write, then ``commit`` (into place) or ``discard``."""

    def __init__(self, path: str, kind: str, faults: Faults) -> None:
        self.path = path
        self.kind = kind
        self._temp: str | None = None
        fd = self._open(path)
        file = open(fd, "w", encoding="utf-8", newline="")  # noqa: SIM115 (commit closes)
        self.stream = guarded(file, printable(path), faults)

    def _open(self, path: str) -> int:
        with contextlib.suppress(FileNotFoundError):
            info = os.stat(path)
            if not stat.S_ISREG(info.st_mode):  # a device or pipe: nothing to replace
                return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        folder, name = os.path.split(os.path.abspath(path))
        temp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except PermissionError:
            # A directory we may not write, holding a file we may: write that file itself,
            # but never through a symbolic link.
            flags = os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(path, flags)
        self._temp = temp
        with contextlib.suppress(OSError):  # keep the mode of the file it replaces
            old = os.lstat(path)
            if stat.S_ISREG(old.st_mode):
                os.fchmod(fd, stat.S_IMODE(old.st_mode))
        return fd

    def put_in_place(self) -> None:
        if self._temp is not None:
            os.replace(self._temp, self.path)
            self._temp = None

    def commit(self) -> None:
        """Flush, close and rename into place (a no-op for what is already there)."""
        self.stream.close()
        self.put_in_place()

    def discard(self) -> None:
        """Close and remove what was created (a temporary file); nothing else is touched."""
        with contextlib.suppress(OSError, ValueError):
            self.stream.close()
        if self._temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._temp)
            self._temp = None


def open_outputs(outputs: Iterable[tuple[str, str]], faults: Faults) -> list[OutputFile]:
    """Open every (kind, path); if one cannot be, remove those opened and raise UsageError."""
    opened: list[OutputFile] = []
    try:
        for kind, path in outputs:
            try:
                opened.append(OutputFile(path, kind, faults))
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise UsageError(f"cannot write '{printable(path)}': {reason}") from exc
        for output in opened:
            if output.kind in STREAMED:
                output.put_in_place()
    except BaseException:
        for output in opened:
            output.discard()
        raise
    return opened


def console(stream: TextIO, faults: Faults) -> TextIO:
    """Standard output or error, guarded: a reader gone away is recorded, not raised."""
    return guarded(stream, "<stdout>" if stream is sys.stdout else "<stderr>", faults, owns=False)
