"""The walk order: a bijection on range(n), shards that partition it, keyed and repeatable."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portscout.permutation import Permutation, Shard, is_probable_prime, next_safe_prime


@given(n=st.integers(0, 3000), key=st.integers(0, 2**64 - 1), randomized=st.booleans())
def test_walk_is_a_bijection(n: int, key: int, randomized: bool) -> None:
    walk = list(Permutation.create(n, key, randomized=randomized).walk())
    assert sorted(walk) == list(range(n))


@given(n=st.integers(0, 3000), key=st.integers(0, 2**64 - 1), count=st.integers(1, 9))
def test_shards_partition_the_walk(n: int, key: int, count: int) -> None:
    perm = Permutation.create(n, key)
    shards = perm.shards(count)
    assert shards[0].start == 0
    assert shards[-1].stop == perm.cycle
    assert all(a.stop == b.start for a, b in itertools.pairwise(shards))
    assert [i for s in shards for i in perm.walk(s)] == list(perm.walk())


def test_same_key_same_order_other_key_other_order() -> None:
    a = list(Permutation.create(65535, 7).walk())
    assert a == list(Permutation.create(65535, 7).walk())
    assert a != list(Permutation.create(65535, 8).walk())


def test_random_order_is_not_port_order() -> None:
    walk = list(Permutation.create(1000, 1).walk())
    ascending_steps = sum(1 for a, b in itertools.pairwise(walk) if b == a + 1)
    assert ascending_steps < 20


def test_ordered_walk_is_ascending() -> None:
    assert list(Permutation.create(10, 5, randomized=False).walk()) == list(range(10))


def test_walk_of_a_middle_shard_starts_where_the_full_walk_is() -> None:
    perm = Permutation.create(500, 99)
    full = list(perm.walk())
    cycle_positions = list(perm.walk(Shard(0, 100)))
    assert full[: len(cycle_positions)] == cycle_positions


@pytest.mark.parametrize(("n", "expected"), [(0, 5), (4, 5), (5, 7), (100, 107), (65535, 65543)])
def test_next_safe_prime(n: int, expected: int) -> None:
    p = next_safe_prime(n)
    assert p == expected
    assert is_probable_prime(p)
    assert is_probable_prime((p - 1) // 2)


def test_primality_on_known_values() -> None:
    assert [n for n in range(30) if is_probable_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    assert is_probable_prime(2**61 - 1)
    assert not is_probable_prime(3215031751)  # a strong pseudoprime to bases 2, 3, 5, 7


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="bad permutation"):
        Permutation.create(-1, 0)
    with pytest.raises(ValueError, match="positive"):
        Permutation.create(10, 0).shards(0)
