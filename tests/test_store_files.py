"""The history's files under faults: locks held by other processes, permissions, sudo,
read-only directories, paths that cannot be a database, deleted scans that must not linger.

Nothing here scans: processes that hold a lock are small Python children, and commands run
as ``nobody`` to meet the permission checks root would bypass.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import portscout
from portscout.cli import main
from portscout.errors import StoreError
from portscout.results import State
from portscout.store import ScanStatus, Store
from portscout.store_files import MAX_SCAN_ID
from tests.test_store import _meta, _record, _result

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"
ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(SYSTEM_PYTHON),
    reason="needs root (to act as nobody) and /usr/bin/python3",
)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory every user may enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="portscout-shared-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=True)


def _portscout(
    argv: list[str], *, user: int | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **env}
    python = sys.executable
    if user is not None:  # our interpreter and checkout may sit where nobody cannot read
        python = SYSTEM_PYTHON
        environ["PYTHONPATH"] = _readable_copy()
    return subprocess.run(
        [python, "-m", "portscout", *argv], capture_output=True, text=True, timeout=60,
        user=user, group=user, extra_groups=[] if user is not None else None, env=environ,
        cwd="/",
    )  # fmt: skip


_COPIES: list[str] = []


def _readable_copy() -> str:
    """A copy of the portscout package in a directory every user can read (the checkout
    may be in root's home, as in CI's clone): what ``nobody`` imports. Made once."""
    if not _COPIES:
        root = Path(tempfile.mkdtemp(prefix="portscout-src-"))
        root.chmod(0o755)
        shutil.copytree(Path(portscout.__file__).parent, root / "portscout",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _COPIES.append(str(root))
    return _COPIES[0]


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_created_private(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "h.db"
    Store.open(path).close()
    for directory in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(f"{path}-lock").stat().st_mode) == 0o600


_HOLD = textwrap.dedent("""
    import sys, time
    from portscout.store import Store
    from tests.test_store import _meta
    store = Store.open(sys.argv[1])
    print(store.begin(_meta(), {}, planned=1), flush=True)
    time.sleep(60)
""")


def test_running_is_a_lock_not_a_pid(tmp_path: Path) -> None:
    """A scan is running while its process holds the lock (whatever its pid says), and
    killed once that process is gone, SIGKILL included."""
    path = tmp_path / "h.db"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).parent.parent)  # fmt: skip
    try:
        assert holder.stdout is not None
        scan_id = int(holder.stdout.readline())
        with Store.open(path) as store:
            assert store.load(scan_id).running
            with pytest.raises(StoreError, match="still running"):
                store.claim(scan_id)
            with pytest.raises(StoreError, match="still running"):
                store.forget([scan_id])
    finally:
        holder.kill()
        holder.communicate()
    with Store.open(path) as store:
        assert store.load(scan_id).shown_status == "killed"
        # A pid that is alive (ours) does not make a scan without its lock running.
        with sqlite3.connect(path) as db:
            db.execute("UPDATE scan SET pid = ? WHERE id = ?", (os.getpid(), scan_id))
        assert store.load(scan_id).shown_status == "killed"
        assert store.claim(scan_id).id == scan_id


_CLAIM = textwrap.dedent("""
    import sys, time
    from portscout.errors import StoreError
    from portscout.store import Store
    store = Store.open(sys.argv[1])
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # start together
    try:
        store.claim(1)
        print("claimed", flush=True)
        time.sleep(1)
    except StoreError as exc:
        print("refused", exc, flush=True)
""")


def test_two_claims_one_winner(tmp_path: Path) -> None:
    """Two resumes of one scan started at the same moment: exactly one gets it."""
    import time

    path = tmp_path / "h.db"
    with Store.open(path) as store:
        _record(store, [_result(1, State.OPEN)], ScanStatus.INTERRUPTED)
    start = str(time.time() + 3.0)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIM, str(path), start],
            text=True,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).parent.parent,
        )
        for _ in range(4)
    ]
    outcomes = sorted(child.communicate(timeout=30)[0].split()[0] for child in children)
    assert outcomes == ["claimed", "refused", "refused", "refused"]


def test_huge_planned_count_and_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """2001:db8::/64 -p 80 plans 2**64 probes, past SQLite's INTEGER: stored capped, not an
    OverflowError (nothing is scanned here: the store is given the count)."""
    with Store.open(tmp_path / "h.db") as store:
        scan_id = store.begin(_meta(), {}, planned=2**64)
        assert store.load(scan_id).probes_planned == MAX_SCAN_ID
        with pytest.raises(StoreError, match="no scan"):
            store.load(10**23)
        assert len(store.scans(10**20)) == 1
    db = str(tmp_path / "h.db")
    for argv, code in [
        (["show", "99999999999999999999999"], 2),
        (["history", "-n", "99999999999999999999"], 0),
        (["history", "-n", "-1"], 2),
        (["diff", "0", "1"], 2),
    ]:
        assert main([*argv, "--db", db]) == code, argv
        err = capsys.readouterr().err
        assert err.count("\n") == (code != 0), err


def test_forget_overwrites_what_it_deletes(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with Store.open(path) as store:
        scan_id = store.begin(_meta(), {"secret": "ZZSECRETZZ" * 50}, planned=1)
        store.end(scan_id, ScanStatus.DONE, 1.0)
    with Store.open(path) as store:
        store.forget([scan_id])
    data = path.read_bytes() + (
        Path(f"{path}-wal").read_bytes() if Path(f"{path}-wal").exists() else b""
    )
    assert b"ZZSECRETZZ" not in data


@pytest.mark.parametrize(
    ("db", "message"),
    [
        ("/proc/x/y.db", "cannot create the history directory '/proc/x': No such file"),
        ("/etc/passwd/x.db", "'/etc/passwd/x.db': Not a directory"),
    ],
)
def test_impossible_paths_are_one_line(
    db: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["127.0.0.1", "-p", "1", "--db", db]) == 1  # refused before any probe
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err
    assert main(["resume", "1", "--db", db]) == 1
    assert main(["forget", "1", "--db", db]) == 1


def test_resume_of_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "none" / "h.db"
    assert main(["resume", "1", "--db", str(path)]) == 1
    assert not path.parent.exists()


@ROOT_ONLY
def test_permissions_said_as_such(shared_tmp: Path) -> None:
    """As nobody: an unwritable home, a missing tree, a root-owned database (which
    ``history`` still reads, WAL and all, in a directory nobody cannot write)."""
    _one_line_error(
        _portscout(["127.0.0.1", "-p", "1"], user=NOBODY, HOME="/root", XDG_DATA_HOME=""),
        1, "'/root/.local/share/portscout/history.sqlite3': Permission denied",
    )  # fmt: skip
    _one_line_error(
        _portscout(["127.0.0.1", "-p", "1", "--db", "/nonexist/x/h.db"], user=NOBODY),
        1, "Permission denied",
    )  # fmt: skip
    db = shared_tmp / "h.db"
    with Store.open(db) as store:
        _record(store, [_result(22, State.OPEN)])
    db.chmod(0o644)
    listed = _portscout(["history", "--db", str(db)], user=NOBODY)
    assert listed.returncode == 0, listed.stderr
    assert "done" in listed.stdout
    _one_line_error(
        _portscout(["forget", "1", "--db", str(db)], user=NOBODY),
        1, "not writable by this user", "uid 0",
    )  # fmt: skip


@ROOT_ONLY
def test_sudo_creates_the_users_database(shared_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root under sudo, HOME kept: the database in the user's tree is the user's, so that
    their next unprivileged scan can write it."""
    home = shared_tmp / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    monkeypatch.setenv("SUDO_UID", str(NOBODY))
    monkeypatch.setenv("SUDO_GID", str(NOBODY))
    db = home / ".local" / "share" / "portscout" / "history.sqlite3"
    with Store.open(db) as store:
        _record(store, [_result(22, State.OPEN)])
    for path in (db, db.parent, home / ".local", Path(f"{db}-lock")):
        assert (path.stat().st_uid, path.stat().st_gid) == (NOBODY, NOBODY), path
    forgot = _portscout(["forget", "1", "--db", str(db)], user=NOBODY)
    assert forgot.returncode == 0, forgot.stderr
