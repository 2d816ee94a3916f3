"""nmap's XML output (``-oX``): the ``nmaprun`` document of nmap 7.93, xmloutputversion 1.05.

Owns the XML writer and what nmap's file formats share (also used by ``grepable`` and
``normal``): the compact port list, ``ctime`` strings, host counts, which hosts are shown and
the ``nmap-services`` loader. Imports ``results`` and ``output`` only.

The layout follows nmap's ``output.cc`` (``printportoutput``, ``print_xml_state_summary``,
``printfinaloutput``) and ``nmap.dtd``, so that tools made for nmap read it unchanged;
the tests check python-libnmap, ``xsltproc`` with Debian's ``nmap.xsl`` and ``ndiff``.

Decisions where portscout differs from nmap, or knows less:

* ``scanner="portscout"``, ``version`` is portscout's. nmap's DTD enumerates ``scanner (nmap)``,
  so a *validating* parser flags that one attribute; no consumer we know validates
  (libnmap, ndiff and nmap.xsl ignore the value; ndiff prints it in its banner), and
  masscan set the precedent with ``scanner="masscan"``. Claiming to be nmap would mislead
  anyone reading the file, so we don't.
* Host status: from host discovery (``reason`` of its first answer), ``user-set`` with
  ``-Pn`` (every target up, as nmap); down hosts are counted in ``runstats`` and written
  only at verbose >= 1, as nmap does. With ``--open`` only hosts with an open port are
  written (all are counted).
* Services: nmap names ports from ``nmap-services`` (``method="table" conf="3"``). The
  writer never reads files; pass ``service_names`` (see ``load_service_names``) or get no
  ``<service>`` elements. Ports missing from the table get none either, as in nmap.
* ``<times>``: srtt/rttvar from the host's result RTTs (RFC 6298 smoothing in port order),
  else from discovery's round trip; ``to`` = srtt + 4 rttvar, at least 100 ms (nmap's
  default minimum). Omitted when no RTT was measured. ``starttime`` is the scan's start.
* An interrupted scan still ends the document: ``<finished exit="error" errormsg=...>``,
  the form nmap's ``fatal()`` writes (on ^C nmap itself leaves the file unterminated).

Streaming: the header is written by ``start``, each host as the ordering stage
(``output.hosts.HostOrder``) hands it over, in address order, and ``runstats`` by ``finish``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv4Address
from os import PathLike
from typing import TextIO

from portscout.output.hosts import MIN_TIMEOUT, HostResults
from portscout.ports import format_ports
from portscout.results import IPAddress, Protocol, Report, ScanMeta, Service, State

NMAP_XSL = "file:///usr/share/nmap/nmap.xsl"
XML_OUTPUT_VERSION = "1.05"


def nmap_time(epoch: float) -> str:
    """``ctime(3)`` without the newline, in local time, as nmap prints times."""
    return time.ctime(epoch)


def initiated(meta: ScanMeta) -> str:
    """nmap's first line of every output: what scanned, when, and with which command."""
    return (
        f"portscout {meta.version} scan initiated {nmap_time(meta.started)} as: {meta.command_line}"
    )


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


class HostCount:
    """Hosts handed to a writer, up and down: nmap's "N IP addresses (M hosts up)"."""

    def __init__(self) -> None:
        self.up = self.down = 0

    def add(self, host: HostResults) -> None:
        if host.up:
            self.up += 1
        else:
            self.down += 1

    def summary(self, elapsed: float) -> str:
        total = self.up + self.down
        return (
            f"{total} {plural(total, 'IP address', 'IP addresses')} "
            f"({self.up} {plural(self.up, 'host', 'hosts')} up) "
            f"scanned in {elapsed:.2f} seconds"
        )


def shown(host: HostResults, *, verbose: int, only_open: bool) -> bool:
    """Whether nmap's outputs show ``host``: down hosts only with -v, and with --open
    only hosts with an open port (both are still counted)."""
    if not host.up:
        return verbose >= 1 and not only_open
    return not only_open or host.counts[State.OPEN] > 0


class NmapXmlWriter:
    """Writes nmap's ``-oX`` document to ``stream`` (which it never closes).

    ``service_names`` maps port -> name (``load_service_names``); ``verbose`` is nmap's
    ``-v`` level (``<verbose level>``, down hosts shown); ``only_open`` is ``--open``;
    ``stylesheet`` is the ``xml-stylesheet`` href, None for none (nmap's
    ``--no-stylesheet``); ``clock`` gives host end times (epoch seconds).
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        service_names: Mapping[int, str] | None = None,
        verbose: int = 0,
        only_open: bool = False,
        stylesheet: str | None = NMAP_XSL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._out = stream
        self._services = service_names
        self._verbose = verbose
        self._only_open = only_open
        self._stylesheet = stylesheet
        self._clock = clock
        self._meta: ScanMeta | None = None
        self._count = HostCount()

    def start(self, meta: ScanMeta) -> None:
        self._meta = meta
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
        ]
        if meta.ports:  # a ping scan (-sn) has no scaninfo, as in nmap's
            scaninfo = [
                ("type", meta.scan_type),
                ("protocol", meta.protocol.value),
                ("numservices", len(meta.ports)),
                ("services", format_ports(meta.ports)),
            ]
            head.append(_tag("scaninfo", scaninfo))
        head += [
            _tag("verbose", [("level", self._verbose)]),
            _tag("debugging", [("level", 0)]),
        ]
        self._out.write("\n".join(head) + "\n")

    def hosts_down(self, count: int) -> None:
        self._count.down += count

    def host(self, host: HostResults) -> None:
        self._count.add(host)
        if shown(host, verbose=self._verbose, only_open=self._only_open):
            self._write_host(host, self._clock())

    def finish(self, report: Report) -> None:
        if self._meta is None:  # finish without start: still a whole document
            self.start(_meta_from_report(report))
        end = report.finished if report.finished is not None else self._clock()
        elapsed = max(end - report.started, 0.0)
        timestr = nmap_time(end)
        finished: list[tuple[str, object]] = [
            ("time", int(end)),
            ("timestr", timestr),
            ("summary", f"portscout done at {timestr}; {self._count.summary(elapsed)}"),
            ("elapsed", f"{elapsed:.2f}"),
        ]
        if report.interrupted:
            message = f"scan {report.ending}; results incomplete"
            finished += [("exit", "error"), ("errormsg", message)]
        else:
            finished.append(("exit", "success"))
        up, down = self._count.up, self._count.down
        self._out.write(
            "<runstats>"
            + _tag("finished", finished)
            + _tag("hosts", [("up", up), ("down", down), ("total", up + down)])
            + "\n</runstats>\n</nmaprun>\n"
        )
        self._out.flush()

    def _write_host(self, host: HostResults, end: float) -> None:
        started = self._meta.started if self._meta else end
        status = [
            ("state", "up" if host.up else "down"),
            ("reason", host.reason),
            ("reason_ttl", host.reason_ttl or 0),
        ]
        parts = [
            _tag("host", [("starttime", int(started)), ("endtime", int(end))], ">"),
            _tag("status", status),
            "\n",
            _tag("address", [("addr", host.address), ("addrtype", _addrtype(host.address))]),
            "\n<hostnames>\n",
        ]
        if host.hostname:
            attrs = [("name", host.hostname), ("type", host.hostname_type)]
            parts += [_tag("hostname", attrs), "\n"]
        parts.append("</hostnames>\n")
        if host.up and self._meta is not None and self._meta.ports:
            parts += self._ports_xml(host)
        times = host.times_us()
        if times is None and host.latency is not None:
            latency = round(host.latency * 1e6)
            times = (latency, latency // 2, max(latency * 3, round(MIN_TIMEOUT * 1e6)))
        if times is not None:
            srtt, rttvar, timeout = times
            parts += [_tag("times", [("srtt", srtt), ("rttvar", rttvar), ("to", timeout)]), "\n"]
        parts.append("</host>\n")
        self._out.write("".join(parts))

    def _ports_xml(self, host: HostResults) -> list[str]:
        parts = ["<ports>"]
        for state in host.folded():
            parts += [_tag("extraports", [("state", state), ("count", host.counts[state])], ">")]
            parts.append("\n")
            for reason, proto, ports in host.groups(state):
                attrs: list[tuple[str, object]] = [
                    ("reason", reason),
                    ("count", len(ports)),
                    ("proto", proto),
                    ("ports", format_ports(ports)),
                ]
                parts += [_tag("extrareasons", attrs), "\n"]
            parts.append("</extraports>\n")
        for result in host.listed(only_open=self._only_open):
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
            doubt = host.confidence(result)
            conf = None if doubt is None or doubt >= 1.0 else round(doubt * 10)
            if result.service is not None:
                parts.append(service_xml(result.service, conf))
                parts.append("</port>\n")
                continue
            service = self._services.get(result.port) if self._services else None
            if service:
                attrs = [
                    ("name", service),
                    ("method", "table"),
                    ("conf", 3 if conf is None else conf),
                ]
                parts.append(_tag("service", attrs))
            parts.append("</port>\n")
        parts.append("</ports>\n")
        return parts


def service_xml(service: Service, conf: int | None = None) -> str:
    """nmap's ``<service>`` for -sV: attributes in nmap's order, ``<cpe>`` children.

    ``tunnel="ssl"`` for a service inside TLS, as nmap writes it; the name stays the inner
    service's (``http``), not ``ssl/http``. ``conf`` overrides the service's confidence
    (an unconfirmed port of a host that answers every port).
    """
    attrs: list[tuple[str, object]] = [("name", service.name)]
    for key, value in (
        ("product", service.product),
        ("version", service.version),
        ("extrainfo", service.info),
        ("hostname", service.hostname),
        ("ostype", service.ostype),
        ("devicetype", service.devicetype),
        ("tunnel", service.tunnel),
    ):
        if value:
            attrs.append((key, value))
    attrs += [("method", service.method), ("conf", service.confidence if conf is None else conf)]
    if not service.cpes:
        return _tag("service", attrs)
    cpes = "".join(f"<cpe>{xml_escape(cpe)}</cpe>" for cpe in service.cpes)
    return _tag("service", attrs, ">") + cpes + "</service>"


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
