"""Reading a safetensors file's header without trusting it: metadata and tensor index.

A safetensors file starts with an 8-byte little-endian length ``N`` and ``N``
bytes of JSON: ``__metadata__`` (string to string) and, for every tensor, its
dtype, shape and byte range.  :func:`read_header` reads only that much, with
a size limit, and checks every byte range against the file's size, so a
checkpoint can be judged (names, shapes, dtypes, bytes) before any tensor is
read or any model allocated.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError

MAX_HEADER_BYTES = 16 << 20
"""Largest header accepted (metadata plus tensor index): 16 MiB."""

DTYPE_BYTES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the index: safetensors dtype code (``F32``, ...), shape and size."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int

    @property
    def floating(self) -> bool:
        return self.dtype in FLOAT_DTYPES


@dataclass(frozen=True)
class Header:
    """A safetensors header: raw metadata strings and the tensor index."""

    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]

    @property
    def nbytes(self) -> int:
        """Bytes of all the tensors' data."""
        return sum(info.nbytes for info in self.tensors.values())


def _unreadable(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a readable safetensors file: {why}")


def read_header(path: str | os.PathLike[str]) -> Header:
    """The header of ``path``; :class:`CheckpointError` if malformed, too large or truncated."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise _unreadable(path, f"only {len(prefix)} bytes")
            length = int.from_bytes(prefix, "little")
            if length > MAX_HEADER_BYTES:
                raise _unreadable(
                    path, f"header of {length} bytes (the limit is {MAX_HEADER_BYTES >> 20} MiB)"
                )
            if 8 + length > size:
                raise _unreadable(path, f"header of {length} bytes in a file of {size} bytes")
            raw = handle.read(length)
    except OSError as exc:
        raise _unreadable(path, exc.strerror or str(exc)) from None
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _unreadable(path, "the header is not JSON") from None
    if not isinstance(parsed, dict):
        raise _unreadable(path, "the header is not a JSON object")
    metadata = parsed.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _unreadable(path, "__metadata__ must map strings to strings")
    data_size = size - 8 - length
    return Header(metadata, {name: _tensor(path, name, item, data_size)
                             for name, item in parsed.items()})


def _tensor(path: Path, name: str, item: object, data_size: int) -> TensorInfo:
    where = f"tensor {name[:60]!r}"
    if not isinstance(item, dict):
        raise _unreadable(path, f"{where} is not described by an object")
    dtype, shape, offsets = item.get("dtype"), item.get("shape"), item.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise _unreadable(path, f"{where} has unknown dtype {str(dtype)[:20]!r}")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _unreadable(path, f"{where} has an invalid shape")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise _unreadable(path, f"{where} has invalid data offsets")
    begin, end = offsets
    nbytes = math.prod(shape) * DTYPE_BYTES[dtype]
    if not 0 <= begin <= end or end - begin != nbytes:
        raise _unreadable(path, f"{where} has data offsets that do not match its shape")
    if end > data_size:
        raise _unreadable(path, f"{where} lies beyond the end of the file (truncated?)")
    return TensorInfo(dtype, tuple(shape), nbytes)
