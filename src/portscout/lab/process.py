"""Lab child processes: spawned with a bounded life, dying with their parent, spoken to in lines.

The delay line and the target namespace run as separate processes (``python -m
portscout.lab.delayline`` / ``portscout.lab.target``). Each must stop by itself whatever
happens to the parent, so three independent brakes apply: ``--max-seconds``, end of file on
its stdin (the parent closed it, or died), and ``PR_SET_PDEATHSIG`` (SIGKILL when the parent
dies). The parent side is ``Child``: one JSON object per line each way, every wait bounded.

Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29


class ChildError(RuntimeError):
    """A lab child process failed to start, answer, or stop; carries the tail of its stderr."""


def die_with_parent(parent_pid: int, *, timer_slack_ns: int | None = None) -> None:
    """Child side: be killed when the parent dies; exit now if it already has.

    ``timer_slack_ns`` lowers the kernel's timer slack (50 us by default) for processes
    whose sleeps must end on time, such as the delay line.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if timer_slack_ns is not None:
        libc.prctl(PR_SET_TIMERSLACK, timer_slack_ns, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(3)


def write_message(message: dict[str, Any]) -> None:
    """Child side: one JSON line on stdout, flushed at once."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def read_first_line(timeout: float) -> tuple[bytes, bytes]:
    """Child side: the first stdin line (the config) and whatever came after it, unbuffered.

    Exits the process when nothing complete arrives within ``timeout`` or stdin ends.
    """
    buffer = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buffer:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([0], [], [], left)[0]:
            os._exit(4)
        chunk = os.read(0, 65536)
        if not chunk:
            os._exit(4)
        buffer += chunk
    line, rest = buffer.split(b"\n", 1)
    return line, rest


# Children import ``portscout.lab`` without running ``portscout/__init__.py``: the lab must
# keep working while the rest of the package is half-written or broken, and starts faster.
_BOOTSTRAP = """
import runpy, sys, types
package = types.ModuleType("portscout")
package.__path__ = [sys.argv[1]]
sys.modules["portscout"] = package
module = sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _package_dir() -> str:
    return str(Path(__file__).resolve().parents[1])  # .../portscout/lab/process.py


class Child:
    """Parent side of one lab child process: ``send`` and ``receive`` JSON lines, ``stop``."""

    def __init__(self, module: str, args: Sequence[str], *, pass_fds: Sequence[int] = ()) -> None:
        self.module = module
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  # closed in stop()
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-c", _BOOTSTRAP, _package_dir(), module),
                *("--parent-pid", str(os.getpid()), *args),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            pass_fds=tuple(pass_fds),
        )
        self._buffer = b""
        self.final: dict[str, Any] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError as exc:
            raise self._error("stopped before it could be told anything") from exc

    def receive(self, timeout: float) -> dict[str, Any]:
        """Next line from the child as a dict; ``ChildError`` on timeout or end of file."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise self._error(f"no answer within {timeout:g} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise self._error("exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            raise self._error(str(message["error"]))
        return message

    def request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.send(message)
        return self.receive(timeout)

    def stop(self, timeout: float = 3.0) -> None:
        """Close stdin (the child's signal to finish), keep its last line, then reap it.

        Kills it when it does not exit within ``timeout``. Safe to call twice.
        """
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        with contextlib.suppress(ChildError, ValueError):  # no last words: it died or hung
            self.final = self.receive(timeout)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()

    def kill(self) -> None:
        """Last resort for atexit: SIGKILL without waiting for words."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def _error(self, what: str) -> ChildError:
        detail = ""
        if not self._stderr.closed:
            self._stderr.seek(0)
            tail = self._stderr.read().decode(errors="replace").strip().splitlines()[-5:]
            detail = (": " + " | ".join(tail)) if tail else ""
        return ChildError(f"{self.module} (pid {self.proc.pid}) {what}{detail}")
