"""``--dask local:N``: a Dask scheduler and N worker processes on this machine, each a
process of its own, and a client of them.

Why not ``distributed.LocalCluster``: it runs the scheduler and the workers' nannies in
the client's process, and what they do (heartbeats, periodic callbacks, the bookkeeping
of every unit) is then the client's CPU: 5.7-6.6% of the wall time of a /8 simulated on 64
worker threads, against 2.4% for the client and 2.6% for a scheduler process of its own
(docs/benchmarks.md). Started here as ``dask scheduler`` and ``dask worker --nworkers N``
would be (``python -m distributed.cli...``), with their logs discarded, each in a
session of its own (a terminal's Ctrl-C is the client's to handle), told to die with the
client (``PR_SET_PDEATHSIG``: a client killed does not leave them scanning), and killed,
process group and all, when the client is done: a worker busy in a unit does not stop
when asked (its nanny would wait for it: 4 s after a Ctrl-C).

Work stealing is off (units are alike; stragglers are the client's to resubmit) and the
system monitor samples every 2 s, not 0.5 s. Imports ``errors`` only.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from portscout.errors import ScanError

if TYPE_CHECKING:
    from distributed import Client

START_SECONDS = 30.0  # for the scheduler to write its address, and the workers to join
PR_SET_PDEATHSIG = 1
ENVIRONMENT = {
    "DASK_DISTRIBUTED__SCHEDULER__WORK_STEALING": "False",
    "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "2s",
}


@contextlib.contextmanager
def local_cluster(workers: int, threads: int) -> Iterator[Client]:
    """A client of a scheduler and ``workers`` worker processes of ``threads`` threads on
    127.0.0.1, all gone on exit. ScanError if they do not start in ``START_SECONDS``."""
    from distributed import Client

    with tempfile.TemporaryDirectory(prefix="portscout-dask-") as tmp:
        info = Path(tmp) / "scheduler.json"
        module = [sys.executable, "-m"]
        scheduler = _start([*module, "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                            "--port", "0", "--no-dashboard", "--dashboard-address",
                            "127.0.0.1:0", "--scheduler-file", str(info)])  # fmt: skip
        processes = [scheduler]
        try:
            processes.insert(0, _start([*module, "distributed.cli.dask_worker",
                                        "--scheduler-file", str(info), "--nworkers",
                                        str(workers), "--nthreads", str(threads),
                                        "--no-dashboard", "--host", "127.0.0.1"]))  # fmt: skip
            address = _address(info, scheduler)
            try:
                client = Client(address, timeout=START_SECONDS)
                client.wait_for_workers(workers, timeout=START_SECONDS)
            except (OSError, TimeoutError) as exc:
                raise ScanError(f"the local Dask cluster did not start: {exc}") from exc
            with client:
                yield client
        finally:
            _kill(processes)


def _start(command: list[str]) -> subprocess.Popen[bytes]:
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child only calls it

    def die_with_parent() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **ENVIRONMENT},
        start_new_session=True,
        preexec_fn=die_with_parent,  # one C call in the child: no lock to inherit
    )


def _address(info: Path, scheduler: subprocess.Popen[bytes]) -> str:
    """The scheduler's address, from the file it writes once it listens."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline and scheduler.poll() is None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            return str(json.loads(info.read_text())["address"])
        time.sleep(0.05)
    raise ScanError("the local Dask scheduler did not start (is port 0 of 127.0.0.1 free?)")


def _kill(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGKILL to each process's group (a worker's processes are in its group)."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    for process in processes:
        process.wait()
