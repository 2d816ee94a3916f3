"""Target specifications to lazy, indexable address sets: a /8 or an IPv6 /64 costs a few
integers, never a list of addresses.

Core module: imports only the standard library and ``errors``. Sends nothing: host names go
to a ``Resolver`` passed in (the socket-based one lives at the I/O edge).

Syntax, as nmap's "Target Specification" (one expression per string)::

    198.18.0.1           an IPv4 address
    198.18.0.0/22        a CIDR block; host bits may be set: 198.18.1.7/22 is that /22
    198.18.0-3.1-254     octet ranges: per octet a comma list of N, N-M, N-, -M, * or -
    198.18.1,3,5.1         (N- runs to 255, -M starts at 0; a full octet is * or -)
    ::1, 2001:db8::/64   an IPv6 address or block (no octet ranges, no %scope)
    scanme.example       a host name, resolved once: first IPv4 answer, else the first
    scanme.example/30    the name's address widened to its block, as nmap does

Excludes take the same syntax. A ``TargetSet`` is the union of its specs minus the union of
its excludes, kept per family as sorted disjoint integer intervals with prefix counts: its
index order is the IPv4 addresses ascending, then the IPv6 ones ascending, and ``ts[i]`` is
a binary search over the intervals.
"""

from __future__ import annotations

import os
import re
import sys
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from itertools import accumulate, product
from math import prod
from operator import index as as_index
from types import MappingProxyType

from portscout.errors import TargetError

Address = IPv4Address | IPv6Address
Resolver = Callable[[str], list[IPv4Address | IPv6Address]]
"""Name -> its addresses. May return ``[]`` or raise ``OSError`` when the name does not
resolve; either becomes ``TargetError("cannot resolve '<name>'")``."""

MAX_PATTERN_RANGES = 1 << 18
"""Most intervals one octet-range expression may expand to (about 30 MB of integers).
``198.18.*.1-254`` needs 256 and ``10.*.*.1-254`` 65,536; ``*.*.*.1`` (16.7 million) is
refused. CIDR blocks are one interval whatever their size."""

_Interval = tuple[int, int]  # inclusive bounds of an address run, as integers

_IPV4_PATTERN = re.compile(r"[0-9.,*-]+", re.ASCII)
_OCTET_ITEM = re.compile(r"([0-9]*)(?:(-)([0-9]*))?", re.ASCII)
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?", re.ASCII)
_ALL_IPV4 = (0, (1 << 32) - 1)


@dataclass(frozen=True, slots=True)
class _Ranges:
    """One family's addresses: sorted, disjoint, non-adjacent inclusive integer intervals.

    ``offsets[i]`` counts the addresses before interval ``i``, so position -> address and
    address -> position are each one bisect: O(log k) for k intervals.
    """

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    offsets: tuple[int, ...]
    size: int

    @classmethod
    def build(cls, merged: list[_Interval]) -> _Ranges:
        sizes = [hi - lo + 1 for lo, hi in merged]
        return cls(
            starts=tuple(lo for lo, _ in merged),
            ends=tuple(hi for _, hi in merged),
            offsets=tuple(accumulate(sizes, initial=0))[:-1],
            size=sum(sizes),
        )

    def at(self, position: int) -> int:
        """The address at ``0 <= position < size``."""
        run = bisect_right(self.offsets, position) - 1
        return self.starts[run] + position - self.offsets[run]

    def position(self, value: int) -> int | None:
        """Where ``value`` sits in index order, or ``None`` if absent."""
        run = bisect_right(self.starts, value) - 1
        if run >= 0 and value <= self.ends[run]:
            return self.offsets[run] + value - self.starts[run]
        return None


@dataclass(frozen=True, slots=True)
class TargetSet:
    """An immutable, ordered set of addresses: IPv4 ascending, then IPv6 ascending.

    Memory is O(intervals), not O(addresses). ``size`` is exact; ``len()`` equals it but, as
    for ``range``, raises ``OverflowError`` past ``sys.maxsize`` (an IPv6 /64 has 2**64
    addresses): use ``size`` where that can happen. ``hostnames`` maps addresses still in the
    set to the name the user wrote for them, for output.
    """

    _ipv4: _Ranges = field(repr=False)
    _ipv6: _Ranges = field(repr=False)
    hostnames: Mapping[Address, str] = field(hash=False)
    # IPv6 scope ids the user gave (``fe80::1%eth0``), by address: link-local addresses
    # need theirs to be reached, and the set stores bare integers.
    scopes: Mapping[int, str] = field(hash=False, default_factory=dict)

    @property
    def size(self) -> int:
        return self._ipv4.size + self._ipv6.size

    def __len__(self) -> int:
        if self.size > sys.maxsize:
            raise OverflowError(f"{self.size} targets do not fit len(); use TargetSet.size")
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def __getitem__(self, position: int) -> Address:
        """The address at ``position`` (negative counts from the end), in O(log k)."""
        position = as_index(position)
        if position < 0:
            position += self.size
        if not 0 <= position < self.size:
            raise IndexError("TargetSet index out of range")
        if position < self._ipv4.size:
            return IPv4Address(self._ipv4.at(position))
        value = self._ipv6.at(position - self._ipv4.size)
        scope = self.scopes.get(value) if self.scopes else None
        return IPv6Address(value) if scope is None else IPv6Address(f"{IPv6Address(value)}%{scope}")

    def index(self, address: Address) -> int:
        """The position of ``address``: the inverse of ``__getitem__``; ``ValueError`` if absent."""
        position = self._position(address)
        if position is None:
            raise ValueError(f"{address} is not in the target set")
        return position

    def __contains__(self, item: object) -> bool:
        return isinstance(item, IPv4Address | IPv6Address) and self._position(item) is not None

    def __iter__(self) -> Iterator[Address]:
        for start, end in zip(self._ipv4.starts, self._ipv4.ends, strict=True):
            yield from map(IPv4Address, range(start, end + 1))
        for start, end in zip(self._ipv6.starts, self._ipv6.ends, strict=True):
            if not self.scopes:
                yield from map(IPv6Address, range(start, end + 1))
                continue
            for value in range(start, end + 1):
                scope = self.scopes.get(value)
                yield IPv6Address(value if scope is None else f"{IPv6Address(value)}%{scope}")

    def ranges(self) -> Iterator[tuple[Address, Address]]:
        """The maximal runs of consecutive addresses, ``(first, last)``, in index order."""
        for start, end in zip(self._ipv4.starts, self._ipv4.ends, strict=True):
            yield IPv4Address(start), IPv4Address(end)
        for start, end in zip(self._ipv6.starts, self._ipv6.ends, strict=True):
            yield IPv6Address(start), IPv6Address(end)

    def __repr__(self) -> str:
        runs = len(self._ipv4.starts) + len(self._ipv6.starts)
        return f"TargetSet(size={self.size}, ranges={runs}, hostnames={dict(self.hostnames)!r})"

    def _position(self, address: Address) -> int | None:
        if isinstance(address, IPv4Address):
            return self._ipv4.position(int(address))
        position = self._ipv6.position(int(address))
        return None if position is None else self._ipv4.size + position


@dataclass(slots=True)
class _Collected:
    """Intervals of a spec list, per family, and the names given, before merging."""

    ipv4: list[_Interval] = field(default_factory=list)
    ipv6: list[_Interval] = field(default_factory=list)
    names: dict[Address, str] = field(default_factory=dict)
    scopes: dict[int, str] = field(default_factory=dict)


def parse_targets(
    specs: Iterable[str],
    *,
    excludes: Iterable[str] = (),
    resolver: Resolver | None = None,
    family: int | None = None,
    on_skip: Callable[[str, str], None] | None = None,
) -> TargetSet:
    """Parse target specs (and excludes, same syntax) into a ``TargetSet``.

    Each name is resolved once, even if repeated or also excluded; duplicates count once.
    ``family`` 6 (nmap's ``-6``) keeps IPv6 targets only and resolves names to IPv6; 4
    the reverse. With ``on_skip``, a target that cannot be had (a name that does not
    resolve, an address of the other family) is passed over and reported to it as
    ``(spec, reason)``, as nmap warns and goes on; without, it raises.
    Raises ``TargetError``: ``empty target list``, ``invalid target '198.18.0.300'``,
    ``invalid CIDR prefix '/33' in '198.18.0.0/33'``, ``cannot resolve 'nosuch.example'``
    (also when a name is given without a resolver), ``no targets left after exclusions``.
    """
    lookup = _lookup_with(resolver, family)
    included = _collect(specs, lookup, family, on_skip)
    if not included.ipv4 and not included.ipv6:
        raise TargetError("empty target list" if on_skip is None else "no target left to scan")
    excluded = _collect(excludes, lookup, family, on_skip)
    ipv4 = _subtract(_merge(included.ipv4), _merge(excluded.ipv4))
    ipv6 = _subtract(_merge(included.ipv6), _merge(excluded.ipv6))
    if not ipv4 and not ipv6:
        raise TargetError("no targets left after exclusions")
    families = {4: _Ranges.build(ipv4), 6: _Ranges.build(ipv6)}
    names = {
        address: name
        for address, name in included.names.items()
        if families[address.version].position(int(address)) is not None
    }
    return TargetSet(families[4], families[6], MappingProxyType(names),
                     MappingProxyType(included.scopes))  # fmt: skip


def read_target_file(path: str | os.PathLike[str]) -> list[str]:
    """The target expressions of an nmap ``-iL`` file: separated by any whitespace, with
    ``#`` starting a comment that runs to the end of the line. ``-`` is standard input, as
    in nmap (``... | portscout -iL -``).

    Raises ``TargetError`` naming the path if it cannot be read or is not UTF-8 text.
    """
    try:
        if os.fspath(path) == "-":
            text = sys.stdin.buffer.read().decode("utf-8")
        else:
            with open(path, encoding="utf-8") as file:
                text = file.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise TargetError(f"cannot read target file '{os.fspath(path)}': {reason}") from exc
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
        raise TargetError(f"cannot read target file '{os.fspath(path)}': {reason}") from exc
    except ValueError as exc:  # a NUL byte in the name: no such file can exist
        raise TargetError(f"cannot read target file '{os.fspath(path)}': {exc}") from exc
    text = text.removeprefix("\ufeff")  # a UTF-8 byte order mark (Windows editors)
    return [word for line in text.splitlines() for word in line.partition("#")[0].split()]


def _collect(
    specs: Iterable[str],
    lookup: Callable[[str], Address],
    family: int | None,
    on_skip: Callable[[str, str], None] | None,
) -> _Collected:
    collected = _Collected()
    for spec in specs:
        try:
            version, intervals, name = _parse_spec(spec, lookup)
        except _UnresolvedError as exc:
            if on_skip is None:
                raise
            on_skip(spec, str(exc))
            continue
        if family is not None and version != family:
            if on_skip is None:
                raise TargetError(f"'{spec}' is not an IPv{family} target (-{family})")
            on_skip(spec, f"not an IPv{family} target (-{family})")
            continue
        (collected.ipv4 if version == 4 else collected.ipv6).extend(intervals)
        if name is not None:
            collected.names.setdefault(*name)
        if version == 6 and "%" in spec.partition("/")[0]:
            collected.scopes[intervals[0][0]] = spec.partition("/")[0].split("%", 1)[1]
    return collected


def _parse_spec(
    spec: str, lookup: Callable[[str], Address]
) -> tuple[int, list[_Interval], tuple[Address, str] | None]:
    """One expression -> (IP version, its intervals, the (address, name) it named if any)."""
    spec = spec.strip()
    host, slash, prefix = spec.partition("/")
    name = None
    if ":" in host:
        address: Address = _ipv6_address(host, spec)
    elif _IPV4_PATTERN.fullmatch(host):
        octets = _octet_runs(host, spec)
        if not slash:
            return 4, _pattern_intervals(octets, spec), None
        if any(len(runs) != 1 or runs[0][0] != runs[0][1] for runs in octets):
            raise _invalid(spec)
        address = IPv4Address(".".join(str(runs[0][0]) for runs in octets))
    elif _HOSTNAME.fullmatch(host) and len(host) <= 253:
        address = lookup(host)
        name = (address, host)
    else:
        raise _invalid(spec)
    value = int(address)
    if slash:
        host_bits = address.max_prefixlen - _prefix_length(prefix, address.max_prefixlen, spec)
        value = value >> host_bits << host_bits
        return address.version, [(value, value | ((1 << host_bits) - 1))], name
    return address.version, [(value, value)], name


def _invalid(spec: str) -> TargetError:
    return TargetError(f"invalid target '{spec}'")


def _ipv6_address(text: str, spec: str) -> IPv6Address:
    """An IPv6 literal, with its scope id if it has one (``fe80::1%lo``, as nmap takes)."""
    try:
        return IPv6Address(text)
    except ValueError:
        raise _invalid(spec) from None


def _prefix_length(text: str, maximum: int, spec: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 3 or int(text) > maximum:
        raise TargetError(f"invalid CIDR prefix '/{text}' in '{spec}'")
    return int(text)


def _octet_runs(text: str, spec: str) -> list[list[_Interval]]:
    """``198.18.0-3.1,5`` -> per octet, its merged inclusive runs of values."""
    parts = text.split(".")
    if len(parts) != 4:
        raise _invalid(spec)
    return [_merge(_octet_item(item, spec) for item in part.split(",")) for part in parts]


def _octet_item(item: str, spec: str) -> _Interval:
    if item == "*":
        return 0, 255
    match = _OCTET_ITEM.fullmatch(item)
    if match is None or not item:
        raise _invalid(spec)
    low_text, dash, high_text = match.groups()
    low = _octet_value(low_text, spec) if low_text else 0
    if not dash:
        return low, low
    high = _octet_value(high_text, spec) if high_text else 255
    if low > high:
        raise _invalid(spec)
    return low, high


def _octet_value(text: str, spec: str) -> int:
    # Leading zeros are refused, as by ipaddress: some resolvers read them as octal.
    if len(text) > 3 or (len(text) > 1 and text[0] == "0") or int(text) > 255:
        raise _invalid(spec)
    return int(text)


def _pattern_intervals(octets: list[list[_Interval]], spec: str) -> list[_Interval]:
    """The address intervals of an octet-range pattern, in ascending order.

    Trailing full octets (``*``) fold into the last partial one, so ``198.18.*.*`` is one
    interval and ``198.18.0-3.1-254`` four.
    """
    partial = len(octets)
    while partial and octets[partial - 1] == [(0, 255)]:
        partial -= 1
    if partial == 0:
        return [_ALL_IPV4]
    *leading, last = octets[:partial]
    count = len(last) * prod(sum(hi - lo + 1 for lo, hi in runs) for runs in leading)
    if count > MAX_PATTERN_RANGES:
        raise TargetError(
            f"target '{spec}' expands to {count} address ranges, over {MAX_PATTERN_RANGES}"
        )
    scale = 256 ** (4 - partial)
    intervals: list[_Interval] = []
    for values in product(*([v for lo, hi in runs for v in range(lo, hi + 1)] for runs in leading)):
        base = 0
        for value in values:
            base = base * 256 + value
        base *= 256 * scale
        intervals.extend((base + lo * scale, base + (hi + 1) * scale - 1) for lo, hi in last)
    return intervals


def _merge(intervals: Iterable[_Interval]) -> list[_Interval]:
    """Sorted, disjoint, non-adjacent intervals covering exactly the input's."""
    merged: list[_Interval] = []
    for low, high in sorted(intervals):
        if merged and low <= merged[-1][1] + 1:
            if high > merged[-1][1]:
                merged[-1] = (merged[-1][0], high)
        else:
            merged.append((low, high))
    return merged


def _subtract(keep: list[_Interval], drop: list[_Interval]) -> list[_Interval]:
    """``keep`` minus ``drop``, both merged; one sweep, O(len(keep) + len(drop))."""
    result: list[_Interval] = []
    first = 0  # drop[:first] all end before the current keep interval
    for low, high in keep:
        while first < len(drop) and drop[first][1] < low:
            first += 1
        start, later = low, first
        while later < len(drop) and drop[later][0] <= high:
            drop_low, drop_high = drop[later]
            if drop_low > start:
                result.append((start, drop_low - 1))
            start = max(start, drop_high + 1)
            later += 1
        if start <= high:
            result.append((start, high))
    return result


class _UnresolvedError(TargetError):
    """A name that does not resolve: a target to pass over, where the caller allows."""


def _lookup_with(resolver: Resolver | None, family: int | None) -> Callable[[str], Address]:
    """A name -> address function that asks ``resolver`` once per name (case-insensitive)."""
    answers: dict[str, Address] = {}

    def lookup(name: str) -> Address:
        key = name.lower()
        if key not in answers:
            answers[key] = _resolve(name, resolver, family)
        return answers[key]

    return lookup


def _resolve(name: str, resolver: Resolver | None, family: int | None) -> Address:
    if resolver is None:
        raise _UnresolvedError(f"cannot resolve '{name}': no resolver given")
    try:
        addresses = resolver(name)
    except TargetError as exc:
        raise _UnresolvedError(str(exc)) from exc
    except (OSError, UnicodeError) as exc:  # gaierror is an OSError; IDNA refusals Unicode
        raise _UnresolvedError(f"cannot resolve '{name}'") from exc
    if family is not None:
        addresses = [a for a in addresses if a.version == family]
    if not addresses:
        raise _UnresolvedError(f"cannot resolve '{name}'" + (f" to IPv{family}" if family else ""))
    return next((a for a in addresses if a.version == 4), addresses[0])
