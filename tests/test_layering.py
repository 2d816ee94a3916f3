"""The architecture of STYLE.md, enforced: each module imports only what its layer may.

A pure core (parsing, packets, timing, results) with no I/O; engines that do I/O on top of
the core; writers that only format; the scanner joining core and engines; the CLI on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "portscout"

CORE = {"_version", "errors", "results", "targets", "ports", "permutation", "plan", "packets",
        "pings", "timing", "host_timing", "schedule", "services", "diff"}  # fmt: skip
# Standard-library modules that mean I/O or concurrency: not in the core.
IO_MODULES = {"socket", "_socket", "asyncio", "threading", "sqlite3", "subprocess",
              "multiprocessing", "selectors", "select", "random", "time"}  # fmt: skip

ALLOWED: dict[str, set[str] | None] = {
    "core": CORE,
    "engines": CORE | {"engines"},
    "output": {"results", "errors", "_version", "output", "diff", "ports"},
    "lab": {"lab"},
    "store": CORE | {"store_files", "store_schema"},
    "store_schema": CORE,  # the SQL and the closed-ports encodings
    "recorder": CORE | {"store"},
    "store_files": {"errors"},  # the history's files: stdlib and errors only
    "history_config": CORE | {"scanner"},  # ScanConfig <-> the JSON the history keeps
    "outfiles": {"errors", "results"},  # output files: stdlib and errors only
    "scanner": CORE | {"engines"},
    "running": CORE | {"scanner"},  # a Scan on its own loop, and the stop signals
    "api": CORE | {"scanner", "running"},  # scan(), iscan(), ascan()
    "demo": CORE | {"lab", "output", "scanner", "running", "engines"},
    "bench": CORE | {"bench", "demo", "lab", "scanner", "running", "engines"},
    "cli": None,  # the top: may import anything
    "cli_args": None,  # the command line's parser, beside cli
    "history_cli": None,  # the history commands, beside cli (imported by cli.main)
    "__main__": {"_entry"},
    "_entry": {"cli"},
    "__init__": CORE | {"scanner", "api", "distributed"},
    "distributed": CORE | {"scanner", "api", "running", "engines", "dask_local"},
    "dask_local": {"errors"},  # --dask local:N's processes: stdlib, Dask and errors only
}


def layer(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    if parts[0] in {"engines", "output", "lab", "bench"}:
        return parts[0]
    name = parts[0]
    return "core" if name in CORE else name


def portscout_imports(path: Path) -> tuple[set[str], set[str]]:
    """(first components below ``portscout``, top-level stdlib/third-party modules)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    ours: set[str] = set()
    others: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "portscout":
                if len(parts) > 1:
                    ours.add(parts[1])
            else:
                others.add(parts[0])
    return ours, others


MODULES = sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_the_layers(path: Path) -> None:
    kind = layer(path)
    assert kind in ALLOWED, f"{path.name}: no layer rule for '{kind}'; add one to this test"
    ours, others = portscout_imports(path)
    allowed = ALLOWED[kind]
    if allowed is not None:
        assert ours <= allowed, f"{kind} module {path.name} imports {sorted(ours - allowed)}"
    if kind == "core":
        assert not others & IO_MODULES, f"core module {path.name} does I/O: {others & IO_MODULES}"
