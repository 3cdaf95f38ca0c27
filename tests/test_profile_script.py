"""``benchmarks/profile_serialized.py`` runs the certifiers through its timing wrappers.

The wrappers must satisfy the model protocol the certifiers check, and the
table must show every timed phase once, with timers that do not overlap
(what they account for fits within the total).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--n", "200", "--n0", "10", "--k", "20", "--batch", "100", "--inputs", "1"]


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    threads = torch.get_num_threads()
    import profile_serialized

    yield profile_serialized
    torch.set_num_threads(threads)


def table(out: str) -> dict[str, tuple[float, float]]:
    """``component -> (s/input, share %)`` from the printed markdown table."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].replace(".", "").isdigit():
            rows[cells[0]] = (float(cells[1]), float(cells[2]))
    return rows


@pytest.mark.parametrize(
    ("options", "phases"),
    [
        (["--chain-start", "anchor"], ["chains", "anchor", "reference"]),
        (["--chain-start", "warmup"], ["chains", "warmup", "reference"]),
        (["--certifier", "vanilla"], ["reference"]),
    ],
)
def test_profile_accounts_for_every_phase(
    script: ModuleType, capsys: pytest.CaptureFixture[str], options: list[str], phases: list[str]
) -> None:
    script.main([*TINY, "--threads", "1", "--no-allocator", *options])
    out = capsys.readouterr().out
    rows = table(out)
    timed = [f"{p} {part}" for p in phases for part in ("f", "solver", "readout")]
    assert set(rows) == {"noise", "inject", *timed, "other (Python, batching, bound)", "total"}
    # the timers do not overlap: what they account for fits in the measured total
    assert rows["other (Python, batching, bound)"][0] >= 0
    assert all(rows[name][0] > 0 for name in ("inject", *[f"{p} f" for p in phases]))
    nfe = out.split("NFE/input ")[1].split()[0].replace(",", "")
    assert int(nfe) > 0


def test_timed_model_forward_is_the_models(script: ModuleType) -> None:
    from deqcert import create_solver
    from deqcert.testing.oracles import LinearOracle

    model, x = LinearOracle.with_p_a(0.9, 0.25)
    clock = script.Clock()
    timed = script.TimedModel(model, clock)
    batch = torch.stack([x, 1 - x])
    solver = create_solver("naive", max_iter=3)
    assert torch.equal(timed(batch, solver), model(batch, solver))
    assert torch.equal(timed(batch), model(batch))
    assert clock.seconds["chains f"] > 0  # the solve went through the timed members
