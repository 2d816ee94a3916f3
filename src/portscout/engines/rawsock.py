"""Raw sockets for the SYN engine: opening them, kernel-side filters, the source address of a
route, and a block of source ports the kernel will not use for its own connections.

Owns sockets and the socket options that shape them; knows nothing of probes or results
(those are ``syn``'s). Imports only the standard library and ``errors``.

What Linux delivers to raw sockets (raw(7), ipv6(7)), and why each socket is filtered:

* Every raw socket of a protocol gets a copy of every packet of that protocol: a raw
  ``IPPROTO_TCP`` socket sees all TCP, our own SYNs looping back on ``lo`` included, and so
  does every other scanning process. A classic BPF program (``SO_ATTACH_FILTER``) keeps only
  answers to our source-port block, so worker processes never read each other's answers and
  the kernel drops the rest before queueing them, which is most of the receive cost.
* The IPv4 sender is ``IPPROTO_RAW`` (``IP_HDRINCL`` implied): it never receives anything.
  IPv6 raw sockets never take the IPv6 header, so the IPv6 sender is ``IPPROTO_TCP`` with a
  drop-everything filter.
* IPv4 raw sockets deliver the IP header; IPv6 raw sockets start at the TCP header or the
  ICMPv6 message. The filters below are written for those offsets.

Source ports. The kernel answers a SYN-ACK to a port no socket owns with a RST, so a SYN
scan ends every open port's handshake with a RST of the scanner's kernel: nmap and masscan
live with that (masscan suggests a firewall rule dropping the RSTs when it runs its own TCP
stack). What must not happen is that the kernel picks one of our ports for a connection of
its own: ``claim_source_ports`` takes a block outside ``ip_local_port_range`` and binds a
TCP socket to each port for the scan's life (no listen: the answers still meet no owner),
which also keeps a second scanner, or a second worker process, off the block.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import os
import secrets
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

from portscout.errors import PrivilegeError

IPAddress = IPv4Address | IPv6Address

SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>; not exported by the socket module
SO_RCVBUFFORCE = 33  # root may exceed net.core.rmem_max
RECEIVE_BUFFER = 1 << 26  # 64 MiB: a /16 of answers on loopback arrives faster than we read
PORT_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
LOWEST_SOURCE_PORT = 1024  # below: ports of well-known services

# Classic BPF opcodes (<linux/filter.h>, <linux/bpf_common.h>).
_LD, _LDX, _ALU, _JMP, _RET, _MISC = 0x00, 0x01, 0x04, 0x05, 0x06, 0x07
_H, _B = 0x08, 0x10
_ABS, _IND, _MSH = 0x20, 0x40, 0xA0
_JEQ, _JGT, _JGE, _JSET = 0x10, 0x20, 0x30, 0x40
_AND, _LSH, _ADD_X = 0x50, 0x60, 0x08  # ALU ops; _ADD_X is BPF_ADD | BPF_X
_TAX = _MISC | 0x00
_ACCEPT = 0xFFFF  # bytes of the packet to keep: more than any answer we parse
_INSN = struct.Struct("HBBI")


@dataclass(frozen=True, slots=True)
class Insn:
    """One classic BPF instruction; ``jt``/``jf`` are forward offsets."""

    code: int
    k: int = 0
    jt: int = 0
    jf: int = 0


def _port_range_check(sports: range) -> list[Insn]:
    """A holds a port: fall through if it is in ``sports``, else jump to the final drop.

    Every program here ends ``ret accept; ret 0``, so "jump to drop" from instruction i of
    a tail of n instructions is a fixed offset computed by ``_program``.
    """
    return [
        Insn(_JMP | _JGE, sports.start, 0, -1),  # -1: patched to the drop
        Insn(_JMP | _JGT, sports.stop - 1, -1, 0),
    ]


def _program(body: list[Insn]) -> list[Insn]:
    """``body`` + ``ret accept`` + ``ret 0``, with the -1 jump offsets aimed at ``ret 0``."""
    out = [*body, Insn(_RET, _ACCEPT), Insn(_RET, 0)]
    drop = len(out) - 1
    return [
        Insn(
            insn.code,
            insn.k,
            drop - i - 1 if insn.jt == -1 else insn.jt,
            drop - i - 1 if insn.jf == -1 else insn.jf,
        )
        for i, insn in enumerate(out)
    ]


def tcp_answer_filter(sports: range, *, ip_header: bool, ack: bool = True) -> list[Insn]:
    """Keep TCP segments to a port in ``sports`` that carry ACK (a SYN-ACK or RST-ACK can
    acknowledge our cookie; nothing else can) and are no later fragment of a datagram.
    ``ack`` False keeps them without ACK too (the RST answering an ACK ping has none).

    ``ip_header``: the packet starts with an IPv4 header (IPv4 raw sockets), else with the
    TCP header (IPv6). ``sports`` must be a non-empty range with step 1.
    """
    body: list[Insn] = []
    if ip_header:
        body += [
            Insn(_LD | _H | _ABS, 6),  # flags and fragment offset
            Insn(_JMP | _JSET, 0x1FFF, -1, 0),  # a later fragment: no TCP header here
            Insn(_LDX | _B | _MSH, 0),  # X = IP header length
        ]
    else:
        body.append(Insn(_LDX | 0x00, 0))  # X = 0 (BPF_LDX | BPF_IMM)
    body += [Insn(_LD | _H | _IND, 2), *_port_range_check(sports)]  # destination port
    if ack:
        body += [Insn(_LD | _B | _IND, 13), Insn(_JMP | _JSET, 0x10, 0, -1)]  # ACK
    return _program(body)


def icmp_type_filter(types: Sequence[int], *, version: int) -> list[Insn]:
    """Keep ICMP (IPv4, after its IP header) or ICMPv6 messages of one of ``types``: the
    echo and timestamp replies host discovery waits for, not every ICMP error."""
    if version == 4:
        body = [Insn(_LDX | _B | _MSH, 0), Insn(_LD | _B | _IND, 0)]
    else:
        body = [Insn(_LD | _B | _ABS, 0)]
    accept = len(body) + len(types)  # the index of ``ret accept``
    for j, kind in enumerate(types):
        i = len(body)
        body.append(Insn(_JMP | _JEQ, kind, accept - i - 1, 0 if j < len(types) - 1 else -1))
    return _program(body)


def icmp_answer_filter(sports: range, *, version: int) -> list[Insn]:
    """Keep ICMP destination unreachables (ICMPv6 type 1) quoting a segment from ``sports``.

    IPv4: the message follows an IP header of variable length and quotes another one, so
    the quoted source port sits at ``outer IHL + 8 + inner IHL``. IPv6 sockets start at the
    ICMPv6 header; the quoted IPv6 header is 40 bytes (our probes have no extension headers).
    """
    if version == 4:
        body = [
            Insn(_LDX | _B | _MSH, 0),
            Insn(_LD | _B | _IND, 0),  # ICMP type
            Insn(_JMP | _JEQ, 3, 0, -1),
            Insn(_LD | _B | _IND, 8),  # the quoted header's version and IHL
            Insn(_ALU | _AND, 0x0F),
            Insn(_ALU | _LSH, 2),
            Insn(_ALU | _ADD_X, 0),
            Insn(_TAX),
            Insn(_LD | _H | _IND, 8),  # the quoted source port
        ]
    else:
        body = [
            Insn(_LD | _B | _ABS, 0),
            Insn(_JMP | _JEQ, 1, 0, -1),
            Insn(_LD | _H | _ABS, 8 + 40),
        ]
    return _program([*body, *_port_range_check(sports)])


def drop_all_filter() -> list[Insn]:
    return [Insn(_RET, 0)]


def attach_filter(sock: socket.socket, program: Sequence[Insn]) -> None:
    """Attach ``program`` with ``SO_ATTACH_FILTER``, then drop what queued before it did."""
    raw = b"".join(_INSN.pack(i.code, i.jt, i.jf, i.k & 0xFFFFFFFF) for i in program)
    buffer = ctypes.create_string_buffer(raw)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    drain(sock)


def drain(sock: socket.socket) -> int:
    """Read and discard everything queued on a non-blocking socket; return the count."""
    count = 0
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while True:
            sock.recv(1)
            count += 1
    return count


def raw_socket(family: int, proto: int) -> socket.socket:
    """A non-blocking raw socket; ``PrivilegeError`` without root or CAP_NET_RAW."""
    try:
        sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_NONBLOCK, proto)
    except PermissionError as exc:
        raise PrivilegeError(
            "the syn engine needs root or CAP_NET_RAW to open raw sockets (try --engine async)"
        ) from exc
    return sock


def raw_sockets_allowed() -> bool:
    """True when this process may open raw sockets (root, or CAP_NET_RAW in its user
    namespace): trying is the only exact test, capabilities and LSMs included."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP).close()
    except OSError:  # EPERM/EACCES, or no raw IPv4 here at all (EAFNOSUPPORT)
        return False
    return True


def enlarge_receive_buffer(sock: socket.socket, size: int = RECEIVE_BUFFER) -> None:
    """``SO_RCVBUFFORCE`` as root (past ``net.core.rmem_max``), else ``SO_RCVBUF``."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


# -- batches: sendmmsg(2) and recvmmsg(2) ------------------------------------------------
#
# One system call per batch instead of one per packet: Python's socket module has neither
# call, so they go through ctypes, over buffers allocated once per socket. <sys/socket.h>:


class _IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_IoVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _MMsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint))


_MSG_STRIDE = ctypes.sizeof(_MMsgHdr)
SO_TIMESTAMPNS = 35  # asm-generic/socket.h: SCM_TIMESTAMPNS, a struct timespec
# One control message holding a struct timespec: cmsghdr (16 bytes on 64-bit Linux) + 16.
_STAMP_SPACE = socket.CMSG_SPACE(16)
_CONTROLLEN_WORD = _MsgHdr.msg_controllen.offset // 8
if _MSG_STRIDE % 8 or _MsgHdr.msg_controllen.offset % 8:
    raise ImportError("unexpected struct mmsghdr layout")
_MSG_LEN_OFFSET = _MMsgHdr.msg_len.offset
if _MSG_STRIDE % 4 or _MSG_LEN_OFFSET % 4:
    raise ImportError("struct mmsghdr is not laid out in 32-bit words here")
MSG_DONTWAIT = 0x40  # <bits/socket.h>


def _libc() -> ctypes.CDLL:
    """The C library already loaded into this process (dlopen(NULL)): no ldconfig run."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    libc.recvmmsg.argtypes = (
        ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p,
    )  # fmt: skip
    return libc


def sockaddr(address: IPAddress) -> ctypes.Array[ctypes.c_char]:
    """``struct sockaddr_in``/``sockaddr_in6`` of ``address``, port 0 (a raw socket's)."""
    if address.version == 4:
        raw = struct.pack("=H", socket.AF_INET) + bytes(2) + address.packed + bytes(8)
    else:  # flow info 0, scope 0: global addresses and ::1
        raw = struct.pack("=H", socket.AF_INET6) + bytes(6) + address.packed + bytes(4)
    return ctypes.create_string_buffer(raw, len(raw))


class SendBatch:
    """Up to ``size`` datagrams of at most ``slot`` bytes each, sent by one ``sendmmsg``.

    The caller writes packet ``i`` into ``buffer`` at ``i * slot`` (``struct.pack_into``)
    and names its destination with ``address``; ``send`` hands them to the kernel.
    ``sock`` must stay open while the batch is used.
    """

    __slots__ = ("_libc", "_msgs", "_names", "_vec", "buffer", "fd", "size", "slot")

    def __init__(self, sock: socket.socket, size: int = 64, slot: int = 64) -> None:
        self._libc = _libc()
        self.fd, self.size, self.slot = sock.fileno(), size, slot
        self.buffer = ctypes.create_string_buffer(size * slot)
        self._vec = (_IoVec * size)()
        self._msgs = (_MMsgHdr * size)()
        self._names: list[object] = [None] * size  # what each message's msg_name points to
        base = ctypes.addressof(self.buffer)
        for i in range(size):
            self._vec[i].iov_base = base + i * slot
            self._msgs[i].msg_hdr.msg_iov = ctypes.pointer(self._vec[i])
            self._msgs[i].msg_hdr.msg_iovlen = 1

    def address(
        self, start: int, stop: int, name: ctypes.Array[ctypes.c_char], length: int
    ) -> None:
        """Send messages ``start`` .. ``stop - 1`` (``length`` bytes each) to ``name`` (from
        ``sockaddr``); cheap for those that already go there, which is the common case: one
        host, one packet size."""
        names = self._names
        for i in range(start, stop):
            if names[i] is not name:
                names[i] = name
                header = self._msgs[i].msg_hdr
                header.msg_name = ctypes.addressof(name)
                header.msg_namelen = len(name)
                self._vec[i].iov_len = length

    def send(self, start: int, count: int) -> int:
        """Send messages ``start`` .. ``count - 1``; return how many left (at least one).

        Raises ``OSError`` with the errno of message ``start`` when it could not be sent:
        the kernel stops at the first failure and reports it only if nothing was sent.
        """
        sent: int = self._libc.sendmmsg(
            self.fd, ctypes.addressof(self._msgs) + start * _MSG_STRIDE, count - start, 0
        )
        if sent < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return sent


class ReceiveBatch:
    """Up to ``size`` datagrams of at most ``slot`` bytes each, read by one ``recvmmsg``
    (``MSG_DONTWAIT``): ``receive`` returns the count, datagram ``i`` is in ``buffer`` at
    ``i * slot`` and ``length(i)`` bytes long (truncated to ``slot``, as ``recv`` would).
    No source address or control data: for IPv4 raw sockets, whose packets carry both."""

    __slots__ = (
        "_control",
        "_lengths",
        "_libc",
        "_msgs",
        "_room",
        "_stamps",
        "_vec",
        "_words",
        "buffer",
        "fd",
        "size",
        "slot",
    )

    def __init__(
        self, sock: socket.socket, size: int = 64, slot: int = 256, *, stamped: bool = False
    ) -> None:
        self._libc = _libc()
        self.fd, self.size, self.slot = sock.fileno(), size, slot
        self.buffer = ctypes.create_string_buffer(size * slot)
        self._vec = (_IoVec * size)()
        self._msgs = (_MMsgHdr * size)()
        self._lengths = memoryview(self._msgs).cast("B").cast("I")  # msg_len at a stride
        # With ``stamped``: each datagram's receive time from the kernel (SO_TIMESTAMPNS),
        # one control message of _STAMP_SPACE bytes per datagram.
        self._control = ctypes.create_string_buffer(size * _STAMP_SPACE if stamped else 1)
        self._stamps = memoryview(self._control).cast("B").cast("q") if stamped else None
        self._words = memoryview(self._msgs).cast("B").cast("Q")  # msg_controllen at a stride
        self._room = array.array("Q", [_STAMP_SPACE] * size)
        if stamped:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        base = ctypes.addressof(self.buffer)
        for i in range(size):
            self._vec[i].iov_base = base + i * slot
            self._vec[i].iov_len = slot
            self._msgs[i].msg_hdr.msg_iov = ctypes.pointer(self._vec[i])
            self._msgs[i].msg_hdr.msg_iovlen = 1
            if stamped:
                self._msgs[i].msg_hdr.msg_control = ctypes.addressof(self._control) + (
                    i * _STAMP_SPACE
                )

    def receive(self) -> int:
        """Read what is queued, up to ``size`` datagrams; 0 when nothing is.

        Raises ``OSError`` on an error other than ``EAGAIN``/``EINTR``.
        """
        if self._stamps is not None:  # room for a stamp again: the kernel set what it wrote
            self._words[_CONTROLLEN_WORD :: _MSG_STRIDE // 8] = self._room
        count: int = self._libc.recvmmsg(
            self.fd, ctypes.addressof(self._msgs), self.size, MSG_DONTWAIT, None
        )
        if count < 0:
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EINTR):
                return 0
            raise OSError(code, os.strerror(code))
        return count

    def stamps(self, count: int, offset: float, fallback: float) -> list[float] | None:
        """The kernel's receive times of the first ``count`` datagrams, on the clock that
        is ``offset`` seconds behind the realtime clock (``time.time() - time.monotonic()``
        turns them monotonic); ``fallback`` for a datagram that came without one (queued
        before stamps were asked for); None without ``stamped``."""
        view = self._stamps
        if view is None or not count:
            return None
        words = _STAMP_SPACE // 8
        seconds = view[2::words][:count].tolist()  # after cmsg_len, cmsg_level/type
        nanos = view[3::words][:count].tolist()
        written = self._words[_CONTROLLEN_WORD :: _MSG_STRIDE // 8][:count].tolist()
        return [
            sec + nano * 1e-9 - offset if size else fallback
            for sec, nano, size in zip(seconds, nanos, written, strict=True)
        ]

    def lengths(self, count: int) -> list[int]:
        """The byte counts of the first ``count`` datagrams (``receive``'s return value)."""
        lengths: list[int] = self._lengths[_MSG_LEN_OFFSET // 4 :: _MSG_STRIDE // 4][
            :count
        ].tolist()
        return lengths


@dataclass(slots=True)
class RawSockets:
    """The sockets of one address family: a sender, a TCP and an ICMP receiver."""

    version: int
    send: socket.socket
    tcp: socket.socket
    icmp: socket.socket

    def close(self) -> None:
        for sock in (self.send, self.tcp, self.icmp):
            sock.close()


def open_raw_sockets(version: int, sports: range) -> RawSockets:
    """Open, filter and size the sockets of IPv4 (``version`` 4) or IPv6 (6).

    Raises ``PrivilegeError`` without the privilege, ``OSError`` if the family is missing.
    """
    opened: list[socket.socket] = []
    try:
        if version == 4:
            send = raw_socket(socket.AF_INET, socket.IPPROTO_RAW)
            opened.append(send)
            tcp = raw_socket(socket.AF_INET, socket.IPPROTO_TCP)
            opened.append(tcp)
            icmp = raw_socket(socket.AF_INET, socket.IPPROTO_ICMP)
            opened.append(icmp)
        else:
            send = raw_socket(socket.AF_INET6, socket.IPPROTO_TCP)
            opened.append(send)
            attach_filter(send, drop_all_filter())
            tcp = raw_socket(socket.AF_INET6, socket.IPPROTO_TCP)
            opened.append(tcp)
            icmp = raw_socket(socket.AF_INET6, socket.IPPROTO_ICMPV6)
            opened.append(icmp)
            for sock in (tcp, icmp):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        attach_filter(tcp, tcp_answer_filter(sports, ip_header=version == 4))
        attach_filter(icmp, icmp_answer_filter(sports, version=version))
        enlarge_receive_buffer(tcp)
        enlarge_receive_buffer(icmp, 1 << 22)
    except BaseException:
        for sock in opened:
            sock.close()
        raise
    return RawSockets(version, send, tcp, icmp)


def source_address(dst: IPAddress) -> IPAddress:
    """The address the routing table gives this host for talking to ``dst``.

    A UDP ``connect()`` only looks up the route and binds a source address: no packet is
    sent. Raises ``OSError`` (``ENETUNREACH``, ``EHOSTUNREACH``...) when there is no route.
    """
    family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((str(dst), 9))
        return ip_address(probe.getsockname()[0].split("%")[0])


def ephemeral_port_range(path: str = PORT_RANGE_FILE) -> range:
    """The ports the kernel picks from for connections without an explicit bind."""
    try:
        with open(path) as file:
            low, high = (int(word) for word in file.read().split())
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default
    return range(low, high + 1)


def _candidate_blocks(size: int, avoid: range) -> Iterator[int]:
    """Block starts above ``avoid``, then below it, then (no room left) inside it; each
    range from a random block on (wrapping round), so that a stranger cannot guess where
    our answers arrive and flood that block: the cookie check stops forged answers, but
    each still costs the receiver a hash."""
    for blocks in (
        range(max(avoid.stop, LOWEST_SOURCE_PORT), 65536 - size + 1, size),
        range(avoid.start - size, LOWEST_SOURCE_PORT - 1, -size),
        range(avoid.start, avoid.stop - size + 1, size),
    ):
        if blocks:
            first = secrets.randbelow(len(blocks))
            yield from blocks[first:]
            yield from blocks[:first]


@dataclass(slots=True)
class PortClaim:
    """A block of source ports held by bound (never listening) TCP sockets."""

    ports: range
    holders: list[socket.socket] = field(default_factory=list)

    def release(self) -> None:
        for sock in self.holders:
            sock.close()
        self.holders.clear()


def _bind_holder(port: int) -> socket.socket:
    """A TCP socket bound to ``port`` on every address of both families where possible."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address: tuple[str, int] = ("0.0.0.0", port)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        address = ("::", port)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def claim_source_ports(size: int, avoid: range | None = None) -> PortClaim:
    """Bind ``size`` consecutive ports, outside ``avoid`` (the ephemeral range) if possible.

    Binding is the lock: two scanners or worker processes never get the same block, and
    the kernel does not hand a bound port to its own connections. Raises ``OSError``
    (``EADDRINUSE``) when no block of that size is free.
    """
    avoid = ephemeral_port_range() if avoid is None else avoid
    for start in _candidate_blocks(size, avoid):
        holders: list[socket.socket] = []
        try:
            holders.extend(_bind_holder(port) for port in range(start, start + size))
        except OSError as exc:
            for sock in holders:
                sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        return PortClaim(range(start, start + size), holders)
    raise OSError(errno.EADDRINUSE, f"no block of {size} free source ports")
