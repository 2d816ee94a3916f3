"""The text form of ``portscout diff``, as nmap's ``ndiff`` prints it.

``-`` lines are scan A's, ``+`` lines scan B's, grouped per host; unchanged hosts and ports
are left out, and bulk changes that involve no open port are counted as nmap's "Not shown"
(``diff.FOLD_OVER``). Only formats: the comparison is ``diff.compare``. Imports ``results``,
``diff`` and ``output`` only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from portscout.diff import ScanDiff


def _shown(state: str | None) -> str:
    return "unscanned" if state is None else str(state)


def _sides(before: str | None, after: str | None) -> list[tuple[str, str]]:
    return [(sign, st) for sign, st in (("-", before), ("+", after)) if st is not None]


def diff_text(diff: ScanDiff, service_names: Mapping[int, str]) -> str:
    """ndiff's text: a banner line per scan, then per changed host its status and ports."""
    lines = [
        f"{sign}portscout {s.meta.version} scan {s.id} initiated"
        f" {time.ctime(s.meta.started)} as: {s.meta.command_line}"
        for sign, s in (("-", diff.a), ("+", diff.b))
    ]
    names = {**diff.a.meta.hostnames, **diff.b.meta.hostnames}
    for h in diff.hosts:
        title = f"{names[h.host]} ({h.host})" if h.host in names else str(h.host)
        lines += ["", f" {title}:"]
        if h.before != h.after:
            lines += [f"{sign}Host is {st}." for sign, st in _sides(h.before, h.after)]
        listed, folded = h.split()
        for f in folded:  # bulk changes, none to or from open: counted, as nmap's Not shown
            lines += [f"{sign}Not shown: {len(f.ports)} {st} ports"
                      for sign, st in _sides(_shown(f.before), _shown(f.after))]  # fmt: skip
        if listed:
            lines.append(" PORT        STATE     SERVICE")
        for p in listed:
            name = service_names.get(p.port, "")
            port = f"{p.port}/{p.protocol}"
            found = {"-": p.before_service, "+": p.after_service}  # -sV's line, where it ran
            lines += [f"{sign}{port:<11} {st:<9} {found[sign] or name}".rstrip()
                      for sign, st in _sides(p.before, p.after)]  # fmt: skip
    return "\n".join(lines) + "\n"
