"""The command line's outputs: which files in which formats, the writers, and the ordering
stage between the scan and them.

``file_outputs`` turns ``-oJ -oX -oG -oN --csv -oA`` into (format, path) pairs and refuses
what nmap refuses; ``Outputs`` takes the open streams, makes a writer per format plus the
terminal view, and feeds them whole hosts in address order from a ``HostOrder``. Opening
files (through ``outfiles``: a temporary file renamed into place, guarded streams) and
reverse lookups are the caller's (``cli.py``): nothing here does I/O of its own beyond
writing to the streams it is given. Imports ``results``, ``errors`` and ``output``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from portscout.errors import OptionError
from portscout.output import Writer
from portscout.output.hosts import HostOrder, HostResults, Hosts, ignore_limit
from portscout.results import ClosedPorts, IPAddress, Reason, Report, Result, ScanMeta, State

# -oA BASE writes one file of each, as nmap's -oA writes BASE.nmap, .xml and .gnmap.
SUFFIXES = {"normal": ".nmap", "xml": ".xml", "grep": ".gnmap", "json": ".jsonl", "csv": ".csv"}

ReverseLookup = Callable[[IPAddress], str | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputOptions:
    """What to write: ``files`` as (format, path) ('-' is stdout), and the view options
    ``-v`` (count), ``--open``, ``--reason``, ``-q`` and ``--no-fold``."""

    files: tuple[tuple[str, str], ...] = ()
    verbose: int = 0
    only_open: bool = False
    reason: bool = False
    quiet: bool = False
    no_fold: bool = False
    versions: bool = False  # -sV: CSV gets the version columns

    @property
    def detail(self) -> bool:
        """Whether a writer lists every port with its round trip (CSV, --no-fold JSON)."""
        return any(kind == "csv" or (kind == "json" and self.no_fold) for kind, _ in self.files)

    @property
    def to_stdout(self) -> bool:
        return any(path == "-" for _, path in self.files)


def file_outputs(
    named: Mapping[str, str | None], all_base: str | None
) -> tuple[tuple[str, str], ...]:
    """(format, path) for each output asked for (``named``: format -> path or None) and
    one of each format for ``-oA BASE``. OptionError (exit 2) for ``-oA -`` (nmap refuses
    it too) and for more than one output on stdout."""
    outputs = [(kind, path) for kind, path in named.items() if path]
    if all_base is not None:
        if all_base in ("-", ""):
            raise OptionError(
                f"-oA needs a file name base, not '{all_base}' (stdout takes one format)"
            )
        outputs += [(kind, all_base + suffix) for kind, suffix in SUFFIXES.items()]
    if sum(1 for _, path in outputs if path == "-") > 1:
        raise OptionError("only one output may go to stdout ('-')")
    return tuple(outputs)


def make_writer(
    kind: str, stream: TextIO, names: Mapping[int, str], options: OutputOptions
) -> Writer:
    """The writer for format ``kind`` on ``stream``."""
    # Imported here: a scan loads only the writers it uses (start-up time counts).
    if kind == "json":
        from portscout.output.jsonl import JsonLinesWriter

        return JsonLinesWriter(
            stream,
            no_fold=options.no_fold,
            verbose=options.verbose,
            only_open=options.only_open,
        )
    view = {"service_names": names, "verbose": options.verbose, "only_open": options.only_open}
    if kind == "xml":
        from portscout.output.nmap_xml import NmapXmlWriter

        return NmapXmlWriter(stream, **view)  # type: ignore[arg-type]  # the shared keywords
    if kind == "grep":
        from portscout.output.grepable import GrepableWriter

        return GrepableWriter(stream, **view)  # type: ignore[arg-type]
    if kind == "normal":
        from portscout.output.normal import NormalWriter

        return NormalWriter(stream, reason=options.reason, **view)  # type: ignore[arg-type]
    from portscout.output.csv_rows import CsvWriter

    return CsvWriter(
        stream, service_names=names, only_open=options.only_open, versions=options.versions
    )


class Outputs:
    """Every writer of one scan (files and the terminal) behind one ordering stage.

    ``streams``: (format, open stream) per file output; ``human``: where the terminal view
    goes (stderr when a file output takes stdout). ``discovered``: where ``-v`` prints
    "Discovered open port" as results arrive (None: the live progress bar does it).
    ``reverse``: ``-R``'s lookup of a host up, None for no lookups (``-n``, the default).
    """

    def __init__(
        self,
        options: OutputOptions,
        streams: Sequence[tuple[str, TextIO]],
        human: TextIO,
        names: Mapping[int, str],
        *,
        discovered: TextIO | None = None,
        reverse: ReverseLookup | None = None,
    ) -> None:
        from portscout.output.normal import NormalWriter

        self.options = options
        self.writers = [make_writer(kind, stream, names, options) for kind, stream in streams]
        terminal = NormalWriter(
            human,
            service_names=names,
            verbose=options.verbose,
            only_open=options.only_open,
            reason=options.reason,
            comments=False,
            quiet=options.quiet,
        )
        self.writers.append(terminal)
        self._discovered = discovered if options.verbose else None
        self._reverse = reverse
        self.order = HostOrder(ports_per_host=0)

    def start(self, meta: ScanMeta) -> None:
        self.order = HostOrder(
            ports_per_host=len(meta.ports),
            limit=ignore_limit(self.options.verbose),
            detail=self.options.detail,
            names=meta.hostnames,
            list_down=self.options.verbose >= 1 and not self.options.only_open,
        )
        for writer in self.writers:
            writer.start(meta)

    def plan(self, hosts: Hosts, *, discovery: bool) -> None:
        """The scan's targets in order, and whether discovery pings them first."""
        self.order.plan(hosts, discovery=discovery)

    def group_done(
        self, stop: int, up: Mapping[IPAddress, Reason], latency: Mapping[IPAddress, float]
    ) -> None:
        """A host group (targets before index ``stop``) is done: its hosts are written."""
        self.order.group_done(stop, up, latency)
        self._deliver(self.order.ready())

    def add(self, results: Sequence[Result], closed: Iterable[ClosedPorts] = ()) -> None:
        """A batch from the scan: buffered, and every host now complete is written."""
        self.order.add(results)
        self.order.add_closed(closed)
        if self._discovered is not None:
            for r in results:
                if r.state is State.OPEN:
                    self._discovered.write(
                        f"Discovered open port {r.port}/{r.protocol} on {r.host}\n"
                    )
        self._deliver(self.order.ready())

    def finish(self, report: Report) -> None:
        """Every host left (in order), then each writer's end."""
        self.order.discovered(report.hosts_up or {}, report.latency)
        self._deliver(self.order.rest())
        for writer in self.writers:
            writer.finish(report)

    @property
    def hosts_up(self) -> int:
        return self.order.handed_up

    def _deliver(self, hosts: Sequence[HostResults]) -> None:
        down = self.order.take_down()
        if down:
            for writer in self.writers:
                writer.hosts_down(down)
        for host in hosts:
            if self._reverse is not None and host.up and not host.hostname:
                name = self._reverse(host.address)
                if name:
                    host.hostname, host.hostname_type = name, "PTR"
            for writer in self.writers:
                writer.host(host)
