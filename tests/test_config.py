"""CertifyConfig: defaults, layering (defaults < file < flags < --set), validation, build()."""

from __future__ import annotations

from pathlib import Path

import pytest

from deqcert import OptionError, list_certifiers, registry
from deqcert.certify.base import describe
from deqcert.config import (
    CertifyConfig,
    TrainConfig,
    build_component,
    load_config_file,
    parse_assignments,
    parse_indices,
    select_indices,
)
from deqcert.errors import DataError, UnknownNameError
from deqcert.executors.pipeline import CertifyPipeline


def test_defaults_are_the_serialized_certifier_s_own() -> None:
    config = CertifyConfig()
    assert config.checkpoint == "default"
    assert (config.dataset.name, config.dataset.options) == ("mnist-sample", {"split": "test"})
    assert config.max == 5 and config.indices is None
    assert config.certifier.name == "serialized"
    assert config.certifier.options == {}  # the certifier's own defaults: one set
    assert config.solver is not None and config.solver.options == {"max_iter": 1}
    assert config.warmup_solver is not None and config.warmup_solver.options == {"max_iter": 10}
    assert config.reference_solver is not None
    assert config.reference_solver.options == {"max_iter": 30, "tol": 1e-3}
    assert (config.n0, config.n, config.alpha, config.batch) == (100, 10_000, 0.001, 400)
    assert "sigma" not in config.noise.options  # taken from the checkpoint


def test_vanilla_solves_with_the_reference_solve_and_takes_no_warmup() -> None:
    config = CertifyConfig.model_validate({"certifier": "vanilla"})
    assert config.solver is not None and config.solver.options == {"max_iter": 30, "tol": 1e-3}
    assert config.warmup_solver is None and config.reference_solver is None
    with pytest.raises(OptionError, match="takes no warmup_solver"):
        CertifyConfig.model_validate({"certifier": "vanilla", "warmup_solver": "anderson"})


@pytest.mark.parametrize("name", list_certifiers())
def test_config_solver_defaults_equal_the_python_defaults(name: str) -> None:
    config = CertifyConfig.model_validate({"certifier": name})
    python = registry.certifiers.get(name).Options.model_validate(
        {"noise": {"name": "gaussian", "sigma": 0.25}}
    )
    for role in ("solver", "warmup_solver", "reference_solver"):
        spec = getattr(config, role)
        if role not in type(python).model_fields:
            assert spec is None
            continue
        built = build_component(role, spec)
        assert describe(built) == describe(getattr(python, role)), role


def test_precedence_defaults_file_flags_set(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('n = 500\nn0 = 50\nalpha = 0.01\n[solver]\nname = "naive"\nmax_iter = 3\n')
    config = CertifyConfig.from_sources(toml, {"n0": 20, "alpha": 0.05}, ["alpha=0.02"])
    assert config.n == 500  # file over default
    assert config.n0 == 20  # flag over file
    assert config.alpha == 0.02  # --set over flag
    assert config.batch == 400  # default
    assert config.solver is not None
    assert (config.solver.name, config.solver.options) == ("naive", {"max_iter": 3})


def test_yaml_file_is_read_like_toml(tmp_path: Path) -> None:
    yaml = tmp_path / "run.yaml"
    yaml.write_text("n: 300\nnoise:\n  name: gaussian\n  sigma: 0.5\nindices: 0-3\n")
    config = CertifyConfig.from_sources(yaml)
    assert config.n == 300 and config.noise.options == {"sigma": 0.5}
    assert config.indices == "0-3"


def test_switching_a_component_keeps_only_the_options_it_accepts() -> None:
    srs = CertifyConfig.from_sources(values={"solver": {"name": "broyden"}})
    assert srs.solver is not None
    assert (srs.solver.name, srs.solver.options) == ("broyden", {"max_iter": 1})
    vanilla = CertifyConfig.from_sources(values={"certifier": {"name": "vanilla"}})
    assert vanilla.certifier.options == {}  # reference_samples, chain_start dropped
    # options set in the same layer as the new name are never dropped silently
    with pytest.raises(OptionError, match="unknown option 'm'"):
        CertifyConfig.from_sources(sets=["solver.name=naive", "solver.m=3"])


def test_set_values_are_parsed_as_json_or_toml_scalars() -> None:
    layer = parse_assignments(["a=1", "b=1e-3", "c=true", "d=anderson", "e.f=[1, 2]", "g=0-9"])
    assert layer == {"a": 1, "b": 0.001, "c": True, "d": "anderson", "e": {"f": [1, 2]},
                     "g": "0-9"}
    with pytest.raises(OptionError, match="key=value"):
        parse_assignments(["n"])


@pytest.mark.parametrize(
    ("sets", "error", "word"),
    [
        (["solver.max_iters=2"], OptionError, "max_iters"),
        (["warmup_solver.tol=-1"], OptionError, "warmup_solver"),
        (["colour=red"], OptionError, "unknown config key 'colour'"),
        (["certifier=wizard"], UnknownNameError, "wizard"),
        (["certifier.n=5"], OptionError, "top-level"),
        (["max=0"], OptionError, "max"),
    ],
)
def test_validation_errors_name_the_key(sets: list[str], error: type, word: str) -> None:
    with pytest.raises(error, match=word):
        CertifyConfig.from_sources(sets=sets)


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="unsupported type"):
        load_config_file(tmp_path / "run.ini")
    bad = tmp_path / "bad.toml"
    bad.write_text("n = \n")
    with pytest.raises(OptionError, match="malformed"):
        load_config_file(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(OptionError, match="table of keys"):
        load_config_file(listed)


def test_index_selection() -> None:
    assert parse_indices("0-2,7, 9-10") == [0, 1, 2, 7, 9, 10]
    assert select_indices(None, 1, 5, 100) == [0, 1, 2, 3, 4]
    assert select_indices("10-30", 5, None, 100) == [10, 15, 20, 25, 30]
    assert select_indices([4, 2], 1, None, 5) == [4, 2]
    with pytest.raises(DataError, match="out of range"):
        select_indices("3-5", 1, None, 5)
    with pytest.raises(DataError, match="twice"):
        select_indices([1, 1], 1, None, 5)
    with pytest.raises(DataError, match="empty selection"):
        select_indices([], 1, None, 5)
    assert CertifyConfig.model_validate({"max": "all"}).max is None


def test_build_gives_the_pipeline_the_cli_uses(tiny_checkpoint: Path) -> None:
    config = CertifyConfig.from_sources(
        values={"checkpoint": str(tiny_checkpoint), "indices": "3-8", "shard": "1/2",
                "n": 100, "n0": 10, "certifier": {"reference_samples": 10}}
    )
    pipeline = config.build()
    assert isinstance(pipeline, CertifyPipeline)
    assert pipeline.selected == [3, 4, 5, 6, 7, 8] and pipeline.indices == [4, 6, 8]
    assert pipeline.config.noise.options == {"sigma": 0.25}  # from the checkpoint metadata
    assert pipeline.config.device == "cpu"
    assert pipeline.certifier.describe()["reference_samples"] == 10
    header = pipeline.header()
    assert header["checkpoint"]["sha256"] and header["shard"] == {"index": 1, "count": 2}
    record = next(pipeline.records([4]))
    assert record["index"] == 4 and record["bound"] == "sound"


def test_train_config_is_re_exported() -> None:
    from deqcert.train import TrainConfig as Original

    assert TrainConfig is Original


def test_max_defaults_to_five_unless_indices_are_given() -> None:
    assert CertifyConfig().max == 5
    assert CertifyConfig.from_sources(values={"indices": "0-9"}).max is None
    assert CertifyConfig.from_sources(values={"indices": "0-9", "max": 3}).max == 3
    assert CertifyConfig.model_validate({"indices": [1, 2]}).max is None
