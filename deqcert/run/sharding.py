"""Splitting a run's selected inputs into shards.

A shard ``i/n`` (0-based ``i``) takes every ``n``-th selected input starting
at position ``i`` (a strided split, so easy and hard inputs spread evenly over
the shards).  Because each input's noise is seeded from ``(seed, index)``, the
records of a shard are exactly the records an unsharded run writes for the
same indices, so shards can be merged with ``deqcert merge``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import OptionError


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise OptionError(
                f"invalid shard {self.index}/{self.count}: expected i/n with n >= 1 and 0 <= i < n"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        """A file-name friendly label, e.g. ``1-of-3``."""
        return f"{self.index}-of-{self.count}"

    def select(self, indices: Sequence[int]) -> list[int]:
        """The indices this shard handles: every ``count``-th position from ``index``."""
        return list(indices[self.index :: self.count])

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Parse ``"i/n"`` (0-based ``i``)."""
        head, sep, tail = str(text).partition("/")
        try:
            if not sep:
                raise ValueError
            return cls(int(head), int(tail))
        except ValueError:
            raise OptionError(
                f"invalid shard {text!r}: expected i/n with 0 <= i < n, e.g. 0/4"
            ) from None


def shard_from_env(environ: Mapping[str, str]) -> Shard | None:
    """The shard given by a launcher's environment, if any.

    ``RANK``/``WORLD_SIZE`` (torchrun) win over ``SLURM_ARRAY_TASK_ID``/
    ``SLURM_ARRAY_TASK_COUNT`` (offset by ``SLURM_ARRAY_TASK_MIN``).  A single
    worker means no sharding.
    """
    pairs = (
        ("RANK", "WORLD_SIZE", None),
        ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"),
    )
    for rank_var, size_var, offset_var in pairs:
        if rank_var in environ and size_var in environ:
            try:
                rank = int(environ[rank_var]) - int(environ.get(offset_var or "", "0") or 0)
                size = int(environ[size_var])
            except ValueError:
                raise OptionError(
                    f"environment {rank_var}={environ[rank_var]!r}, {size_var}="
                    f"{environ[size_var]!r}: expected integers"
                ) from None
            if size <= 1:
                return None
            try:
                return Shard(rank, size)
            except OptionError:
                raise OptionError(
                    f"environment {rank_var}={environ[rank_var]}, {size_var}={size}: "
                    f"expected 0 <= rank < size"
                ) from None
    return None
