"""Contract tests: every conformance check on every registered component.

The cases come from ``list_solvers()``, ``list_noises()``, ``list_models()``
and ``list_certifiers()`` at collection time, so a component registered
through an entry point (the example plugin's ``km`` and ``gaussian-linf``,
or any other installed package) is tested with no new test file; the last
tests prove it with a distribution created on the fly.  Each suite is also
shown to fail on a broken component.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import deqcert
from deqcert.certify.vanilla import VanillaCertifier
from deqcert.models.mlpdeq import MLPDEQ
from deqcert.noise import GaussianNoise
from deqcert.registry import REGISTRIES
from deqcert.testing import certifiers, models, noise, solvers
from deqcert.testing._checks import Check, ConformanceError

Suite = tuple[Callable[[], list[str]], Callable[[], Iterator[tuple[str, Check]]], Any]

SUITES: dict[str, Suite] = {
    "solver": (deqcert.list_solvers, solvers.solver_conformance_cases, solvers.registered_solver),
    "noise": (deqcert.list_noises, noise.noise_conformance_cases, noise.registered_noise),
    "model": (deqcert.list_models, models.model_conformance_cases, models.registered_model),
    "certifier": (
        deqcert.list_certifiers,
        certifiers.certifier_conformance_cases,
        certifiers.registered_certifier,
    ),
}
"""Per kind: the registry listing, the suite's cases and the factory of a registered name."""


def conformance_params(kind: str) -> list[Any]:
    """One case per (registered name, check), with id ``name-check``."""
    names, cases, _ = SUITES[kind]
    return [
        pytest.param(name, check, id=f"{name}-{check_name}")
        for name in names()
        for check_name, check in cases()
    ]


def run_case(kind: str, name: str, check: Check) -> None:
    check(SUITES[kind][2](name))


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name, check", conformance_params("solver"))
def test_solver_conforms(name: str, check: Check) -> None:
    run_case("solver", name, check)


@pytest.mark.parametrize("name, check", conformance_params("noise"))
def test_noise_conforms(name: str, check: Check) -> None:
    run_case("noise", name, check)


@pytest.mark.parametrize("name, check", conformance_params("model"))
def test_model_conforms(name: str, check: Check) -> None:
    run_case("model", name, check)


@pytest.mark.parametrize("name, check", conformance_params("certifier"))
def test_certifier_conforms(name: str, check: Check) -> None:
    run_case("certifier", name, check)


def test_every_registered_component_is_covered() -> None:
    for kind, (names, cases, _) in SUITES.items():
        ids = {p.id for p in conformance_params(kind)}
        checks = [check_name for check_name, _ in cases()]
        assert len(checks) >= 7, kind
        assert ids == {f"{n}-{c}" for n in names() for c in checks}
    # at least the built-ins (plugins installed in the environment come on top)
    assert {"naive", "anderson", "broyden"} <= set(deqcert.list_solvers())
    assert {"gaussian", "laplace", "uniform"} <= set(deqcert.list_noises())
    assert {"mdeq", "contractive-mlpdeq"} <= set(deqcert.list_models())
    assert {"vanilla", "serialized", "verified"} <= set(deqcert.list_certifiers())


def test_declared_options_must_be_a_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GaussianNoise, "conformance_options", [("sigma", 1.0)])
    with pytest.raises(ConformanceError, match="conformance_options must be a dict"):
        noise.registered_noise("gaussian")


# --- each suite fails on a broken component ---------------------------------------------


class OverClaiming(GaussianNoise):
    """Cohen's radius, 10% too large."""

    def _radius(self, p: float) -> float:
        return 1.1 * super()._radius(p)


class GlobalRandom(GaussianNoise):
    def sample(self, shape: Any, *, generator: Any, device: Any = None, dtype: Any = None) -> Any:
        return torch.randn(tuple(shape), dtype=dtype) * self.options.sigma


class RadiusAtOneHalf(GaussianNoise):
    """Certifies a tie: a radius at ``p_lower = 1/2``."""

    def radius(self, p_lower: float) -> float:
        return 0.1 if p_lower == 0.5 else super().radius(p_lower)


class BatchMeanDEQ(MLPDEQ):
    """Subtracts the batch mean inside ``f``: samples of a batch interact."""

    def f(self, z: Tensor, u: Tensor) -> Tensor:
        return super().f(z - z.mean(dim=0, keepdim=True), u)


class IgnoresZ0(MLPDEQ):
    def forward(self, x: Tensor, solver: Any = None, z0: Any = None) -> Tensor:
        return super().forward(x, solver)


class PointEstimate(VanillaCertifier):
    """Certifies with the point estimate ``n_A / n`` instead of a confidence bound."""

    def certify(self, model: Any, x: Tensor, *, generator: torch.Generator) -> Any:
        cert = super().certify(model, x, generator=generator)
        p = cert.counts["n_A"] / cert.n
        cert.p_lower = p
        cert.prediction = cert.extra["candidate"] if p > 0.5 else deqcert.ABSTAIN
        cert.radius = self.options.noise.radius(p) if p > 0.5 else 0.0
        return cert


class FixedSeed(VanillaCertifier):
    def certify(self, model: Any, x: Tensor, *, generator: torch.Generator) -> Any:
        return super().certify(model, x, generator=torch.Generator().manual_seed(0))


class LeavesEval(VanillaCertifier):
    def certify(self, model: Any, x: Tensor, *, generator: torch.Generator) -> Any:
        model.eval()
        return super().certify(model, x, generator=generator)


def _tiny_mlp(cls: type) -> Callable[[], Any]:
    def build() -> Any:
        torch.manual_seed(0)
        return cls(image_size=4, hidden=6, num_classes=3)

    return build


BROKEN: list[Any] = [
    pytest.param(noise.check_radius_is_sound, lambda: OverClaiming(sigma=0.5), "too large",
                 id="noise-overclaims"),
    pytest.param(noise.check_seeded_determinism, lambda: GlobalRandom(sigma=0.5), "global",
                 id="noise-global-rng"),
    pytest.param(noise.check_radius_edges, lambda: RadiusAtOneHalf(sigma=0.5), r"radius\(0.5\)",
                 id="noise-radius-at-half"),
    pytest.param(models.check_batch_independence, _tiny_mlp(BatchMeanDEQ), "batch",
                 id="model-batch-mean"),
    pytest.param(models.check_forward_matches_members, _tiny_mlp(IgnoresZ0), "ignores z0",
                 id="model-ignores-z0"),
    pytest.param(certifiers.check_abstains_at_chance,
                 lambda **kw: PointEstimate(**kw), "p_A = 1/2", id="certifier-point-estimate"),
    pytest.param(certifiers.check_seeded_determinism,
                 lambda **kw: FixedSeed(**kw), "generator is not used", id="certifier-fixed-seed"),
    pytest.param(certifiers.check_leaves_model_and_input_alone,
                 lambda **kw: LeavesEval(**kw), "eval mode", id="certifier-leaves-eval"),
]


@pytest.mark.parametrize("check, factory, match", BROKEN)
def test_a_check_fails_on_a_broken_component(check: Check, factory: Any, match: str) -> None:
    with pytest.raises(ConformanceError, match=match):
        check(factory)


def test_the_suites_pass_on_the_same_components_unbroken() -> None:
    noise.run_noise_conformance(lambda: GaussianNoise(sigma=0.5))
    models.run_model_conformance(_tiny_mlp(MLPDEQ))
    certifiers.run_certifier_conformance(lambda **kw: VanillaCertifier(**kw))


def test_run_names_the_failing_check() -> None:
    match = r"^radius_is_sound: radius\(0\.[0-9]+\) = .* is too large"
    with pytest.raises(ConformanceError, match=match):
        noise.run_noise_conformance(lambda: OverClaiming(sigma=0.5))


# --- a component added through an entry point is tested automatically ---------------------

PLUGIN_SOURCE = '''
"""A plugin made up by tests/test_conformance.py: two noises, a model, a certifier."""
import torch
from pydantic import Field
from scipy.stats import norm as normal

from deqcert.certify.vanilla import VanillaCertifier
from deqcert.models.mlpdeq import MLPDEQ
from deqcert.models.base import DEQModel, ImageModelOptions
from deqcert.noise import AdditiveNoise
from deqcert.options import ComponentOptions


class SigmaOptions(ComponentOptions):
    sigma: float = Field(gt=0)


class HalfRadiusGaussian(AdditiveNoise):
    """N(0, sigma^2 I) with half of Cohen's L2 radius (conservative, so valid)."""

    Options = SigmaOptions
    norm = "l2"
    conformance_options = {"sigma": 0.4}

    def _draw(self, draw):
        return draw.randn() * self.options.sigma

    def _radius(self, p):
        return 0.5 * self.options.sigma * float(normal.ppf(p))


class OverClaimingGaussian(HalfRadiusGaussian):
    """Three times the half radius: 1.5 times Cohen's, not valid."""

    def _radius(self, p):
        return 3.0 * super()._radius(p)


class SineOptions(ImageModelOptions):
    hidden: int = Field(6, ge=1)


class SineDEQ(DEQModel):
    """f(z, u) = 0.5 sin(W z) + u."""

    Options = SineOptions
    conformance_options = {"image_size": 4, "num_classes": 2}

    def __init__(self, **options):
        super().__init__(**options)
        o = self.options
        self.inject_layer = torch.nn.Linear(o.in_channels * o.image_size**2, o.hidden)
        self.weight = torch.nn.Linear(o.hidden, o.hidden, bias=False)
        self.head = torch.nn.Linear(o.hidden, o.num_classes)

    def injection(self, x):
        return self.inject_layer(x.flatten(1))

    def f(self, z, u):
        return 0.5 * torch.sin(self.weight(z)) + u

    def readout(self, z):
        return self.head(z)


class PluginVanilla(VanillaCertifier):
    """The vanilla certifier under another name."""
'''

ENTRY_POINTS = """
[deqcert.noise]
fake-half-gaussian = deqcert_fake_conformance:HalfRadiusGaussian
fake-overclaim = deqcert_fake_conformance:OverClaimingGaussian

[deqcert.models]
fake-sine-deq = deqcert_fake_conformance:SineDEQ

[deqcert.certifiers]
fake-vanilla = deqcert_fake_conformance:PluginVanilla
"""

FAKE = {"noise": ["fake-half-gaussian", "fake-overclaim"], "model": ["fake-sine-deq"],
        "certifier": ["fake-vanilla"]}


def _refresh() -> None:
    importlib.invalidate_caches()
    for registry in REGISTRIES.values():
        registry.refresh()


@pytest.fixture(scope="module")
def fake_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A distribution ``deqcert-fake-conformance`` on ``sys.path``, found via importlib.metadata."""
    site = tmp_path_factory.mktemp("fake-plugin")
    (site / "deqcert_fake_conformance.py").write_text(textwrap.dedent(PLUGIN_SOURCE))
    info = site / "deqcert_fake_conformance-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: deqcert-fake-conformance\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    sys.path.insert(0, str(site))
    _refresh()
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("deqcert_fake_conformance", None)
        _refresh()


def test_entry_point_components_join_the_parametrisation(fake_plugin: Path) -> None:
    origins = {e.name: e.origin for kind in FAKE for e in REGISTRIES[kind].entries()}
    for kind, names in FAKE.items():
        params = {p.id: p for p in conformance_params(kind)}
        for name in names:
            assert origins[name] == "deqcert-fake-conformance"
            ids = [i for i in params if i.startswith(f"{name}-")]
            assert len(ids) == len(list(SUITES[kind][1]())), (kind, name, ids)
            for case in ids:
                (param_name, check) = params[case].values
                if case == "fake-overclaim-radius_is_sound":
                    with pytest.raises(ConformanceError, match="too large"):
                        run_case(kind, param_name, check)
                else:
                    run_case(kind, param_name, check)  # the suite passes on a correct plugin


@pytest.mark.slow
def test_pytest_collects_and_runs_the_plugin_cases(fake_plugin: Path) -> None:
    """End to end: pytest itself, with the distribution installed, runs the plugin's cases."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fake_plugin), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider",
         "-k", "fake-", "-rf", "-o", "addopts="],
        capture_output=True, text=True, env=env, timeout=600,
        cwd=Path(__file__).resolve().parent.parent,
    )
    expected = sum(len(names) * len(list(SUITES[k][1]())) for k, names in FAKE.items())
    assert f"1 failed, {expected - 1} passed" in done.stdout, done.stdout[-3000:]
    assert "fake-overclaim-radius_is_sound" in done.stdout
