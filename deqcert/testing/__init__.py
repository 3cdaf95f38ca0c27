"""Conformance suites and oracles for testing components, built-in or from a plugin.

* :mod:`.solvers`, :mod:`.noise`, :mod:`.models`, :mod:`.certifiers`: one
  suite per kind of component, each a dict ``CHECKS`` of named checks, with
  ``run_*_conformance(factory)``, ``*_conformance_cases()`` for pytest and
  ``registered_*(name)`` for a registered component;
* :mod:`.oracles`: models whose smoothed classifier is known exactly.

A check raises :class:`ConformanceError` (an ``AssertionError``) naming
what is wrong.
"""

from ._checks import ConformanceError

__all__ = ["ConformanceError"]
