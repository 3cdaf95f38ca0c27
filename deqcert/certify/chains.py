"""Warm-started chains, shared by the serialized and verified certifiers.

A *chain* is one row of a ``(batch_size, ...)`` state tensor: each batch of
noisy samples starts row ``j`` from chain ``j``'s state and the chains then
take the batch's final states.  :func:`anchor_state` is the other warm start
both certifiers offer: the clean input's fixed point.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..protocols import EquilibriumModel, FixedPointSolver, SolverResult
from .sampling import solve_batch


def chain_starts(chains: Tensor, size: int) -> Tensor:
    """Starting states for a batch of ``size``: chain ``j`` for row ``j`` (repeated if short)."""
    if chains.shape[0] >= size:
        return chains[:size]
    rows = torch.arange(size, device=chains.device) % chains.shape[0]
    return chains[rows]


def advance_chains(chains: Tensor, states: Tensor) -> Tensor:
    """Chains after a batch: the first rows take the batch's final ``states``."""
    if states.shape[0] >= chains.shape[0]:
        return states
    return torch.cat([states, chains[states.shape[0] :]])


def anchor_state(model: EquilibriumModel, solver: FixedPointSolver, x: Tensor) -> SolverResult:
    """The solve of the clean input ``x`` from ``init_state`` (``result.z``: ``(1, ...)``)."""
    _, result = solve_batch(model, solver, x.unsqueeze(0))
    return result
