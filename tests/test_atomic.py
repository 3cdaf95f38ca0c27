"""Atomic writes: finished files get the user's usual mode, failed writes leave nothing behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from deqcert import create_model, save_checkpoint
from deqcert._atomic import replacing
from deqcert.results import write_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_checkpoint_gets_mode_from_umask(tmp_path: Path, umask_022: None) -> None:
    model = create_model("mlpdeq", hidden=8, image_size=6)
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    assert _mode(path) == 0o644


def test_results_file_gets_mode_from_umask(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "r.json"
    write_atomic(path, "{}\n")
    assert _mode(path) == 0o644
    assert path.read_text() == "{}\n"


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), replacing(path) as tmp:
        Path(tmp).write_text("partial")
        raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
