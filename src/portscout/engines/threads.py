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
from portscout.engines.connect import BACKOFF_SECONDS, blocking_probe
from portscout.plan import Probe
from portscout.results import Result


class ThreadPerPortEngine:
    name = "thread-per-port"

    def run(self, probes: Iterator[Probe], options: EngineOptions) -> AsyncIterator[Result]:
        def produce(bridge: ThreadBridge) -> None:
            # Each thread holds one socket; the semaphore keeps them under the fd limit.
            slots = threading.BoundedSemaphore(options.max_in_flight)
            threads: list[threading.Thread] = []

            def probe_one(probe: Probe) -> None:
                try:
                    result = blocking_probe(probe, options, bridge.stop)
                    if result is not None:
                        bridge.emit(result)
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

        return run_blocking(produce)


class ThreadPoolEngine:
    name = "threadpool"

    def run(self, probes: Iterator[Probe], options: EngineOptions) -> AsyncIterator[Result]:
        workers = max(1, min(options.workers, options.max_in_flight))

        def produce(bridge: ThreadBridge) -> None:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                running: set[Future[Result | None]] = set()
                for probe in probes:
                    if bridge.stop.is_set():
                        break
                    if len(running) >= 2 * workers:  # keep the queue short, the stream lazy
                        finished, running = wait(running, return_when=FIRST_COMPLETED)
                        _emit_all(finished, bridge)
                    running.add(pool.submit(blocking_probe, probe, options, bridge.stop))
                _emit_all(running, bridge)

        return run_blocking(produce)


def _emit_all(futures: set[Future[Result | None]], bridge: ThreadBridge) -> None:
    for future in futures:
        result = future.result()
        if result is not None:
            bridge.emit(result)
