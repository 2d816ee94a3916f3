"""The ``portscout`` console command: Ctrl-C during start-up exits 130, without a traceback."""

import sys


def main() -> int:
    try:
        from portscout.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:
        print("portscout: interrupted", file=sys.stderr)  # noqa: T201
        return 130
