"""The real ``nmap-service-probes`` (Debian's nmap, which ``make test`` installs), parsed
once per session: the parser, the index and the probe order are checked against it."""

from __future__ import annotations

import os

import pytest

from portscout.services.probes import ProbeDatabase, find_probe_file, load_probe_file


@pytest.fixture(scope="session")
def nmap_db() -> ProbeDatabase:
    path = find_probe_file(os.environ)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nmap-service-probes not installed (make test installs nmap)")
        pytest.skip("nmap-service-probes not installed")
    return load_probe_file(path)
