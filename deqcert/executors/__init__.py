"""Old import path of the executors (kept for one release): see :mod:`deqcert.run.executors`."""

from __future__ import annotations

from ..run.executors import EXECUTORS, Executor, create_executor, list_executors

__all__ = ["EXECUTORS", "Executor", "create_executor", "list_executors"]
