"""Run the ```python code blocks of the documentation (docs/*.md).

Each page's blocks run in order in one namespace, in a fresh temporary
working directory, so a page reads like a script. A block preceded by the
line ``<!-- skip-test -->`` is not run (for the few that need something slow
or unavailable). ``mkdocs build --strict`` itself runs in ``make docs``.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

DOCS = Path(__file__).resolve().parent.parent / "docs"
SKIP_MARKER = "<!-- skip-test -->"
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")


@dataclass
class CodeBlock:
    """One fenced code block: its language, first code line (1-based) and source."""

    language: str
    line: int
    source: str
    skipped: bool


def extract_blocks(text: str) -> list[CodeBlock]:
    """All fenced code blocks of a markdown text, with their skip markers."""
    blocks: list[CodeBlock] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, indent = opening["fence"], opening["indent"]
        previous = lines[i - 1].strip() if i > 0 else ""
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (
            lines[j].strip().startswith(fence) and lines[j].strip().strip(fence[0]) == ""
        ):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        language = opening["info"].lower().lstrip("{").lstrip(".")
        blocks.append(
            CodeBlock(language, i + 2, textwrap.dedent("\n".join(body)), previous == SKIP_MARKER)
        )
        i = j + 1
    return blocks


def python_blocks(page: Path) -> list[CodeBlock]:
    """The ``python`` blocks of ``page`` that are meant to run."""
    blocks = extract_blocks(page.read_text(encoding="utf-8"))
    return [b for b in blocks if b.language in ("python", "py") and not b.skipped]


PAGES = sorted(p for p in DOCS.glob("*.md") if python_blocks(p))


def test_extractor_finds_blocks_and_honours_the_skip_marker() -> None:
    text = "\n".join(
        [
            "# Title",
            "```python",
            "a = 1",
            "```",
            "",
            SKIP_MARKER,
            "```python",
            "raise SystemExit",
            "```",
            "```bash",
            "echo hi",
            "```",
            "!!! note",
            "    ```python",
            "    b = a + 1",
            "    ```",
        ]
    )
    blocks = extract_blocks(text)
    assert [(b.language, b.skipped) for b in blocks] == [
        ("python", False),
        ("python", True),
        ("bash", False),
        ("python", False),
    ]
    assert blocks[0].source == "a = 1" and blocks[0].line == 3
    assert blocks[3].source == "b = a + 1"


def test_the_docs_have_runnable_examples() -> None:
    assert DOCS.is_dir(), f"missing {DOCS}"
    assert len(PAGES) >= 3, f"only {len(PAGES)} pages with python examples were found"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_code_blocks_run(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # one thread: the examples use small batches, and the test machine is shared
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    try:
        for block in python_blocks(page):
            code = compile(block.source, f"{page.name}:{block.line}", "exec")
            try:
                exec(code, namespace)
            except Exception as exc:
                pytest.fail(
                    f"{page.name}, code block starting at line {block.line}: "
                    f"{type(exc).__name__}: {exc}"
                )
    finally:
        torch.set_num_threads(threads)
