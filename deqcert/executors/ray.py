"""Old import path of the Ray executor (kept for one release): see :mod:`deqcert.run.executors`."""

from __future__ import annotations

from ..run.executors.ray import INSTALL_HINT, RayExecutor, RayOptions

__all__ = ["INSTALL_HINT", "RayExecutor", "RayOptions"]
