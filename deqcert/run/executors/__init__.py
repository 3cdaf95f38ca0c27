"""Executors: where a pipeline's inputs are certified.

An executor turns a built :class:`~deqcert.run.pipeline.CertifyPipeline`
and a list of dataset indices into result records (in any order).  The single
writer in :meth:`CertifyPipeline.run` appends them to the results file, so
every executor resumes and shards the same way.  Each input's noise is seeded
from ``(seed, index)``, so records do not depend on the executor.

Built-ins: ``local`` (this process) and ``ray`` (optional extra
``deqcert[ray]``).  Third-party executors can register under the
``deqcert.executors`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ...registry import EXECUTORS

if TYPE_CHECKING:
    from ..pipeline import CertifyPipeline


@runtime_checkable
class Executor(Protocol):
    """Certifies (or predicts) ``indices`` of ``pipeline`` and yields one record each."""

    def run(
        self, pipeline: CertifyPipeline, indices: Sequence[int]
    ) -> Iterator[dict[str, Any]]: ...

    def describe(self) -> dict[str, Any]: ...




def create_executor(name: str = "local", /, **options: Any) -> Executor:
    """Build a registered executor, e.g. ``create_executor("ray", address="auto")``."""
    return EXECUTORS.create(name, **options)  # type: ignore[no-any-return]


def list_executors() -> list[str]:
    """Names of the registered executors."""
    return EXECUTORS.names()
