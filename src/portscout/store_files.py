"""The history database's files: where they may be created, who owns them, and the lock
that says which scans are being written.

Owns the file-system side of ``store``: private creation (directories 0700 and files 0600,
as XDG asks for the directories it creates), ownership under ``sudo``, the translation of
``OSError`` into ``StoreError`` naming the path, and ``ScanLocks``. Imports ``errors`` only.

Whether a scan is running is a lock, not a pid: the writing process holds an open file
description lock (Linux ``F_OFD_SETLK``) on byte ``scan id`` of a side file
``<database>-lock``. The kernel drops it when the process ends however it ends (SIGKILL
included); it cannot be confused by a reused pid, and it holds across pid namespaces that
share the file system. Taking it is what claims a scan (``Store.begin``/``Store.claim``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

from portscout.errors import StoreError

LOCK_SUFFIX = "-lock"
SIDE_SUFFIXES = ("-wal", "-shm", LOCK_SUFFIX)
_FLOCK = "hhqqi4x"  # struct flock on Linux: type, whence, start, len, pid (padded to 32)
MAX_SCAN_ID = 2**63 - 1  # SQLite's INTEGER


def describe(exc: OSError) -> str:
    """``strerror`` for people: "Permission denied", "Read-only file system"."""
    return exc.strerror or str(exc)


@contextlib.contextmanager
def os_errors(what: str, path: Path) -> Iterator[None]:
    """The one place an ``OSError`` on a history file becomes a one-line ``StoreError``."""
    try:
        yield
    except OSError as exc:
        raise StoreError(f"cannot {what} '{path}': {describe(exc)}") from exc


def _sudo_owner(environ: Mapping[str, str]) -> tuple[int, int] | None:
    """(uid, gid) of the user who ran ``sudo``, when this process is root under it."""
    if os.geteuid() != 0:
        return None
    try:
        uid, gid = int(environ["SUDO_UID"]), int(environ["SUDO_GID"])
    except (KeyError, ValueError):
        return None
    return (uid, gid) if uid != 0 else None


def _existing_ancestor(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path("/")


def create_private(path: Path, environ: Mapping[str, str] = os.environ) -> None:
    """Create the database file (and missing directories) privately, if it is missing.

    Under ``sudo`` (root with SUDO_UID/SUDO_GID) in a directory tree the invoking user
    owns (their home, kept by ``sudo``), what is created is given to that user: otherwise
    root would leave a database every later unprivileged scan fails to write.
    """
    with os_errors("open the history database", path):
        if path.exists():
            return
    owner = _sudo_owner(environ)
    with os_errors("create the history directory", path.parent):
        top = _existing_ancestor(path)
        if owner is not None and top.stat().st_uid != owner[0]:
            owner = None  # not the user's tree (say, /var/lib): leave it root's
        for directory in (*reversed(path.parent.parents), path.parent):
            if directory.exists():
                continue
            directory.mkdir(mode=0o700)
            if owner is not None:
                os.chown(directory, *owner)
    with os_errors("create the history database", path):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            return  # created meanwhile by another scan: fine, it is checked next
        try:
            if owner is not None:
                os.fchown(fd, *owner)
        finally:
            os.close(fd)


def match_owner(path: Path) -> None:
    """Give the side files (``-wal``, ``-shm``, ``-lock``) the database file's owner.

    Only root can, and only root needs to: a root scan of a user's database would
    otherwise leave side files that the user's next scan cannot open.
    """
    if os.geteuid() != 0:
        return
    try:
        info = path.stat()
        if info.st_uid == 0:
            return
        for suffix in SIDE_SUFFIXES:
            side = Path(f"{path}{suffix}")
            with contextlib.suppress(FileNotFoundError):
                if side.stat().st_uid != info.st_uid:
                    os.chown(side, info.st_uid, info.st_gid)
    except OSError:
        return  # best effort: the database itself is already usable


def check_writable(path: Path) -> None:
    """Refuse, naming the reason, a database this process may read but not write."""
    if not path.exists():
        return
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(f"history database '{path}' is not a regular file")
    if not os.access(path, os.W_OK):
        raise StoreError(
            f"history database '{path}' is not writable by this user"
            f" (owned by uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o});"
            " use --db for another file or --no-db"
        )
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise StoreError(
            f"cannot write the history next to '{path}': its directory is not writable"
            " (SQLite keeps its -wal and -shm files there)"
        )


class ScanLocks:
    """Which scans a process is writing: a lock on byte ``scan id`` of ``<db>-lock``.

    A writer (``writable=True``) opens the side file, creating it 0600; a reader opens it
    read-only if it exists (no file: nobody is writing) and only asks.
    """

    def __init__(self, database: Path, *, writable: bool) -> None:
        self.path = Path(f"{database}{LOCK_SUFFIX}")
        self._fd: int | None = None
        self._held: set[int] = set()
        if writable:
            with os_errors("open the history lock", self.path):
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            return
        with contextlib.suppress(FileNotFoundError, PermissionError):
            self._fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)

    def close(self) -> None:
        """Closing releases every lock taken through this object."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._held.clear()

    def _fcntl(self, command: int, kind: int, scan_id: int) -> tuple[int, ...]:
        assert self._fd is not None
        request = struct.pack(_FLOCK, kind, os.SEEK_SET, scan_id, 1, 0)
        return struct.unpack(_FLOCK, fcntl.fcntl(self._fd, command, request))

    def acquire(self, scan_id: int) -> bool:
        """Take scan ``scan_id``'s lock; False when another holder has it."""
        if self._fd is None:
            raise StoreError(f"the history lock '{self.path}' is not open for writing")
        try:
            self._fcntl(fcntl.F_OFD_SETLK, fcntl.F_WRLCK, scan_id)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise StoreError(f"cannot lock '{self.path}': {describe(exc)}") from exc
        self._held.add(scan_id)
        return True

    def release(self, scan_id: int) -> None:
        self._held.discard(scan_id)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self._fcntl(fcntl.F_OFD_SETLK, fcntl.F_UNLCK, scan_id)

    def running(self, scan_id: int) -> bool:
        """Whether scan ``scan_id`` is being written, here or by another process."""
        if scan_id in self._held:
            return True
        if self._fd is None:
            return False
        try:
            kind = self._fcntl(fcntl.F_OFD_GETLK, fcntl.F_RDLCK, scan_id)[0]
        except OSError:
            return False
        return kind != fcntl.F_UNLCK
