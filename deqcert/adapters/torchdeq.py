"""TorchDEQ models behind the protocol, with ``h_ref`` taken from the model's own settings.

A TorchDEQ model (``torchdeq.get_deq(...)`` inside the user's module) keeps
its forward solver's settings on the DEQ object: ``f_solver``, the test-time
step budget ``eval_f_max_iter`` (``f_max_iter * eval_factor``), ``f_tol`` and
``f_stop_mode``.  :func:`adapt` reads them and makes the reference solver the
deqcert solver with the same settings (:data:`SOLVER_NAMES`), so the
certified ``h_ref`` is the classifier the user trained and evaluated; the
solver's description (``describe()['source']``, copied into every
certificate's ``solvers``) says so.  deqcert's solvers stop and freeze each
sample on its own, which the certificate needs (TorchDEQ's own solvers stop
when the whole *batch* meets the tolerance, so one sample's result depends on
the others; :func:`torchdeq_solver` wraps one anyway, and the run guard
refuses it as a reference solver).  Before each certificate TorchDEQ's
``reset_norm`` recomputes weight-normalised weights.

Needs the ``torchdeq`` extra (``pip install 'deqcert[torchdeq]'``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from ..errors import OptionError
from ..protocols import SolverResult
from .plain import AdaptedDEQ
from .plain import adapt as adapt_plain

SOLVER_NAMES: dict[str, str] = {
    "anderson": "anderson",
    "broyden": "broyden",
    "fixed_point_iter": "naive",
    "simple_fixed_point_iter": "naive",
}
"""TorchDEQ forward solver -> the deqcert solver run with the same settings."""

INSTALL_HINT = "TorchDEQ is not installed; pip install 'deqcert[torchdeq]' (torchdeq==0.1.0)"


def _torchdeq() -> Any:
    try:
        import torchdeq
    except ImportError:
        raise OptionError(INSTALL_HINT) from None
    return torchdeq


def find_deq(module: nn.Module) -> Any:
    """The one TorchDEQ ``DEQBase`` inside ``module`` (an error if there are none or several)."""
    base = _torchdeq().core.DEQBase
    found = [m for m in module.modules() if isinstance(m, base)]
    if len(found) != 1:
        raise OptionError(
            f"{type(module).__name__} holds {len(found)} TorchDEQ DEQ objects; name the one "
            "defining the model with deq=..."
        )
    return found[0]


def solver_settings(deq: Any) -> dict[str, Any]:
    """The TorchDEQ forward-solver settings of ``deq`` used at test time."""
    from torchdeq.solver import _solvers

    names = [name for name, fn in _solvers.items() if fn is deq.f_solver]
    name = names[0] if names else getattr(deq.f_solver, "__name__", "unknown")
    return {
        "f_solver": name,
        "eval_f_max_iter": int(deq.eval_f_max_iter),
        "f_tol": float(deq.f_tol),
        "f_stop_mode": str(deq.f_stop_mode),
    }


def reference_spec(settings: dict[str, Any]) -> dict[str, Any]:
    """The deqcert solver spec for TorchDEQ ``settings`` (TorchDEQ's default extra options)."""
    name = SOLVER_NAMES.get(settings["f_solver"])
    if name is None:
        raise OptionError(
            f"TorchDEQ solver {settings['f_solver']!r} has no deqcert counterpart (known: "
            f"{', '.join(SOLVER_NAMES)}); pass reference_solver=... explicitly"
        )
    spec: dict[str, Any] = {
        "name": name,
        "max_iter": max(1, settings["eval_f_max_iter"]),
        "tol": settings["f_tol"],
        "stop_mode": settings["f_stop_mode"],
    }
    if name == "anderson":  # TorchDEQ's anderson_solver defaults: m=6, lam=1e-4, tau=1
        spec.update(m=6, lam=1e-4, beta=1.0)
    elif name == "broyden":  # LBFGS_thres defaults to max_iter
        spec.update(memory=spec["max_iter"])
    return spec


def adapt(
    module: nn.Module,
    *,
    inject: Callable[..., Any] | str,
    f: Callable[..., Any] | str,
    readout: Callable[..., Any] | str,
    num_classes: int,
    deq: Any = None,
    init_state: Callable[..., Any] | str | None = None,
    input_shape: tuple[int, ...] | None = None,
    reference_solver: Any = None,
) -> AdaptedDEQ:
    """Wrap a TorchDEQ-based ``module``: its injection, DEQ function ``f(z, u)`` and head.

    ``deq`` is the TorchDEQ DEQ object (or its attribute name; default: the one
    inside ``module``).  Unless ``reference_solver`` overrides it, ``h_ref`` is
    solved with the DEQ's own test-time settings (see :func:`reference_spec`).
    TorchDEQ's ``reset_norm(module)`` runs now and before each certificate.
    """
    tdq = _torchdeq()
    if isinstance(deq, str):
        deq = getattr(module, deq, None)
    deq = find_deq(module) if deq is None else deq
    if not isinstance(deq, tdq.core.DEQBase):
        raise OptionError(f"deq must be a TorchDEQ DEQ object, got {type(deq).__name__}")
    settings = solver_settings(deq)
    if reference_solver is None:
        shown = ", ".join(f"{k}={v}" for k, v in settings.items())
        source = f"the model's TorchDEQ settings ({shown}), solved per sample by deqcert"
        reference_solver = reference_spec(settings)
    else:
        source = "given to deqcert.adapters.torchdeq.adapt (overrides the TorchDEQ settings)"
    model = adapt_plain(
        module,
        inject=inject,
        f=f,
        readout=readout,
        num_classes=num_classes,
        init_state=init_state,
        before_certificate=lambda: tdq.norm.reset_norm(module),
        input_shape=input_shape,
        reference_solver=reference_solver,
    )
    model.reference_source = source
    model.adapter_name = "torchdeq"
    model.details["torchdeq"] = settings
    model.before_certificate()
    return model


class TorchDEQSolver:
    """One of TorchDEQ's own solvers as a :class:`~deqcert.protocols.FixedPointSolver`.

    It stops when the whole batch meets the tolerance, so it is *not* batch
    independent: fine for experiments, refused as a run's reference solver.
    """

    def __init__(
        self,
        name: str = "anderson",
        max_iter: int = 40,
        tol: float = 1e-3,
        stop_mode: str = "abs",
        **options: Any,
    ) -> None:
        from torchdeq.solver import get_solver

        _torchdeq()
        self.name, self.max_iter, self.tol, self.stop_mode = name, max_iter, tol, stop_mode
        self.options = options
        self._solve = get_solver(name)

    def solve(self, f: Callable[[Tensor], Tensor], z0: Tensor) -> SolverResult:
        z, _, info = self._solve(
            f, z0, max_iter=self.max_iter, tol=self.tol, stop_mode=self.stop_mode, **self.options
        )
        residual = info[f"{self.stop_mode}_lowest"].reshape(-1).to(z.dtype)
        steps = info["nstep"].reshape(-1).long()
        nfe = int(info["abs_trace"].shape[1])
        return SolverResult(
            z=z, nfe=nfe, residual=residual, steps=steps, converged=residual <= self.tol
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": f"torchdeq-{self.name}",
            "max_iter": self.max_iter,
            "tol": self.tol,
            "stop_mode": self.stop_mode,
            **self.options,
        }


def torchdeq_solver(name: str = "anderson", **options: Any) -> TorchDEQSolver:
    """TorchDEQ's solver ``name`` wrapped for deqcert (see :class:`TorchDEQSolver`)."""
    return TorchDEQSolver(name, **options)


__all__ = [
    "TorchDEQSolver",
    "adapt",
    "find_deq",
    "reference_spec",
    "solver_settings",
    "torchdeq_solver",
]
