"""Checks shared by the bad-input and fault tests: one line, exit code, no file touched."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (folders as ``<dir>``; FIFOs not read)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<other>"
        for p in sorted(folder.rglob("*"))
    }


def assert_refused(exit_code: int, stderr: str, word: str, code: int = 2, *extra: Any) -> str:
    """One ``deqcert: error:`` line on stderr containing ``word``, exit ``code``, no traceback."""
    lines = stderr.strip().splitlines()
    assert exit_code == code, (exit_code, stderr, *extra)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("deqcert: error: "), lines[0]
    assert word.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in stderr
    return lines[0]
