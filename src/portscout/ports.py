"""Port lists: nmap's ``-p`` syntax, the ``--top-ports`` ranking, and the compact form nmap
writes in XML ``scaninfo services``.

Core module: imports only the standard library and ``errors``; reads its table from
``portscout/data`` through ``importlib.resources`` on each call (no module cache).

Port syntax (nmap "Port Specification and Scan Order", TCP subset)::

    22                  one port
    22,80,8000-8100     a list of ports and inclusive ranges; spaces around commas are fine
    -                   1-65535
    1024-               1024-65535
    -100                1-100
    T:22,80             "T:" marks the TCP ports that follow (what portscout scans anyway)

Port 0 is included only when written out ("0", "0-100"): open-ended ranges start at 1, as in
nmap, where "-p-" means 1-65535 and "-p0-" adds port 0. ``U:`` (UDP) and ``S:`` (SCTP) are
refused, as are nmap's service names ("http"), wildcards and "[...]" bracket ranges.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from importlib import resources

from portscout.errors import PortSpecError

MAX_PORT = 65535

_TABLE = "top-tcp-ports.txt"
# One item: a port, or a range with either end left open. ASCII digits only: \d would
# accept other scripts' digits, which int() then reads.
_SERVICE = re.compile(r"[A-Za-z*?][A-Za-z0-9*?._+-]*", re.ASCII)  # a name, as in -p ssh,http*
_ITEM = re.compile(r"([0-9]*)(?:(-)([0-9]*))?", re.ASCII)
_PROTOCOLS = {"T": None, "U": "UDP", "S": "SCTP", "P": "IP protocol"}


def parse_ports(spec: str) -> tuple[int, ...]:
    """Parse an nmap port specification into sorted, distinct port numbers.

    Service names from nmap's table stand for their ports (``ssh``, ``http*``), as in
    nmap. Raises ``PortSpecError`` naming the first bad item: ``invalid port range
    '90-80'``, ``port '70000' out of range 0-65535``, ``empty port specification``,
    ``unknown service name 'foo'``.
    """
    if not spec.strip():
        raise PortSpecError("empty port specification")
    ranges: list[tuple[int, int]] = []
    names: dict[int, str] | None = None
    for raw in spec.split(","):
        item = _strip_protocol(raw.strip(), spec)
        if not item:
            raise PortSpecError(f"empty item in port specification '{spec.strip()}'")
        if _SERVICE.fullmatch(item):
            names = service_names() if names is None else names
            ranges.extend((port, port) for port in _service_ports(item, names))
        else:
            ranges.append(_parse_item(item))
    return tuple(_expand(ranges))


def _service_ports(pattern: str, names: dict[int, str]) -> list[int]:
    """The ports nmap's services table names ``pattern`` (``*`` and ``?`` as in nmap:
    ``http*`` is http, http-alt, https, ...)."""
    wanted = pattern.lower()
    ports = [port for port, name in names.items() if fnmatch.fnmatchcase(name, wanted)]
    if not ports:
        raise PortSpecError(f"unknown service name '{pattern}'")
    return ports


def _strip_protocol(item: str, spec: str) -> str:
    """Drop a leading ``T:``; refuse the other protocols nmap knows."""
    prefix, colon, rest = item.partition(":")
    if not colon:
        return item
    if prefix not in _PROTOCOLS:
        raise PortSpecError(f"invalid port '{item}'")
    protocol = _PROTOCOLS[prefix]
    if protocol is not None:
        raise PortSpecError(f"{protocol} ports are not supported yet: '{item}'")
    if not rest.strip():
        raise PortSpecError(f"no port after 'T:' in '{spec.strip()}'")
    return rest.strip()


def _parse_item(item: str) -> tuple[int, int]:
    """One item to an inclusive ``(first, last)`` range."""
    match = _ITEM.fullmatch(item)
    if match is None:
        raise PortSpecError(f"invalid port '{item}'")
    low_text, dash, high_text = match.groups()
    if not dash:
        port = _port_number(low_text)
        return port, port
    low = _port_number(low_text) if low_text else 1
    high = _port_number(high_text) if high_text else MAX_PORT
    if low > high:
        raise PortSpecError(f"invalid port range '{item}'")
    return low, high


def _port_number(text: str) -> int:
    # Length first: int() of thousands of digits is slow, and refused past 4300 digits.
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(MAX_PORT)) or int(digits) > MAX_PORT:
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise PortSpecError(f"port '{shown}' out of range 0-{MAX_PORT}")
    return int(digits)


def _expand(ranges: list[tuple[int, int]]) -> list[int]:
    """Sorted distinct ports of possibly overlapping ranges, without a 65536-entry set."""
    ports: list[int] = []
    next_free = 0  # lowest port not yet emitted
    for low, high in sorted(ranges):
        start = max(low, next_free)
        if start <= high:
            ports.extend(range(start, high + 1))
            next_free = high + 1
    return ports


def format_ports(ports: Iterable[int]) -> str:
    """The compact nmap form of a port collection: ``1-1000,8080``.

    Order and repeats in the input do not matter; runs of two or more consecutive ports
    become ranges. ``parse_ports(format_ports(p)) == tuple(sorted(set(p)))`` for any non-empty
    ``p``; an empty ``p`` gives ``""``. Raises ``PortSpecError`` for a value outside 0-65535.
    """
    runs: list[str] = []
    first = last = -2
    for port in sorted(set(ports)):
        if not 0 <= port <= MAX_PORT:
            raise PortSpecError(f"port '{port}' out of range 0-{MAX_PORT}")
        if port != last + 1:
            if last >= 0:
                runs.append(_run(first, last))
            first = port
        last = port
    if last >= 0:
        runs.append(_run(first, last))
    return ",".join(runs)


def _run(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def top_ports(n: int) -> tuple[int, ...]:
    """The ``n`` TCP ports most frequently found open, sorted by port number.

    The ranking is nmap's (``nmap-services`` open frequencies, ties to the lower port), so
    ``top_ports(1000)`` is nmap's default port list and ``top_ports(100)`` that of ``-F``.
    Raises ``PortSpecError`` if ``n`` is below 1 or above the number of ranked ports.
    """
    ranking = ranked_ports()
    if n < 1:
        raise PortSpecError(f"top-ports count '{n}' must be at least 1")
    if n > len(ranking):
        raise PortSpecError(f"top-ports count '{n}' exceeds the {len(ranking)} ranked TCP ports")
    return tuple(sorted(ranking[:n]))


def ranked_ports() -> tuple[int, ...]:
    """Every ranked TCP port, most frequently open first (the data file's order).

    Reads ``data/top-tcp-ports.txt`` on each call: 8,366 lines, about 2 ms, paid once per
    scan. No cache, as STYLE forbids module state; callers that need it often keep the result.
    """
    text = (resources.files("portscout") / "data" / _TABLE).read_text(encoding="ascii")
    return tuple(
        int(line) for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def service_names() -> dict[int, str]:
    """TCP port -> service name as nmap prints it (``data/tcp-services.txt``, from nmap-services).

    Read on each call (about 3 ms); the CLI reads it once per scan for its writers.
    """
    text = (resources.files("portscout") / "data" / "tcp-services.txt").read_text(encoding="ascii")
    names: dict[int, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            port, _, name = line.partition(" ")
            names[int(port)] = name
    return names
