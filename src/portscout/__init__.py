"""portscout: a TCP port scanner for Python, as a library and a command line.

>>> import portscout
>>> report = portscout.scan("127.0.0.1", "22,80,443")   # doctest: +SKIP
>>> report.open_ports("127.0.0.1")                        # doctest: +SKIP
[22]

``scan`` returns a ``Report``; ``iscan`` and ``ascan`` yield each ``Result`` as it arrives;
``help(portscout.scan)`` lists every option.
"""

import typing

from portscout._version import __version__
from portscout.errors import (
    OptionError,
    PortscoutError,
    PortSpecError,
    PrivilegeError,
    ScanError,
    StoreError,
    TargetError,
    UsageError,
)
from portscout.results import Protocol, Reason, Report, Result, State

if typing.TYPE_CHECKING:
    from portscout.api import ascan, iscan
    from portscout.distributed import scan
    from portscout.scanner import ScanConfig

_SCANNER_NAMES = frozenset({"ScanConfig", "ascan", "iscan", "scan"})


def __getattr__(name: str) -> object:
    """The scanner (asyncio, engines, sockets) is imported on first use, not with the
    package: the command line starts faster, and Ctrl-C during start-up is caught."""
    if name == "scan":  # scan(..., executor=client) runs on Dask
        from portscout.distributed import scan

        return scan
    if name == "ScanConfig":
        from portscout.scanner import ScanConfig

        return ScanConfig
    if name in _SCANNER_NAMES:
        from portscout import api

        return getattr(api, name)
    raise AttributeError(f"module 'portscout' has no attribute '{name}'")


def __dir__() -> list[str]:
    """The public names, the lazily imported ``scan``, ``iscan`` and ``ascan`` included
    (``dir()`` would otherwise miss them and show the imports)."""
    return sorted(__all__)


__all__ = [
    "OptionError",
    "PortSpecError",
    "PortscoutError",
    "PrivilegeError",
    "Protocol",
    "Reason",
    "Report",
    "Result",
    "ScanConfig",
    "ScanError",
    "State",
    "StoreError",
    "TargetError",
    "UsageError",
    "__version__",
    "ascan",
    "iscan",
    "scan",
]
