"""nmap's XML output (``-oX``): the ``nmaprun`` document of nmap 7.93, xmloutputversion 1.05.

Owns the XML writer and what nmap's two file formats share (also used by ``grepable``): the
per-host port summary with nmap's "ignored state" rule, the compact port list, ``ctime``
strings and the ``nmap-services`` loader. Imports ``results`` only.

The layout follows nmap's ``output.cc`` (``printportoutput``, ``print_xml_state_summary``,
``printfinaloutput``) and ``nmap.dtd``, so that tools made for nmap read it unchanged;
the tests check python-libnmap, ``xsltproc`` with Debian's ``nmap.xsl`` and ``ndiff``.

Decisions where portscout differs from nmap, or knows less:

* ``scanner="portscout"``, ``version`` is portscout's. nmap's DTD enumerates ``scanner (nmap)``,
  so a *validating* parser flags that one attribute; no consumer we know validates
  (libnmap, ndiff and nmap.xsl ignore the value; ndiff prints it in its banner), and
  masscan set the precedent with ``scanner="masscan"``. Claiming to be nmap would mislead
  anyone reading the file, so we don't.
* Host status: portscout has no host discovery. A host is ``up`` when any port answered
  (open or closed), with the reason and TTL of its first answer, as nmap's TCP ping
  reports; otherwise ``down`` with its most common reason. Down hosts are counted in
  ``runstats`` and written only at verbose >= 1, as nmap does.
* Services: nmap names ports from ``nmap-services`` (``method="table" conf="3"``). The
  writer never reads files; pass ``service_names`` (see ``load_service_names``) or get no
  ``<service>`` elements. Ports missing from the table get none either, as in nmap.
* ``<times>``: srtt/rttvar from the host's result RTTs (RFC 6298 smoothing in arrival
  order), ``to`` = srtt + 4 rttvar, at least 100 ms (nmap's default minimum). Omitted when
  no RTT was measured.
* An interrupted scan still ends the document: ``<finished exit="error" errormsg=...>``,
  the form nmap's ``fatal()`` writes (on ^C nmap itself leaves the file unterminated).

Streaming: the header is written by ``start``; a host is written as soon as it has a
result for every scanned port (memory stays bounded in sequential scans); the rest, in
address order, by ``finish``. Per host, open ports are kept whole; closed and filtered
ones only while they could still be listed one by one (at most ``ignore_limit`` ports), then
only as port numbers per reason, for ``<extrareasons ports=...>``.
"""

from __future__ import annotations

import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from os import PathLike
from typing import TextIO

from portscout.results import IPAddress, Protocol, Reason, Report, Result, ScanMeta, State

NMAP_XSL = "file:///usr/share/nmap/nmap.xsl"
XML_OUTPUT_VERSION = "1.05"
MIN_TIMEOUT = 0.1  # seconds: nmap's default --min-rtt-timeout, the floor of <times to>

# States nmap may fold into <extraports> ("Not shown: ..."), in nmap's state-number order.
IGNORABLE = (State.CLOSED, State.FILTERED)


def ignore_limit(verbose: int) -> int:
    """How many ports of one state nmap lists before folding them into a summary.

    ``PortList::isIgnoredState``: more than 25 ports, times ``verbose + 1`` with ``-v``
    (debugging, which raises it further, is not a portscout option).
    """
    return 25 * (max(verbose, 0) + 1)


def format_port_ranges(ports: Iterable[int]) -> str:
    """nmap's compact port list, e.g. ``1-1000,8080``: sorted, unique, runs as ranges."""
    runs: list[str] = []
    first = last = -2
    for port in sorted(set(ports)):
        if port != last + 1:
            if last >= 0:
                runs.append(str(first) if first == last else f"{first}-{last}")
            first = port
        last = port
    if last >= 0:
        runs.append(str(first) if first == last else f"{first}-{last}")
    return ",".join(runs)


def nmap_time(epoch: float) -> str:
    """``ctime(3)`` without the newline, in local time, as nmap prints times."""
    return time.ctime(epoch)


def plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def load_service_names(
    path: str | PathLike[str], protocol: Protocol = Protocol.TCP
) -> dict[int, str]:
    """Port -> service name for ``protocol`` from a file in ``nmap-services`` format.

    Lines are ``name<TAB>port/proto<TAB>open-frequency [# comment]``; where a port appears
    twice the more frequent name wins. Malformed lines are skipped, as nmap does. Raises
    ``OSError`` when the file cannot be read (e.g. ``/usr/share/nmap/nmap-services``).
    """
    best: dict[int, tuple[float, str]] = {}
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            number, _, proto = fields[1].partition("/")
            if proto != protocol.value or not number.isdigit():
                continue
            try:
                freq = float(fields[2]) if len(fields) > 2 else 0.0
            except ValueError:
                freq = 0.0
            port = int(number)
            if port not in best or freq > best[port][0]:
                best[port] = (freq, fields[0])
    return {port: name for port, (_, name) in best.items()}


def address_key(address: IPAddress) -> tuple[int, int]:
    return (address.version, int(address))


@dataclass(slots=True)
class HostPorts:
    """One host's results, summarised as nmap prints them; bounded in memory.

    ``limit`` is ``ignore_limit(verbose)``. ``first_seen`` (epoch seconds) is the host's
    ``starttime``.
    """

    address: IPAddress
    limit: int
    first_seen: float
    seen: int = 0
    answer: Result | None = None
    counts: Counter[State] = field(default_factory=Counter)
    reasons: Counter[Reason] = field(default_factory=Counter)
    _kept: dict[State, list[Result]] = field(default_factory=dict)
    _ports: dict[State, dict[tuple[Reason, Protocol], array[int]]] = field(default_factory=dict)
    srtt: float | None = None
    rttvar: float = 0.0

    def add(self, result: Result) -> None:
        self.seen += 1
        state = result.state
        self.counts[state] += 1
        self.reasons[result.reason] += 1
        if self.answer is None and state in (State.OPEN, State.CLOSED):
            self.answer = result
        if result.rtt is not None:
            self._sample(result.rtt)
        if state not in IGNORABLE:
            self._kept.setdefault(state, []).append(result)
            return
        by_reason = self._ports.setdefault(state, {})
        by_reason.setdefault((result.reason, result.protocol), array("H")).append(result.port)
        if self.counts[state] <= self.limit:
            self._kept.setdefault(state, []).append(result)
        else:
            self._kept.pop(state, None)  # folded for good: counts only grow

    def _sample(self, rtt: float) -> None:
        # RFC 6298 section 2, alpha = 1/8, beta = 1/4.
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    @property
    def up(self) -> bool:
        return self.answer is not None

    @property
    def status_reason(self) -> tuple[Reason, int]:
        """The reason and TTL nmap puts in ``<status>``."""
        if self.answer is not None:
            return self.answer.reason, self.answer.reason_ttl or 0
        if not self.reasons:
            return Reason.NO_RESPONSE, 0
        return self.reasons.most_common(1)[0][0], 0

    def ignored_states(self) -> list[State]:
        """States folded into a summary, most ports first (``nextIgnoredState``)."""
        folded = [s for s in IGNORABLE if self.counts[s] > self.limit]
        return sorted(folded, key=lambda s: -self.counts[s])

    def extrareasons(self, state: State) -> list[tuple[Reason, Protocol, list[int]]]:
        """(reason, protocol, sorted ports) of a folded state, most ports first."""
        groups = [
            (reason, proto, sorted(ports))
            for (reason, proto), ports in self._ports.get(state, {}).items()
        ]
        return sorted(groups, key=lambda g: (-len(g[2]), g[2][0]))

    def shown(self) -> list[Result]:
        """Results listed one by one, in port order."""
        folded = set(self.ignored_states())
        listed = [r for s, rs in self._kept.items() if s not in folded for r in rs]
        return sorted(listed, key=lambda r: (r.protocol.value, r.port))

    def times_us(self) -> tuple[int, int, int] | None:
        """``<times>`` srtt, rttvar, to in microseconds, or None without RTT samples."""
        if self.srtt is None:
            return None
        timeout = max(self.srtt + 4 * self.rttvar, MIN_TIMEOUT)
        return round(self.srtt * 1e6), round(self.rttvar * 1e6), round(timeout * 1e6)


@dataclass(slots=True)
class HostTally:
    """Hosts buffered until complete, and the up/down counts of those written."""

    limit: int
    ports_per_host: int
    clock: Callable[[], float]
    hosts: dict[IPAddress, HostPorts] = field(default_factory=dict)
    up: int = 0
    down: int = 0

    def add(self, result: Result) -> HostPorts | None:
        """Record a result; return its host when that host now has every port, else None."""
        host = self.hosts.get(result.host)
        if host is None:
            host = HostPorts(result.host, self.limit, self.clock())
            self.hosts[result.host] = host
        host.add(result)
        if self.ports_per_host and host.seen >= self.ports_per_host:
            return self.pop(result.host)
        return None

    def pop(self, address: IPAddress) -> HostPorts:
        host = self.hosts.pop(address)
        if host.up:
            self.up += 1
        else:
            self.down += 1
        return host

    def drain(self) -> list[HostPorts]:
        """Every host still buffered, in address order (incomplete after an interrupt)."""
        return [self.pop(a) for a in sorted(self.hosts, key=address_key)]

    def summary(self, elapsed: float) -> str:
        """nmap's "N IP addresses (M hosts up) scanned in S seconds"."""
        total = self.up + self.down
        return (
            f"{total} {plural(total, 'IP address', 'IP addresses')} "
            f"({self.up} {plural(self.up, 'host', 'hosts')} up) "
            f"scanned in {elapsed:.2f} seconds"
        )


def xml_escape(value: object) -> str:
    """Text safe inside a double-quoted XML attribute (XML 1.0 characters only)."""
    out: list[str] = []
    for ch in str(value):
        code = ord(ch)
        if ch in _ENTITIES:
            out.append(_ENTITIES[ch])
        elif code < 0x20 or 0xD800 <= code <= 0xDFFF or code in (0xFFFE, 0xFFFF):
            out.append("\ufffd")  # not an XML 1.0 character at all
        else:
            out.append(ch)
    return "".join(out)


_ENTITIES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "'": "&apos;",
    "\t": "&#9;",
    "\n": "&#10;",
    "\r": "&#13;",
}


def _tag(name: str, attrs: Iterable[tuple[str, object]], end: str = "/>") -> str:
    body = "".join(f' {key}="{xml_escape(value)}"' for key, value in attrs)
    return f"<{name}{body}{end}"


def _comment(text: str) -> str:
    # "--" may not appear inside a comment; nmap writes the second dash as &#45;.
    return "<!-- " + xml_escape(text).replace("--", "-&#45;") + " -->"


class NmapXmlWriter:
    """Writes nmap's ``-oX`` document to ``stream`` (which it never closes).

    ``service_names`` maps port -> name (``load_service_names``); ``verbose`` is nmap's
    ``-v`` level (``<verbose level>``, the ignored-state limit, down hosts shown);
    ``stylesheet`` is the ``xml-stylesheet`` href, None for none (nmap's
    ``--no-stylesheet``); ``clock`` gives host start/end times (epoch seconds).
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        service_names: Mapping[int, str] | None = None,
        verbose: int = 0,
        stylesheet: str | None = NMAP_XSL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._out = stream
        self._services = service_names
        self._verbose = verbose
        self._stylesheet = stylesheet
        self._clock = clock
        self._meta: ScanMeta | None = None
        self._tally = HostTally(ignore_limit(verbose), 0, clock)

    def start(self, meta: ScanMeta) -> None:
        self._meta = meta
        self._tally = HostTally(ignore_limit(self._verbose), len(meta.ports), self._clock)
        args = " ".join(meta.args)
        started = nmap_time(meta.started)
        head = ['<?xml version="1.0" encoding="UTF-8"?>', "<!DOCTYPE nmaprun>"]
        if self._stylesheet is not None:
            href = xml_escape(self._stylesheet)
            head.append(f'<?xml-stylesheet href="{href}" type="text/xsl"?>')
        head += [
            _comment(f"portscout {meta.version} scan initiated {started} as: {args}"),
            _tag(
                "nmaprun",
                [
                    ("scanner", "portscout"),
                    ("args", args),
                    ("start", int(meta.started)),
                    ("startstr", started),
                    ("version", meta.version),
                    ("xmloutputversion", XML_OUTPUT_VERSION),
                ],
                ">",
            ),
            _tag(
                "scaninfo",
                [
                    ("type", meta.scan_type),
                    ("protocol", meta.protocol.value),
                    ("numservices", len(meta.ports)),
                    ("services", format_port_ranges(meta.ports)),
                ],
            ),
            _tag("verbose", [("level", self._verbose)]),
            _tag("debugging", [("level", 0)]),
        ]
        self._out.write("\n".join(head) + "\n")

    def add(self, result: Result) -> None:
        host = self._tally.add(result)
        if host is not None:
            self._write_host(host, self._clock())

    def finish(self, report: Report) -> None:
        if self._meta is None:  # finish without start: still a whole document
            self.start(_meta_from_report(report))
        end = report.finished if report.finished is not None else self._clock()
        for host in self._tally.drain():
            self._write_host(host, end)
        elapsed = max(end - report.started, 0.0)
        timestr = nmap_time(end)
        finished: list[tuple[str, object]] = [
            ("time", int(end)),
            ("timestr", timestr),
            ("summary", f"portscout done at {timestr}; {self._tally.summary(elapsed)}"),
            ("elapsed", f"{elapsed:.2f}"),
        ]
        if report.interrupted:
            finished += [("exit", "error"), ("errormsg", "scan interrupted; results incomplete")]
        else:
            finished.append(("exit", "success"))
        up, down = self._tally.up, self._tally.down
        self._out.write(
            "<runstats>"
            + _tag("finished", finished)
            + _tag("hosts", [("up", up), ("down", down), ("total", up + down)])
            + "\n</runstats>\n</nmaprun>\n"
        )
        self._out.flush()

    def _write_host(self, host: HostPorts, end: float) -> None:
        if not host.up and self._verbose < 1:
            return
        reason, ttl = host.status_reason
        parts = [
            _tag("host", [("starttime", int(host.first_seen)), ("endtime", int(end))], ">"),
            _tag(
                "status",
                [("state", "up" if host.up else "down"), ("reason", reason), ("reason_ttl", ttl)],
            ),
            "\n",
            _tag("address", [("addr", host.address), ("addrtype", _addrtype(host.address))]),
            "\n<hostnames>\n",
        ]
        name = self._meta.hostnames.get(host.address) if self._meta else None
        if name:
            parts += [_tag("hostname", [("name", name), ("type", "user")]), "\n"]
        parts.append("</hostnames>\n")
        if host.up:
            parts += self._ports_xml(host)
        times = host.times_us()
        if times is not None:
            srtt, rttvar, timeout = times
            parts += [_tag("times", [("srtt", srtt), ("rttvar", rttvar), ("to", timeout)]), "\n"]
        parts.append("</host>\n")
        self._out.write("".join(parts))

    def _ports_xml(self, host: HostPorts) -> list[str]:
        parts = ["<ports>"]
        for state in host.ignored_states():
            parts += [_tag("extraports", [("state", state), ("count", host.counts[state])], ">")]
            parts.append("\n")
            for reason, proto, ports in host.extrareasons(state):
                attrs: list[tuple[str, object]] = [
                    ("reason", reason),
                    ("count", len(ports)),
                    ("proto", proto),
                    ("ports", format_port_ranges(ports)),
                ]
                parts += [_tag("extrareasons", attrs), "\n"]
            parts.append("</extraports>\n")
        for result in host.shown():
            parts.append(
                _tag("port", [("protocol", result.protocol), ("portid", result.port)], ">")
            )
            parts.append(
                _tag(
                    "state",
                    [
                        ("state", result.state),
                        ("reason", result.reason),
                        ("reason_ttl", result.reason_ttl or 0),
                    ],
                )
            )
            service = self._services.get(result.port) if self._services else None
            if service:
                attrs = [("name", service), ("method", "table"), ("conf", 3)]
                parts.append(_tag("service", attrs))
            parts.append("</port>\n")
        parts.append("</ports>\n")
        return parts


def _addrtype(address: IPAddress) -> str:
    return "ipv4" if isinstance(address, IPv4Address) else "ipv6"


def _meta_from_report(report: Report) -> ScanMeta:
    """Minimal metadata for a writer finished without ``start`` (a scan that never began)."""
    return ScanMeta(
        args=(),
        scan_type="connect",
        engine=report.engine,
        ports=(),
        started=report.started,
        version="",
        key=report.key,
    )
