"""Tests for portscout.targets. Nothing here resolves a real name or sends a packet: names go
to a fake resolver, and addresses are only parsed (198.18.0.0/15 and documentation ranges)."""

from __future__ import annotations

import io
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_network
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portscout.errors import TargetError
from portscout.results import IPAddress
from portscout.targets import (
    MAX_PATTERN_RANGES,
    Address,
    Resolver,
    parse_targets,
    read_target_file,
)

V4 = IPv4Address
V6 = IPv6Address

ZONE: dict[str, list[Address]] = {
    "dual.example": [V6("2001:db8::1"), V4("198.18.7.7"), V4("198.18.7.8")],
    "v6only.example": [V6("2001:db8::2"), V6("2001:db8::3")],
    "web.example": [V4("198.18.0.10")],
    "alias.example": [V4("198.18.0.10")],
}


class FakeResolver:
    """Answers from ``ZONE`` and records every question; unknown names get []."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, name: str) -> list[Address]:
        self.asked.append(name)
        return list(ZONE.get(name.lower(), []))


def addresses(*specs: str, excludes: tuple[str, ...] = ()) -> list[Address]:
    return list(parse_targets(specs, excludes=excludes, resolver=FakeResolver()))


# --- syntax -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("198.18.0.1", [V4("198.18.0.1")]),
        (" 198.18.0.1\n", [V4("198.18.0.1")]),
        ("198.18.0.0/31", [V4("198.18.0.0"), V4("198.18.0.1")]),
        ("198.18.1.7/30", [V4(f"198.18.1.{i}") for i in range(4, 8)]),
        ("198.18.0.5/32", [V4("198.18.0.5")]),
        ("198.18.0.1-3", [V4(f"198.18.0.{i}") for i in (1, 2, 3)]),
        ("198.18.0.253-", [V4(f"198.18.0.{i}") for i in (253, 254, 255)]),
        ("198.18.0.-1", [V4("198.18.0.0"), V4("198.18.0.1")]),
        ("198.18.1,3,5.1", [V4(f"198.18.{i}.1") for i in (1, 3, 5)]),
        ("198.18.5,1,3-3.1", [V4(f"198.18.{i}.1") for i in (1, 3, 5)]),
        ("198.18-19.0.0", [V4("198.18.0.0"), V4("198.19.0.0")]),
        ("::1", [V6("::1")]),
        ("::1/128", [V6("::1")]),
        ("2001:db8::7/126", [V6(f"2001:db8::{i}") for i in range(4, 8)]),
        ("::ffff:198.18.0.1", [V6("::ffff:198.18.0.1")]),
    ],
)
def test_specs(spec: str, expected: list[Address]) -> None:
    assert addresses(spec) == expected


@pytest.mark.parametrize(
    ("spec", "size"),
    [
        ("198.18.0.*", 256),
        ("198.18.0.-", 256),
        ("198.18.0-3.1-254", 4 * 254),
        ("198.18.*.*", 65536),
        ("*.*.*.*", 2**32),
        ("0.0.0.0/0", 2**32),
        ("198.18.0.0/15", 2**17),
        ("2001:db8::/64", 2**64),
        ("::/0", 2**128),
    ],
)
def test_large_specs_stay_lazy(spec: str, size: int) -> None:
    targets = parse_targets([spec])
    assert targets.size == size
    assert len(list(targets.ranges())) <= 4 * 254


def test_host_bits_are_ignored_as_by_nmap() -> None:
    assert parse_targets(["198.18.1.7/22"]) == parse_targets(["198.18.0.0/22"])
    assert parse_targets(["2001:db8::1234/64"]) == parse_targets(["2001:db8::/64"])


def test_octet_ranges_order_and_index() -> None:
    targets = parse_targets(["198.18.0-3.1-254"])
    assert targets[0] == V4("198.18.0.1")
    assert targets[253] == V4("198.18.0.254")
    assert targets[254] == V4("198.18.1.1")
    assert targets[-1] == V4("198.18.3.254")
    assert V4("198.18.2.255") not in targets
    assert len(list(targets.ranges())) == 4


def test_ipv4_first_then_ipv6_each_ascending() -> None:
    found = addresses("2001:db8::2", "198.18.0.9", "::1", "198.18.0.1")
    assert found == [V4("198.18.0.1"), V4("198.18.0.9"), V6("::1"), V6("2001:db8::2")]


def test_duplicates_and_overlaps_count_once() -> None:
    targets = parse_targets(["198.18.0.0/24", "198.18.0.7", "198.18.0.128/25", "198.18.0.*"])
    assert targets.size == 256
    assert list(targets.ranges()) == [(V4("198.18.0.0"), V4("198.18.0.255"))]


def test_adjacent_specs_merge_into_one_range() -> None:
    targets = parse_targets(["198.18.0.0/24", "198.18.1.0/24", "198.18.0.250-255"])
    assert list(targets.ranges()) == [(V4("198.18.0.0"), V4("198.18.1.255"))]


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([], "empty target list"),
        ([""], "invalid target ''"),
        (["198.18.0.300"], "invalid target '198.18.0.300'"),
        (["\t198.18.0.300 "], "invalid target '198.18.0.300'"),
        (["198.18.0"], "invalid target '198.18.0'"),
        (["198.18.0.1.2"], "invalid target '198.18.0.1.2'"),
        (["198.18.0.5-3"], "invalid target '198.18.0.5-3'"),
        (["198.18.0.1-2-3"], "invalid target '198.18.0.1-2-3'"),
        (["198.18..1"], "invalid target '198.18..1'"),
        (["198.18.0.1,"], "invalid target '198.18.0.1,'"),
        (["198.18.0.01"], "invalid target '198.18.0.01'"),
        (["198.18.0.1000"], "invalid target '198.18.0.1000'"),
        (["198.18.0-1.0/24"], "invalid target '198.18.0-1.0/24'"),
        (["198.18.0.0/33"], "invalid CIDR prefix '/33' in '198.18.0.0/33'"),
        (["198.18.0.0/"], "invalid CIDR prefix '/' in '198.18.0.0/'"),
        (["198.18.0.0/x"], "invalid CIDR prefix '/x' in '198.18.0.0/x'"),
        (["198.18.0.0/-1"], "invalid CIDR prefix '/-1' in '198.18.0.0/-1'"),
        (["198.18.0.0/1/2"], "invalid CIDR prefix '/1/2' in '198.18.0.0/1/2'"),
        (["::1/129"], "invalid CIDR prefix '/129' in '::1/129'"),
        (["::/\N{ARABIC-INDIC DIGIT TWO}"], "invalid CIDR prefix '/\u0662' in '::/\u0662'"),
        ([":::1"], "invalid target ':::1'"),
        (["[::1]"], "invalid target '[::1]'"),
        (["198.18.0.1 198.18.0.2"], "invalid target '198.18.0.1 198.18.0.2'"),
        (["-web.example"], "invalid target '-web.example'"),
        (["web..example"], "invalid target 'web..example'"),
        (["caf\N{LATIN SMALL LETTER E WITH ACUTE}.example"], None),
        (["a" * 64 + ".example"], None),
        (["*.*.*.1"], f"target '*.*.*.1' expands to 16777216 address ranges, over {1 << 18}"),
    ],
)
def test_bad_specs(specs: list[str], message: str | None) -> None:
    with pytest.raises(TargetError) as info:
        parse_targets(specs, resolver=FakeResolver())
    assert str(info.value) == (message or f"invalid target '{specs[0]}'")
    assert "\n" not in str(info.value)


def test_pattern_limit_admits_a_slash_8_of_last_octet_ranges() -> None:
    assert MAX_PATTERN_RANGES >= 65536
    assert parse_targets(["10.*.*.1-254"]).size == 65536 * 254


# --- names --------------------------------------------------------------------------------


def test_name_prefers_first_ipv4_answer_and_is_remembered() -> None:
    targets = parse_targets(["dual.example", "v6only.example"], resolver=FakeResolver())
    assert list(targets) == [V4("198.18.7.7"), V6("2001:db8::2")]
    assert dict(targets.hostnames) == {
        V4("198.18.7.7"): "dual.example",
        V6("2001:db8::2"): "v6only.example",
    }


def test_each_name_is_resolved_once() -> None:
    resolver = FakeResolver()
    parse_targets(
        ["web.example", "WEB.example", "web.example/31", "dual.example"],
        excludes=["web.example", "198.18.0.11"],
        resolver=resolver,
    )
    assert resolver.asked == ["web.example", "dual.example"]


def test_name_with_prefix_widens_to_its_block() -> None:
    targets = parse_targets(["web.example/30"], resolver=FakeResolver())
    assert list(targets) == [V4(f"198.18.0.{i}") for i in range(8, 12)]
    assert dict(targets.hostnames) == {V4("198.18.0.10"): "web.example"}


def test_first_name_given_for_an_address_wins() -> None:
    targets = parse_targets(["alias.example", "web.example"], resolver=FakeResolver())
    assert targets.size == 1
    assert dict(targets.hostnames) == {V4("198.18.0.10"): "alias.example"}


def test_excluded_addresses_lose_their_names() -> None:
    targets = parse_targets(
        ["web.example", "dual.example"], excludes=["198.18.0.10"], resolver=FakeResolver()
    )
    assert dict(targets.hostnames) == {V4("198.18.7.7"): "dual.example"}


def test_unknown_name() -> None:
    with pytest.raises(TargetError, match=r"^cannot resolve 'nosuch\.example'$"):
        parse_targets(["nosuch.example"], resolver=FakeResolver())


@pytest.mark.parametrize("error", [OSError(-2, "Name or service not known"), UnicodeError()])
def test_resolver_failure_becomes_target_error(error: Exception) -> None:
    def failing(name: str) -> list[Address]:
        raise error

    with pytest.raises(TargetError, match=r"^cannot resolve 'nosuch\.example'$") as info:
        parse_targets(["198.18.0.1", "nosuch.example"], resolver=failing)
    assert info.value.__cause__ is error


def test_name_without_resolver() -> None:
    with pytest.raises(TargetError, match=r"^cannot resolve 'web\.example': no resolver given$"):
        parse_targets(["198.18.0.1"], excludes=["web.example"])


def test_addresses_need_no_resolver() -> None:
    resolver = FakeResolver()
    assert parse_targets(["198.18.0.1", "::1"], resolver=resolver).size == 2
    assert resolver.asked == []


def test_resolver_type_accepts_a_plain_function() -> None:
    def table(name: str) -> list[IPv4Address | IPv6Address]:
        return [V4("198.18.0.10")] if name == "web.example" else []

    resolver: Resolver = table
    assert list(parse_targets(["web.example"], resolver=resolver)) == [V4("198.18.0.10")]


# --- exclusions ---------------------------------------------------------------------------


def test_excludes_split_ranges() -> None:
    targets = parse_targets(
        ["198.18.0.0/24", "2001:db8::/126"],
        excludes=["198.18.0.0/25", "198.18.0.200-210", "2001:db8::1", "198.19.0.0/16"],
    )
    assert targets.size == 128 - 11 + 3
    assert list(targets.ranges()) == [
        (V4("198.18.0.128"), V4("198.18.0.199")),
        (V4("198.18.0.211"), V4("198.18.0.255")),
        (V6("2001:db8::"), V6("2001:db8::")),
        (V6("2001:db8::2"), V6("2001:db8::3")),
    ]


def test_excluding_everything_is_an_error() -> None:
    with pytest.raises(TargetError, match=r"^no targets left after exclusions$"):
        parse_targets(["198.18.0.1", "::1"], excludes=["198.18.0.0/24", "::/0"])


def test_bad_exclude_is_named() -> None:
    with pytest.raises(TargetError, match=r"^invalid target '198\.18\.0\.256'$"):
        parse_targets(["198.18.0.1"], excludes=["198.18.0.256"])


# --- TargetSet ----------------------------------------------------------------------------


def test_huge_sets_index_without_materialising() -> None:
    targets = parse_targets(["10.0.0.0/8", "2001:db8::/64"], excludes=["10.5.0.0/16"])
    v4_size = 2**24 - 2**16
    assert targets.size == v4_size + 2**64
    assert targets[0] == V4("10.0.0.0")
    assert targets[5 * 2**16 - 1] == V4("10.4.255.255")
    assert targets[5 * 2**16] == V4("10.6.0.0")
    assert targets[v4_size] == V6("2001:db8::")
    assert targets[-1] == V6("2001:db8::ffff:ffff:ffff:ffff")
    assert targets.index(V6("2001:db8::ffff:ffff:ffff:ffff")) == targets.size - 1
    assert V4("10.5.1.1") not in targets
    assert V6("2001:db8::1:2:3") in targets
    assert len(list(targets.ranges())) == 3
    with pytest.raises(OverflowError, match=r"use TargetSet\.size"):
        len(targets)
    assert targets  # __bool__ must not go through __len__


def test_sequence_protocol() -> None:
    targets = parse_targets(["198.18.0.1-3"])
    assert len(targets) == 3
    assert targets[-3] == V4("198.18.0.1")
    for bad in (3, -4):
        with pytest.raises(IndexError):
            targets[bad]
    with pytest.raises(TypeError):
        targets["1"]  # type: ignore[index]  # what is being tested
    with pytest.raises(ValueError, match=r"198\.18\.0\.4 is not in the target set"):
        targets.index(V4("198.18.0.4"))
    assert "198.18.0.1" not in targets  # addresses, not strings
    assert V6("::ffff:198.18.0.1") not in targets


def test_value_semantics() -> None:
    first = parse_targets(["198.18.0.0/30", "web.example"], resolver=FakeResolver())
    second = parse_targets(["web.example", "198.18.0.0-3"], resolver=FakeResolver())
    assert first == second
    assert hash(first) == hash(second)
    assert first != parse_targets(["198.18.0.0/30", "198.18.0.10"])
    assert repr(first) == (
        "TargetSet(size=5, ranges=2, hostnames={IPv4Address('198.18.0.10'): 'web.example'})"
    )
    with pytest.raises(TypeError):
        first.hostnames[V4("198.18.0.1")] = "x"  # type: ignore[index]  # read-only mapping


# --- read_target_file ---------------------------------------------------------------------


def test_read_target_file(tmp_path: Path) -> None:
    path = tmp_path / "targets.txt"
    path.write_text(
        "# lab hosts\n198.18.0.1 198.18.0.2\t::1\n\n  web.example # the web server\n#x\n"
        "198.18.1.0/24#no space before the comment\r\n",
        encoding="utf-8",
    )
    assert read_target_file(str(path)) == [
        "198.18.0.1",
        "198.18.0.2",
        "::1",
        "web.example",
        "198.18.1.0/24",
    ]
    assert read_target_file(path) == read_target_file(str(path))


def test_read_target_list_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    """``-iL -`` reads standard input, as nmap does; bad bytes are one clear error."""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"198.18.0.1 # a\n::1\n")))
    assert read_target_file("-") == ["198.18.0.1", "::1"]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"198.18.0.1\xff\n")))
    with pytest.raises(TargetError, match=r"'-'.*not UTF-8"):
        read_target_file("-")


def test_read_empty_target_file_then_parse(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("# nothing here\n", encoding="utf-8")
    assert read_target_file(str(path)) == []
    with pytest.raises(TargetError, match=r"^empty target list$"):
        parse_targets(read_target_file(str(path)))


def _missing(directory: Path) -> Path:
    return directory / "missing.txt"


def _directory(directory: Path) -> Path:
    return directory


def _not_text(directory: Path) -> Path:
    path = directory / "binary.txt"
    path.write_bytes(b"198.18.0.1\n\xff\xfe\n")
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_missing, "No such file or directory"),
        (_directory, "Is a directory"),
        (_not_text, "not UTF-8 text (byte 0xff at offset 11)"),
    ],
)
def test_unreadable_target_file(tmp_path: Path, make: Callable[[Path], Path], reason: str) -> None:
    path = make(tmp_path)
    with pytest.raises(TargetError) as info:
        read_target_file(str(path))
    assert str(info.value).startswith(f"cannot read target file '{path}': {reason}")
    assert "\n" not in str(info.value)


# --- properties against a materialised reference ------------------------------------------

V4_BASE = int(V4("198.18.0.0"))  # a /22 of it: small enough to list
V6_BASE = int(V6("2001:db8::"))  # a /118 of it


def _octet_items(limit: int, *, open_high: bool) -> st.SearchStrategy[tuple[str, set[int]]]:
    """One octet's comma list in nmap's forms (N, N-M, -M; N- and * if ``open_high``), with
    the values it stands for."""

    def forms(low: int, high: int) -> list[tuple[str, set[int]]]:
        choices = [
            (f"{low}", {low}),
            (f"{low}-{high}", set(range(low, high + 1))),
            (f"-{high}", set(range(high + 1))),
        ]
        if open_high:
            choices += [(f"{low}-", set(range(low, 256))), ("*", set(range(256)))]
        return choices

    bounds = st.tuples(st.integers(0, limit), st.integers(0, limit)).map(sorted)
    item = bounds.flatmap(lambda b: st.sampled_from(forms(b[0], b[1])))
    return st.lists(item, min_size=1, max_size=3).map(
        lambda items: (",".join(text for text, _ in items), set().union(*(v for _, v in items)))
    )


def _pattern() -> st.SearchStrategy[tuple[str, set[Address]]]:
    """``198.18.<third>.<fourth>``, the third octet kept to 0-3 so the reference stays small."""

    def build(
        third: tuple[str, set[int]], fourth: tuple[str, set[int]]
    ) -> tuple[str, set[Address]]:
        values: set[Address] = {V4(f"198.18.{c}.{d}") for c in third[1] for d in fourth[1]}
        return f"198.18.{third[0]}.{fourth[0]}", values

    return st.builds(build, _octet_items(3, open_high=False), _octet_items(255, open_high=True))


def _cidr(base: int, bits: int, version: int) -> st.SearchStrategy[tuple[str, set[Address]]]:
    def build(offset: int, prefix: int) -> tuple[str, set[Address]]:
        address: Address = V4(base + offset) if version == 4 else V6(base + offset)
        spec = f"{address}/{prefix}"
        return spec, set(ip_network(spec, strict=False))  # an independent expansion

    top = 32 if version == 4 else 128
    return st.builds(build, st.integers(0, 2**bits - 1), st.integers(top - bits, top))


def _single(base: int, bits: int, version: int) -> st.SearchStrategy[tuple[str, set[Address]]]:
    def build(offset: int) -> tuple[str, set[Address]]:
        address: Address = V4(base + offset) if version == 4 else V6(base + offset)
        return str(address), {address}

    return st.builds(build, st.integers(0, 2**bits - 1))


_specs = st.one_of(
    _pattern(),
    _cidr(V4_BASE, 10, 4),
    _cidr(V6_BASE, 10, 6),
    _single(V4_BASE, 10, 4),
    _single(V6_BASE, 10, 6),
)


def _order(address: Address) -> tuple[int, int]:
    return address.version, int(address)


@given(
    st.lists(_specs, min_size=1, max_size=4),
    st.lists(_specs, max_size=3),
    st.lists(st.integers(0, 2**10 - 1), max_size=20),
)
def test_agrees_with_materialised_reference(
    included: list[tuple[str, set[Address]]],
    excluded: list[tuple[str, set[Address]]],
    probes: list[int],
) -> None:
    wanted = set().union(*(values for _, values in included))
    wanted -= set().union(*(values for _, values in excluded))
    reference = sorted(wanted, key=_order)
    specs = [spec for spec, _ in included]
    excludes = [spec for spec, _ in excluded]
    if not reference:
        with pytest.raises(TargetError, match="no targets left after exclusions"):
            parse_targets(specs, excludes=excludes)
        return
    targets = parse_targets(specs, excludes=excludes)

    assert list(targets) == reference
    assert len(targets) == targets.size == len(reference)
    for position, address in enumerate(reference):
        assert targets[position] == address
        assert targets[position - len(reference)] == address
        assert targets.index(address) == position
    for offset in probes:  # membership of arbitrary addresses, in and out
        for address in (V4(V4_BASE + offset), V6(V6_BASE + offset)):
            assert (address in targets) == (address in wanted)

    runs = list(targets.ranges())
    assert sum(int(last) - int(first) + 1 for first, last in runs) == targets.size
    for (_, last), (first, _) in pairwise(runs):
        assert last.version < first.version or int(first) > int(last) + 1  # maximal runs


@given(st.lists(_specs, min_size=1, max_size=4))
def test_spec_order_does_not_matter(included: list[tuple[str, set[Address]]]) -> None:
    specs = [spec for spec, _ in included]
    assert parse_targets(specs) == parse_targets(reversed(specs))


def test_scoped_ipv6_keeps_its_scope() -> None:
    # nmap takes fe80::1%eth0: a link-local address needs its scope to be reached.
    targets = parse_targets(["fe80::1%lo", "::1"])
    assert list(targets) == [IPv6Address("::1"), IPv6Address("fe80::1%lo")]
    scoped = targets[1]
    assert isinstance(scoped, IPv6Address)
    assert scoped.scope_id == "lo"


def test_unresolvable_names_are_skipped_with_a_word() -> None:
    said: list[tuple[str, str]] = []

    def resolver(name: str) -> list[IPAddress]:
        if name == "good.test":
            return [IPv4Address("198.18.0.9")]
        raise OSError("no such name")

    targets = parse_targets(["good.test", "bad.test", "198.18.0.1"], resolver=resolver,
                            on_skip=lambda spec, why: said.append((spec, why)))  # fmt: skip
    assert list(targets) == [IPv4Address("198.18.0.1"), IPv4Address("198.18.0.9")]
    assert said == [("bad.test", "cannot resolve 'bad.test'")]
    with pytest.raises(TargetError, match="no target left"):
        parse_targets(["bad.test"], resolver=resolver, on_skip=lambda spec, why: None)
    with pytest.raises(TargetError, match=r"cannot resolve 'bad\.test'"):
        parse_targets(["bad.test"], resolver=resolver)


def test_family_six_keeps_ipv6_only() -> None:
    said: list[str] = []
    targets = parse_targets(["198.18.0.1", "::1", "dual.test"], family=6,
                            resolver=lambda name: [IPv4Address("198.18.0.2"), IPv6Address("::2")],
                            on_skip=lambda spec, why: said.append(spec))  # fmt: skip
    assert list(targets) == [IPv6Address("::1"), IPv6Address("::2")]
    assert said == ["198.18.0.1"]
