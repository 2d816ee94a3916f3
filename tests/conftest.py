"""Test-wide setup: every test process that can runs in a private network namespace.

At configure time (before pytest starts any thread) a root process moves itself into a new
network namespace with only ``lo``: every scan a test makes stays on this machine. Tests
marked ``netns`` need that; elsewhere they skip with the reason, and under ``CI=true`` such
a skip fails the run, so CI is never green by skipping.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator

import pytest

from portscout.lab.netns import NamespaceError, check_isolated, enter_private_netns
from portscout.services.probes import ProbeDatabase, find_probe_file, load_probe_file

_NETNS_PROBLEM: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _NETNS_PROBLEM
    # Scans record history under XDG_DATA_HOME: never in the real home during tests.
    os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="portscout-tests-")
    # and -sV keeps its prepared probe file under XDG_CACHE_HOME (removed with the above).
    os.environ["XDG_CACHE_HOME"] = os.path.join(os.environ["XDG_DATA_HOME"], "cache")
    if os.geteuid() != 0:
        _NETNS_PROBLEM = "needs root to create a private network namespace"
        return
    try:
        enter_private_netns()
        check_isolated()
    except (NamespaceError, OSError) as exc:
        _NETNS_PROBLEM = f"no private network namespace: {exc}"


def pytest_unconfigure(config: pytest.Config) -> None:
    data_home = os.environ.get("XDG_DATA_HOME", "")
    if os.path.basename(data_home).startswith("portscout-tests-"):
        shutil.rmtree(data_home, ignore_errors=True)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("netns") is not None and _NETNS_PROBLEM is not None:
        pytest.skip(f"netns: {_NETNS_PROBLEM}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (
        os.environ.get("CI") == "true"
        and report.skipped
        and item.get_closest_marker("netns") is not None
    ):
        report.outcome = "failed"
        report.longrepr = f"netns test skipped under CI=true: {_NETNS_PROBLEM}"
    return report


@pytest.fixture
def isolated() -> None:
    """Refuse to run a scanning test anywhere but a private namespace with no route out."""
    check_isolated()


@pytest.fixture(scope="session")
def nmap_db() -> ProbeDatabase:
    """Debian's ``nmap-service-probes`` (``make test`` installs nmap), parsed once."""
    path = find_probe_file(os.environ)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nmap-service-probes not installed (make test installs nmap)")
        pytest.skip("nmap-service-probes not installed")
    return load_probe_file(path)
