"""The scan space: every (host, port) exactly once, lazily, whatever the sharding."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st

from portscout.plan import Probe, ScanPlan
from portscout.targets import parse_targets


@given(
    hosts=st.integers(1, 20),
    ports=st.lists(st.integers(1, 65535), min_size=1, max_size=30, unique=True),
    key=st.integers(0, 2**32),
    shards=st.integers(1, 5),
)
def test_every_probe_once_across_shards(
    hosts: int, ports: list[int], key: int, shards: int
) -> None:
    targets = parse_targets([f"198.18.0.1-{hosts}"])
    plan = ScanPlan.create(targets, sorted(ports), key)
    probes = [p for shard in plan.shards(shards) for p in plan.probes(shard)]
    expected = {Probe(IPv4Address(f"198.18.0.{h}"), p) for h in range(1, hosts + 1) for p in ports}
    assert len(probes) == len(expected) == plan.size
    assert set(probes) == expected


def test_large_target_set_stays_lazy() -> None:
    targets = parse_targets(["198.18.0.0/15"])
    plan = ScanPlan.create(targets, range(1, 65536), key=3)
    assert plan.size == 2**17 * 65535
    first = next(plan.probes())
    assert first.host in targets
    assert plan.probe_at(0) == Probe(IPv4Address("198.18.0.0"), 1)
