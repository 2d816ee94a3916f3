"""The threads study's first strategy: one blocking connect after another.

Kept to measure the lesson, not for speed: every probe waits for the previous one, so on
a network with latency the scan takes (ports x round trip).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from portscout.engines.base import EngineOptions, ThreadBridge, run_blocking
from portscout.engines.connect import BlockingTiming, blocking_probe
from portscout.plan import Probe
from portscout.results import Result


class SequentialEngine:
    name = "sequential"

    def run(self, probes: Iterator[Probe], options: EngineOptions) -> AsyncIterator[Result]:
        timing = BlockingTiming(options.timing)

        def produce(bridge: ThreadBridge) -> None:
            for probe in probes:
                result = blocking_probe(probe, timing, bridge.stop)
                if result is None:
                    return
                bridge.emit(result)

        return run_blocking(produce, self.name)
