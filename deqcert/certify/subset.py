"""The reference subset ``S`` of serialized smoothing, drawn exactly uniformly.

The hypergeometric step of the sound bound needs ``S`` uniform over the
``K``-subsets of the ``n`` estimation indices.  torch's CPU ``randperm`` maps
32-bit random numbers with a modulo, which is not uniform (an audit bounded
its distance from uniform by ``1.5e-2`` at ``n = 10**5``, ``K = 4000``).  Instead, four
32-bit words drawn from the input's generator seed a numpy ``Generator``
(``SeedSequence`` of the words), whose ``choice(replace=False)`` uses
unbiased bounded integers: ``S`` is uniform on every device, given uniform
random words.  ``torch.randint(0, 2**32)`` is exact on CPU and CUDA (the
range is a power of two, so its modulo mapping is the identity on the low bits).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


def reference_subset(n: int, K: int, generator: torch.Generator) -> Tensor:
    """A uniformly random ``K`` of ``range(n)``, sorted, on ``generator``'s device."""
    return torch.from_numpy(reference_indices(n, K, generator)).to(generator.device)


def reference_indices(n: int, K: int, generator: torch.Generator) -> np.ndarray:
    """:func:`reference_subset` as a sorted ``int64`` array on the host (the same draw)."""
    if not 0 <= K <= n:
        raise ValueError(f"need 0 <= K <= n, got K={K}, n={n}")
    words = torch.randint(0, 2**32, (4,), generator=generator, device=generator.device)
    rng = np.random.default_rng(np.random.SeedSequence([int(w) for w in words.tolist()]))
    return np.sort(rng.choice(n, size=K, replace=False)).astype(np.int64)


class ReferenceSubset(NamedTuple):
    """The reference subset ``S`` on the device, and where it falls in each batch."""

    indices: Tensor
    slices: list[tuple[int, int]]


def subset_slices(subset: np.ndarray, num: int, batch_size: int) -> list[tuple[int, int]]:
    """For each batch, the ``[lo, hi)`` range of the sorted ``subset`` falling in it (host-side)."""
    edges = np.minimum(np.arange(0, num + batch_size, batch_size), num)
    cuts = [int(c) for c in np.searchsorted(subset, edges)]
    return list(zip(cuts[:-1], cuts[1:], strict=False))
