"""Adapters: a user's own DEQ as a deqcert :class:`~deqcert.protocols.EquilibriumModel`.

* :func:`adapt` (also ``deqcert.adapt``): any PyTorch DEQ from its pieces,
  tensor or list/tuple states (:mod:`.packing`);
* :mod:`deqcert.adapters.torchdeq`: TorchDEQ models, ``h_ref`` from the
  model's own solver settings (needs the ``torchdeq`` extra);
* :mod:`.factory`: ``--model FILE.py:FACTORY`` and ``--weights`` for the CLI.
"""

from __future__ import annotations

from .packing import Layout
from .plain import AdaptedDEQ, SourcedSolver, adapt

__all__ = ["AdaptedDEQ", "Layout", "SourcedSolver", "adapt"]
