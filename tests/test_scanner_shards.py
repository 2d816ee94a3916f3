"""``--shard I/N`` (scanner.py): parts of a scan are disjoint, cover it, need one key."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import portscout
from portscout import OptionError, State, scanner
from portscout.engines.processes import run_sharded
from portscout.permutation import Shard
from portscout.plan import HostList, Piece, Probe, ScanPlan, host_groups
from portscout.scanner import part_of
from tests.engines.conftest import serve


@given(
    hosts=st.integers(1, 40),
    ports=st.lists(st.integers(1, 65535), min_size=1, max_size=30, unique=True),
    group=st.integers(1, 50),
    n=st.integers(1, 12),
    key=st.integers(0, 2**64 - 1),
    randomize=st.booleans(),
)
def test_parts_are_disjoint_and_cover_every_group(
    hosts: int, ports: list[int], group: int, n: int, key: int, randomize: bool
) -> None:
    targets = HostList(IPv4Address(0xC6120000 + i) for i in range(hosts))
    every = {Probe(h, p) for h in targets for p in ports}
    seen: list[Probe] = []
    for g in host_groups(targets, group):
        for i in range(1, n + 1):
            plan, part = part_of(g, sorted(ports), key, (i, n), randomize)
            seen.extend(plan.probes(part))
    assert len(seen) == len(every)  # disjoint: nothing twice
    assert set(seen) == every  # and they cover the scan


def test_parts_of_a_large_group_split_it_by_host() -> None:
    """Each host meets one part (one scanner): every n-th host from the i-th, all ports."""
    targets = HostList(IPv4Address(0xC6120000 + i) for i in range(10))
    (g,) = host_groups(targets, 4096)
    owners = []
    for i in (1, 2, 3):
        plan, part = part_of(g, range(1, 51), 7, (i, 3), True)
        probes = list(plan.probes(part))
        owners.append({p.host for p in probes})
        assert len(probes) == 50 * len(owners[-1])  # every port of its hosts
    assert [sorted(o) for o in owners] == [sorted(targets[i::3]) for i in range(3)]


def test_parts_under_other_keys_overlap() -> None:
    """Why --shard needs --seed: each key walks another order."""
    targets = HostList([IPv4Address("198.18.0.1")])
    (g,) = host_groups(targets, 4096)
    a_plan, a = part_of(g, range(1, 1001), 1, (1, 2), True)
    b_plan, b = part_of(g, range(1, 1001), 2, (2, 2), True)
    assert set(a_plan.probes(a)) & set(b_plan.probes(b))


@pytest.mark.parametrize(
    ("shard", "key", "message"),
    [((0, 2), 1, "1 <= I <= N"), ((3, 2), 1, "1 <= I <= N"), ((1, 2), None, "needs --seed")],
)
def test_bad_shards_are_refused(shard: tuple[int, int], key: int | None, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        portscout.scan("127.0.0.1", 80, shard=shard, key=key)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shard", "1/2"], "--shard 1/2 needs --seed"),
        (["--shard", "half", "--seed", "1"], "invalid --shard 'half'"),
        (["--shard", "3/2", "--seed", "1"], "1 <= I <= N"),
    ],
)
def test_cli_refuses_bad_shards_in_one_line(argv: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "portscout", "127.0.0.1", "--no-db", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1


OPEN = (21, 22, 80, 443, 1500, 1999)


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize("discovery", [True, False])
def test_parts_of_a_scan_add_up_to_the_scan(discovery: bool) -> None:
    with serve({("127.0.0.1", port): "accept" for port in OPEN}):
        options = {"key": 77, "discovery": discovery, "keep_closed": True}
        whole = list(portscout.iscan("127.0.0.1", "1-2000", **options))
        parts = [
            list(portscout.iscan("127.0.0.1", "1-2000", shard=(i, 3), **options)) for i in (1, 2, 3)
        ]
    assert all(parts)
    seen = [(r.host, r.port, r.state) for part in parts for r in part]
    assert len(seen) == len(set(seen)) == 2000
    assert set(seen) == {(r.host, r.port, r.state) for r in whole}
    assert sorted(r.port for part in parts for r in part if r.state is State.OPEN) == list(OPEN)


@given(start=st.integers(0, 10**6), size=st.integers(0, 5000), count=st.integers(1, 17))
def test_a_shard_splits_into_disjoint_pieces_that_cover_it(
    start: int, size: int, count: int
) -> None:
    shard = Shard(start, start + size)
    pieces = shard.split(count)
    assert len(pieces) == count
    assert [i for piece in pieces for i in range(piece.start, piece.stop)] == list(
        range(shard.start, shard.stop)
    )
    assert max(map(len, pieces)) - min(map(len, pieces)) <= 1


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_worker_processes_split_a_group_by_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A group of several hosts goes to the worker processes host by host: each host meets
    one scanner (its timing learns its rate limits alone), and together they cover the
    scan exactly as one process does (5 hosts of which 127.0.0.1 listens, 2000 ports)."""
    seen: list[list[Piece]] = []

    def spy(given: list[Piece], *args: Any, **kwargs: Any) -> Any:
        seen.append(given)
        return run_sharded(given, *args, **kwargs)

    monkeypatch.setattr(scanner, "run_sharded", spy)
    options = {"key": 9, "discovery": False, "keep_closed": True}
    with serve({("127.0.0.1", port): "accept" for port in OPEN}):
        whole = list(portscout.iscan(["127.0.0.1-5"], "1-2000", processes=1, **options))
        split = list(portscout.iscan(["127.0.0.1-5"], "1-2000", processes=4, **options))
    (pieces,) = seen
    hosts = [{p.host for p in sent_by(piece)} for piece in pieces]
    assert len(pieces) == 4
    assert sum(map(len, hosts)) == len(set().union(*hosts)) == 5  # disjoint, all 5
    assert sorted((r.host, r.port, r.state) for r in split) == sorted(
        (r.host, r.port, r.state) for r in whole
    )


def sent_by(piece: Piece) -> list[Probe]:
    """The probes a worker given ``piece`` sends."""
    plan, shard, hosts = piece
    return [p for p in plan.probes(shard) if hosts is None or p.host in hosts]


def test_one_host_is_split_over_two_processes_at_most() -> None:
    plan = ScanPlan.create(HostList([IPv4Address("127.0.0.1")]), range(1, 1001), 3)
    pieces = plan.pieces(8)
    assert len(pieces) == 2
    assert sorted(p.port for piece in pieces for p in sent_by(piece)) == list(range(1, 1001))


@given(
    hosts=st.integers(1, 40), count=st.integers(1, 9), shards=st.integers(1, 4),
    up=st.sets(st.integers(0, 39)),
)  # fmt: skip
def test_pieces_give_each_host_to_one_worker_and_cover_the_part(
    hosts: int, count: int, shards: int, up: set[int]
) -> None:
    addresses = [IPv4Address(f"127.0.1.{i}") for i in range(hosts)]
    plan = ScanPlan.create(HostList(addresses), range(1, 21), 11)
    found = {addresses[i] for i in up if i < hosts}
    for shard in plan.shards(shards):
        pieces = plan.pieces(count, shard, found)
        sent = [sent_by(piece) for piece in pieces]
        assert sorted(p for probes in sent for p in probes) == sorted(
            p for p in plan.probes(shard) if p.host in found
        )
        if len(found) > 1:
            owners = [{p.host for p in probes} for probes in sent]
            assert sum(map(len, owners)) == len(set().union(*owners))


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize("discovery", [True, False])
def test_a_part_uses_the_worker_processes_and_parts_still_add_up(
    discovery: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--shard I/N`` on 2 worker processes, as a whole scan would run: each part (every
    third host) split between them by host, only the hosts found up; the parts stay
    disjoint and cover the scan (6 hosts of which 127.0.0.1 listens, 2000 ports)."""
    pieces: list[list[Piece]] = []

    def spy(given: list[Piece], *args: Any, **kwargs: Any) -> Any:
        pieces.append(given)
        return run_sharded(given, *args, **kwargs)

    monkeypatch.setattr(scanner, "run_sharded", spy)
    targets = ["127.0.0.1-6"]
    addresses = [IPv4Address(f"127.0.0.{i}") for i in range(1, 7)]
    with serve({("127.0.0.1", port): "accept" for port in OPEN}):
        options = {"key": 78, "discovery": discovery, "keep_closed": True, "processes": 2}
        whole = list(portscout.iscan(targets, "1-2000", **{**options, "processes": 1}))
        parts = [
            list(portscout.iscan(targets, "1-2000", shard=(i, 3), **options)) for i in (1, 2, 3)
        ]
    assert [len(p) for p in pieces] == [2, 2, 2]  # each part over 2 processes
    owners = [
        {h for h in addresses if h in (piece[2] or ())} for split in pieces for piece in split
    ]
    assert sorted(len(o) for o in owners) == [1] * 6  # each host: one process of one part
    assert set().union(*owners) == set(addresses)
    seen = [(r.host, r.port, r.state) for part in parts for r in part]
    assert len(seen) == len(set(seen)) == 12000
    assert set(seen) == {(r.host, r.port, r.state) for r in whole}
    assert sorted(r.port for part in parts for r in part if r.state is State.OPEN) == list(OPEN)


@pytest.mark.netns
@pytest.mark.usefixtures("isolated")
def test_workers_share_the_rate_among_those_that_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """One host on 8 processes runs on 2 (``ScanPlan.pieces``): each gets half of
    ``--max-rate``, not an eighth."""
    rates: list[float | None] = []

    def spy(given: list[Piece], engine: str, options: Any, **kwargs: Any) -> Any:
        rates.extend(options.timing.max_rate for _ in given)
        return run_sharded(given, engine, options, **kwargs)

    monkeypatch.setattr(scanner, "run_sharded", spy)
    options = {"key": 4, "discovery": False, "processes": 8, "max_rate": 20000}
    results = list(portscout.iscan(["127.0.0.1"], "1-2000", **options))
    assert len(results) == 2000
    assert rates == [10000, 10000]
