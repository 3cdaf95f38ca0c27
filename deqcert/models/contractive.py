"""Contractive DEQs: equilibrium maps that are contractions by construction.

For these models ``z -> f(z, u)`` is a contraction in the (flattened) L2 norm
for every injection ``u``, with a constant ``L < 1`` that the model computes
soundly from its weights (:meth:`contraction_bound`), and the readout is
affine, with exact Lipschitz constants for every logit difference
(:meth:`readout_lipschitz`).  Together they let the ``verified`` certifier
(:mod:`deqcert.certify.verified`) prove, sample by sample, that a truncated,
warm-started solve predicts exactly what the true fixed point predicts.

Why ``f`` contracts.  ``f(z, u) = act(W z + u)`` with ``act`` ReLU or tanh
(1-Lipschitz, elementwise) is ``||W||_2``-Lipschitz in ``z``.  ``W`` is
parametrised as ``W = gamma * V / max(1, ||V||_2)`` with ``gamma < 1``, so
``||W||_2 <= gamma`` whatever the trainable ``V``.  The contraction bound does
not rely on that algebra, though: :meth:`contraction_bound` recomputes the
norm of the weight ``f`` actually uses (exact singular values in float64, see
:mod:`deqcert.lipschitz`), so rounding in the normalisation cannot make it
unsound.  Nothing that breaks the Lipschitz property (group or batch norm,
attention) is used inside ``f``; the injection ``u`` may be any network.

Models:

* ``contractive-mlpdeq``: dense ``W`` (norm by ``svdvals``), ``u`` an affine
  (or one-hidden-layer) map of the pixels, linear readout.
* ``contractive-convdeq``: ``W`` a 3x3 convolution with **circular** padding,
  whose norm is exactly the largest singular value of its Fourier blocks;
  ``u`` from a strided convolutional stem (group norm is fine there); readout
  average pooling followed by a linear layer.

The models are otherwise ordinary :class:`~deqcert.models.base.DEQModel`\\ s:
any solver, certifier or training loop can use them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..lipschitz import (
    affine_margin_lipschitz,
    circular_conv_spectral_norm,
    conv_frequency_matrices,
    dense_spectral_norm,
)
from .base import DEQModel, ImageModelOptions, conv3x3, downsampled, group_norm


@dataclass(frozen=True)
class ContractionBound:
    """A proven Lipschitz constant of ``z -> f(z, u)``, valid for every ``u``.

    Attributes:
        lipschitz: ``L``, an upper bound (not an estimate) on the constant.
        norm: the norm on the flattened state it refers to (``"l2"``).
        method: how it was computed, for the record.
    """

    lipschitz: float
    norm: str = "l2"
    method: str = ""


@runtime_checkable
class ContractiveModel(Protocol):
    """An equilibrium model with a sound contraction bound and readout constants.

    What :class:`~deqcert.certify.verified.VerifiedCertifier` needs on top of
    :class:`~deqcert.protocols.EquilibriumModel`:

    * :meth:`contraction_bound`: ``L`` with ``||f(z, u) - f(z', u)|| <= L ||z - z'||``
      for all ``z, z', u`` (L2 on the flattened state);
    * :meth:`readout_lipschitz`: a ``(C, C)`` float64 tensor ``R`` with
      ``|m_ab(z) - m_ab(z')| <= R[a, b] ||z - z'||`` for the logit differences
      ``m_ab = logit_a - logit_b``.

    Both must be computed from the weights the model currently uses, and must
    be sound bounds (power iteration is not).
    """

    num_classes: int

    def inject(self, x: Tensor) -> Tensor: ...

    def init_state(self, u: Tensor) -> Tensor: ...

    def f(self, z: Tensor, u: Tensor) -> Tensor: ...

    def readout(self, z: Tensor) -> Tensor: ...

    def contraction_bound(self) -> ContractionBound: ...

    def readout_lipschitz(self) -> Tensor: ...


class NormalisedWeight(nn.Module):
    """A trainable weight ``gamma * V / max(1, norm(V))``: its norm never exceeds ``gamma``.

    ``norm`` must be differentiable (it is trained through).  Outside training
    (no autograd, or ``V`` frozen) the normalised weight is cached with a copy
    of ``V`` and recomputed whenever ``V`` differs from that copy (values,
    dtype or device), so a solver's many calls of ``f`` cost one comparison of
    ``V`` each instead of a singular value decomposition.
    """

    def __init__(self, shape: tuple[int, ...], gamma: float, norm: Callable[[Tensor], Tensor]):
        super().__init__()
        self.raw = nn.Parameter(torch.empty(shape))
        nn.init.kaiming_uniform_(self.raw, a=5**0.5)
        self.gamma = float(gamma)
        self.norm = norm
        self._cache: tuple[Tensor, Tensor] | None = None

    def _normalise(self, raw: Tensor) -> Tensor:
        return self.gamma * raw / torch.clamp(self.norm(raw), min=1.0)

    def forward(self) -> Tensor:
        raw = self.raw
        if torch.is_grad_enabled() and raw.requires_grad:
            return self._normalise(raw)
        cached = self._cache
        if cached is None or not _same(cached[0], raw):
            # normal tensors even under inference mode, so the cache can be reused anywhere
            with torch.inference_mode(False), torch.no_grad():
                self._cache = (raw.detach().clone(), self._normalise(raw))
        return self._cache[1]  # type: ignore[index]


def _same(snapshot: Tensor, raw: Tensor) -> bool:
    """Whether ``raw`` still holds exactly the values of ``snapshot`` (cheap: one weight)."""
    return (
        snapshot.dtype == raw.dtype
        and snapshot.device == raw.device
        and snapshot.shape == raw.shape
        and bool(torch.equal(snapshot, raw))
    )


def _dense_norm(weight: Tensor) -> Tensor:
    return torch.linalg.matrix_norm(weight, ord=2)


class ContractiveOptions(ImageModelOptions):
    """Options shared by the contractive models."""

    gamma: float = Field(
        0.9, gt=0, lt=1, description="bound on ||W||_2, hence on the contraction constant"
    )


# -- contractive-mlpdeq ---------------------------------------------------------


class ContractiveMLPDEQOptions(ContractiveOptions):
    hidden: int = Field(128, ge=1, description="width of the state")
    activation: Literal["relu", "tanh"] = Field("relu", description="1-Lipschitz activation of f")
    inject_hidden: int | None = Field(
        None, ge=1, description="width of a hidden ReLU layer in the injection (None: affine)"
    )


class ContractiveMLPDEQ(DEQModel):
    """``f(z, u) = act(W z + u)`` with ``||W||_2 <= gamma < 1``; linear readout.

    State ``(B, hidden)``.  ``u`` is an affine map of the normalised pixels
    (or a one-hidden-layer ReLU network with ``inject_hidden``).
    """

    Options = ContractiveMLPDEQOptions
    conformance_options: ClassVar[dict[str, Any]] = {
        "image_size": 8,
        "in_channels": 2,
        "num_classes": 3,
        "hidden": 8,
    }
    """Tiny options the :mod:`deqcert.testing` suites build it with."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        features = o.in_channels * o.image_size * o.image_size
        layers: list[nn.Module] = []
        if o.inject_hidden is not None:
            layers += [nn.Linear(features, o.inject_hidden), nn.ReLU()]
            features = o.inject_hidden
        layers.append(nn.Linear(features, o.hidden))
        self.input_layers = nn.Sequential(*layers)
        self.recurrent = NormalisedWeight((o.hidden, o.hidden), o.gamma, _dense_norm)
        self.output_layer = nn.Linear(o.hidden, o.num_classes)
        self.act = torch.relu if o.activation == "relu" else torch.tanh

    def injection(self, x: Tensor) -> Tensor:
        return self.input_layers(x.flatten(1))  # type: ignore[no-any-return]

    def f(self, z: Tensor, u: Tensor) -> Tensor:
        return self.act(F.linear(z, self.recurrent()) + u)

    def readout(self, z: Tensor) -> Tensor:
        return self.output_layer(z)  # type: ignore[no-any-return]

    def contraction_bound(self) -> ContractionBound:
        """``L = ||W||_2`` of the weight ``f`` uses (float64 singular values, rounded up)."""
        with torch.no_grad():
            weight = self.recurrent()
        return ContractionBound(dense_spectral_norm(weight), "l2", "dense svdvals (float64)")

    def readout_lipschitz(self) -> Tensor:
        """``R[a, b] = ||A_a - A_b||_2`` for the linear readout ``A z + c``."""
        return affine_margin_lipschitz(self.output_layer.weight)


# -- contractive-convdeq --------------------------------------------------------


class ContractiveConvDEQOptions(ContractiveOptions):
    channels: int = Field(32, ge=1, description="channels of the state")
    stem_stride: Literal[1, 2] = Field(2, description="2 halves the resolution of the state")
    head_pool: int = Field(7, ge=1, description="the readout average-pools to head_pool^2")
    groups: int = Field(4, ge=1, description="group-norm groups (injection only)")


class ContractiveConvDEQ(DEQModel):
    """``f(z, u) = relu(W * z + u)``, ``W`` a circular 3x3 convolution with norm ``<= gamma``.

    State ``(B, channels, s, s)``.  The norm of a circular convolution is
    computed exactly from the singular values of its Fourier blocks (in the
    parameter dtype while training, in float64 for the bound).  The injection
    is a strided 3x3 conv stem with group norm (outside ``f``, so it does not
    matter for the contraction) and a 1x1 convolution: cheap in float64, where
    the verified certifier computes it for every sample (a 3x3 one there gained
    ~1 point of noisy accuracy on ``mnist-sample`` at four times the cost).
    The readout averages ``head_pool x head_pool`` cells and applies a linear
    layer (affine, so its margin constants are exact).
    """

    Options = ContractiveConvDEQOptions
    conformance_options: ClassVar[dict[str, Any]] = {
        "image_size": 8,
        "in_channels": 2,
        "num_classes": 3,
        "channels": 4,
        "head_pool": 2,
        "groups": 2,
    }
    """Tiny options the :mod:`deqcert.testing` suites build it with."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        self.state_size = downsampled(o.image_size, 1) if o.stem_stride == 2 else o.image_size
        size = self.state_size
        self.stem = conv3x3(o.in_channels, o.channels, stride=o.stem_stride)
        self.stem_norm = group_norm(o.channels, o.groups)
        self.inject_conv = nn.Conv2d(o.channels, o.channels, 1)
        self.recurrent = NormalisedWeight(
            (o.channels, o.channels, 3, 3),
            o.gamma,
            lambda w: torch.linalg.svdvals(conv_frequency_matrices(w, size)).max(),
        )
        self.classifier = nn.Linear(o.channels * o.head_pool * o.head_pool, o.num_classes)
        self._spectrum: tuple[Tensor, Tensor] | None = None

    def injection(self, x: Tensor) -> Tensor:
        return self.inject_conv(F.relu(self.stem_norm(self.stem(x))))  # type: ignore[no-any-return]

    def f(self, z: Tensor, u: Tensor) -> Tensor:
        return F.relu(self.circular_conv(z) + u)

    def circular_conv(self, z: Tensor) -> Tensor:
        """``W * z`` with circular padding: direct, or through the FFT in float64.

        Both compute the same circular convolution.  In float64 (the verified
        certifier's check) the FFT route is several times faster on CPU, and
        its rounding error, ``O(log(s) 2^-53)`` relative to ``||W|| ||z||``, is
        as negligible as that of the direct sum.
        """
        weight = self.recurrent()
        if z.dtype != torch.float64:
            return F.conv2d(F.pad(z, (1, 1, 1, 1), mode="circular"), weight)
        size = self.state_size
        cached = self._spectrum
        if cached is None or cached[0] is not weight:
            # out_hat(k) = conj(K_hat(k)) z_hat(k), then a one-pixel shift for padding 1
            blocks = conv_frequency_matrices(weight, size)[:, : size // 2 + 1]
            cached = (weight, blocks.conj().permute(0, 1, 3, 2).contiguous())  # (s, half, in, out)
            self._spectrum = cached
        mixed = torch.einsum("bikl,klio->bokl", torch.fft.rfft2(z), cached[1])
        return torch.roll(torch.fft.irfft2(mixed, s=(size, size)), shifts=(1, 1), dims=(2, 3))

    def readout(self, z: Tensor) -> Tensor:
        pooled = F.adaptive_avg_pool2d(z, self.options.head_pool).flatten(1)
        return self.classifier(pooled)  # type: ignore[no-any-return]

    def contraction_bound(self) -> ContractionBound:
        """``L`` = exact norm of the circular convolution ``f`` uses (FFT, float64, rounded up)."""
        with torch.no_grad():
            weight = self.recurrent()
        return ContractionBound(
            circular_conv_spectral_norm(weight, self.state_size),
            "l2",
            "circular conv: max singular value of Fourier blocks (float64)",
        )

    def readout_lipschitz(self) -> Tensor:
        """``R[a, b] = ||G_a - G_b||_2``, ``G`` the (constant) Jacobian of the affine readout."""
        o = self.options
        size = self.state_size
        param = self.classifier.weight
        with torch.inference_mode(False), torch.enable_grad():
            z = torch.zeros(
                (1, o.channels, size, size),
                dtype=param.dtype,
                device=param.device,
                requires_grad=True,
            )
            logits = self.readout(z)[0]
            rows = [
                torch.autograd.grad(logits[c], z, retain_graph=True)[0].flatten()
                for c in range(self.num_classes)
            ]
        return affine_margin_lipschitz(torch.stack(rows))
