"""Entering a private network namespace, and proving that we are in one.

Everything in portscout that sends packets in tests, benchmarks and the demo runs in a
network namespace with no route out, so that a stray address fails with "network is
unreachable" instead of leaving the machine. ``unshare(CLONE_NEWNET)`` moves only the
calling thread; called before any thread starts (or in a freshly forked child) it moves
the whole process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import os
import socket
import subprocess
import threading

CLONE_NEWNET = 0x40000000
# The inode of the kernel's initial network namespace (PROC_NET_INIT_INO in
# include/linux/proc_ns.h): used where /proc/1/ns/net may not be read (sandboxes).
INIT_NETNS_INODE = 0xEFFFFFF9


class NamespaceError(OSError):
    """The process could not enter, or is not in, a private network namespace."""


def netns_inode(pid: int | str = "self") -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def in_root_netns() -> bool:
    """True when this process shares the network namespace of PID 1 (the machine's)."""
    own = netns_inode()
    if own == INIT_NETNS_INODE:
        return True
    try:
        return own == netns_inode(1)
    except PermissionError:
        return False  # not init_net, and PID 1 is hidden: a container's own namespace would
        # still be caught by check_isolated()'s route test


def default_routes() -> list[str]:
    """Default routes visible here (IPv4 and IPv6), as readable strings; [] means no way out."""
    found: list[str] = []
    with open("/proc/net/route") as table:
        for line in list(table)[1:]:
            fields = line.split()
            if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
                found.append(f"0.0.0.0/0 dev {fields[0]}")
    try:
        with open("/proc/net/ipv6_route") as table:
            for line in table:
                fields = line.split()
                if fields[0] == "0" * 32 and fields[1] == "00" and fields[9] != "lo":
                    found.append(f"::/0 dev {fields[9]}")
    except FileNotFoundError:
        pass
    return found


# Where a scan from a test, benchmark or the demo may go: loopback and the lab range.
ALLOWED_ROUTES = (ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv4Network("198.18.0.0/15"))


def stray_routes() -> list[str]:
    """IPv4 routes that lead anywhere but loopback and the lab range 198.18.0.0/15."""
    found = []
    with open("/proc/net/route") as table:
        for line in list(table)[1:]:
            fields = line.split()
            if len(fields) < 8:
                continue
            dest = ipaddress.IPv4Address(socket.ntohl(int(fields[1], 16)))
            mask = ipaddress.IPv4Address(socket.ntohl(int(fields[7], 16)))
            net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
            if not any(net.subnet_of(allowed) for allowed in ALLOWED_ROUTES):
                found.append(f"{net} dev {fields[0]}")
    return found


def check_isolated() -> None:
    """Raise ``NamespaceError`` unless we are in a private netns without a default route."""
    if in_root_netns():
        raise NamespaceError("refusing to send: this is the machine's root network namespace")
    routes = default_routes() + stray_routes()
    if routes:
        raise NamespaceError(f"refusing to send: a route leads out ({routes[0]})")


def enter_private_netns() -> None:
    """Move this (single-threaded) process into a new network namespace and bring lo up.

    Raises ``NamespaceError`` when the kernel refuses (no CAP_SYS_ADMIN) or when other
    threads exist, since they would stay behind in the old namespace.
    """
    if threading.active_count() > 1:
        raise NamespaceError("cannot enter a network namespace with other threads running")
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NamespaceError(err, f"unshare(CLONE_NEWNET) failed: {os.strerror(err)}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
