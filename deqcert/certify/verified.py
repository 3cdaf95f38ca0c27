"""Exact serialized smoothing for contractive DEQs: every vote checked against the true fixed point.

If ``z -> f(z, u)`` is a contraction (constant ``L < 1``, L2 norm) and the
readout's logit differences are Lipschitz, one evaluation of ``f`` proves
which class the **exact** fixed point predicts (the check is
:class:`~deqcert.certify.verifier.Verifier`).  Each verified sample is then
an exact draw of

    h_exact(x + e) = argmax readout(z*(x + e)),

however its solve was started or truncated: warm starts (``chain_start``)
cost nothing in soundness, and CERTIFY bounds ``p_A`` with the plain
Clopper-Pearson bound on the verified votes for ``A`` (samples still
undecided after ``max_steps`` evaluations count against ``A``).  The proof,
the rounding slack of the float64 check and the rounds of cheap solver steps
are in docs/concepts.md, "Verified smoothing: why the votes are exact".

A model with no contraction bound is refused with :class:`NotContractiveError`
unless ``fallback="vanilla"``: then Cohen et al.'s CERTIFY runs with a full
``reference_solver`` solve per sample (the base classifier is ``h_ref``), and
the certificate says so in ``extra['fallback']``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from ..options import Configurable
from ..protocols import ABSTAIN, Certificate, EquilibriumModel, Prediction
from ..specs import OptionalSolverOption, SolverOption
from . import bounds
from .base import (
    SmoothingOptions,
    build_certificate,
    check_call,
    describe,
    nonfinite_reason,
    solver_field,
)
from .chains import advance_chains, anchor_state, chain_starts
from .sampling import batch_sizes, class_counts, evaluating, noisy_batch
from .verifier import (
    ETA,
    LOGIT_SLACK,
    REL_SLACK,
    NotContractiveError,
    StageLog,
    Verifier,
    verified_votes,
)

__all__ = [
    "BOUND",
    "CERTIFIED_CLASSIFIER",
    "ETA",
    "FALLBACK_NOTE",
    "LOGIT_SLACK",
    "REL_SLACK",
    "NotContractiveError",
    "StageLog",
    "VerifiedCertifier",
    "VerifiedOptions",
    "Verifier",
]

BOUND = "clopper-pearson (exact-serialized)"
CERTIFIED_CLASSIFIER = (
    "h_exact: the prediction of the exact fixed point of the contractive map "
    "(each vote verified; undecided samples count against the top class)"
)
FALLBACK_NOTE = (
    "vanilla: the model provides no contraction bound; every sample was solved in full by "
    "reference_solver and the smoothed classifier is h_ref"
)


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
        smoothed ``h_exact``.  A sample with a non-finite state or logits is no
        vote, and the certificate then abstains with ``extra['abstain_reason']``.
        """
        start = time.perf_counter()
        check_call(model, x, generator)
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
        total = o.n0 + o.n
        undecided = selection_log.undecided + estimation_log.undecided
        return build_certificate(
            o,
            candidate=candidate,
            p_lower=p_lower,
            counts={
                "n_A": n_a,
                "n0_A": int(selection[candidate]),
                "undecided": estimation_log.undecided,
                "extra_steps": estimation_log.extra_steps,
                "selection_undecided": selection_log.undecided,
                "selection_extra_steps": selection_log.extra_steps,
            },
            bound=BOUND,
            solvers=self._solvers(),
            nfe=selection_log.nfe + estimation_log.nfe + anchor_nfe,
            started=start,
            unconverged_fraction=undecided / total,
            abstain_reason=nonfinite_reason(
                selection_log.nonfinite + estimation_log.nonfinite, total
            ),
            extra={
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
        check_call(model, x, generator)
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
        reason = nonfinite_reason(log.nonfinite, o.n)
        return Prediction(
            prediction=top if n1 > n2 and p_value <= o.alpha and reason is None else ABSTAIN,
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
                **({"abstain_reason": reason} if reason else {}),
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
        result = anchor_state(model, self.options.reference_solver, x)
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
                starts = chain_starts(chains, size)
            else:
                starts = None
            votes, states = verified_votes(
                model, verifier, xb, starts, log, solver=o.solver, max_steps=o.max_steps
            )
            counts += class_counts(votes.clamp(min=0), model.num_classes, votes >= 0)
            if o.chain_start == "chain":
                chains = states if chains is None else advance_chains(chains, states)
        return counts, chains

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

