"""The iteration loop and stop rules shared by the built-in fixed-point solvers.

Every built-in iterative solver is the same loop (:func:`iterate`) around a
solver-specific *update rule*; the loop owns everything the solvers have in
common: residuals, per-sample stopping and freezing, NFE and step counting,
and building the :class:`~deqcert.protocols.SolverResult`.

Semantics (identical for every solver built on :func:`iterate`):

* One **step** is one evaluation of ``f`` on the whole batch followed by one
  update.  ``max_iter=T`` allows ``T`` steps, so ``nfe <= T``.
* At step ``k`` the loop evaluates ``f(z_k)`` and measures each sample's
  residual ``r = ||f(z_k) - z_k||`` (``"abs"``) or
  ``r / (||f(z_k)|| + REL_EPS)`` (``"rel"``), norms over all non-batch dims.
* A sample with ``r <= tol`` is **converged**: its returned state is
  ``f(z_k)`` (already computed, so it costs nothing), it is frozen (its state
  never changes again) and it stops counting steps.  A warm start at the fixed
  point therefore finishes after exactly one step and one evaluation.
* The other samples take the solver's update to ``z_{k+1}``.  A sample still
  unconverged after ``T`` steps returns its last update ``z_T``; its reported
  residual is the last one measured (that of ``z_{T-1}``).
* ``steps`` counts the evaluations each sample took part in until it
  converged; the loop stops once every sample has converged.

**No host reads.**  Freezing is masked on the device; the loop's decisions
(stop, compact) use :class:`~deqcert.solvers._progress.Progress`, the host's
view of the number of finished rows: exact on the CPU, so the loop stops after
exactly the evaluations described above; on CUDA a step or two late, so the
loop may evaluate ``f`` up to about two more times (counted in NFE) with every
sample's state, steps and residual unchanged.

**Compaction** (option ``compact``, on by default).  Frozen samples still cost a row of
every batched evaluation of ``f``.  When ``f`` is a :class:`RowwiseMap` (its
rows do not interact, e.g. a DEQ in eval mode closed over its injection ``u``)
and the update rule supports it, the loop drops finished rows from the working
set once the host knows a quarter of it has converged (:data:`COMPACT_SHARE`):
``f`` and the update then run on the unfinished rows only (with a late count,
also on a few finished rows, which stay frozen).  The results are the same as
without compaction (up to floating-point differences between batch sizes); NFE
still counts calls of ``f``, and :attr:`IterationResult.evaluations` counts
the rows actually evaluated.  Any other callable is evaluated on the whole
batch, as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from ..options import ComponentOptions
from ..protocols import SolverResult
from ._linalg import flat_norm
from ._progress import Progress, reads_free
from ._workspace import Workspace
from .rowwise import RowwiseMap

REL_EPS = 1e-9
"""Added to ``||f(z)||`` in ``"rel"`` mode to avoid 0/0 (the same value as TorchDEQ)."""

COMPACT_SHARE = 0.25
"""With ``compact=True``, the working set shrinks once this share of it is finished.

Shrinking copies the unfinished rows of the iterate and of the update's history
(for Anderson ``2 m + 1`` rows of state per sample), far cheaper than
evaluating ``f`` on a row, so a quarter of the rows idle is already worth it.
"""

StopMode = Literal["abs", "rel"]
Map = Callable[[Tensor], Tensor]


class SolverOptions(ComponentOptions):
    """Options every built-in iterative solver accepts."""

    max_iter: int = Field(30, ge=1, description="Maximum number of steps (evaluations of f).")
    tol: float = Field(1e-3, gt=0, description="Per-sample residual tolerance.")
    stop_mode: StopMode = Field("rel", description="'abs': ||f(z)-z||; 'rel': divided by ||f(z)||.")
    compact: bool = Field(
        True,
        description="Evaluate a RowwiseMap f on the unconverged rows only (same results, less f).",
    )


@dataclass
class IterationResult(SolverResult):
    """A :class:`~deqcert.protocols.SolverResult` that also counts evaluated rows.

    ``evaluations`` is the number of per-sample evaluations of ``f``: ``nfe``
    times the batch size, unless compaction evaluated fewer rows.
    """

    evaluations: int = -1
    settled: bool = False
    """True when the loop knows, without reading the device, that every sample converged.

    Always exact on the CPU; on CUDA False may also mean "not known yet"
    (the host's view lags, see :mod:`deqcert.solvers._progress`).
    """


def residual(g: Tensor, fz: Tensor, stop_mode: str) -> Tensor:
    """Per-sample residual from ``g = f(z) - z`` and ``f(z)``, both ``(B, D)``."""
    r = flat_norm(g)
    if stop_mode == "rel":
        r = r / (flat_norm(fz) + REL_EPS)
    return r


def check_state(z0: Tensor) -> None:
    """Reject a starting point that is not a non-empty batch ``(B, ...)``."""
    if z0.dim() < 1 or z0.shape[0] == 0:
        raise ValueError(f"z0 must have shape (B, ...) with B >= 1, got {tuple(z0.shape)}")


class UpdateRule:
    """A solver's update: maps the current iterate to the next one.

    Called once per step with flat ``(B, D)`` tensors ``z`` (the iterate),
    ``fz = f(z)`` and ``g = fz - z``, and the 0-based step index ``k``.  The
    loop masks frozen samples afterwards, so a rule may compute garbage for
    them but must return finite values for finite active inputs (fall back to
    a plain step where its own update is not finite).  ``g`` may live in a
    scratch buffer: it stays valid until the end of the *next* call, no longer.
    The returned tensor must not alias scratch space (it may be ``fz``).

    Rules with ``compactable = True`` implement :meth:`restrict`, which the
    loop calls (with ``compact=True``) to drop finished rows from their state.
    """

    compactable: ClassVar[bool] = False

    def __call__(self, k: int, z: Tensor, fz: Tensor, g: Tensor) -> Tensor:
        raise NotImplementedError

    def restrict(self, index: Tensor) -> None:
        """Keep only the per-sample state of rows ``index`` of the current working set."""
        raise NotImplementedError


def iterate(
    f: Map,
    z0: Tensor,
    options: SolverOptions,
    update: UpdateRule,
    *,
    frozen: Tensor | None = None,
    max_iter: int | None = None,
    workspace: Workspace | None = None,
) -> IterationResult:
    """Run the batched fixed-point loop described in the module docstring.

    Args:
        f: the map, called on ``(B, ...)`` tensors shaped like ``z0`` (on fewer
            rows only if it is a :class:`RowwiseMap` and ``options.compact``).
        z0: ``(B, ...)`` starting point (warm start).
        options: ``max_iter``, ``tol``, ``stop_mode`` and ``compact``.
        update: the solver's update rule.
        frozen: optional ``(B,)`` bool mask of samples that are already done:
            they keep ``z0``, take no steps and count as converged.
        max_iter: optional tighter step budget (``min`` with the option).
        workspace: where to keep the residual buffers between calls.
    """
    check_state(z0)
    shape = z0.shape
    batch = shape[0]
    device = z0.device
    budget = options.max_iter if max_iter is None else min(options.max_iter, max_iter)
    tol = options.tol
    compact = (
        bool(getattr(options, "compact", False))
        and isinstance(f, RowwiseMap)
        and update.compactable
    )
    z = z0.reshape(batch, -1)
    # the host's view of how many working rows are finished (exact on the CPU,
    # a step or two late on CUDA: see _progress); done itself stays on the device
    progress = Progress(device)
    shortcuts = reads_free(device)
    if frozen is None:
        done = torch.zeros(batch, dtype=torch.bool, device=device)
    else:
        done = frozen.to(device=device, dtype=torch.bool).clone()
    # where reads are free, the finished rows are also kept as an index (done_idx)
    done_idx = done.nonzero().squeeze(1) if shortcuts else done[:0]
    if shortcuts:
        progress.add(done_idx.numel())
    elif frozen is not None:
        progress.push(done.sum())
    steps = torch.zeros(batch, dtype=torch.long, device=device)
    res = torch.full((batch,), math.inf, dtype=z.dtype, device=device)
    nfe = evaluations = 0
    # z, done, steps and res describe the working rows; out holds the whole batch
    # once compaction has dropped rows (out.rows: batch index of each working row)
    out: _Compacted | None = None
    for k in range(budget):
        width = z.shape[0]
        n_done = progress.known()
        if n_done == width:
            break
        if compact and n_done >= COMPACT_SHARE * width:
            # the unfinished rows first, in order (a stable sort: no host read); with
            # a late count a few finished rows stay in the working set, still frozen
            keep = torch.argsort(done.to(torch.uint8), stable=True)[: width - n_done]
            if out is None:
                out = _Compacted(z, steps, res, done, keep)
            else:
                out.drop(z, steps, res, done, keep)
            z, steps = z.index_select(0, keep), steps.index_select(0, keep)
            res, done = res.index_select(0, keep), done.index_select(0, keep)
            width -= n_done
            progress.reset()
            done_idx = keep[:0]  # (exact there: no finished row kept)
            f = f.restrict(keep)  # type: ignore[attr-defined]
            update.restrict(keep)
        fz = f(z.view(width, *shape[1:])).reshape(width, -1)
        nfe += 1
        evaluations += width
        if workspace is None or fz.requires_grad:
            g = fz - z
        else:  # two alternating buffers: the rule may still read the previous g
            g = torch.sub(fz, z, out=workspace.get(f"g{k % 2}", tuple(fz.shape), fz))
        r = residual(g, fz, options.stop_mode)
        active = ~done
        steps += active
        res = torch.where(active, r, res)
        newly = active & (r <= tol)
        if shortcuts:
            new_idx = newly.nonzero().squeeze(1)
            progress.add(new_idx.numel())
        else:
            progress.push((done | newly).sum())
        if progress.known() == width:  # everyone is done: no update needed
            z, done = torch.where(newly.unsqueeze(1), fz, z), done | newly
            break
        z_next = update(k, z, fz, g)
        if not shortcuts:
            z, done = _freeze(z_next, z, fz, done.unsqueeze(1), newly.unsqueeze(1)), done | newly
            continue
        z = _freeze_rows(z_next, z, fz, done_idx, new_idx)
        if new_idx.numel():
            done = done | newly
            done_idx = done.nonzero().squeeze(1)
    settled = progress.known() == z.shape[0]  # dropped rows are all finished
    if out is not None:
        z, steps, res, done = out.finish(z, steps, res, done)
    return IterationResult(
        z=z.view(shape),
        nfe=nfe,
        residual=res,
        steps=steps,
        converged=done,
        evaluations=evaluations,
        settled=settled,
    )


def _freeze(z_next: Tensor, z: Tensor, fz: Tensor, done: Tensor, newly: Tensor) -> Tensor:
    """``z_next`` where frozen rows (``done``) keep ``z`` and newly converged ones take ``fz``.

    Masked on the device (no host read).  In place when ``z_next`` is the rule's own
    tensor (a fresh tensor per step costs more than the masking itself on the CPU);
    ``f``'s output and the iterate are not ours to modify.
    """
    if z_next is fz:  # a plain step: newly converged rows already hold f(z)
        return torch.where(done, z, fz)
    if z_next.requires_grad or _shares_memory(z_next, fz, z):
        return torch.where(done, z, torch.where(newly, fz, z_next))
    torch.where(newly, fz, z_next, out=z_next)
    return torch.where(done, z, z_next, out=z_next)


def _freeze_rows(
    z_next: Tensor, z: Tensor, fz: Tensor, done_idx: Tensor, new_idx: Tensor
) -> Tensor:
    """:func:`_freeze` with the rows as indices (where reading them was free)."""
    if not (done_idx.numel() or new_idx.numel()):
        return z_next
    if _shares_memory(z_next, fz, z):
        z_next = z_next.clone()
    z_next.index_copy_(0, done_idx, z.index_select(0, done_idx))
    return z_next.index_copy_(0, new_idx, fz.index_select(0, new_idx))


def _shares_memory(x: Tensor, *others: Tensor) -> bool:
    """Whether ``x`` lives in the storage of any of ``others``."""
    ptr = x.untyped_storage().data_ptr()
    return any(ptr == other.untyped_storage().data_ptr() for other in others)


class _Compacted:
    """The whole batch's final states and statistics while the loop runs on fewer rows."""

    def __init__(self, z: Tensor, steps: Tensor, res: Tensor, done: Tensor, keep: Tensor) -> None:
        # the loop replaces (never modifies) these tensors from now on, except z,
        # which may be f's own output: copy it
        self.z, self.steps, self.res, self.done = z.clone(), steps, res, done
        self.rows = keep

    def drop(self, z: Tensor, steps: Tensor, res: Tensor, done: Tensor, keep: Tensor) -> None:
        """Record the working rows' current values, then keep working on rows ``keep``."""
        self._store(z, steps, res, done)
        self.rows = self.rows.index_select(0, keep)

    def finish(
        self, z: Tensor, steps: Tensor, res: Tensor, done: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The whole batch's ``(z, steps, residual, converged)``."""
        self._store(z, steps, res, done)
        return self.z, self.steps, self.res, self.done

    def _store(self, z: Tensor, steps: Tensor, res: Tensor, done: Tensor) -> None:
        self.z.index_copy_(0, self.rows, z)
        self.steps.index_copy_(0, self.rows, steps)
        self.res.index_copy_(0, self.rows, res)
        self.done.index_copy_(0, self.rows, done)
