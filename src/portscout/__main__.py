"""``python -m portscout``: the same as the ``portscout`` command."""

import sys

from portscout._entry import main

sys.exit(main())
