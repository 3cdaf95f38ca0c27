"""The local executor: certifies the inputs one after another in this process."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ...options import ComponentOptions, Configurable

if TYPE_CHECKING:
    from ..pipeline import CertifyPipeline


class LocalExecutor(Configurable):
    """Runs :func:`deqcert.certify.dataset.certify_dataset` on the pipeline's own model."""

    class Options(ComponentOptions):
        """No options."""

    def run(self, pipeline: CertifyPipeline, indices: Sequence[int]) -> Iterator[dict[str, Any]]:
        """Yield one record per index, in order."""
        from ...certify.dataset import certify_dataset

        config = pipeline.config
        yield from certify_dataset(
            pipeline.certifier,
            pipeline.model,
            pipeline.dataset,
            list(indices),
            seed=config.seed,
            device=pipeline.device,
            mode=config.mode,
        )
