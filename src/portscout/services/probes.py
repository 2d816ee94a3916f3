"""nmap's ``nmap-service-probes`` format, parsed into values; regexes compiled lazily.

Owns: ``ServiceProbe``, ``Match``, ``VersionTemplate``, ``ProbeDatabase``, the parser and
the search for the file. Core: no sockets, no clock; reading the file is the caller's.

The format (nmap's "Service and Application Version Detection", file format section)::

    Exclude T:9100-9107
    Probe TCP GetRequest q|GET / HTTP/1.0\\r\\n\\r\\n| [no-payload]
    rarity 1
    ports 1,70,80-85
    sslports 443
    totalwaitms 6000
    tcpwrappedms 3000
    fallback GetRequest,NULL
    match http m|^HTTP/1\\.[01] .*\\r\\nServer: nginx/([\\d.]+)|s p/nginx/ v/$1/
    softmatch ftp m|^220 |

The file is nmap's and under its licence (NPSL): portscout never ships it, it reads the
installed one at run time (``$NMAPDIR``, ``/usr/share/nmap``) or ``--service-probes FILE``.
Patterns are PCRE; they compile with Python's ``re`` as bytes (3.11 has possessive
quantifiers and atomic groups), with the ``i`` and ``s`` flags the file uses. A pattern
that does not compile never matches; ``ProbeDatabase.failed_patterns()`` lists them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from portscout.errors import UsageError

FILE_NAME = "nmap-service-probes"
SYSTEM_DIRS = ("/usr/share/nmap", "/usr/local/share/nmap", "/opt/homebrew/share/nmap")
DEFAULT_RARITY = 5  # nmap's default for a probe without a rarity line
DEFAULT_TOTALWAIT_MS = 5000
DEFAULT_TCPWRAPPED_MS = 2000
_FLAGS = {"i": re.IGNORECASE, "s": re.DOTALL}
_SIMPLE_ESCAPES = {"0": 0, "a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
# PCRE escapes Python's re lacks, as the classes they mean (bytes, so ASCII).
_PCRE_ESCAPES = ((rb"\e", rb"\x1b"), (rb"\h", rb"[ \t]"), (rb"\H", rb"[^ \t]"))


class ProbeFileError(UsageError):
    """The probe file cannot be parsed: one line naming the file, line number and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionTemplate:
    """A match's version fields as written (``$1``, ``$P(2)``... not yet substituted).

    nmap's letters: ``p`` product, ``v`` version, ``i`` extra info, ``h`` hostname,
    ``o`` OS type, ``d`` device type, ``cpe:`` CPE names (any number).
    """

    product: str | None = None
    version: str | None = None
    info: str | None = None
    hostname: str | None = None
    ostype: str | None = None
    devicetype: str | None = None
    cpes: tuple[str, ...] = ()


_TEMPLATE_FIELDS = {"p": "product", "v": "version", "i": "info", "h": "hostname",
                    "o": "ostype", "d": "devicetype"}  # fmt: skip


class Match:
    """One ``match`` or ``softmatch`` line. The regex compiles on first use.

    Mutable only in its compiled-regex slot (a cache owned by this object, so the probes a
    scan never uses never pay the compile time).
    """

    __slots__ = ("_error", "_regex", "flags", "line", "pattern", "service", "soft", "template")

    def __init__(
        self,
        service: str,
        pattern: bytes,
        *,
        flags: int = 0,
        soft: bool = False,
        template: VersionTemplate | None = None,
        line: int = 0,
        error: str | None = None,
    ) -> None:
        """``error``: the pattern is already known not to compile (``services.cache``)."""
        self.service = service
        self.pattern = pattern
        self.flags = flags
        self.soft = soft
        self.template = template if template is not None else VersionTemplate()
        self.line = line
        self._regex: re.Pattern[bytes] | None = None
        self._error = error

    @property
    def regex(self) -> re.Pattern[bytes] | None:
        """The compiled pattern, or None when Python's ``re`` cannot compile it."""
        if self._regex is None and self._error is None:
            try:
                self._regex = re.compile(pcre_to_python(self.pattern), self.flags)
            except (re.error, OverflowError, RecursionError) as exc:
                self._error = str(exc)
        return self._regex

    @property
    def error(self) -> str | None:
        """Why the pattern did not compile (compiles it first), else None."""
        _ = self.regex
        return self._error

    @property
    def known_error(self) -> str | None:
        """Why the pattern did not compile, if that is known already (never compiles)."""
        return self._error

    def __repr__(self) -> str:
        kind = "softmatch" if self.soft else "match"
        return f"<{kind} {self.service} line {self.line}>"


def pcre_to_python(pattern: bytes) -> bytes:
    r"""Rewrite the PCRE escapes that Python's ``re`` lacks (``\e``, ``\h``, ``\H``)."""
    if b"\\" not in pattern:
        return pattern
    out = bytearray()
    i = 0
    while i < len(pattern):
        if pattern[i] == 0x5C and i + 1 < len(pattern):
            pair = pattern[i : i + 2]
            out += next((new for old, new in _PCRE_ESCAPES if old == pair), pair)
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return bytes(out)


@dataclass(slots=True, kw_only=True)
class ServiceProbe:
    """One ``Probe`` section: what to send, where it is likely, and its match lines."""

    protocol: str  # "TCP" or "UDP"
    name: str
    payload: bytes
    no_payload: bool = False
    rarity: int = DEFAULT_RARITY
    ports: frozenset[int] = frozenset()
    sslports: frozenset[int] = frozenset()
    totalwaitms: int = DEFAULT_TOTALWAIT_MS
    tcpwrappedms: int = DEFAULT_TCPWRAPPED_MS
    fallback: tuple[str, ...] = ()
    matches: list[Match] = field(default_factory=list)

    @property
    def is_null(self) -> bool:
        """The NULL probe sends nothing and waits for a banner."""
        return not self.payload and not self.no_payload and self.name == "NULL"

    def services(self) -> frozenset[str]:
        """Services this probe's own lines can name (nmap's ``serviceIsPossible``)."""
        return frozenset(m.service for m in self.matches)


@dataclass(slots=True, kw_only=True)
class ProbeDatabase:
    """The probes of one file (or the built-in set), in file order.

    ``source`` says where it came from (a path, or ``built-in``): the output names it.
    ``excluded`` are the ports the ``Exclude`` line keeps away from probing (TCP).
    """

    source: str
    probes: list[ServiceProbe]
    excluded: frozenset[int] = frozenset()
    _by_name: dict[tuple[str, str], ServiceProbe] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {(p.protocol, p.name): p for p in self.probes}

    def get(self, protocol: str, name: str) -> ServiceProbe | None:
        return self._by_name.get((protocol, name))

    def null_probe(self, protocol: str = "TCP") -> ServiceProbe | None:
        probe = self.get(protocol, "NULL")
        return probe if probe is not None and probe.is_null else None

    def matches(self) -> Iterable[Match]:
        for probe in self.probes:
            yield from probe.matches

    def failed_patterns(self) -> list[tuple[Match, str]]:
        """Every pattern that does not compile, with why (compiles them all: for ``-d``)."""
        return [(m, m.error) for m in self.matches() if m.error is not None]


def find_probe_file(
    environ: Mapping[str, str], explicit: str | None = None, dirs: Iterable[str] = SYSTEM_DIRS
) -> Path | None:
    """Where nmap's file is: ``explicit`` (must exist), ``$NMAPDIR``, then system dirs."""
    if explicit is not None:
        return Path(explicit)
    candidates = [environ["NMAPDIR"]] if environ.get("NMAPDIR") else []
    candidates += list(dirs)
    for directory in candidates:
        path = Path(directory) / FILE_NAME
        if path.is_file():
            return path
    return None


def load_probe_file(path: Path) -> ProbeDatabase:
    """Read and parse ``path``; ProbeFileError (one line) when unreadable or malformed."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProbeFileError(f"cannot read probe file '{path}': {exc.strerror}") from exc
    return parse_probe_file(data, source=str(path))


def parse_probe_file(data: bytes, *, source: str = "<string>") -> ProbeDatabase:
    """Parse the whole file. Bytes in, decoded as Latin-1 so that a character is a byte
    (patterns and payloads are bytes; the file is not all UTF-8)."""
    text = data.decode("latin-1")
    probes: list[ServiceProbe] = []
    excluded: frozenset[int] = frozenset()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        try:
            if keyword == "Probe":
                probes.append(parse_probe_line(rest))
            elif keyword == "Exclude":
                excluded = parse_port_list(rest, tcp_only=True)
            elif not probes:
                raise ValueError(f"'{keyword}' before the first Probe line")
            else:
                _directive(probes[-1], keyword, rest.strip(), number)
        except ValueError as exc:
            raise ProbeFileError(f"{source}:{number}: {exc}") from None
    return ProbeDatabase(source=source, probes=probes, excluded=excluded)


def _directive(probe: ServiceProbe, keyword: str, value: str, number: int) -> None:
    if keyword in ("match", "softmatch"):
        probe.matches.append(parse_match_line(value, soft=keyword == "softmatch", line=number))
    elif keyword == "ports":
        probe.ports = parse_port_list(value)
    elif keyword == "sslports":
        probe.sslports = parse_port_list(value)
    elif keyword == "rarity":
        probe.rarity = _int(value, 1, 9, keyword)
    elif keyword == "totalwaitms":
        probe.totalwaitms = _int(value, 1, 600_000, keyword)
    elif keyword == "tcpwrappedms":
        probe.tcpwrappedms = _int(value, 1, 600_000, keyword)
    elif keyword == "fallback":
        probe.fallback = tuple(name.strip() for name in value.split(",") if name.strip())
    else:
        raise ValueError(f"unknown directive '{keyword}'")


def _int(value: str, low: int, high: int, what: str) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise ValueError(f"{what} must be {low}-{high}, got '{value}'")
    return int(value)


def parse_probe_line(rest: str) -> ServiceProbe:
    """``TCP NAME q|payload| [no-payload]`` (the part after ``Probe``)."""
    parts = rest.split(None, 2)
    if len(parts) < 3 or parts[0] not in ("TCP", "UDP"):
        raise ValueError(f"bad Probe line 'Probe {rest}'")
    protocol, name, spec = parts
    if len(spec) < 3 or spec[0] != "q":
        raise ValueError(f"probe {name}: payload must be q<delim>...<delim>")
    delim = spec[1]
    end = spec.find(delim, 2)
    if end < 0:
        raise ValueError(f"probe {name}: unterminated payload")
    flags = spec[end + 1 :].split()
    return ServiceProbe(
        protocol=protocol,
        name=name,
        payload=unescape(spec[2:end]),
        no_payload="no-payload" in flags,
    )


def unescape(text: str) -> bytes:
    r"""A probe string's C escapes as bytes: ``\0 \a \b \f \n \r \t \v \\ \xHH``; any other
    escaped character stands for itself (as nmap's ``cstring_unescape``)."""
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 == len(text):
            out.append(ord(char) & 0xFF)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "x":
            digits = text[i + 2 : i + 4]
            if len(digits) != 2 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise ValueError(f"bad \\x escape in '{text[:40]}'")
            out.append(int(digits, 16))
            i += 4
            continue
        out.append(_SIMPLE_ESCAPES.get(nxt, ord(nxt) & 0xFF))
        i += 2
    return bytes(out)


def parse_port_list(text: str, *, tcp_only: bool = False) -> frozenset[int]:
    """``21,23,1040-1043`` (and ``T:``/``U:`` prefixes in ``Exclude``) as a set of ports.
    With ``tcp_only``, items after a ``U:`` are left out."""
    ports: set[int] = set()
    udp = False
    for raw in text.replace(" ", "").split(","):
        item = raw
        if item[:2] in ("T:", "U:"):
            udp = item[0] == "U"
            item = item[2:]
        if not item or (tcp_only and udp):
            continue
        low, dash, high = item.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"bad port '{raw}'")
        first, last = int(low), int(high) if dash else int(low)
        if not 0 <= first <= last <= 65535:
            raise ValueError(f"bad port range '{raw}'")
        ports.update(range(first, last + 1))
    return frozenset(ports)


def parse_match_line(value: str, *, soft: bool = False, line: int = 0) -> Match:
    """``SERVICE m<d>REGEX<d>[flags] [p/../ v/../ ... cpe:/../]`` (after ``match``)."""
    service, _, rest = value.partition(" ")
    if not service or len(rest) < 3 or rest[0] != "m":
        raise ValueError(f"bad match line '{value[:60]}'")
    delim = rest[1]
    end = rest.find(delim, 2)
    if end < 0:
        raise ValueError(f"unterminated pattern in match line for '{service}'")
    pattern = rest[2:end].encode("latin-1")
    tail = rest[end + 1 :]
    flag_text = tail[: len(tail) - len(tail.lstrip("is"))]
    flags = 0
    for letter in flag_text:
        flags |= _FLAGS[letter]
    template = parse_version_fields(tail[len(flag_text) :], service)
    return Match(service, pattern, flags=flags, soft=soft, template=template, line=line)


def parse_version_fields(text: str, service: str = "?") -> VersionTemplate:
    """The ``p/../ v/../ i/../ h/../ o/../ d/../ cpe:/../[a]`` fields after a pattern.
    Each field's delimiter is the character after its letter; it ends at the next one."""
    values: dict[str, str] = {}
    cpes: list[str] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        if text.startswith("cpe:", i):
            key, start = "cpe", i + 4
        elif text[i] in _TEMPLATE_FIELDS:
            key, start = text[i], i + 1
        else:
            raise ValueError(f"bad version field at '{text[i : i + 20]}' ({service})")
        if start >= len(text):
            raise ValueError(f"empty version field '{key}' ({service})")
        delim = text[start]
        end = text.find(delim, start + 1)
        if end < 0:
            raise ValueError(f"unterminated version field '{key}' ({service})")
        body = text[start + 1 : end]
        i = end + 1
        if key == "cpe":
            cpes.append("cpe:/" + body if not body.startswith("/") else "cpe:" + body)
            if i < len(text) and text[i] == "a":  # nmap's "auto" flag: nothing to keep
                i += 1
        else:
            values[_TEMPLATE_FIELDS[key]] = body
    return VersionTemplate(**values, cpes=tuple(cpes))
