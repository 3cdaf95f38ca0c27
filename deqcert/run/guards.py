"""Guards that keep a run's certificates about ``h_ref``: a probe of user-supplied solvers.

Every certificate rests on the votes ``h_ref(x + e_i)`` being i.i.d., so the
solve of one noisy sample may depend on that sample only.  deqcert's built-in
solvers stop and freeze each sample on its own (their conformance suite checks
it); a solver from elsewhere, used as the reference (``h_ref``) or warm-up
solver, is probed first (:func:`probe_solver`), cheaply, on the run's own
model and first input:

* **batch independence**: the input solved alone and inside a batch of other
  inputs (first and last row) must agree within the solver's tolerance
  (:func:`allowed_difference`);
* **determinism**: solving it alone twice must give the same state.

A failing solver is refused (:class:`SolverGuardError`) unless the run
trusts it explicitly (``trust_solver``, ``--trust-solver``); its records then
say ``sound: false``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..certify.sampling import evaluating, solve_injected
from ..errors import DeqcertError

HREF_ROLES = ("reference_solver", "solver")
"""The role whose solver defines ``h_ref``: the first of these a certifier takes."""

PROBED_ROLES = ("warmup_solver",)
"""Roles probed besides the ``h_ref`` role."""

TOLERANCE_FACTOR = 1.0
"""The probe allows ``TOLERANCE_FACTOR * tol`` (times ``||z||`` for a relative stop mode)
between a sample solved alone and inside a batch.  A solver that stops each sample on its
own gives the same state either way, up to floating point (deqcert's Anderson: about
``1e-4`` on a 2-resolution MDEQ state of norm 25); one that stops on the whole batch keeps
iterating the early samples, which moves them by up to a few ``tol``."""

DETERMINISM_RTOL = 1e-5
"""Solving the same sample twice may differ by this much relative to ``1 + ||z||``."""


class SolverGuardError(DeqcertError):
    """A user-supplied reference or warm-up solver failed the probe."""


def href_role(roles: Sequence[str]) -> str | None:
    """The role defining ``h_ref`` among a certifier's ``roles`` (None if it takes none)."""
    return next((role for role in HREF_ROLES if role in roles), None)


def is_builtin(solver: Any) -> bool:
    """True for deqcert's own solvers (also behind a :class:`~deqcert.adapters.SourcedSolver`)."""
    inner = getattr(solver, "wrapped_solver", solver)
    return type(inner).__module__.startswith("deqcert.solvers.")


def allowed_difference(solver: Any, z: Tensor) -> float:
    """How far two solves of one sample may be apart: ``TOLERANCE_FACTOR * tol`` (see above)."""
    describe = getattr(solver, "describe", None)
    info = describe() if callable(describe) else {}
    tol = info.get("tol") if isinstance(info, Mapping) else None
    tol = float(tol) if isinstance(tol, int | float) and tol > 0 else 1e-3
    scale = float(z.norm()) if isinstance(info, Mapping) and info.get("stop_mode") == "rel" else 1.0
    return TOLERANCE_FACTOR * tol * max(scale, 1e-12) + DETERMINISM_RTOL * (1 + float(z.norm()))


def probe_solver(model: Any, solver: Any, inputs: Tensor) -> list[str]:
    """What is wrong with ``solver`` on ``model`` (empty: it passed), from ``inputs`` ``(k, ...)``.

    ``inputs[0]`` is solved alone twice and as the first and last row of a
    batch with the other inputs and three copies of it with strong noise (so that
    the rows converge at different times).
    """
    target = inputs[:1]
    generator = torch.Generator(device=inputs.device).manual_seed(0)
    noise = torch.randn((3, *inputs.shape[1:]), generator=generator, device=inputs.device)
    others = torch.cat([inputs[1:], target + 0.5 * noise.to(inputs.dtype)])
    problems: list[str] = []
    with evaluating(model):
        u_alone = model.inject(target)
        u_batch = model.inject(torch.cat([target, others, target]))
        alone = solve_injected(model, solver, u_alone)[1].z
        again = solve_injected(model, solver, u_alone)[1].z
        batch = solve_injected(model, solver, u_batch)[1].z
    drift = float((again - alone).abs().max())
    if drift > DETERMINISM_RTOL * (1 + float(alone.norm())):
        problems.append(f"two solves of the same sample differ (max |dz| {drift:.1e})")
    allowed = allowed_difference(solver, alone[0])
    gap = max(float((batch[i] - alone[0]).norm()) for i in (0, batch.shape[0] - 1))
    if not gap <= allowed:
        problems.append(
            f"a sample's result depends on the rest of its batch (|dz| {gap:.1e} between "
            f"alone and batched, allowed {allowed:.1e})"
        )
    return problems


def guard_solvers(model: Any, solvers: Mapping[str, Any], inputs: Tensor) -> dict[str, list[str]]:
    """Probe each non-built-in ``h_ref`` or warm-up solver; ``role -> problems`` of the failures."""
    role = href_role(list(solvers))
    failures: dict[str, list[str]] = {}
    for name in [r for r in (role, *PROBED_ROLES) if r is not None and r in solvers]:
        solver = solvers[name]
        if solver is None or is_builtin(solver):
            continue
        problems = probe_solver(model, solver, inputs)
        if problems:
            failures[name] = problems
    return failures


def failure_message(failures: Mapping[str, list[str]], solvers: Mapping[str, Any]) -> str:
    """One line naming each failing solver, why, and the way out."""
    parts = []
    for role, problems in failures.items():
        describe = getattr(solvers[role], "describe", None)
        name = describe().get("name") if callable(describe) else type(solvers[role]).__name__
        parts.append(f"{role} '{name}' failed the solver probe: {'; '.join(problems)}")
    return (
        "; ".join(parts)
        + ". Certificates need h_ref(x + e) to depend on x + e only: use a built-in solver "
        "(naive, anderson, broyden) or pass --trust-solver (trust_solver = true), which "
        "records sound: false"
    )


def mark_untrusted(record: dict[str, Any], failures: Mapping[str, list[str]]) -> dict[str, Any]:
    """``record`` (and its certificate) with ``sound: false`` and the probe's findings."""
    record["sound"] = False
    certificate = record.get("certificate")
    if isinstance(certificate, dict) and "sound" in certificate:
        certificate["sound"] = False
    record["solver_guard"] = {
        "trusted": True,
        "failures": {k: list(v) for k, v in failures.items()},
    }
    return record
