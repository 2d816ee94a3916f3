"""Network lab: private namespaces, lab hosts in 198.18.0.0/15, filters, delay lines.

Used by the tests, the benchmarks and ``portscout demo``; not public API. Standard library
only (plus the ``ip`` and ``nft`` commands): it must work before anything else is installed.

>>> with Lab([Host(address=IPv4Address("198.18.1.5"), open={22: ListenerMode.BANNER})],
...          link=Link(rtt=0.080, loss=0.01)) as lab:       # doctest: +SKIP
...     socket.create_connection(("198.18.1.5", 22))
"""

from portscout.lab.hosts import DEFAULT_SCANNER, LAB_NETWORK, Host, Link, ListenerMode, Reject
from portscout.lab.lab import DelayLineStats, Lab, LabError

__all__ = [
    "DEFAULT_SCANNER",
    "LAB_NETWORK",
    "DelayLineStats",
    "Host",
    "Lab",
    "LabError",
    "Link",
    "ListenerMode",
    "Reject",
]
