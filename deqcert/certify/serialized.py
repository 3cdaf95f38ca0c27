"""Serialized randomized smoothing (SRS; Gao, Hou, Xu, Liu, NeurIPS 2024) with a sound bound.

SRS runs ``batch_size`` parallel *chains*: noise stays i.i.d., but each
sample's solve is a few cheap ``solver`` steps started from the state its
chain reached on the previous sample.  Those serialized predictions ``Y_m``
can differ from ``h_ref`` and are dependent along a chain, so they are never
counted as if they were i.i.d. votes of ``h_ref``.  CERTIFY instead:

1. draws a uniformly random subset ``S`` of ``K = reference_samples`` of the
   ``n`` estimation indices, before any sampling;
2. selection: ``A`` = the most frequent serialized prediction on ``n0`` draws;
3. estimation: ``n`` fresh draws along the chains give ``Y_m``; for ``i`` in
   ``S`` the *same* noisy input is also solved by ``reference_solver`` from
   ``init_state`` (batched), giving ``Y_g = h_ref(x + e_i)``;
4. bounds ``p_A`` by name (``sound``: a branch chosen from the selection
   votes, see :func:`~deqcert.certify.bounds.serialized_bound`).

How chains start (``chain_start``) does not affect validity, only cost:

* ``warmup``: each stage's first batch is solved from ``init_state`` by
  ``warmup_solver`` (the paper's choice);
* ``anchor`` (the default): the clean input is solved once by
  ``reference_solver`` and every stage's chains start from that fixed point;
* ``carry``: selection starts like ``warmup`` and estimation continues from
  the chains' last selection states.

A stage with fewer samples than chains (e.g. ``n0 < batch_size``) fills the
remaining chains by repeating the states it has.  The reference solves never
start from anything that depends on ``x`` or on the chains, and their results
never flow back into the chains: the serialized predictions must not depend on
which indices are in ``S``, or the hypergeometric argument breaks.

Cost (see ``docs/benchmarks.md``): ``anchor`` is the cheapest start (one solve
of one sample instead of a warm-up batch per stage); the reference inputs are
queued as the injections ``u`` already computed for the chains and solved in
full batches, which the reference solver compacts as samples converge (solver
option ``compact``).  Neither changes ``Y_g = h_ref(x + e_i)``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from .. import defaults
from ..options import Configurable
from ..protocols import Certificate, EquilibriumModel, FixedPointSolver, Prediction
from ..specs import SolverOption
from . import bounds
from .base import (
    SmoothingOptions,
    binomial_prediction,
    build_certificate,
    check_call,
    describe,
    nonfinite_reason,
    solver_field,
)
from .chains import advance_chains, anchor_state, chain_starts
from .sampling import (
    SolveLog,
    batch_sizes,
    chain_health,
    class_counts,
    evaluating,
    noisy_batch,
    solve_injected,
)
from .subset import ReferenceSubset, reference_indices, subset_slices

BOUND_NOTES: dict[str, str] = {
    "sound": (
        "sound: from the selection votes alone, either Clopper-Pearson on the K reference "
        "votes or the hybrid max(reference CP, hypergeometric mismatch bound + e + CP)"
    ),
    "sound-v1": "sound: hypergeometric bound on mismatches + Clopper-Pearson (before issue 16)",
    "paper": (
        "approximate (not proven sound): the authors' rebuttal bound applies the binomial "
        "Clopper-Pearson bound to a reference subset drawn without replacement"
    ),
    "repro": (
        "UNSOUND: the official code's bound, not a valid lower bound; "
        "only for reproducing published tables"
    ),
}
"""What each bound guarantees; copied into every certificate and description."""

PREDICT_NOTE = (
    "heuristic: binomial test on dependent serialized votes, no guarantee on "
    "agreement with the smoothed h_ref"
)


class SerializedOptions(SmoothingOptions):
    """Options of :class:`SerializedCertifier` (``batch_size`` is the number of chains)."""

    solver: SolverOption = solver_field(
        "Per-sample solver, warm-started from the chain's previous state.",
        max_iter=1,
    )
    warmup_solver: SolverOption = solver_field(
        "Solver of each stage's first batch from init_state (chain_start='warmup').",
        max_iter=10,
    )
    reference_solver: SolverOption = solver_field(
        "The solver defining h_ref, run from init_state on the reference subset.",
        max_iter=30,
        tol=1e-3,
    )
    reference_samples: int = Field(
        defaults.REFERENCE_SAMPLES, ge=1, description="K: size of the reference subset S."
    )
    bound: Literal["sound", "sound-v1", "paper", "repro"] = Field(
        "sound", description="Bound on p_A."
    )
    chain_start: Literal["warmup", "anchor", "carry"] = Field(
        defaults.CHAIN_START,
        description="How the chains start: warm-up batch (the paper's), clean anchor, or carried.",
    )
    alpha_split: float = Field(
        0.5,
        gt=0,
        lt=1,
        description=(
            "Share of alpha spent on the mismatch bound (alpha_1) by sound-v1, paper and repro; "
            "sound records the split of the branch it chose."
        ),
    )

    @model_validator(mode="after")
    def _subset_fits(self) -> SerializedOptions:
        if self.reference_samples > self.n:
            raise ValueError(
                f"reference_samples ({self.reference_samples}) must not exceed n ({self.n})"
            )
        return self


class _ReferenceSolves:
    """Queue of noisy inputs' injections for ``h_ref``, solved in full batches from ``init_state``.

    The queue holds ``u = model.inject(x + e_i)`` as computed for the chains:
    ``h_ref`` is a function of ``u``, and injecting the same input twice would
    only repeat work.
    """

    def __init__(
        self, model: EquilibriumModel, solver: FixedPointSolver, batch_size: int, log: SolveLog
    ) -> None:
        self.model, self.solver, self.batch_size, self.log = model, solver, batch_size, log
        self.pending: list[Tensor] = []
        self.rows = 0
        self.predictions: list[Tensor] = []

    def push(self, inputs: Tensor) -> None:
        if inputs.shape[0]:
            self.pending.append(inputs)
            self.rows += inputs.shape[0]
        while self.rows >= self.batch_size:
            self._flush(self.batch_size)

    def finish(self) -> Tensor:
        """``h_ref`` predictions of every pushed input, in push order."""
        if self.rows:
            self._flush(self.rows)
        return torch.cat(self.predictions)

    def _flush(self, size: int) -> None:
        queued = torch.cat(self.pending) if len(self.pending) > 1 else self.pending[0]
        batch, rest = queued[:size], queued[size:]
        self.pending = [rest] if rest.shape[0] else []
        self.rows = rest.shape[0]
        predictions, result = solve_injected(self.model, self.solver, batch)
        self.log.add(result, size, predictions)
        self.predictions.append(predictions)


class SerializedCertifier(Configurable):
    """SRS around ``h_ref``: cheap warm-started chains, certified with a reference subset.

    ``certify`` returns a :class:`~deqcert.protocols.Certificate` whose
    ``counts`` hold ``C_m`` (serialized votes for ``A`` among ``n``), ``d``
    (reference samples with ``Y_m = A`` and ``Y_g != A``), ``K``, ``N1``,
    ``N2`` (the ``paper`` bound's counts), ``reference_A`` (``Y_g = A`` in
    ``S``), ``selection_A``, ``selection_n``, ``D_up`` and ``e`` (reverse
    mismatches, ``sound``); ``extra['branch']`` is ``sound``'s chosen branch.
    ``sound`` is True for ``sound`` and ``sound-v1``; ``extra['bound_note']``
    states what the bound guarantees.
    """

    Options = SerializedOptions
    registry_name = "serialized"
    predict_note = PREDICT_NOTE  # pipelines say so before predicting
    options: Any

    # -- CERTIFY --------------------------------------------------------------
    def certify(
        self, model: EquilibriumModel, x: Tensor, *, generator: torch.Generator
    ) -> Certificate:
        """CERTIFY with serialized sampling (the steps of the module docstring).

        Abstains (prediction -1, radius 0) unless the configured bound gives
        ``p_lower > 1/2``; otherwise the radius is ``noise.radius(p_lower)``.
        With ``bound='sound'`` the certificate holds with probability at least
        ``1 - alpha`` whatever the chains do.  A solve (chain or reference) with
        non-finite logits or state is no vote, and the certificate then abstains
        with ``extra['abstain_reason']``.
        """
        start = time.perf_counter()
        check_call(model, x, generator)
        o = self.options
        logs = {name: SolveLog() for name in ("chains", "warmup", "anchor", "reference")}
        subset = self._reference_subset(generator)  # fixed before any noise is drawn
        with evaluating(model):
            first = self._anchor(model, x, logs) if o.chain_start == "anchor" else None
            selected, chains = self._run_chains(model, x, o.n0, generator, first, logs)
            if o.chain_start == "carry":
                first = chains
            reference = _ReferenceSolves(model, o.reference_solver, o.batch_size, logs["reference"])
            serial, _ = self._run_chains(model, x, o.n, generator, first, logs, subset, reference)
            y_g = reference.finish()
        # read on the host only now: estimation does not depend on A
        candidate = int(class_counts(selected, model.num_classes).argmax())
        counts = _agreement_counts(serial, y_g, subset.indices, candidate)
        counts["selection_A"] = int((selected == candidate).sum())
        counts["selection_n"] = o.n0
        named = self._bound(counts)
        p_lower, details = named.p_lower, named.details
        counts.update({k: v for k, v in details.items() if isinstance(v, int)})
        serial_log = SolveLog.merged(logs["chains"], logs["warmup"])
        noisy = SolveLog.merged(serial_log, logs["reference"])  # the anchor is no noisy solve
        return build_certificate(
            o,
            candidate=candidate,
            p_lower=p_lower,
            counts=counts,
            alpha_split=named.alpha_split,
            bound=o.bound,
            sound=o.bound in bounds.SOUND_BOUNDS,
            solvers=self._solvers(),
            nfe=sum(log.nfe for log in logs.values()),
            started=start,
            unconverged_fraction=logs["reference"].unconverged_fraction,
            p_cap=self._cap(),
            health=chain_health(logs["reference"], serial_log),
            abstain_reason=nonfinite_reason(noisy.nonfinite, noisy.samples),
            extra={
                "bound_note": BOUND_NOTES[o.bound],
                "chain_start": o.chain_start,
                "batch_size": o.batch_size,
                "nfe": {name: log.nfe for name, log in logs.items()},
                "solves": {name: log.summary() for name, log in logs.items()},
                **{k: v for k, v in details.items() if not isinstance(v, int)},
            },
        )

    # -- PREDICT --------------------------------------------------------------
    def predict(
        self, model: EquilibriumModel, x: Tensor, *, generator: torch.Generator
    ) -> Prediction:
        """PREDICT on ``n`` serialized votes: Cohen et al.'s binomial test.

        Heuristic, not a guarantee: the votes of a chain are dependent and may
        differ from ``h_ref``, so the test's level does not carry over to the
        smoothed ``h_ref``.  Marked ``extra['sound'] = False``.  (``carry``
        starts like ``warmup`` here: PREDICT has a single stage.)
        """
        start = time.perf_counter()
        check_call(model, x, generator)
        o = self.options
        logs = {name: SolveLog() for name in ("chains", "warmup", "anchor")}
        with evaluating(model):
            first = self._anchor(model, x, logs) if o.chain_start == "anchor" else None
            serial, _ = self._run_chains(model, x, o.n, generator, first, logs)
        total = SolveLog.merged(*logs.values())
        return binomial_prediction(
            class_counts(serial, model.num_classes),
            o.n,
            o.alpha,
            total,
            time.perf_counter() - start,
            {
                "sound": False,
                "note": PREDICT_NOTE,
                "nfe_split": {name: log.nfe for name, log in logs.items()},
            },
        )

    def describe(self) -> dict[str, Any]:
        """Name and options, plus whether the configured bound is sound."""
        return {
            **super().describe(),
            "sound": self.options.bound in bounds.SOUND_BOUNDS,
            "bound_note": BOUND_NOTES[self.options.bound],
        }

    # -- sampling ---------------------------------------------------------------
    def _reference_subset(self, generator: torch.Generator) -> ReferenceSubset:
        """Sorted random ``K`` of the ``n`` estimation indices (on the generator's device)."""
        o = self.options
        chosen = reference_indices(o.n, o.reference_samples, generator)
        return ReferenceSubset(
            torch.from_numpy(chosen).to(generator.device), subset_slices(chosen, o.n, o.batch_size)
        )

    def _anchor(self, model: EquilibriumModel, x: Tensor, logs: dict[str, SolveLog]) -> Tensor:
        """The clean input's fixed point under ``reference_solver`` (``chain_start='anchor'``)."""
        result = anchor_state(model, self.options.reference_solver, x)
        logs["anchor"].add(result, 1)
        return result.z

    def _run_chains(
        self,
        model: EquilibriumModel,
        x: Tensor,
        num: int,
        generator: torch.Generator,
        chains: Tensor | None,
        logs: dict[str, SolveLog],
        subset: ReferenceSubset | None = None,
        reference: _ReferenceSolves | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``num`` serialized predictions along the chains, and the chains' final states.

        With ``chains=None`` the first batch is the warm-up from ``init_state``.
        Noisy inputs whose index is in ``subset`` are also queued on ``reference``.
        """
        o = self.options
        sizes = list(batch_sizes(num, o.batch_size))
        predictions = []
        offset = 0
        for batch, size in enumerate(sizes):
            u = model.inject(noisy_batch(x, o.noise, size, generator))
            if chains is None:
                y_m, result = solve_injected(model, o.warmup_solver, u)
                logs["warmup"].add(result, size, y_m)
                chains = result.z
            else:
                y_m, result = solve_injected(model, o.solver, u, chain_starts(chains, size))
                logs["chains"].add(result, size, y_m)
                chains = advance_chains(chains, result.z)
            predictions.append(y_m)
            if reference is not None and subset is not None:
                lo, hi = subset.slices[batch]
                reference.push(u.index_select(0, subset.indices[lo:hi] - offset))
            offset += size
        if chains is None:
            raise ValueError(f"a stage needs at least one sample, got {num}")
        return torch.cat(predictions), chains

    # -- statistics -------------------------------------------------------------
    def _bound(self, counts: dict[str, int]) -> bounds.NamedBound:
        o = self.options
        return bounds.serialized_bound(o.bound, counts, o.n, o.alpha, o.alpha_split)

    def _cap(self) -> float:
        o = self.options
        return bounds.bound_cap(o.bound, o.n, o.reference_samples, o.alpha, o.alpha_split)

    def _solvers(self) -> dict[str, Any]:
        o = self.options
        out = {"solver": describe(o.solver), "reference_solver": describe(o.reference_solver)}
        if o.chain_start != "anchor":
            out["warmup_solver"] = describe(o.warmup_solver)
        return out


def _agreement_counts(
    serial: Tensor, y_g: Tensor, subset: Tensor, candidate: int
) -> dict[str, int]:
    """``C_m``, ``K``, ``d``, ``N1``, ``N2`` and ``reference_A`` for class ``candidate``."""
    m_all = serial == candidate
    m_s = m_all[subset]
    g_s = y_g == candidate
    return {
        "C_m": int(m_all.sum()),
        "K": int(subset.numel()),
        "d": int((m_s & ~g_s).sum()),
        "N1": int((m_s & g_s).sum()),
        "N2": int(m_s.sum()),
        "reference_A": int(g_s.sum()),
    }
