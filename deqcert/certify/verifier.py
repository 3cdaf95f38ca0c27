"""The per-sample check of the ``verified`` certifier, in float64, and its rounds of votes.

For a map ``z -> f(z, u)`` that contracts with constant ``L < 1`` (L2 norm),
one evaluation ``y = f(z, u)`` bounds the distance of ``y`` to the exact
fixed point by ``L ||y - z|| / (1 - L)``; with the readout's pairwise
Lipschitz constants ``R`` that decides whether the exact fixed point predicts
the top class of ``y``.  :class:`Verifier` runs that check on a float64 copy
of the model, with slack for float64 rounding (:data:`REL_SLACK`,
:data:`ETA`, :data:`LOGIT_SLACK`); :func:`verified_votes` alternates cheap
solver steps and checks on a batch's undecided samples.  The proof and the
rounding argument: docs/concepts.md, "Verified smoothing: why the votes are
exact".
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import DeqcertError
from ..models.check import check_weights
from ..models.contractive import ContractiveModel
from ..protocols import ABSTAIN, FixedPointSolver, solve_with

REL_SLACK = 1e-6
"""Relative inflation of the residual ``||f(z) - z||`` (float64 norm rounding)."""
ETA = 1e-6
"""Absolute slack on the distance, per unit of ``1 + ||z|| + ||f(z)|| + ||u||``."""
LOGIT_SLACK = 1e-6
"""Slack on each margin, per unit of ``1 + max |logit|`` (float64 readout rounding)."""


class NotContractiveError(DeqcertError, TypeError):
    """The ``verified`` certifier was given a model without a usable contraction bound."""


@dataclass
class Verifier:
    """The per-sample check: a float64 copy of the model with its ``L`` and readout ``R``."""

    model: Any
    lipschitz: float
    method: str
    margin_lipschitz: Tensor

    @classmethod
    def for_model(cls, model: Any) -> Verifier:
        """Build the check for ``model``; :class:`NotContractiveError` if it has no usable bound.

        Call outside ``torch.inference_mode`` (the readout constants may use autograd).
        """
        name = getattr(model, "registry_name", "") or type(model).__name__
        if not isinstance(model, ContractiveModel) or not hasattr(model, "to"):
            raise NotContractiveError(
                f"verified: model '{name}' provides no contraction bound (it needs "
                "contraction_bound() and readout_lipschitz(), see "
                "deqcert.models.contractive.ContractiveModel); use a contractive-* model, "
                "the vanilla or serialized certifier, or fallback='vanilla'"
            )
        check_weights(model)  # NaN weights would fail inside the bound (LinAlgError)
        with torch.no_grad():
            exact = copy.deepcopy(model).to(torch.float64).eval()
            try:
                bound = exact.contraction_bound()
            except torch.linalg.LinAlgError as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise NotContractiveError(
                    f"verified: the contraction bound of model '{name}' could not be "
                    f"computed ({first}); use the vanilla or serialized certifier, or "
                    "fallback='vanilla'"
                ) from None
        lip = float(bound.lipschitz)
        if bound.norm != "l2" or not 0.0 <= lip < 1.0:
            raise NotContractiveError(
                f"verified: model '{name}' reports contraction constant {lip} in norm "
                f"'{bound.norm}'; the check needs L < 1 in the 'l2' norm"
            )
        margins = exact.readout_lipschitz().detach().to(torch.float64)
        classes = int(model.num_classes)
        if tuple(margins.shape) != (classes, classes) or not bool(torch.isfinite(margins).all()):
            raise NotContractiveError(
                f"verified: model '{name}' returned readout constants of shape "
                f"{tuple(margins.shape)}, expected finite ({classes}, {classes})"
            )
        return cls(exact, lip, bound.method, margins)

    def check(self, z: Tensor, u64: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Verify the states ``z`` (any dtype) of a batch whose float64 injection is ``u64``.

        Returns ``(verified, top, y)``: ``(B,)`` bool, whether the exact fixed
        point provably predicts ``top``; ``(B,)`` the top class of ``y``; and
        ``y = f(z, u)`` in float64, the point that was checked.
        """
        verified, top, y, _ = self.examine(z, u64)
        return verified, top, y

    def examine(self, z: Tensor, u64: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`check`, plus ``(B,)`` whether the checked point and its logits are finite.

        A sample that is not finite is never verified (it is no vote).
        """
        z64 = z.to(torch.float64)
        y = self.model.f(z64, u64)
        logits = self.model.readout(y)
        batch = z64.shape[0]
        residual = torch.linalg.vector_norm((y - z64).reshape(batch, -1), dim=1)
        scale = (
            1.0
            + torch.linalg.vector_norm(z64.reshape(batch, -1), dim=1)
            + torch.linalg.vector_norm(y.reshape(batch, -1), dim=1)
            + torch.linalg.vector_norm(u64.reshape(batch, -1), dim=1)
        )
        lip = self.lipschitz
        distance = (lip * residual * (1.0 + REL_SLACK) + ETA * scale) / (1.0 - lip)
        top = logits.argmax(dim=1)
        margin = logits.gather(1, top.unsqueeze(1)) - logits  # (B, C), 0 at top
        slack = LOGIT_SLACK * (1.0 + logits.abs().amax(dim=1, keepdim=True))
        needed = self.margin_lipschitz.to(logits.device)[top] * distance.unsqueeze(1) + slack
        beats = (margin > needed) | (
            torch.arange(logits.shape[1], device=top.device) == top[:, None]
        )
        finite = (
            torch.isfinite(logits).all(dim=1)
            & torch.isfinite(distance)
            & torch.isfinite(y.reshape(batch, -1)).all(dim=1)
        )
        verified = beats.all(dim=1) & finite
        return verified, top, y, finite


@dataclass
class StageLog:
    """Bookkeeping of one stage (selection or estimation)."""

    samples: int = 0
    undecided: int = 0
    extra_steps: int = 0
    nfe_solver: int = 0
    nfe_check: int = 0
    nonfinite: int = 0
    """Samples dropped because their state or logits were not finite (also undecided)."""

    @property
    def nfe(self) -> int:
        return self.nfe_solver + self.nfe_check

    def summary(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "undecided": self.undecided,
            "extra_steps": self.extra_steps,
            "nfe_solver": self.nfe_solver,
            "nfe_check": self.nfe_check,
            "nfe_per_sample": self.nfe / self.samples if self.samples else 0.0,
        }


def verified_votes(
    model: Any,
    verifier: Verifier,
    xb: Tensor,
    starts: Tensor | None,
    log: StageLog,
    *,
    solver: FixedPointSolver | None,
    max_steps: int,
) -> tuple[Tensor, Tensor]:
    """Verified predictions of a batch (``-1`` where undecided) and its final states.

    Rounds of ``solver`` steps and one float64 check, on the undecided
    samples only, until every sample is verified or ``max_steps``
    evaluations of ``f`` are spent (solver steps and checks together).
    Starts from ``starts`` (``(B, ...)`` warm states) or ``init_state``;
    ``log`` gets the batch's bookkeeping.
    """
    batch = xb.shape[0]
    u64 = verifier.model.inject(xb.to(torch.float64))
    u = u64.to(xb.dtype)
    z = (model.init_state(u) if starts is None else starts).clone()
    votes = torch.full((batch,), ABSTAIN, dtype=torch.long, device=xb.device)
    rounds = torch.zeros(batch, dtype=torch.long, device=xb.device)
    active = torch.arange(batch, device=xb.device)
    spent = 0
    while active.numel() and spent < max_steps:
        z_active, u_active = z[active], u[active]
        budget = max_steps - spent - 1
        if budget > 0 and solver is not None:
            result = solve_with(solver, _closed(model, u_active), z_active, max_iter=budget)
            z_active = result.z
            spent += int(result.nfe)
            log.nfe_solver += int(result.nfe) * active.numel()
        verified, top, y, finite = verifier.examine(z_active, u64[active])
        spent += 1
        log.nfe_check += active.numel()
        rounds[active] += 1
        z[active] = y.to(z.dtype)
        done = active[verified]
        votes[done] = top[verified]
        broken = int((~finite).sum())  # never verified, and no further step can fix NaN
        log.nonfinite += broken
        log.undecided += broken
        active = active[~verified & finite]
    log.samples += batch
    log.undecided += int(active.numel())
    log.extra_steps += int(((rounds > 1) & (votes >= 0)).sum())
    return votes, z


def _closed(model: Any, u: Tensor) -> Callable[[Tensor], Tensor]:
    """The map ``z -> model.f(z, u)`` for a fixed injection ``u``."""
    return lambda z: model.f(z, u)  # type: ignore[no-any-return]
