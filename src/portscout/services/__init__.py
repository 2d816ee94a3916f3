"""Service and version detection's pure part (``-sV``): the probe database, matching a
response against it, and the choice of the next probe for a port.

Core package: standard library and ``errors`` only; no sockets, no clock, no asyncio. The
connections live in ``engines/service.py``.

- ``probes``: nmap's ``nmap-service-probes`` format, parsed into ``ServiceProbe`` and
  ``Match`` values, regexes compiled lazily; locating the file.
- ``match``: a response against a probe's matches (nmap's order, fallbacks), version
  templates, and an index that skips patterns that cannot match.
- ``session``: one port's detection as a state machine: which probe next, what a
  response means (hard match, softmatch, tcpwrapped, TLS underneath).
- ``cache``: nmap's file prepared once (parsed, each line's first byte, the patterns that
  do not compile) and kept under ``$XDG_CACHE_HOME/portscout``: the one module here that
  writes files.
- ``builtin``: our own small database, written from the protocols' specifications, for
  hosts without nmap.
- ``x509``: the few certificate fields a report shows, read from DER.
"""
