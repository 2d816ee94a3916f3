"""The threads study's second and third strategies: a thread per port, and a thread pool.

Blocking connect() releases the GIL (``Py_BEGIN_ALLOW_THREADS`` in socketmodule.c), so
threads overlap the waiting. A thread per port has no bound: thread creation and the
scheduler become the cost, which is the study's lesson; here it is still bounded by the
fd limit, so that it can be slow but never wrong. The pool keeps ``workers`` threads busy
and pulls probes lazily.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from portscout.engines.base import EngineOptions, ThreadBridge, run_blocking
from portscout.engines.connect import BACKOFF_SECONDS, BlockingTiming, blocking_probe
from portscout.plan import Probe
from portscout.results import Result


class ThreadPerPortEngine:
    name = "thread-per-port"

    def run(self, probes: Iterator[Probe], options: EngineOptions) -> AsyncIterator[Result]:
        timing = BlockingTiming(options.timing)

        def produce(bridge: ThreadBridge) -> None:
            # Each thread holds one socket; the semaphore keeps them under the fd limit.
            slots = threading.BoundedSemaphore(options.max_in_flight)
            threads: list[threading.Thread] = []
            failed: list[BaseException] = []  # a probe's error: stops the scan, raised here

            def probe_one(probe: Probe) -> None:
                try:
                    result = blocking_probe(probe, timing, bridge.stop)
                    if result is not None:
                        bridge.emit(result)
                except BaseException as exc:  # noqa: BLE001 - raised by produce below
                    failed.append(exc)
                    bridge.stop.set()
                finally:
                    slots.release()

            for probe in probes:
                slots.acquire()
                if bridge.stop.is_set():
                    slots.release()
                    break
                thread = threading.Thread(target=probe_one, args=(probe,), daemon=True)
                while True:
                    try:
                        thread.start()
                        break
                    except RuntimeError:  # "can't start new thread": wait for others to end
                        time.sleep(BACKOFF_SECONDS)
                threads.append(thread)
            for thread in threads:
                thread.join()
            if failed:
                raise failed[0]

        return run_blocking(produce, self.name)


class ThreadPoolEngine:
    name = "threadpool"

    def run(self, probes: Iterator[Probe], options: EngineOptions) -> AsyncIterator[Result]:
        workers = max(1, min(options.workers, options.max_in_flight))
        timing = BlockingTiming(options.timing)

        def produce(bridge: ThreadBridge) -> None:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                running: set[Future[Result | None]] = set()
                for probe in probes:
                    if bridge.stop.is_set():
                        break
                    if len(running) >= 2 * workers:  # keep the queue short, the stream lazy
                        finished, running = wait(running, return_when=FIRST_COMPLETED)
                        _emit_all(finished, bridge)
                    running.add(pool.submit(blocking_probe, probe, timing, bridge.stop))
                _emit_all(running, bridge)

        return run_blocking(produce, self.name)


def _emit_all(futures: set[Future[Result | None]], bridge: ThreadBridge) -> None:
    """Hand the finished probes' results over; on a probe's error, stop the others first
    (the pool waits for them on its way out) and raise it."""
    for future in futures:
        try:
            result = future.result()
        except BaseException:
            bridge.stop.set()
            raise
        if result is not None:
            bridge.emit(result)
