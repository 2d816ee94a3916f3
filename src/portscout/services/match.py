"""A response against a probe's match lines, as nmap does it, but without trying them all.

Owns ``Matcher`` (one probe's lines, its fallbacks' and the NULL probe's, in nmap's order),
``Hit``, version template substitution and the pattern analysis behind the index. Core.

nmap's semantics (service_scan.cc, ``ServiceProbe::testMatch``): lines are tried in order,
the probe's own, then each ``fallback`` probe's, then (TCP) the NULL probe's; the first
hard ``match`` ends the search; the first ``softmatch`` is kept while the search goes on.
Patterns search (they are not anchored unless they say ``^``).

Cheaper than the plain loop: 97% of the file's patterns start with ``^`` and a literal
byte, and most contain a literal run that any match must contain (``\\r\\nServer: nginx``).
``analyse`` finds both from the pattern text, conservatively (anything it does not
understand gives "no constraint"); ``Matcher`` then keeps, per first byte of a response,
only the lines that can start with it, and skips a line whose required literal is not in
the response (``bytes.__contains__``, a C memmem) before running its regex. The result
is the plain loop's, always: ``tests/services/test_match.py`` checks both on the real file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from portscout.results import Service
from portscout.services.probes import Match, VersionTemplate

# A response longer than this is cut before matching: it bounds the regex work per
# response (docs/benchmarks.md has the worst pattern's time on this many hostile bytes).
MAX_MATCH_BYTES = 16 * 1024
_META = frozenset(b"\\^$.|?*+()[]{}")
_CLASS_ESCAPES = frozenset(b"dDwWsS")
_ZERO_WIDTH_ESCAPES = frozenset(b"bBAZz")
_C_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("f"): 12, ord("v"): 11, ord("a"): 7}
_QUANTIFIER = re.compile(rb"\{(\d*)(,(\d*))?\}")
_PLAIN_RUN = re.compile(rb"[^\\^$.|?*+()\[\]{}]+")  # bytes that stand for themselves
_QUANTIFIER_START = frozenset(b"*+?{")
_INLINE_ICASE = re.compile(rb"\(\?[a-zA-Z]*i")
_TEMPLATE_TOKEN = re.compile(
    r"\$(?:(\d)|P\((\d)\)|SUBST\((\d),\"([^\"]*)\",\"([^\"]*)\"\)|I\((\d),\"([<>])\"\))"
)


@dataclass(frozen=True, slots=True)
class PatternFacts:
    """What any match of a pattern must satisfy: its first byte (one of ``first``, when
    known) and a literal run it must contain (``required``, lower-cased when ``icase``)."""

    first: frozenset[int] | None
    required: bytes
    icase: bool


def analyse(pattern: bytes, flags: int = 0) -> PatternFacts:
    """Read the pattern's top level for a known first byte and the longest required literal.

    Conservative: a top-level ``|``, an escape it does not know, or any doubt gives no
    constraint. Groups and classes are skipped whole (they end a literal run).
    """
    icase = bool(flags & re.IGNORECASE) or bool(_INLINE_ICASE.search(pattern))
    nothing = PatternFacts(None, b"", icase)
    anchored = pattern.startswith(b"^")
    i = 1 if anchored else 0
    runs: list[bytes] = []
    run = bytearray()
    first: frozenset[int] | None = None
    position = 0
    size = len(pattern)
    while i < size:
        plain = _PLAIN_RUN.match(pattern, i)
        if plain is not None:  # fast path: a run of literal bytes, each exactly once
            end = plain.end()
            if end < size and pattern[end] in _QUANTIFIER_START:
                end -= 1  # the run's last byte is quantified: the slow path reads it
            if end > i:
                if anchored and position == 0:
                    first = _cases(pattern[i]) if icase else frozenset({pattern[i]})
                run += pattern[i:end]
                position += end - i
                i = end
                continue
        atom = _atom(pattern, i)
        if atom is None:
            return nothing
        value, i = atom
        low, exact, i = _quantifier(pattern, i)
        if value is not None and low >= 1:
            if anchored and position == 0:
                first = _cases(value) if icase else frozenset({value})
            run.append(value)
            if exact:
                position += 1
                continue
        runs.append(bytes(run))
        run.clear()
        position += 1
    runs.append(bytes(run))
    longest = max(runs, key=len)
    return PatternFacts(first, longest.lower() if icase else longest, icase)


def _cases(value: int) -> frozenset[int]:
    char = bytes([value])
    return frozenset({char.lower()[0], char.upper()[0]})


def _atom(pattern: bytes, i: int) -> tuple[int | None, int] | None:
    """(literal byte or None, next index) for the atom at ``i``; None: give up."""
    char = pattern[i]
    if char == 0x5C:  # backslash
        return _escape(pattern, i)
    if char == ord("["):
        end = _class_end(pattern, i)
        return None if end is None else (None, end)
    if char == ord("("):
        end = _group_end(pattern, i)
        return None if end is None else (None, end)
    if char in (ord("."), ord("$")):
        return None, i + 1
    if char == ord("{") and not _QUANTIFIER.match(pattern, i):
        return char, i + 1  # Python's re reads a brace that is no quantifier literally
    if char in _META:  # | ) * + ? or a quantifier with nothing before it
        return None
    return char, i + 1


def _escape(pattern: bytes, i: int) -> tuple[int | None, int] | None:
    if i + 1 >= len(pattern):
        return None
    nxt = pattern[i + 1]
    if nxt == ord("x"):
        digits = pattern[i + 2 : i + 4]
        try:
            return int(digits, 16), i + 4
        except ValueError:
            return None
    if nxt == ord("0"):
        end = i + 2
        while end < len(pattern) and end < i + 4 and pattern[end] in b"01234567":
            end += 1
        return int(pattern[i + 1 : end], 8) & 0xFF, end
    if nxt in _C_ESCAPES:
        return _C_ESCAPES[nxt], i + 2
    if nxt in _CLASS_ESCAPES or nxt in _ZERO_WIDTH_ESCAPES:
        return None, i + 2
    if chr(nxt).isalnum() or nxt >= 0x80:
        return None  # a back-reference or an escape we do not model
    return nxt, i + 2


def _class_end(pattern: bytes, i: int) -> int | None:
    """Index after the ``]`` closing the class opened at ``i``."""
    j = i + 1
    if j < len(pattern) and pattern[j] == ord("^"):
        j += 1
    if j < len(pattern) and pattern[j] == ord("]"):
        j += 1
    while j < len(pattern):
        if pattern[j] == 0x5C:
            j += 2
            continue
        if pattern[j] == ord("]"):
            return j + 1
        j += 1
    return None


def _group_end(pattern: bytes, i: int) -> int | None:
    """Index after the ``)`` closing the group opened at ``i`` (classes, escapes skipped)."""
    depth = 0
    j = i
    while j < len(pattern):
        char = pattern[j]
        if char == 0x5C:
            j += 2
            continue
        if char == ord("["):
            end = _class_end(pattern, j)
            if end is None:
                return None
            j = end
            continue
        if char == ord("("):
            depth += 1
        elif char == ord(")"):
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return None


def _quantifier(pattern: bytes, i: int) -> tuple[int, bool, int]:
    """(minimum count, exactly once, next index) of the quantifier at ``i``, if any."""
    if i >= len(pattern):
        return 1, True, i
    char = pattern[i]
    if char in (ord("*"), ord("?")):
        low, i = 0, i + 1
    elif char == ord("+"):
        low, i = 1, i + 1
    elif char == ord("{") and (brace := _QUANTIFIER.match(pattern, i)):
        low, i = int(brace.group(1) or 0), brace.end()
    else:
        return 1, True, i
    if i < len(pattern) and pattern[i] in (ord("?"), ord("+")):
        i += 1  # lazy or possessive: the same minimum
    return low, False, i


def first_bytes(pattern: bytes, flags: int = 0) -> frozenset[int] | None:
    """The first byte any match starts with, as ``analyse`` finds it, at a fraction of the
    cost: the first atom only, unless a ``|`` anywhere might be a top-level alternative."""
    if not pattern.startswith(b"^") or len(pattern) < 2:
        return None
    if b"|" in pattern:
        return analyse(pattern, flags).first
    atom = _atom(pattern, 1)
    if atom is None or atom[0] is None:
        return None
    low, _, _ = _quantifier(pattern, atom[1])
    if low < 1:
        return None
    if flags & re.IGNORECASE or _INLINE_ICASE.search(pattern):
        return _cases(atom[0])
    return frozenset({atom[0]})


class Analyses:
    """Pattern analyses for one scan, each done at most once, and only when needed: the
    first byte of every line a matcher holds (cheap), the full ``analyse`` only for lines
    a response's first byte leaves as candidates (most of the file never needs it)."""

    def __init__(self, first: Mapping[Match, frozenset[int] | None] | None = None) -> None:
        """``first``: lines' first bytes found earlier (``services.cache``)."""
        self._first: dict[Match, frozenset[int] | None] = dict(first or {})
        self.known: dict[Match, PatternFacts] = {}

    def first(self, match: Match) -> frozenset[int] | None:
        try:
            return self._first[match]
        except KeyError:
            found = self._first[match] = first_bytes(match.pattern, match.flags)
            return found

    def facts(self, match: Match) -> PatternFacts:
        found = self.known[match] = analyse(match.pattern, match.flags)
        return found


@dataclass(frozen=True, slots=True)
class Hit:
    """A line that matched, and the groups its pattern captured."""

    match: Match
    groups: tuple[bytes | None, ...]

    @property
    def soft(self) -> bool:
        return self.match.soft


class Matcher:
    """The match lines one probe's response is tried against, in nmap's order.

    Built per probe on first use (compiles only those lines). ``find`` is the indexed
    search; ``find_plain`` the plain loop it must agree with.
    """

    def __init__(self, matches: Sequence[Match], analyses: Analyses | None = None) -> None:
        """``analyses``: shared between a scan's matchers (every TCP probe's chain ends
        with the NULL probe's 4,000 lines: analysed once, not once per probe)."""
        self.matches = tuple(matches)
        self._analyses = analyses if analyses is not None else Analyses()
        first = self._analyses.first
        self._entries = [(m, first(m)) for m in self.matches]
        self._by_first: dict[int, tuple[Match, ...]] = {}

    def _candidates(self, first: int) -> tuple[Match, ...]:
        found = self._by_first.get(first)
        if found is None:
            found = tuple(m for m, f in self._entries if f is None or first in f)
            self._by_first[first] = found
        return found

    def find(self, response: bytes) -> Hit | None:
        """The first hard match, else the first softmatch, else None."""
        if not response:
            return None
        response = response[:MAX_MATCH_BYTES]
        lowered: bytes | None = None
        soft: Hit | None = None
        known = self._analyses.known
        for match in self._candidates(response[0]):
            if soft is not None and match.soft:
                continue
            facts = known.get(match) or self._analyses.facts(match)
            if facts.required:
                if facts.icase:
                    lowered = response.lower() if lowered is None else lowered
                    if facts.required not in lowered:
                        continue
                elif facts.required not in response:
                    continue
            hit = _try(match, response)
            if hit is not None:
                if not hit.soft:
                    return hit
                soft = hit
        return soft

    def find_plain(self, response: bytes) -> Hit | None:
        """nmap's loop: every line's regex in order (the reference ``find`` must equal)."""
        if not response:
            return None
        response = response[:MAX_MATCH_BYTES]
        soft: Hit | None = None
        for match in self.matches:
            if soft is not None and match.soft:
                continue
            hit = _try(match, response)
            if hit is not None:
                if not hit.soft:
                    return hit
                soft = hit
        return soft


def _try(match: Match, response: bytes) -> Hit | None:
    regex = match.regex
    if regex is None:
        return None
    found = regex.search(response)
    return None if found is None else Hit(match, found.groups())


def substitute(template: str | None, groups: Sequence[bytes | None]) -> str | None:
    """A version field with ``$1``..``$9``, ``$P(n)``, ``$SUBST(n,"a","b")`` and
    ``$I(n,">")`` replaced from ``groups`` (nmap's ``dotmplsubst``); None when empty."""
    if template is None:
        return None

    def group(number: str) -> bytes:
        index = int(number) - 1
        value = groups[index] if 0 <= index < len(groups) else None
        return value or b""

    def replace(token: re.Match[str]) -> str:
        plain, printable, sub_n, old, new, int_n, order = token.groups()
        if plain:
            return _text(group(plain))
        if printable:
            return "".join(chr(b) for b in group(printable) if 0x20 <= b < 0x7F)
        if sub_n:
            return _text(group(sub_n)).replace(old, new)
        raw = group(int_n)
        return str(int.from_bytes(raw, "big" if order == ">" else "little")) if raw else ""

    text = _TEMPLATE_TOKEN.sub(replace, template).strip()
    return text or None


def _text(raw: bytes) -> str:
    """Captured bytes as text: Latin-1, control characters as ``\\xHH`` (never raw)."""
    return "".join(chr(b) if 0x20 <= b < 0x7F or b >= 0xA0 else f"\\x{b:02x}" for b in raw)


def service_from_hit(hit: Hit, *, probe: str, database: str, tunnel: str | None = None) -> Service:
    """The ``Service`` a hit names, its templates filled in (confidence 10: probed)."""
    template: VersionTemplate = hit.match.template
    groups = hit.groups
    cpes = tuple(c for c in (substitute(t, groups) for t in template.cpes) if c)
    return Service(
        name=hit.match.service,
        product=substitute(template.product, groups),
        version=substitute(template.version, groups),
        info=substitute(template.info, groups),
        hostname=substitute(template.hostname, groups),
        ostype=substitute(template.ostype, groups),
        devicetype=substitute(template.devicetype, groups),
        cpes=cpes,
        method="probed",
        confidence=10,
        probe=probe,
        database=database,
        tunnel=tunnel,
        soft=hit.soft,
    )
