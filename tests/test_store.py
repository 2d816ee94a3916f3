"""The history database without scanning: round trips, refusal of foreign or broken files,
commits on a fake clock, diffs, the progress monitors."""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import sqlite3
from array import array
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portscout.cli import main
from portscout.errors import StoreError
from portscout.history_config import config_from_record, config_record
from portscout.output.ndiff import diff_text
from portscout.output.normal import NormalWriter
from portscout.output.progress import LiveProgress, StatsLines, clock_text
from portscout.plan import Probe
from portscout.recorder import Recorder
from portscout.results import Certificate, ClosedPorts, Reason, Result, ScanMeta, Service, State
from portscout.scanner import Scan, ScanConfig
from portscout.store import (
    APPLICATION_ID,
    ScanStatus,
    Store,
    default_path,
    diff_scans,
    rebuild_report,
)
from portscout.store_schema import SCHEMA_VERSION, runs, unrun
from portscout.timing import TimingPolicy

LOCAL = IPv4Address("127.0.0.1")


def _meta(ports: tuple[int, ...] = (22, 80, 443, 8080), started: float = 1.7e9) -> ScanMeta:
    return ScanMeta(
        args=("portscout", "127.0.0.1", "-p", "22,80,443,8080"),
        scan_type="connect",
        engine="async",
        ports=ports,
        started=started,
        version="0.1.0",
        key=2**100 + 7,  # above SQLite's 64-bit integers: stored as text
        hostnames={LOCAL: "localhost"},
    )


def _result(port: int, state: State, host: str = "127.0.0.1") -> Result:
    reason = {State.OPEN: Reason.SYN_ACK, State.CLOSED: Reason.CONN_REFUSED}.get(
        state, Reason.NO_RESPONSE
    )
    rtt = None if state is State.FILTERED else 0.00025
    return Result(host=ip_address(host), port=port, state=state, reason=reason, rtt=rtt)


def _record(store: Store, results: list[Result], status: ScanStatus = ScanStatus.DONE) -> int:
    scan_id = store.begin(_meta(), {"targets": ["127.0.0.1"]}, planned=len(results))
    store.insert(scan_id, results, sent=len(results))
    store.end(scan_id, status, 1.7e9 + 2)
    return scan_id


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip(tmp_path: Path) -> None:
    results = [
        _result(22, State.OPEN),
        _result(80, State.CLOSED),
        _result(443, State.FILTERED),
        _result(8080, State.OPEN, "::1"),
        _result(8080, State.CLOSED),
    ]
    with Store.open(tmp_path / "h.db") as store:
        scan_id = _record(store, results)
        stored = store.load(scan_id)
        back = store.results(scan_id)
    assert stored.meta == _meta()
    assert stored.status is ScanStatus.DONE
    assert stored.counts == {State.OPEN: 2, State.CLOSED: 2, State.FILTERED: 1}
    # Closed ports are kept compactly: state and reason, no RTT.
    expect = sorted(
        (r if r.state is not State.CLOSED else Result(host=r.host, port=r.port,
         state=r.state, reason=r.reason) for r in results),
        key=lambda r: (r.host.version, int(r.host), r.port),
    )  # fmt: skip
    assert back == expect
    report = rebuild_report(stored, back)
    assert report.open_ports_by_host() == {
        ip_address("127.0.0.1"): [22],
        ip_address("::1"): [8080],
    }
    assert report.counts[State.CLOSED] == 2
    assert not report.interrupted
    assert report.key == 2**100 + 7


def test_done_probes_cover_every_state(tmp_path: Path) -> None:
    results = [_result(p, s) for p, s in ((1, State.OPEN), (2, State.CLOSED), (3, State.FILTERED))]
    with Store.open(tmp_path / "h.db") as store:
        scan_id = _record(store, results, ScanStatus.INTERRUPTED)
        assert store.done_probes(scan_id) == {Probe(LOCAL, p) for p in (1, 2, 3)}
        assert store.load(scan_id).shown_status == "interrupted"


def test_header_marks_the_file_as_ours(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    Store.open(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def _foreign_sqlite(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (text)")
    db.execute("INSERT INTO notes VALUES ('keep me')")
    db.commit()
    db.close()


def _truncated(path: Path) -> None:
    with Store.open(path) as store:
        _record(store, [_result(p, State.CLOSED) for p in range(1, 3000)])
        _record(store, [_result(p, State.OPEN) for p in range(1, 3000)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + b"\xff" * 300)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("hello, not a database\n" * 50), "not a portscout history"),
        (_foreign_sqlite, "another application"),
        (lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\x00" * 84), "not a portscout"),
    ],
)
def test_foreign_files_refused_untouched(
    tmp_path: Path, make: object, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "other.db"
    make(path)  # type: ignore[operator]
    before, listing = _digest(path), sorted(tmp_path.iterdir())
    with pytest.raises(StoreError, match=message):
        Store.open(path)
    for argv in (["history", "--db", str(path)], ["127.0.0.1", "-p", "1", "--db", str(path)]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "Traceback" not in err
        assert str(path) in err
    assert _digest(path) == before
    assert sorted(tmp_path.iterdir()) == listing  # no -wal/-shm left behind


def test_corrupt_database_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "h.db"
    _truncated(path)
    before = _digest(path)
    for argv in (["history"], ["show", "2"], ["diff", "1", "2"], ["resume", "2"]):
        code = main([*argv, "--db", str(path)])
        err = capsys.readouterr().err
        assert code == 1, (argv, err)
        assert err.count("\n") == 1
        assert "Traceback" not in err
    assert _digest(path) == before


def test_newer_schema_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    Store.open(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store.open(path)
    with pytest.raises(StoreError, match="no history database"):
        Store.open(tmp_path / "absent.db", readonly=True)
    assert not (tmp_path / "absent.db").exists()
    with pytest.raises(StoreError, match="directory"):
        Store.open(tmp_path)
    with Store.open(tmp_path / "fresh.db") as store, pytest.raises(StoreError, match="no scan 4"):
        store.load(4)


def test_default_path_follows_xdg() -> None:
    assert default_path({"XDG_DATA_HOME": "/x"}) == Path("/x/portscout/history.sqlite3")
    assert default_path({"HOME": "/home/u"}) == Path(
        "/home/u/.local/share/portscout/history.sqlite3"
    )


def test_recorder_commits_once_a_second(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "h.db"
    with Store.open(path) as store:
        scan_id = store.begin(_meta(), {}, planned=10)
        recorder = Recorder(store, scan_id, clock=lambda: now[0], interval=1.0)
        reader = Store.open(path, readonly=True)

        def stored() -> int:
            return len(reader.results(scan_id))

        recorder.add([_result(1, State.CLOSED)], sent=1)
        now[0] = 0.5
        recorder.add([_result(2, State.OPEN)], sent=1)
        assert stored() == 0
        now[0] = 1.0
        recorder.add([])  # an empty batch is the clock tick
        assert stored() == 2
        recorder.add([_result(3, State.FILTERED)], sent=2)
        recorder.close(ScanStatus.INTERRUPTED, 5.0)
        assert stored() == 3
        scan = reader.load(scan_id)
        assert (scan.status, scan.probes_sent, scan.finished) == (ScanStatus.INTERRUPTED, 4, 5.0)
        reader.close()


def test_a_unit_is_recorded_done_in_the_commit_of_its_results(tmp_path: Path) -> None:
    """A Dask unit done waits for the commit that holds its results: a crash before
    that commit loses both, never the results alone with the unit marked done."""
    now = [0.0]
    path = tmp_path / "h.db"
    with Store.open(path) as store:
        scan_id = store.begin(_meta(), {}, planned=10)
        recorder = Recorder(store, scan_id, clock=lambda: now[0], interval=1.0)
        with Store.open(path, readonly=True) as reader:
            recorder.add_unit((0, 4, 1, 2))
            recorder.add([_result(1, State.OPEN)], sent=1)
            assert (reader.units(scan_id), reader.results(scan_id)) == (frozenset(), [])
            now[0] = 1.0
            recorder.add([])
            assert reader.units(scan_id) == {(0, 4, 1, 2)}
            assert [r.port for r in reader.results(scan_id)] == [1]


def test_diff_text_and_json(tmp_path: Path) -> None:
    a = [_result(22, State.OPEN), _result(80, State.CLOSED), _result(443, State.OPEN)]
    a += [_result(22, State.OPEN, "127.0.0.2")]
    b = [_result(22, State.OPEN), _result(80, State.OPEN), _result(443, State.FILTERED)]
    b += [_result(22, State.FILTERED, "127.0.0.2"), _result(22, State.CLOSED, "127.0.0.3")]
    with Store.open(tmp_path / "h.db") as store:
        diff = diff_scans(store, _record(store, a), _record(store, b))
    data = diff.to_dict()
    assert data["summary"] == {
        "hosts_up": 1, "hosts_down": 1, "opened": 1, "closed": 1, "filtered": 2, "gone": 0,
    }  # fmt: skip
    json.dumps(data)
    text = diff_text(diff, {80: "http", 443: "https"})
    assert text.splitlines()[0].startswith("-portscout 0.1.0 scan 1 initiated")
    assert text.splitlines()[1].startswith("+portscout 0.1.0 scan 2 initiated")
    host = text.split(" localhost (127.0.0.1):\n")[1].split("\n\n")[0]
    assert host.splitlines() == [
        " PORT        STATE     SERVICE",
        "-80/tcp      closed    http",
        "+80/tcp      open      http",
        "-443/tcp     open      https",
        "+443/tcp     filtered  https",
    ]
    assert " 127.0.0.2:\n-Host is up.\n+Host is down.\n" in text
    assert " 127.0.0.3:\n+Host is up.\n" in text


def test_config_record_rebuilds_the_config() -> None:
    config = ScanConfig(
        targets=["127.0.0.1", "::1"], ports=[22, 80], excludes=["127.0.0.2"],
        engine="async", timing=TimingPolicy.template(4), timeout=0.5, max_retries=2,
        max_in_flight=10, workers=5, rate=100.0, processes=1, key=12345, randomize=False,
        args=("portscout", "x"),
    )  # fmt: skip
    record = json.loads(json.dumps(config_record(Scan(config), {})))
    done = frozenset({Probe(LOCAL, 22)})
    back = config_from_record(record, done)
    assert back.done == done
    for name in ScanConfig.__dataclass_fields__:
        if name not in ("done", "keep_closed"):
            mine, theirs = getattr(config, name), getattr(back, name)
            assert (tuple(mine) if isinstance(mine, list) else mine) == theirs, name
    with pytest.raises(StoreError, match="does not know"):
        config_from_record({**record, "warp": 9}, done)


def test_stats_lines_on_a_fake_clock() -> None:
    now = [100.0]
    out = io.StringIO()
    stats = StatsLines(out, 10.0, clock=lambda: now[0])
    stats.start(65535, done=0)
    now[0] = 105.0
    stats.update(6000, [_result(22, State.OPEN)])
    assert out.getvalue() == ""
    now[0] = 110.0
    stats.update(12345, [])
    stats.finish()
    first = out.getvalue().splitlines()[0]
    assert first == (
        "Stats: 0:00:10 elapsed; 12345/65535 probes (18.8%), 1234 probes/s, ETA 0:00:43; 1 open"
    )
    assert clock_text(3725) == "1:02:05"


def test_live_progress_prints_open_ports() -> None:
    out = io.StringIO()
    live = LiveProgress(out, terminal=True)
    live.start(100, done=10, found_open=1)
    live.update(50, [_result(22, State.OPEN), _result(23, State.CLOSED)])
    live.update(100, [_result(8080, State.OPEN, "::1")])
    live.finish()
    text = out.getvalue()
    assert "Discovered open port 22/tcp on 127.0.0.1" in text
    assert "Discovered open port 8080/tcp on ::1" in text
    assert "23/tcp" not in text
    assert IPv6Address("::1")  # the bar itself is rich's business; its text is not pinned


@given(st.sets(st.integers(0, 65535), max_size=300))
def test_closed_port_runs_round_trip(ports: set[int]) -> None:
    """Runs give back exactly the ports, and no two runs touch (each is maximal)."""
    found = runs(ports)
    assert list(unrun(found)) == sorted(ports)
    assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(found))


def test_closed_ports_as_groups_are_stored_once(tmp_path: Path) -> None:
    """Closed ports arrive as results or as ``ClosedPorts`` groups and come back the same;
    a port offered twice (two commits, two processes) is stored once: the bitmaps merge."""
    path = tmp_path / "h.db"
    with Store.open(path) as store:
        scan_id = store.begin(_meta(), {"targets": ["127.0.0.1"]}, planned=7)
        group = ClosedPorts(LOCAL, Reason.RESET, array("H", [9, 7, 65535, 256]))
        store.insert(scan_id, [_result(22, State.OPEN), _result(8, State.CLOSED)], 5, [group])
        store.insert(scan_id, [_result(22, State.OPEN)], 0, [group])  # again: no copies
        store.end(scan_id, ScanStatus.DONE, 1.7e9 + 2)
        results = store.results(scan_id)
        assert store.load(scan_id).counts[State.CLOSED] == 5
    assert [(r.port, r.state) for r in results] == [
        (7, State.CLOSED), (8, State.CLOSED), (9, State.CLOSED), (22, State.OPEN),
        (256, State.CLOSED), (65535, State.CLOSED),
    ]  # fmt: skip


# The schema 2 layout as portscout 0.1 wrote it (closed ports packed or as JSON runs).
_SCHEMA_2 = """
CREATE TABLE scan (id INTEGER PRIMARY KEY, args TEXT NOT NULL, config TEXT NOT NULL,
    engine TEXT NOT NULL, scan_type TEXT NOT NULL, ports TEXT NOT NULL, key TEXT NOT NULL,
    version TEXT NOT NULL, hostnames TEXT NOT NULL, started REAL NOT NULL, finished REAL,
    status TEXT NOT NULL, pid INTEGER, runs INTEGER NOT NULL DEFAULT 1,
    probes_planned INTEGER NOT NULL, probes_sent INTEGER NOT NULL DEFAULT 0,
    n_open INTEGER NOT NULL DEFAULT 0, n_closed INTEGER NOT NULL DEFAULT 0,
    n_filtered INTEGER NOT NULL DEFAULT 0);
CREATE TABLE result (scan_id INTEGER NOT NULL REFERENCES scan (id) ON DELETE CASCADE,
    host TEXT NOT NULL, protocol TEXT NOT NULL, port INTEGER NOT NULL, state TEXT NOT NULL,
    reason TEXT NOT NULL, rtt REAL, tries INTEGER NOT NULL, reason_ttl INTEGER,
    PRIMARY KEY (scan_id, host, protocol, port)) WITHOUT ROWID;
CREATE TABLE closed (scan_id INTEGER NOT NULL REFERENCES scan (id) ON DELETE CASCADE,
    host TEXT NOT NULL, protocol TEXT NOT NULL, reason TEXT NOT NULL, ports BLOB NOT NULL,
    n INTEGER NOT NULL);
INSERT INTO scan VALUES (1, '["portscout", "127.0.0.1"]', '{"targets": ["127.0.0.1"]}',
    'async', 'connect', '[[1, 9]]', '7', '0.1.0', '{}', 1.7e9, 1.7e9, 'done', NULL, 1, 9, 9,
    1, 6, 0);
INSERT INTO result VALUES (1, '127.0.0.1', 'tcp', 4, 'open', 'syn-ack', 0.001, 1, NULL);
INSERT INTO closed VALUES (1, '127.0.0.1', 'tcp', 'conn-refused', '[[1,3],[5,5]]', 4);
INSERT INTO closed VALUES (1, '127.0.0.1', 'tcp', 'conn-refused', X'07000900', 2);
"""


def _schema_2(path: Path, *, closed_blob: bytes | None = None) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(_SCHEMA_2)
    if closed_blob is not None:
        db.execute("UPDATE closed SET ports = ? WHERE n = 2", (closed_blob,))
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute("PRAGMA user_version = 2")
    db.close()


def _user_version(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def test_older_schema_read_as_is_and_migrated_by_a_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """history/show/diff read a schema 2 file without changing a byte; a writing command
    migrates it (closed ports to bitmaps) in one transaction, results unchanged."""
    path = tmp_path / "h.db"
    _schema_2(path)
    before = _digest(path)
    with Store.open(path, readonly=True) as store:
        old = [(r.port, r.state) for r in store.results(1)]
    assert old == [(1, State.CLOSED), (2, State.CLOSED), (3, State.CLOSED), (4, State.OPEN),
                   (5, State.CLOSED), (7, State.CLOSED), (9, State.CLOSED)]  # fmt: skip
    for argv in (["history"], ["show", "1", "-q"], ["diff", "1", "1"]):
        assert main([*argv, "--db", str(path)]) == 0, capsys.readouterr().err
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.db"]
    with Store.open(path) as store:
        assert [(r.port, r.state) for r in store.results(1)] == old
        assert store.load(1).counts[State.CLOSED] == 6
    assert _user_version(path) == SCHEMA_VERSION


@pytest.mark.parametrize(
    ("make", "message"),
    [
        # A "v1" file with our id and no tables: refused, not bumped to v2 and then broken.
        (lambda p: _bare_ours(p, 1), "no table 'scan'"),
        # A damaged row stops the migration half-way: nothing of it stays.
        (lambda p: _schema_2(p, closed_blob=b"\x01\x02\x03"), "odd length"),
    ],
)
def test_migration_checks_first_and_is_all_or_nothing(
    tmp_path: Path, make: object, message: str
) -> None:
    path = tmp_path / "h.db"
    make(path)  # type: ignore[operator]
    before = _digest(path)
    for readonly in (True, False):
        with pytest.raises(StoreError, match=message) as info:
            Store.open(path, readonly=readonly).results(1)
        assert "\n" not in str(info.value)
    assert _digest(path) == before
    assert _user_version(path) in (1, 2)


def _bare_ours(path: Path, version: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {version}")
    db.close()


def test_forget_deletes_scans_with_their_results(tmp_path: Path) -> None:
    """All of the named scans or none: an unknown id or a running scan changes nothing."""
    path = tmp_path / "h.db"
    with Store.open(path) as store:
        kept = _record(store, [_result(22, State.OPEN), _result(23, State.CLOSED)])
        gone = _record(store, [_result(80, State.OPEN), _result(81, State.CLOSED)])
        running = store.begin(_meta(), {"targets": ["127.0.0.1"]}, planned=1)  # our pid
        with pytest.raises(StoreError, match="no scan 99"):
            store.forget([gone, 99])
        with pytest.raises(StoreError, match=f"scan {running} is still running"):
            store.forget([gone, running])
        assert [s.id for s in store.scans()] == [running, gone, kept]
        store.forget([gone])
        assert [s.id for s in store.scans()] == [running, kept]
        assert [r.port for r in store.results(kept)] == [22, 23]
    with sqlite3.connect(path) as db:
        for table in ("result", "closed"):
            count = db.execute(f"SELECT count(*) FROM {table} WHERE scan_id = ?", (gone,))
            assert count.fetchone()[0] == 0


def test_forget_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "h.db"
    assert main(["forget", "1", "--db", str(path)]) == 1  # no database: one line, nothing made
    assert "no history database" in capsys.readouterr().err
    assert not path.exists()
    with Store.open(path) as store:
        scan_id = _record(store, [_result(22, State.OPEN)])
    assert main(["forget", str(scan_id), "--db", str(path)]) == 0
    with Store.open(path, readonly=True) as store:
        assert store.scans() == []


def test_diff_folds_bulk_changes_and_lists_open_ones(tmp_path: Path) -> None:
    # A top-ports scan against a full one: thousands of ports "not scanned -> closed" are
    # one count; every change to or from open is listed (was: a line per port).
    a = [_result(port, State.CLOSED) for port in range(1, 31)]
    b = [_result(port, State.CLOSED) for port in range(1, 2001) if port != 22]
    b += [_result(22, State.OPEN), *(_result(p, State.FILTERED) for p in range(2001, 2011))]
    with Store.open(tmp_path / "h.db") as store:
        diff = diff_scans(store, _record(store, a), _record(store, b))
    hosts = diff.to_dict()["hosts"]
    assert isinstance(hosts, list)
    (host,) = hosts
    assert host["ports"] == [{"port": 22, "protocol": "tcp", "a": "closed", "b": "open"}] + [
        {"port": p, "protocol": "tcp", "a": None, "b": "filtered"} for p in range(2001, 2011)
    ]
    assert host["folded"] == [{"a": None, "b": "closed", "count": 1970, "ports": "31-2000"}]
    text = diff_text(diff, {22: "ssh"})
    assert "-Not shown: 1970 unscanned ports\n+Not shown: 1970 closed ports\n" in text
    assert "-22/tcp      closed    ssh\n+22/tcp      open      ssh" in text
    assert len(text.splitlines()) < 40


@pytest.mark.parametrize(
    ("status", "ending"),
    [(ScanStatus.DONE, "done"), (ScanStatus.INTERRUPTED, "interrupted"),
     (ScanStatus.FAILED, "failed")],
)  # fmt: skip
def test_a_shown_scan_ends_as_it_ended(tmp_path: Path, status: ScanStatus, ending: str) -> None:
    # Was: a failed scan was shown as "interrupted".
    with Store.open(tmp_path / "h.db") as store:
        scan_id = _record(store, [_result(22, State.OPEN)], status)
        report = rebuild_report(store.load(scan_id), store.results(scan_id))
    assert report.ending == ending
    text = io.StringIO()
    writer = NormalWriter(text)
    writer.start(_meta())
    writer.finish(report)
    assert (f"scan {ending}: results are incomplete" in text.getvalue()) == (ending != "done")


def test_services_are_kept_and_diffed(tmp_path: Path) -> None:
    # -sV's findings reach the history: show gets them back, diff sees a version change.
    cert = Certificate(
        subject="CN=lab",
        issuer="CN=lab",
        sans=("lab.test",),
        not_before="2026-01-01T00:00:00Z",
        not_after="2027-01-01T00:00:00Z",
    )
    old = Service(name="ssh", product="OpenSSH", version="9.2p1",
                  cpes=("cpe:/a:openbsd:openssh:9.2p1",))  # fmt: skip
    new = Service(name="http", product="nginx", version="1.26.3", tunnel="ssl", certificate=cert)
    a = [_result(22, State.OPEN)._replace(service=old), _result(443, State.OPEN)]
    newer = Service(name="ssh", product="OpenSSH", version="9.6p1")
    b = [_result(22, State.OPEN)._replace(service=newer),
         _result(443, State.OPEN)._replace(service=new)]  # fmt: skip
    with Store.open(tmp_path / "h.db") as store:
        first, second = _record(store, a), _record(store, b)
        back = {r.port: r.service for r in store.results(second)}
        assert back == {22: newer, 443: new}
        diff = diff_scans(store, first, second)
    (host,) = diff.hosts
    assert [(p.port, p.before_service, p.after_service) for p in host.ports] == [
        (22, "ssh OpenSSH 9.2p1", "ssh OpenSSH 9.6p1")  # 443: -sV on one side only
    ]
    assert "+22/tcp      open      ssh OpenSSH 9.6p1" in diff_text(diff, {})


def test_schema_4_gets_the_table_of_dask_units_and_units_are_recorded(tmp_path: Path) -> None:
    """A schema 4 file (no ``unit`` table) reads as having no unit done, unchanged; a
    writer migrates it; units done are recorded with results, once, and go with the scan."""
    path = tmp_path / "h.db"
    with Store.open(path) as store:
        scan_id = _record(store, [_result(22, State.OPEN)], ScanStatus.INTERRUPTED)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("DROP TABLE unit")
        db.execute("PRAGMA user_version = 4")
    before = _digest(path)
    with Store.open(path, readonly=True) as store:
        assert store.units(scan_id) == frozenset()
    assert _digest(path) == before
    with Store.open(path) as store:
        store.insert(scan_id, [_result(80, State.CLOSED)], 1, units=[(0, 4, 1, 2)])
        store.insert(scan_id, [], 0, units=[(0, 4, 1, 2), (0, 4, 2, 2)])
        assert store.units(scan_id) == {(0, 4, 1, 2), (0, 4, 2, 2)}
        assert [r.port for r in store.results(scan_id)] == [22, 80]
        store.forget([scan_id])
    assert _user_version(path) == SCHEMA_VERSION == 5
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT count(*) FROM unit").fetchone()[0] == 0
