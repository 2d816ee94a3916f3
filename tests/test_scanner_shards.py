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
from portscout.plan import HostList, Probe, ScanPlan, host_groups
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
@pytest.mark.parametrize("discovery", [True, False])
def test_a_part_uses_the_worker_processes_and_parts_still_add_up(
    discovery: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--shard I/N`` on 2 worker processes, as a whole scan would run: each part's
    positions split between them, only the hosts found up; the parts stay disjoint and
    cover the scan (3 hosts of which 127.0.0.1 listens, 2000 ports)."""
    pieces: list[list[Shard]] = []

    def spy(plan: ScanPlan, shards: list[Shard], *args: Any, **kwargs: Any) -> Any:
        pieces.append(shards)
        return run_sharded(plan, shards, *args, **kwargs)

    monkeypatch.setattr(scanner, "run_sharded", spy)
    targets = ["127.0.0.1-3"]
    with serve({("127.0.0.1", port): "accept" for port in OPEN}):
        options = {"key": 78, "discovery": discovery, "keep_closed": True, "processes": 2}
        whole = list(portscout.iscan(targets, "1-2000", **{**options, "processes": 1}))
        parts = [
            list(portscout.iscan(targets, "1-2000", shard=(i, 3), **options)) for i in (1, 2, 3)
        ]
    assert [len(p) for p in pieces] == [2, 2, 2]  # each part over 2 processes
    seen = [(r.host, r.port, r.state) for part in parts for r in part]
    assert len(seen) == len(set(seen)) == 6000
    assert set(seen) == {(r.host, r.port, r.state) for r in whole}
    assert sorted(r.port for part in parts for r in part if r.state is State.OPEN) == list(OPEN)
