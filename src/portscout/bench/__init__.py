"""``portscout bench``: the threads study (../shared/seed/thread-study.md) measured on the
user's machine, every strategy on loopback and behind the lab's delay line, explained.

Modules: ``strategies`` (what is measured, as data), ``child`` (one strategy's scan in a
fresh interpreter, reporting its own figures), ``measure`` (starting children), ``explain``
(sentences from figures; pure), ``plots`` (matplotlib, the optional ``bench`` extra) and
``command`` (the command: namespace, listeners, lab, table, JSON). Not public API.
"""
