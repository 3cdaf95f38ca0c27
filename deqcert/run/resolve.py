"""Filling in what a config leaves to the machine and the checkpoint: device and noise level."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
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


def run_notes(config: Any, metadata: Mapping[str, Any], certifier: Any) -> list[str]:
    """What a user should know before a valid run starts (warnings, not errors).

    * certifying at a noise level other than the one the checkpoint was
      trained with (valid, but usually far less accurate);
    * PREDICT of a certifier that marks it heuristic (``predict_note``).
    """
    notes = []
    sigma = getattr(config.noise, "options", {}).get("sigma")
    trained = checkpoint_sigma(metadata)
    if trained is not None and isinstance(sigma, int | float) and abs(sigma - trained) > 1e-9:
        from ..checkpoint import bundled_checkpoints

        others = ", ".join(name for name in bundled_checkpoints() if name != "default")
        notes.append(
            f"certifying at sigma={sigma:g} but checkpoint {Path(config.checkpoint).name} was "
            f"trained at sigma={trained:g}; the certificate is valid, but a model trained at "
            f"another noise level is usually much less accurate (bundled: {others})"
        )
    note = getattr(certifier, "predict_note", None)
    if config.mode == "predict" and note:
        notes.append(f"{config.certifier.name} PREDICT is {note}")
    return notes
