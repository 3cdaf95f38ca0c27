"""Filling in what a config leaves to the machine and the checkpoint: device and noise level."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import OptionError


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
