"""The lab's pure parts, no namespace needed: host validation, ground truth, rules, delay line."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from portscout.lab import Host, Link, ListenerMode, Reject
from portscout.lab.delayline import DelayLine
from portscout.lab.nftables import ruleset

ADDRESS = IPv4Address("198.18.1.5")


def _ipv4(dst: IPv4Address) -> bytes:
    return bytes([0x45]) + bytes(11) + IPv4Address("198.18.0.1").packed + dst.packed


def test_host_rejects_addresses_outside_the_lab() -> None:
    with pytest.raises(ValueError, match=r"invalid lab host 10\.0\.0\.1"):
        Host(address=IPv4Address("10.0.0.1"))


def test_host_rejects_a_port_with_two_behaviours() -> None:
    with pytest.raises(ValueError, match=r"port 22 of 198\.18\.1\.5"):
        Host(address=ADDRESS, open={22: ListenerMode.ACCEPT}, drop=frozenset({22}))


def test_down_host_has_no_rules() -> None:
    with pytest.raises(ValueError, match="down"):
        Host(address=ADDRESS, up=False, drop=frozenset({1}))


@pytest.mark.parametrize(("rtt", "jitter", "loss"), [(-0.1, 0, 0), (0, -1, 0), (0, 0, 1.0)])
def test_link_validation(rtt: float, jitter: float, loss: float) -> None:
    with pytest.raises(ValueError, match="invalid"):
        Link(rtt=rtt, jitter=jitter, loss=loss)


def test_expected_states() -> None:
    host = Host(
        address=ADDRESS,
        open={80: ListenerMode.BANNER},
        drop=frozenset({23}),
        reject={24: Reject.PORT_UNREACHABLE, 26: Reject.TCP_RESET},
    )
    assert host.expected(80) == ("open", "syn-ack")
    assert host.expected(23) == ("filtered", "no-response")
    assert host.expected(24) == ("filtered", "port-unreach")
    assert host.expected(26) == ("closed", "reset")
    assert host.expected(27) == ("closed", "reset")
    assert Host(address=ADDRESS, up=False).expected(80) == ("filtered", "no-response")


def test_ruleset_keys_every_rule_by_address() -> None:
    hosts = [
        Host(address=ADDRESS, drop=frozenset({23}), reject={25: Reject.ADMIN_PROHIBITED}),
        Host(address=IPv4Address("198.18.1.6"), up=False),
    ]
    text = ruleset(hosts, tun="pslab9", rst_rate=50)
    assert "elements = { 198.18.1.5 }" in text  # only up hosts answer
    assert "198.18.1.5 . 23" in text
    assert (
        "ip daddr . tcp dport @reject_admin_prohibited reject with icmp type admin-prohibited"
        in text
    )
    assert 'iifname "pslab9" ip daddr != @up_hosts drop' in text
    assert "limit rate over 50/second burst 5 packets" in text
    assert "limit rate" not in ruleset(hosts, tun="pslab9")


def test_ruleset_appends_input_rules_to_the_input_chain() -> None:
    rule = "ip daddr 198.18.1.5 icmp type echo-request drop"
    text = ruleset([Host(address=ADDRESS)], tun="t", input_rules=[rule])
    input_chain = text.split("chain input {")[1].split("}")[0]
    assert input_chain.rstrip().endswith(rule)


def test_ruleset_puts_the_syn_proxy_before_only_its_hosts() -> None:
    proxied = Host(address=IPv4Address("198.18.1.8"), synproxy=True)
    text = ruleset([Host(address=ADDRESS), proxied], tun="pslab9")
    assert "set synproxy_hosts {\n    type ipv4_addr\n    elements = { 198.18.1.8 }" in text
    assert 'iifname "pslab9" ip daddr @synproxy_hosts tcp flags syn notrack' in text
    assert (
        "ip daddr @synproxy_hosts ct state invalid,untracked synproxy mss 1460 wscale 7"
        " timestamp sack-perm" in text
    )
    plain = ruleset([Host(address=ADDRESS)], tun="t")
    assert "set synproxy_hosts {\n    type ipv4_addr\n  }" in plain  # empty: proxies nobody


def test_delay_line_delays_and_drops_per_host() -> None:
    far = IPv4Address("198.18.1.7")
    line = DelayLine(
        default=(0.01, 0.0, 0.0), links={far.packed: (0.1, 0.0, 0.5)}, seed=1, queue_limit=10
    )
    assert line.admit(0, _ipv4(ADDRESS), now=5.0) == pytest.approx(5.01)
    releases = [line.admit(0, _ipv4(far), now=0.0) for _ in range(2000)]
    kept = [r for r in releases if r is not None]
    assert set(kept) == {0.1}
    assert 900 <= len(kept) <= 1100
    assert line.stats[0].lost == 2000 - len(kept)
    assert line.admit(0, b"\x60" + bytes(39), now=0.0) is None  # IPv6: dropped, counted
    assert line.stats[0].non_ipv4 == 1


def test_jitter_stays_within_bounds() -> None:
    line = DelayLine(default=(0.04, 0.01, 0.0), links={}, seed=2, queue_limit=10)
    delays = [line.admit(1, _ipv4(ADDRESS), now=0.0) for _ in range(1000)]
    assert all(d is not None and 0.03 <= d <= 0.05 for d in delays)
