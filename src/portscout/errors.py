"""The exception tree of portscout. Imports nothing from the package.

::

    PortscoutError              base of everything portscout raises on purpose
    ├── UsageError              the user's input is wrong: exit code 2
    │   ├── TargetError         a target spec, host name or target file is bad
    │   ├── PortSpecError       a port spec is bad
    │   └── OptionError         an option value or combination is bad
    └── ScanError               the scan could not run or finish: exit code 1
        ├── PrivilegeError      the engine needs a privilege the process lacks
        └── StoreError          the history database is unusable
            └── StoreBusyError  another process holds its write lock (SQLITE_BUSY)

``Interrupted`` (a ``KeyboardInterrupt``, not a ``PortscoutError``) is how a stop signal
reaches the code that keeps the results found so far.

A port that does not answer is a ``Result`` with state ``filtered``, never an exception.
Messages are one line and name the bad value, so the CLI prints ``str(exc)`` as it is.
"""

from __future__ import annotations


class PortscoutError(Exception):
    """Base class: catching it catches everything portscout raises deliberately."""

    exit_code: int = 1


class UsageError(PortscoutError):
    """Bad input from the user; the CLI exits with code 2."""

    exit_code = 2


class TargetError(UsageError):
    """A target specification that cannot be parsed or resolved."""


class PortSpecError(UsageError):
    """A port specification that cannot be parsed."""


class OptionError(UsageError):
    """An option value, or a combination of options, that cannot work."""


class ScanError(PortscoutError):
    """The scan itself failed at run time; the CLI exits with code 1."""


class PrivilegeError(ScanError):
    """The chosen engine needs a privilege (root, CAP_NET_RAW) that the process lacks."""


class StoreError(ScanError):
    """The history database is missing, corrupt, foreign or locked."""


class StoreBusyError(StoreError):
    """Another process holds the history database's write lock longer than we waited."""


class Interrupted(KeyboardInterrupt):
    """A scan stopped by a signal (SIGINT, SIGTERM, SIGHUP): what Ctrl-C does, for each.

    A ``KeyboardInterrupt``, so that code written for Ctrl-C handles all three; the
    command exits with ``128 + signum`` (130, 143, 129), as a shell reports the signal.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
