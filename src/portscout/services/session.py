"""One port's service detection as a state machine: which probe next, and what each
response means. Sans-IO: the engine (``engines/service.py``) sends, reads and times; this
module only decides. Core.

nmap's order (service_scan.cc ``ServiceNFO::nextProbe``; "Service and Version Detection",
``--version-intensity``)::

    NULL probe (send nothing, wait for a banner)
    -> probes whose ``ports`` (``sslports`` inside TLS) name the port, in file order,
       whatever their rarity
    -> the other probes with ``rarity <= intensity``, in file order
    a hard match ends it; a softmatch narrows the rest to probes that can name that
    service; the peer closing before the NULL probe's first byte (within ``tcpwrappedms``)
    is ``tcpwrapped``; a hard match of ``ssl`` outside TLS restarts the order inside TLS.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from portscout.results import Service
from portscout.services.match import Analyses, Hit, Matcher, service_from_hit
from portscout.services.probes import ProbeDatabase, ServiceProbe

INTENSITY_DEFAULT = 7
INTENSITY_LIGHT = 2  # --version-light
INTENSITY_ALL = 9  # --version-all
TLS_SERVICES = frozenset({"ssl", "tls"})


class Step(Enum):
    """What the engine does after a probe's response."""

    NEXT = "next"  # send the next probe (``next_probe``)
    DONE = "done"  # ``result`` is final
    START_TLS = "start-tls"  # reconnect with TLS and probe again inside it


class Signatures:
    """A database and the matchers built from it on first use, for one scan.

    A probe's matcher joins its own lines, its ``fallback`` probes' and (TCP) the NULL
    probe's, in that order; it compiles only those patterns, once.
    """

    def __init__(self, database: ProbeDatabase, analyses: Analyses | None = None) -> None:
        self.database = database
        self._matchers: dict[tuple[str, str], Matcher] = {}
        self._analyses = analyses if analyses is not None else Analyses()

    def matcher(self, probe: ServiceProbe) -> Matcher:
        key = (probe.protocol, probe.name)
        found = self._matchers.get(key)
        if found is None:
            found = Matcher([m for p in self.chain(probe) for m in p.matches], self._analyses)
            self._matchers[key] = found
        return found

    def chain(self, probe: ServiceProbe) -> list[ServiceProbe]:
        """The probe, its fallbacks (left to right), then the NULL probe (TCP only)."""
        chain = [probe]
        for name in probe.fallback:
            other = self.database.get(probe.protocol, name)
            if other is not None and other not in chain:
                chain.append(other)
        null = self.database.null_probe(probe.protocol)
        if probe.protocol == "TCP" and null is not None and null not in chain:
            chain.append(null)
        return chain

    def possible(self, probe: ServiceProbe) -> frozenset[str]:
        """Services the probe's own lines can name: after a softmatch, only probes that
        can name that service are sent (nmap's ``serviceIsPossible``: own lines only, or
        every probe would qualify through the NULL probe's softmatch)."""
        return probe.services()


def probe_order(
    database: ProbeDatabase, port: int, *, tls: bool, intensity: int, protocol: str = "TCP"
) -> list[ServiceProbe]:
    """The probes for ``port`` in nmap's order (see the module docstring)."""
    if protocol == "TCP" and port in database.excluded:
        return []
    probes = [p for p in database.probes if p.protocol == protocol]
    null = [p for p in probes if p.is_null]
    named = [p for p in probes if not p.is_null and port in (p.sslports if tls else p.ports)]
    others = [p for p in probes if not p.is_null and p not in named and p.rarity <= intensity]
    return null + named + others


@dataclass(frozen=True, slots=True)
class Outcome:
    """The decision after one probe's response."""

    step: Step
    result: Service | None = None


class PortSession:
    """The detection of one (host, port): ``next_probe``, then ``check`` on each read and
    ``finish`` when the probe's reading ends, until the step is ``DONE``."""

    def __init__(self, signatures: Signatures, port: int, *, intensity: int) -> None:
        self.signatures = signatures
        self.port = port
        self.intensity = intensity
        self.tls = False
        self.tls_hit: Service | None = None  # the ssl match that started TLS
        self.soft: Service | None = None
        self.tried: list[str] = []
        self._queue = self._order()

    def _order(self) -> list[ServiceProbe]:
        return probe_order(
            self.signatures.database, self.port, tls=self.tls, intensity=self.intensity
        )

    def next_probe(self) -> ServiceProbe | None:
        """The next probe to send, or None when none is left (then ``final``)."""
        while self._queue:
            probe = self._queue.pop(0)
            if self.soft is None or self.soft.name in self.signatures.possible(probe):
                self.tried.append(probe.name)
                return probe
        return None

    def peek(self) -> ServiceProbe | None:
        """The probe ``next_probe`` would give now (for sending it early, LZR-style)."""
        upcoming = self.upcoming(1)
        return upcoming[0] if upcoming else None

    def upcoming(self, count: int) -> list[ServiceProbe]:
        """The next ``count`` probes ``next_probe`` would give if nothing matched."""
        found: list[ServiceProbe] = []
        for probe in self._queue:
            if len(found) >= count:
                break
            if self.soft is None or self.soft.name in self.signatures.possible(probe):
                found.append(probe)
        return found

    def check(self, probe: ServiceProbe, response: bytes) -> Hit | None:
        """A hard match of the response so far, to stop reading early; None otherwise."""
        hit = self.signatures.matcher(probe).find(response)
        return hit if hit is not None and not hit.soft else None

    def finish(
        self, probe: ServiceProbe, response: bytes, *, closed: bool, elapsed_ms: float
    ) -> Outcome:
        """The probe's reading ended (deadline, byte limit or the peer closed)."""
        if probe.is_null and not response and closed and elapsed_ms <= probe.tcpwrappedms:
            if self.tls:  # a TLS server with nothing inside: keep what TLS said
                return Outcome(Step.DONE, self.final())
            return Outcome(Step.DONE, Service(name="tcpwrapped", probe=probe.name,
                                              database=self._source()))  # fmt: skip
        hit = self.signatures.matcher(probe).find(response)
        if hit is None:
            return self._next()
        service = service_from_hit(
            hit, probe=probe.name, database=self._source(), tunnel="ssl" if self.tls else None
        )
        if hit.soft:
            if self.soft is None:
                self.soft = service
            return self._next()
        if service.name in TLS_SERVICES and not self.tls:
            self.tls_hit = service
            return Outcome(Step.START_TLS)
        return Outcome(Step.DONE, service)

    def _next(self) -> Outcome:
        return Outcome(Step.NEXT) if self.peek() is not None else Outcome(Step.DONE, self.final())

    def start_tls(self) -> None:
        """TLS is up: probe again inside it, from the NULL probe, with ``sslports``."""
        self.tls = True
        self.soft = None
        self._queue = self._order()

    def tls_failed(self) -> Outcome:
        """The TLS handshake failed: the ssl match is all there is."""
        return Outcome(Step.DONE, self.tls_hit)

    def final(self) -> Service | None:
        """What is known when no probe is left: a softmatch, TLS alone, or nothing."""
        if self.soft is not None:
            return self.soft
        if self.tls and self.tls_hit is not None:
            return self.tls_hit
        return None

    def _source(self) -> str:
        return self.signatures.database.source
