"""The target namespace process: it makes the namespace, wires it, and runs every listener.

Started by ``Lab`` as ``python -m portscout.lab.target --parent-pid P``. It enters a new,
anonymous network namespace of its own (``unshare``), says ``{"netns": pid}``, waits for the
parent to move the delay line's far TUN in, then takes one JSON config line: the TUN name,
the scanner address, sysctls, the up host addresses (put on ``lo``), the nftables ruleset
and the listeners. It answers ``{"ready": ...}`` and serves connections in one selector loop
until stdin ends, ``--max-seconds`` pass, or the parent dies. The namespace has no name and
no other process in it: it, its TUN and its rules vanish with this process.

Imports only the standard library and ``portscout.lab`` (netns, process).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from portscout.lab.netns import enter_private_netns
from portscout.lab.process import die_with_parent, read_first_line, write_message

ACCEPT_BATCH = 256  # connections accepted per readiness event, so one port cannot starve others


def _sysctl(name: str, value: str) -> None:
    with open(f"/proc/sys/{name}", "w") as knob:
        knob.write(value)


def configure(config: dict[str, Any]) -> None:
    """Addresses, routes, sysctls and nftables inside this (already private) namespace."""
    tun = config["tun"]
    for name, value in config["sysctls"].items():
        _sysctl(name, value)
    if os.path.exists(f"/proc/sys/net/ipv6/conf/{tun}"):
        _sysctl(f"net/ipv6/conf/{tun}/disable_ipv6", "1")
    commands = [f"link set {tun} up", f"route add {config['scanner']}/32 dev {tun}"]
    commands += [f"addr add {address}/32 dev lo" for address in config["up"]]
    subprocess.run(["ip", "-batch", "-"], input="\n".join(commands) + "\n", text=True, check=True)
    subprocess.run(["nft", "-f", "-"], input=config["ruleset"], text=True, check=True)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Listeners:
    """Listening sockets and the connections they accepted, served by one selector."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.selector = selectors.DefaultSelector()
        self.held: dict[socket.socket, None] = {}  # insertion order: oldest first
        self.max_held = int(config.get("max_connections", 10_000))
        self.accepted: Counter[str] = Counter()
        for address, port, mode, banner in config["listeners"]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(4096)
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, (mode, banner.encode("latin-1")))

    def serve(self, deadline: float, stdin_buffer: bytes) -> None:
        """Until ``deadline`` or end of stdin; each stdin line is answered with the stats."""
        self.selector.register(0, selectors.EVENT_READ, None)
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in self.selector.select(min(left, 0.25)):
                if key.data is None:
                    chunk = os.read(0, 4096)
                    if not chunk:
                        return
                    stdin_buffer += chunk
                    for _ in range(stdin_buffer.count(b"\n")):
                        write_message(self.stats())
                    stdin_buffer = stdin_buffer.rpartition(b"\n")[2]
                elif key.data == "held":
                    self._on_held(key.fileobj)  # type: ignore[arg-type]  # always a socket
                else:
                    self._on_listener(key.fileobj, *key.data)  # type: ignore[arg-type]

    def _on_listener(self, sock: socket.socket, mode: str, banner: bytes) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, ConnectionAbortedError):
                return
            self.accepted[mode] += 1
            if mode == "close":
                conn.close()
                continue
            conn.setblocking(False)
            if mode == "banner":
                try:
                    conn.send(banner)
                except OSError:
                    conn.close()
                    continue
            if len(self.held) >= self.max_held:
                self._drop(next(iter(self.held)))
            self.held[conn] = None
            self.selector.register(conn, selectors.EVENT_READ, "held")

    def _on_held(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:  # the peer closed or reset: let go
            self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        self.selector.unregister(conn)
        del self.held[conn]
        conn.close()

    def stats(self) -> dict[str, Any]:
        return {"accepted": dict(self.accepted), "held": len(self.held)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m portscout.lab.target")
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.max_seconds
    die_with_parent(args.parent_pid)
    enter_private_netns()
    write_message({"netns": os.getpid()})
    line, rest = read_first_line(timeout=30.0)
    try:
        config = json.loads(line)
        configure(config)
        listeners = Listeners(config)
    except (OSError, subprocess.CalledProcessError, ValueError, KeyError) as exc:
        write_message({"error": f"target setup failed: {exc!r}"})
        return 1
    write_message({"ready": True, "listeners": len(config["listeners"])})
    listeners.serve(deadline, rest)
    write_message(listeners.stats())
    return 0


if __name__ == "__main__":
    sys.exit(main())
