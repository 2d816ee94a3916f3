"""A few hundred generated bad command lines: every one ends with exit 0, 1, 2 (or 141 for
a closed stdout), one line of error at most, and no traceback. In process (``cli.main``),
inside the test session's private network namespace; targets are loopback only."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portscout.cli import main

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("isolated")]

WORK = Path(tempfile.mkdtemp(prefix="portscout-fuzz-"))  # relative outputs (-oA 127.0.0.1)
DB = str(WORK / "h.db")
WORDS = [
    "127.0.0.1", "::1", "127.0.0.1/31", "198.18.0.300", "-p", "1-3", "90-80", "70000", "-",
    "--top-ports", "0", "-1", "99999999999999999999999", "--seed", str(2**200), "-oJ", "-oX",
    "-oG", "--csv", "-oA", "/dev/full", "/dev/null", "/proc/x/y.db", "/etc/passwd/x.db",
    "--db", DB, "--no-db", "-q", "-v", "--open", "-sn", "-Pn", "-r", "--engine", "warp",
    "--timeout", "0", "1ms", "--max-retries", "-T", "9", "--max-rate", "nan", "inf",
    "--stats-every", "-iL", "/nonexistent", "history", "show", "diff", "resume", "forget",
    "-n", "--json", "\x1b[31m", "\x00", "A" * 300, "", "%", "--exclude", "::1/0",
]  # fmt: skip


@settings(max_examples=200, deadline=20_000, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(WORDS), max_size=7))
def test_generated_command_lines(argv: list[str]) -> None:
    if argv and argv[0] == "demo":
        return
    argv = [*argv, "--max-retries", "0", "--timeout", "50ms"] if argv[:1] != ["history"] else argv
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), contextlib.chdir(WORK):
        try:
            code = main(argv)
        except SystemExit as exc:  # --help / --version
            code = int(exc.code or 0)
    assert code in (0, 1, 2, 141), (argv, code, err.getvalue())
    assert "Traceback" not in err.getvalue()
    errors = [line for line in err.getvalue().splitlines() if "error" in line]
    assert len(errors) <= 2, err.getvalue()  # one line, or a warning and its conclusion
