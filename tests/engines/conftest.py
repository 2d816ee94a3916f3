"""Listeners and firewall rules inside the test session's private network namespace."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

Listening = dict[tuple[str, int], str]  # (address, port) -> mode


@contextlib.contextmanager
def serve(listeners: Listening, lifetime: float = 60.0) -> Iterator[None]:
    """Listen on each (address, port) with a mode: accept, banner or accept-close."""
    socks: dict[socket.socket, str] = {}
    try:
        for (address, port), mode in listeners.items():
            fam = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(fam, socket.SOCK_STREAM)
            socks[sock] = mode
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(1024)
            sock.settimeout(0.05)
        stop = threading.Event()

        def loop() -> None:
            deadline = threading.Event()
            timer = threading.Timer(lifetime, deadline.set)
            timer.start()
            try:
                while not stop.is_set() and not deadline.is_set():
                    for sock, mode in socks.items():
                        if mode == "accept":
                            continue  # the kernel completes handshakes into the backlog
                        try:
                            conn, _ = sock.accept()
                        except OSError:
                            continue
                        with conn:
                            if mode == "banner":
                                with contextlib.suppress(OSError):
                                    conn.sendall(b"hello\r\n")
            finally:
                timer.cancel()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
    finally:
        for sock in socks:
            sock.close()


@contextlib.contextmanager
def nft_rules(*rules: str) -> Iterator[None]:
    """Output-hook rules in a private table of this namespace, removed afterwards."""
    table = "portscout_test"
    commands = [
        f"add table inet {table}",
        f"add chain inet {table} out {{ type filter hook output priority 0; }}",
        *(f"add rule inet {table} out {rule}" for rule in rules),
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
