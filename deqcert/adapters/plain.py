"""``deqcert.adapt``: any PyTorch DEQ as an :class:`~deqcert.protocols.EquilibriumModel`.

The user names the pieces (callables, or attribute names of ``module``):
``inject(x) -> u``, ``f(z, u) -> z``, ``readout(z) -> logits``, optionally
``init_state(u) -> z0`` (default: zeros shaped like ``u``) and a hook run
before each certificate.  States and injections may be tensors or lists /
tuples of tensors; lists are packed into one flat tensor per batch (see
:mod:`deqcert.adapters.packing`) and unpacked before every user call, so the
user's code always sees its own layout.  The wrapped module is a submodule:
``eval()``, ``.to()`` and the noise-free ``forward`` work as on any model, and
:meth:`AdaptedDEQ.load_weights` loads the *user's* state dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import DataError, OptionError
from ..models.base import DEQModel, solve_model
from ..protocols import FixedPointSolver, SolverResult
from .packing import Layout, State

DEFAULT_SOURCE = "deqcert default reference solve (Anderson, rel tol 1e-3, 30 steps)"
"""Where ``h_ref`` comes from when neither the user nor the model names a solver."""


class SourcedSolver:
    """A solver whose description says where it came from (``describe()['source']``)."""

    def __init__(self, solver: FixedPointSolver, source: str) -> None:
        self.wrapped_solver = solver
        self.source = source

    def solve(self, f: Callable[[Tensor], Tensor], z0: Tensor) -> Any:
        return self.wrapped_solver.solve(f, z0)

    def describe(self) -> dict[str, Any]:
        describe = getattr(self.wrapped_solver, "describe", None)
        inner = describe() if callable(describe) else {"name": type(self.wrapped_solver).__name__}
        return {**inner, "source": self.source}


class AdaptedDEQ(nn.Module):
    """A user's DEQ behind the protocol; build it with :func:`adapt`."""

    def __init__(
        self,
        module: nn.Module | None,
        pieces: Mapping[str, Callable[..., Any] | None],
        num_classes: int,
        *,
        input_shape: tuple[int, ...] | None = None,
        reference_solver: Any = None,
        reference_source: str | None = None,
        name: str = "adapted",
    ) -> None:
        super().__init__()
        self.module = module
        self._pieces = dict(pieces)
        for role, piece in pieces.items():  # modules outside `module` must move with the model
            if isinstance(piece, nn.Module) and not _contains(module, piece):
                self.add_module(f"adapted_{role}", piece)
        self.num_classes = num_classes
        if input_shape is not None:
            self.input_shape = tuple(int(s) for s in input_shape)
        self._reference = reference_solver
        self.reference_source = reference_source or (
            "given to deqcert.adapt" if reference_solver is not None else DEFAULT_SOURCE
        )
        self.adapter_name = name
        self.details: dict[str, Any] = {}
        self._layouts: dict[tuple[str, tuple[int, ...]], Layout] = {}

    # -- the protocol --------------------------------------------------------
    def inject(self, x: Tensor) -> Tensor:
        """The user's injection of ``x``, packed into one tensor if it is a list."""
        shape = getattr(self, "input_shape", None)
        if shape is not None and tuple(x.shape[1:]) != shape:
            raise DataError(
                f"{self._label()}: expected inputs of shape (B, {', '.join(map(str, shape))}), "
                f"got {tuple(x.shape)}"
            )
        return self._pack("u", self._call("inject", x), "injection")

    def init_state(self, u: Tensor) -> Tensor:
        """The user's ``init_state(u)`` (default zeros shaped like ``u``), packed."""
        user_u = self._unpack("u", u)
        start = self._pieces.get("init_state")
        z0 = start(user_u) if start is not None else _zeros_like(user_u)
        return self._pack("z", z0, "state")

    def f(self, z: Tensor, u: Tensor) -> Tensor:
        """The user's ``f`` on unpacked ``z`` and ``u``, its result packed like ``z``."""
        if ("z", tuple(z.shape[1:])) not in self._layouts:
            self.init_state(u[:1])  # learn the state's layout (e.g. a warm start given by hand)
        out = self._call("f", self._unpack("z", z), self._unpack("u", u))
        packed = self._pack("z", out, "state f returned")
        if packed.shape != z.shape:
            raise DataError(
                f"{self._label()}: f returned a state of shape {tuple(packed.shape)} for one of "
                f"shape {tuple(z.shape)}; f(z, u) must keep z's shape"
            )
        return packed

    def readout(self, z: Tensor) -> Tensor:
        """The user's readout of the unpacked state."""
        return self._call("readout", self._unpack("z", z))  # type: ignore[no-any-return]

    def solve(
        self, x: Tensor, solver: FixedPointSolver | None = None, z0: Tensor | None = None
    ) -> tuple[Tensor, SolverResult]:
        """Logits and the solver's result for pixels ``x`` (see :meth:`DEQModel.solve`)."""
        return solve_model(self, x, solver if solver is not None else self.reference_solver(), z0)

    def forward(
        self, x: Tensor, solver: FixedPointSolver | None = None, z0: Tensor | None = None
    ) -> Tensor:
        """Logits of the fixed point ``solver`` finds (default: :meth:`reference_solver`)."""
        self.before_certificate()
        return self.solve(x, solver, z0)[0]

    def before_certificate(self) -> None:
        """The user's hook (e.g. a weight-norm reset), run before each certificate."""
        hook = self._pieces.get("before_certificate")
        if hook is not None:
            hook()

    # -- h_ref -------------------------------------------------------------
    def reference_solver(self) -> FixedPointSolver:
        """A fresh solver defining ``h_ref``; its description names its source."""
        from ..specs import as_component

        spec = self._reference
        if spec is None:
            return SourcedSolver(DEQModel.default_solver(), self.reference_source)
        return SourcedSolver(as_component("solver", spec), self.reference_source)

    default_solver = reference_solver

    def reference_solver_spec(self) -> dict[str, Any] | None:
        """The reference solver as a spec with its ``source`` (None: deqcert's default)."""
        if self._reference is None:
            return None
        return self.reference_solver().describe()  # type: ignore[no-any-return]

    # -- weights and description ---------------------------------------------
    def load_weights(self, state: Mapping[str, Tensor]) -> None:
        """Load the user's state dict into the wrapped module (strict), then run the hook.

        The adapter's own state dict (names prefixed ``module.``) is accepted too.
        """
        state = dict(state)
        target = self.module if self.module is not None else self
        prefix = "module."
        if self.module is not None and state and all(k.startswith(prefix) for k in state):
            own = set(self.module.state_dict())
            if not own & set(state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
        target.load_state_dict(state, strict=True)
        self.before_certificate()

    def describe(self) -> dict[str, Any]:
        """The adapter, the wrapped class, the state layout and the reference solver's source."""
        layouts = {f"{kind}": layout.describe() for (kind, _), layout in self._layouts.items()}
        return {
            "name": self.adapter_name,
            "module": type(self.module).__name__ if self.module is not None else None,
            "num_classes": self.num_classes,
            "layouts": layouts,
            "reference_source": self.reference_source,
            **self.details,
        }

    # -- helpers ---------------------------------------------------------------
    def _label(self) -> str:
        return type(self.module).__name__ if self.module is not None else self.adapter_name

    def _call(self, role: str, *args: Any) -> Any:
        piece = self._pieces[role]
        assert piece is not None
        return piece(*args)

    def _pack(self, kind: str, value: State, what: str) -> Tensor:
        layout = Layout.of(value, what)
        packed = layout.pack(value)
        known = self._layouts.setdefault((kind, tuple(packed.shape[1:])), layout)
        if known != layout:
            raise DataError(f"{self._label()}: the {what} changed layout between calls")
        return packed

    def _unpack(self, kind: str, value: Tensor) -> State:
        layout = self._layouts.get((kind, tuple(value.shape[1:])))
        return value if layout is None else layout.unpack(value)


def adapt(
    module: nn.Module | None = None,
    *,
    inject: Callable[..., Any] | str,
    f: Callable[..., Any] | str,
    readout: Callable[..., Any] | str,
    num_classes: int,
    init_state: Callable[..., Any] | str | None = None,
    before_certificate: Callable[[], Any] | str | None = None,
    input_shape: tuple[int, ...] | None = None,
    reference_solver: Any = None,
) -> AdaptedDEQ:
    """Wrap a DEQ's pieces into an :class:`~deqcert.protocols.EquilibriumModel`.

    Args:
        module: the user's ``nn.Module`` holding the weights (optional); string
            pieces name its attributes (``inject="encoder"``).
        inject: pixels ``x`` ``(B, C, H, W)`` in ``[0, 1]`` to the injection
            ``u`` (normalise here: the noise is added in pixel space).
        f: the equilibrium map ``f(z, u) -> z``; ``z`` and ``u`` are tensors or
            lists/tuples of tensors, exactly as ``inject``/``init_state`` make them.
        readout: state ``z`` to logits ``(B, num_classes)``.
        num_classes: the number of classes.
        init_state: ``u -> z0``, the start of the reference solve (default zeros like ``u``).
        before_certificate: a no-argument hook run before each certificate.
        input_shape: ``(C, H, W)``, checked against each input (recommended).
        reference_solver: solver defining ``h_ref`` (a spec such as
            ``{"name": "anderson", "max_iter": 40}`` or a solver); default deqcert's.
    """
    pieces = {
        role: _resolve(module, role, value)
        for role, value in (
            ("inject", inject),
            ("f", f),
            ("readout", readout),
            ("init_state", init_state),
            ("before_certificate", before_certificate),
        )
    }
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise OptionError(f"adapt: num_classes must be an int >= 2, got {num_classes!r}")
    if input_shape is not None and (
        not isinstance(input_shape, tuple | list) or not all(int(s) > 0 for s in input_shape)
    ):
        raise OptionError(
            f"adapt: input_shape must be (C, H, W) positive ints, got {input_shape!r}"
        )
    return AdaptedDEQ(
        module, pieces, num_classes, input_shape=input_shape, reference_solver=reference_solver
    )


def _resolve(module: Any, role: str, value: Any) -> Callable[..., Any] | None:
    if value is None:
        if role in ("inject", "f", "readout"):
            raise OptionError(f"adapt: {role} is required")
        return None
    if isinstance(value, str):
        if module is None or not hasattr(module, value):
            owner = type(module).__name__ if module is not None else "no module"
            raise OptionError(f"adapt: {role}={value!r} names no attribute of {owner}")
        value = getattr(module, value)
    if not callable(value):
        raise OptionError(f"adapt: {role} must be callable, got {type(value).__name__}")
    return value  # type: ignore[no-any-return]


def _contains(module: nn.Module | None, piece: nn.Module) -> bool:
    return module is not None and any(m is piece for m in module.modules())


def _zeros_like(u: State) -> State:
    if isinstance(u, Tensor):
        return torch.zeros_like(u)
    return type(u)(torch.zeros_like(t) for t in u)
