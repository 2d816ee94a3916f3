"""Service detection's CPU costs on nmap's real file (issue 13): parse and compile times
(all patterns against only the two probes a scan of common ports uses), CPU per response
with nmap's plain loop against the indexed matcher, and the worst pattern's time on
hostile input of ``MAX_MATCH_BYTES``. No network: pure CPU.

    .venv/bin/python benchmarks/service_match.py [--probes FILE] [--worst] [--pool]

``--pool``: N responses matched inline (one process, as the scan does) against a
``ProcessPoolExecutor`` of ``os.cpu_count()`` workers, wall time, for N from 10 to 20,000;
each worker prepares the database itself (from the cache when warm), as a scan's pool
would have to. Which is faster decides whether matching leaves the event loop's process.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from portscout.services.cache import prepare
from portscout.services.match import MAX_MATCH_BYTES, Analyses, Hit
from portscout.services.probes import Match, ProbeDatabase, find_probe_file, load_probe_file
from portscout.services.session import Signatures

RESPONSES = [
    b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n",
    b"220 (vsFTPd 3.0.3)\r\n",
    b"220 box ESMTP Exim 4.96 Mon, 01 Jan 2024 00:00:00 +0000\r\n",
    b"+OK Dovecot (Debian) ready.\r\n",
    b"J\x00\x00\x00\n5.5.5-10.11.6-MariaDB-0+deb12u1\x00\x08\x00\x00\x00abcdefgh\x00",
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 01 Jan 2024\r\n"
    b"Content-Type: text/html\r\nContent-Length: 615\r\n\r\n<!DOCTYPE html><html>" + b"x" * 600,
    b"HTTP/1.1 404 Not Found\r\nDate: Mon\r\nServer: Apache/2.4.57 (Debian)\r\n"
    b"Content-Length: 196\r\n\r\n<html><body>Not Found</body></html>",
    b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.11.7\r\n\r\n",
    b"\x15\x03\x01\x00\x02\x02\x28",
    b"unknown service says hello\r\n",
]


def cpu_ms(function: Callable[[bytes], Hit | None], responses: list[bytes], rounds: int) -> float:
    started = time.process_time()
    for _ in range(rounds):
        for response in responses:
            function(response)
    return (time.process_time() - started) * 1000 / (rounds * len(responses))


def compile_times(path: Path) -> None:
    started = time.process_time()
    db = load_probe_file(path)
    parsed = time.process_time() - started
    lines = list(db.matches())
    started = time.process_time()
    failed = [m for m in lines if m.regex is None]
    everything = time.process_time() - started
    fresh = load_probe_file(path)
    started = time.process_time()
    signatures = Signatures(fresh)
    for name in ("NULL", "GetRequest"):
        probe = fresh.get("TCP", name)
        assert probe is not None
        for match in signatures.matcher(probe).matches:
            _ = match.regex
    lazy = time.process_time() - started
    print(f"probes {len(db.probes)}, match lines {len(lines)}, parse {parsed:.2f} s CPU")
    print(f"compiled {len(lines) - len(failed)} of {len(lines)} ({len(failed)} fail)")
    print(f"compile all: {everything:.2f} s CPU; lazily, NULL + GetRequest only: {lazy:.2f} s")


def per_response(db: ProbeDatabase) -> None:
    signatures = Signatures(db)
    for name in ("NULL", "GetRequest"):
        probe = db.get("TCP", name)
        assert probe is not None
        matcher = signatures.matcher(probe)
        matcher.find_plain(b"warm up: compile every pattern")
        for response in RESPONSES:  # the index is built per first byte on first use
            matcher.find(response)
        plain = cpu_ms(matcher.find_plain, RESPONSES, 5)
        indexed = cpu_ms(matcher.find, RESPONSES, 20)
        print(f"{name} ({len(matcher.matches)} lines): plain loop {plain:.2f} ms CPU per"
              f" response, indexed {indexed:.3f} ms ({plain / indexed:.0f}x)")  # fmt: skip


def worst_patterns(db: ProbeDatabase) -> None:
    rng = random.Random(13)
    size = MAX_MATCH_BYTES
    hostile = {
        "A*": b"A" * size,
        "spaces": b" " * size,
        "CRLF": b"\r\n" * (size // 2),
        "HTTP headers": (b"HTTP/1.1 200 OK\r\n" + b"X-A: " + b"a" * 60 + b"\r\n" * 1)[:80]
        * (size // 80),
        "random": rng.randbytes(size),
        "digits.": b"1." * (size // 2),
    }
    times: list[tuple[float, str, Match]] = []
    for match in db.matches():
        regex = match.regex
        if regex is None:
            continue
        for label, data in hostile.items():
            started = time.perf_counter()
            regex.search(data)
            times.append((time.perf_counter() - started, label, match))
    times.sort(key=lambda t: t[0], reverse=True)
    total = sum(t[0] for t in times)
    print(f"hostile inputs of {size} bytes, {len(times)} pattern runs, {total:.1f} s in all")
    for elapsed, label, match in times[:5]:
        print(f"  {elapsed * 1000:8.1f} ms  {label:12} line {match.line} ({match.service})"
              f" {match.pattern[:60]!r}")  # fmt: skip


_WORKER: Signatures | None = None  # one worker process's prepared database


def _worker_start(path: str, cache: str) -> None:
    global _WORKER
    _WORKER = _signatures(Path(path), Path(cache))


def _signatures(path: Path, cache: Path) -> Signatures:
    """Prepared, and warm: matchers and their per-first-byte indexes built, candidates
    compiled (as in a scan that has matched a few responses already)."""
    prepared = prepare(path, cache)
    signatures = Signatures(prepared.database, Analyses(prepared.first))
    for name, response in _jobs(len(RESPONSES)):
        probe = signatures.database.get("TCP", name)
        assert probe is not None
        signatures.matcher(probe).find(response)
    return signatures


def _match_one(job: tuple[str, bytes]) -> int | None:
    """What a worker sends back: the line that matched (the scan would build its Service)."""
    assert _WORKER is not None
    probe = _WORKER.database.get("TCP", job[0])
    assert probe is not None
    hit = _WORKER.matcher(probe).find(job[1])
    return None if hit is None else hit.match.line


def _jobs(count: int) -> list[tuple[str, bytes]]:
    """Responses as a scan of common ports sees them: banners for the NULL probe, HTTP
    answers for GetRequest, varied so that no two are the same bytes."""
    jobs = []
    for i in range(count):
        response = RESPONSES[i % len(RESPONSES)] + b"%d\r\n" % i
        jobs.append(("GetRequest" if response.startswith(b"HTTP") else "NULL", response))
    return jobs


def pool_vs_inline(path: Path, sizes: list[int], rounds: int) -> None:
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="sv-cache-") as tmp:
        cache = Path(tmp)
        inline = _signatures(path, cache)
        print(f"{workers} workers; wall time, median of {rounds}")
        print("| responses | inline | pool, started for the batch | pool, workers warm |")
        print("| --- | --- | --- | --- |")
        for size in sizes:
            jobs = _jobs(size)
            chunk = max(1, size // (4 * workers))
            times: dict[str, list[float]] = {"inline": [], "cold": [], "warm": []}
            for _ in range(rounds):
                started = time.perf_counter()
                want = []
                for name, response in jobs:
                    probe = inline.database.get("TCP", name)
                    assert probe is not None
                    hit = inline.matcher(probe).find(response)
                    want.append(None if hit is None else hit.match.line)
                times["inline"].append(time.perf_counter() - started)
                started = time.perf_counter()
                with ProcessPoolExecutor(workers, initializer=_worker_start,
                                         initargs=(str(path), tmp)) as pool:  # fmt: skip
                    list(pool.map(_worker_start_wait, range(workers)))
                    ready = time.perf_counter()
                    got = list(pool.map(_match_one, jobs, chunksize=chunk))
                    done = time.perf_counter()
                times["cold"].append(done - started)
                times["warm"].append(done - ready)
                assert got == want, "the pool found other lines than inline matching"
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"| {size} | {med['inline'] * 1000:.1f} ms | {med['cold'] * 1000:.1f} ms | "
                  f"{med['warm'] * 1000:.1f} ms |")  # fmt: skip


def _worker_start_wait(_: int) -> None:
    """A no-op job: returns once a worker has run its initializer (prepared the database)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--probes", help="nmap-service-probes (default: the installed one)")
    parser.add_argument("--worst", action="store_true", help="time every pattern on hostile input")
    parser.add_argument("--pool", action="store_true", help="inline against a process pool")
    parser.add_argument("--rounds", type=int, default=3, help="--pool: rounds per size")
    args = parser.parse_args()
    path = find_probe_file(os.environ, args.probes)
    if path is None:
        raise SystemExit("no nmap-service-probes: install nmap or give --probes FILE")
    if args.pool:
        pool_vs_inline(path, [10, 100, 1000, 5000, 20000], args.rounds)
        return
    compile_times(path)
    db = load_probe_file(path)
    per_response(db)
    if args.worst:
        worst_patterns(db)


if __name__ == "__main__":
    main()
