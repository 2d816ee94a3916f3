"""Engines by name. ``auto`` picks the best engine this process may use."""

from __future__ import annotations

from collections.abc import Callable

from portscout.engines.async_connect import AsyncConnectEngine
from portscout.engines.base import Engine, EngineOptions
from portscout.engines.sequential import SequentialEngine
from portscout.engines.threads import ThreadPerPortEngine, ThreadPoolEngine
from portscout.errors import OptionError

ENGINES: dict[str, Callable[[], Engine]] = {
    "async": AsyncConnectEngine,
    "threadpool": ThreadPoolEngine,
    "thread-per-port": ThreadPerPortEngine,
    "sequential": SequentialEngine,
}
DEFAULT_ENGINE = "async"


def engine_names() -> list[str]:
    return ["auto", *ENGINES]


def create_engine(name: str) -> Engine:
    """The engine called ``name``; ``auto`` is the default connect engine for now."""
    if name == "auto":
        name = DEFAULT_ENGINE
    try:
        factory = ENGINES[name]
    except KeyError:
        raise OptionError(
            f"unknown engine '{name}' (choose from {', '.join(engine_names())})"
        ) from None
    return factory()


__all__ = ["DEFAULT_ENGINE", "ENGINES", "Engine", "EngineOptions", "create_engine"]
