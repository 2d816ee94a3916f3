"""JSON lines: one result per line, written and flushed as it arrives.

Each line is a complete JSON object (``Result.to_dict``), so a consumer can tail the file
during the scan, and a crash or Ctrl-C leaves only whole lines behind.
"""

from __future__ import annotations

import json
from typing import TextIO

from portscout.results import Report, Result, ScanMeta


class JsonLinesWriter:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def start(self, meta: ScanMeta) -> None:
        """Nothing before the first result: every line of the file is a result."""

    def add(self, result: Result) -> None:
        self._stream.write(json.dumps(result.to_dict(), separators=(",", ":")) + "\n")

    def finish(self, report: Report) -> None:
        self._stream.flush()
