"""Old import path of sharding (kept for one release): see :mod:`deqcert.run.sharding`."""

from __future__ import annotations

from ..run.sharding import Shard, shard_from_env

__all__ = ["Shard", "shard_from_env"]
