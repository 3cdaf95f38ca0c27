"""What every certifier shares: options, the input check, the decision, building the outcome.

* :class:`SmoothingOptions`: noise, solver, ``n0``, ``n``, ``alpha``, batch size;
  :func:`solver_field` declares a solver role (a config key and a ``--<role>``
  CLI flag, see ``docs/plugins.md``).
* :func:`check_call`: the model, its weights, the input and the generator
  before any sampling (the input rules: :func:`~deqcert.certify.inputs.check_input`,
  re-exported here).
* :func:`decide`, :func:`build_certificate` and :func:`binomial_prediction`:
  from counts to a :class:`~deqcert.protocols.Certificate` or
  :class:`~deqcert.protocols.Prediction`.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field
from torch import Tensor

from .. import defaults
from ..errors import DeqcertError
from ..models.check import prepare_model
from ..options import ComponentOptions
from ..protocols import (
    ABSTAIN,
    Certificate,
    FixedPointSolver,
    NoiseSampler,
    Prediction,
)
from ..specs import NoiseOption, SolverOption, as_component, component_field
from . import bounds
from .inputs import check_input

if TYPE_CHECKING:
    from .sampling import SolveLog


def as_noise(spec: Any) -> NoiseSampler:
    """A :class:`~deqcert.protocols.NoiseSampler` from an object or a spec."""
    return as_component("noise", spec)  # type: ignore[no-any-return]


def as_solver(spec: Any) -> FixedPointSolver:
    """A :class:`~deqcert.protocols.FixedPointSolver` from an object or a spec."""
    return as_component("solver", spec)  # type: ignore[no-any-return]


def solver_field(description: str, **options: Any) -> Any:
    """A solver option defaulting to Anderson with ``options`` (see ``specs.component_field``).

    Every such field of a certifier's ``Options`` is a *solver role*: a config
    key and a ``--<role>`` CLI flag of the same name.
    """
    return component_field("solver", description, {"name": "anderson", **options})


class SmoothingOptions(ComponentOptions):
    """Options every certifier shares: noise, solver, sample sizes, ``alpha`` and batch size.

    A certifier's options model subclasses this one, adds its own options and
    may re-declare ``solver`` (its default and meaning differ by certifier;
    here it is the full solve from ``init_state`` that defines ``h_ref``).
    """

    noise: NoiseOption = Field(description="Noise sampler or {'name': ..., **options} spec.")
    solver: SolverOption = solver_field(
        "The solver defining h_ref, run from init_state on every sample.", max_iter=30, tol=1e-3
    )
    n0: int = Field(defaults.N0, ge=1, description="Selection samples.")
    n: int = Field(defaults.N, ge=1, description="Estimation samples.")
    alpha: float = Field(defaults.ALPHA, gt=0, lt=1, description="Total failure probability.")
    batch_size: int = Field(
        defaults.BATCH,
        ge=1,
        description="Noisy samples solved together (serialized: parallel chains).",
    )


def describe(component: Any) -> dict[str, Any]:
    """``component.describe()`` if it has one, else its class name."""
    if hasattr(component, "describe"):
        return dict(component.describe())
    return {"name": type(component).__name__}


# -- the input check ------------------------------------------------------------------
def check_call(model: Any, x: Any, generator: Any) -> None:
    """What every ``certify``/``predict`` call checks first.

    The model against the protocol (one error naming every missing member, see
    :func:`~deqcert.models.check.check_model`; its ``before_certificate`` hook,
    if any, runs here) and its weights (finite, see
    :func:`~deqcert.models.check.check_weights`), then the input and the
    generator (:func:`~deqcert.certify.inputs.check_input`).
    """
    prepare_model(model)
    check_input(model, x, generator, needs_generator=True)


def nonfinite_reason(bad: int, total: int) -> str | None:
    """The abstention reason when ``bad`` of ``total`` solves gave non-finite logits or states.

    Such a solve is no vote for any class (see
    :func:`~deqcert.certify.sampling.solve_injected`), and a certificate or
    prediction with any of them abstains with this reason recorded in
    ``extra['abstain_reason']`` (None when every solve was finite).
    """
    if not bad:
        return None
    return (
        f"non-finite logits or states in {bad} of {total} noisy solves; "
        "they are no votes and nothing is certified"
    )


# -- from counts to outcomes ------------------------------------------------------------
def decide(candidate: int, p_lower: float, noise: NoiseSampler) -> tuple[int, float]:
    """``(prediction, radius)``: abstain (``ABSTAIN``, 0) unless ``p_lower > 1/2``.

    At ``p_lower = 1/2`` exactly a tie with another class is not excluded, so
    nothing is certified (certification.md says ``< 1/2``; this is the strict side).
    """
    if p_lower > 0.5:
        return candidate, float(noise.radius(p_lower))
    return ABSTAIN, 0.0


def build_certificate(
    options: Any,
    *,
    candidate: int,
    p_lower: float,
    counts: dict[str, int],
    solvers: dict[str, Any],
    nfe: int,
    started: float,
    unconverged_fraction: float,
    extra: dict[str, Any],
    bound: str = "clopper-pearson",
    sound: bool = True,
    alpha_split: dict[str, float] | None = None,
    p_cap: float | None = None,
    health: dict[str, float | None] | None = None,
    abstain_reason: str | None = None,
) -> Certificate:
    """The :class:`~deqcert.protocols.Certificate` for ``candidate`` with lower bound ``p_lower``.

    ``options`` are the certifier's (:class:`SmoothingOptions`): they give the
    noise, ``n0``, ``n`` and ``alpha``.  The prediction and radius come from
    :func:`decide`; ``seconds`` is the time since ``started``
    (``time.perf_counter()``); ``extra`` starts with ``candidate``.  Raises
    :class:`DeqcertError` if ``p_lower`` is not in ``[0, 1]`` or the noise
    returns a radius that is not finite and non-negative: a certificate must
    never claim more than its numbers support.

    ``p_cap`` is the largest ``p_lower`` the bound can give with these
    settings (its value on perfect counts; default: Clopper-Pearson with all
    ``n`` votes for ``A``): the certificate records the radius there
    (``radius_cap``) and whether its own radius reached it (``at_cap``).
    ``health`` holds solver-health figures (e.g. ``reference_unconverged``).
    With ``abstain_reason`` (see :func:`nonfinite_reason`) the certificate
    abstains whatever ``p_lower`` is, and ``extra['abstain_reason']`` says why.
    """
    noise = options.noise
    if not 0.0 <= p_lower <= 1.0:
        raise DeqcertError(f"bound '{bound}' gave p_lower = {p_lower}, expected a value in [0, 1]")
    prediction, radius = decide(candidate, p_lower, noise)
    if abstain_reason is not None:
        prediction, radius = ABSTAIN, 0.0
        extra = {**extra, "abstain_reason": abstain_reason}
    if not math.isfinite(radius) or radius < 0:
        raise DeqcertError(
            f"noise '{describe(noise).get('name')}' returned radius {radius} for "
            f"p_lower = {p_lower}; a radius must be finite and >= 0"
        )
    return Certificate(
        prediction=prediction,
        radius=radius,
        p_lower=p_lower,
        counts=counts,
        n0=options.n0,
        n=options.n,
        alpha=options.alpha,
        alpha_split={"clopper_pearson": options.alpha} if alpha_split is None else alpha_split,
        bound=bound,
        sound=sound,
        noise=describe(noise),
        norm=noise.norm,
        solvers=solvers,
        nfe=nfe,
        seconds=time.perf_counter() - started,
        unconverged_fraction=unconverged_fraction,
        **cap_fields(
            bounds.clopper_pearson_lower(options.n, options.n, options.alpha)
            if p_cap is None
            else p_cap,
            p_lower,
            prediction,
            noise,
        ),
        health=dict(health or {}),
        extra={"candidate": candidate, **extra},
    )


def cap_fields(
    p_cap: float, p_lower: float, prediction: int, noise: NoiseSampler
) -> dict[str, Any]:
    """``radius_cap`` (the radius at ``p_lower = p_cap``) and ``at_cap`` for a certificate.

    ``p_cap`` is the bound's own value on perfect counts (see
    :func:`~deqcert.certify.bounds.bound_cap`); a radius is at the cap when its
    ``p_lower`` reached it (the same formula on the same counts gives the same
    float, so the comparison allows only rounding).
    """
    radius_cap = float(noise.radius(p_cap)) if p_cap > 0.5 else 0.0
    at_cap = prediction != ABSTAIN and p_lower >= p_cap * (1.0 - 1e-12)
    return {"radius_cap": radius_cap, "at_cap": bool(at_cap)}


def binomial_prediction(
    counts: Tensor,
    n: int,
    alpha: float,
    log: SolveLog,
    seconds: float,
    extra: dict[str, Any],
) -> Prediction:
    """Cohen et al.'s PREDICT decision from class counts (vanilla and serialized).

    Abstains, with ``extra['abstain_reason']``, if any solve in ``log`` was not finite.
    """
    top2 = torch.topk(counts, k=min(2, counts.numel()))
    n1 = int(top2.values[0])
    n2 = int(top2.values[1]) if counts.numel() > 1 else 0
    top = int(top2.indices[0])
    p_value = bounds.binomial_test_pvalue(n1, n1 + n2)
    reason = nonfinite_reason(log.nonfinite, n)
    if reason is not None:
        extra = {**extra, "abstain_reason": reason}
    return Prediction(
        prediction=top if p_value <= alpha and reason is None else ABSTAIN,
        counts={"n1": n1, "n2": n2},
        p_value=p_value,
        n=n,
        alpha=alpha,
        nfe=log.nfe,
        seconds=seconds,
        extra={
            "top": top,
            "runner_up": int(top2.indices[1]) if counts.numel() > 1 else None,
            "class_counts": counts.tolist(),
            "unconverged_fraction": log.unconverged_fraction,
            **extra,
        },
    )


__all__ = [
    "SmoothingOptions",
    "as_noise",
    "as_solver",
    "binomial_prediction",
    "build_certificate",
    "cap_fields",
    "check_call",
    "check_input",
    "decide",
    "describe",
    "nonfinite_reason",
    "solver_field",
]
