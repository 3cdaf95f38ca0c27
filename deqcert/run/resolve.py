"""Filling in what a config leaves to the machine and the checkpoint: device and noise level."""

from __future__ import annotations

import math
import os
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


def resolve_device(device: str, environ: Mapping[str, str] | None = None) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; refuse unavailable devices.

    With one process per GPU (``torchrun``, or any launcher that sets
    ``LOCAL_RANK``), ``auto`` and a bare ``cuda`` become ``cuda:LOCAL_RANK``, so
    that every rank certifies on its own card; an explicit ``cuda:N`` is kept.
    ``environ`` defaults to ``os.environ``.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"device '{device}' is not available on this machine; accepted: cpu")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise OptionError(f"device '{device}' is not available on this machine; accepted: cpu")
    if device == "cuda":
        rank = local_rank(os.environ if environ is None else environ)
        if rank is not None:
            count = torch.cuda.device_count()
            if rank >= count:
                raise OptionError(
                    f"environment LOCAL_RANK={rank}, but this machine has {count} CUDA "
                    f"device(s); accepted: 0 to {count - 1}"
                )
            device = f"cuda:{rank}"
    return device


def local_rank(environ: Mapping[str, str]) -> int | None:
    """The launcher's ``LOCAL_RANK`` (a non-negative integer), or None when unset."""
    text = environ.get("LOCAL_RANK")
    if text is None or text == "":
        return None
    try:
        rank = int(text)
    except ValueError:
        rank = -1
    if rank < 0:
        raise OptionError(f"environment LOCAL_RANK={text!r}: expected a non-negative integer")
    return rank


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
