"""The protocol check: is an object an :class:`~deqcert.protocols.EquilibriumModel`?

:func:`check_model` looks at every member at once and raises one
:class:`ModelProtocolError` naming each missing or ill-typed member and what it
must do, so that a user's model is fixed in one go rather than one
``AttributeError`` at a time.  Certifying (the certifiers' entry), saving
(:func:`~deqcert.checkpoint.save_checkpoint`) and serving (the run pipeline)
all call it before any work.  :func:`prepare_model` runs the model's optional
``before_certificate`` hook (e.g. TorchDEQ's weight-norm reset) after the check.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import DeqcertError
from ..options import short_repr

MEMBERS: dict[str, str] = {
    "num_classes": "int >= 2, the number of logits readout returns",
    "inject": "method inject(x) -> u: pixels x (B, C, H, W) in [0, 1] to the injection u "
    "(B, ...); normalisation belongs here",
    "init_state": "method init_state(u) -> z0 (B, ...), the start of the reference solve "
    "(usually zeros)",
    "f": "method f(z, u) -> z (B, ...), the equilibrium map, batch rows independent",
    "readout": "method readout(z) -> logits (B, num_classes)",
    "forward": "method forward(x, solver=None, z0=None) -> logits of the fixed point",
}
"""Each protocol member and what it must do (the text of the error)."""

ADAPT_HINT = (
    "wrap the model with deqcert.adapt(...) or deqcert.adapters.torchdeq.adapt(...) "
    "(docs: 'Certify your own DEQ')"
)


class ModelProtocolError(DeqcertError, TypeError):
    """An object used as a model lacks members of :class:`~deqcert.protocols.EquilibriumModel`."""


def protocol_problems(model: Any) -> list[str]:
    """``member: what is wrong`` for every missing or ill-typed protocol member (empty: fine)."""
    problems: list[str] = []
    classes = getattr(model, "num_classes", None)
    if not hasattr(model, "num_classes"):
        problems.append(f"missing num_classes ({MEMBERS['num_classes']})")
    elif isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        given = short_repr(classes, 30)
        problems.append(f"num_classes is {given}, must be {MEMBERS['num_classes']}")
    for name in ("inject", "init_state", "f", "readout", "forward"):
        member = getattr(model, name, None)
        if member is None or _unimplemented(member):
            problems.append(f"missing {name} ({MEMBERS[name]})")
        elif not callable(member):
            problems.append(f"{name} is a {type(member).__name__}, must be a {MEMBERS[name]}")
        elif not _accepts(member, _ARITY[name], solver=name == "forward"):
            problems.append(f"{name} has the wrong signature, must be a {MEMBERS[name]}")
    return problems


_ARITY = {"inject": 1, "init_state": 1, "f": 2, "readout": 1, "forward": 1}


def check_model(model: Any, *, purpose: str = "certify") -> None:
    """Raise :class:`ModelProtocolError` (one line) unless ``model`` satisfies the protocol.

    ``purpose`` (``certify``, ``save``, ``serve``) is named in the message.
    """
    problems = protocol_problems(model)
    if problems:
        raise ModelProtocolError(
            f"cannot {purpose} {type(model).__name__}: it is not a deqcert EquilibriumModel: "
            + "; ".join(problems)
            + f". {ADAPT_HINT}"
        )


def prepare_model(model: Any, *, purpose: str = "certify") -> None:
    """:func:`check_model`, the model's ``before_certificate()`` hook if it has one, then
    :func:`check_weights` (the hook may recompute weights, e.g. a weight-norm reset)."""
    check_model(model, purpose=purpose)
    hook = getattr(model, "before_certificate", None)
    if callable(hook):
        hook()
    check_weights(model, purpose=purpose)


class NonFiniteWeightsError(DeqcertError, ValueError):
    """A model to certify holds NaN or infinite weights."""


def first_nonfinite(named: Iterable[tuple[str, Tensor]]) -> tuple[str, int] | None:
    """``(name, count)`` of the first floating-point tensor with NaN/Inf values, else None."""
    for name, tensor in named:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name, int((~torch.isfinite(tensor)).sum())
    return None


def check_weights(model: Any, *, purpose: str = "certify") -> None:
    """Raise :class:`NonFiniteWeightsError` (one line) if a parameter or buffer is not finite.

    A NaN weight makes every logit NaN, and ``argmax`` of NaN logits is class 0:
    such a model is refused before any work rather than certified.
    """
    if not hasattr(model, "named_parameters"):
        return
    tensors = [*model.named_parameters(), *model.named_buffers()]
    bad = first_nonfinite(tensors)
    if bad is not None:
        name, count = bad
        raise NonFiniteWeightsError(
            f"cannot {purpose} {type(model).__name__}: weight {short_repr(name)} holds "
            f"{count} NaN or infinite value(s); the weights of a model must be finite"
        )


def _unimplemented(member: Any) -> bool:
    """True for ``nn.Module``'s placeholder ``forward`` (a module that defines none)."""
    func = getattr(member, "__func__", None)
    return func is not None and func is getattr(nn.Module, "_forward_unimplemented", object())


def _accepts(member: Any, positional: int, *, solver: bool = False) -> bool:
    """Whether ``member`` can be called with ``positional`` arguments (and ``solver=``)."""
    try:
        signature = inspect.signature(member)
    except (TypeError, ValueError):  # builtins without a signature: give them the benefit
        return True
    args: list[Any] = [None] * positional
    kwargs = {"solver": None} if solver else {}
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return False
    return True
