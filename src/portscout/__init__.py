"""portscout: a TCP port scanner for Python, as a library and a command line.

>>> import portscout
>>> report = portscout.scan("127.0.0.1", "22,80,443")   # doctest: +SKIP
>>> report.open_ports()                                   # doctest: +SKIP
"""

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
from portscout.scanner import ScanConfig, ascan, iscan, scan

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
