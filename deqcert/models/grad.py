"""Gradients through an equilibrium, for training.

The forward solve runs without autograd.  One more application of ``f`` at the
fixed point, ``z_out = f(z_in, u)`` with ``z_in = z*`` a fresh leaf, reattaches
the graph to the parameters and to ``u``.  Then either

* :func:`attach_implicit_backward` replaces the gradient ``grad`` arriving at
  ``z_out`` by the solution ``g`` of the adjoint fixed point
  ``g = g J + grad`` (``J = df/dz`` at ``z*``), which is the exact implicit
  gradient, found with any registered solver; or
* nothing more is done: backpropagating through the single step is the
  Jacobian-free backward (JFB, Fung et al. 2022), which drops ``J``.

:func:`jacobian_penalty` is Hutchinson's estimate of ``||J||_F^2`` per state
dimension (Bai, Koltun and Kolter 2021); penalising it keeps ``f``
contractive, so the forward solver converges.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from ..protocols import FixedPointSolver


def attach_implicit_backward(z_out: Tensor, z_in: Tensor, solver: FixedPointSolver) -> None:
    """Make backward through ``z_out = f(z_in)`` return the implicit (adjoint) gradient.

    ``z_in`` must be a leaf that requires grad, holding the fixed point.  The
    hook fires once: it removes itself before the vector-Jacobian products,
    which would otherwise re-enter it.
    """
    handles: list[RemovableHandle] = []

    def hook(grad: Tensor) -> Tensor:
        handles.pop().remove()

        def adjoint(g: Tensor) -> Tensor:
            (vjp,) = torch.autograd.grad(z_out, z_in, g, retain_graph=True)
            return vjp + grad

        return solver.solve(adjoint, grad.detach().clone()).z

    handles.append(z_out.register_hook(hook))


def jacobian_penalty(
    z_out: Tensor, z_in: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Hutchinson estimate of ``||df/dz||_F^2 / dim`` averaged over the batch (differentiable).

    One Gaussian probe ``v``: ``E ||v^T J||^2 = ||J||_F^2``.  Call it before
    :func:`attach_implicit_backward` on the same tensors.
    """
    probe = torch.randn(z_out.shape, generator=generator, device=z_out.device, dtype=z_out.dtype)
    (vjp,) = torch.autograd.grad(z_out, z_in, probe, create_graph=True)
    return vjp.pow(2).sum() / probe.numel()
