"""Exact serialized smoothing for contractive DEQs: every vote checked against the true fixed point.

If ``z -> f(z, u)`` is a contraction with constant ``L < 1`` (L2 norm), then
for any state ``z`` and its image ``y = f(z, u)`` the exact fixed point ``z*``
satisfies

    ||y - z*|| <= L ||z - z*|| <= L ||y - z|| / (1 - L).

If moreover every logit difference ``m_ab = logit_a - logit_b`` of the readout
is ``R[a, b]``-Lipschitz, then ``m_ab(z*) >= m_ab(y) - R[a, b] ||y - z*||``, so
when the top class ``a`` of ``y`` beats every ``b`` by more than
``R[a, b] L ||y - z|| / (1 - L)`` the exact fixed point predicts ``a`` too.  A
sample that passes this check is an exact draw of

    h_exact(x + e) = argmax readout(z*(x + e)),

the prediction of the **true** fixed point (unique, since ``f`` contracts),
however its solve was started or truncated.  That is the base classifier this
certifier smooths.  (It differs from ``h_ref``, the classifier vanilla and
serialized smoothing certify, only where the reference solve stops before its
prediction is settled.)

CERTIFY draws ``n0`` then ``n`` i.i.d. noisy inputs in batches.  Each batch
starts from warm states (``chain_start``) and proceeds in *rounds*: a few
steps of the cheap ``solver`` on the samples still undecided (none with
``solver=None``), then one check evaluation ``y = f(z, u)``; samples that
pass leave the batch (they are indexed out, so only undecided samples keep
stepping), the others continue from ``y`` (the check is itself a Picard
step).  Samples decided after their first round are the cheap case; the
certificate counts the others as ``extra_steps``.  A sample still undecided
after ``max_steps`` evaluations of ``f`` counts as a vote **against** the top
class.  The verified votes for ``A`` are therefore at most the number of
``h_exact(x + e_i) = A`` among ``n`` i.i.d. draws, and the plain
Clopper-Pearson bound on them is valid with no correction and no cap -- warm
starts (anchor, chains) cost nothing in soundness because each vote is
certified individually.

Floating point.  The solver runs in the model's dtype; the check does not
trust it.  It evaluates ``u``, ``y = f(z, u)``, ``||y - z||`` and the logits
with a float64 copy of the model, and uses ``L`` and ``R`` computed by the
model in float64 from the weights that copy uses (see
:mod:`deqcert.lipschitz`).  If the computed ``y`` is within ``delta`` of the
exact image (rounding of the injection and of ``f``), the same argument gives
``||y - z*|| <= (L ||y - z|| + delta) / (1 - L)``.  The gap between float64
and exact arithmetic (``delta``, and the rounding of the norm and of the
readout, each a few multiples of ``fan-in * 2^-53`` of the norms involved) is
covered by a slack, added on the unsafe side of every comparison:

* distance: ``(L ||y - z|| (1 + REL_SLACK) + ETA (1 + ||z|| + ||y|| + ||u||)) / (1 - L)``;
* margin: it must exceed ``R[a, b]`` times that distance plus
  ``LOGIT_SLACK (1 + max |logit|)``.

With ``REL_SLACK = ETA = LOGIT_SLACK = 1e-6`` the slack exceeds these
rounding errors by several orders of magnitude for any fan-in below ``10^6``
and any map whose sensitivity to ``u`` is not extreme (it is 1 for the
built-in contractive models), while it is far below the solver's own
precision, so it never costs a decision in practice.

A model that provides no contraction bound (it does not implement
:class:`~deqcert.models.contractive.ContractiveModel`, or its ``L`` is not
below 1 in the L2 norm) is refused with :class:`NotContractiveError` unless
``fallback="vanilla"``: then the input is certified by Cohen et al.'s CERTIFY
with a full ``reference_solver`` solve per sample (the base classifier is
``h_ref``), and the certificate says so in ``extra['fallback']``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from ..errors import DeqcertError
from ..models.contractive import ContractiveModel
from ..options import Configurable
from ..protocols import ABSTAIN, Certificate, EquilibriumModel, FixedPointSolver, Prediction
from ..solvers._common import SolverBase
from ..specs import OptionalSolverOption
from . import bounds
from ._sampling import (
    SmoothingOptions,
    SolverOption,
    batch_sizes,
    check_input,
    clopper_pearson_cap,
    decide,
    describe,
    evaluating,
    noisy_batch,
    solver_field,
)
from .serialized import _advance, _chain_starts

REL_SLACK = 1e-6
"""Relative inflation of the residual ``||f(z) - z||`` (float64 norm rounding)."""
ETA = 1e-6
"""Absolute slack on the distance, per unit of ``1 + ||z|| + ||f(z)|| + ||u||``."""
LOGIT_SLACK = 1e-6
"""Slack on each margin, per unit of ``1 + max |logit|`` (float64 readout rounding)."""

BOUND = "clopper-pearson (exact-serialized)"
CERTIFIED_CLASSIFIER = (
    "h_exact: the prediction of the exact fixed point of the contractive map "
    "(each vote verified; undecided samples count against the top class)"
)
FALLBACK_NOTE = (
    "vanilla: the model provides no contraction bound; every sample was solved in full by "
    "reference_solver and the smoothed classifier is h_ref"
)


class NotContractiveError(DeqcertError, TypeError):
    """The ``verified`` certifier was given a model without a usable contraction bound."""


OptionalSolver = OptionalSolverOption
"""Option type: a fixed-point solver, a ``{"name": ..., **options}`` spec, or None."""


class VerifiedOptions(SmoothingOptions):
    """Options of :class:`VerifiedCertifier`."""

    solver: OptionalSolver = solver_field(
        "Cheap per-round solver, run on the undecided samples between checks "
        "(None: no solver, every evaluation of f is a checked Picard step in float64).",
        max_iter=2,
        tol=1e-4,
    )
    max_steps: int = Field(
        50,
        ge=1,
        description="Per-sample budget of evaluations of f (solver steps and checks); "
        "samples still undecided then vote against the top class.",
    )
    chain_start: Literal["anchor", "chain", "zeros"] = Field(
        "anchor",
        description="Warm start of every batch: the clean input's fixed point, the previous "
        "batch's final states, or init_state.",
    )
    reference_solver: SolverOption = solver_field(
        "Full solve of the clean input (anchor) and of every sample with fallback='vanilla'.",
        max_iter=30,
        tol=1e-3,
    )
    fallback: Literal["error", "vanilla"] = Field(
        "error",
        description="For a model without a contraction bound: raise NotContractiveError, or "
        "run vanilla smoothing with reference_solver.",
    )


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
        with torch.no_grad():
            exact = copy.deepcopy(model).to(torch.float64).eval()
            bound = exact.contraction_bound()
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
        verified = beats.all(dim=1) & torch.isfinite(logits).all(dim=1) & torch.isfinite(distance)
        return verified, top, y


@dataclass
class StageLog:
    """Bookkeeping of one stage (selection or estimation)."""

    samples: int = 0
    undecided: int = 0
    extra_steps: int = 0
    nfe_solver: int = 0
    nfe_check: int = 0

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


class VerifiedCertifier(Configurable):
    """Randomized smoothing of ``h_exact`` with warm-started, individually verified votes.

    Needs a :class:`~deqcert.models.contractive.ContractiveModel` (e.g.
    ``contractive-mlpdeq``).  The certificate's ``counts`` hold ``n_A``
    (verified votes for ``A`` among ``n``), ``n0_A``, ``undecided`` and
    ``extra_steps`` (estimation samples still undecided at ``max_steps``, and
    samples that needed more than one round), and the same for selection
    (``selection_*``).  ``unconverged_fraction`` is the share of all samples
    left undecided.  ``extra`` records ``L``, the readout constants, the NFE
    split and the certified classifier.
    """

    Options = VerifiedOptions
    registry_name = "verified"
    options: Any

    # -- CERTIFY ----------------------------------------------------------------
    def certify(
        self, model: EquilibriumModel, x: Tensor, *, generator: torch.Generator
    ) -> Certificate:
        """CERTIFY: pick ``A`` on ``n0`` verified draws, bound ``p_A`` on ``n`` fresh ones.

        Abstains (prediction -1, radius 0) unless the Clopper-Pearson lower
        bound on the verified votes for ``A`` exceeds 1/2; undecided samples
        count against ``A``.  Valid with probability ``>= 1 - alpha`` for the
        smoothed ``h_exact``.
        """
        start = time.perf_counter()
        check_input(model, x, generator)
        verifier = self._verifier(model)
        if verifier is None:
            return self._fallback_certify(model, x, generator)
        o = self.options
        selection_log, estimation_log = StageLog(), StageLog()
        with evaluating(model):
            anchor, anchor_nfe = self._anchor(model, x)
            selection, chains = self._vote(
                model, verifier, x, o.n0, generator, anchor, selection_log
            )
            candidate = int(selection.argmax())
            estimation, _ = self._vote(
                model, verifier, x, o.n, generator, anchor, estimation_log, chains
            )
        n_a = int(estimation[candidate])
        p_lower = bounds.clopper_pearson_lower(n_a, o.n, o.alpha)
        prediction, radius = decide(candidate, p_lower, o.noise)
        total = o.n0 + o.n
        undecided = selection_log.undecided + estimation_log.undecided
        return Certificate(
            prediction=prediction,
            radius=radius,
            p_lower=p_lower,
            counts={
                "n_A": n_a,
                "n0_A": int(selection[candidate]),
                "undecided": estimation_log.undecided,
                "extra_steps": estimation_log.extra_steps,
                "selection_undecided": selection_log.undecided,
                "selection_extra_steps": selection_log.extra_steps,
            },
            n0=o.n0,
            n=o.n,
            alpha=o.alpha,
            alpha_split={"clopper_pearson": o.alpha},
            bound=BOUND,
            sound=True,
            noise=describe(o.noise),
            norm=o.noise.norm,
            solvers=self._solvers(),
            nfe=selection_log.nfe + estimation_log.nfe + anchor_nfe,
            seconds=time.perf_counter() - start,
            unconverged_fraction=undecided / total,
            **clopper_pearson_cap(o, p_lower, prediction),
            extra={
                "candidate": candidate,
                "certified_classifier": CERTIFIED_CLASSIFIER,
                "lipschitz": verifier.lipschitz,
                "contraction_norm": "l2",
                "contraction_method": verifier.method,
                "readout_lipschitz": float(verifier.margin_lipschitz.max()),
                "check_dtype": "float64",
                "chain_start": o.chain_start,
                "batch_size": o.batch_size,
                "max_steps": o.max_steps,
                "nfe": {
                    "solver": selection_log.nfe_solver + estimation_log.nfe_solver,
                    "check": selection_log.nfe_check + estimation_log.nfe_check,
                    "anchor": anchor_nfe,
                },
                "stages": {
                    "selection": selection_log.summary(),
                    "estimation": estimation_log.summary(),
                },
                "selection_counts": selection.tolist(),
                "estimation_counts": estimation.tolist(),
            },
        )

    # -- PREDICT ----------------------------------------------------------------
    def predict(
        self, model: EquilibriumModel, x: Tensor, *, generator: torch.Generator
    ) -> Prediction:
        """PREDICT on ``n`` verified draws: Cohen et al.'s binomial test, conservatively.

        ``n1`` = verified votes for the top class, ``n2`` = the runner-up's
        verified votes **plus** every undecided sample; abstains unless the
        two-sided test of ``n1`` out of ``n1 + n2`` against 1/2 has p-value
        ``<= alpha``.  Undecided samples can only raise the p-value, so the
        guarantee of the test on ``h_exact`` is kept.
        """
        start = time.perf_counter()
        check_input(model, x, generator)
        verifier = self._verifier(model)
        if verifier is None:
            prediction = self._vanilla().predict(model, x, generator=generator)
            prediction.extra["fallback"] = FALLBACK_NOTE
            return prediction
        o = self.options
        log = StageLog()
        with evaluating(model):
            anchor, anchor_nfe = self._anchor(model, x)
            counts, _ = self._vote(model, verifier, x, o.n, generator, anchor, log)
        top2 = torch.topk(counts, k=min(2, counts.numel()))
        top = int(top2.indices[0])
        n1 = int(top2.values[0])
        n2 = (int(top2.values[1]) if counts.numel() > 1 else 0) + log.undecided
        p_value = bounds.binomial_test_pvalue(n1, n1 + n2)
        return Prediction(
            prediction=top if n1 > n2 and p_value <= o.alpha else ABSTAIN,
            counts={"n1": n1, "n2": n2, "undecided": log.undecided},
            p_value=p_value,
            n=o.n,
            alpha=o.alpha,
            nfe=log.nfe + anchor_nfe,
            seconds=time.perf_counter() - start,
            extra={
                "top": top,
                "class_counts": counts.tolist(),
                "sound": True,
                "certified_classifier": CERTIFIED_CLASSIFIER,
                "extra_steps": log.extra_steps,
                "unconverged_fraction": log.undecided / o.n,
            },
        )

    def describe(self) -> dict[str, Any]:
        """Name and options, plus the bound's name and that it is sound."""
        return {**super().describe(), "bound": BOUND, "sound": True}

    def check_model(self, model: Any) -> None:
        """Raise :class:`NotContractiveError` now if ``model`` cannot be certified (no fallback).

        Pipelines call this before writing any output file.
        """
        self._verifier(model)

    # -- sampling ---------------------------------------------------------------
    def _verifier(self, model: Any) -> Verifier | None:
        """The check for ``model``, or None to fall back to vanilla smoothing."""
        try:
            return Verifier.for_model(model)
        except NotContractiveError:
            if self.options.fallback == "vanilla":
                return None
            raise

    def _anchor(self, model: Any, x: Tensor) -> tuple[Tensor | None, int]:
        """The clean input's fixed point by ``reference_solver`` (``chain_start='anchor'``)."""
        if self.options.chain_start != "anchor":
            return None, 0
        u = model.inject(x.unsqueeze(0))
        result = self.options.reference_solver.solve(lambda z: model.f(z, u), model.init_state(u))
        return result.z, int(result.nfe)

    def _vote(
        self,
        model: Any,
        verifier: Verifier,
        x: Tensor,
        num: int,
        generator: torch.Generator,
        anchor: Tensor | None,
        log: StageLog,
        chains: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Class counts of the verified votes over ``num`` fresh draws, and the chains' states.

        Each batch starts from ``anchor`` when given, else from ``chains``
        (``chain_start='chain'``), else from ``init_state``.
        """
        o = self.options
        counts = torch.zeros(model.num_classes, dtype=torch.long, device=x.device)
        for size in batch_sizes(num, o.batch_size):
            xb = noisy_batch(x, o.noise, size, generator)
            if anchor is not None:
                starts: Tensor | None = anchor.expand(size, *anchor.shape[1:])
            elif chains is not None:
                starts = _chain_starts(chains, size)
            else:
                starts = None
            votes, states = self._classify(model, verifier, xb, starts, log)
            counts += torch.bincount(votes[votes >= 0], minlength=model.num_classes)
            if o.chain_start == "chain":
                chains = states if chains is None else _advance(chains, states)
        return counts, chains

    def _classify(
        self,
        model: Any,
        verifier: Verifier,
        xb: Tensor,
        starts: Tensor | None,
        log: StageLog,
    ) -> tuple[Tensor, Tensor]:
        """Verified predictions of a batch (``-1`` where undecided) and its final states.

        Rounds of ``solver`` steps and one float64 check, on the undecided
        samples only, until every sample is verified or ``max_steps``
        evaluations of ``f`` are spent.
        """
        o = self.options
        batch = xb.shape[0]
        u64 = verifier.model.inject(xb.to(torch.float64))
        u = u64.to(xb.dtype)
        z = (model.init_state(u) if starts is None else starts).clone()
        votes = torch.full((batch,), ABSTAIN, dtype=torch.long, device=xb.device)
        rounds = torch.zeros(batch, dtype=torch.long, device=xb.device)
        active = torch.arange(batch, device=xb.device)
        spent = 0
        while active.numel() and spent < o.max_steps:
            z_active, u_active = z[active], u[active]
            budget = o.max_steps - spent - 1
            if budget > 0 and o.solver is not None:
                result = _solve(o.solver, lambda q, ua=u_active: model.f(q, ua), z_active, budget)
                z_active = result.z
                spent += int(result.nfe)
                log.nfe_solver += int(result.nfe) * active.numel()
            verified, top, y = verifier.check(z_active, u64[active])
            spent += 1
            log.nfe_check += active.numel()
            rounds[active] += 1
            z[active] = y.to(z.dtype)
            done = active[verified]
            votes[done] = top[verified]
            active = active[~verified]
        log.samples += batch
        log.undecided += int(active.numel())
        log.extra_steps += int(((rounds > 1) & (votes >= 0)).sum())
        return votes, z

    # -- fallback and records -----------------------------------------------------
    def _vanilla(self) -> Any:
        from .vanilla import VanillaCertifier

        o = self.options
        return VanillaCertifier(
            noise=o.noise,
            solver=o.reference_solver,
            n0=o.n0,
            n=o.n,
            alpha=o.alpha,
            batch_size=o.batch_size,
        )

    def _fallback_certify(
        self, model: EquilibriumModel, x: Tensor, generator: torch.Generator
    ) -> Certificate:
        certificate: Certificate = self._vanilla().certify(model, x, generator=generator)
        certificate.extra["fallback"] = FALLBACK_NOTE
        certificate.extra["certified_classifier"] = "h_ref (reference_solver from init_state)"
        return certificate

    def _solvers(self) -> dict[str, Any]:
        o = self.options
        out: dict[str, Any] = {
            "solver": describe(o.solver) if o.solver is not None else None,
            "max_steps": o.max_steps,
        }
        if o.chain_start == "anchor":
            out["reference_solver"] = describe(o.reference_solver)
        return out


def _solve(solver: FixedPointSolver, f: Any, z0: Tensor, budget: int) -> Any:
    """``solver.solve(f, z0)``, capped at ``budget`` steps when the solver supports it."""
    if isinstance(solver, SolverBase):
        return solver.solve(f, z0, max_iter=budget)
    return solver.solve(f, z0)
