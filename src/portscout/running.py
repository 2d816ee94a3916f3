"""Running a ``Scan`` from blocking code, and what stop signals do meanwhile.

The command line, ``iscan()``/``scan()``, the demo and the bench drive a scan on a private
event loop; Ctrl-C (and SIGTERM, SIGHUP where the command line made them stop signals)
cancels it at its next await, so that every result found so far is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING

from portscout.errors import Interrupted
from portscout.results import Result

if TYPE_CHECKING:
    from portscout.scanner import Scan


def drive(scan: Scan) -> Generator[list[Result], None, None]:
    """Run ``scan`` on a private event loop, handing out each batch as it completes.

    A stop signal (Ctrl-C; SIGTERM and SIGHUP where the caller made them stop signals,
    see ``stop_signals_raise``) cancels the scan at its next await; the batch found so far
    is handed out, then ``Interrupted`` (a KeyboardInterrupt) is raised here.
    """
    runner = asyncio.Runner(loop_factory=loop_factory())
    stopped: list[int] = []
    with runner, _signals_cancel(runner, stopped):
        batches = scan.batches()
        try:
            while True:
                try:
                    batch = runner.run(anext(batches))
                except StopAsyncIteration:
                    return
                except (KeyboardInterrupt, asyncio.CancelledError) as exc:
                    yield scan.take_unflushed()  # found before the signal: keep them
                    if isinstance(exc, Interrupted):
                        raise Interrupted(exc.signum) from None
                    raise Interrupted(stopped[0] if stopped else signal.SIGINT) from None
                yield batch
        finally:
            runner.run(batches.aclose())


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _StopHandler:
    """portscout's handler of a stop signal; ``drive`` takes these over while it runs."""

    def __init__(self, action: Callable[[int], None]) -> None:
        self._action = action

    def __call__(self, signum: int, frame: object) -> None:
        self._action(signum)


@contextlib.contextmanager
def _handling(action: Callable[[int], None], *, over_default: bool) -> Iterator[None]:
    """Install ``action`` for the stop signals (main thread only) and restore after.

    Replaces Python's Ctrl-C handler and portscout's own; the default action of SIGTERM
    and SIGHUP (death) only with ``over_default``: a program that imports portscout keeps
    its own handlers, and its SIGTERM semantics unless the command line changed them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, object] = {}
    for signum in STOP_SIGNALS:
        current = signal.getsignal(signum)
        ours = current is signal.default_int_handler or isinstance(current, _StopHandler)
        if ours or (over_default and current is signal.SIG_DFL):
            previous[signum] = current
            signal.signal(signum, _StopHandler(action))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]


def _raise(signum: int) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise ``Interrupted`` (as Ctrl-C raises KeyboardInterrupt):
    the command line's stop signals, outside the moments that defer or cancel them."""
    with _handling(_raise, over_default=True):
        yield


@contextlib.contextmanager
def deferred_signals() -> Iterator[list[int]]:
    """Record stop signals instead of acting on them (yielded list, in arrival order):
    while the outputs are being finished, a stop must wait for them. ``drive`` still
    cancels a scan on them while it runs."""
    received: list[int] = []
    with _handling(received.append, over_default=False):
        yield received


@contextlib.contextmanager
def _signals_cancel(runner: asyncio.Runner, stopped: list[int]) -> Iterator[None]:
    """Turn a stop signal into a cancellation of the scan's tasks, delivered by the loop.

    asyncio.Runner's own handler raises KeyboardInterrupt wherever the main thread happens
    to be, which can be inside uvloop's internals and leave the loop unusable ("this event
    loop is already running"); a cancellation arrives at an await, where cleanup works.
    Which signal it was is appended to ``stopped``.
    """

    def cancel_all(loop: asyncio.AbstractEventLoop) -> None:
        for task in asyncio.all_tasks(loop):
            task.cancel()

    def on_signal(signum: int) -> None:
        stopped.append(signum)
        loop = runner.get_loop()
        loop.call_soon_threadsafe(cancel_all, loop)

    with _handling(on_signal, over_default=False):
        yield


def loop_factory() -> type[asyncio.AbstractEventLoop] | None:
    """uvloop's loop when installed (faster callbacks), else asyncio's default."""
    try:
        import uvloop  # optional: the "fast" extra
    except ImportError:
        return None
    return uvloop.Loop


__all__ = ["STOP_SIGNALS", "deferred_signals", "drive", "loop_factory", "stop_signals_raise"]
