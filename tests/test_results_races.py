"""Two writers on one results file, damaged files, merge temporaries, a full disk.

The writer interleavings are forced step by step (each writer has its own
open file, so ``flock`` treats them as two processes): in none is a record
lost or written twice.
"""

from __future__ import annotations

import errno
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from _cli_checks import assert_refused
from conftest import FAST
from test_results import header, record
from typer.testing import Result

from deqcert import _interrupts
from deqcert._atomic import remove_stale, replacing
from deqcert.errors import ResultsError
from deqcert.results import ResultsWriter, merge_results, read_results

SELECTION = range(6)


def writer(path: Path) -> ResultsWriter:
    return ResultsWriter(path, header(), expected=SELECTION)


def finish(w: ResultsWriter, indices: Iterable[int] = SELECTION) -> None:
    """What a run does once its writer is checked: open, append what is not done, close."""
    with w:
        for i in [i for i in indices if i not in w.done]:
            w.write(record(i))


def counts(path: Path) -> Counter[int]:
    return Counter(read_results(path).indices)


def test_a_writer_that_checked_before_another_finished_appends_only_the_rest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run.jsonl"
    first, second = writer(path), writer(path)  # both checked: no file yet
    finish(first, [0, 1, 2])  # first creates the file and records three inputs
    assert second.done == set()  # stale: what it saw at its check
    finish(second)  # its open finds the file, locks and re-reads it
    assert counts(path) == Counter(SELECTION)  # nothing wiped, nothing twice


def test_the_check_of_an_existing_file_holds_its_lock_until_the_run_ends(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    finish(writer(path), [0, 1, 2])
    first = writer(path)  # checked and locked
    with pytest.raises(ResultsError, match="being written by another process"):
        writer(path)  # refused at its check: the done list could go stale
    finish(first)
    finish(writer(path))  # after the run: nothing left to do
    assert counts(path) == Counter(SELECTION)


def test_a_second_open_while_the_first_writes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    first, second = writer(path), writer(path)
    with first:
        first.write(record(0))
        with pytest.raises(ResultsError, match="another process"):
            second.open()
        first.write(record(1))
    assert counts(path) == Counter({0: 1, 1: 1})


@pytest.mark.parametrize("order", ["first-then-second", "second-then-first"])
def test_two_pipelines_into_one_out_never_duplicate(
    order: str, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from deqcert.run import CertifyConfig

    out = tmp_path / "run.jsonl"
    config = CertifyConfig.model_validate(
        {"checkpoint": str(tiny_checkpoint), "n0": 10, "n": 40, "batch": 20, "alpha": 0.1,
         "certifier": {"name": "vanilla"}, "max": 3, "out": str(out)}
    )
    pipelines = [config.build(), config.build()]
    writers = [p.prepare_output() for p in pipelines]  # both checked before either writes
    runs = [0, 1] if order == "first-then-second" else [1, 0]
    summaries = [pipelines[i].run(writer=writers[i]) for i in runs]
    assert counts(out) == Counter(pipelines[0].indices)
    assert [len(s.records) for s in summaries] == [3, 0]


# -- damaged files -------------------------------------------------------------------


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _rewrite(path: Path, items: list[Any]) -> None:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))


@pytest.mark.parametrize(
    ("edit", "detail"),
    [
        (lambda items: [*items, items[-1]], "more than once: 2"),
        (lambda items: [*items, {**items[-1], "index": 9}], "outside this run's selection: 9"),
        (lambda items: [*items, {**items[-1], "index": True}], "is no input index"),
        (lambda items: [*items, {**items[-1], "index": -1}], "is no input index"),
        (lambda items: [*items, {**items[-1], "prediction": "cat"}], "not an integer"),
        (lambda items: [{**items[0], "config": "n=100"}, *items[1:]], "not a mapping"),
        (lambda items: [{**items[0], "dataset": [10]}, *items[1:]], "not a mapping"),
    ],
)
def test_resume_refuses_a_damaged_file_and_leaves_it(
    tmp_path: Path, edit: Callable[[list[Any]], list[Any]], detail: str
) -> None:
    path = tmp_path / "run.jsonl"
    finish(writer(path), [0, 1, 2])
    _rewrite(path, edit(_lines(path)))
    before = path.read_bytes()
    with pytest.raises(ResultsError, match="file is damaged") as caught:
        writer(path)
    assert detail in str(caught.value) and "move it aside" in str(caught.value)
    assert path.read_bytes() == before


def test_report_of_a_damaged_file_is_one_line(tmp_path: Path, cli: Callable[..., Result]) -> None:
    path = tmp_path / "run.jsonl"
    finish(writer(path), [0])
    _rewrite(path, [{**_lines(path)[0], "config": [1]}, *_lines(path)[1:]])
    result = cli(["report", str(path)])
    assert_refused(result.exit_code, result.stderr, "file is damaged")


# -- merge ---------------------------------------------------------------------------


def _parts(tmp_path: Path) -> list[Path]:
    parts = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    finish(writer(parts[0]), [0, 2, 4])
    finish(writer(parts[1]), [1, 3, 5])
    return parts


def test_merge_refuses_an_out_that_is_a_part_even_by_another_name(tmp_path: Path) -> None:
    parts = _parts(tmp_path)
    (tmp_path / "link.jsonl").symlink_to(parts[0])
    before = parts[0].read_bytes()
    for out in (parts[0], tmp_path / "link.jsonl", tmp_path / "." / "a.jsonl"):
        with pytest.raises(ResultsError, match="one of the parts"):
            merge_results(out, parts)
    with pytest.raises(ResultsError, match="given twice"):
        merge_results(tmp_path / "all.jsonl", [parts[0], tmp_path / "link.jsonl"])
    assert parts[0].read_bytes() == before


def test_merge_removes_temporaries_of_killed_merges_only(tmp_path: Path) -> None:
    parts = _parts(tmp_path)
    out = tmp_path / "all.jsonl"
    dead = tmp_path / ".all.jsonl.99999999.abcdefgh.tmp"  # beyond pid_max: no such process
    alive = tmp_path / f".all.jsonl.{os.getppid()}.abcdefgh.tmp"  # a running process's
    other = tmp_path / ".all.jsonl.x.99999999.abcdefgh.tmp"  # another target's
    for path in (dead, alive, other):
        path.write_text("partial")
    merge_results(out, parts)
    assert not dead.exists() and alive.exists() and other.exists()
    assert read_results(out).indices == list(SELECTION)
    assert remove_stale(out) == []


def test_an_interrupted_atomic_write_removes_its_temporary(tmp_path: Path) -> None:
    from deqcert.cli import signals

    target = tmp_path / "all.jsonl"
    with pytest.raises(signals.Interrupted), signals.raising(), replacing(target) as tmp:
        Path(tmp).write_text("half")
        assert _interrupts.active()  # a signal here raises rather than exiting at once
        os.kill(os.getpid(), signals.signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    assert list(tmp_path.iterdir()) == []


# -- a full disk -----------------------------------------------------------------------


def test_no_space_left_names_the_file_and_keeps_it_resumable(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    cli: Callable[..., Result],
) -> None:
    out = tmp_path / "run.jsonl"
    real = os.fsync
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # the header and the first record fit, the second does not
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    args = ["certify", "--checkpoint", str(tiny_checkpoint), *FAST, "--max", "3",
            "--out", str(out), "--quiet"]
    result = cli(args)
    line = assert_refused(result.exit_code, result.stderr, "no space left")
    assert str(out) in line
    monkeypatch.setattr(os, "fsync", real)
    assert cli(args).exit_code == 0  # resumed
    assert sorted(read_results(out).indices) == [0, 1, 2]


def test_an_executor_that_cannot_start_fails_before_the_header(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from deqcert.errors import OptionError
    from deqcert.run import CertifyConfig

    class Unreachable:
        def start(self) -> None:
            raise OptionError("cluster unreachable")

        def run(self, pipeline: Any, indices: Any) -> Any:
            raise AssertionError("never run")

    out = tmp_path / "run.jsonl"
    pipeline = CertifyConfig.model_validate(
        {"checkpoint": str(tiny_checkpoint), "n0": 10, "n": 40, "batch": 20, "alpha": 0.1,
         "certifier": {"name": "vanilla"}, "max": 2}
    ).build()
    pipeline.executor = Unreachable()  # type: ignore[assignment]
    with pytest.raises(OptionError, match="unreachable"):
        pipeline.run(out)
    assert not out.exists()


@pytest.mark.slow
def test_two_cli_processes_into_one_out(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "run.jsonl"
    args = [sys.executable, "-m", "deqcert.cli", "certify", "--checkpoint", str(tiny_checkpoint),
            *FAST, "--max", "6", "--out", str(out), "--quiet"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
    for code, err in results:  # each finished, or was told the file is being written
        assert code == 0 or (code == 2 and "another process" in err), err
    assert subprocess.run(args, capture_output=True, timeout=300).returncode == 0
    assert counts(out) == Counter(range(6))
