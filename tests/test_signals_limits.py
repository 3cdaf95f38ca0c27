"""SIGINT and SIGTERM (one line, 130/143, the file resumable) and runs under ``ulimit -v``."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _cli_checks import assert_refused
from conftest import FAST
from test_reliability_inputs import ALIAS_BOMB
from typer.testing import Result

from deqcert.results import ResultsWriter, read_results, strip_timing

MEMORY_LIMIT = 8_000_000 * 1024  # ulimit -v 8000000 (KiB)


def _args(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["certify", "--checkpoint", str(checkpoint), *FAST, "--max", "4",
            "--out", str(out), "--quiet", *extra]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_run_prints_the_hint_and_the_file_resumes(
    sig: int, code: int, tiny_checkpoint: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, cli: Callable[..., Result],
) -> None:
    out, reference = tmp_path / "run.jsonl", tmp_path / "whole.jsonl"
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when started in the background
    assert cli(_args(tiny_checkpoint, reference)).exit_code == 0
    real = ResultsWriter.write

    def write_then_signal(self: ResultsWriter, record: dict[str, Any]) -> None:
        real(self, record)
        if len(self.done) == 2:
            os.kill(os.getpid(), sig)  # arrives while the results file is open

    monkeypatch.setattr(ResultsWriter, "write", write_then_signal)
    result = cli(_args(tiny_checkpoint, out))
    line = assert_refused(result.exit_code, result.stderr, "run the same command again", code)
    assert signal.Signals(sig).name in line
    assert len(read_results(out).indices) == 2 and not read_results(out).torn
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    monkeypatch.setattr(ResultsWriter, "write", real)
    assert cli(_args(tiny_checkpoint, out)).exit_code == 0
    records = sorted(read_results(out).records, key=lambda r: r["index"])
    expected = sorted(read_results(reference).records, key=lambda r: r["index"])
    assert [strip_timing(r) for r in records] == [strip_timing(r) for r in expected]


def _cli(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "deqcert.cli", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, **kwargs,
    )


@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_sigint_while_starting_up_is_one_line_and_130(
    delay: float, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run.jsonl"
    proc = _cli(*_args(tiny_checkpoint, out))
    time.sleep(delay)  # the CLI is still importing (torch takes seconds)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal")
    assert_refused(proc.returncode, err, "interrupted (SIGINT)", 130)
    assert not out.exists() or read_results(out).header is not None


@pytest.mark.slow
def test_sigterm_to_a_real_run_then_resume(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    args = _args(tiny_checkpoint, out, "--set", "n=4000", "--batch", "400")
    proc = _cli(*args)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or len(read_results(out).indices) < 1):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert_refused(proc.returncode, err, "run the same command again", 143)
    kept = read_results(out).indices
    assert 1 <= len(kept) < 4
    assert subprocess.run([sys.executable, "-m", "deqcert.cli", *args], capture_output=True,
                          timeout=300).returncode == 0
    assert sorted(read_results(out).indices) == [0, 1, 2, 3]


# -- ulimit -v 8000000 -------------------------------------------------------------------


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _bomb(tmp: Path) -> list[str]:
    (tmp / "bomb.yaml").write_text(ALIAS_BOMB)
    return ["--config", str(tmp / "bomb.yaml")]


LIMITED: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "n=1e9 (the subset permutation)": (lambda t: ["--set", "n=1000000000", "--batch", "1"],
                                       "memory"),
    "batch and n of 1e8": (lambda t: ["--set", "n=100000000", "--batch", "100000000"], "memory"),
    "indices 0-300000000": (lambda t: ["--indices", "0-300000000"], "out of range"),
    "YAML alias bomb": (_bomb, "expands to more than"),
    "n=true": (lambda t: ["--set", "n=true"], "must be a number"),
}
SLOW_LIMITED = {"batch and n of 1e8", "indices 0-300000000", "YAML alias bomb", "n=true"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW_LIMITED else [])
             for n in LIMITED],
)
def test_under_ulimit_v_a_run_is_refused_before_allocating(
    name: str, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    extra, word = LIMITED[name]
    out = tmp_path / "run.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "deqcert.cli", *_args(tiny_checkpoint, out)[:-1], *extra(tmp_path)],
        capture_output=True, text=True, preexec_fn=_limited, timeout=300,
    )
    assert_refused(done.returncode, done.stderr, word)
    assert not out.exists()


def test_out_dev_stdout_into_a_pipe_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "deqcert.cli", *_args(tiny_checkpoint, Path("/dev/stdout"))],
        capture_output=True, text=True, preexec_fn=_limited, timeout=300, cwd=tmp_path,
    )
    assert_refused(done.returncode, done.stderr, "not a regular file")
    assert done.stdout == "" and list(tmp_path.iterdir()) == []
