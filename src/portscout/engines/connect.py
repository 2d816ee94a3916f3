"""One TCP connect() probe, done the careful way; shared by every connect-based engine.

Two traps live here so that no engine repeats them:

* TCP self-connect. A connect() to a closed loopback port inside the ephemeral range may
  be given that very port as its source, and the simultaneous open connects the socket to
  itself: it looks open. A listener on the port would have kept the kernel from choosing
  it as a source, so a socket connected to itself proves the port is closed.
* TIME_WAIT. Closing an established probe socket normally leaves it in TIME_WAIT for 60 s,
  holding an ephemeral port; a scan of many open ports would run out of them. Probes to
  open ports are closed with SO_LINGER 0 (an RST), as nmap's connect scan effectively does.
"""

from __future__ import annotations

import _socket
import errno
import os
import socket
import struct
import threading
import time

from portscout.engines.base import BACKPRESSURE, CONNECT_ERRORS, EngineOptions
from portscout.plan import Probe
from portscout.results import IPAddress, Reason, Result, State

LINGER_RST = struct.pack("ii", 1, 0)
BACKOFF_SECONDS = 0.005


def sockaddr(host: IPAddress, port: int) -> tuple[str, int]:
    return (str(host), port)


def family(host: IPAddress) -> socket.AddressFamily:
    return socket.AF_INET if host.version == 4 else socket.AF_INET6


def connected_result(sock: _socket.socket, probe: Probe, rtt: float, tries: int) -> Result:
    """Classify a socket whose connect() succeeded: open, or closed if it met itself."""
    try:
        local = sock.getsockname()
    except OSError:
        local = None
    if local is not None and local[1] == probe.port and local[0] == str(probe.host):
        return Result(
            host=probe.host, port=probe.port, state=State.CLOSED, reason=Reason.CONN_REFUSED,
            rtt=rtt, tries=tries,
        )  # fmt: skip
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    return Result(
        host=probe.host, port=probe.port, state=State.OPEN, reason=Reason.SYN_ACK,
        rtt=rtt, tries=tries,
    )  # fmt: skip


def error_result(code: int, probe: Probe, rtt: float | None, tries: int) -> Result:
    """Classify a failed connect() by its errno; raises OSError for local problems."""
    try:
        state, reason = CONNECT_ERRORS[code]
    except KeyError:
        raise OSError(
            code, f"connect to {probe.host} port {probe.port}: {os.strerror(code)}"
        ) from None
    return Result(
        host=probe.host, port=probe.port, state=state, reason=reason,
        rtt=rtt if state is not State.FILTERED or reason is not Reason.NO_RESPONSE else None,
        tries=tries,
    )  # fmt: skip


def decided_result(code: int, sock: _socket.socket, probe: Probe, rtt: float, tries: int) -> Result:
    """The result of a connect() that ended with ``code`` (0: connected, else an errno)."""
    if code == 0:
        return connected_result(sock, probe, rtt, tries)
    return error_result(code, probe, rtt, tries)


def blocking_probe(probe: Probe, options: EngineOptions, stop: threading.Event) -> Result | None:
    """Probe with blocking connects (timeout per attempt, retries on timeout).

    Returns None when ``stop`` is set before the port was decided. Local resource errors
    (EMFILE, EADDRNOTAVAIL, ...) wait and try again: never a crash, never a wrong state.
    """
    addr = sockaddr(probe.host, probe.port)
    fam = family(probe.host)
    tries = 0
    while not stop.is_set():
        try:
            sock = socket.socket(fam, socket.SOCK_STREAM)
        except OSError as exc:
            if exc.errno in BACKPRESSURE:
                time.sleep(BACKOFF_SECONDS)
                continue
            raise
        with sock:
            sock.settimeout(options.timeout)
            tries += 1
            started = time.monotonic()
            try:
                code = sock.connect_ex(addr)
            except TimeoutError:
                code = errno.ETIMEDOUT
            rtt = time.monotonic() - started
            if code == 0:
                return connected_result(sock, probe, rtt, tries)
            if code in BACKPRESSURE or code == errno.EINPROGRESS:
                tries -= 1
                time.sleep(BACKOFF_SECONDS)
                continue
            if code == errno.EAGAIN:  # how connect_ex reports its own timeout
                code = errno.ETIMEDOUT
            if code == errno.ETIMEDOUT and tries <= options.max_retries:
                continue
            return error_result(code, probe, rtt, tries)
    return None
