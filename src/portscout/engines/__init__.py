"""Engines by name: the one registry of what each engine is. ``auto`` picks the best
engine this process may use."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from portscout.engines.base import Engine, EngineOptions
from portscout.engines.rawsock import raw_sockets_allowed
from portscout.errors import OptionError, PrivilegeError

log = logging.getLogger(__name__)


def _lazy(module: str, name: str) -> Callable[[], Engine]:
    """A factory that imports its engine's module on first use: a scan imports only the
    engine it runs (start-up time is a good part of a full loopback scan's)."""

    def create() -> Engine:
        engine: Engine = getattr(importlib.import_module(f"portscout.engines.{module}"), name)()
        return engine

    create.__name__ = name
    return create


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """What the scanner must know of an engine without importing it.

    ``scan_type`` is nmap's scaninfo type (``-sT`` connect, ``-sS`` syn). ``blocking``: one
    of the threads study's engines, blocking connects in threads; one process runs it,
    since threads on one core are the study's lesson. ``raw``: needs raw sockets.
    """

    create: Callable[[], Engine]
    scan_type: Literal["connect", "syn"] = "connect"
    blocking: bool = False
    raw: bool = False


ENGINES: dict[str, EngineSpec] = {
    "async": EngineSpec(_lazy("async_connect", "AsyncConnectEngine")),
    # a fresh secret per instance, so per worker too
    "syn": EngineSpec(_lazy("syn", "SynEngine"), scan_type="syn", raw=True),
    "threadpool": EngineSpec(_lazy("threads", "ThreadPoolEngine"), blocking=True),
    "thread-per-port": EngineSpec(_lazy("threads", "ThreadPerPortEngine"), blocking=True),
    "sequential": EngineSpec(_lazy("sequential", "SequentialEngine"), blocking=True),
}
CONNECT_ENGINE = "async"  # -sT, and ``auto`` without raw sockets
SYN_ENGINE = "syn"  # -sS, and ``auto`` with them
CONNECT_ENGINES = frozenset(name for name, spec in ENGINES.items() if spec.scan_type == "connect")


def engine_names() -> list[str]:
    return ["auto", *ENGINES]


def resolve_engine_name(name: str) -> str:
    """``auto`` -> ``syn`` where raw sockets are allowed, else the connect engine (said once)."""
    if name == "auto":
        if raw_sockets_allowed():
            return SYN_ENGINE
        log.warning("no raw-socket privilege (root or CAP_NET_RAW): using the connect engine")
        return CONNECT_ENGINE
    if name not in ENGINES:
        raise OptionError(f"unknown engine '{name}' (choose from {', '.join(engine_names())})")
    if ENGINES[name].raw and not raw_sockets_allowed():
        raise PrivilegeError(
            f"the {name} engine needs root or CAP_NET_RAW (try --engine {CONNECT_ENGINE})"
        )
    return name


def create_engine(name: str) -> Engine:
    """The engine called ``name`` (``auto`` resolved as in ``resolve_engine_name``)."""
    return ENGINES[resolve_engine_name(name)].create()


__all__ = [
    "CONNECT_ENGINE",
    "CONNECT_ENGINES",
    "ENGINES",
    "SYN_ENGINE",
    "Engine",
    "EngineOptions",
    "EngineSpec",
    "create_engine",
    "resolve_engine_name",
]
