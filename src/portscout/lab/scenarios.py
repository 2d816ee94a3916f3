"""The lab benchmark's scenarios as ``Lab`` arguments: seeded, so every run scans the same lab.

Each function returns the keyword arguments of ``Lab``: ``Lab(**one_filtered_host())``.
Imports only the standard library and ``portscout.lab.hosts``.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from portscout.lab.hosts import Host, Link, ListenerMode

# nmap's most frequent TCP ports (nmap-services, top 100 by open frequency)
COMMON_PORTS = (
    7, 9, 13, 21, 22, 23, 25, 26, 37, 53, 79, 80, 81, 88, 106, 110, 111, 113, 119, 135,
    139, 143, 144, 179, 199, 389, 427, 443, 444, 445, 465, 513, 514, 515, 543, 544, 548,
    554, 587, 631, 646, 873, 990, 993, 995, 1025, 1026, 1027, 1028, 1029, 1110, 1433, 1720,
    1723, 1755, 1900, 2000, 2001, 2049, 2121, 2717, 3000, 3128, 3306, 3389, 3986, 4899,
    5000, 5009, 5051, 5060, 5101, 5190, 5357, 5432, 5631, 5666, 5800, 5900, 6000, 6001,
    6646, 7070, 8000, 8008, 8009, 8080, 8081, 8443, 8888, 9100, 9999, 10000, 32768, 49152,
    49153, 49154, 49155, 49156, 49157,
)  # fmt: skip


def one_filtered_host(seed: int = 3) -> dict[str, Any]:
    """(a) One host, ports 1-10000: 20 open, 90% of the closed ones dropped; 80 ms, 1% loss."""
    rng = random.Random(seed)
    ports = range(1, 10001)
    opened = set(rng.sample(ports, 20))
    closed = [p for p in ports if p not in opened]
    dropped = frozenset(rng.sample(closed, len(closed) * 9 // 10))
    modes = list(ListenerMode)
    host = Host(
        address=IPv4Address("198.18.1.1"),
        open={p: modes[i % len(modes)] for i, p in enumerate(sorted(opened))},
        drop=dropped,
    )
    return {"hosts": [host], "link": Link(rtt=0.080, loss=0.01), "seed": seed}


def sparse_network(seed: int = 5) -> dict[str, Any]:
    """(b) 198.18.1.0/24, 30% of hosts up, each with ~10 of 100 common ports open, the rest
    closed; 40 ms, RST limit 50/s per host."""
    rng = random.Random(seed)
    hosts = []
    for address in IPv4Network("198.18.1.0/24"):
        if rng.random() >= 0.3:
            hosts.append(Host(address=address, up=False))
            continue
        opened = rng.sample(COMMON_PORTS, rng.randint(1, 20))
        hosts.append(Host(address=address, open=dict.fromkeys(opened, ListenerMode.ACCEPT)))
    return {"hosts": hosts, "link": Link(rtt=0.040), "rst_rate": 50, "seed": seed}


# nmap's 20 most frequent TCP ports (the head of COMMON_PORTS by frequency, nmap --top-ports 20)
TOP20_PORTS = (21, 22, 23, 25, 53, 80, 110, 111, 135, 139, 143, 443, 445, 993, 995, 1723,
               3306, 3389, 5900, 8080)  # fmt: skip


def large_sparse_network(seed: int = 7, prefix: str = "198.19.0.0/16") -> dict[str, Any]:
    """(c) A /16 with about 1% of hosts up, nmap's top 20 ports, 10 ms; nine in ten up
    hosts answer RST on closed ports, one in ten drops most probes (16 of its 20 ports)."""
    rng = random.Random(seed)
    hosts = []
    for address in IPv4Network(prefix):
        if rng.random() >= 0.01:
            hosts.append(Host(address=address, up=False))
            continue
        opened = rng.sample(TOP20_PORTS, rng.randint(1, 4))
        closed = [p for p in TOP20_PORTS if p not in opened]
        drop = frozenset(rng.sample(closed, min(16, len(closed)))) if rng.random() < 0.1 else ()
        hosts.append(Host(address=address, open=dict.fromkeys(opened, ListenerMode.ACCEPT),
                          drop=frozenset(drop)))  # fmt: skip
    return {"hosts": hosts, "link": Link(rtt=0.010), "seed": seed}
