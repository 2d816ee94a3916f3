"""A keyed bijection on ``range(n)``: the order in which a scan walks its space.

Why a cyclic group: zmap walks the IPv4 space as the powers of a primitive root ``g``
modulo a prime ``p`` (Adrian, Durumeric et al., "Zippier ZMap", 2014). Each step is one
multiplication, so the walk costs nanoseconds per probe and needs no memory, and position
``k`` is reachable directly as ``x0 * g**k mod p``, so a shard is just a range of positions.
Elements of the group are ``1..p-1``; element ``e`` stands for scan index ``e - 1``, and
indices ``>= n`` are skipped ("cycle walking").

Unlike zmap's fixed primes, ``p`` is the smallest *safe* prime (``p = 2q + 1``, ``q``
prime) above ``n``: the order of the group is ``2q``, so testing a candidate generator needs
no factoring, and the skipped tail is tiny (safe primes are dense enough: the gap above
``n`` is about ``ln(n)**2``).

Core module: no I/O, no clock, no global randomness: every choice derives from ``key``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

# Deterministic Miller-Rabin bases: exact for all n < 3.3e24 (Sorenson & Webster, 2015);
# above that the test is probabilistic with error < 4**-13, irrelevant for walk order.
_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)


def is_probable_prime(n: int) -> bool:
    if n < 2:
        return False
    for b in _MR_BASES:
        if n % b == 0:
            return n == b
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for b in _MR_BASES:
        x = pow(b, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def next_safe_prime(n: int) -> int:
    """The smallest safe prime ``p = 2q + 1`` (``q`` prime) with ``p > n``; at least 5."""
    q = max(2, n // 2)
    while True:
        p = 2 * q + 1
        if p > n and is_probable_prime(q) and is_probable_prime(p):
            return p
        q += 1


def _key_stream(key: int, label: bytes) -> Iterator[int]:
    """Endless 64-bit numbers derived from ``key``: the only source of randomness here."""
    counter = 0
    while True:
        digest = hashlib.blake2b(
            label + counter.to_bytes(8, "big"),
            key=key.to_bytes(16, "big", signed=False),
            digest_size=8,
        ).digest()
        yield int.from_bytes(digest, "big")
        counter += 1


@dataclass(frozen=True, slots=True)
class Shard:
    """Positions ``[start, stop)`` of a permutation's cycle: a unit of work for one worker."""

    start: int
    stop: int

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def split(self, count: int) -> list[Shard]:
        """This shard in ``count`` contiguous pieces of nearly equal length: disjoint,
        covering it (a permutation's cycle in shards, a shard over worker processes)."""
        if count < 1:
            raise ValueError(f"shard count must be positive, got {count}")
        size = len(self)
        bounds = [self.start + size * i // count for i in range(count + 1)]
        return [Shard(bounds[i], bounds[i + 1]) for i in range(count)]


@dataclass(frozen=True, slots=True)
class Permutation:
    """The walk order over ``range(n)``: keyed and random-looking, or plain ascending.

    ``cycle`` is the number of positions (``p - 1`` when randomised, ``n`` otherwise); the
    walk over positions ``[0, cycle)`` yields every index of ``range(n)`` exactly once.
    """

    n: int
    key: int
    randomized: bool = True
    prime: int = 0
    generator: int = 1
    origin: int = 1

    @classmethod
    def create(cls, n: int, key: int, *, randomized: bool = True) -> Permutation:
        if n < 0 or key < 0 or key >= 2**128:
            raise ValueError(f"bad permutation parameters n={n} key={key}")
        if not randomized or n < 3:
            return cls(n=n, key=key, randomized=False)
        p = next_safe_prime(n)
        q = (p - 1) // 2
        stream = _key_stream(key, b"permutation")
        while True:
            g = 2 + next(stream) % (p - 3)
            if pow(g, 2, p) != 1 and pow(g, q, p) != 1:  # order is neither 1, 2 nor q
                break
        origin = 1 + next(stream) % (p - 1)
        return cls(n=n, key=key, randomized=True, prime=p, generator=g, origin=origin)

    @property
    def cycle(self) -> int:
        return self.prime - 1 if self.randomized else self.n

    def walk(self, shard: Shard | None = None) -> Iterator[int]:
        """Indices at positions ``shard.start .. shard.stop-1`` (all of them without a shard)."""
        start, stop = (0, self.cycle) if shard is None else (shard.start, shard.stop)
        start, stop = max(0, start), min(stop, self.cycle)
        if not self.randomized:
            yield from range(start, stop)
            return
        n, p, g = self.n, self.prime, self.generator
        x = self.origin * pow(g, start, p) % p
        for _ in range(stop - start):
            if x <= n:
                yield x - 1
            x = x * g % p

    def shards(self, count: int) -> list[Shard]:
        """Split the cycle into ``count`` contiguous shards of nearly equal length."""
        return Shard(0, self.cycle).split(count)
