"""Fault tolerance: killed-and-resumed runs and sharded runs give the records of one clean run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST
from typer.testing import CliRunner, Result

from deqcert.cli import app
from deqcert.results import read_results, strip_timing

INDICES = "0-9"
Records = dict[int, dict[str, Any]]


def certify_args(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["certify", "--checkpoint", str(checkpoint), *FAST, "--indices", INDICES,
            "--seed", "7", "--quiet", "--out", str(out), *extra]


def records_by_index(path: Path) -> Records:
    """Records without timing fields, keyed by index; fails on a duplicate index."""
    out: Records = {}
    for record in read_results(path).records:
        index = int(record["index"])
        assert index not in out, f"index {index} recorded twice in {path}"
        out[index] = strip_timing(record)
    return out


@pytest.fixture(scope="module")
def reference(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Records:
    """Indices 0-9 certified in one uninterrupted, unsharded run."""
    out = tmp_path_factory.mktemp("reference") / "one.jsonl"
    result = CliRunner().invoke(app, certify_args(tiny_checkpoint, out))
    assert result.exit_code == 0, result.stderr
    records = records_by_index(out)
    assert sorted(records) == list(range(10))
    return records


def test_three_shards_merged_equal_one_run(
    reference: Records, tiny_checkpoint: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    parts = [tmp_path / f"part{i}.jsonl" for i in range(3)]
    for i, part in enumerate(parts):
        result = cli(certify_args(tiny_checkpoint, part, "--shard", f"{i}/3"))
        assert result.exit_code == 0, result.stderr
    # strided split by position: shard i gets positions i, i+3, ...
    assert [sorted(records_by_index(p)) for p in parts] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    merged = tmp_path / "merged.jsonl"
    result = cli(["merge", merged, *parts])
    assert result.exit_code == 0, result.stderr
    assert "10 records" in result.stdout
    assert records_by_index(merged) == reference
    header = read_results(merged).header
    assert header is not None and header["shard"] is None
    assert [r["index"] for r in read_results(merged).records] == list(range(10))


def test_launcher_environment_shards_like_the_flag(
    reference: Records, tiny_checkpoint: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    out = tmp_path / "env.jsonl"
    result = cli(certify_args(tiny_checkpoint, out), env={"RANK": "1", "WORLD_SIZE": "3"})
    assert result.exit_code == 0, result.stderr
    written = tmp_path / "env.shard-1-of-3.jsonl"  # every rank shares one command line
    assert not out.exists() and written.exists()
    assert records_by_index(written) == {i: reference[i] for i in (1, 4, 7)}


def _complete_records(path: Path) -> int:
    if not path.exists():
        return 0
    return max(0, path.read_bytes().count(b"\n") - 1)  # minus the header line


def test_sigkill_then_resume_gives_every_index_once(
    reference: Records, tiny_checkpoint: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    out = tmp_path / "run.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "deqcert.cli", *certify_args(tiny_checkpoint, out)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _complete_records(out) < 3:
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr}"
        assert time.monotonic() < deadline, "no records within 120 s"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    data = out.read_bytes()
    killed_at = _complete_records(out)
    assert 3 <= killed_at < 10
    # Whatever the kill left, make sure the resume also meets a torn last line.
    if data.endswith(b"\n"):
        out.write_bytes(data + b'{"type": "record", "index": 9, "label": 4, "predic')
    result = cli(certify_args(tiny_checkpoint, out))
    assert result.exit_code == 0, result.stderr
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b"", "the resumed file must end with a complete line"
    assert sum(json.loads(line)["type"] == "header" for line in lines[:-1]) == 1
    assert records_by_index(out) == reference
    # a completed run resumed again certifies nothing and leaves the file alone
    before = out.read_bytes()
    assert cli(certify_args(tiny_checkpoint, out)).exit_code == 0
    assert out.read_bytes() == before


@pytest.mark.ray
def test_ray_executor_records_equal_the_local_ones(
    reference: Records, tiny_checkpoint: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, cli: Callable[..., Result],
) -> None:
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    out = tmp_path / "ray.jsonl"
    args = certify_args(tiny_checkpoint, out, "--executor", "ray",
                        "--set", "executor.num_cpus=2")
    first = cli([*args, "--shard", "0/2"])  # half the inputs, then resume for the rest
    assert first.exit_code == 0, first.stderr
    result = cli(args)
    assert result.exit_code == 0, result.stderr
    assert records_by_index(out) == reference
