"""Scan accuracy against the lab's ground truth, every engine: what "exact" means under loss.

Lab hosts at 0.5 ms, 80 ms and 200 ms round trips, each at 1% and at 5% loss (per packet and
direction), with open, closed, dropped and rejected ports drawn from a seed, and a down host;
then hosts whose RSTs are rate limited. Each engine scans through the library API and every
(host, port) is compared with ``Lab.expected``.

What the truth is under loss and rate limits:

* Loss is not a state. With ``MAX_RETRIES`` retransmissions a port that answers stays
  silent through every try with probability ``(1 - (1 - loss) ** 2) ** (MAX_RETRIES + 1)``,
  below 1e-7 per port at 5% loss: across these labs (~2,000 answering ports) a port found
  filtered that should answer is a scanner fault, not bad luck. So every open port must be
  found, and every closed port called closed, exactly.
* An RST rate limit is not a state either. A closed port whose RST the host drops looks
  filtered only to a scanner that keeps sending faster than the host answers; a scanner
  can notice the drops (answers to retransmissions) and slow down, as nmap does, so
  rate-limited closed ports must come out closed.
* A down host's ports are filtered; a scan that first discovers hosts may instead leave
  the host out, which is as right. An up host left out fails (its ports have no result).
* A connect scan sees ICMP through ``connect()``'s errno (Linux ``icmp_err_convert``):
  port unreachable becomes ECONNREFUSED, the same errno as a RST, so for the ``async``
  engine that rejection is legitimately closed (nmap -sT says so too), while the other
  codes give EHOSTUNREACH/ENETUNREACH: filtered. The SYN engine sees the ICMP itself and
  must say filtered with nmap's reason. Reasons are checked for the SYN engine only.

Runs in the session's private namespace; each lab is built inside it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest

import portscout
from portscout.lab import Host, Lab, Link, ListenerMode, Reject
from portscout.results import Result

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("isolated")]

ENGINES = ("async", "syn")
SEEDS = (1, 2, 3)
TIMEOUT = 1.0  # s: the ceiling of a probe's timeout, 5x the slowest round trip
MAX_RETRIES = 6  # nmap -T4's: see the module docstring for why this is enough
PORTS = range(2000, 2100)  # 100 ports per host
RTTS = (0.0005, 0.080, 0.200)  # s
LOSSES = (0.01, 0.05)
REJECTS = (
    Reject.PORT_UNREACHABLE,
    Reject.ADMIN_PROHIBITED,
    Reject.HOST_UNREACHABLE,
    Reject.HOST_PROHIBITED,
    Reject.TCP_RESET,  # a firewall forging RSTs: closed, whoever scans
)
# Rejections connect() reports as ECONNREFUSED (Linux icmp_err_convert: only code 3; the
# prohibited codes give EHOSTUNREACH/ENETUNREACH): a connect scan cannot tell it from a RST.
CONNECT_REFUSED = frozenset({Reject.PORT_UNREACHABLE})

RST_RATE, RST_BURST = 50, 5  # per host, as in benchmark scenario (b)
RST_PORTS = range(3000, 3200)  # 200 ports per host, ~170 closed: 3.4 s of RSTs at 50/s


def mixed_host(address: IPv4Address, rng: random.Random, ports: range, link: Link) -> Host:
    """10 open ports (every listener mode), 25 dropped, 10 rejected, the rest closed."""
    chosen = rng.sample(ports, 45)
    modes = list(ListenerMode)
    return Host(
        address=address,
        open={p: modes[i % len(modes)] for i, p in enumerate(chosen[:10])},
        drop=frozenset(chosen[10:35]),
        reject={p: REJECTS[i % len(REJECTS)] for i, p in enumerate(chosen[35:])},
        link=link,
    )


def mixed_lab(seed: int) -> Lab:
    """One host per (round trip, loss) pair, plus a down host; all on 198.18.40.0/24."""
    rng = random.Random(seed)
    hosts = [
        mixed_host(IPv4Address(f"198.18.40.{10 + i}"), rng, PORTS, Link(rtt=rtt, loss=loss))
        for i, (rtt, loss) in enumerate((r, p) for r in RTTS for p in LOSSES)
    ]
    hosts.append(Host(address=IPv4Address("198.18.40.99"), up=False, link=Link(rtt=0.080)))
    return Lab(hosts, seed=seed, max_seconds=120)


def rst_limited_lab(seed: int) -> Lab:
    """Two hosts, 40 ms and 1% loss, each sending at most 50 RSTs/s: mostly closed ports."""
    rng = random.Random(seed)
    hosts = []
    for i in range(2):
        chosen = rng.sample(RST_PORTS, 30)
        hosts.append(
            Host(
                address=IPv4Address(f"198.18.41.{10 + i}"),
                open=dict.fromkeys(chosen[:10], ListenerMode.ACCEPT),
                drop=frozenset(chosen[10:20]),
                reject=dict.fromkeys(chosen[20:], Reject.ADMIN_PROHIBITED),
            )
        )
    return Lab(
        hosts,
        link=Link(rtt=0.040, loss=0.01),
        rst_rate=RST_RATE,
        rst_burst=RST_BURST,
        seed=seed,
        max_seconds=120,
    )


def truth(lab: Lab, engine: str, address: IPv4Address, port: int) -> tuple[str, str | None]:
    """(state, reason) the engine must report; reason None where connect() cannot know it."""
    state, reason = lab.expected(address, port)
    if engine == "syn":
        return state, reason
    if lab.host(address).reject.get(port) in CONNECT_REFUSED:
        return "closed", None
    return state, None


def scan(lab: Lab, engine: str, ports: range, seed: int) -> list[Result]:
    targets = [str(h.address) for h in lab.hosts]
    return list(
        portscout.iscan(
            targets, list(ports), engine=engine, timeout=TIMEOUT, max_retries=MAX_RETRIES, key=seed
        )
    )


def mismatches(lab: Lab, engine: str, ports: range, results: list[Result]) -> list[str]:
    """Every way the results differ from the truth, one readable line each."""
    seen: dict[tuple[IPv4Address, int], Result] = {}
    problems = []
    for r in results:
        assert isinstance(r.host, IPv4Address)
        if (r.host, r.port) in seen:
            problems.append(f"{r.host}:{r.port} reported twice")
        seen[r.host, r.port] = r
    for host in lab.hosts:
        link = host.link or lab.link
        where = f"rtt {link.rtt * 1000:g} ms, loss {link.loss:.0%}" + ("" if host.up else ", down")
        for port in ports:
            want_state, want_reason = truth(lab, engine, host.address, port)
            got = seen.get((host.address, port))
            if got is None and not host.up:
                continue  # host discovery may leave a down host out: it has no port to find
            if got is None:
                problems.append(f"{host.address}:{port} ({where}): no result")
            elif got.state != want_state or want_reason not in (None, got.reason):
                want = want_state + (f"/{want_reason}" if want_reason else "")
                problems.append(
                    f"{host.address}:{port} ({where}): got {got.state}/{got.reason} after "
                    f"{got.tries} tries, want {want}"
                )
    return problems


def report(problems: list[str], limit: int = 25) -> str:
    shown = "\n".join(problems[:limit])
    more = f"\n... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{len(problems)} ports wrong:\n{shown}{more}"


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"seed{s}")
def mixed(request: pytest.FixtureRequest) -> Iterator[tuple[Lab, int]]:
    seed: int = request.param
    with mixed_lab(seed) as lab:
        yield lab, seed


@pytest.mark.timeout(60)
@pytest.mark.parametrize("engine", ENGINES)
def test_every_port_right_under_delay_and_loss(mixed: tuple[Lab, int], engine: str) -> None:
    lab, seed = mixed
    results = scan(lab, engine, PORTS, seed)
    stats = lab.delay_line_stats()
    assert not stats.saturated(), f"the delay line dropped packets: {stats}"
    problems = mismatches(lab, engine, PORTS, results)
    assert not problems, report(problems)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("engine", ENGINES)
def test_rate_limited_resets_stay_closed(engine: str) -> None:
    with rst_limited_lab(seed=7) as lab:
        results = scan(lab, engine, RST_PORTS, seed=7)
        stats = lab.delay_line_stats()
    assert not stats.saturated(), f"the delay line dropped packets: {stats}"
    problems = mismatches(lab, engine, RST_PORTS, results)
    assert not problems, report(problems)


def many_rst_limited_hosts(seed: int) -> Lab:
    """24 hosts at 40 ms, each with 5 of 100 ports open, the rest closed, 50 RSTs/s each:
    benchmark (b)'s shape. Scanned all at once, their windows open wide before the first
    drop shows, which is where a scanner turns closed ports into filtered ones."""
    rng = random.Random(seed)
    hosts = [
        Host(
            address=IPv4Address(f"198.18.43.{10 + i}"),
            open=dict.fromkeys(rng.sample(PORTS, 5), ListenerMode.ACCEPT),
        )
        for i in range(24)
    ]
    return Lab(
        hosts,
        link=Link(rtt=0.040),
        rst_rate=RST_RATE,
        rst_burst=RST_BURST,
        seed=seed,
        max_seconds=120,
    )


@pytest.mark.timeout(90)
@pytest.mark.parametrize("engine", ENGINES)
def test_many_rate_limited_hosts_at_default_timing(engine: str) -> None:
    """As a user runs it: default timing and retries, host discovery first."""
    with many_rst_limited_hosts(seed=11) as lab:
        targets = [str(h.address) for h in lab.hosts]
        results = list(portscout.iscan(targets, list(PORTS), engine=engine, key=11))
        stats = lab.delay_line_stats()
    assert not stats.saturated(), f"the delay line dropped packets: {stats}"
    problems = mismatches(lab, engine, PORTS, results)
    assert not problems, report(problems)
