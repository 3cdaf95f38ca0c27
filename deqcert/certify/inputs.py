"""The one check of an input before any sampling: :func:`check_input`.

Used by every certifier's ``certify``/``predict`` (through
:func:`~deqcert.certify.base.check_call`), by the dataset loop and by the run
pipeline.  Each rule gives one :class:`~deqcert.errors.DataError` line that
says what was wrong and what is accepted:

* ``x``: a floating-point tensor with real data (not on the ``meta`` device),
  of the model's ``input_shape`` (:class:`~deqcert.protocols.ShapedModel`),
  finite;
* dtype and device: those of the model's floating-point weights (float32 for
  the built-in models; nothing is cast silently); a model without weights
  accepts float32 or float64 on any device;
* range: within the model's ``input_range`` (default ``(0, 1)``: pixels,
  noise is added in pixel space); a model whose inputs are not images sets
  ``input_range = (lo, hi)`` or ``input_range = None`` (no range check);
* ``generator`` (when the caller samples): a :class:`torch.Generator` on the
  input's device type.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..errors import DataError
from ..options import short_repr
from ..protocols import ShapedModel

DEFAULT_INPUT_RANGE = (0.0, 1.0)
"""Pixels: the range a model accepts unless it sets ``input_range``."""

WEIGHTLESS_DTYPES = (torch.float32, torch.float64)
"""Input dtypes a model without floating-point weights accepts."""


def check_input(
    model: Any,
    x: Any,
    generator: Any = None,
    *,
    label: Any = None,
    where: str = "input",
    ndim: int | None = None,
    needs_generator: bool = False,
    check_device: bool = True,
) -> None:
    """Raise a one-line :class:`DataError` unless ``x`` is one input ``model`` accepts.

    The rules are in the module docstring.  ``ndim`` is the number of
    dimensions expected when the model declares no ``input_shape`` (any
    number >= 1 otherwise); with ``label``, it must be a class of the model
    (``0 <= label < num_classes``).  With ``needs_generator`` (the certifiers)
    ``generator`` must be a :class:`torch.Generator`; otherwise it is checked
    only when given.  ``check_device=False`` skips the device rule (a dataset
    item checked before it is moved to the run's device).  Messages start with
    ``where`` (e.g. ``"input 3 of dataset 'mnist'"``).
    """
    _check_tensor(x, where)
    _check_shape(model, x, where, ndim)
    _check_dtype_and_device(model, x, where, check_device)
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{where}: x contains NaN or infinite values; inputs must be finite")
    _check_range(model, x, where)
    if needs_generator or generator is not None:
        _check_generator(x, generator, where)
    num_classes = getattr(model, "num_classes", None)
    if label is not None and isinstance(num_classes, int) and not 0 <= int(label) < num_classes:
        raise DataError(
            f"{where}: label {label} is out of range; the model has {num_classes} classes"
        )


def model_weight(model: Any) -> Tensor | None:
    """The model's first floating-point parameter or buffer (its dtype and device), if any."""
    if not hasattr(model, "parameters"):
        return None
    tensors = list(model.parameters()) + list(model.buffers())
    return next((t for t in tensors if t.is_floating_point()), None)


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter or buffer (CPU if it has none)."""
    tensors = (
        list(model.parameters()) + list(model.buffers()) if hasattr(model, "parameters") else []
    )
    return tensors[0].device if tensors else torch.device("cpu")


def input_range(model: Any) -> tuple[float, float] | None:
    """The model's ``input_range`` (default ``(0, 1)``); one-line error if it is malformed."""
    value = getattr(model, "input_range", DEFAULT_INPUT_RANGE)
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise DataError(
            f"model.input_range is {short_repr(value, 30)}; it must be None (no range check) "
            "or a pair (lo, hi) of finite numbers with lo < hi"
        )
    return lo, hi


def _check_tensor(x: Any, where: str) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise DataError(f"{where}: x must be a float tensor, got {_kind(x)}")
    if x.is_meta:
        raise DataError(
            f"{where}: x is on the meta device (a shape without values); "
            "pass a tensor with real data on the model's device"
        )


def _check_shape(model: Any, x: Tensor, where: str, ndim: int | None) -> None:
    expected = tuple(model.input_shape) if isinstance(model, ShapedModel) else None
    if expected is not None and tuple(x.shape) != expected:
        raise DataError(f"{where}: expected x of shape {expected}, got {tuple(x.shape)}")
    if expected is None and ndim is not None and x.dim() != ndim:
        want = "(C, H, W)" if ndim == 3 else f"{ndim} dimensions"
        raise DataError(f"{where}: expected x of shape {want}, got {tuple(x.shape)}")
    if x.dim() < 1:
        raise DataError(f"{where}: x must have at least one dimension, e.g. (C, H, W)")


def _check_dtype_and_device(model: Any, x: Tensor, where: str, check_device: bool) -> None:
    weight = model_weight(model)
    if weight is None:
        if x.dtype not in WEIGHTLESS_DTYPES:
            raise DataError(
                f"{where}: x is {_dtype(x.dtype)}; a model without floating-point weights "
                "accepts float32 or float64 inputs"
            )
        return
    if x.dtype != weight.dtype:
        raise DataError(
            f"{where}: x is {_dtype(x.dtype)} but the model's weights are "
            f"{_dtype(weight.dtype)}; pass x.to(torch.{_dtype(weight.dtype)}) "
            "(inputs are never cast silently)"
        )
    if check_device and x.device != weight.device:
        raise DataError(
            f"{where}: x is on {x.device} but the model on {weight.device}; "
            f"move x there with x.to('{weight.device}')"
        )


def _check_range(model: Any, x: Tensor, where: str) -> None:
    bounds = input_range(model)
    if bounds is None:
        return
    lo, hi = bounds
    low, high = (float(v) for v in torch.aminmax(x))
    if low < lo or high > hi:
        raise DataError(
            f"{where}: x has values in [{low:.4g}, {high:.4g}], outside the model's input "
            f"range [{lo:g}, {hi:g}]; inputs are pixels in [0, 1] (normalise inside inject), "
            "or set model.input_range = (lo, hi) or None for inputs that are not images"
        )


def _check_generator(x: Tensor, generator: Any, where: str) -> None:
    if not isinstance(generator, torch.Generator):
        kind = type(generator)
        got = kind.__qualname__ if kind.__module__ == "builtins" else (
            f"{kind.__module__}.{kind.__qualname__}"
        )
        got = "None" if generator is None else got
        raise DataError(
            f"{where}: generator is {got}; pass a seeded torch.Generator on the input's "
            "device, e.g. torch.Generator(device=x.device).manual_seed(0)"
        )
    if x.device.type != generator.device.type:
        raise DataError(
            f"{where}: x is on {x.device} but the generator on {generator.device}; "
            "create the generator on the input's device"
        )


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _kind(x: Any) -> str:
    if isinstance(x, Tensor):
        return f"a {x.dtype} tensor"
    return type(x).__name__



__all__ = ["DEFAULT_INPUT_RANGE", "check_input", "input_range", "model_device", "model_weight"]
