"""Issue 14's bad inputs and faults through the CLI: one line, exit 2, no file created or changed.

Numbers (finite, right type, memory), YAML (keys, aliases), special files as
configs and outputs, damaged results files, merge mistakes, an unreachable
Ray cluster.  Each case writes its files, runs ``deqcert`` in-process and
checks the error line, the exit code and that the folder is unchanged.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _cli_checks import assert_refused, snapshot
from conftest import FAST
from typer.testing import Result

Setup = Callable[[Path, Path, bytes], list[str]]
"""Given a scratch folder, the tiny checkpoint and a finished 3-input run's file: the CLI args."""

MAX3 = ("--max", "3")


def certify(checkpoint: Path | str, *extra: Any) -> list[str]:
    return ["certify", "--checkpoint", str(checkpoint), *FAST, "--out", "out.jsonl",
            *map(str, extra)]


def flags(*extra: Any) -> Setup:
    return lambda tmp, ckpt, done: certify(ckpt, *extra)


def config(text: str, suffix: str = ".yaml") -> Setup:
    def setup(tmp: Path, ckpt: Path, done: bytes) -> list[str]:
        path = tmp / f"run{suffix}"
        path.write_text(text)
        return certify(ckpt, "--config", path)

    return setup


ALIAS_BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    for prev, name in zip("abcdefg", "bcdefgh", strict=True)
) + "indices: [*h, *h, *h, *h, *h, *h, *h, *h, *h]\n"


def fifo_config(tmp: Path, ckpt: Path, done: bytes) -> list[str]:
    os.mkfifo(tmp / "run.yaml")
    return certify(ckpt, "--config", tmp / "run.yaml")


def device_config(tmp: Path, ckpt: Path, done: bytes) -> list[str]:
    (tmp / "run.yaml").symlink_to("/dev/zero")
    return certify(ckpt, "--config", tmp / "run.yaml")


def out_at(make: Callable[[Path], Path | str]) -> Setup:
    return lambda tmp, ckpt, done: [*certify(ckpt)[:-2], "--out", str(make(tmp))]


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "out.jsonl")
    return tmp / "out.jsonl"


def tampered(edit: Callable[[list[dict[str, Any]]], list[Any]]) -> Setup:
    """The finished run's file with its lines (header first) edited, resumed with the same run."""

    def setup(tmp: Path, ckpt: Path, done: bytes) -> list[str]:
        lines = [json.loads(line) for line in done.decode().splitlines()]
        text = "".join(json.dumps(item) + "\n" for item in edit(lines))
        (tmp / "out.jsonl").write_text(text)
        return certify(ckpt, *MAX3)

    return setup


def _duplicate(lines: list[dict[str, Any]]) -> list[Any]:
    return [*lines[:2], lines[1]]  # index 0 twice, index 2 missing


def _outside(lines: list[dict[str, Any]]) -> list[Any]:
    return [*lines[:2], {**lines[2], "index": 7}]


def _text_index(lines: list[dict[str, Any]]) -> list[Any]:
    return [*lines[:2], {**lines[2], "index": "two"}]


def _config_list(lines: list[dict[str, Any]]) -> list[Any]:
    return [{**lines[0], "config": [1, 2]}, *lines[1:]]


def merge_mixed(tmp: Path, ckpt: Path, done: bytes) -> list[str]:
    (tmp / "a.jsonl").write_bytes(done)
    header = json.loads(done.decode().splitlines()[0])
    (tmp / "b.tsv.header.json").write_text(json.dumps(header))
    (tmp / "b.tsv").write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n")
    return ["merge", "all.jsonl", "a.jsonl", "b.tsv"]


def merge_into_a_part(tmp: Path, ckpt: Path, done: bytes) -> list[str]:
    (tmp / "a.jsonl").write_bytes(done)
    return ["merge", "a.jsonl", "a.jsonl"]


def _closed_port() -> int:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CASES: dict[str, tuple[Setup, str]] = {
    # numbers: type, finiteness, ranges, memory
    "n given as true": (flags("--set", "n=true"), "must be a number"),
    "batch given as false": (flags("--set", "batch=false"), "must be a number"),
    "solver option given as true": (flags("--set", "solver.max_iter=true"), "must be a number"),
    "sigma inf": (flags("--sigma", "inf"), "finite"),
    "sigma nan": (flags("--sigma", "nan"), "finite"),
    "laplace scale inf": (flags("--noise", "laplace", "--set", "noise.scale=inf"), "finite"),
    "uniform half-width nan": (
        flags("--noise", "uniform", "--set", "noise.half_width=nan"), "finite"
    ),
    "alpha nan": (flags("--alpha", "nan"), "alpha"),
    "solver tol inf": (flags("--set", "solver.tol=inf"), "finite"),
    "huge index range": (flags("--indices", "0-300000000"), "out of range"),
    "ranges adding up past the dataset": (flags("--indices", "0-999,0-999"), "twice"),
    "n beyond any memory": (flags("--set", "n=1000000000000", "--batch", "1"), "memory"),
    "batch beyond any memory": (
        flags("--set", "n=100000000000", "--batch", "100000000000"), "memory"
    ),
    # YAML and config files
    "YAML with an integer key": (config("n: 200\n1: 2\n"), "not a string"),
    "YAML with a null key": (config("~: 2\n"), "not a string"),
    "YAML alias bomb": (config(ALIAS_BOMB), "expands to more than"),
    "YAML alias referring to itself": (config("indices: &x [1, *x]\n"), "refers to itself"),
    "FIFO as config": (fifo_config, "FIFO"),
    "/dev/zero as config": (device_config, "device"),
    # outputs
    "FIFO as output": (out_at(_fifo), "FIFO"),
    "/dev/full as output": (out_at(lambda t: "/dev/full"), "device"),
    "/dev/zero as output": (out_at(lambda t: "/dev/zero"), "device"),
    # damaged results files
    "resume with an index recorded twice": (tampered(_duplicate), "damaged"),
    "resume with an index outside the selection": (tampered(_outside), "damaged"),
    "resume with a non-integer index": (tampered(_text_index), "damaged"),
    "resume with a header config that is a list": (tampered(_config_list), "damaged"),
    # merge
    "merge of JSONL and TSV parts": (merge_mixed, "different formats"),
    "merge into one of the parts": (merge_into_a_part, "one of the parts"),
    # external services
    "unreachable Ray cluster": (
        lambda tmp, ckpt, done: certify(
            ckpt, "--executor", "ray", "--address", f"127.0.0.1:{_closed_port()}"
        ),
        "no cluster answers",
    ),
}


@pytest.fixture(scope="module")
def finished(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The results file of a finished 3-input run with the tiny checkpoint."""
    from typer.testing import CliRunner

    from deqcert.cli import app

    folder = tmp_path_factory.mktemp("finished")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        result = CliRunner().invoke(app, [*certify(tiny_checkpoint, *MAX3), "--quiet"])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.stderr
    return (folder / "out.jsonl").read_bytes()


@pytest.mark.parametrize("name", list(CASES))
def test_refused_with_one_line_and_nothing_written(
    name: str,
    tiny_checkpoint: Path,
    finished: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Callable[..., Result],
) -> None:
    setup, word = CASES[name]
    monkeypatch.chdir(tmp_path)
    args = setup(tmp_path, tiny_checkpoint, finished)
    before = snapshot(tmp_path)
    result = cli(args)
    assert_refused(result.exit_code, result.stderr, word, 2, result.exception)
    assert "Traceback" not in result.stdout
    assert snapshot(tmp_path) == before  # nothing created, nothing changed


def test_an_alias_bomb_message_is_short_and_quick() -> None:
    from deqcert.errors import OptionError
    from deqcert.run import layers

    with pytest.raises(OptionError) as caught:
        layers.check_tree({"indices": _bomb_value()}, "config")
    assert len(str(caught.value)) < 200


def _bomb_value() -> list[Any]:
    level: list[Any] = ["lol"] * 9
    for _ in range(8):
        level = [level] * 9  # shared, like YAML aliases: 9**9 values once expanded
    return level


def test_small_yaml_anchors_are_accepted(tmp_path: Path) -> None:
    from deqcert.run.layers import load_config_file

    path = tmp_path / "run.yaml"
    path.write_text("base: &b {name: anderson, max_iter: 2}\nsolver: *b\n")
    assert load_config_file(path)["solver"] == {"name": "anderson", "max_iter": 2}


def test_short_repr_never_expands_a_huge_value() -> None:
    from deqcert.options import short_repr

    text = short_repr(_bomb_value())
    assert len(text) <= 60 and text.endswith("...")


def test_matrix_size() -> None:
    assert len(CASES) >= 25
