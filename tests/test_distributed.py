"""Shards on Dask (distributed.py): a LocalCluster of 2 worker processes inside the test
session's namespace gives exactly the single-process scan, a worker killed mid-scan
included; --dask without Dask is one line; resume after the client was killed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from portscout.api import iscan
from portscout.distributed import DaskRun, Unit, connect, worker_threads
from portscout.errors import ScanError, StoreError, TargetError
from portscout.lab.netns import check_isolated
from portscout.plan import Probe
from portscout.results import Result, State
from portscout.scanner import Scan, ScanConfig, part_of
from portscout.store import Store
from tests.engines.conftest import nft_rules, serve

pytest.importorskip("distributed")

OPEN = (22, 80, 443, 1500, 1999)
LISTENERS = {("127.0.0.1", port): "accept" for port in OPEN}


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A LocalCluster of 2 worker processes, started from (so inside) this namespace."""
    check_isolated()
    with connect("local:2") as c:
        yield c


def keys(results: list[Result]) -> list[tuple[object, int, State]]:
    return sorted((r.host, r.port, r.state) for r in results)


def dask_results(client: Any, config: ScanConfig, *, parts: int | None = None) -> list[Result]:
    scan = Scan(config)
    return [r for batch in DaskRun(scan, client, parts=parts).batches() for r in batch]


@pytest.mark.netns
def test_workers_are_in_the_test_namespace(client: Any) -> None:
    ours = os.readlink("/proc/self/ns/net")
    theirs = client.run(os.readlink, "/proc/self/ns/net")
    assert len(theirs) == 2
    assert set(theirs.values()) == {ours}


@pytest.mark.netns
@pytest.mark.parametrize("discovery", [True, False])
def test_shards_on_two_workers_give_the_single_process_scan(client: Any, discovery: bool) -> None:
    config = ScanConfig(targets=["127.0.0.1"], ports="1-2000", key=3, discovery=discovery)
    with serve(LISTENERS):
        single = list(iscan("127.0.0.1", "1-2000", key=3, discovery=discovery))
        spread = dask_results(client, config, parts=4)
    assert len(spread) == 2000  # each port once
    assert keys(spread) == keys(single)
    assert sorted(r.port for r in spread if r.state is State.OPEN) == list(OPEN)


@pytest.mark.netns
def test_library_scan_with_an_executor(client: Any) -> None:
    import portscout

    with serve(LISTENERS):
        report = portscout.scan("127.0.0.1", "1-2000", executor=client, key=9)
    assert report.open_ports("127.0.0.1") == list(OPEN)
    assert sum(report.counts.values()) == 2000
    assert report.probes_sent == 2000


@pytest.mark.netns
def test_a_worker_killed_mid_scan_still_gives_the_exact_scan(client: Any) -> None:
    """At 400 probes/s in all (200 a worker) the scan takes 5 s; one worker process is
    SIGKILLed after 1.5 s; Dask runs its unit again on a worker that is left."""
    pids = list(client.run(os.getpid).values())
    config = ScanConfig(targets=["127.0.0.1"], ports="1-2000", key=4, discovery=False, rate=400.0)
    killer = threading.Timer(1.5, os.kill, (pids[0], signal.SIGKILL))
    with serve(LISTENERS):
        killer.start()
        try:
            spread = dask_results(client, config)
        finally:
            killer.cancel()
    assert pids[0] not in client.run(os.getpid).values()  # it did die
    assert len(spread) == 2000
    assert keys(spread) == [(IPv4Address("127.0.0.1"), p, State.OPEN if p in OPEN
                             else State.CLOSED) for p in range(1, 2001)]  # fmt: skip


class FakeClient:
    """Enough of a client for planning: two worker threads, nothing submitted."""

    def wait_for_workers(self, n: int) -> None:
        pass

    def scheduler_info(self) -> dict[str, Any]:
        return {"workers": {"a": {"nthreads": 1}, "b": {"nthreads": 1}}}


def test_a_resumed_scan_submits_only_units_with_probes_left() -> None:
    first = Scan(ScanConfig(targets=["198.18.0.0/30"], ports="1-100", key=5, hostgroup=2))
    run = DaskRun(first, FakeClient(), parts=3)  # type: ignore[arg-type]
    everything = [(g, u) for g, units in run.units() for u in units]
    assert len(everything) == 2 * 3  # two groups of 2 hosts, three parts each
    assert worker_threads(FakeClient()) == 2  # type: ignore[arg-type]
    group, unit = everything[4]
    plan, part = part_of(group, first.ports, 5, (unit.index, unit.count), True)
    done = frozenset(plan.probes(part)) | {Probe(IPv4Address("198.18.0.0"), 1)}
    again = Scan(ScanConfig(targets=["198.18.0.0/30"], ports="1-100", key=5, hostgroup=2,
                            done=done))  # fmt: skip
    resumed = DaskRun(again, FakeClient(), parts=3)  # type: ignore[arg-type]
    left = [u for _, units in resumed.units() for u in units]
    assert left == [u for _, u in everything if u != unit]
    assert resumed.skipped == 1
    probe = Probe(IPv4Address("198.18.0.0"), 1)
    jobs = [resumed._job_for(Unit(0, 2, i, 3)).config.done for i in (1, 2, 3)]
    assert sorted(map(len, jobs)) == [0, 0, 1]  # each unit gets its own answered probes
    assert {probe} in jobs


def test_dask_missing_is_one_line() -> None:
    code = (
        "import sys; sys.modules['distributed'] = None; from portscout.cli import main;"
        " sys.exit(main(['127.0.0.1', '--no-db', '--dask', 'local:2']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == "portscout: --dask needs Dask: pip install 'portscout[dask]'\n"


def stored(db: Path) -> list[tuple[str, int, State]]:
    with Store.open(db, readonly=True) as store:
        return sorted((str(r.host), r.port, r.state) for r in store.results(1))


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_resume_with_dask_after_the_client_was_killed(tmp_path: Path) -> None:
    """8 units (4 hosts in groups of 1, 2 parts each) of 250 probes at 150/s a worker:
    the client is killed (with its cluster) when some units are in; resume runs the rest."""
    db = tmp_path / "h.db"
    argv = [sys.executable, "-m", "portscout", "127.0.0.1-4", "-p", "1-500", "--seed", "6",
            "-Pn", "--max-rate", "300", "--max-hostgroup", "1", "--db", str(db), "--dask",
            "local:2", "-q"]  # fmt: skip
    with serve(LISTENERS):
        proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            for _ in range(200):  # until a unit is recorded (at most 20 s)
                time.sleep(0.1)
                if db.exists() and stored_count(db) > 0:
                    break
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the client and its cluster
            proc.wait()
        before = stored_count(db)
        assert 0 < before < 2000
        resumed = subprocess.run(
            [sys.executable, "-m", "portscout", "resume", "1", "--db", str(db), "--dask",
             "local:2", "-q"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    results = stored(db)
    assert len(results) == 2000
    assert [(h, p) for h, p, state in results if state is State.OPEN] == [
        ("127.0.0.1", p) for p in OPEN if p <= 500
    ]


def stored_count(db: Path) -> int:
    try:
        return len(stored(db))
    except StoreError:
        return 0


@pytest.mark.netns
def test_stragglers_are_submitted_again_and_the_first_copy_wins(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """127.0.0.2 drops every probe (its units wait out timeouts) while 127.0.0.1's units
    end at once: the slow units are submitted again; each port is counted once."""
    import portscout.distributed as dist

    monkeypatch.setattr(dist, "STRAGGLER_SAMPLES", 2)
    monkeypatch.setattr(dist, "STRAGGLER_MIN_SECONDS", 0.3)
    config = ScanConfig(
        targets=["127.0.0.1-2"], ports="1-50", key=8, discovery=False, hostgroup=1,
        timeout=1.0, max_retries=2,
    )  # fmt: skip
    client.run(__import__, "portscout.scanner")  # warm workers: units of 127.0.0.1 take ms
    scan = Scan(config)
    run = DaskRun(scan, client, parts=2)
    with serve(LISTENERS), nft_rules("ip daddr 127.0.0.2 drop", hook="input"):
        results = [r for batch in run.batches() for r in batch]
    assert run.resubmitted >= 1, run.durations
    assert len(results) == 100
    assert keys(results) == sorted(
        [(IPv4Address("127.0.0.1"), p, State.OPEN if p in OPEN else State.CLOSED)
         for p in range(1, 51)]
        + [(IPv4Address("127.0.0.2"), p, State.FILTERED) for p in range(1, 51)]
    )  # fmt: skip


def test_each_worker_thread_gets_its_share_of_the_rate() -> None:
    scan = Scan(ScanConfig(targets=["198.18.0.0/30"], ports="1-100", key=5, rate=400.0))
    run = DaskRun(scan, FakeClient(), parts=2)  # type: ignore[arg-type]
    assert run.job.config.timing is not None
    assert run.job.config.timing.max_rate == 200.0  # 2 worker threads: 400/s in all
    assert scan.policy.max_rate == 400.0


def test_an_unreachable_scheduler_is_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import portscout.distributed as dist

    monkeypatch.setattr(dist, "CONNECT_SECONDS", 0.5)
    with (
        pytest.raises(ScanError, match=r"cannot reach the Dask scheduler at 'tcp://127\.0\.0"),
        connect("tcp://127.0.0.1:9"),
    ):
        pass


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_ctrl_c_of_a_dask_scan_keeps_what_came_in(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    argv = [sys.executable, "-m", "portscout", "127.0.0.1-4", "-p", "1-500", "--seed", "6",
            "-Pn", "--max-rate", "300", "--max-hostgroup", "1", "--db", str(db), "--dask",
            "local:2", "-q"]  # fmt: skip
    with serve(LISTENERS):
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        for _ in range(200):  # until a unit is recorded (at most 20 s)
            time.sleep(0.1)
            if db.exists() and stored_count(db) > 0:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "recorded as scan 1 (interrupted)" in err
    assert "Traceback" not in err
    assert 0 < stored_count(db) < 2000


@pytest.fixture
def running_cluster(tmp_path: Path, isolated: None) -> Iterator[str]:
    """``dask scheduler`` and ``dask worker --nworkers 2`` started apart from the scan, as
    on a cluster of machines; yields the scheduler's address."""
    dask = str(Path(sys.executable).parent / "dask")
    info = tmp_path / "scheduler.json"
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                 "--scheduler-file", str(info)]  # fmt: skip
    procs = [subprocess.Popen(scheduler, **quiet)]
    try:
        for _ in range(300):
            if info.exists() and info.read_text().strip():
                break
            time.sleep(0.1)
        procs.append(subprocess.Popen([dask, "worker", "--scheduler-file", str(info),
                                       "--nworkers", "2", "--nthreads", "1", "--no-dashboard"],
                                      **quiet))  # fmt: skip
        yield json.loads(info.read_text())["address"]
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=30)


@pytest.mark.netns
def test_a_running_scheduler_through_the_command_line(running_cluster: str, tmp_path: Path) -> None:
    scan = [sys.executable, "-m", "portscout", "127.0.0.1", "-p", "1-2000", "--seed", "2",
            "--no-db", "-q", "--no-fold"]  # fmt: skip
    with serve(LISTENERS):
        local = subprocess.run([*scan, "-oJ", str(tmp_path / "local.jsonl")], timeout=60)
        spread = subprocess.run(
            [*scan, "--dask", running_cluster, "-oJ", str(tmp_path / "dask.jsonl")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert local.returncode == 0
    assert spread.returncode == 0, spread.stderr

    def ports(name: str) -> list[tuple[str, int, str]]:
        lines = (tmp_path / name).read_text().splitlines()
        return [(r["host"], r["port"], r["state"]) for r in map(json.loads, lines) if "port" in r]

    assert len(ports("dask.jsonl")) == 2000
    assert ports("dask.jsonl") == ports("local.jsonl")


def test_workers_use_the_names_the_client_resolved() -> None:
    def resolver(name: str) -> list[IPv4Address]:
        return [IPv4Address("198.18.0.7"), IPv4Address("198.18.0.9")]

    scan = Scan(ScanConfig(targets=["lab.example", "198.18.0.1"], ports="80", key=1),
                resolver=resolver)  # type: ignore[arg-type]  # fmt: skip
    job = DaskRun(scan, FakeClient()).job  # type: ignore[arg-type]
    # the address the client's target set holds for the name (the first, as nmap)
    assert job.resolve("lab.example") == [IPv4Address("198.18.0.7")]
    with pytest.raises(TargetError, match="not resolved by the client"):
        job.resolve("other.example")
    again = Scan(job.config, resolver=job.resolve)
    assert [again.targets[i] for i in range(again.targets.size)] == [
        scan.targets[i] for i in range(scan.targets.size)
    ]


def recorded_units(db: Path) -> frozenset[tuple[int, int, int, int]]:
    try:
        with Store.open(db, readonly=True) as store:
            return store.units(1)
    except StoreError:
        return frozenset()


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_resume_of_a_dask_scan_runs_only_the_units_not_recorded_done(tmp_path: Path) -> None:
    """Two hosts down (unreachable lab addresses: their units end at once, no probe
    answered) and ::1 up after them (a unit of 1000 ports, 6.7 s at 150 probes/s a
    worker). The client is killed once the down hosts' units are recorded done, while
    ::1's runs: the resume runs ::1's unit only, and the result is exact."""
    db = tmp_path / "h.db"
    argv = [sys.executable, "-m", "portscout", "198.18.0.1-2", "::1", "-p", "1-1000",
            "--seed", "6", "--max-rate", "300", "--max-hostgroup", "1", "--db", str(db),
            "--dask", "local:2", "-q"]  # fmt: skip
    down = {(0, 1, 1, 1), (1, 2, 1, 1)}  # targets 0 and 1, one part each
    with serve({("::1", port): "accept" for port in OPEN}):
        proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            for _ in range(600):  # until the down hosts' units are recorded (at most 60 s)
                time.sleep(0.1)
                if down <= recorded_units(db):
                    break
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the client and its cluster
            proc.wait()
        assert recorded_units(db) == down, "the scan ended before it was killed"
        resumed = subprocess.run(
            [sys.executable, "-m", "portscout", "resume", "1", "--db", str(db), "--dask",
             "local:2", "-q", "-d"],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    submitted = re.findall(r"unit (\d+)-(\d+) part (\d+)/(\d+) submitted", resumed.stderr)
    assert submitted == [("2", "3", "1", "1")]  # ::1's unit, not the down hosts'
    assert recorded_units(db) == {*down, (2, 3, 1, 1)}
    results = stored(db)
    assert len(results) == 1000
    assert [(h, p) for h, p, state in results if state is State.OPEN] == [
        ("::1", p) for p in OPEN if p <= 1000
    ]


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_ctrl_c_closes_a_local_cluster_within_a_second() -> None:
    """SIGINT while both workers are inside a unit (1000 probes at 150/s a worker): the
    command is gone within a second, cluster closed (was 4 s: the nannies waited for the
    busy workers)."""
    argv = [sys.executable, "-m", "portscout", "127.0.0.1-4", "-p", "1-1000", "--seed", "6",
            "-Pn", "--max-rate", "300", "--max-hostgroup", "1", "--no-db", "--dask",
            "local:2", "-q", "-d"]  # fmt: skip
    with serve(LISTENERS):
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        for line in proc.stderr:  # until units are out (the cluster is up), at most 60 s
            if "part 1/1 submitted" in line:
                break
        time.sleep(1.0)
        assert proc.poll() is None, "ended before the interrupt"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    assert proc.returncode == 130, err  # (-d lets Dask log its closed connections)
    assert took < 1.0, f"{took:.2f} s"
