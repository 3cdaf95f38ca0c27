"""Old import path of the run configuration (kept for one release): see :mod:`deqcert.run`.

:class:`CertifyConfig` now lives in :mod:`deqcert.run.config`, the layering
helpers in :mod:`deqcert.run.layers`, index selection in
:mod:`deqcert.data.selection`; :class:`TrainConfig` in :mod:`deqcert.train`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .data.selection import parse_indices, select_indices
from .run.config import CertifyConfig, default_layer
from .run.layers import (
    format_config_error,
    load_config_file,
    merge_layer,
    parse_assignments,
    parse_value,
    validate_config,
)
from .run.resolve import checkpoint_sigma, resolve_device
from .run.roles import key_kind
from .specs import ComponentSpec, accepted_options
from .specs import build as _build

if TYPE_CHECKING:
    from .train import TrainConfig


def build_component(key: str, spec: Any, **arguments: Any) -> Any:
    """Create the component of config key ``key`` (e.g. ``warmup_solver``) that ``spec`` names."""
    kind = key_kind(key) or key
    return _build(kind, spec, where=key, **arguments)


def __getattr__(name: str) -> Any:
    if name == "TrainConfig":
        from .train import TrainConfig

        return TrainConfig
    raise AttributeError(f"module 'deqcert.config' has no attribute {name!r}")


__all__ = [
    "CertifyConfig",
    "ComponentSpec",
    "TrainConfig",
    "accepted_options",
    "build_component",
    "checkpoint_sigma",
    "default_layer",
    "format_config_error",
    "load_config_file",
    "merge_layer",
    "parse_assignments",
    "parse_indices",
    "parse_value",
    "resolve_device",
    "select_indices",
    "validate_config",
]
