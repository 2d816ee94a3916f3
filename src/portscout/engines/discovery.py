"""Host discovery: which targets answer at all, so that down hosts cost no port probes.

As nmap does by default: a loopback address is up without a probe (``localhost-response``);
other hosts get, where raw sockets are allowed, nmap's pings as root (``pinger``: ICMP or
ICMPv6 echo, SYN to 443, ACK to 80, ICMP timestamp for IPv4), else TCP connect() pings to
ports 80 and 443 through the connect engine (any answer, a connection or a refusal, means
up). A host that answers none of them after the retries is down.
"""

from __future__ import annotations

import asyncio
from asyncio import FIRST_COMPLETED
from collections.abc import Sequence
from typing import Any

from portscout.engines.async_connect import AsyncConnectEngine
from portscout.engines.base import EngineOptions, os_errors
from portscout.engines.pinger import Discovered, Found, raw_pings
from portscout.plan import Probe
from portscout.results import IPAddress, Reason, State

CONNECT_PING_PORTS = (80, 443)  # nmap's pings without privileges (-PS80,443 as connect())


async def discover(hosts: Sequence[IPAddress], options: EngineOptions, *, raw: bool) -> Discovered:
    """Ping every host (``raw``: nmap's raw pings, else connect() pings); done once every
    host has answered or every ping has run out of tries.

    Raises ScanError for a local problem (an OS error no host explains)."""
    with os_errors("host discovery"):
        return await _discover(hosts, options, raw=raw)


async def _discover(hosts: Sequence[IPAddress], options: EngineOptions, *, raw: bool) -> Discovered:
    found = Found(hosts, options.timing)
    for host in hosts:
        if host.is_loopback:
            found.mark(host, Reason.LOCALHOST_RESPONSE, None)
    remote = [h for h in hosts if not h.is_loopback]
    if not remote:
        return found.result
    if raw:
        pings = raw_pings(remote, options.timing, found)
    else:
        pings = _connect_pings(remote, options, found)
    all_pings: asyncio.Future[Any] = asyncio.ensure_future(pings)
    everyone: asyncio.Future[Any] = asyncio.ensure_future(found.everyone.wait())
    try:
        await asyncio.wait({all_pings, everyone}, return_when=FIRST_COMPLETED)
        if all_pings.done():
            all_pings.result()  # a ping that failed raises here
    finally:
        for future in (all_pings, everyone):
            future.cancel()
        await asyncio.gather(all_pings, everyone, return_exceptions=True)
    return found.result


async def _connect_pings(hosts: Sequence[IPAddress], options: EngineOptions, found: Found) -> None:
    """connect() pings to ``CONNECT_PING_PORTS``, each with the connect engine's timing
    and retries: what an unprivileged scanner can send."""
    # Lazy: a host found up meanwhile (by its other port) gets no more pings.
    probes = (
        Probe(host, port) for port in CONNECT_PING_PORTS for host in hosts if host not in found
    )
    async for result in AsyncConnectEngine().run(probes, options):
        if result.state is State.OPEN:
            found.mark(result.host, Reason.SYN_ACK, result.rtt)
        elif result.state is State.CLOSED:
            found.mark(result.host, Reason.RESET, result.rtt)
