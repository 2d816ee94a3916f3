"""The ``portscout`` console command: Ctrl-C during start-up exits 130, without a traceback.

The command leaves with ``os._exit`` once its output is flushed: the interpreter's teardown
(freeing every module and object) costs 10-15 ms, a fortieth of a full loopback scan, and
nothing needs it by then: the scan has closed its files, its database and its workers.
"""

import os
import sys


def main() -> int:
    try:
        from portscout.cli import main as cli_main

        code = cli_main()
    except KeyboardInterrupt:
        print("portscout: interrupted", file=sys.stderr)  # noqa: T201
        code = 130
    _leave(code)
    return code  # not reached


def _leave(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away, or a closed stream
            code = code or 1
    os._exit(code)
