"""Sound Lipschitz constants of the linear maps inside contractive DEQs.

Everything here returns a number that is **at least** the true L2 operator
norm of the map, never an estimate of it:

* :func:`dense_spectral_norm`: ``||W||_2`` of a matrix, from its singular
  values (``torch.linalg.svdvals`` in float64).
* :func:`circular_conv_spectral_norm`: the exact spectral norm of a stride-1
  convolution with circular padding on an ``n x n`` torus.  The 2-D DFT
  block-diagonalises the operator (Sedghi, Gupta and Long, "The Singular
  Values of Convolutional Layers", ICLR 2019): at frequency ``(k, l)`` it acts
  on the channels by ``K_hat(k, l) = sum_{p,q} K[:, :, p, q] w^(kp + lq)``
  (``w = exp(-2 pi i / n)``), so its norm is the largest singular value over the
  ``n^2`` small ``c_out x c_in`` matrices.  The unitary DFT preserves norms, and
  a real linear map has the same operator norm as its complexification.
* :func:`zero_padded_conv_spectral_bound`: an upper bound for a stride-1
  convolution with zero padding ``p``.  Place the ``n x n`` input, with its ``p``
  zeros each side, on an ``N x N`` torus, ``N = n + 2p``: no index wraps
  around, so the zero-padded output is a restriction (norm <= 1) of the
  circular convolution on the torus applied to an isometric embedding of the
  input.  Hence ``||conv|| <= circular_conv_spectral_norm(K, N)``.
* :func:`affine_margin_lipschitz`: for an affine readout ``logits = G z + c``,
  the exact Lipschitz constant ``||G_a - G_b||_2`` of each logit difference.

Power iteration, the usual way to *estimate* a spectral norm during training,
approaches the largest singular value from below: it is not a bound and is
never used here.

Rounding.  The singular values come from LAPACK in float64.  Its SVD is
backward stable: the computed values are exact for ``W + E`` with
``||E||_2 <= p(m, n) * 2^-53 * ||W||_2`` for a modest polynomial ``p``, and by
Weyl's inequality each computed value is within that much of the true one.
For any matrix or kernel deqcert handles (``p(m, n) < 10^6``) the error is
below ``10^-10 * ||W||``; every result is inflated by the relative factor
``1 + SAFETY`` (``SAFETY = 10^-9``), which covers it with room to spare.
Inputs are converted to float64 first (exact for float32 and float16 weights).
"""

from __future__ import annotations

import torch
from torch import Tensor

SAFETY = 1e-9
"""Relative inflation of every computed norm (covers float64 SVD/FFT rounding)."""


def _inflate(value: Tensor | float) -> float:
    return float(value) * (1.0 + SAFETY)


def dense_spectral_norm(weight: Tensor) -> float:
    """Upper bound on ``||weight||_2`` (largest singular value), tight to ``1e-9`` relative.

    Args:
        weight: a ``(m, n)`` matrix (any real dtype and device).
    """
    if weight.dim() != 2:
        raise ValueError(f"expected a matrix, got shape {tuple(weight.shape)}")
    if weight.numel() == 0:
        return 0.0
    values = torch.linalg.svdvals(weight.detach().to(torch.float64))
    return _inflate(values.max())


def conv_frequency_matrices(weight: Tensor, size: int) -> Tensor:
    """``K_hat(k, l)`` for all ``size x size`` frequencies, shape ``(size, size, c_out, c_in)``.

    ``weight`` is a ``(c_out, c_in, kh, kw)`` kernel with ``kh, kw <= size``.
    Works in the weight's dtype (complex), so it is differentiable: the
    contractive models use it, in float32, to *normalise* their kernels while
    training; certification recomputes the norm in float64 with
    :func:`circular_conv_spectral_norm`.
    """
    if weight.dim() != 4:
        raise ValueError(f"expected a (c_out, c_in, kh, kw) kernel, got {tuple(weight.shape)}")
    if weight.shape[2] > size or weight.shape[3] > size:
        raise ValueError(f"kernel {tuple(weight.shape[2:])} is larger than the {size}x{size} torus")
    spectrum = torch.fft.fft2(weight, s=(size, size))  # (c_out, c_in, size, size)
    return spectrum.permute(2, 3, 0, 1)


def circular_conv_spectral_norm(weight: Tensor, size: int) -> float:
    """Exact (to ``1e-9`` relative, upwards) L2 norm of a circular stride-1 convolution.

    The operator maps ``(c_in, size, size)`` to ``(c_out, size, size)`` with
    circular padding (``padding_mode="circular"``); the alignment of the
    kernel (its padding) only multiplies every ``K_hat(k, l)`` by a unit
    phase, which does not change singular values.
    """
    blocks = conv_frequency_matrices(weight.detach().to(torch.float64), size)
    return _inflate(torch.linalg.svdvals(blocks).max())


def zero_padded_conv_spectral_bound(weight: Tensor, size: int, padding: int) -> float:
    """Upper bound on the L2 norm of a stride-1 convolution with zero padding ``padding``.

    Equal to :func:`circular_conv_spectral_norm` on the ``(size + 2 padding)``
    torus; see the module docstring for why this bounds the zero-padded map.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    return circular_conv_spectral_norm(weight, size + 2 * padding)


def affine_margin_lipschitz(gradients: Tensor) -> Tensor:
    """``R[a, b] >= ||G_a - G_b||_2`` for an affine readout ``logits = G z + c``.

    ``R[a, b]`` is the exact Lipschitz constant (L2) of ``z -> logit_a(z) -
    logit_b(z)``, inflated by ``1 + SAFETY``; float64, shape ``(C, C)``.

    Args:
        gradients: ``G``, shape ``(C, D)``: row ``a`` is the gradient of logit ``a``.
    """
    if gradients.dim() != 2:
        raise ValueError(f"expected a (classes, dim) matrix, got {tuple(gradients.shape)}")
    g = gradients.detach().to(torch.float64)
    # direct differences (cdist's matrix-product shortcut loses accuracy to cancellation)
    return torch.linalg.vector_norm(g.unsqueeze(1) - g.unsqueeze(0), dim=2) * (1.0 + SAFETY)
