"""TUN devices: open one in the current network namespace and learn its kernel-given name.

A TUN device made without ``TUNSETPERSIST`` lives exactly as long as some process holds its
file descriptor, and the descriptor stays valid after ``ip link set NAME netns PID`` moves the
device: so the delay line, holding one TUN per side, is the only thing keeping the link up,
and nothing outlives it. ``IFF_NO_PI``: each read or write is one bare IP packet.

Imports only the standard library.
"""

from __future__ import annotations

import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFNAMSIZ = 16


def open_tun(pattern: str = "pslab%d") -> tuple[int, str]:
    """Create a TUN device in this namespace; return (non-blocking fd, device name).

    ``pattern`` may hold ``%d`` for the kernel to fill in the first free number. The fd is
    close-on-exec; hand it to a child with ``pass_fds``. Raises ``OSError`` (ENOENT without
    /dev/net/tun, EPERM without CAP_NET_ADMIN).
    """
    if len(pattern.encode()) >= IFNAMSIZ:
        raise ValueError(f"interface name pattern too long: {pattern!r}")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        request = struct.pack("16sH22x", pattern.encode(), IFF_TUN | IFF_NO_PI)
        answer = fcntl.ioctl(fd, TUNSETIFF, request)
    except BaseException:
        os.close(fd)
        raise
    name = answer[:IFNAMSIZ].split(b"\0", 1)[0].decode()
    return fd, name
