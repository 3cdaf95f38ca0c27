"""The CLI starts without importing torch for what does not need it (a behaviour test)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import Result

PROBE = """
import json, sys
from deqcert.cli import app
code = 0
try:
    app(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
sys.stderr.write("\\nPROBE " + json.dumps({"torch": "torch" in sys.modules, "code": code}) + "\\n")
"""


def run_cli(*args: str, cwd: Path) -> tuple[dict[str, object], str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)
    probe = json.loads(done.stderr.rsplit("PROBE ", 1)[1])
    return probe, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--version"], 0),
        (["--help"], 0),
        (["list"], 0),
        (["list", "solvers", "--json"], 0),
        (["--no-such-flag"], 2),
        (["no-such-command"], 2),
        (["report", "missing.jsonl"], 2),
    ],
)
def test_answers_without_importing_torch(args: list[str], code: int, tmp_path: Path) -> None:
    probe, output = run_cli(*args, cwd=tmp_path)
    assert probe == {"torch": False, "code": code}, output
    if args == ["--help"]:
        assert "certify" in output and "train" in output  # lazy commands are listed


def test_import_deqcert_does_not_import_torch(tmp_path: Path) -> None:
    code = "import sys, deqcert; deqcert.Certificate; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def test_dir_lists_the_api_not_the_module_s_imports() -> None:
    import deqcert

    names = dir(deqcert)
    assert "load_checkpoint" in names and "certify_dataset" in names
    assert not {"Any", "annotations", "importlib"} & set(names)


def test_lazy_commands_still_run_and_show_their_flags(cli: Callable[..., Result]) -> None:
    result = cli(["certify", "--help"])
    assert result.exit_code == 0 and "--reference-solver" in result.stdout
    bad = cli(["certify", "--no-such-flag"])
    assert bad.exit_code == 2 and "No such option" in bad.stderr
