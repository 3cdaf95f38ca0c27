"""The reference subset S is exactly uniform over the K-subsets (chi-square checks).

Each check would reject a modulo-biased draw: :func:`modulo_biased` maps
4-bit random words to positions with ``% (i + 1)``, as torch's CPU
``randperm`` does with 32-bit words (whose bias is the same in kind, only too
small to see at test sizes), and the same test rejects it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from itertools import combinations

import numpy as np
import pytest
import torch
from scipy import stats

from deqcert.certify.subset import reference_subset

Draw = Callable[[int, int], tuple[int, ...]]


def ours(seed: int, device: str = "cpu") -> Draw:
    generator = torch.Generator(device=device).manual_seed(seed)
    return lambda n, k: tuple(reference_subset(n, k, generator).tolist())


def modulo_biased(seed: int, bits: int = 4) -> Draw:
    """Fisher-Yates with ``word % (i + 1)`` on ``bits``-bit words: not uniform."""
    rng = np.random.default_rng(seed)

    def draw(n: int, k: int) -> tuple[int, ...]:
        perm = list(range(n))
        for i in range(n - 1, 0, -1):
            j = int(rng.integers(2**bits)) % (i + 1)
            perm[i], perm[j] = perm[j], perm[i]
        return tuple(sorted(perm[:k]))

    return draw


def subset_pvalue(draw: Draw, n: int, k: int, trials: int) -> float:
    """Chi-square p-value of the subsets' frequencies against uniform over all C(n, k)."""
    counts = Counter(draw(n, k) for _ in range(trials))
    observed = [counts[s] for s in combinations(range(n), k)]
    assert sum(observed) == trials  # every draw is a sorted k-subset of range(n)
    return float(stats.chisquare(observed).pvalue)


def pair_pvalue(draw: Draw, n: int, k: int, trials: int) -> float:
    """Chi-square p-value of pairwise inclusion counts (all pairs equally likely under uniform)."""
    counts: Counter[tuple[int, int]] = Counter()
    for _ in range(trials):
        counts.update(combinations(draw(n, k), 2))
    observed = [counts[p] for p in combinations(range(n), 2)]
    return float(stats.chisquare(observed).pvalue)


def test_subset_is_sorted_distinct_and_on_the_generators_device() -> None:
    s = reference_subset(1000, 400, torch.Generator().manual_seed(0))
    assert s.dtype == torch.int64 and s.device.type == "cpu"
    assert s.numel() == 400 == len(set(s.tolist())) and bool((s[1:] > s[:-1]).all())
    assert 0 <= int(s.min()) and int(s.max()) < 1000
    assert reference_subset(5, 5, torch.Generator().manual_seed(1)).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        reference_subset(3, 4, torch.Generator())


def test_subset_is_reproducible_from_the_generator() -> None:
    a = reference_subset(100, 10, torch.Generator().manual_seed(3))
    b = reference_subset(100, 10, torch.Generator().manual_seed(3))
    c = reference_subset(100, 10, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(("n", "k"), [(6, 3), (7, 2)])
def test_every_subset_is_equally_likely(n: int, k: int) -> None:
    assert subset_pvalue(ours(0), n, k, 6000) > 1e-3


def test_the_subset_check_rejects_a_modulo_biased_draw() -> None:
    assert subset_pvalue(modulo_biased(0), 6, 3, 6000) < 1e-6


def test_pairwise_inclusion_is_uniform() -> None:
    assert pair_pvalue(ours(1), 12, 4, 4000) > 1e-3
    assert pair_pvalue(modulo_biased(1), 12, 4, 4000) < 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_subset_on_cuda() -> None:
    s = reference_subset(1000, 40, torch.Generator(device="cuda").manual_seed(0))
    assert s.device.type == "cuda" and len(set(s.tolist())) == 40
    assert subset_pvalue(ours(0, "cuda"), 6, 3, 6000) > 1e-3
