"""The command under faults, made real: a history locked by another process, a full disk,
/dev/full, a reader that went away, outputs that collide or are symbolic links, bad input
quoted safely, and SIGTERM/SIGHUP at each stage of a scan. Every scan targets 127.0.0.1
inside the test session's private network namespace."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from libnmap.parser import NmapParser

from portscout.cli import main, one_line
from portscout.running import deferred_signals, stop_signals_raise
from tests.engines.conftest import nft_rules, serve

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("isolated")]

PORTSCOUT = [sys.executable, "-m", "portscout"]
ROOT = Path(__file__).parent.parent


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PORTSCOUT, *argv], capture_output=True, text=True, timeout=60, **kw)  # type: ignore[call-overload, no-any-return]


def _stored(db: Path) -> dict[int, str]:
    """Port -> state of scan 1, every port (--no-fold), host records skipped."""
    out = _run(["show", "1", "--db", str(db), "-oJ", "-", "--no-fold", "-q"]).stdout
    records = [json.loads(line) for line in out.splitlines()]
    return {r["port"]: r["state"] for r in records if "port" in r}


_LOCKER = textwrap.dedent("""
    import sqlite3, sys, time
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    db.execute("COMMIT")
""")


def test_history_locked_by_another_process_loses_nothing(tmp_path: Path) -> None:
    """The write lock held past the busy timeout: the scan still finishes its outputs and
    table, warns, and exits 1; held briefly, the batch waits and everything is stored."""
    db, xml = tmp_path / "h.db", tmp_path / "scan.xml"
    assert main(["127.0.0.1", "-p", "1", "--db", str(db), "-q"]) == 0  # the file exists
    with serve({("127.0.0.1", 7022): "accept"}):
        locker = subprocess.Popen([sys.executable, "-c", _LOCKER, str(db), "60"],
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert locker.stdout is not None
            assert locker.stdout.readline() == "locked\n"
            proc = _run(["127.0.0.1", "-p", "7000-7100", "--db", str(db), "-oX", str(xml)])
        finally:
            locker.kill()
            locker.communicate()
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "7022/tcp" in proc.stdout  # the table
        assert "not fully recorded in the history" in proc.stderr
        (host,) = NmapParser.parse_fromfile(str(xml)).hosts  # complete, </nmaprun> and all
        assert host.get_open_ports() == [(7022, "tcp")]
        # Held for a while mid-scan: the batches wait for the lock; nothing is lost.
        slow = ["127.0.0.1", "-p", "7000-7030", "-r", "--engine", "sequential", "--db", str(db)]
        with nft_rules("tcp dport 7010-7015 drop"):
            scan = subprocess.Popen([*PORTSCOUT, *slow, "--timeout", "0.5", "--max-retries",
                                     "0", "-q"], stderr=subprocess.PIPE, text=True)  # fmt: skip
            _wait_for(lambda: _scans(db) == 2)
            locker = subprocess.Popen([sys.executable, "-c", _LOCKER, str(db), "2"],
                                      stdout=subprocess.PIPE, text=True)  # fmt: skip
            locker.communicate(timeout=30)
            _, err = scan.communicate(timeout=60)
    assert scan.returncode == 0, err
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT n_open, n_closed, n_filtered, status FROM scan WHERE id = 2")
        assert rows.fetchone() == (1, 24, 6, "done")


def _scans(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM scan").fetchone()[0])
    except sqlite3.Error:
        return 0


_FULL_DISK = """
set -e
mount -t tmpfs -o size=256k tmpfs "$1"
{portscout} 127.0.0.1 -p 1 -q --db "$1/h.db" > /dev/null
dd if=/dev/zero of="$1/spare" bs=1k count=40 2>/dev/null
dd if=/dev/zero of="$1/fill" bs=4k 2>/dev/null || true
rm "$1/spare"  # 40 kB left: the database opens, its commits soon fail
{portscout} 127.0.0.1 -p 6990-7010 -r --engine sequential --timeout 0.4 --max-retries 0 \
    --db "$1/h.db" -oJ "$2" || echo "exit=$?"
"""


def test_full_disk_keeps_the_scan(tmp_path: Path) -> None:
    """ENOSPC on the history mid-scan (a full tmpfs in a private mount namespace): the
    JSON lines and the table are whole, the warning said once, and the exit code 1."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    script = _FULL_DISK.format(portscout=" ".join(PORTSCOUT))
    with serve({("127.0.0.1", 7001): "accept"}), nft_rules("tcp dport 7005-7009 drop"):
        proc = subprocess.run(
            ["unshare", "-m", "sh", "-c", script, "sh", str(mount), str(tmp_path / "o.jsonl")],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
    assert "Traceback" not in proc.stderr
    assert "exit=1" in proc.stdout, proc.stdout + proc.stderr
    assert "7001/tcp" in proc.stdout
    assert proc.stderr.count("the disk is full") == 2, proc.stderr  # the warning, the end
    lines = (tmp_path / "o.jsonl").read_text().splitlines()
    assert sum('"port"' in line for line in lines) == 21  # and the host's record


def test_dev_full_is_one_line_and_the_history_keeps_the_scan(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    with serve({("127.0.0.1", 7001): "accept"}):
        proc = _run(["127.0.0.1", "-p", "7000-7002", "--db", str(db), "-oJ", "/dev/full", "-q"])
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "portscout: error: cannot write '/dev/full': No space left on device"
    ]
    assert _stored(db) == {7000: "closed", 7001: "open", 7002: "closed"}


@pytest.mark.parametrize(("option", "lines"), [("-oJ", 1), ("-oX", 2)])
def test_a_reader_that_leaves_closes_quietly(tmp_path: Path, option: str, lines: int) -> None:
    """``| head -N``: no traceback, no message (as cat), the history keeps what was found."""
    db = tmp_path / "h.db"
    script = f"{' '.join(PORTSCOUT)} 127.0.0.1 -p 1-3000 --db {db} {option} - | head -{lines}"
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr
    assert "error" not in proc.stderr, proc.stderr
    assert "Broken pipe" not in proc.stderr
    assert len(proc.stdout.splitlines()) == lines
    listed = json.loads(_run(["history", "--db", str(db), "--json"]).stdout)
    assert listed[0]["status"] in ("interrupted", "done")
    assert int(listed[0]["probes"].split("/")[0]) > 0


def test_outputs_that_are_one_file_are_refused_before_anything(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    assert main(["127.0.0.1", "-p", "1", "--db", str(db), "-q"]) == 0
    before = db.read_bytes()
    (tmp_path / "link").symlink_to(db)
    for argv in (
        ["-oJ", str(db)],
        ["-oX", str(tmp_path / "a"), "-oG", str(tmp_path / "a")],
        ["-oA", str(tmp_path / "b"), "-oX", str(tmp_path / "b.xml")],
    ):
        proc = _run(["127.0.0.1", "-p", "1", "--db", str(db), *argv])
        assert proc.returncode == 2, proc.stderr
        assert "same file" in proc.stderr
        assert proc.stderr.count("\n") == 1
    assert db.read_bytes() == before
    assert not (tmp_path / "a").exists()
    assert main(["127.0.0.1", "-p", "1", "--no-db", "-oX", "/dev/null", "-oG", "/dev/null"]) == 0
    # A link to the database names a new file: the link is replaced, the database kept.
    assert main(["127.0.0.1", "-p", "1", "--db", str(db), "-oX", str(tmp_path / "link")]) == 0
    assert not (tmp_path / "link").is_symlink()


def test_outputs_replace_a_link_never_its_target(tmp_path: Path) -> None:
    """A symbolic link at an output's name is replaced by the new file; its target stays.
    A later output that cannot be opened removes the earlier ones (nothing half made)."""
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    names = ("scan.xml", "scan.jsonl", "scan.nmap")
    for name in names:
        (tmp_path / name).symlink_to(victim)
    out = [str(tmp_path / name) for name in names]
    argv = ["-oX", out[0], "-oJ", out[1], "-oN", out[2], "-q"]
    assert main(["127.0.0.1", "-p", "1", "--no-db", *argv]) == 0
    assert victim.read_text() == "keep me\n"
    assert not any(Path(p).is_symlink() for p in out)
    assert "</nmaprun>" in Path(out[0]).read_text()
    assert Path(out[2]).read_text().splitlines()[-1].startswith("# portscout done at")
    fresh = [str(tmp_path / "new.xml"), str(tmp_path / "new.jsonl"), str(tmp_path / "new.nmap")]
    argv = ["-oX", fresh[0], "-oJ", fresh[1], "-oN", fresh[2]]
    argv += ["--csv", str(tmp_path / "no" / "dir.csv")]
    assert main(["127.0.0.1", "-p", "1", "--no-db", *argv]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [*sorted(names), "victim"]


@pytest.mark.parametrize("option", ["-oG", "-oN"])
def test_text_header_escapes_the_command_line(tmp_path: Path, option: str) -> None:
    """A newline in a file name does not start a line of its own in grepable or normal
    output (whose header repeats the command line)."""
    name = str(tmp_path / "x\nHost: 6.6.6.6 ()\tStatus: Up")
    assert main(["127.0.0.1", "-p", "1", "--no-db", option, name, "-q"]) == 0
    lines = Path(name).read_text().splitlines()
    assert not any(line.startswith("Host: 6.6.6.6") for line in lines)
    assert "x\\nHost: 6.6.6.6 ()\\tStatus: Up" in lines[0]


def test_bad_input_is_quoted_bounded_and_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    targets = tmp_path / "t.txt"
    targets.write_text("A" * 5_000_000 + "\x1b[31m\x00 127.0.0.1\n")
    assert main(["-iL", str(targets), "-p", "1", "--no-db"]) == 2
    err = capsys.readouterr().err
    assert len(err) < 500
    assert err.count("\n") == 1
    assert "\x1b" not in err
    assert "\x00" not in err
    assert "5000006 characters" in err or "characters" in err
    assert one_line("bad 'a\x1bb'") == "bad 'a\\x1bb'"
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf127.0.0.1\n")
    assert main(["-iL", str(bom), "-p", "1", "--no-db", "-q"]) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["127.0.0.1", "-p", "1", "--no-db", "-oJ", "a\0b"],
        ["127.0.0.1", "-p", "1", "--db", "h\0.db"],
        ["show", "1", "--db", "h\0.db"],
        ["-iL", "t\0.txt", "-p", "1", "--no-db"],
        ["127.0.0.1", "-p", "1", "--no-db", "--exclude-file", "x\0"],
    ],
)
def test_a_nul_byte_in_a_file_name_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """No file name can hold a NUL byte (the OS calls raise ValueError): one escaped line,
    exit 2, before anything is opened or sent."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "\\x00" in err
    assert "\0" not in err


@pytest.mark.parametrize("seed", ["-1", str(2**200), "0x"])
def test_seed_out_of_range_is_a_usage_error(seed: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["127.0.0.1", "-p", "1", "--no-db", "--seed", seed]) == 2
    err = capsys.readouterr().err
    assert "--seed" in err
    assert err.count("\n") == 1


def test_resume_scans_the_addresses_it_started_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name resolved again to another address (as /etc/hosts changed): the resume
    still scans the first one, and only its planned probes."""
    import portscout.scanner

    db = str(tmp_path / "h.db")
    answers = {"target.test": "127.0.0.1"}

    def resolver(name: str) -> list[object]:
        from ipaddress import ip_address

        return [ip_address(answers[name])]

    monkeypatch.setattr(portscout.scanner, "system_resolver", resolver)
    monkeypatch.setattr("portscout.cli.system_resolver", resolver)
    assert main(["target.test", "-Pn", "-p", "1-20", "-q", "--db", db]) == 0
    with sqlite3.connect(db) as conn:  # make it look interrupted half-way
        conn.execute("UPDATE scan SET status = 'interrupted'")
        conn.execute("DELETE FROM closed")
    answers["target.test"] = "127.0.0.2"
    assert main(["resume", "1", "--db", db, "-q"]) == 0
    stored = json.loads(_run(["show", "1", "--db", db, "-oJ", "-", "-q"]).stdout.splitlines()[0])
    assert stored["host"] == "127.0.0.1"
    assert len(_stored(Path(db))) == 20


# -- signals -----------------------------------------------------------------------------

SLOW = ["127.0.0.1", "-p", "1-140", "-r", "--engine", "sequential", "--timeout", "0.15",
        "--max-retries", "0"]  # fmt: skip


def _wait_for(predicate: object, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not predicate():  # type: ignore[operator]
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_stop_signal_while_scanning_is_ctrl_c(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM/SIGHUP mid-scan: sending stops, the XML is whole, the table printed, the
    scan recorded interrupted and resumable; exit 128 + signal."""
    db, xml, normal = tmp_path / "h.db", tmp_path / "s.xml", tmp_path / "s.nmap"
    with nft_rules("tcp dport { 20-30, 60-70, 100-110 } drop"):
        proc = subprocess.Popen([*PORTSCOUT, *SLOW, "--db", str(db), "-oX", str(xml),
                                 "-oN", str(normal)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
        _wait_for(lambda: db.exists() and _count(db) >= 20)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    assert "interrupted" in out
    assert "</nmaprun>" in xml.read_text()
    assert "# portscout scan interrupted" in normal.read_text()
    listed = json.loads(_run(["history", "--db", str(db), "--json"]).stdout)
    assert listed[0]["status"] == "interrupted"
    resumed = _run(["resume", "1", "--db", str(db), "-q"])
    assert resumed.returncode == 0, resumed.stderr
    assert len(_stored(db)) == 140


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc/*/stat)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_ends_the_scan_and_its_workers(tmp_path: Path, sig: signal.Signals) -> None:
    """A scan split over worker processes: the command leaves with 128 + signal within
    seconds, and no worker outlives it (forked with the command's stop handlers, they
    caught terminate() and the parent-death signal and scanned on)."""
    argv = ["127.0.0.1", "-p", "1-65535", "-Pn", "--max-rate", "2000", "--processes", "2"]
    with (tmp_path / "err").open("w") as err:
        proc = subprocess.Popen([*PORTSCOUT, *argv, "--db", str(tmp_path / "h.db"), "-q"],
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
        _wait_for(lambda: len(_children(proc.pid)) == 2)
        workers = _children(proc.pid)
        assert len(workers) == 2
        time.sleep(0.5)
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
            _wait_for(lambda: not any(_alive(pid) for pid in workers), seconds=5)
            survivors = [pid for pid in workers if _alive(pid)]
        finally:
            for pid in workers:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)  # the test leaves no process behind
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 128 + sig, (tmp_path / "err").read_text()
    assert survivors == []


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` (SigCgt in /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:"))[7:], 16)
    return bool(caught >> (sig - 1) & 1)


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM result").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_stop_signal_while_reading_targets(tmp_path: Path, sig: signal.Signals) -> None:
    """Parsing: blocked on ``-iL -`` (stdin open, nothing sent): one line, 128 + signal."""
    proc = subprocess.Popen([*PORTSCOUT, "-iL", "-", "--db", str(tmp_path / "h.db")],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    _wait_for(lambda: _catches(proc.pid, signal.SIGTERM))  # portscout's handlers are in (a
    time.sleep(0.2)  # loaded machine may take over a second to start), then it blocks reading
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, err
    assert err == "portscout: interrupted\n"
    assert not (tmp_path / "h.db").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_stop_signal_during_discovery(tmp_path: Path, sig: signal.Signals) -> None:
    """Discovery of hosts that never answer (on a veth of this namespace whose peer is
    down: packets vanish): stopped, recorded interrupted, 128 + signal."""
    db = tmp_path / "h.db"
    subprocess.run(["ip", "link", "add", "psdummy", "type", "veth", "peer", "name", "psdummy1"],
                   check=True)  # fmt: skip
    try:
        subprocess.run(["ip", "addr", "add", "198.18.5.1/24", "dev", "psdummy"], check=True)
        subprocess.run(["ip", "link", "set", "psdummy", "up"], check=True)
        proc = subprocess.Popen([*PORTSCOUT, "198.18.5.2-40", "-p", "80", "--db", str(db)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
        _wait_for(lambda: _scans(db) == 1)
        time.sleep(0.3)
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=30)
    finally:
        subprocess.run(["ip", "link", "del", "psdummy"], check=False)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    listed = json.loads(_run(["history", "--db", str(db), "--json"]).stdout)
    assert listed[0]["status"] == "interrupted"


def test_stop_signal_while_writing_waits_for_the_writers() -> None:
    """While the outputs are finished a stop signal is recorded, not raised: the command
    exits 128 + signal once they are whole (``run_scan``)."""
    with stop_signals_raise(), deferred_signals() as late:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.05)  # Python runs the handler at the next bytecode
    assert late == [signal.SIGTERM, signal.SIGHUP]
