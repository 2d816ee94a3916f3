"""The library's entry points: ``scan()``, ``iscan()`` and ``ascan()``.

Their arguments become a ``ScanConfig`` here, with the conversions the command line does
with its parser (ports, -T, --max-rate); ``scanner.Scan`` runs it and ``running.drive``
runs that from blocking code.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Iterable, Iterator

from portscout.errors import OptionError
from portscout.results import Report, Result
from portscout.running import drive
from portscout.scanner import Scan, ScanConfig
from portscout.timing import TimingPolicy, parse_template

PortsArg = int | str | Iterable[int] | None
TimingArg = TimingPolicy | int | str | None


def _ports_arg(ports: PortsArg) -> str | tuple[int, ...] | None:
    """nmap's port syntax (``"22,80,8000-8100"``), one port or an iterable of ports."""
    if ports is None or isinstance(ports, str):
        return ports
    if isinstance(ports, int) and not isinstance(ports, bool):
        return (ports,)
    if isinstance(ports, Iterable):
        values = tuple(ports)
        bad = [p for p in values if not isinstance(p, int) or isinstance(p, bool)]
        if not bad:
            return values
        raise OptionError(f"invalid port {bad[0]!r}: want an int, ints or nmap's port syntax")
    raise OptionError(f"invalid ports {ports!r}: want an int, ints or nmap's port syntax")


def _timing_arg(timing: TimingArg) -> TimingPolicy | None:
    """A policy, or nmap's template as a number (``4``) or name (``"aggressive"``)."""
    if timing is None or isinstance(timing, TimingPolicy):
        return timing
    if isinstance(timing, int) and not isinstance(timing, bool):
        return TimingPolicy.template(parse_template(str(timing)))
    if isinstance(timing, str):
        return TimingPolicy.template(parse_template(timing.removeprefix("T")))
    raise OptionError(f"invalid timing {timing!r}: want 0-5, a template name or a TimingPolicy")


def _config(
    targets: str | Iterable[str], ports: PortsArg, options: dict[str, object]
) -> ScanConfig:
    """The library's arguments as a ``ScanConfig``: the conversions the command line does
    with its parser (ports, -T, --max-rate) done here, once, for scan/iscan/ascan."""
    specs = [targets] if isinstance(targets, str) else list(targets)
    options = dict(options)
    if "rate" in options:
        warnings.warn(
            "portscout: rate= is deprecated, use max_rate= (as --max-rate)",
            DeprecationWarning,
            stacklevel=3,
        )
        options.setdefault("max_rate", options.pop("rate"))
    if "max_rate" in options:
        options["rate"] = options.pop("max_rate")
    if "timing" in options:
        options["timing"] = _timing_arg(options["timing"])  # type: ignore[arg-type]
    unknown = sorted(set(options) - _LIBRARY_OPTIONS)
    if unknown:
        raise OptionError(f"unknown option '{unknown[0]}' (see help(portscout.scan))")
    return ScanConfig(targets=specs, ports=_ports_arg(ports), **options)  # type: ignore[arg-type]


_LIBRARY_OPTIONS = frozenset(
    {"top_ports", "excludes", "engine", "timing", "timeout", "max_retries", "max_in_flight",
     "workers", "rate", "processes", "key", "randomize", "keep_closed", "discovery",
     "ping_only", "args", "hostgroup", "shard"}
)  # fmt: skip

_OPTIONS_DOC = """

    ``targets``: one spec or several, as on the command line: ``"127.0.0.1"``, ``"::1"``,
    ``"198.18.0.0/24"``, nmap ranges (``"198.18.0.1-9"``), host names.
    ``ports``: an int (``22``), ints (``[22, 80]``, ``range(1, 1025)``) or nmap's port
    syntax (``"22,80,8000-8100"``, ``"-"`` for all); None: the top ``top_ports`` ports.

    Options (keywords; the command line's names):

    - ``top_ports`` (int): the N most common ports (``--top-ports``; default 1000).
    - ``excludes`` (list of str): targets to skip (``--exclude``).
    - ``engine`` (str): ``"auto"`` (SYN with raw-socket privilege, else async connect),
      ``"async"``, ``"syn"``, ``"threadpool"``, ``"thread-per-port"``, ``"sequential"``.
    - ``timing``: nmap's template, ``0``-``5`` or ``"paranoid"`` .. ``"insane"`` (``-T``),
      or a ``portscout.timing.TimingPolicy``; default 3 (``"normal"``).
    - ``timeout`` (seconds): caps the probe timeout (``--timeout``).
    - ``max_retries`` (int): retransmissions at most (``--max-retries``).
    - ``max_rate`` (probes/s): at most this many probes a second (``--max-rate``);
      ``rate=`` is its deprecated old name.
    - ``max_in_flight`` (int): probes in flight at most (``--max-parallelism``).
    - ``workers`` (int): threads of the threadpool engine (``--workers``; 50).
    - ``processes`` (int): worker processes (``--processes``; default one per core for
      large scans).
    - ``key`` (int): the permutation key, for a repeatable probe order (``--seed``).
    - ``randomize`` (bool): False scans in order (``-r``).
    - ``discovery`` (bool): False scans every target without pinging it first (``-Pn``).
    - ``ping_only`` (bool): host discovery only, no port scan (``-sn``).
    - ``hostgroup`` (int): hosts discovered and scanned together at most
      (``--max-hostgroup``; 4096): what a scan holds is bounded by a group.
    - ``shard`` ((i, n)): only the i-th of n disjoint parts of the scan (``--shard i/n``,
      1-based); needs ``key`` (the same for every part) unless ``randomize`` is False.
    - ``keep_closed`` (bool): stream closed results too (iscan/ascan: True; ``scan()``
      counts them only, see below).
    - ``args`` (tuple of str): the command line to record in outputs.

    Raises ``UsageError`` subclasses for bad input (``TargetError``, ``PortSpecError``,
    ``OptionError``) and ``ScanError`` subclasses at run time (``PrivilegeError``).
    """


async def ascan(
    targets: str | Iterable[str], ports: PortsArg = None, **options: object
) -> AsyncIterator[Result]:
    """Scan and yield every result as it arrives (``async for r in ascan(...)``), closed
    ports included, in completion order (random: the probe order is a keyed permutation).
    """
    scan = Scan(_config(targets, ports, options))
    async for batch in scan.batches():
        for result in batch:
            yield result


def iscan(
    targets: str | Iterable[str], ports: PortsArg = None, **options: object
) -> Iterator[Result]:
    """Blocking iterator over every result as it arrives, closed ports included (as
    ``ascan``); runs its own event loop, so not from inside a running one.
    """
    scan = Scan(_config(targets, ports, options))
    for batch in drive(scan):
        yield from batch


def scan(targets: str | Iterable[str], ports: PortsArg = None, **options: object) -> Report:
    """Scan and return the ``Report`` once every probe is answered or timed out.

    ``report.open_ports("127.0.0.1")`` lists a host's open ports, ``report.counts`` the
    ports per state, ``report.results`` every open and filtered result. Closed ports are
    counted, not kept (``keep_closed`` is False here): they are the bulk of a scan (65,530
    of a full scan of one host) and a report holding them all would be most of a large
    scan's memory. Use ``iscan()`` to see each closed result.
    """
    options = {"keep_closed": False, **options}
    job = Scan(_config(targets, ports, options))
    for _ in drive(job):
        pass
    return job.report


for _api in (scan, iscan, ascan):
    _api.__doc__ = (_api.__doc__ or "").rstrip() + _OPTIONS_DOC


__all__ = ["PortsArg", "TimingArg", "ascan", "iscan", "scan"]
