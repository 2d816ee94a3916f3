"""Shards of one plan scanned by worker processes, results streamed back to the parent.

Why processes: one connect() costs the kernel about 12 us on loopback and Python another
5-10 us, all under the GIL; threads cannot add a core, processes can. Workers are forked,
so each inherits the plan (a lazy target set, the ports, the permutation) without
pickling it; what crosses the pipe is a shard in, compact result tuples out.

A worker ignores SIGINT and dies with its parent (PR_SET_PDEATHSIG): Ctrl-C is the
parent's to handle, and it keeps every result already received.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import pickle
import signal
import typing
from array import array
from collections.abc import AsyncGenerator, Container, Sequence
from ipaddress import IPv4Address, IPv6Address
from multiprocessing.context import ForkProcess
from typing import Literal

from portscout.engines.base import EngineOptions
from portscout.errors import ScanError
from portscout.permutation import Shard
from portscout.plan import Piece, Probe, ScanPlan
from portscout.results import ClosedPorts, IPAddress, Protocol, Reason, Result, State

ClosedAs = Literal["results", "ports", "count"]
PR_SET_PDEATHSIG = 1


@typing.runtime_checkable
class CountsClosed(typing.Protocol):
    """An engine that can count closed ports instead of yielding a Result each (syn), and
    collect them per host (reason ``reset``) in ``closed_ports`` when that is a dict."""

    keep_closed: bool
    closed: int
    closed_ports: dict[IPAddress, array[int]] | None
    sent: int  # probes sent in all, once the run is over


BATCH_SIZE = 4096
BATCH_SECONDS = 0.05

# (version, address as int, port, state, reason, rtt, tries, reason_ttl)
Row = tuple[int, int, int, str, str, float | None, int, int | None]
# Closed ports of a host with one reason: (version, address as int, reason, ports as 'H')
ClosedRow = tuple[int, int, str, bytes]


def _encode(result: Result) -> Row:
    host = result.host
    return (
        host.version, int(host), result.port, result.state.value, result.reason.value,
        result.rtt, result.tries, result.reason_ttl,
    )  # fmt: skip


_STATES = {s.value: s for s in State}
_REASONS = {r.value: r for r in Reason}


class _Decoder:
    """Rows back into Results; one address object per host (a full scan decodes 65535 rows
    in the parent, so enum calls and address parsing per row would cost 0.2 s)."""

    def __init__(self) -> None:
        self.hosts: dict[tuple[int, int], IPAddress] = {}

    def __call__(self, row: Row) -> Result:
        version, address, port, state, reason, rtt, tries, ttl = row
        host = self.hosts.get((version, address))
        if host is None:
            host = IPv4Address(address) if version == 4 else IPv6Address(address)
            self.hosts[version, address] = host
        return Result(host, port, _STATES[state], _REASONS[reason], Protocol.TCP, rtt, tries, ttl)

    def closed(self, row: ClosedRow) -> ClosedPorts:
        version, address, reason, ports = row
        host = self.hosts.get((version, address))
        if host is None:
            host = IPv4Address(address) if version == 4 else IPv6Address(address)
            self.hosts[version, address] = host
        return ClosedPorts(host, _REASONS[reason], array("H", ports))


def _worker(
    plan: ScanPlan,
    shard: Shard,
    engine_name: str,
    options: EngineOptions,
    fd: int,
    closed_as: ClosedAs,
    skip: frozenset[Probe],
    hosts: Container[IPAddress] | None,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The command's stop handlers (SIGTERM, SIGHUP acting as Ctrl-C) came with the fork:
    # here they would catch terminate() and the parent-death signal, and the worker would
    # outlive its scan. A worker stops by dying.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    libc = ctypes.CDLL(None, use_errno=True)  # libc is loaded: find_library runs ldconfig
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    from portscout.engines import create_engine

    async def scan_shard() -> None:
        rows: list[Row] = []
        groups: dict[tuple[IPAddress, Reason], array[int]] = {}
        closed = counted = 0  # counted: of the engine's own count of closed ports
        closed_tries = 0  # probes sent to the closed ports not in rows
        accounted = 0  # probes reported so far, for the syn engine's final correction
        engine = create_engine(engine_name)
        in_results = closed_as == "results"
        grouped = closed_as == "ports"
        counter = engine if not in_results and isinstance(engine, CountsClosed) else None
        if counter is not None:
            counter.keep_closed = False
            counter.closed_ports = {} if grouped else None

        def flush(last: bool = False) -> None:
            nonlocal rows, groups, closed, counted, closed_tries, accounted
            if counter is not None:  # counted in the engine: one try each, until corrected
                fresh = counter.closed - counted
                closed, closed_tries, counted = closed + fresh, closed_tries + fresh, counter.closed
                if counter.closed_ports:
                    for host, ports in counter.closed_ports.items():
                        groups.setdefault((host, Reason.RESET), array("H")).extend(ports)
                    counter.closed_ports.clear()
            accounted += closed_tries + sum(row[6] for row in rows)
            if last and counter is not None:  # the engine knows what it sent in all
                closed_tries += max(0, counter.sent - accounted)
            closed_rows = [
                (host.version, int(host), reason.value, ports.tobytes())
                for (host, reason), ports in groups.items()
            ]
            frame = (closed, closed_tries, rows, closed_rows)
            _send_frame(fd, pickle.dumps(frame, pickle.HIGHEST_PROTOCOL))
            rows, groups, closed, closed_tries = [], {}, 0, 0

        async def tick() -> None:
            """A frame every ``BATCH_SECONDS`` with what is new, also while the engine
            yields nothing (the closed ports it only counts, an open port waiting for
            company): the progress moves, and a Ctrl-C loses a tick at most."""
            while True:
                await asyncio.sleep(BATCH_SECONDS)
                if rows or closed or (counter is not None and counter.closed != counted):
                    flush()

        probes = plan.probes(shard, skip=skip)
        if hosts is not None:  # some hosts only (another worker's, or found down)
            probes = (probe for probe in probes if probe.host in hosts)
        ticker = asyncio.create_task(tick())
        try:
            async for result in engine.run(probes, options):
                if result.state is not State.CLOSED or in_results:
                    rows.append(_encode(result))
                else:
                    closed += 1
                    closed_tries += result.tries
                    if grouped:
                        key = (result.host, result.reason)
                        ports = groups.get(key)
                        if ports is None:
                            ports = groups[key] = array("H")
                        ports.append(result.port)
                if len(rows) + closed >= BATCH_SIZE:
                    flush()
        finally:
            ticker.cancel()
        flush(last=True)

    try:
        asyncio.run(scan_shard())
    except BaseException as exc:
        _send_frame(fd, pickle.dumps(("error", f"{type(exc).__name__}: {exc}")))
        raise
    finally:
        os.close(fd)


class _FrameReader:
    """Reassembles length-prefixed frames from a non-blocking pipe (the loop may make it so)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.eof = False

    def read(self) -> list[bytes]:
        try:
            chunk = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return []
        if not chunk:
            self.eof = True
            return []
        self.buffer += chunk
        frames = []
        while len(self.buffer) >= 4:
            size = int.from_bytes(self.buffer[:4], "big")
            if len(self.buffer) < 4 + size:
                break
            frames.append(bytes(self.buffer[4 : 4 + size]))
            del self.buffer[: 4 + size]
        return frames


def _send_frame(fd: int, payload: bytes) -> None:
    data = memoryview(len(payload).to_bytes(4, "big") + payload)
    while data:
        data = data[os.write(fd, data) :]


async def run_sharded(
    pieces: Sequence[Piece],
    engine_name: str,
    options: EngineOptions,
    *,
    closed_as: ClosedAs,
    skip: frozenset[Probe] = frozenset(),
) -> AsyncGenerator[tuple[int, int, list[Result], list[ClosedPorts]], None]:
    """Yield ``(closed_count, closed_tries, results, closed_ports)`` batches, one forked
    worker per piece: a plan, the shard of it to scan and, unless None, the only hosts
    whose probes it sends (``ScanPlan.pieces``; the forked workers inherit them: nothing
    is pickled).

    ``closed_as`` says how closed ports come back: as ``"results"`` like any other, as
    ``"ports"`` (``ClosedPorts`` per host and reason, for the history database) or only
    as a ``"count"``; ``closed_count`` counts those not in ``results``. Each spares the
    parent (and the pipe) more work than the one before. ``closed_tries`` counts the
    probes those closed ports took (more than one each where RSTs were lost).
    """
    context = multiprocessing.get_context("fork")
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    workers: list[ForkProcess] = []
    readers: list[_FrameReader] = []
    decode = _Decoder()

    def on_readable(reader: _FrameReader) -> None:
        for frame in reader.read():
            queue.put_nowait(frame)
        if reader.eof:
            loop.remove_reader(reader.fd)
            queue.put_nowait(None)

    try:
        for plan, shard, hosts in pieces:
            read_fd, write_fd = os.pipe()
            process = context.Process(
                target=_worker,
                args=(plan, shard, engine_name, options, write_fd, closed_as, skip, hosts),
                daemon=True,
            )
            process.start()
            os.close(write_fd)
            reader = _FrameReader(read_fd)
            workers.append(process)
            readers.append(reader)
            loop.add_reader(read_fd, on_readable, reader)
        open_readers = len(readers)
        while open_readers:
            data = await queue.get()
            if data is None:
                open_readers -= 1
                continue
            message = pickle.loads(data)
            if message[0] == "error":
                raise ScanError(f"scan worker failed: {message[1]}")
            closed, closed_tries, rows, closed_rows = message
            yield (
                closed,
                closed_tries,
                [decode(row) for row in rows],
                [decode.closed(r) for r in closed_rows],
            )
    finally:
        for reader in readers:
            loop.remove_reader(reader.fd)
            os.close(reader.fd)
        for process in workers:
            if process.is_alive():
                process.terminate()
        for process in workers:
            process.join(timeout=5)
