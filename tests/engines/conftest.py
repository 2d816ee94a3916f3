"""Listeners and firewall rules inside the test session's private network namespace."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

import pytest

from portscout.demo import listeners

serve = listeners  # (address, port) -> mode: accept, banner or accept-close


@contextlib.contextmanager
def nft_rules(*rules: str, hook: str = "output") -> Iterator[None]:
    """Rules on ``hook`` in a private table of this namespace, removed afterwards."""
    table = f"portscout_test_{hook}"
    commands = [
        f"add table inet {table}",
        f"add chain inet {table} c {{ type filter hook {hook} priority 0; }}",
        *(f"add rule inet {table} c {rule}" for rule in rules),
    ]
    subprocess.run(["nft", "-f", "-"], input="\n".join(commands) + "\n", text=True, check=True)
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=False)


@contextlib.contextmanager
def ephemeral_range(low: int, high: int) -> Iterator[None]:
    """Narrow this namespace's ephemeral port range (a per-namespace sysctl)."""
    path = "/proc/sys/net/ipv4/ip_local_port_range"
    with open(path) as f:
        saved = f.read()
    with open(path, "w") as f:
        f.write(f"{low} {high}")
    try:
        yield
    finally:
        with open(path, "w") as f:
            f.write(saved)


@pytest.fixture
def isolated_ns(isolated: None) -> None:
    """Alias making the dependency explicit: these tests send, so only in a private netns."""
