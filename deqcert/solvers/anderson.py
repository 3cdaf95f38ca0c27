"""Anderson acceleration (type II) with per-sample least squares.

At step ``k`` with the last ``n = min(k + 1, m)`` pairs ``(z_i, f(z_i))`` and
residuals ``g_i = f(z_i) - z_i``, each sample solves

    min_alpha ||sum_i alpha_i g_i||^2 + reg ||alpha||^2   s.t.  sum_i alpha_i = 1,

i.e. ``alpha = H^{-1} 1 / (1^T H^{-1} 1)`` with ``H = G G^T + reg I`` (an
``n x n`` system, batched over samples), and moves to

    z_{k+1} = sum_i alpha_i (beta f(z_i) + (1 - beta) z_i).

``reg = lam * trace(G G^T)``, so the regularisation is scale-free: it bounds
the condition number of ``H`` by about ``1 + 1/lam`` whatever the size of the
residuals.  The Gram matrix is updated incrementally (one new row a step) in
preallocated ``(B, m, D)`` / ``(B, m, m)`` buffers, reused across solves.  A
sample whose system is singular or gives non-finite weights takes a plain
(``beta``-damped) step.  The first step is always the plain step.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from ._linalg import batched_combination, batched_dots, keep_finite, solve_dtype
from ._workspace import Workspace
from .base import IterativeSolver
from .loop import SolverOptions, UpdateRule


class AndersonOptions(SolverOptions):
    """Options of :class:`AndersonSolver`."""

    m: int = Field(5, ge=1, description="Memory: number of past iterates mixed.")
    lam: float = Field(
        1e-4, ge=0, description="Tikhonov regularisation, relative to the Gram matrix's trace."
    )
    beta: float = Field(1.0, gt=0, le=1, description="Mixing (damping) parameter.")


class _AndersonUpdate(UpdateRule):
    compactable = True

    def __init__(self, z0: Tensor, m: int, lam: float, beta: float, ws: Workspace) -> None:
        batch, dim = z0.shape
        self.slots = m
        self.lam = lam
        self.beta = beta
        if m > 1:  # with a single slot Anderson is the plain step: no history needed
            self.fs = ws.get("fs", (batch, m, dim), z0)  # f(z_i)
            self.gs = ws.get("gs", (batch, m, dim), z0)  # g_i = f(z_i) - z_i
            self.gram = ws.get("gram", (batch, m, m), z0, solve_dtype(z0.dtype))

    def __call__(self, k: int, z: Tensor, fz: Tensor, g: Tensor) -> Tensor:
        if self.slots == 1:
            return self._plain(z, fz, g)
        slot = k % self.slots
        n = min(k + 1, self.slots)
        self.fs[:, slot].copy_(fz)
        self.gs[:, slot].copy_(g)
        fs, gs = self.fs[:, :n], self.gs[:, :n]
        if fz.requires_grad:  # keep autograd's saved tensors safe from later in-place writes
            fs, gs = fs.clone(), gs.clone()
        row = batched_dots(gs, g).to(self.gram.dtype)
        self.gram[:, slot, :n] = row
        self.gram[:, :n, slot] = row
        if n == 1:
            return self._plain(z, fz, g)
        alpha = self._weights(self.gram[:, :n, :n], slot)
        z_next = batched_combination(alpha, fs)
        if self.beta != 1.0:
            z_next = z_next - (1.0 - self.beta) * batched_combination(alpha, gs)
        # finite weights can still overflow the mixture
        return keep_finite(z_next, lambda: self._plain(z, fz, g))

    def restrict(self, index: Tensor) -> None:
        if self.slots > 1:  # fresh tensors: the workspace's buffers stay full-size
            self.fs = self.fs.index_select(0, index)
            self.gs = self.gs.index_select(0, index)
            self.gram = self.gram.index_select(0, index)

    def _plain(self, z: Tensor, fz: Tensor, g: Tensor) -> Tensor:
        return fz if self.beta == 1.0 else z + self.beta * g

    def _weights(self, gram: Tensor, slot: int) -> Tensor:
        """``(B, n)`` mixing weights; one-hot on ``slot`` (a plain step) where unsafe."""
        batch, n, _ = gram.shape
        eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
        reg = self.lam * gram.diagonal(dim1=1, dim2=2).sum(dim=1)
        h = gram + reg.view(batch, 1, 1) * eye
        ones = gram.new_ones(batch, n, 1)
        y, info = torch.linalg.solve_ex(h, ones)
        y = y.squeeze(2)
        alpha = y / y.sum(dim=1, keepdim=True)
        ok = (info == 0) & torch.isfinite(alpha).all(dim=1)
        plain = torch.zeros_like(alpha)
        plain[:, slot] = 1.0
        return torch.where(ok.unsqueeze(1), alpha, plain)


class AndersonSolver(IterativeSolver):
    """Batched Anderson acceleration with memory ``m``, regularisation ``lam``, mixing ``beta``."""

    Options = AndersonOptions

    def make_update(self, z0: Tensor, max_iter: int) -> UpdateRule:
        o = self.options
        return _AndersonUpdate(z0, min(o.m, max_iter), o.lam, o.beta, self.workspace)
