"""The nftables ruleset of a target namespace, as text for ``nft -f -``: pure, no I/O.

All lab hosts of a lab share one target namespace (one address each on its ``lo``), so every
rule is keyed by address: sets of ``address . port`` say which ports to drop or reject, one
set per rejection kind, which scales to 10,000 ports x 256 hosts in one ``nft`` run.

- prerouting (priority raw): packets from the delay line to an address that is not an up
  host are dropped, so a down host is silent (no ICMP host unreachable, no RST).
- SYN proxy (hosts with ``synproxy``): their SYNs skip conntrack in prerouting, and the
  input chain's ``synproxy`` answers each with a cookie SYN-ACK (any port), completing the
  connection to the host only after a valid ACK (kernel nf_synproxy).
- input: drop, then reject, per ``address . port``.
- output: when ``rst_rate`` is set, RSTs leaving each host address are limited to
  ``rst_rate``/s (burst ``rst_burst``) by a dynamic set keyed by source address, so each
  host has its own bucket as real hosts do; RSTs over the limit are dropped. Only the
  kernel's own RSTs (closed ports) pass through here; ``reject with tcp reset`` does too.

Imports only the standard library and ``portscout.lab.hosts``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from portscout.lab.hosts import Host, Reject

TABLE = "portscout_lab"


def _set(name: str, kind: str, elements: Iterable[str]) -> list[str]:
    items = list(elements)
    lines = [f"  set {name} {{", f"    type {kind}"]
    if items:
        lines.append("    elements = { " + ", ".join(items) + " }")
    lines.append("  }")
    return lines


def _reject_set(kind: Reject) -> str:
    return "reject_" + kind.value.replace("-", "_")


def _reject_statement(kind: Reject) -> str:
    if kind is Reject.TCP_RESET:
        return "reject with tcp reset"
    return f"reject with icmp type {kind.value}"


def ruleset(
    hosts: Sequence[Host],
    *,
    tun: str,
    rst_rate: int | None = None,
    rst_burst: int = 5,
    input_rules: Sequence[str] = (),
) -> str:
    """The whole table: ``tun`` is the target side of the delay line. ``input_rules`` are
    nftables statements appended to the input chain as they are (a host that drops ICMP
    echo requests, say: ``ip daddr 198.18.7.20 icmp type echo-request drop``)."""
    if rst_rate is not None and not (rst_rate > 0 and rst_burst > 0):
        raise ValueError(f"invalid RST limit {rst_rate}/s burst {rst_burst}: want both > 0")
    up = [h for h in hosts if h.up]
    kinds = sorted({kind for h in up for kind in h.reject.values()})
    lines = [f"table ip {TABLE} {{"]
    lines += _set("up_hosts", "ipv4_addr", (str(h.address) for h in up))
    lines += _set("synproxy_hosts", "ipv4_addr", (str(h.address) for h in up if h.synproxy))
    port_set = "ipv4_addr . inet_service"
    lines += _set(
        "drop_ports", port_set, (f"{h.address} . {p}" for h in up for p in sorted(h.drop))
    )
    for kind in kinds:
        elements = (
            f"{h.address} . {p}" for h in up for p, k in sorted(h.reject.items()) if k == kind
        )
        lines += _set(_reject_set(kind), port_set, elements)
    lines += [
        "  set rst_limit { type ipv4_addr; size 65535; flags dynamic,timeout; timeout 60s; }",
        "  chain prerouting {",
        "    type filter hook prerouting priority raw; policy accept;",
        f'    iifname "{tun}" ip daddr != @up_hosts drop',
        f'    iifname "{tun}" ip daddr @synproxy_hosts tcp flags syn notrack',
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        "    ip daddr @synproxy_hosts ct state invalid,untracked"
        " synproxy mss 1460 wscale 7 timestamp sack-perm",
        "    ip daddr @synproxy_hosts ct state invalid drop",
        "    ip daddr . tcp dport @drop_ports drop",
    ]
    lines += [f"    ip daddr . tcp dport @{_reject_set(k)} {_reject_statement(k)}" for k in kinds]
    lines += [f"    {rule}" for rule in input_rules]
    lines += [
        "  }",
        "  chain output {",
        "    type filter hook output priority filter; policy accept;",
    ]
    if rst_rate is not None:
        lines.append(
            "    tcp flags & rst == rst update @rst_limit "
            f"{{ ip saddr limit rate over {rst_rate}/second burst {rst_burst} packets }} drop"
        )
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"
