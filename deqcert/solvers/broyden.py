"""Limited-memory "good" Broyden for ``g(z) = f(z) - z = 0`` in compact form (no line search).

Good Broyden started from the Jacobian estimate ``-I`` and updated with the
pairs ``s_i = z_{i+1} - z_i``, ``y_i = g(z_{i+1}) - g(z_i)`` has the inverse
(Byrd, Nocedal and Schnabel's compact representation, with ``H_0 = -I``)

    H = -I + (S + Y) K^{-1} S^T,   K = tril(S^T S, -1) + S^T Y,

(pairs as columns, oldest first).  Keeping only the last ``memory`` pairs is
again a good-Broyden matrix (started ``memory`` steps ago), so the memory is
bounded without restarts.  Each step is ``z <- z - H g(z)``; the first is the
plain step ``z <- f(z)``.

Pairs live in preallocated ``(B, memory, D)`` ring buffers (``S`` and
``P = S + Y``) and the small ``S^T S`` / ``S^T P`` matrices are updated one
row and column a step, so a step reads each buffer at most twice (three
batched products) plus an ``n x n`` solve per sample.  A sample whose ``K`` is
singular or whose step is not finite takes the plain step; the pairs come from
the steps actually taken, so a fallback never corrupts later updates.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from ._linalg import batched_dots, keep_finite, solve_dtype
from ._workspace import Workspace
from .base import IterativeSolver
from .loop import SolverOptions, UpdateRule


class BroydenOptions(SolverOptions):
    """Options of :class:`BroydenSolver`."""

    memory: int = Field(32, ge=1, description="Pairs (s, y) kept: bounded memory.")


class _BroydenUpdate(UpdateRule):
    compactable = True

    def __init__(self, z0: Tensor, memory: int, ws: Workspace) -> None:
        batch, dim = z0.shape
        self.slots = memory
        self.s = ws.get("s", (batch, memory, dim), z0)  # steps s_i
        self.p = ws.get("p", (batch, memory, dim), z0)  # s_i + y_i
        self.work = ws.get("work", (batch, 3, dim), z0)  # (s_new, p_new, g) side by side
        small = solve_dtype(z0.dtype)
        self.ss = ws.get("ss", (batch, memory, memory), z0, small)  # s_i . s_j
        self.sp = ws.get("sp", (batch, memory, memory), z0, small)  # s_i . p_j
        self.count = 0  # pairs written so far
        self.prev_g: Tensor | None = None
        self.prev_step: Tensor | None = None

    def __call__(self, k: int, z: Tensor, fz: Tensor, g: Tensor) -> Tensor:
        if self.prev_g is None or self.prev_step is None:  # H = -I: the plain step
            self.prev_g, self.prev_step = g, g
            return fz
        slot = self.count % self.slots
        self.count += 1
        n = min(self.count, self.slots)
        s_new = self.prev_step
        self.s[:, slot].copy_(s_new)
        p_new = self.p[:, slot].copy_(s_new).add_(g).sub_(self.prev_g)  # p = s + y
        s_buf, p_buf = self.s[:, :n], self.p[:, :n]
        # one pass over S for s_i . (s_new, p_new, g), one over P for s_new . p_j
        if fz.requires_grad:  # keep autograd's saved tensors safe from later in-place writes
            s_buf, p_buf = s_buf.clone(), p_buf.clone()
            work = torch.stack((s_new, p_new, g), dim=1)
        else:
            work = self.work
            work[:, 0].copy_(s_new)
            work[:, 1].copy_(p_new)
            work[:, 2].copy_(g)
        dots = torch.bmm(work, s_buf.transpose(1, 2))
        dt = self.ss.dtype
        dots = dots.to(dt)
        self.ss[:, slot, :n] = dots[:, 0]
        self.ss[:, :n, slot] = dots[:, 0]
        self.sp[:, :n, slot] = dots[:, 1]
        self.sp[:, slot, :n] = batched_dots(p_buf, s_new).to(dt)
        rhs = dots[:, 2]
        order = self._time_order(n, slot, g.device)
        ss, sp = self.ss[:, :n, :n], self.sp[:, :n, :n]
        if order is not None:
            ss, sp, rhs = ss[:, order][:, :, order], sp[:, order][:, :, order], rhs[:, order]
        coef, info = torch.linalg.solve_ex(sp - ss.triu(), rhs.unsqueeze(2))
        coef = coef.squeeze(2)
        ok = (info == 0) & torch.isfinite(coef).all(dim=1)
        coef = torch.where(ok.unsqueeze(1), coef, 0.0)
        if order is not None:
            coef = torch.empty_like(coef).index_copy_(1, order, coef)
        step = torch.baddbmm(g.unsqueeze(1), coef.to(g.dtype).unsqueeze(1), p_buf, alpha=-1)
        step = step.squeeze(1)  # -H g = g - P coef
        step = keep_finite(step, lambda: g)
        self.prev_g, self.prev_step = g, step
        return z + step

    def restrict(self, index: Tensor) -> None:
        # fresh tensors: the workspace's buffers stay full-size (work is scratch: a prefix will do)
        self.s, self.p = self.s.index_select(0, index), self.p.index_select(0, index)
        self.ss, self.sp = self.ss.index_select(0, index), self.sp.index_select(0, index)
        self.work = self.work[: index.numel()]
        if self.prev_g is not None and self.prev_step is not None:
            self.prev_g = self.prev_g.index_select(0, index)
            self.prev_step = self.prev_step.index_select(0, index)

    def _time_order(self, n: int, newest: int, device: torch.device) -> Tensor | None:
        """Slots from oldest to newest pair, or ``None`` while they are in order already."""
        if self.count <= self.slots:
            return None
        return (torch.arange(1, n + 1, device=device) + newest) % self.slots


class BroydenSolver(IterativeSolver):
    """Batched limited-memory good Broyden keeping the last ``memory`` pairs."""

    Options = BroydenOptions

    def make_update(self, z0: Tensor, max_iter: int) -> UpdateRule:
        slots = max(1, min(self.options.memory, max_iter - 1))
        return _BroydenUpdate(z0, slots, self.workspace)
