"""The schema of a certification (or prediction) run, and its two doors: layers in, pipeline out.

:class:`CertifyConfig` names the checkpoint, the dataset and index selection,
the certifier with its noise and solvers, the sample sizes, device, seed and
output.  Component specs are flat (``{"name": "anderson", "max_iter": 1}`` or
just ``"anderson"``, see :mod:`deqcert.specs`).  Besides the keys declared
here, a config takes one key per solver *role* of its certifier
(``solver``, ``warmup_solver``, ``reference_solver``, or a plugin's own;
see :mod:`deqcert.run.roles`), defaulting to the certifier's own defaults.

:meth:`CertifyConfig.from_sources` builds one from layers (defaults < config
file < flags < ``--set``, see :mod:`deqcert.run.layers`);
:meth:`CertifyConfig.build` returns the ready
:class:`~deqcert.run.pipeline.CertifyPipeline`, exactly what ``deqcert
certify`` runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from .. import defaults
from ..checkpoint import resolve_checkpoint
from ..data.selection import parse_ranges
from ..errors import OptionError
from ..options import refuse_bool_numbers, validate_options
from ..specs import ComponentSlot, ComponentSpec, component_class, parse_spec
from . import layers, roles
from .pipeline import CertifyPipeline, build_pipeline
from .resolve import checkpoint_sigma, resolve_device
from .sharding import Shard


def _default_dataset() -> ComponentSpec:
    return ComponentSpec.model_validate({"name": "mnist-sample", "split": "test"})


def _default_certifier() -> ComponentSpec:
    return ComponentSpec.model_validate({"name": "serialized"})  # its own defaults


class CertifyConfig(BaseModel):
    """One certification or prediction run over a selection of a dataset.

    The defaults certify the first 5 test images of the bundled MNIST sample
    with the bundled checkpoint and serialized randomized smoothing with the
    certifier's own defaults (SRS-1A: one Anderson step per sample, the
    chains started at the clean input's fixed point, the 30-step reference
    solve checked on ``K = 400`` random samples out of ``n = 10,000``), the
    noise level taken from the checkpoint.  The sample sizes are those of
    :mod:`deqcert.defaults`, the same as ``create_certifier``'s.
    """

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    _given_roles: set[str] = PrivateAttr(default_factory=set)

    checkpoint: str = Field(
        "default",
        description="Checkpoint (.safetensors), 'default' or a bundled one's name "
        "(e.g. mdeq-small-sigma0.5).",
    )
    model: str | None = Field(
        None,
        description="Your own model instead of a checkpoint: FILE.py:FACTORY or "
        "package.module:FACTORY (FACTORY() returns the model).",
    )
    weights: str | None = Field(
        None, description="Weights for --model: .safetensors, or a .pt/.pth state dict."
    )
    trust_solver: bool = Field(
        False,
        description="Run a user-supplied reference/warm-up solver that failed the solver "
        "probe; its records say sound: false.",
    )
    dataset: ComponentSpec = Field(
        default_factory=_default_dataset, description="Dataset (see 'deqcert list datasets')."
    )
    indices: str | list[int] | None = Field(
        None, description="Dataset indices, e.g. 0-99,200 (default: all)."
    )
    skip: int = Field(1, ge=1, description="Keep every SKIP-th selected index.")
    max: int | None = Field(
        5, ge=1, description="At most MAX inputs or 'all' (default 5; all of --indices)."
    )
    certifier: ComponentSpec = Field(
        default_factory=_default_certifier, description="Certifier: vanilla | serialized | ..."
    )
    noise: ComponentSpec = Field(
        default_factory=lambda: ComponentSpec(name="gaussian"),
        description="Noise: gaussian | laplace | uniform (level: the checkpoint's by default).",
    )
    n0: int = Field(defaults.N0, ge=1, description="Selection samples.")
    n: int = Field(defaults.N, ge=1, description="Estimation samples.")
    alpha: float = Field(defaults.ALPHA, gt=0, lt=1, description="Failure probability.")
    batch: int = Field(defaults.BATCH, ge=1, description="Noisy samples per batch.")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N.")
    seed: int = Field(0, ge=0, description="Run seed: input i's noise comes from (seed, i).")
    mode: Literal["certify", "predict"] = "certify"
    out: str | None = Field(
        None, description="Results file (resumed if it exists); '{shard}' becomes i-of-n."
    )
    format: Literal["jsonl", "tsv"] | None = Field(
        None, description="jsonl | tsv (default: from --out)."
    )
    shard: str | None = Field(
        None,
        description="i/n: certify every n-th selected input from position i "
        "(default from RANK/WORLD_SIZE or SLURM_ARRAY_TASK_ID/COUNT).",
    )
    executor: ComponentSpec = Field(
        default_factory=lambda: ComponentSpec(name="local"), description="Executor: local | ray."
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise OptionError(layers.format_config_error(exc, type(self))) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> CertifyConfig:
        """Validate ``obj``; mistakes raise :class:`~deqcert.errors.OptionError` (one line)."""
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise OptionError(layers.format_config_error(exc, cls)) from None

    # -- structural validation ---------------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        return refuse_bool_numbers(cls, data)

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
            parse_ranges(value)  # checked, not expanded: "0-300000000" builds no list
        return value

    @field_validator("shard")
    @classmethod
    def _check_shard(cls, value: str | None) -> str | None:
        return None if value is None else str(Shard.parse(value))

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
    def _model_or_checkpoint(self) -> CertifyConfig:
        if self.model is None:
            if self.weights is not None:
                raise OptionError("--weights needs --model FILE.py:FACTORY (the model to load)")
            return self
        if "checkpoint" in self.model_fields_set and self.checkpoint not in ("default", "none"):
            raise OptionError("give either --checkpoint or --model (with --weights), not both")
        return self

    @model_validator(mode="after")
    def _check_components(self) -> CertifyConfig:
        for key in ("dataset", "certifier", "noise", "executor"):
            component_class(key, getattr(self, key).name)  # unknown name -> error
        certifier = self.certifier.name
        taken = roles.solver_roles(certifier)
        extras = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        for key in [k for k in extras if k not in taken]:
            raise OptionError(self._unknown_key(key, taken))
        self._given_roles = {role for role in taken if role in extras}
        for role, slot in taken.items():
            extras[role] = _role_spec(role, slot, extras.get(role, slot.default_spec))
        clash = sorted(set(self.certifier.options) & set(self.certifier_argument_names()))
        if clash:
            raise OptionError(
                f"set {', '.join(clash)} with the top-level key(s), not under certifier"
            )
        return self

    def _unknown_key(self, key: str, taken: Mapping[str, ComponentSlot]) -> str:
        certifier = self.certifier.name
        if key.endswith("solver") or key in roles.known_roles():
            takes = ", ".join(taken) or "no solver"
            return f"certifier '{certifier}' takes no {key}; remove it (its solvers: {takes})"
        accepted = [*type(self).model_fields, *taken]
        return f"unknown config key '{key}'. Accepted keys: {', '.join(accepted)}"

    # -- roles -----------------------------------------------------------------
    def solver_specs(self) -> dict[str, ComponentSpec | None]:
        """The solver spec of each role the certifier takes (None: no solver / its own default)."""
        extras = self.__pydantic_extra__ or {}
        return {role: extras.get(role) for role in roles.solver_roles(self.certifier.name)}

    def certifier_argument_names(self) -> list[str]:
        """Certifier options this config fills from its own keys (noise, solvers, sizes)."""
        return ["noise", *roles.solver_roles(self.certifier.name), *roles.SHARED_ARGUMENTS.values()]

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # type: ignore[misc]
        except AttributeError:
            if name.endswith("solver") and not name.startswith("_"):
                return None  # a role this certifier does not take
            raise

    # -- layering ----------------------------------------------------------------
    @classmethod
    def from_sources(
        cls,
        file: str | Path | None = None,
        values: Mapping[str, Any] | None = None,
        sets: Iterable[str] = (),
    ) -> CertifyConfig:
        """Defaults < ``file`` (TOML/YAML) < ``values`` (e.g. CLI flags) < ``sets`` ("a.b=1")."""
        sources = layers.source_layers(file, values, sets)
        certifier = layers.last_named(sources, "certifier")
        base = default_layer(certifier)
        kinds = roles.component_keys(base["certifier"]["name"] if certifier is None else certifier)
        config = layers.validate_config(cls, layers.merge_layers([base, *sources], kinds))
        config._given_roles = {key for key in kinds if any(key in layer for layer in sources)}
        return config

    def role_given(self, role: str) -> bool:
        """Whether the user set solver ``role`` (rather than leaving the certifier's default)."""
        return role in self._given_roles

    # -- resolution and building ---------------------------------------------------
    def resolve(self, metadata: Mapping[str, Any]) -> CertifyConfig:
        """The effective config: checkpoint path, device and noise level filled in.

        ``metadata`` is the checkpoint's (its training noise level fills in a
        missing ``sigma``).
        """
        path = self.checkpoint_path() or self.model
        noise = self.noise
        noise_fields = getattr(component_class("noise", noise.name), "Options", None)
        if "sigma" in getattr(noise_fields, "model_fields", {}) and "sigma" not in noise.options:
            sigma = checkpoint_sigma(metadata)
            if sigma is None:
                raise OptionError(
                    f"no noise level given and {'model' if self.model else 'checkpoint'} "
                    f"{path} records none; pass --sigma"
                )
            noise = noise.with_options(sigma=sigma)
        checkpoint = "none" if self.model else str(path)
        return self.model_copy(
            update={"checkpoint": checkpoint, "device": resolve_device(self.device), "noise": noise}
        )

    def checkpoint_path(self) -> Path | None:
        """The checkpoint file (a bundled one for ``default`` or a bundled file's short name;
        None with ``model``)."""
        if self.model is not None:
            return None
        return resolve_checkpoint(self.checkpoint)

    def build(self, *, validate_inputs: bool = True) -> CertifyPipeline:
        """Validate everything and build the pipeline (dataset, model, solvers, noise, certifier).

        With ``validate_inputs`` every selected input is checked (finite, and
        of a shape the model accepts) before anything is written.
        """
        return build_pipeline(self, validate_inputs=validate_inputs)

    def effective(self) -> dict[str, Any]:
        """JSON-ready dict of this config (what results headers record)."""
        return self.model_dump(mode="json")


def _role_spec(role: str, slot: ComponentSlot, value: Any) -> ComponentSpec | None:
    """A role's value as a checked spec; None keeps "no solver" (optional roles) or the default."""
    if value is None:
        if slot.optional or slot.default_spec is None:
            return None
        value = slot.default_spec
    spec = parse_spec(value, f"{role}")
    options = getattr(component_class("solver", spec.name), "Options", None)
    if options is not None:  # check the options now; the solver itself is built once, later
        try:
            validate_options(options, spec.options, spec.name)
        except OptionError as exc:
            raise OptionError(f"{role} {exc}") from None
    return spec


def default_layer(certifier: str | None = None) -> dict[str, Any]:
    """The default component specs as a layer, with the solver defaults of ``certifier``.

    Plain values are left to the model's own defaults, so that
    ``model_fields_set`` tells which keys a user set.
    """
    base = CertifyConfig.model_construct()
    layer: dict[str, Any] = {
        key: getattr(base, key).model_dump(mode="json") for key in roles.COMPONENT_KEYS
    }
    if certifier is not None and certifier != layer["certifier"]["name"]:
        layer["certifier"] = {"name": certifier}
    for role, slot in roles.solver_roles(layer["certifier"]["name"]).items():
        layer[role] = slot.default_spec
    return layer
