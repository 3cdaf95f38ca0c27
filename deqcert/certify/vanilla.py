"""Vanilla randomized smoothing of a DEQ (Cohen, Rosenfeld and Kolter, ICML 2019).

Every noisy sample is solved from ``init_state`` with the full ``solver``, so
the base classifier is ``h_ref`` itself and the votes are i.i.d.:
:meth:`VanillaCertifier.certify` is Cohen et al.'s CERTIFY and
:meth:`VanillaCertifier.predict` their PREDICT.

The votes are i.i.d. only if a sample's solve does not depend on the other
samples of its batch: the solver must stop and freeze each sample on its own
(the built-in solvers do), and the model is run in ``eval()`` mode (restored
afterwards) so that no batch statistics leak between samples.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from ..options import Configurable
from ..protocols import Certificate, EquilibriumModel, Prediction
from . import bounds
from .base import (
    SmoothingOptions,
    binomial_prediction,
    build_certificate,
    check_call,
    describe,
    nonfinite_reason,
)
from .sampling import SolveLog, batch_sizes, class_counts, evaluating, noisy_batch, solve_batch


class VanillaOptions(SmoothingOptions):
    """Options of :class:`VanillaCertifier`: the shared ones, ``solver`` defining ``h_ref``."""


class VanillaCertifier(Configurable):
    """Cohen et al.'s smoothed classifier around ``h_ref`` (full, zero-started solves)."""

    Options = VanillaOptions
    registry_name = "vanilla"
    options: Any

    def certify(
        self, model: EquilibriumModel, x: Tensor, *, generator: torch.Generator
    ) -> Certificate:
        """CERTIFY: pick ``A`` on ``n0`` draws, bound ``p_A`` on ``n`` fresh draws.

        Abstains (prediction -1, radius 0) unless the one-sided Clopper-Pearson
        lower bound ``p_lower`` exceeds 1/2; otherwise the radius is
        ``noise.radius(p_lower)``.  A sample with non-finite logits or state is
        no vote, and the certificate then abstains with ``extra['abstain_reason']``.
        """
        start = time.perf_counter()
        o = self.options
        (selection, estimation), log = self._stage_counts(model, x, generator, o.n0, o.n)
        candidate = int(selection.argmax())
        n_a = int(estimation[candidate])
        p_lower = bounds.clopper_pearson_lower(n_a, o.n, o.alpha)
        return build_certificate(
            o,
            candidate=candidate,
            p_lower=p_lower,
            counts={"n_A": n_a, "n0_A": int(selection[candidate])},
            solvers={"solver": describe(o.solver)},
            nfe=log.nfe,
            started=start,
            unconverged_fraction=log.unconverged_fraction,
            health={"reference_unconverged": log.unconverged_fraction},
            abstain_reason=nonfinite_reason(log.nonfinite, log.samples),
            extra={
                "selection_counts": selection.tolist(),
                "estimation_counts": estimation.tolist(),
                "batch_size": o.batch_size,
            },
        )

    def predict(
        self, model: EquilibriumModel, x: Tensor, *, generator: torch.Generator
    ) -> Prediction:
        """PREDICT: the top class of ``n`` draws, unless the binomial test fails.

        Abstains unless the two-sided test of the top count ``n1`` out of
        ``n1 + n2`` (``n2`` the runner-up's count) against 1/2 has p-value
        ``<= alpha``; then the answer differs from ``g(x)`` with probability at
        most ``alpha``.
        """
        start = time.perf_counter()
        o = self.options
        (counts,), log = self._stage_counts(model, x, generator, o.n)
        return binomial_prediction(
            counts,
            o.n,
            o.alpha,
            log,
            time.perf_counter() - start,
            {"sound": True, "reference_unconverged": log.unconverged_fraction},
        )

    def _stage_counts(
        self, model: EquilibriumModel, x: Tensor, generator: torch.Generator, *stages: int
    ) -> tuple[list[Tensor], SolveLog]:
        """Check the input, then class counts of fresh draws for each stage size, in order."""
        check_call(model, x, generator)
        log = SolveLog()
        with evaluating(model):
            counts = [self._sample_counts(model, x, num, generator, log) for num in stages]
        return counts, log

    def _sample_counts(
        self,
        model: EquilibriumModel,
        x: Tensor,
        num: int,
        generator: torch.Generator,
        log: SolveLog,
    ) -> Tensor:
        """Class counts of ``h_ref(x + e)`` over ``num`` fresh noise draws."""
        o = self.options
        counts = torch.zeros(model.num_classes, dtype=torch.long, device=x.device)
        for size in batch_sizes(num, o.batch_size):
            xb = noisy_batch(x, o.noise, size, generator)
            predictions, result = solve_batch(model, o.solver, xb)
            counts += class_counts(predictions, model.num_classes)
            log.add(result, size, predictions)
        return counts
