"""Output writers: they only format. Each gets ``start(meta)`` once, ``host(host)`` for every
host in address order as the ordering stage (``output.hosts.HostOrder``) hands it over,
ports inside ascending (down hosts only where shown, ``-v``; else ``hosts_down(count)``
counts them), and ``finish(report)`` at the end, also after an interrupted scan.
``output.session`` wires writers and the stage for the command line. Writers import
``results``, ``errors`` and ``output`` only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from portscout.results import Report, ScanMeta

if TYPE_CHECKING:
    from portscout.output.hosts import HostResults


class Writer(Protocol):
    """A sink for hosts; writes to a text stream it was given and does not close it."""

    def start(self, meta: ScanMeta) -> None: ...

    def host(self, host: HostResults) -> None: ...

    def hosts_down(self, count: int) -> None:
        """``count`` more hosts found down and not handed out (only ``-v`` lists them)."""
        ...

    def finish(self, report: Report) -> None: ...
