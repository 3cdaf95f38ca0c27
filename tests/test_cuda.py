"""Devices: ``--device cuda``, ``LOCAL_RANK``, and CPU against CUDA on the bundled models.

The device-choice tests run everywhere (CUDA availability is faked).  The
rest needs a GPU and is skipped without one.  CPU and CUDA generators give
different noise streams for the same seed, so CPU/CUDA comparisons are made
on the statistics (counts within binomial sampling error, the same decision),
never on bit patterns; see docs/scale-out.md, "GPUs".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import FAST
from typer.testing import Result

from deqcert import OptionError, create_certifier, create_noise, create_solver, load_checkpoint
from deqcert.certify.dataset import noise_seed
from deqcert.certify.sampling import SolveLog, evaluating
from deqcert.checkpoint import default_checkpoint
from deqcert.data.sample import MnistSample
from deqcert.results import read_results
from deqcert.run.resolve import local_rank, resolve_device

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")


# -- choosing the device (runs everywhere) -------------------------------------------


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    def install(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    return install


def test_local_rank_picks_the_gpu_of_the_process(fake_gpus: Callable[[int], None]) -> None:
    fake_gpus(4)
    assert resolve_device("cuda", {"LOCAL_RANK": "2"}) == "cuda:2"
    assert resolve_device("auto", {"LOCAL_RANK": "3"}) == "cuda:3"
    assert resolve_device("cuda", {}) == "cuda"
    assert resolve_device("cuda:1", {"LOCAL_RANK": "2"}) == "cuda:1"  # explicit wins
    assert resolve_device("cpu", {"LOCAL_RANK": "2"}) == "cpu"
    with pytest.raises(OptionError, match=r"LOCAL_RANK=4, but this machine has 4 CUDA"):
        resolve_device("cuda", {"LOCAL_RANK": "4"})
    with pytest.raises(OptionError, match="non-negative integer"):
        resolve_device("cuda", {"LOCAL_RANK": "one"})
    assert local_rank({"LOCAL_RANK": ""}) is None


def test_local_rank_from_the_environment(
    fake_gpus: Callable[[int], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_gpus(2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == "cuda:1"
    fake_gpus(0)  # no GPU: auto is the CPU whatever the launcher says
    assert resolve_device("auto") == "cpu"
    with pytest.raises(OptionError, match="not available"):
        resolve_device("cuda")


# -- CPU against CUDA (needs a GPU) ---------------------------------------------------------


@pytest.fixture(scope="module")
def mnist() -> MnistSample:
    return MnistSample(split="test")


def _model(device: str, kind: str = "mdeq") -> Any:
    """The bundled ``mdeq`` (small) checkpoint, or the contractive one (``verified``)."""
    if kind == "contractive":
        path = resources.files("deqcert") / "checkpoints/contractive-convdeq-sigma0.25.safetensors"
        return load_checkpoint(str(path), device=device)
    return load_checkpoint(default_checkpoint(0.25), device=device)


def _binomial_gap(n: int, p: float) -> float:
    """Six standard deviations of the difference of two independent Binomial(n, p) counts,
    plus 1 % of n for samples whose class flips with float rounding (near-ties)."""
    return 6 * math.sqrt(2 * n * p * (1 - p)) + 0.01 * n + 1


@needs_cuda
@pytest.mark.parametrize("name", ["gaussian", "laplace", "uniform"])
def test_noise_on_cuda_is_reproducible_with_the_right_moments(name: str) -> None:
    options = {
        "gaussian": {"sigma": 0.5},
        "laplace": {"scale": 0.5},
        "uniform": {"half_width": 0.5},
    }
    noise = create_noise(name, **options[name])
    draws = [
        noise.sample((200_000,), generator=torch.Generator(device="cuda").manual_seed(7))
        for _ in range(2)
    ]
    assert draws[0].is_cuda and torch.equal(draws[0], draws[1])
    cpu = noise.sample((200_000,), generator=torch.Generator().manual_seed(7))
    for stat in (lambda t: t.mean(), lambda t: t.abs().mean(), lambda t: t.pow(2).mean()):
        assert float(stat(draws[0]).cpu()) == pytest.approx(float(stat(cpu)), abs=0.01)


@needs_cuda
@pytest.mark.parametrize("name", ["naive", "anderson", "broyden", "chain"])
def test_solvers_on_cuda_agree_with_the_cpu(name: str, mnist: MnistSample) -> None:
    x = torch.stack([mnist[i][0] for i in range(32)])
    noisy = x + 0.25 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    solver = create_solver(name, max_iter=30, tol=1e-3)
    out = {}
    for device in ("cpu", "cuda"):
        model = _model(device)
        with torch.no_grad():
            logits, result = model.solve(noisy.to(device), solver)
        out[device] = (logits.cpu(), result.z.cpu(), result.nfe)
    (lc, zc, _), (lg, zg, _) = out["cpu"], out["cuda"]
    # the solves stop at relative residual 1e-3, possibly one step apart (float differences)
    gap = (zc - zg).flatten(1).norm(dim=1) / zc.flatten(1).norm(dim=1)
    assert float(gap.max()) < 2e-2, gap
    assert (lc.argmax(1) == lg.argmax(1)).float().mean() >= 0.97


CERTIFIERS: dict[str, tuple[str, dict[str, Any]]] = {
    "vanilla": ("vanilla", {}),
    "verified": ("verified", {}),
    "srs-1A-sound": (
        "serialized",
        {
            "solver": {"name": "anderson", "max_iter": 1},
            "chain_start": "anchor",
            "bound": "sound",
            "reference_samples": 200,
        },
    ),
    "srs-1A-warmup": (
        "serialized",
        {
            "solver": {"name": "anderson", "max_iter": 1},
            "chain_start": "warmup",
            "reference_samples": 200,
        },
    ),
}


@needs_cuda
@pytest.mark.parametrize("key", sorted(CERTIFIERS))
def test_certificates_on_cuda_match_the_cpu_statistics(key: str, mnist: MnistSample) -> None:
    name, extra = CERTIFIERS[key]
    n = 2000
    options = {"noise": {"name": "gaussian", "sigma": 0.25}, "n0": 100, "n": n, "batch_size": 400}
    certifier = create_certifier(name, **options, **extra)
    kind = "contractive" if name == "verified" else "mdeq"
    models = {device: _model(device, kind) for device in ("cpu", "cuda")}
    for index in (0,) if name == "verified" else (0, 1, 2):
        x = mnist[index][0]
        certs = {}
        for device, model in models.items():
            gen = torch.Generator(device=device).manual_seed(noise_seed(0, index))
            certs[device] = certifier.certify(model, x.to(device), generator=gen)
        cpu, gpu = certs["cpu"], certs["cuda"]
        again = certifier.certify(
            models["cuda"],
            x.cuda(),
            generator=torch.Generator(device="cuda").manual_seed(noise_seed(0, index)),
        )
        assert again.counts == gpu.counts and again.p_lower == gpu.p_lower  # same device: exact
        count = "C_m" if name == "serialized" else "n_A"
        p = max(min(cpu.counts[count] / n, 1 - 1 / n), 1 / n)
        assert abs(cpu.counts[count] - gpu.counts[count]) <= _binomial_gap(n, p), (cpu, gpu)
        if cpu.p_lower > 0.6 and gpu.p_lower > 0.6:
            assert cpu.prediction == gpu.prediction
        assert cpu.nfe > 0 and gpu.nfe > 0


@needs_cuda
def test_cli_certifies_on_cuda(tmp_path: Path, cli: Callable[..., Result]) -> None:
    out = tmp_path / "run.jsonl"
    result = cli(["certify", "--device", "cuda", *FAST, "--indices", "0-1", "--out", out])
    assert result.exit_code == 0, result.stderr
    run = read_results(out)
    assert run.header is not None and str(run.header["config"]["device"]).startswith("cuda")
    assert run.indices == [0, 1]


# -- host synchronisations inside the sample loop (needs a GPU) -------------------------


@contextmanager
def count_syncs() -> Iterator[list[str]]:
    """Record every synchronising CUDA call made in the block (``file:line: message``)."""
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize()
    found += [
        f"{Path(w.filename).name}:{w.lineno}: {w.message}"
        for w in caught
        if "synchroniz" in str(w.message)
    ]


def _sample_loops(mnist: MnistSample) -> dict[str, Callable[[], Any]]:
    """The batch loops of vanilla and SRS, without their per-input setup and statistics."""
    model = _model("cuda")
    x = mnist[0][0].cuda()
    options = {
        "noise": {"name": "gaussian", "sigma": 0.25},
        "n0": 100,
        "n": 2000,
        "batch_size": 400,
    }
    vanilla = create_certifier("vanilla", **options)
    srs = create_certifier(
        "serialized",
        **options,
        solver={"name": "anderson", "max_iter": 1},
        chain_start="anchor",
        reference_samples=200,
    )

    def run_vanilla() -> Any:
        gen = torch.Generator(device="cuda").manual_seed(1)
        with evaluating(model):
            return vanilla._sample_counts(model, x, 2000, gen, SolveLog())

    def run_srs() -> Any:
        gen = torch.Generator(device="cuda").manual_seed(1)
        logs = {k: SolveLog() for k in ("chains", "warmup", "anchor", "reference")}
        with evaluating(model):
            first = srs._anchor(model, x, logs)
            return srs._run_chains(model, x, 2000, gen, first, logs)

    return {"vanilla": run_vanilla, "serialized": run_srs}


@needs_cuda
@pytest.mark.parametrize("name", ["vanilla", "serialized"])
def test_sample_loop_makes_no_host_sync(name: str, mnist: MnistSample) -> None:
    loop = _sample_loops(mnist)[name]
    loop()  # warm-up: lazy initialisation may synchronise once
    with count_syncs() as syncs:
        loop()
    assert not syncs, f"{len(syncs)} host syncs:\n" + "\n".join(sorted(set(syncs)))
    torch.cuda.set_sync_debug_mode("error")  # the same, as the issue states it
    try:
        loop()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(CUDA, reason="checks the machine without CUDA")
def test_cli_refuses_cuda_without_a_gpu(tmp_path: Path, cli: Callable[..., Result]) -> None:
    out = tmp_path / "run.jsonl"
    result = cli(["certify", "--device", "cuda", *FAST, "--indices", "0", "--out", out])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "device 'cuda' is not available" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
