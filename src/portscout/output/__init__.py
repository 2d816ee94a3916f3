"""Output writers: they only format. Each gets ``start(meta)`` once, ``add(result)`` for
every result as it arrives (closed ones included), and ``finish(report)`` at the end, also
after an interrupted scan. Writers import ``results`` and ``errors`` only.
"""

from __future__ import annotations

from typing import Protocol

from portscout.results import Report, Result, ScanMeta


class Writer(Protocol):
    """A sink for results; writes to a text stream it was given and does not close it."""

    def start(self, meta: ScanMeta) -> None: ...

    def add(self, result: Result) -> None: ...

    def finish(self, report: Report) -> None: ...
