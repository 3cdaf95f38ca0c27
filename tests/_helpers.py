"""Helpers shared by the certifier tests: their noise, seeded generators and small certifiers."""

from __future__ import annotations

from typing import Any

import torch

from deqcert import create_certifier

SIGMA = 0.25
NOISE = {"name": "gaussian", "sigma": SIGMA}
"""The noise the tests certify with (the oracles are built for ``SIGMA``)."""


def gen(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def make_certifier(name: str, **options: Any) -> Any:
    """Certifier ``name`` with :data:`NOISE` and ``alpha=0.1`` unless ``options`` say otherwise.

    A solver option (``solver``, ``warmup_solver``, ...) given as an int is a
    naive solver of that many steps.
    """
    naive = {
        key: {"name": "naive", "max_iter": value}
        for key, value in options.items()
        if key.endswith("solver") and isinstance(value, int)
    }
    return create_certifier(name, **{"noise": NOISE, "alpha": 0.1, **options, **naive})


def builtin_names(kind: str) -> list[str]:
    """Names deqcert itself registers for ``kind`` (``model``, ``noise``, ...)."""
    from deqcert.registry import REGISTRIES

    entries = REGISTRIES[kind].entries(load=False)
    return sorted(e.name for e in entries if e.origin == "deqcert" and e.error is None)
