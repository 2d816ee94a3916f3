"""``Lab``: lab hosts behind a delay line, reachable from the calling process's namespace.

Topology (the scanner is whatever namespace the caller is in, checked to be private)::

    scanner netns                 delay line process              target netns (anonymous)
    198.18.0.1/32 on pslabN  <-- TUN fd A ... heap ... TUN fd B -->  pslabM, routes to scanner
    routes: lab hosts -> pslabN                                      up hosts: /32 on lo
                                                                     nftables: drop, reject,
                                                                     RST limit; listeners

All hosts of a lab share one target namespace, one address each on ``lo``: making 256
namespaces would take seconds, and one namespace with per-address rules behaves the same
from outside (each host has its own listeners, filter sets and RST bucket; they share one
TCP stack, so kernel-wide limits such as the SYN backlog are shared). A down host's address
is routed to the lab but not assigned, and prerouting drops its packets: it never answers,
not even with ICMP host unreachable (there is no ARP on a TUN to time out).

The kernel's ICMP rate limit in the target is off by default (``icmp_ratelimit_ms=0``), so
every reject answers; pass 1000 to behave as a stock Linux host.

Teardown: ``close()`` (the context exit, also registered with ``atexit``) stops the delay
line and the target process; their TUNs, routes, rules and the namespace go with them. Both
children also stop by themselves on end of stdin, after ``max_seconds`` or when the parent
dies. Nothing gets a name in /run/netns.

Imports only the standard library and ``portscout.lab``.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, collapse_addresses
from types import TracebackType
from typing import Any, Self

from portscout.lab.delayline import DirectionStats
from portscout.lab.hosts import DEFAULT_SCANNER, LAB_NETWORK, Host, Link
from portscout.lab.netns import check_isolated
from portscout.lab.nftables import ruleset
from portscout.lab.process import Child
from portscout.lab.tun import open_tun

NO_DELAY = Link()
STARTUP_TIMEOUT = 30.0  # s: a target with 10,000 listeners and rules takes a few seconds


class LabError(RuntimeError):
    """The lab could not be built or has broken (a child process died, a command failed)."""


@dataclass(frozen=True, slots=True)
class DelayLineStats:
    """Counters of the delay line: ``outbound`` is scanner to hosts, ``inbound`` the answers."""

    outbound: DirectionStats
    inbound: DirectionStats
    queued: int
    elapsed: float  # s since the delay line started
    stop: str | None  # why it stopped, None while running

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> DelayLineStats:
        out, back = (DirectionStats(**d) for d in message["directions"])
        return cls(out, back, message["queued"], message["elapsed"], message["stop"])

    def saturated(self) -> bool:
        """True when the delay line itself dropped packets: it, not the scanner, was measured."""
        return any(d.queue_drops or d.write_errors for d in (self.outbound, self.inbound))


def interfaces() -> set[str]:
    """Interface names in this process's namespace (/sys/class/net shows sysfs's, not ours)."""
    with open("/proc/self/net/dev") as table:
        return {line.split(":", 1)[0].strip() for line in list(table)[2:]}


def _run_ip(commands: Sequence[str]) -> None:
    result = subprocess.run(
        ["ip", "-batch", "-"], input="\n".join(commands) + "\n", text=True, capture_output=True
    )
    if result.returncode != 0:
        hint = " (another lab with the same addresses?)" if "File exists" in result.stderr else ""
        raise LabError(f"ip failed{hint}: {' '.join(result.stderr.split())}")


class Lab:
    """Lab hosts, a delay line and the scanner-side routes, as a context manager.

    ``link`` is the default path to every host (a host's own ``link`` wins); ``rst_rate``
    limits each host's outgoing RSTs per second (None: unlimited). ``seed`` fixes the loss
    and jitter draws (their order still depends on packet arrival). ``input_rules`` are
    nftables statements added to the target's input chain (see ``nftables.ruleset``), for
    behaviour no ``Host`` field describes. Raises ``NamespaceError``
    when called from the machine's namespace or one with a default route, ``LabError`` when
    building fails (everything made so far is torn down first).
    """

    def __init__(
        self,
        hosts: Sequence[Host],
        *,
        link: Link = NO_DELAY,
        rst_rate: int | None = None,
        rst_burst: int = 5,
        scanner: IPv4Address = DEFAULT_SCANNER,
        seed: int = 0,
        icmp_ratelimit_ms: int = 0,
        queue_limit: int = 100_000,
        max_seconds: float = 600.0,
        max_packets: int = 50_000_000,
        input_rules: Sequence[str] = (),
    ) -> None:
        addresses = [h.address for h in hosts]
        if len(set(addresses)) != len(addresses):
            raise ValueError("invalid lab: a host address appears twice")
        if scanner in addresses or scanner not in LAB_NETWORK:
            raise ValueError(f"invalid scanner address {scanner}: want a free one in {LAB_NETWORK}")
        self.hosts = tuple(hosts)
        self.link = link
        self.rst_rate, self.rst_burst = rst_rate, rst_burst
        self.scanner = scanner
        self.seed = seed
        self.icmp_ratelimit_ms = icmp_ratelimit_ms
        self.queue_limit = queue_limit
        self.max_seconds, self.max_packets = max_seconds, max_packets
        self.input_rules = tuple(input_rules)
        self.scanner_tun: str | None = None
        self.target_tun: str | None = None
        self._target: Child | None = None
        self._delay: Child | None = None
        self._fds: list[int] = []

    # -- ground truth -------------------------------------------------------------------

    def host(self, address: IPv4Address) -> Host:
        for host in self.hosts:
            if host.address == address:
                return host
        raise KeyError(address)

    def expected_open(self) -> dict[IPv4Address, frozenset[int]]:
        """Open ports of every up host (down hosts are absent)."""
        return {h.address: h.expected_open() for h in self.hosts if h.up}

    def expected(self, address: IPv4Address, port: int) -> tuple[str, str]:
        """(state, reason) nmap should report for ``address:port``; see ``Host.expected``."""
        return self.host(address).expected(port)

    def routes(self) -> list[IPv4Network]:
        """The scanner-side routes into the lab: every host address, up or down, collapsed."""
        return list(collapse_addresses(IPv4Network(h.address) for h in self.hosts))

    # -- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> Self:
        check_isolated()
        atexit.register(self._kill)
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> None:
        fd_a, self.scanner_tun = open_tun()
        self._fds.append(fd_a)
        fd_b, self.target_tun = open_tun()
        self._fds.append(fd_b)
        self._wire_scanner_side()
        self._target = Child("portscout.lab.target", ["--max-seconds", str(self.max_seconds)])
        pid = self._target.receive(STARTUP_TIMEOUT)["netns"]
        _run_ip([f"link set {self.target_tun} netns {pid}"])
        self._target.send(self._target_config())
        self._target.receive(STARTUP_TIMEOUT)
        self._delay = Child(
            "portscout.lab.delayline",
            [
                *("--fd-a", str(fd_a), "--fd-b", str(fd_b)),
                *("--max-seconds", str(self.max_seconds), "--max-packets", str(self.max_packets)),
            ],
            pass_fds=self._fds,
        )
        self._delay.send(self._delay_config())
        self._delay.receive(STARTUP_TIMEOUT)
        self._close_fds()  # from now on the delay line alone keeps both TUNs alive

    def _wire_scanner_side(self) -> None:
        tun = self.scanner_tun
        if os.path.exists(f"/proc/sys/net/ipv6/conf/{tun}"):
            with open(f"/proc/sys/net/ipv6/conf/{tun}/disable_ipv6", "w") as knob:
                knob.write("1")
        commands = [f"link set {tun} txqueuelen 10000 up", f"addr add {self.scanner}/32 dev {tun}"]
        commands += [f"route add {net} dev {tun} src {self.scanner}" for net in self.routes()]
        _run_ip(commands)

    def _target_config(self) -> dict[str, Any]:
        assert self.target_tun is not None
        sysctls = {"net/core/somaxconn": "65535", "net/ipv4/tcp_max_syn_backlog": "65535"}
        if any(h.synproxy for h in self.hosts):  # synproxy needs strict conntrack, cookies
            sysctls["net/netfilter/nf_conntrack_tcp_loose"] = "0"
            sysctls["net/ipv4/tcp_syncookies"] = "1"
        if self.icmp_ratelimit_ms:
            sysctls["net/ipv4/icmp_ratelimit"] = str(self.icmp_ratelimit_ms)
        else:
            sysctls["net/ipv4/icmp_ratemask"] = "0"
        listeners = [
            [str(h.address), port, mode.value, h.banner.decode("latin-1")]
            for h in self.hosts
            if h.up
            for port, mode in sorted(h.open.items())
        ]
        return {
            "tun": self.target_tun,
            "scanner": str(self.scanner),
            "sysctls": sysctls,
            "up": [str(h.address) for h in self.hosts if h.up],
            "ruleset": ruleset(
                self.hosts,
                tun=self.target_tun,
                rst_rate=self.rst_rate,
                rst_burst=self.rst_burst,
                input_rules=self.input_rules,
            ),
            "listeners": listeners,
        }

    def _delay_config(self) -> dict[str, Any]:
        links = {str(h.address): h.link.one_way() for h in self.hosts if h.link is not None}
        return {
            "default": self.link.one_way(),
            "links": links,
            "seed": self.seed,
            "queue_limit": self.queue_limit,
        }

    def delay_line_stats(self) -> DelayLineStats:
        """Counters now, or the final ones once the lab is closed."""
        if self._delay is None:
            raise LabError("the lab has no delay line (not entered)")
        if self._delay.final is not None:
            return DelayLineStats.from_message(self._delay.final)
        return DelayLineStats.from_message(self._delay.request({"cmd": "stats"}, 5.0))

    def listener_stats(self) -> dict[str, Any]:
        """Connections accepted per listener mode, and how many are held open."""
        if self._target is None:
            raise LabError("the lab has no target (not entered)")
        return self._target.request({"cmd": "stats"}, 5.0)

    def pids(self) -> list[int]:
        return [c.pid for c in (self._delay, self._target) if c is not None]

    def close(self) -> None:
        """Stop both children (delay line first), release the TUNs. Safe to call twice."""
        try:
            for child in (self._delay, self._target):
                if child is not None:
                    child.stop()
        finally:
            self._close_fds()
            atexit.unregister(self._kill)
        self._wait_gone()

    def _wait_gone(self) -> None:
        # Devices go once the last fd closes; the kernel does it asynchronously.
        deadline = time.monotonic() + 3.0
        while self.scanner_tun and self.scanner_tun in interfaces():
            if time.monotonic() > deadline:
                raise LabError(f"{self.scanner_tun} still exists after the lab closed")
            time.sleep(0.01)

    def _close_fds(self) -> None:
        while self._fds:
            os.close(self._fds.pop())

    def _kill(self) -> None:
        for child in (self._delay, self._target):
            if child is not None:
                child.kill()
        self._close_fds()
