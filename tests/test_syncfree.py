"""The sample loop reads nothing from the device: its logic, checked on the CPU.

A CUDA tensor's value reaches the host only through a blocking read (``.item()``,
``bool()``, ``.tolist()``, ``nonzero``, ``bincount``, boolean-mask indexing, ...).
:class:`HostReads` records every such call made through torch inside a block, on
any device, so the CPU run shows each place where a CUDA run would synchronise.
The solver loop's own view of its progress (``deqcert.solvers._progress``) is read
through numpy, as on CUDA through pinned memory, and is not a device read; its
lagged form is simulated here with events that complete late.

Where reading values is free (the CPU) the solvers index the rows to freeze instead
of masking them (``_progress.SHORTCUTS``); these tests turn that off to run the CUDA
path, and check that both paths give the same results.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from deqcert import create_certifier, create_solver, load_checkpoint, syncs
from deqcert.certify.sampling import SolveLog, class_counts, evaluating
from deqcert.checkpoint import default_checkpoint
from deqcert.data.sample import MnistSample
from deqcert.solvers import _progress, loop
from deqcert.solvers.rowwise import RowwiseMap


@pytest.fixture(autouse=True)
def cuda_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the solvers' CUDA path (masks, no reads) on the CPU."""
    monkeypatch.setattr(_progress, "SHORTCUTS", False)


READS = {
    "item", "__bool__", "__int__", "__float__", "__index__", "__format__", "tolist", "numpy",
    "cpu", "nonzero", "argwhere", "bincount", "masked_select", "unique", "unique_consecutive",
    "repeat_interleave",
}  # fmt: skip
"""Tensor calls whose result needs the device's value on the host."""


class HostReads(TorchFunctionMode):
    """Records the torch calls of :data:`READS` and indexing with boolean masks."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", str(func))
        if name in READS or (name in {"__getitem__", "__setitem__", "index_put_"} and _mask(args)):
            self.found.append(name)
        return func(*args, **(kwargs or {}))


def _mask(args: Any) -> bool:
    index = args[1] if len(args) > 1 else None
    parts = index if isinstance(index, tuple | list) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


@contextmanager
def host_reads() -> Iterator[list[str]]:
    """Device reads through torch and the deliberate waits noted through deqcert.syncs."""
    mode = HostReads()
    with syncs.recording() as waits, mode:
        yield mode.found
    mode.found += waits


def test_the_recorder_sees_host_reads() -> None:
    """Guard against a vacuous count: each kind of read the old loop made is seen."""
    t = torch.tensor([0, 2, 1, 2])
    with host_reads() as found:
        bool((t > 0).all())
        t.nonzero()
        torch.bincount(t, minlength=3)
        t[t > 0]
        int(t.sum())
        syncs.note("here")
    assert found == ["__bool__", "nonzero", "bincount", "__getitem__", "__int__", "here"]


def test_class_counts_without_bincount() -> None:
    votes = torch.tensor([3, 0, 3, 9, 3, 1])
    with host_reads() as found:
        counts = class_counts(votes, 10)
        decided = class_counts(votes, 10, votes != 3)
    assert not found
    assert torch.equal(counts, torch.bincount(votes, minlength=10))
    assert decided.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 1]


# -- the solver loop ------------------------------------------------------------------


def _problem(batch: int = 24, dim: int = 12) -> tuple[RowwiseMap, torch.Tensor]:
    """``z = tanh(W z + u)`` with rows converging at very different speeds."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    w = 0.9 * w / torch.linalg.matrix_norm(w, ord=2)
    u = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    u *= torch.logspace(-3, 1, batch, dtype=torch.float64).unsqueeze(1)
    return RowwiseMap(lambda z, u: torch.tanh(z @ w.T + u), u), torch.zeros_like(u)


SOLVERS = {
    "naive": {},
    "anderson": {"m": 4},
    "broyden": {"memory": 8},
    "chain": {"solvers": [{"name": "anderson", "max_iter": 6}, {"name": "naive"}]},
}


@pytest.mark.parametrize("compact", [True, False])
@pytest.mark.parametrize("name", list(SOLVERS))
def test_solves_read_nothing_from_the_device(name: str, compact: bool) -> None:
    f, z0 = _problem()
    frozen = torch.zeros(z0.shape[0], dtype=torch.bool)
    frozen[::5] = True
    solver = create_solver(name, max_iter=60, tol=1e-8, compact=compact, **SOLVERS[name])
    for kwargs in ({}, {"frozen": frozen}):
        with host_reads() as found:
            result = solver.solve(f, z0, **kwargs)
        assert not found, found
        assert 10 < result.nfe < 60 and bool(result.converged.all())  # early stop, all rows
        if compact:  # the compaction path ran
            assert result.evaluations < result.nfe * z0.shape[0]  # type: ignore[attr-defined]


@pytest.mark.parametrize("compact", [True, False])
@pytest.mark.parametrize("name", list(SOLVERS))
def test_the_cpu_shortcuts_change_nothing(
    name: str, compact: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CPU's indexed freezing and skipped fallback give what the CUDA path's masks give."""
    f, z0 = _problem()
    frozen = torch.zeros(z0.shape[0], dtype=torch.bool)
    frozen[[2, 7]] = True
    solver = create_solver(name, max_iter=60, tol=1e-8, compact=compact, **SOLVERS[name])
    masked = solver.solve(f, z0, frozen=frozen)
    monkeypatch.setattr(_progress, "SHORTCUTS", True)
    with host_reads() as found:
        indexed = solver.solve(f, z0, frozen=frozen)
    assert found  # the shortcuts do read (free on the CPU)
    for field in ("z", "steps", "residual", "converged"):
        assert torch.equal(getattr(indexed, field), getattr(masked, field)), field
    assert indexed.nfe == masked.nfe


class _LateEvent:
    """A stand-in for a CUDA event that completes ``delay`` events after its own."""

    created = 0

    def __init__(self, delay: int) -> None:
        _LateEvent.created += 1
        self.ready_at = _LateEvent.created + delay
        self.waited = False

    def query(self) -> bool:
        return self.waited or _LateEvent.created >= self.ready_at

    def synchronize(self) -> None:
        self.waited = True


class _LaggedProgress(_progress.Progress):
    """The CUDA path of Progress on the CPU, with events that complete ``delay`` pushes late."""

    delay = 3

    def __init__(self, device: torch.device) -> None:
        super().__init__(device)
        self.cuda = True

    def _record(self) -> Any:
        return _LateEvent(self.delay)

    def _buffer(self, slots: int) -> tuple[torch.Tensor, np.ndarray]:
        values = np.zeros(slots, dtype=np.int64)
        return torch.from_numpy(values), values


@pytest.mark.parametrize("delay", [0, 1, 5])
@pytest.mark.parametrize("name", list(SOLVERS))
def test_a_late_view_changes_only_the_evaluation_count(
    name: str, delay: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On CUDA the host learns of finished rows a step or two late: the loop then makes a
    few more evaluations of f, but every sample's state, steps and residual are the same."""
    f, z0 = _problem()
    frozen = torch.zeros(z0.shape[0], dtype=torch.bool)
    frozen[3] = True
    solver = create_solver(name, max_iter=60, tol=1e-8, compact=False, **SOLVERS[name])
    exact = solver.solve(f, z0, frozen=frozen)
    monkeypatch.setattr(_LaggedProgress, "delay", delay)
    monkeypatch.setattr(loop, "Progress", _LaggedProgress)
    with syncs.recording() as waits:
        late = solver.solve(f, z0, frozen=frozen)
    assert torch.equal(late.z, exact.z) and torch.equal(late.steps, exact.steps)
    assert torch.equal(late.residual, exact.residual)
    assert torch.equal(late.converged, exact.converged)
    stages = 2 if name == "chain" else 1
    assert exact.nfe <= late.nfe <= exact.nfe + stages * (_progress.LAG + 1)
    assert (len(waits) > 0) == (delay > _progress.LAG)  # waits only when the view lags


def test_compaction_on_a_late_view_keeps_the_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compacting on a stale count keeps a few finished rows in the working set, frozen."""
    f, z0 = _problem()
    solver = create_solver("anderson", max_iter=60, tol=1e-8, m=4)
    exact = solver.solve(f, z0)
    monkeypatch.setattr(loop, "Progress", _LaggedProgress)
    late = solver.solve(f, z0)
    assert torch.equal(late.steps, exact.steps) and torch.equal(late.converged, exact.converged)
    # rows are evaluated in batches of other sizes: equal up to float rounding
    torch.testing.assert_close(late.z, exact.z, rtol=1e-12, atol=1e-12)
    assert late.evaluations > exact.evaluations  # type: ignore[attr-defined]


# -- the certifiers' sample loops (the same loops tests/test_cuda.py times on a GPU) --------


@pytest.fixture(scope="module")
def model_and_input() -> tuple[Any, torch.Tensor]:
    return load_checkpoint(default_checkpoint(0.25)), MnistSample(split="test")[0][0]


OPTIONS = {"noise": {"name": "gaussian", "sigma": 0.25}, "n0": 20, "n": 120, "batch_size": 50}


def test_vanilla_sample_loop_reads_nothing(model_and_input: tuple[Any, torch.Tensor]) -> None:
    model, x = model_and_input
    certifier: Any = create_certifier("vanilla", **OPTIONS)
    log = SolveLog()
    with evaluating(model), host_reads() as found:
        counts = certifier._sample_counts(model, x, 120, torch.Generator().manual_seed(1), log)
    assert not found, found
    assert int(counts.sum()) == 120 and log.nfe > 0


@pytest.mark.parametrize("start", ["anchor", "warmup"])
def test_serialized_sample_loop_reads_nothing(
    start: str, model_and_input: tuple[Any, torch.Tensor]
) -> None:
    model, x = model_and_input
    certifier: Any = create_certifier(
        "serialized",
        **OPTIONS,
        solver={"name": "anderson", "max_iter": 1},
        chain_start=start,
        reference_samples=30,
    )
    gen = torch.Generator().manual_seed(1)
    logs = {k: SolveLog() for k in ("chains", "warmup", "anchor", "reference")}
    from deqcert.certify.serialized import _ReferenceSolves

    with evaluating(model):
        first = certifier._anchor(model, x, logs) if start == "anchor" else None
        subset = certifier._reference_subset(gen)
        o = certifier.options
        reference = _ReferenceSolves(model, o.reference_solver, 50, logs["reference"])
        with host_reads() as found:
            serial, _ = certifier._run_chains(model, x, 120, gen, first, logs, subset, reference)
            y_g = reference.finish()
    assert not found, found
    assert serial.shape == (120,) and y_g.shape == (30,)
