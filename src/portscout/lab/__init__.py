"""Network lab: private namespaces, lab hosts in 198.18.0.0/15, filters, delay lines.

Used by the tests, the benchmarks and ``portscout demo``; not public API. Standard library
only (plus the ``ip`` and ``nft`` commands): it must work before anything else is installed.
"""
