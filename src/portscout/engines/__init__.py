"""Engines by name. ``auto`` picks the best engine this process may use."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

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


ENGINES: dict[str, Callable[[], Engine]] = {
    "async": _lazy("async_connect", "AsyncConnectEngine"),
    "syn": _lazy("syn", "SynEngine"),  # a fresh secret per instance, so per worker too
    "threadpool": _lazy("threads", "ThreadPoolEngine"),
    "thread-per-port": _lazy("threads", "ThreadPerPortEngine"),
    "sequential": _lazy("sequential", "SequentialEngine"),
}
CONNECT_ENGINE = "async"
CONNECT_ENGINES = frozenset(ENGINES) - {"syn"}


def engine_names() -> list[str]:
    return ["auto", *ENGINES]


def resolve_engine_name(name: str) -> str:
    """``auto`` -> ``syn`` where raw sockets are allowed, else the connect engine (said once)."""
    if name == "auto":
        if raw_sockets_allowed():
            return "syn"
        log.warning("no raw-socket privilege (root or CAP_NET_RAW): using the connect engine")
        return CONNECT_ENGINE
    if name not in ENGINES:
        raise OptionError(f"unknown engine '{name}' (choose from {', '.join(engine_names())})")
    if name == "syn" and not raw_sockets_allowed():
        raise PrivilegeError("the syn engine needs root or CAP_NET_RAW (try --engine async)")
    return name


def create_engine(name: str) -> Engine:
    """The engine called ``name`` (``auto`` resolved as in ``resolve_engine_name``)."""
    return ENGINES[resolve_engine_name(name)]()


__all__ = [
    "CONNECT_ENGINE",
    "CONNECT_ENGINES",
    "ENGINES",
    "Engine",
    "EngineOptions",
    "create_engine",
    "resolve_engine_name",
]
