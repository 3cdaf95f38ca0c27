"""Old import path of the pipeline (kept for one release): see :mod:`deqcert.run.pipeline`."""

from __future__ import annotations

from ..checkpoint import file_sha256
from ..run.pipeline import CertifyPipeline, RecordCallback, RunSummary, build_pipeline

__all__ = ["CertifyPipeline", "RecordCallback", "RunSummary", "build_pipeline", "file_sha256"]
