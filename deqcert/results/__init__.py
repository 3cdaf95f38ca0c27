"""Results files: what is written when, resuming, and merging shards.

JSON Lines (``.jsonl``, the default): the first line is a header record
(``"type": "header"``: the effective config, package version, checkpoint
SHA-256, seed, shard, dataset size), then one ``"type": "record"`` line per
input.  Each line is written whole, flushed and ``fsync``-ed before the next
input starts, so a crash loses at most the input in progress and leaves at
worst a torn (newline-less) last line.

TSV (``.tsv``) writes Cohen et al.'s columns ``idx label predict radius
correct time`` (``idx label predict correct time`` for predictions) so
existing analysis scripts read it; its header record lives next to it in
``<file>.header.json``.

Resuming (:class:`ResultsWriter` on an existing file) checks that the file's
header describes the same run (keys that do not change results, such as the
output path, format, shard and executor, are ignored), drops a torn last line
and skips the indices already recorded.  :func:`merge_results` joins shards
after checking their headers agree and that every selected index appears
exactly once.
"""

from .formats import (
    FORMAT_VERSION,
    FORMATS,
    NEUTRAL_KEYS,
    TIMING_KEYS,
    TSV_COLUMNS,
    encode_record,
    infer_format,
    sidecar_path,
    to_jsonable,
)
from .headers import format_ranges, header_differences, strip_timing
from .merge import MergeSummary, expected_indices, merge_results
from .reading import ResultsFile, read_results
from .writer import ResultsWriter, check_writable, write_atomic

__all__ = [
    "FORMATS",
    "FORMAT_VERSION",
    "MergeSummary",
    "NEUTRAL_KEYS",
    "ResultsFile",
    "ResultsWriter",
    "TIMING_KEYS",
    "TSV_COLUMNS",
    "check_writable",
    "encode_record",
    "expected_indices",
    "format_ranges",
    "header_differences",
    "infer_format",
    "merge_results",
    "read_results",
    "sidecar_path",
    "strip_timing",
    "to_jsonable",
    "write_atomic",
]
