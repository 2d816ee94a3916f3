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
import itertools
import os
import socket
import struct
import sys
import threading
import time

from portscout.engines.base import (
    BACKPRESSURE,
    CONNECT_ERRORS,
    NO_ROUTE,
    UNROUTABLE,
    route_verdict,
)
from portscout.engines.rawsock import source_address
from portscout.errors import ScanError
from portscout.host_timing import HostTiming
from portscout.plan import Probe
from portscout.results import IPAddress, Reason, Result, State
from portscout.timing import TimingPolicy, loss_retries

LINGER_RST = struct.pack("ii", 1, 0)
# struct tcp_info (linux/tcp.h): 8 one-byte fields, then 32-bit fields; tcpi_rtt is the
# 16th of those (after rto, ato, snd_mss, rcv_mss, unacked, sacked, lost, retrans,
# fackets, four timestamps, pmtu, rcv_ssthresh).
_TCPI_RTT = 8 + 15 * 4
_TCP_INFO_SIZE = 104
BACKOFF_SECONDS = 0.005
# tcpi_state (include/net/tcp_states.h) of a socket whose handshake is still under way
_TCP_SYN_SENT, _TCP_SYN_RECV = 2, 3


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
        rtt=handshake_rtt(sock, rtt), tries=tries,
    )  # fmt: skip


def still_connecting(sock: _socket.socket) -> bool | None:
    """After a wakeup whose SO_ERROR said nothing went wrong: False when the socket is
    connected, True when its handshake is still under way, None when it is closed with
    its error already taken.

    SO_ERROR 0 means "no error yet", not "connected": an event loop that wakes a writer for
    a socket still in SYN-SENT (a spurious wakeup) would make a dropped or closed port look
    open. Go's connect checks getpeername() after every such wakeup for that reason
    (golang/go#14548, #19289); getpeername() fails with ENOTCONN until the handshake is done.
    """
    try:
        sock.getpeername()
    except OSError:
        pass
    else:
        return False
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError:
        return None
    return True if state in (_TCP_SYN_SENT, _TCP_SYN_RECV) else None


def handshake_rtt(sock: _socket.socket, measured: float) -> float:
    """The round trip of a connected socket's handshake as the kernel timed it (TCP_INFO's
    ``tcpi_rtt``, microseconds: SYN out, SYN-ACK in), or ``measured`` where the kernel has
    none. Measured in Python, a probe's round trip also holds the wait of the event loop
    (milliseconds while it is busy): the kernel's is the probe's own."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return measured
    micros = int.from_bytes(info[_TCPI_RTT : _TCPI_RTT + 4], sys.byteorder)
    return micros / 1e6 if micros else measured


def unroutable(host: IPAddress) -> tuple[State, Reason] | None:
    """The state of every port of ``host`` when this machine has no route or no source
    address for it, else None. A UDP connect() looks the route up and sends nothing; so
    it tells "no address to send from" (the host's doing) from EADDRNOTAVAIL's other
    meaning, no local port left for one destination (back-pressure)."""
    try:
        source_address(host)
    except OSError as exc:
        if exc.errno in BACKPRESSURE:
            return None  # out of descriptors: nothing learnt of the host
        return route_verdict(exc.errno or 0) or NO_ROUTE
    return None


def connect_verdict(code: int, host: IPAddress) -> tuple[State, Reason] | None:
    """What the errno of a failed connect() says of the port; None for a local problem."""
    verdict = CONNECT_ERRORS.get(code)
    if verdict is None and code in UNROUTABLE:
        return unroutable(host)
    return verdict


def error_result(code: int, probe: Probe, rtt: float | None, tries: int) -> Result:
    """Classify a failed connect() by its errno; raises ScanError for a local problem."""
    verdict = connect_verdict(code, probe.host)
    if verdict is None:
        raise ScanError(f"connect to {probe.host} port {probe.port}: {os.strerror(code)}")
    return verdict_result(verdict, probe, rtt, tries)


def verdict_result(
    verdict: tuple[State, Reason], probe: Probe, rtt: float | None, tries: int
) -> Result:
    """A decided port; ``rtt`` is kept only where something came back."""
    state, reason = verdict
    silent = state is State.FILTERED and reason in (Reason.NO_RESPONSE, Reason.NO_ROUTE)
    return Result(
        host=probe.host, port=probe.port, state=state, reason=reason,
        rtt=None if silent else rtt, tries=tries,
    )  # fmt: skip


def decided_result(code: int, sock: _socket.socket, probe: Probe, rtt: float, tries: int) -> Result:
    """The result of a connect() that ended with ``code`` (0: connected, else an errno)."""
    if code == 0:
        return connected_result(sock, probe, rtt, tries)
    return error_result(code, probe, rtt, tries)


class BlockingTiming:
    """The timing of the blocking engines, shared by their threads: how long one connect
    may wait, and how many times a silent port is tried.

    Each attempt waits the policy's ``initial_rtt_timeout``: nmap's timeout before it has
    measured a round trip, and a blocking engine measures none (every connect stands
    alone). At -T3 that is 1 s, the threads study's timeout; -T4 0.5 s, -T5 0.25 s;
    ``--timeout`` sets it. A silent port gets as many retransmissions as in every engine
    (nmap's allowance from the host's ``HostTiming``, raised by the loss it has shown, at
    most --max-retries): a quiet host's filtered ports get one.

    Answers to first tries are only counted until the host's timing is asked or told
    something else (a timeout, an answer to a retry), and then given to it in one go, in
    their order: a scan that never times out (loopback) pays nothing for timing. They are
    counted without the lock (``_HostRecord.count``), which the threadpool's workers would
    otherwise contend for on every probe (a fifth of its loopback scan's time).
    """

    def __init__(self, policy: TimingPolicy) -> None:
        self.policy = policy
        self.timeout = policy.initial_rtt_timeout
        # Keyed by the address as text: a str hashes once, in C; an IPv4Address hashes in
        # Python on every lookup, which cost more than the rest of the bookkeeping.
        self._hosts: dict[str, _HostRecord] = {}
        self._lock = threading.Lock()  # over every HostTiming

    def _record(self, host: str) -> _HostRecord:
        # get and setdefault are single C calls: safe from any thread without the lock.
        return self._hosts.get(host) or self._hosts.setdefault(host, _HostRecord())

    def _timing(self, host: str, now: float) -> HostTiming:
        """The host's timing, told of every answer so far (the lock held)."""
        record = self._record(host)
        timing = record.timing
        if timing is None:
            timing = record.timing = HostTiming(self.policy, started=now)
        # These engines use no round trip (see above): only an answer's try number counts.
        for _ in range(record.take()):
            timing.on_answer(sent=now, now=now, in_flight=0, tryno=0)
        return timing

    def retries_allowed(self, host: str, now: float) -> int:
        with self._lock:
            timing = self._timing(host, now)
            # The allowance of every engine (schedule.Scheduler.allowed): nmap's, raised
            # by the loss the host has shown.
            return loss_retries(
                timing.nmap_retries_allowed,
                losses=timing.late_answers,
                answers=timing.answers,
                max_retries=self.policy.max_retries,
            )

    def on_answer(self, host: str, *, sent: float, now: float, tryno: int) -> None:
        if tryno == 0:
            next(self._record(host).count)
            return
        with self._lock:
            self._timing(host, now).on_answer(sent=sent, now=now, in_flight=0, tryno=tryno)

    def on_timeout(self, host: str, *, sent: float, now: float) -> None:
        with self._lock:
            self._timing(host, now).on_timeout(sent=sent, now=now, in_flight=0)


class _HostRecord:
    """A host's timing, made at its first timeout or answer to a retry, and a count of
    the answers to first tries not yet given to it.

    ``count`` is an ``itertools.count`` stepped once per answer: ``next`` is one C call,
    so threads step it without a lock and no step is lost. ``take`` (under the lock)
    steps it too, to read it; those steps are subtracted.
    """

    __slots__ = ("count", "taken", "timing")

    def __init__(self) -> None:
        self.count = itertools.count()
        self.taken = 0  # steps accounted for: answers given to ``timing``, and reads
        self.timing: HostTiming | None = None

    def take(self) -> int:
        """Answers counted since the last call."""
        steps = next(self.count)  # the steps before this one
        fresh = steps - self.taken
        self.taken = steps + 1
        return fresh


def _open(probe: Probe, fam: socket.AddressFamily) -> socket.socket | Result | None:
    """A blocking socket for ``probe``; its decided Result when the host's address family
    is unusable here; None when out of descriptors (wait and try again)."""
    try:
        return socket.socket(fam, socket.SOCK_STREAM)
    except OSError as exc:
        if exc.errno in BACKPRESSURE:
            return None
        if exc.errno == errno.EAFNOSUPPORT:  # IPv6 disabled at boot
            return verdict_result(NO_ROUTE, probe, None, 0)
        raise


def blocking_probe(probe: Probe, timing: BlockingTiming, stop: threading.Event) -> Result | None:
    """Probe with blocking connects (``timing.timeout`` per attempt, retries on timeout).

    Returns None when ``stop`` is set before the port was decided. Local resource errors
    (EMFILE, EADDRNOTAVAIL for a routable host, ...) wait and try again: never a crash,
    never a wrong state. Raises ScanError (or OSError, for ``os_errors`` to translate)
    for a local problem that waiting does not cure.
    """
    addr, fam = sockaddr(probe.host, probe.port), family(probe.host)
    tries = 0
    while not stop.is_set():
        sock = _open(probe, fam)
        if sock is None:
            time.sleep(BACKOFF_SECONDS)
            continue
        if isinstance(sock, Result):
            return sock
        with sock:
            sock.settimeout(timing.timeout)
            started = time.monotonic()
            try:
                code = sock.connect_ex(addr)
            except TimeoutError:
                code = errno.ETIMEDOUT
            now = time.monotonic()
            outcome = _classify(code, probe)
            if outcome is None:
                time.sleep(BACKOFF_SECONDS)
                continue
            code, verdict = outcome
            tries += 1
            if code == errno.ETIMEDOUT:
                timing.on_timeout(addr[0], sent=started, now=now)
                if tries <= timing.retries_allowed(addr[0], now):
                    continue
            else:
                timing.on_answer(addr[0], sent=started, now=now, tryno=tries - 1)
            if verdict is None:
                return connected_result(sock, probe, now - started, tries)
            return verdict_result(verdict, probe, now - started, tries)
    return None


def _classify(code: int, probe: Probe) -> tuple[int, tuple[State, Reason] | None] | None:
    """``(errno, verdict)`` of a blocking connect() that ended with ``code`` (verdict None:
    connected); None for a local shortage to wait out. Raises ScanError for another local
    problem."""
    if code == 0:
        return 0, None
    if code == errno.EAGAIN:  # how connect_ex reports its own timeout (or TimeoutError)
        code = errno.ETIMEDOUT
    verdict = CONNECT_ERRORS.get(code) or connect_verdict(code, probe.host)
    if verdict is not None:
        return code, verdict
    if code in BACKPRESSURE or code in (errno.EADDRNOTAVAIL, errno.EINPROGRESS):
        return None
    raise ScanError(f"connect to {probe.host} port {probe.port}: {os.strerror(code)}")
