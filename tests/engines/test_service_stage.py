"""-sV beside the port scan (``engines/service_stage.py``): an open port is detected as
soon as the scan finds it, while the scan goes on, in a private namespace on 127.0.0.1."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address

import pytest

from portscout.demo import listeners
from portscout.engines.service import DetectOptions
from portscout.engines.service_stage import ServiceStage
from portscout.results import Reason, Report, Result, State
from portscout.scanner import Scan, ScanConfig
from portscout.services.builtin import builtin_database

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("isolated")]
LOCAL = IPv4Address("127.0.0.1")
BANNER_PORT = 2022
CLOSED = range(30000, 31500)  # scanned after the banner port (no shuffle), 1,500 at 500/s


@pytest.mark.parametrize("engine", ["async", "syn", "threadpool"])
def test_detection_starts_before_the_port_scan_ends(engine: str) -> None:
    """In port order (no shuffle, rate-limited to ~3 s), the banner port is found first:
    its service must come out before the scan reaches the last port, not after it."""
    config = ScanConfig(
        targets=["127.0.0.1"], ports=f"{BANNER_PORT},{CLOSED.start}-{CLOSED.stop - 1}",
        engine=engine, randomize=False, discovery=False, rate=500.0, keep_closed=True,
        service_detection=True, service_probes="built-in", version_intensity=0,
    )  # fmt: skip

    async def run() -> list[Result]:
        seen: list[Result] = []
        async for batch in Scan(config).batches():
            seen.extend(batch)
        return seen

    with listeners({("127.0.0.1", BANNER_PORT): "banner"}):
        seen = asyncio.run(run())
    order = {(r.port, r.service is not None): i for i, r in enumerate(seen)}
    named = order[(BANNER_PORT, True)]
    last_closed = order[(CLOSED.stop - 1, False)]
    assert named < last_closed, "the service came out only after the port scan"
    (banner,) = [r for r in seen if r.port == BANNER_PORT]
    assert banner.state is State.OPEN
    assert banner.service is not None
    assert banner.service.name == "ssh"
    assert sum(r.state is State.CLOSED for r in seen) == len(CLOSED)


def test_a_port_added_twice_is_detected_once() -> None:
    async def run() -> tuple[list[Result], Report]:
        opened = Result(host=LOCAL, port=BANNER_PORT, state=State.OPEN, reason=Reason.SYN_ACK)
        report = Report(engine="test", key=1, started=0.0)
        report.add(opened)
        stage = ServiceStage(builtin_database(), DetectOptions(max_wait=0.5, intensity=0))
        detection = stage.follow({(LOCAL, BANNER_PORT): opened}, report)
        try:
            detection.add(LOCAL, BANNER_PORT)
            detection.add(LOCAL, BANNER_PORT)
            named = [r async for batch in detection.rest() for r in batch]
        finally:
            await detection.aclose()
        return named, report

    with listeners({("127.0.0.1", BANNER_PORT): "banner"}):
        named, report = asyncio.run(run())
    assert [(r.port, r.service.name if r.service else None) for r in named] == [
        (BANNER_PORT, "ssh")
    ]
    assert report.results[0].service == named[0].service  # the report has it too
