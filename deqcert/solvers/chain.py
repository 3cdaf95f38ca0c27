"""A fallback chain: each solver continues the samples the previous ones left unconverged.

Stage 1 runs on the whole batch; a sample it does not converge continues with
stage 2 from its current state, and so on.  Converged samples stay frozen.
``max_iter`` is the step budget of the whole chain: a stage runs at most its
own ``max_iter`` and at most what the earlier stages left.  A stage that does
not opt into :class:`~deqcert.protocols.BudgetedSolver` cannot be capped, and
one that does not opt into :class:`~deqcert.protocols.MaskedSolver` steps the
whole batch: only its results for unfinished samples are kept.  NFE and
per-sample steps are summed over the stages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import Field, field_validator
from torch import Tensor

from .. import syncs
from ..errors import OptionError
from ..protocols import FixedPointSolver, SolverResult, solve_with
from .base import SolverBase
from .loop import IterationResult, Map, SolverOptions
from .rowwise import row_evaluations

DEFAULT_STAGES: list[Any] = [{"name": "anderson", "max_iter": 20}, {"name": "naive"}]


class ChainOptions(SolverOptions):
    """Options of :class:`ChainSolver`.

    ``tol`` and ``stop_mode`` (and ``max_iter`` as a per-stage default) are
    passed to stages given as ``{"name": ..., **options}`` dicts that do not set
    them, and so is ``compact`` when the stage has that option; stages given as
    solver objects are used as they are.
    """

    solvers: list[Any] = Field(
        default_factory=lambda: [dict(s) for s in DEFAULT_STAGES],
        min_length=1,
        description="Stages: solver objects or {'name': ..., **options} dicts.",
    )

    @field_validator("solvers")
    @classmethod
    def _check_stages(cls, stages: list[Any]) -> list[Any]:
        for stage in stages:
            if isinstance(stage, Mapping):
                if not isinstance(stage.get("name"), str):
                    raise ValueError("a stage dict needs a 'name' string")
            elif not isinstance(stage, FixedPointSolver):
                raise ValueError(f"a stage must be a solver or a dict, got {type(stage).__name__}")
        return stages


class ChainSolver(SolverBase):
    """Runs its stages in turn on the samples that are not converged yet."""

    Options = ChainOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.stages: list[Any] = [self._build(stage) for stage in self.options.solvers]

    def _build(self, stage: Any) -> Any:
        if not isinstance(stage, Mapping):
            return stage
        from ..registry import create_solver, solvers  # the registry imports solvers lazily

        opts = {k: v for k, v in stage.items() if k != "name"}
        for key in ("max_iter", "tol", "stop_mode"):
            opts.setdefault(key, getattr(self.options, key))
        known = getattr(getattr(solvers.get(stage["name"]), "Options", None), "model_fields", {})
        if "compact" in known:  # a plugin stage may not have the option
            opts.setdefault("compact", self.options.compact)
        try:
            return create_solver(stage["name"], **opts)
        except OptionError as exc:
            raise OptionError(f"chain stage '{stage['name']}': {exc}") from None

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["solvers"] = [stage.describe() for stage in self.stages]
        return out

    def _solve(self, f: Map, z0: Tensor, frozen: Tensor | None, budget: int) -> SolverResult:
        """Run the stages in turn; see the module docstring."""
        batch, device = z0.shape[0], z0.device
        mask_shape = (batch,) + (1,) * (z0.dim() - 1)
        done = (
            torch.zeros(batch, dtype=torch.bool, device=device)
            if frozen is None
            else frozen.to(device=device, dtype=torch.bool)
        )
        steps = torch.zeros(batch, dtype=torch.long, device=device)
        res = torch.full((batch,), float("inf"), dtype=z0.dtype, device=device)
        z, nfe, evaluations, remaining = z0, 0, 0, budget
        settled = False  # known on the host that every sample is done
        for stage in self.stages:
            if remaining <= 0 or settled or _all_done(stage, done):
                break
            # capped and masked where the stage opts in (BudgetedSolver, MaskedSolver);
            # otherwise it runs on everything with its own budget
            r = solve_with(stage, f, z, max_iter=remaining, frozen=done)
            active = ~done
            z = torch.where(active.view(mask_shape), r.z, z)
            steps = steps + torch.where(active, r.steps.to(steps.device), 0)
            res = torch.where(active, r.residual.to(res), res)
            done = done | (active & r.converged.to(done.device))
            nfe += r.nfe
            evaluations += row_evaluations(r, batch)
            remaining -= r.nfe
            settled = bool(getattr(r, "settled", False))
        return IterationResult(
            z=z,
            nfe=nfe,
            residual=res,
            steps=steps,
            converged=done,
            evaluations=evaluations,
            settled=settled,
        )


def _all_done(stage: Any, done: Tensor) -> bool:
    """Whether every sample is done before ``stage`` runs, asking the device only if needed.

    A built-in stage (built on :func:`~deqcert.solvers.loop.iterate`) handles an
    all-frozen batch itself: on the CPU it stops before its first evaluation, on CUDA
    within a step or two, without a host read.  Any other stage (a plugin, possibly run
    on the whole batch) is skipped only after reading the device, once per stage.
    """
    if isinstance(stage, SolverBase):
        return False
    syncs.note("chain: before a stage that is not built in")
    return bool(done.all())
