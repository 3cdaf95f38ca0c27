"""Packing a state that is a list or tuple of tensors (e.g. MDEQ's resolutions) into one tensor.

deqcert's solvers and certifiers work on one ``(B, ...)`` tensor per batch.
:class:`Layout` records the per-sample shapes of a list state and maps it to a
flat ``(B, sum of sizes)`` tensor and back.  Packing flattens and
concatenates each row's pieces, so row ``i`` of the packed tensor is made of
row ``i`` of every piece only: packing never mixes samples of a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import DataError

State = Tensor | list[Tensor] | tuple[Tensor, ...]


@dataclass(frozen=True)
class Layout:
    """How a state is stored: a plain tensor (``shapes`` None) or pieces of these shapes."""

    shapes: tuple[tuple[int, ...], ...] | None = None
    kind: type = list

    @classmethod
    def of(cls, value: Any, what: str = "state") -> Layout:
        """The layout of ``value``: a tensor, or a non-empty list/tuple of ``(B, ...)`` tensors."""
        if isinstance(value, Tensor):
            if value.dim() < 1:
                raise DataError(f"the {what} must have a batch dimension, got a scalar tensor")
            return cls()
        if isinstance(value, list | tuple) and value and all(isinstance(t, Tensor) for t in value):
            batch = {int(t.shape[0]) if t.dim() else -1 for t in value}
            if len(batch) != 1 or -1 in batch:
                shapes = [tuple(t.shape) for t in value]
                raise DataError(f"the {what}'s tensors must share the batch size, got {shapes}")
            dtypes = {t.dtype for t in value}
            if len(dtypes) != 1:
                raise DataError(
                    f"the {what}'s tensors must share one dtype, got {sorted(map(str, dtypes))}"
                )
            return cls(tuple(tuple(t.shape[1:]) for t in value), type(value))
        raise DataError(
            f"the {what} must be a tensor or a list/tuple of tensors, got {type(value).__name__}"
        )

    @property
    def packed(self) -> bool:
        return self.shapes is not None

    @property
    def width(self) -> int:
        """Values per sample of the packed tensor (0 for a plain tensor)."""
        return sum(_numel(shape) for shape in self.shapes or ())

    def pack(self, value: State) -> Tensor:
        """One ``(B, width)`` tensor from the pieces (a plain tensor is returned as it is)."""
        if not self.packed:
            assert isinstance(value, Tensor)
            return value
        if Layout.of(value) != self:
            got = [tuple(t.shape[1:]) for t in value] if isinstance(value, list | tuple) else value
            raise DataError(f"state pieces of per-sample shapes {got}; expected {self.shapes}")
        pieces = list(value)
        return torch.cat([t.reshape(t.shape[0], -1) for t in pieces], dim=1)

    def unpack(self, flat: Tensor) -> State:
        """The pieces of a packed ``(B, width)`` tensor (views, no copy); a plain one as it is."""
        if not self.packed:
            return flat
        assert self.shapes is not None
        sizes = [_numel(shape) for shape in self.shapes]
        parts = torch.split(flat, sizes, dim=1)
        pieces = [
            part.reshape(flat.shape[0], *shape)
            for part, shape in zip(parts, self.shapes, strict=True)
        ]
        return self.kind(pieces) if self.kind is tuple else pieces

    def describe(self) -> Any:
        """JSON-friendly: ``"tensor"`` or the list of per-sample shapes."""
        return "tensor" if self.shapes is None else [list(s) for s in self.shapes]


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for size in shape:
        out *= size
    return out
