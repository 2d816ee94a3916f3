"""Progress of a running scan: a live rich bar on a terminal, or status lines for logs.

Owns the two monitors. Both get ``start(total, done, found_open)`` once (a resumed scan
starts part-way), ``update(done, new)`` with each batch (empty batches are the clock tick)
and ``finish()``. ``done`` counts probes answered so far, of ``total`` in the plan. Rate
and ETA are computed here from ``clock`` (monotonic seconds), over this run only, so a
resume does not look infinitely fast. Imports ``results`` only.

The CLI picks them: ``LiveProgress`` when stderr is a terminal and not ``-q`` (nothing on a
pipe or a file), ``StatsLines`` with ``--stats-every``, whatever stderr is (nmap's
``--stats-every`` prints to stdout; ours keeps stdout for results).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol, TextIO

from portscout.results import Result, State


class Monitor(Protocol):
    def start(self, total: int, done: int = 0, found_open: int = 0) -> None: ...

    def update(self, done: int, new: Sequence[Result], total: int | None = None) -> None:
        """``total``: the plan's new size when it changed (host discovery re-plans)."""
        ...

    def finish(self) -> None: ...


def clock_text(seconds: float) -> str:
    """``H:MM:SS``, as nmap's stats lines print elapsed time and ETA."""
    whole = max(0, int(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class _Pace:
    """Rate and ETA of this run: probes answered since ``start``, per second."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.started = clock()
        self.total = self.first = self.done = self.open = 0

    def start(self, total: int, done: int, found_open: int) -> None:
        self.started = self.clock()
        self.total, self.first, self.done, self.open = total, done, done, found_open

    def update(self, done: int, new: Sequence[Result], total: int | None = None) -> list[Result]:
        self.done = done
        if total is not None:
            self.total = total
        opened = [r for r in new if r.state is State.OPEN]
        self.open += len(opened)
        return opened

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    @property
    def rate(self) -> float:
        elapsed = self.elapsed
        return (self.done - self.first) / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> str:
        rate = self.rate
        return clock_text((self.total - self.done) / rate) if rate > 0 else "?"


class StatsLines:
    """One status line every ``every`` seconds (checked at each batch) and one at the end::

    Stats: 0:00:10 elapsed; 12345/65535 probes (18.8%), 1234 probes/s, ETA 0:00:43; 3 open
    """

    def __init__(
        self, stream: TextIO, every: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._out = stream
        self._every = every
        self._pace = _Pace(clock)
        self._last = clock()

    def start(self, total: int, done: int = 0, found_open: int = 0) -> None:
        self._pace.start(total, done, found_open)
        self._last = self._pace.started

    def update(self, done: int, new: Sequence[Result], total: int | None = None) -> None:
        self._pace.update(done, new, total)
        if self._pace.clock() - self._last >= self._every:
            self._write()

    def finish(self) -> None:
        self._write()

    def _write(self) -> None:
        pace = self._pace
        self._last = pace.clock()
        share = 100.0 * pace.done / pace.total if pace.total else 100.0
        self._out.write(
            f"Stats: {clock_text(pace.elapsed)} elapsed; {pace.done}/{pace.total} probes"
            f" ({share:.1f}%), {pace.rate:.0f} probes/s, ETA {pace.eta}; {pace.open} open\n"
        )
        self._out.flush()


class LiveProgress:
    """A rich progress bar on ``stream``; open ports are printed above it as found.

    ``terminal`` forces (or denies) terminal handling, for tests; by default rich decides.
    The bar is transient: once finished only the "Discovered" lines stay.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        terminal: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._pace = _Pace(clock)
        console = Console(file=stream, force_terminal=terminal, highlight=False)
        self._bar = Progress(
            TextColumn("scanning"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.percentage:>5.1f}%  {task.fields[rate]} probes/s"),
            TextColumn("ETA {task.fields[eta]}  [green]{task.fields[open]} open"),
            console=console,
            transient=True,
            get_time=clock,
        )
        self._task = self._bar.add_task("scan", total=None, rate="-", eta="?", open=0)

    def start(self, total: int, done: int = 0, found_open: int = 0) -> None:
        self._pace.start(total, done, found_open)
        self._bar.update(self._task, total=total, completed=done, open=found_open)
        self._bar.start()

    def update(self, done: int, new: Sequence[Result], total: int | None = None) -> None:
        if total is not None:
            self._bar.update(self._task, total=total)
        for r in self._pace.update(done, new, total):
            self._bar.console.print(f"Discovered open port {r.port}/{r.protocol} on {r.host}")
        pace = self._pace
        self._bar.update(
            self._task, completed=done, rate=f"{pace.rate:.0f}", eta=pace.eta, open=pace.open
        )

    def finish(self) -> None:
        self._bar.stop()
