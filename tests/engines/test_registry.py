"""The engine registry is the one place that knows each engine's name and nature."""

from __future__ import annotations

import os

import pytest

from portscout.cli_args import build_parser
from portscout.engines import CONNECT_ENGINE, CONNECT_ENGINES, ENGINES, SYN_ENGINE
from portscout.scanner import Scan, ScanConfig


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_each_engine_answers_to_its_registered_name(name: str) -> None:
    assert ENGINES[name].create().name == name


def test_what_the_scanner_and_the_cli_ask_comes_from_the_registry() -> None:
    connect = {n for n, s in ENGINES.items() if s.scan_type == "connect"}
    assert connect == CONNECT_ENGINES
    assert ENGINES[SYN_ENGINE].raw
    assert ENGINES[SYN_ENGINE].scan_type == "syn"
    assert build_parser().parse_args(["-sT", "x"]).engine == CONNECT_ENGINE
    assert build_parser().parse_args(["-sS", "x"]).engine == SYN_ENGINE
    for name, spec in ENGINES.items():
        if spec.raw:
            continue  # the syn engine may need a privilege this run lacks
        scan = Scan(ScanConfig(targets=["127.0.0.1"], ports="1-65535", engine=name))
        assert scan.meta.scan_type == spec.scan_type
        cores = min(os.cpu_count() or 1, 8)  # a plan this large is split, unless blocking
        assert scan.processes == (1 if spec.blocking else cores)
