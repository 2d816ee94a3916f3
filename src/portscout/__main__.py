"""``python -m portscout``: the same as the ``portscout`` command."""

import sys

from portscout.cli import main

sys.exit(main())
