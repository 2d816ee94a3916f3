"""Sentences about one bench run, each written only when the figures bear it out.

Pure: figures in, text out (no clock, no I/O). The claims are the threads study's and this
project's lessons, each conditioned on the measurement that would show it: who was fastest
where; threads against sequential on loopback (no waiting to overlap) and behind a round
trip (waiting to overlap, the GIL released in connect()); the cost of a thread per port;
where the pool stops helping; the GIL as CPU time at most about one core; processes and raw
SYNs past it. A sentence whose condition fails is replaced by the one the figures show.
"""

from __future__ import annotations

from collections.abc import Sequence

from portscout.bench.measure import Figures

ByStrategy = dict[str, Figures]
CLOSE = 1.10  # within 10%: "about the same", the noise of one run on a shared machine


def by_place(figures: Sequence[Figures]) -> dict[str, ByStrategy]:
    """Successful runs per place, then per strategy, in the order measured."""
    places: dict[str, ByStrategy] = {}
    for f in figures:
        if f.error is None and f.wall > 0:
            places.setdefault(f.place, {})[f.strategy] = f
    return places


def fastest(runs: ByStrategy) -> Figures:
    """The fastest exact run (the fastest of all if none was exact)."""
    exact = [f for f in runs.values() if f.exact] or list(runs.values())
    return min(exact, key=lambda f: f.wall)


def explain(figures: Sequence[Figures], cores: int) -> list[str]:
    """The explanation, one sentence (or two) per line."""
    places = by_place(figures)
    lines = [winner_line(name, runs) for name, runs in places.items()]
    loop = places.get("loopback")
    if loop:
        lines += [
            line
            for line in (
                contention_line(loop),
                loopback_threads_line(loop),
                thread_per_port_line(loop),
                gil_line(loop, cores),
                processes_line(loop, cores),
                syn_line(loop),
            )
            if line
        ]
    for name, runs in places.items():
        if name != "loopback":
            lines += [line for line in (waiting_line(runs), pool_line(runs)) if line]
    loop_pool = pool_line(loop) if loop else None
    lines += [loop_pool] if loop_pool else []
    lagged = delay_line_line(figures)
    lines += [lagged] if lagged else []
    far = [runs for name, runs in places.items() if name != "loopback"]
    line = waiting_gil_line(far[-1]) if far else None
    return [*lines, line] if line else lines


def s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 0.1 else f"{seconds * 1000:.0f} ms"


def winner_line(place: str, runs: ByStrategy) -> str:
    best = fastest(runs)
    slowest = max(runs.values(), key=lambda f: f.wall)
    where = "On loopback" if best.rtt_ms is None else f"At a {best.rtt_ms} ms round trip"
    return (
        f"{where} ({best.ports:,} ports) the fastest was {best.strategy} ({s(best.wall)}); "
        f"the slowest {slowest.strategy} ({s(slowest.wall)}, {slowest.wall / best.wall:.0f}x)."
    )


def best_pool(runs: ByStrategy) -> Figures | None:
    pools = [f for f in runs.values() if f.strategy.startswith("threadpool")]
    return min(pools, key=lambda f: f.wall) if pools else None


def contention_line(runs: ByStrategy) -> str | None:
    """Sequential on loopback never waits for the network: if it kept less than a core
    busy, it waited for a CPU, and every wall time here is partly the machine's load."""
    seq = runs.get("sequential")
    if seq is None or seq.cores >= 0.7:
        return None
    return (
        f"Sequential kept only {seq.cores:.2f} cores busy on loopback, where nothing waits "
        "for the network: it waited for a CPU that other work held, so these wall times "
        "measure the share of the machine each strategy got as well as the strategy (more "
        "threads or processes get a larger share); compare CPU times too, or rerun when "
        "the machine is quiet."
    )


def loopback_threads_line(runs: ByStrategy) -> str | None:
    seq, pool = runs.get("sequential"), best_pool(runs)
    if seq is None or pool is None:
        return None
    per_probe = seq.wall / seq.ports * 1e6
    if seq.wall <= pool.wall:
        return (
            f"Threads did not pay on loopback: sequential took {s(seq.wall)}, the best pool "
            f"({pool.strategy}) {s(pool.wall)}. A connect() to 127.0.0.1 is answered inside "
            f"the kernel ({per_probe:.0f} us a probe here, sequentially), so there is no "
            f"waiting to overlap; the threads only add GIL hand-offs and context switches "
            f"({pool.cpu:.2f} s of CPU against {seq.cpu:.2f} s)."
        )
    return (
        f"On loopback {pool.strategy} beat sequential ({s(pool.wall)} against {s(seq.wall)}): "
        "connect() releases the GIL (Py_BEGIN_ALLOW_THREADS), so the kernel's part of one "
        "probe ran beside the Python part of another."
    )


def thread_per_port_line(runs: ByStrategy) -> str | None:
    tpp, pool = runs.get("thread-per-port"), best_pool(runs)
    if tpp is None or pool is None:
        return None
    mb, pool_mb = tpp.peak_rss_kb / 1024, pool.peak_rss_kb / 1024
    memory = (
        f" and {mb:.0f} MB at its peak against {pool_mb:.0f} MB (each live thread has a stack)"
        if mb > CLOSE * pool_mb
        else f"; its memory stayed near the pool's ({mb:.0f} against {pool_mb:.0f} MB)"
    )
    if tpp.wall > CLOSE * pool.wall:
        each = (tpp.wall - pool.wall) / tpp.ports * 1e6
        return (
            f"One thread per port took {tpp.wall / pool.wall:.1f}x the best pool's time"
            f"{memory}: starting and joining {tpp.ports:,} threads cost about {each:.0f} us "
            "each more than handing a probe to a waiting pool thread."
        )
    return f"One thread per port kept up with the best pool ({s(tpp.wall)}){memory}."


def gil_line(runs: ByStrategy, cores: int) -> str | None:
    threaded = [f for f in runs.values() if f.strategy.startswith(("threadpool", "thread-per"))]
    if not threaded:
        return None
    busiest = max(threaded, key=lambda f: f.cores)
    if busiest.cores < 1.5 or cores < 2:
        return (
            f"The threads never kept more than {busiest.cores:.1f} cores busy "
            f"({busiest.strategy}: {busiest.cpu:.2f} s of CPU in {s(busiest.wall)}) on "
            f"{cores} core{'s' if cores != 1 else ''}: Python's part of every probe runs "
            "under the GIL, one thread at a time; only the kernel's part runs beside it."
        )
    return (
        f"{busiest.strategy} kept {busiest.cores:.1f} cores busy: much of a loopback probe "
        "is kernel time, spent with the GIL released, which threads can overlap."
    )


def processes_line(runs: ByStrategy, cores: int) -> str | None:
    one = runs.get("async")
    many = next((f for k, f in runs.items() if k.startswith("async --processes")), None)
    if one is None or many is None:
        return None
    if many.wall * CLOSE < one.wall:
        return (
            f"Sharded over processes, async took {s(many.wall)} against {s(one.wall)} in "
            f"one, keeping {many.cores:.1f} cores busy against {one.cores:.1f}: each process "
            "has a GIL of its own."
        )
    reason = (
        "one core leaves a second process nothing to run on"
        if cores < 2
        else f"together its processes kept only {many.cores:.1f} cores busy: the second core "
        "was held by other work on the machine"
        if many.cores < 1.0
        else f"it kept {many.cores:.1f} cores busy against {one.cores:.1f}: forking the "
        f"workers and gathering their results cost about what a second core gained on "
        f"{one.ports:,} ports"
    )
    return (
        f"Sharding async over processes did not help here ({s(many.wall)} against "
        f"{s(one.wall)} in one process): {reason}."
    )


def syn_line(runs: ByStrategy) -> str | None:
    syn, conn = runs.get("syn"), runs.get("async")
    if syn is None or conn is None:
        return None
    if syn.wall * CLOSE < conn.wall:
        return (
            f"SYN packets from a raw socket took {s(syn.wall)} against async connect()'s "
            f"{s(conn.wall)}: no socket per port, no connection for the kernel to set up "
            "and tear down, and batches of packets per system call."
        )
    return (
        f"SYN ({s(syn.wall)}, {syn.cpu / syn.ports * 1e6:.0f} us of CPU a port) was no "
        f"faster than async connect() ({s(conn.wall)}, {conn.cpu / conn.ports * 1e6:.0f} us "
        "a port) here: on loopback nothing waits, so CPU per probe decides, and raw packets "
        "did not spend less of it."
    )


def waiting_line(runs: ByStrategy) -> str | None:
    seq, pool = runs.get("sequential"), best_pool(runs)
    if seq is None or pool is None or seq.rtt_ms is None:
        return None
    floor = seq.ports * seq.rtt_ms / 1000
    if pool.wall * CLOSE < seq.wall:
        return (
            f"At {seq.rtt_ms} ms sequential took {s(seq.wall)} (ports x round trip = "
            f"{seq.ports:,} x {seq.rtt_ms} ms = {s(floor)}{own_cost(seq, floor)}): every "
            f"probe waits its round trip alone. {pool.strategy} took {s(pool.wall)}, "
            f"{seq.wall / pool.wall:.0f}x faster: a thread waiting in connect() has released "
            "the GIL, so the waits overlap."
        )
    return (
        f"At {seq.rtt_ms} ms the pool ({pool.strategy}, {s(pool.wall)}) was no faster than "
        f"sequential ({s(seq.wall)}): the round trip is too short for waiting to dominate."
    )


def own_cost(seq: Figures, floor: float) -> str:
    """The probe's own cost when it is a good part of the sequential time."""
    if seq.wall < 1.5 * floor:
        return ""
    return f", plus {(seq.wall - floor) / seq.ports * 1e3:.1f} ms a probe of its own cost"


def pool_line(runs: ByStrategy) -> str | None:
    pools = sorted(
        (f for f in runs.values() if f.strategy.startswith("threadpool")),
        key=lambda f: int(f.strategy.split()[-1]),
    )
    if len(pools) < 2:
        return None
    best = min(pools, key=lambda f: f.wall)
    enough = next(f for f in pools if f.wall <= CLOSE * best.wall)
    where = "on loopback" if best.rtt_ms is None else f"at {best.rtt_ms} ms"
    if enough is pools[-1]:
        return (
            f"The pool {where} kept gaining up to its largest size ({enough.strategy}, "
            f"{s(enough.wall)}): more waits in flight, each a thread."
        )
    more = pools[pools.index(enough) + 1 :]
    size = enough.strategy.split()[-1]
    if enough is best:
        beyond = ", ".join(f"{f.strategy.split()[-1]}: {s(f.wall)}" for f in more)
        return (
            f"The pool {where} was fastest at {size} threads ({s(best.wall)}; {beyond}): "
            "past that, more threads only contend for the GIL and the cores."
        )
    return (
        f"The pool {where} was within {CLOSE - 1:.0%} of its best at {size} threads "
        f"({s(enough.wall)}; the best, {best.strategy}, {s(best.wall)}): past that, more "
        "threads gained little, contending for the GIL and the cores."
    )


def waiting_gil_line(runs: ByStrategy) -> str | None:
    """At the longest round trip: did the threads wait, or compute?"""
    threaded = [f for f in runs.values() if f.strategy.startswith(("threadpool", "thread-per"))]
    if not threaded:
        return None
    busiest = max(threaded, key=lambda f: f.cores)
    where = f"At {busiest.rtt_ms} ms"
    if busiest.cores < 0.5:
        return (
            f"{where} the threads were mostly waiting: the busiest ({busiest.strategy}) kept "
            f"{busiest.cores:.2f} cores busy, so the GIL was no limit; it would be again once "
            "enough probes are in flight that Python's share of each fills a core."
        )
    return (
        f"{where} {busiest.strategy} still kept {busiest.cores:.1f} cores busy: CPU, and "
        "with it the GIL, limited it as much as the waiting did."
    )


LATE_SHARE = 0.1  # of the round trip: mean lateness of the delay line past which it shows
LATE_FLOOR_MS = 0.5


def lagged(f: Figures) -> bool:
    """The delay line dropped packets, or released them late by a good share of the trip."""
    limit = max(LATE_FLOOR_MS, LATE_SHARE * (f.rtt_ms or 0))
    return (f.lab_dropped or 0) > 0 or (f.lab_late_ms or 0.0) > limit


def delay_line_line(figures: Sequence[Figures]) -> str | None:
    """Where the delay line (a Python process on the same cores) fell behind."""
    places: dict[str, list[Figures]] = {}
    for f in figures:
        if f.lab_late_ms is not None:
            places.setdefault(f.place, []).append(f)
    parts = []
    for place, runs in places.items():
        bad = [f for f in runs if lagged(f)]
        if bad:
            late = max(f.lab_late_ms or 0.0 for f in bad)
            dropped = sum(f.lab_dropped or 0 for f in bad)
            parts.append(
                f"at {place} in {len(bad)} of {len(runs)} runs (up to {late:.1f} ms late on "
                f"average, {dropped} packets dropped)"
            )
    if not parts:
        return None
    return (
        f"The delay line fell behind {'; '.join(parts)}: those round trips were longer than "
        "set, so those figures are partly the lab's (its process shares the cores)."
    )
