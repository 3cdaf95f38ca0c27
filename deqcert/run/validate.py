"""Run-level checks made once the pipeline is built and before any file is written.

:func:`check_memory` estimates what the numbers a user chose (``n``,
``batch`` and, for certifiers that draw a reference subset, the subset's
permutation of ``n``) will allocate per input, and refuses a run that cannot
fit in the memory available (see :mod:`deqcert.memory`), instead of failing
with a ``MemoryError`` after the results header is written.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from ..memory import check_fits

if TYPE_CHECKING:
    from .pipeline import CertifyPipeline

NOISY_COPIES = 2
"""Tensors of a batch's shape that certainly exist at once: the noise and the noisy inputs.

The model's own states come on top, so the estimate is a lower bound: a run
refused by it could never have run.
"""


def _input_numel(pipeline: CertifyPipeline) -> int:
    shape = getattr(pipeline.model, "input_shape", None)
    if shape is None and pipeline.indices:
        x, _ = pipeline.dataset[pipeline.indices[0]]
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else None
    return math.prod(shape) if shape else 1


def _itemsize(model: Any) -> int:
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        for parameter in parameters():
            return int(parameter.element_size())
    return 4


def estimate_bytes(pipeline: CertifyPipeline) -> int:
    """Bytes one input's certification needs at least: a batch of noisy inputs and the subset."""
    config = pipeline.config
    rows = min(config.batch, max(config.n0, config.n))
    needed = NOISY_COPIES * rows * _input_numel(pipeline) * _itemsize(pipeline.model)
    options = getattr(pipeline.certifier, "options", None)
    if getattr(options, "reference_samples", None) is not None:
        needed += 8 * config.n  # torch.randperm(n): the subset S is drawn from a permutation
    return needed


def check_memory(pipeline: CertifyPipeline) -> None:
    """Refuse (one line) a run whose batch and subset cannot fit in the memory available."""
    config = pipeline.config
    what = f"certifying with n={config.n}, batch={config.batch}"
    hint = "lower --batch (or --n)"
    needed = estimate_bytes(pipeline)
    device = pipeline.device
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        check_fits(needed, f"{what} on {device}", hint, available=int(free))
    else:
        check_fits(needed, what, hint)
