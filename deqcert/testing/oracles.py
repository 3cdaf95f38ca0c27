"""Oracle models with a known smoothed classifier, for soundness tests.

:class:`LinearOracle` is the binary linear classifier ``sign(w . x + b)``
written as a DEQ.  Under Gaussian noise ``N(0, sigma^2 I)`` the score
``s(x + e) = w . x + b + w . e`` is ``N(s(x), sigma^2 ||w||^2)``, so

    p_A = Phi(|s(x)| / (sigma ||w||)),    true L2 radius = |s(x)| / ||w||,

exactly, for the reference classifier ``h_ref`` (a plain iteration from
``init_state`` keeps the sign of ``s`` at every step: see :class:`LinearOracle`).

The equilibrium map contracts slowly (``f(z, u) = c z + (1 - c) u`` with
``c`` close to 1 by default), so a solve truncated to one step from another
sample's fixed point -- what serialized smoothing does -- stays close to
where it started: near the decision boundary its prediction repeats the
chain's previous one.  Serialized votes are then both wrong and dependent,
which is what the soundness tests need to expose invalid bounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import torch
from scipy.stats import norm as normal
from torch import Tensor, nn

from ..models.contractive import ContractionBound
from ..protocols import FixedPointSolver

_Oracle = TypeVar("_Oracle", bound="LinearOracle")


class LinearOracle(nn.Module):
    """``h_ref(x) = 1 if w . x + b > 0 else 0`` as a DEQ with a scalar-score state.

    * ``inject(x) = [0, s(x)]`` with ``s(x) = w . x + b`` (shape ``(B, 2)``),
    * ``f(z, u) = c z + (1 - c) u`` (fixed point ``z* = u``),
    * ``init_state(u) = 0``, ``readout(z) = z`` (logits; class 1 iff ``z_1 > z_0``).

    From ``z0 = 0`` the plain iteration gives ``z_k = (1 - c^k) u``, a
    positive multiple of ``u``, so with a ``naive`` reference solver ``h_ref``
    is exactly ``sign(s)`` however few steps it takes (Anderson also returns
    a multiple of ``u``, converging to ``u``).  Ties (``s = 0``) go to class 0.

    Args:
        weight: ``w``, shaped like one input (e.g. ``(1, 4, 4)``).
        bias: ``b``.
        contraction: ``c`` in ``(0, 1)``; larger is slower.
    """

    num_classes = 2
    weight: Tensor

    def __init__(self, weight: Tensor, bias: float = 0.0, contraction: float = 0.9) -> None:
        super().__init__()
        if not 0.0 < contraction < 1.0:
            raise ValueError(f"contraction must be in (0, 1), got {contraction}")
        self.register_buffer("weight", weight.detach().clone().float())
        self.bias = float(bias)
        self.contraction = float(contraction)
        self.input_shape = tuple(weight.shape)

    # -- the EquilibriumModel protocol -------------------------------------
    def score(self, x: Tensor) -> Tensor:
        """``s(x) = w . x + b`` for a batch ``(B, *input_shape)``, shape ``(B,)``."""
        return x.flatten(1) @ self.weight.flatten().to(x.dtype) + self.bias

    def inject(self, x: Tensor) -> Tensor:
        s = self.score(x)
        return torch.stack([torch.zeros_like(s), s], dim=1)

    def init_state(self, u: Tensor) -> Tensor:
        return torch.zeros_like(u)

    def f(self, z: Tensor, u: Tensor) -> Tensor:
        c = self.contraction
        return c * z + (1.0 - c) * u

    def readout(self, z: Tensor) -> Tensor:
        return z

    def forward(
        self, x: Tensor, solver: FixedPointSolver | None = None, z0: Tensor | None = None
    ) -> Tensor:
        """Logits; without a solver the exact fixed point ``u`` is read out."""
        u = self.inject(x)
        if solver is None:
            return self.readout(u)
        start = self.init_state(u) if z0 is None else z0
        return self.readout(solver.solve(lambda z: self.f(z, u), start).z)

    # -- ground truth -------------------------------------------------------
    @property
    def weight_norm(self) -> float:
        return float(torch.linalg.vector_norm(self.weight))

    def true_class(self, x: Tensor) -> int:
        """``g(x)`` (and ``h_ref(x)``) for one input: 1 if ``s(x) > 0`` else 0."""
        return int(float(self.score(x.unsqueeze(0))[0]) > 0)

    def true_p_a(self, x: Tensor, sigma: float) -> float:
        """Exact ``P(h_ref(x + e) = g(x))`` for ``e ~ N(0, sigma^2 I)``."""
        s = abs(float(self.score(x.unsqueeze(0))[0]))
        return float(normal.cdf(s / (sigma * self.weight_norm)))

    def true_radius(self, x: Tensor) -> float:
        """Exact L2 radius of the Gaussian-smoothed classifier: ``|s(x)| / ||w||``.

        Equals ``sigma * Phi^-1(p_A)`` for every ``sigma``; no certificate may exceed it.
        """
        return abs(float(self.score(x.unsqueeze(0))[0])) / self.weight_norm

    @classmethod
    def with_p_a(
        cls: type[_Oracle],
        p_a: float,
        sigma: float,
        shape: Sequence[int] = (1, 4, 4),
        *,
        contraction: float = 0.9,
        seed: int = 0,
    ) -> tuple[_Oracle, Tensor]:
        """An oracle and an input ``x`` in ``[0, 1]`` whose true ``p_A`` is ``p_a`` (class 1).

        ``w`` is a random direction; ``x = 0.5`` everywhere and ``b`` is set
        so that ``s(x) = sigma ||w|| Phi^-1(p_a)``.
        """
        if not 0.5 < p_a < 1.0:
            raise ValueError(f"p_a must be in (1/2, 1), got {p_a}")
        gen = torch.Generator().manual_seed(seed)
        weight = torch.randn(tuple(shape), generator=gen)
        weight = weight / torch.linalg.vector_norm(weight)
        x = torch.full(tuple(shape), 0.5)
        margin = sigma * float(normal.ppf(p_a))
        bias = margin - float((weight * x).sum())
        return cls(weight, bias, contraction), x


class ContractiveLinearOracle(LinearOracle):
    """:class:`LinearOracle` with its exact contraction and readout constants.

    ``f(z, u) = c z + (1 - c) u`` is ``c``-Lipschitz and ``readout(z) = z``,
    so each logit difference has constant ``||e_a - e_b|| = sqrt(2)``: a
    :class:`~deqcert.models.contractive.ContractiveModel`, usable by every
    certifier (``verified`` included), with ``h_exact = h_ref = sign(s)``.
    """

    def contraction_bound(self) -> ContractionBound:
        return ContractionBound(self.contraction * (1 + 1e-12), "l2", "exact")

    def readout_lipschitz(self) -> Tensor:
        return (1.0 - torch.eye(2, dtype=torch.float64)) * math.sqrt(2.0)


class ConstantOracle(nn.Module):
    """A contractive DEQ that predicts ``label`` for every input.

    ``inject(x)`` is the mean pixel per input (state ``(B, 1)``), ``f(z, u) =
    c z + (1 - c) u`` and the logits are ``margin`` for ``label`` and 0 for
    the other classes whatever the state: the smoothed classifier is
    ``label`` everywhere, so no certifier may certify another class.
    """

    def __init__(
        self,
        label: int,
        num_classes: int = 3,
        input_shape: Sequence[int] = (1, 4, 4),
        *,
        margin: float = 2.0,
        contraction: float = 0.5,
    ) -> None:
        super().__init__()
        if not 0 <= label < num_classes:
            raise ValueError(f"label must be in [0, {num_classes}), got {label}")
        self.num_classes = int(num_classes)
        self.label = int(label)
        self.input_shape = tuple(input_shape)
        self.contraction = float(contraction)
        logits = torch.zeros(num_classes)
        logits[label] = margin
        self.logits: Tensor
        self.register_buffer("logits", logits)

    def inject(self, x: Tensor) -> Tensor:
        return x.flatten(1).mean(dim=1, keepdim=True)

    def init_state(self, u: Tensor) -> Tensor:
        return torch.zeros_like(u)

    def f(self, z: Tensor, u: Tensor) -> Tensor:
        c = self.contraction
        return c * z + (1.0 - c) * u

    def readout(self, z: Tensor) -> Tensor:
        return self.logits.to(z.dtype).expand(z.shape[0], -1)

    def forward(
        self, x: Tensor, solver: FixedPointSolver | None = None, z0: Tensor | None = None
    ) -> Tensor:
        return self.readout(self.inject(x))

    def contraction_bound(self) -> ContractionBound:
        return ContractionBound(self.contraction * (1 + 1e-12), "l2", "exact")

    def readout_lipschitz(self) -> Tensor:
        return torch.zeros(self.num_classes, self.num_classes, dtype=torch.float64)
