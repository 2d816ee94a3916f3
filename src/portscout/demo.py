"""``portscout demo``: a full scan of listeners that the demo itself opens, in private.

With the privilege for it (root or CAP_SYS_ADMIN), the process moves into a new network
namespace with only ``lo``, opens a few listeners on 127.0.0.1 (one in the ephemeral range,
where TCP self-connect lurks, and one that accepts and closes at once), scans all 65535
ports with the default engine, and checks what it found against what it opened. Without
the privilege it says so and scans 127.0.0.1's top 100 ports instead.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence

from portscout.lab.netns import NamespaceError, check_isolated, enter_private_netns
from portscout.output.session import OutputOptions, Outputs
from portscout.ports import service_names
from portscout.results import State
from portscout.running import drive
from portscout.scanner import Scan, ScanConfig

LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST

LOOPBACK = "127.0.0.1"
# port -> what listens there
DEMO_LISTENERS: dict[int, str] = {
    22: "banner",  # says hello, like an SSH server
    80: "accept",
    8080: "accept",
    9000: "accept-close",  # accepts and hangs up at once
    45678: "accept",  # inside the ephemeral range 32768-60999
}


@contextlib.contextmanager
def listeners(ports: Mapping[tuple[str, int], str], lifetime: float = 120.0) -> Iterator[None]:
    """Listen on each (address, port) with a mode: ``accept``, ``banner`` (says hello,
    like an SSH server), ``accept-close`` (hangs up at once) or ``accept-reset`` (resets
    at once, as a SYN proxy's backend or a service refusing the client does). One daemon
    thread accepts for all of them, for at most ``lifetime`` seconds; everything is closed
    on exit."""
    socks: dict[socket.socket, str] = {}
    try:
        for (address, port), mode in ports.items():
            sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
            socks[sock] = mode
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(1024)
            sock.setblocking(False)
        stop = threading.Event()
        thread = threading.Thread(target=_serve, args=(socks, stop, lifetime), daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
    finally:
        for sock in socks:
            sock.close()


def _serve(socks: dict[socket.socket, str], stop: threading.Event, lifetime: float) -> None:
    deadline = time.monotonic() + lifetime
    with selectors.DefaultSelector() as selector:
        for sock, mode in socks.items():
            selector.register(sock, selectors.EVENT_READ, mode)
        while not stop.is_set() and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.05):
                with contextlib.suppress(OSError):
                    conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    with conn:
                        if key.data == "banner":
                            conn.sendall(b"SSH-2.0-portscout-demo\r\n")
                        elif key.data == "accept-reset":  # hangs up with a RST
                            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)


def run_demo(argv: Sequence[str]) -> int:
    try:
        enter_private_netns()
        check_isolated()
    except (NamespaceError, OSError) as exc:
        print(f"portscout demo: no private network namespace ({exc}); "
              "scanning 127.0.0.1's top 100 ports instead")  # fmt: skip
        return _scan_and_print(ScanConfig(targets=[LOOPBACK], top_ports=100), expected=None)
    print(
        "portscout demo: private network namespace, listeners on 127.0.0.1 ports "
        + ", ".join(f"{p} ({m})" for p, m in DEMO_LISTENERS.items())
    )
    with listeners({(LOOPBACK, port): mode for port, mode in DEMO_LISTENERS.items()}):
        config = ScanConfig(
            targets=[LOOPBACK], ports="1-65535", keep_closed=False, record_closed=True
        )
        return _scan_and_print(config, expected=sorted(DEMO_LISTENERS))


def _scan_and_print(config: ScanConfig, expected: list[int] | None) -> int:
    scan = Scan(config)
    outputs = Outputs(OutputOptions(), [], sys.stdout, service_names())
    outputs.start(scan.meta)
    outputs.plan(scan.targets, discovery=config.discovery)
    scan.on_group_done = lambda group: outputs.group_done(
        group.stop, scan.report.hosts_up or {}, scan.report.latency
    )
    for batch in drive(scan):
        outputs.add(batch, scan.take_closed())
    outputs.finish(scan.report)
    if expected is None:
        return 0
    found = scan.report.open_ports(LOOPBACK)
    if found == expected and scan.report.counts[State.FILTERED] == 0:
        print(f"portscout demo: found exactly the {len(expected)} open ports, no phantom ports")
        return 0
    print(f"portscout demo: MISMATCH: expected open {expected}, found {found}")
    return 1
