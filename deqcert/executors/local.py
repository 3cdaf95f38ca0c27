"""Old import path of the local executor (kept for one release): :mod:`deqcert.run.executors`."""

from __future__ import annotations

from ..run.executors.local import LocalExecutor

__all__ = ["LocalExecutor"]
