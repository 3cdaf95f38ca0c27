"""Results files: header and records, fsync-ed appends, resume checks, torn lines, TSV, merge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deqcert.errors import ResultsError
from deqcert.results import (
    ResultsWriter,
    format_ranges,
    header_differences,
    merge_results,
    read_results,
    sidecar_path,
)


def header(**config: Any) -> dict[str, Any]:
    base = {"n": 100, "seed": 0, "indices": "0-5", "skip": 1, "max": None, "mode": "certify",
            "device": "cpu", "out": "x.jsonl", "shard": None, "checkpoint": "/a/model.safetensors"}
    return {"type": "header", "config": {**base, **config}, "checkpoint": {"sha256": "abc"},
            "dataset": {"name": "d", "length": 10}, "shard": None}


def record(index: int, **extra: Any) -> dict[str, Any]:
    return {"index": index, "label": index % 3, "prediction": index % 3, "radius": 0.1 * index,
            "correct": True, "seconds": 0.5, "nfe": 10, **extra}


def write(path: Path, indices: list[int], **config: Any) -> ResultsWriter:
    with ResultsWriter(path, header(**config)) as writer:
        for i in indices:
            writer.write(record(i))
    return writer


def test_header_first_then_one_complete_line_per_record(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    write(path, [0, 1, 2])
    lines = path.read_text().splitlines(keepends=True)
    assert all(line.endswith("\n") for line in lines)
    assert [json.loads(line)["type"] for line in lines] == ["header", "record", "record", "record"]
    assert read_results(path).indices == [0, 1, 2]


def test_resume_skips_done_indices_and_drops_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    write(path, [0, 1])
    complete = path.read_bytes()
    path.write_bytes(complete + b'{"type": "record", "index": 2, "lab')
    assert read_results(path).torn
    writer = ResultsWriter(path, header(out="elsewhere.jsonl", shard="1/2", device="cpu"))
    assert writer.resuming and writer.done == {0, 1}
    assert path.read_bytes().endswith(b'"lab')  # checking changes nothing
    with writer:
        writer.write(record(2))
    result = read_results(path)
    assert not result.torn and result.indices == [0, 1, 2]
    assert path.read_bytes().startswith(complete)


def test_resume_refuses_another_run_and_names_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    write(path, [0])
    before = path.read_bytes()
    with pytest.raises(ResultsError, match=r"n: 100 != 200.*seed: 0 != 1"):
        ResultsWriter(path, header(n=200, seed=1))
    assert path.read_bytes() == before
    assert header_differences(header(device="cuda:0"), header(device="cuda:1")) == []


def test_a_file_without_header_is_never_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text('{"index": 1}\n')
    with pytest.raises(ResultsError, match="header"):
        ResultsWriter(path, header())


def test_an_empty_or_torn_header_file_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(b'{"type": "hea')
    write(path, [3])
    assert read_results(path).indices == [3]


def test_two_writers_cannot_append_to_one_file(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with ResultsWriter(path, header()):
        with pytest.raises(ResultsError, match="another process"):
            ResultsWriter(path, header()).open()


def test_tsv_has_cohens_columns_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "run.tsv"
    write(path, [0, 1])
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == ["idx", "label", "predict", "radius", "correct", "time"]
    assert lines[2].split("\t")[:5] == ["1", "1", "1", "0.1", "1"]
    assert lines[2].split("\t")[5] == "0:00:00.500000"
    assert json.loads(sidecar_path(path).read_text())["config"]["n"] == 100
    writer = ResultsWriter(path, header())
    assert writer.done == {0, 1}
    with pytest.raises(ResultsError, match="different run"):
        ResultsWriter(path, header(n=7))
    assert read_results(path).records[1]["seconds"] == pytest.approx(0.5)


def test_merge_sorts_and_checks_every_index_once(tmp_path: Path) -> None:
    parts = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    write(parts[0], [4, 0, 2], shard="0/2")
    write(parts[1], [1, 3, 5], shard="1/2")
    summary = merge_results(tmp_path / "all.jsonl", parts)
    assert (summary.parts, summary.records) == (2, 6)
    merged = read_results(tmp_path / "all.jsonl")
    assert merged.indices == [0, 1, 2, 3, 4, 5]
    assert merged.header is not None and merged.header["merged_from"] == [str(p) for p in parts]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "all.jsonl", "b.jsonl"]
    merge_results(tmp_path / "all.tsv", parts)
    assert read_results(tmp_path / "all.tsv").indices == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("second", "config", "message"),
    [
        ([1, 2, 3, 5], {}, r"duplicated indices: 2"),
        ([1, 3], {}, r"missing indices: 5"),
        ([1, 3, 5, 7], {}, r"outside the run's selection: 7"),
        ([1, 3, 5], {"n": 5}, r"different runs: n: 100 != 5"),
    ],
)
def test_merge_errors_list_the_problem(
    tmp_path: Path, second: list[int], config: dict[str, Any], message: str
) -> None:
    write(tmp_path / "a.jsonl", [0, 2, 4])
    write(tmp_path / "b.jsonl", second, **config)
    out = tmp_path / "all.jsonl"
    with pytest.raises(ResultsError, match=message):
        merge_results(out, [tmp_path / "a.jsonl", tmp_path / "b.jsonl"])
    assert not out.exists()


def test_format_ranges() -> None:
    assert format_ranges([7, 0, 1, 2, 5, 8]) == "0-2, 5, 7-8"
    assert format_ranges(range(0, 100, 2), limit=2).endswith("(48 more ranges)")


def test_a_tsv_killed_before_its_column_line_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "run.tsv"
    write(path, [])
    path.write_bytes(b"")  # the sidecar exists, the columns line never made it
    write(path, [4])
    assert path.read_text().splitlines()[0].startswith("idx\tlabel")
    assert read_results(path).indices == [4]
