"""Host discovery: which targets answer at all, so that down hosts cost no port probes.

As nmap does by default: a loopback address is up without a probe (``localhost-response``);
other hosts get TCP connect pings to ports 80 and 443 (any answer, SYN-ACK or RST, means
up) through the connect engine and its timing, and, where raw sockets are allowed, an
ICMP echo request. A host that answers none of them after the timing's retries is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Sequence
from ipaddress import ip_address

from portscout.engines.async_connect import AsyncConnectEngine
from portscout.engines.base import EngineOptions
from portscout.packets import checksum
from portscout.plan import Probe
from portscout.results import IPAddress, Reason, State

PING_PORTS = (80, 443)
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMP_TRIES = 2


async def discover(
    hosts: Sequence[IPAddress], options: EngineOptions, *, icmp: bool
) -> dict[IPAddress, Reason]:
    """The hosts that are up, each with the reason of the first answer that showed it."""
    up: dict[IPAddress, Reason] = {h: Reason.LOCALHOST_RESPONSE for h in hosts if h.is_loopback}
    remote = [h for h in hosts if not h.is_loopback]
    if not remote:
        return up
    pings = [asyncio.create_task(_tcp_pings(remote, options, up))]
    v4 = [h for h in remote if h.version == 4]
    if icmp and v4:
        pings.append(asyncio.create_task(_icmp_echo(v4, options, up)))
    try:
        await asyncio.gather(*pings)
    finally:
        for task in pings:
            task.cancel()
    return up


async def _tcp_pings(
    hosts: Sequence[IPAddress], options: EngineOptions, up: dict[IPAddress, Reason]
) -> None:
    probes = (Probe(host, port) for port in PING_PORTS for host in hosts)
    async for result in AsyncConnectEngine().run(probes, options):
        if result.state is State.OPEN:
            up.setdefault(result.host, Reason.SYN_ACK)
        elif result.state is State.CLOSED:
            up.setdefault(result.host, Reason.RESET)


def _echo_request(ident: int, seq: int) -> bytes:
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    payload = b"portscout"
    return (
        struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, checksum(header + payload), ident, seq)
        + payload
    )


async def _icmp_echo(
    hosts: Sequence[IPAddress], options: EngineOptions, up: dict[IPAddress, Reason]
) -> None:
    """Echo requests to every host, ``ICMP_TRIES`` rounds; replies matched by id and seq."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except PermissionError:
        return
    loop = asyncio.get_running_loop()
    ident = os.getpid() & 0xFFFF
    index = {h: i & 0xFFFF for i, h in enumerate(hosts)}
    policy = options.policy()
    with sock:
        sock.setblocking(False)

        def on_readable() -> None:
            while True:
                try:
                    packet, (source, _) = sock.recvfrom(2048)
                except (BlockingIOError, InterruptedError):
                    return
                header_len = (packet[0] & 0x0F) * 4
                if len(packet) < header_len + 8:
                    continue
                kind, _, _, rid, rseq = struct.unpack_from("!BBHHH", packet, header_len)
                host = ip_address(source)
                if kind == ICMP_ECHO_REPLY and rid == ident and index.get(host) == rseq:
                    up.setdefault(host, Reason.ECHO_REPLY)
                    if all(h in up for h in hosts):
                        everyone.set()

        everyone = asyncio.Event()
        loop.add_reader(sock.fileno(), on_readable)
        try:
            for _ in range(ICMP_TRIES):
                for host in hosts:
                    if host in up:
                        continue
                    with contextlib.suppress(OSError):  # unreachable: simply not up
                        sock.sendto(_echo_request(ident, index[host]), (str(host), 0))
                    if policy.max_rate:
                        await asyncio.sleep(1 / policy.max_rate)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(everyone.wait(), policy.initial_rtt_timeout)
        finally:
            loop.remove_reader(sock.fileno())


def _address(text: str) -> IPAddress:
    from ipaddress import ip_address

    return ip_address(text)
