"""Pydantic configs for whole pipelines: what the CLI builds from flags, and scripts use directly.

:class:`CertifyConfig` describes one certification (or prediction) run:
checkpoint, dataset and index selection, certifier, solvers, noise, sample
sizes, device, seed and output.  Component specs are written flat, the name
next to its options (``{"name": "anderson", "max_iter": 1}``, or just
``"anderson"``), and every component validates its own options when the config
is validated or built.  :meth:`CertifyConfig.build` returns a ready
:class:`~deqcert.executors.pipeline.CertifyPipeline`, so a script gets exactly
what ``deqcert certify`` gets.

Configs are layered: defaults < config file (TOML or YAML) < explicit values
(the CLI's flags) < ``--set key=value`` overrides (:meth:`CertifyConfig.from_sources`).
When a layer names a different component than the layer below, only the
options the new component accepts are carried over: ``--solver broyden`` on
the serialized default keeps ``max_iter=1``.

:class:`TrainConfig` (from :mod:`deqcert.train`) is re-exported here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .data.selection import parse_indices, select_indices
from .errors import DeqcertError, OptionError
from .registry import REGISTRIES
from .specs import ComponentSpec

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

if TYPE_CHECKING:
    from .executors.pipeline import CertifyPipeline
    from .train import TrainConfig

COMPONENT_KINDS: dict[str, str] = {
    "dataset": "dataset",
    "certifier": "certifier",
    "noise": "noise",
    "solver": "solver",
    "warmup_solver": "solver",
    "reference_solver": "solver",
    "executor": "executor",
}
"""Config keys holding a component spec, and the registry each name is looked up in."""

SOLVER_ROLES = ("solver", "warmup_solver", "reference_solver")


def _default_dataset() -> ComponentSpec:
    return ComponentSpec.model_validate({"name": "mnist-sample", "split": "test"})


def _default_certifier() -> ComponentSpec:
    return ComponentSpec.model_validate(
        {"name": "serialized", "reference_samples": 200, "chain_start": "anchor"}
    )


class CertifyConfig(BaseModel):
    """One certification or prediction run over a selection of a dataset.

    The defaults certify the first 5 test images of the bundled MNIST sample
    with the bundled checkpoint and serialized randomized smoothing (SRS-1A:
    one Anderson step per sample, a 10-step warm-up, the reference solve
    checked on ``K = 200`` random samples out of ``n = 2000``), the noise level
    taken from the checkpoint.
    """

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field("default", description="checkpoint path, or 'default' (bundled)")
    dataset: ComponentSpec = Field(default_factory=_default_dataset)
    indices: str | list[int] | None = Field(
        None, description="dataset indices, e.g. '0-9,20' or a list; default all"
    )
    skip: int = Field(1, ge=1, description="keep every skip-th selected index")
    max: int | None = Field(
        5,
        ge=1,
        description="at most this many inputs ('all': no limit); default 5, or all "
        "of the given indices",
    )
    certifier: ComponentSpec = Field(default_factory=_default_certifier)
    solver: ComponentSpec | None = Field(None, description="default: the certifier's")
    warmup_solver: ComponentSpec | None = None
    reference_solver: ComponentSpec | None = None
    noise: ComponentSpec = Field(
        default_factory=lambda: ComponentSpec(name="gaussian"),
        description="sigma defaults to the checkpoint's training noise",
    )
    n0: int = Field(100, ge=1, description="selection samples")
    n: int = Field(2000, ge=1, description="estimation samples")
    alpha: float = Field(0.001, gt=0, lt=1, description="failure probability")
    batch: int = Field(400, ge=1, description="noisy samples per forward batch")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    seed: int = Field(0, ge=0, description="noise for input i is seeded from (seed, i)")
    mode: Literal["certify", "predict"] = "certify"
    out: str | None = Field(None, description="results file; default results/<mode>-<time>")
    format: Literal["jsonl", "tsv"] | None = Field(None, description="default: from out's suffix")
    shard: str | None = Field(None, description="'i/n': this run's share of the selection")
    executor: ComponentSpec = Field(default_factory=lambda: ComponentSpec(name="local"))

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise OptionError(format_config_error(exc, type(self))) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> CertifyConfig:
        """Validate ``obj``; mistakes raise :class:`~deqcert.errors.OptionError` (one line)."""
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise OptionError(format_config_error(exc, cls)) from None

    # -- structural validation ---------------------------------------------
    @field_validator("max", mode="before")
    @classmethod
    def _max_all(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("all", "none"):
            return None
        return value

    @field_validator("indices", mode="before")
    @classmethod
    def _check_indices(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        if isinstance(value, str):
            parse_indices(value)
        return value

    @field_validator("shard")
    @classmethod
    def _check_shard(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from .executors.sharding import Shard

        return str(Shard.parse(value))

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value == "auto":
            return value
        import torch

        try:
            torch.device(value)
        except (RuntimeError, ValueError):
            raise ValueError(
                f"unknown device {value!r}; accepted: auto, cpu, cuda, cuda:N, mps"
            ) from None
        return value

    @model_validator(mode="after")
    def _explicit_indices_mean_all_of_them(self) -> CertifyConfig:
        if "indices" in self.model_fields_set and "max" not in self.model_fields_set:
            self.max = None
        return self

    @model_validator(mode="after")
    def _fill_and_check_components(self) -> CertifyConfig:
        for key in ("dataset", "certifier", "noise"):
            registry_for(key).get(getattr(self, key).name)  # unknown name -> error
        accepted = accepted_options("certifier", self.certifier.name)
        for role, spec in default_solver_specs(self.certifier.name).items():
            if getattr(self, role) is None and spec is not None:
                setattr(self, role, ComponentSpec(**spec))
        for role in SOLVER_ROLES:
            spec = getattr(self, role)
            if spec is None:
                continue
            if accepted is not None and role not in accepted:
                raise OptionError(
                    f"certifier '{self.certifier.name}' takes no {role}; remove it "
                    f"(it takes: {', '.join(sorted(accepted))})"
                )
            build_component(role, spec)  # validates the solver's options
        clash = sorted(set(self.certifier.options) & set(CERTIFIER_ARGUMENTS))
        if clash:
            raise OptionError(
                f"set {', '.join(clash)} with the top-level key(s), not under certifier"
            )
        return self

    # -- layering ----------------------------------------------------------
    @classmethod
    def from_sources(
        cls,
        file: str | Path | None = None,
        values: Mapping[str, Any] | None = None,
        sets: Iterable[str] = (),
    ) -> CertifyConfig:
        """Defaults < ``file`` (TOML/YAML) < ``values`` (e.g. CLI flags) < ``sets`` ("a.b=1")."""
        layers = [
            load_config_file(file) if file is not None else {},
            dict(values or {}),
            parse_assignments(sets),
        ]
        certifier: str | None = None  # the last layer naming one decides the solver defaults
        for layer in layers:
            spec = layer.get("certifier")
            if isinstance(spec, str):
                certifier = spec
            elif isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
                certifier = spec["name"]
        merged = default_layer(certifier)
        for layer in layers:
            merged = merge_layer(merged, layer)
        return validate_config(cls, merged)

    # -- resolution and building -------------------------------------------
    def resolve(self, metadata: Mapping[str, Any] | None = None) -> CertifyConfig:
        """The effective config: checkpoint path, device and noise level filled in.

        ``metadata`` is the checkpoint's (read from the file when omitted).
        """
        from .checkpoint import checkpoint_metadata

        path = self.checkpoint_path()
        meta = checkpoint_metadata(path) if metadata is None else metadata
        noise = self.noise
        noise_fields = accepted_options("noise", noise.name) or set()
        if "sigma" in noise_fields and "sigma" not in noise.options:
            sigma = checkpoint_sigma(meta)
            if sigma is None:
                raise OptionError(
                    f"no noise level given and checkpoint {path} records none; pass --sigma"
                )
            noise = noise.with_options(sigma=sigma)
        return self.model_copy(
            update={
                "checkpoint": str(path),
                "device": resolve_device(self.device),
                "noise": noise,
            }
        )

    def checkpoint_path(self) -> Path:
        """The checkpoint file (the bundled one for ``"default"``)."""
        from .checkpoint import default_checkpoint

        return default_checkpoint() if self.checkpoint == "default" else Path(self.checkpoint)

    def build(self, *, validate_inputs: bool = True) -> CertifyPipeline:
        """Validate everything and build the pipeline (dataset, model, solvers, noise, certifier).

        With ``validate_inputs`` every selected input is checked (finite, and
        of a shape the model accepts) before anything is written.
        """
        from .executors.pipeline import build_pipeline

        return build_pipeline(self, validate_inputs=validate_inputs)

    def effective(self) -> dict[str, Any]:
        """JSON-ready dict of this config (what results headers record)."""
        return self.model_dump(mode="json")


CERTIFIER_ARGUMENTS = ("noise", *SOLVER_ROLES, "n0", "n", "alpha", "batch_size")
"""Certifier constructor arguments the config fills from its top-level keys."""


# -- registry helpers -----------------------------------------------------
def registry_for(key: str) -> Any:
    """The registry holding the components of config key ``key``."""
    kind = COMPONENT_KINDS[key]
    if kind == "executor":
        from .executors import EXECUTORS

        return EXECUTORS
    return REGISTRIES[kind]


def accepted_options(key: str, name: str) -> set[str] | None:
    """Option names component ``name`` of config key ``key`` accepts (None if unknown)."""
    try:
        cls = registry_for(key).get(name)
    except DeqcertError:
        return None
    options = getattr(cls, "Options", None)
    fields = getattr(options, "model_fields", None)
    extra = "split" if key == "dataset" else None
    if fields is None:
        return None
    return set(fields) | ({extra} if extra else set())


def build_component(key: str, spec: ComponentSpec, **arguments: Any) -> Any:
    """Create the component ``spec`` describes (its options plus ``arguments``).

    An option error names the config key, e.g. ``warmup_solver anderson: ...``.
    """
    try:
        return registry_for(key).create(spec.name, **spec.options, **arguments)
    except OptionError as exc:
        raise OptionError(f"{key} {exc}") from None


def _declared_solver_specs(options: Any) -> dict[str, dict[str, Any] | None]:
    """The solver roles an options model takes, with the default spec it declares (or None).

    :func:`deqcert.certify._sampling.solver_field` records a default's spec in the
    option's schema (``default_spec``).
    """
    fields = getattr(options, "model_fields", None) or {}
    out: dict[str, dict[str, Any] | None] = {}
    for role in SOLVER_ROLES:
        if role in fields:
            extra = fields[role].json_schema_extra
            spec = extra.get("default_spec") if isinstance(extra, dict) else None
            out[role] = dict(spec) if isinstance(spec, dict) else None
    return out


def default_solver_specs(certifier: str) -> dict[str, dict[str, Any] | None]:
    """Default solver specs for the roles ``certifier`` takes: the same as its Python defaults.

    A role whose option declares no default spec (a third-party certifier) takes
    the serialized certifier's default if the certifier has a reference solver,
    else the vanilla certifier's (the reference solve itself).
    """
    from .certify.serialized import SerializedOptions
    from .certify.vanilla import VanillaOptions

    try:
        options = getattr(registry_for("certifier").get(certifier), "Options", None)
    except DeqcertError:
        options = None
    own = _declared_solver_specs(options) or {"solver": None}
    base = SerializedOptions if "reference_solver" in own else VanillaOptions
    fallback = _declared_solver_specs(base)
    return {role: spec or fallback.get(role) for role, spec in own.items()}


def default_layer(certifier: str | None = None) -> dict[str, Any]:
    """The default component specs as a layer dict, with the solver defaults of ``certifier``.

    Plain values are left to the model's own defaults, so that
    ``model_fields_set`` tells which keys a user set.
    """
    defaults = CertifyConfig.model_construct()
    layer: dict[str, Any] = {
        key: getattr(defaults, key).model_dump(mode="json")
        for key in ("dataset", "certifier", "noise", "executor")
    }
    if certifier is not None and certifier != layer["certifier"]["name"]:
        layer["certifier"] = {"name": certifier}
    for role, spec in default_solver_specs(layer["certifier"]["name"]).items():
        layer[role] = spec
    return layer


# -- files and overrides ---------------------------------------------------
def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) config file into a dict."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise OptionError(f"config file {path}: unsupported type '{suffix}'; use .toml or .yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OptionError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError(f"config file {path} is unreadable: {exc}") from None
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # both parsers raise their own error types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OptionError(f"config file {path} is malformed: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise OptionError(
            f"config file {path} must hold a table of keys, not {type(data).__name__}"
        )
    return data


def parse_value(text: str) -> Any:
    """A ``--set`` value: JSON (``1e-3``, ``true``, ``[1, 2]``), a TOML scalar, or a string."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """Turn ``["solver.max_iter=2", "n=500"]`` into a nested layer dict."""
    layer: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise OptionError(f"--set {item!r}: expected key=value, e.g. solver.max_iter=2")
        node = layer
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise OptionError(f"--set {item!r}: '{part}' is already set to a value")
            node = child
        node[parts[-1]] = parse_value(raw.strip())
    return layer


def merge_layer(
    lower: Mapping[str, Any], upper: Mapping[str, Any], *, components: bool = True
) -> dict[str, Any]:
    """``upper`` over ``lower``, recursively.

    With ``components`` the component specs of :class:`CertifyConfig` merge
    with the carry-over rule (see the module docstring).
    """
    out = dict(lower)
    for key, value in upper.items():
        if components and key in COMPONENT_KINDS:
            out[key] = _merge_component(key, lower.get(key), value)
        elif isinstance(value, Mapping) and isinstance(lower.get(key), Mapping):
            out[key] = merge_layer(lower[key], value, components=False)
        else:
            out[key] = value
    return out


def _merge_component(key: str, lower: Any, upper: Any) -> Any:
    if upper is None or not isinstance(upper, Mapping | str):
        return upper  # None disables an optional role; anything else fails validation
    upper = {"name": upper} if isinstance(upper, str) else dict(upper)
    if not isinstance(lower, Mapping | str):
        return upper
    lower = {"name": lower} if isinstance(lower, str) else dict(lower)
    name = upper.get("name", lower.get("name"))
    if name == lower.get("name"):
        return {**lower, **upper}
    accepted = accepted_options(key, str(name)) or set()
    kept = {k: v for k, v in lower.items() if k != "name" and k in accepted}
    return {**kept, **upper}


def validate_config(model: type[BaseModel], data: Mapping[str, Any]) -> Any:
    """``model.model_validate(data)`` with errors turned into one-line :class:`OptionError` s."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise OptionError(format_config_error(exc, model)) from None


def format_config_error(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line naming each offending config key (and the accepted keys for unknown ones)."""
    parts: list[str] = []
    unknown = False
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, DeqcertError):
            parts.append(str(cause))
            continue
        loc = ".".join(str(p) for p in err.get("loc", ()) if not str(p).startswith("function-"))
        if err.get("type") == "extra_forbidden":
            unknown = True
            parts.append(f"unknown config key '{loc}'")
        else:
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            parts.append(f"config key '{loc}': {msg} (got {err.get('input')!r})")
    text = "; ".join(dict.fromkeys(parts))
    if unknown:
        text += ". Accepted keys: " + ", ".join(model.model_fields)
    return text


# -- resolution helpers -------------------------------------------------------
def checkpoint_sigma(metadata: Mapping[str, Any]) -> float | None:
    """The noise level a checkpoint was trained with, if it records one."""
    candidates = [metadata.get("sigma")]
    for key in ("train_config", "training", "config"):
        section = metadata.get(key)
        if isinstance(section, Mapping):
            candidates.append(section.get("sigma"))
            noise = section.get("noise")
            if isinstance(noise, Mapping):
                candidates.append(noise.get("sigma"))
    for value in candidates:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if math.isfinite(value) and value > 0:
                return float(value)
    return None


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; refuse unavailable devices."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"device '{device}' is not available on this machine; accepted: cpu")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise OptionError(f"device '{device}' is not available on this machine; accepted: cpu")
    return device


def __getattr__(name: str) -> Any:
    if name == "TrainConfig":
        from .train import TrainConfig

        return TrainConfig
    raise AttributeError(f"module 'deqcert.config' has no attribute {name!r}")


__all__ = [
    "CertifyConfig",
    "ComponentSpec",
    "TrainConfig",
    "load_config_file",
    "merge_layer",
    "parse_assignments",
    "parse_indices",
    "select_indices",
]
