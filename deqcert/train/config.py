"""The training config: model, data, noise, optimiser, backward pass, solvers, evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import OptionError
from ..models.base import DEFAULT_SOLVER
from ..options import format_validation_error, refuse_bool_numbers
from ..protocols import FixedPointSolver
from ..specs import ComponentSpec
from ..specs import build as build_component


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        return refuse_bool_numbers(cls, data)


class SolverSpec(ComponentSpec):
    """A registered solver, options next to its name (``{"name": "anderson", "max_iter": 20}``).

    The older nested form ``{"name": ..., "options": {...}}`` is still read, with a
    deprecation warning.
    """

    name: str = Field("anderson", min_length=1)

    def build(self) -> FixedPointSolver:
        return build_component("solver", self)  # type: ignore[no-any-return]


def reference_solver_spec() -> SolverSpec:
    """The reference solve (Anderson, rel tol 1e-3, at most 30 steps, m=5)."""
    return SolverSpec.model_validate(dict(DEFAULT_SOLVER))


class EvalConfig(_Strict):
    """Evaluation at the end of training, on the dataset's test split."""

    solver: SolverSpec = Field(default_factory=reference_solver_spec)
    batch_size: int = Field(500, ge=1)
    limit: int | None = Field(None, ge=1, description="evaluate on the first N test images")
    split: str = "test"


class TrainConfig(_Strict):
    """Everything that determines a training run (and so the checkpoint it produces)."""

    model: str = Field("mdeq", description="Model name (see 'deqcert list models').")
    model_options: dict[str, Any] = Field(
        default_factory=dict,
        description="options of the model (input shape and classes come from the dataset)",
    )
    dataset: str = Field(
        "mnist-sample", description="Training dataset name (see 'deqcert list datasets')."
    )
    dataset_options: dict[str, Any] = Field(
        default_factory=dict, description="options of the dataset"
    )
    sigma: float = Field(
        0.25, ge=0, description="Std of the Gaussian noise added to training inputs."
    )
    shift: int = Field(0, ge=0, description="random translation by up to N pixels (zero fill)")
    epochs: int = Field(10, ge=1, description="Training epochs.")
    batch_size: int = Field(64, ge=1, description="images per optimiser step")
    lr: float = Field(2e-3, gt=0, description="learning rate (peak, under the cosine schedule)")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="optimiser")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    weight_decay: float = Field(0.0, ge=0, description="weight decay of the optimiser")
    schedule: Literal["constant", "cosine"] = Field("cosine", description="learning-rate schedule")
    grad_clip: float | None = Field(5.0, gt=0, description="max gradient norm (None: off)")
    backward: Literal["implicit", "jfb"] = Field(
        "implicit", description="gradient: implicit (adjoint fixed point) or Jacobian-free (jfb)"
    )
    backward_solver: SolverSpec = Field(
        default_factory=lambda: SolverSpec.model_validate(
            {"name": "anderson", "max_iter": 20, "tol": 1e-3, "stop_mode": "rel"}
        ),
        description="solver of the adjoint fixed point (implicit backward)",
    )
    unroll_steps: int = Field(1, ge=1, description="steps backpropagated through (jfb)")
    jac_reg: float = Field(0.0, ge=0, description="weight of the Jacobian penalty")
    solver: SolverSpec = Field(
        default_factory=reference_solver_spec, description="forward solver during training"
    )
    seed: int = Field(0, description="Seed (model initialisation, data order, noise).")
    num_threads: int | None = Field(None, ge=1, description="torch threads (None: torch's default)")
    device: str = Field("cpu", description="cpu | cuda | cuda:N.")
    max_steps: int | None = Field(None, ge=1, description="stop after N optimiser steps")
    train_limit: int | None = Field(None, ge=1, description="train on the first N images")
    eval: EvalConfig = Field(default_factory=lambda: EvalConfig.model_validate({}))

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Load a TOML config (see ``configs/``)."""
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]

        path = Path(path)
        if not path.is_file():
            raise OptionError(f"training config not found: {path}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise OptionError(f"{path}: invalid TOML: {exc}") from None
        return cls.parse(data, owner=str(path))

    @classmethod
    def parse(cls, data: dict[str, Any], owner: str = "training config") -> TrainConfig:
        """Validate a plain dict, raising :class:`OptionError` on mistakes."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise OptionError(format_validation_error(exc, owner, cls)) from None
