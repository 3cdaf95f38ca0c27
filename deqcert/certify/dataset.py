"""Certify (or predict) a dataset, one record per index, reproducibly.

Each index's noise comes from its own generator,
:func:`~deqcert.certify.streams.noise_generator` ``(seed, index, device)``, so
a record depends only on the certifier, the model, the input and those two
numbers: never on the order of the indices, on sharding or on where a run was
resumed; distinct ``(seed, index)`` pairs never share a stream in practice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal

import torch
from torch import Tensor

from ..errors import DataError, OptionError
from ..protocols import ABSTAIN, Certificate, Certifier, EquilibriumModel, Prediction
from .inputs import check_input, model_device
from .streams import noise_generator, noise_seed

__all__ = ["certify_dataset", "noise_generator", "noise_seed"]

Mode = Literal["certify", "predict"]


def certify_dataset(
    certifier: Certifier,
    model: EquilibriumModel,
    dataset: Any,
    indices: Iterable[int],
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    mode: Mode = "certify",
) -> Iterator[dict[str, Any]]:
    """Yield one record per dataset index, in the order of ``indices``.

    Args:
        certifier: a :class:`~deqcert.protocols.Certifier` (``vanilla``, ``serialized``, ...).
        model: the equilibrium model; it is not moved (put it on ``device`` first).
        dataset: anything indexable returning ``(x, label)`` with ``x`` of shape ``(C, H, W)``.
        indices: dataset indices to run.
        seed: run seed; index ``i`` uses ``noise_generator(seed, i, device)``.
        device: where inputs and generators live (default: the model's device).
        mode: ``"certify"`` (CERTIFY) or ``"predict"`` (PREDICT).

    Each record holds ``index``, ``label``, ``prediction``, ``radius``,
    ``correct`` (prediction equals label; abstentions are wrong), ``p_lower``,
    ``counts``, ``nfe``, ``seconds``, ``bound``, ``sound``, ``mode``, ``seed``,
    ``at_cap`` and ``radius_cap`` (whether the radius is the largest the bound
    can give with these ``n``, ``K``, ``alpha``, and that largest radius), the
    certificate's solver-health figures (``reference_unconverged``, and for
    serialized runs ``chain_residual_median`` / ``chain_residual_max``) and
    ``certificate`` (the full certificate, or prediction, as a dict).  In
    predict mode ``radius`` and ``p_lower`` are None and ``p_value`` is set.

    Raises:
        DataError: an index out of range, or an input that is not a finite
            float tensor of the model's input shape.
    """
    if mode not in ("certify", "predict"):
        raise OptionError(f"unknown mode {mode!r}. Accepted modes: certify, predict")
    dev = torch.device(device) if device is not None else model_device(model)
    return _records(certifier, model, dataset, indices, seed, dev, mode)


def _records(
    certifier: Certifier,
    model: EquilibriumModel,
    dataset: Any,
    indices: Iterable[int],
    seed: int,
    dev: torch.device,
    mode: Mode,
) -> Iterator[dict[str, Any]]:
    for index in indices:
        x, label = _load(dataset, int(index), model)
        x = x.to(dev)
        generator = noise_generator(seed, int(index), dev)
        if mode == "certify":
            yield _certificate_record(
                int(index), label, seed, certifier.certify(model, x, generator=generator)
            )
        else:
            yield _prediction_record(
                int(index), label, seed, certifier.predict(model, x, generator=generator)
            )


def _load(dataset: Any, index: int, model: Any) -> tuple[Tensor, int]:
    """``(x, label)`` at ``index``, checked: finite float tensor of the model's input shape."""
    try:
        size = len(dataset)
    except TypeError:
        size = None
    if index < 0 or (size is not None and index >= size):
        raise DataError(f"dataset index {index} is out of range (dataset has {size} items)")
    item = dataset[index]
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise DataError(
            f"dataset index {index}: expected an (x, label) pair, got {type(item).__name__}"
        )
    x, label = item
    check_input(model, x, where=f"dataset index {index}", ndim=3, check_device=False)
    return x, int(label)


def _certificate_record(index: int, label: int, seed: int, cert: Certificate) -> dict[str, Any]:
    return {
        "index": index,
        "label": label,
        "mode": "certify",
        "seed": seed,
        "prediction": cert.prediction,
        "radius": cert.radius,
        "correct": cert.prediction != ABSTAIN and cert.prediction == label,
        "p_lower": cert.p_lower,
        "counts": dict(cert.counts),
        "nfe": cert.nfe,
        "seconds": cert.seconds,
        "bound": cert.bound,
        "sound": cert.sound,
        "at_cap": cert.at_cap,
        "radius_cap": cert.radius_cap,
        **dict(cert.health),
        "certificate": cert.to_dict(),
    }


def _prediction_record(index: int, label: int, seed: int, pred: Prediction) -> dict[str, Any]:
    return {
        "index": index,
        "label": label,
        "mode": "predict",
        "seed": seed,
        "prediction": pred.prediction,
        "radius": None,
        "correct": pred.prediction != ABSTAIN and pred.prediction == label,
        "p_lower": None,
        "p_value": pred.p_value,
        "counts": dict(pred.counts),
        "nfe": pred.nfe,
        "seconds": pred.seconds,
        "bound": "binomial-test",
        "sound": bool(pred.extra.get("sound", False)),
        **(
            {"reference_unconverged": pred.extra["reference_unconverged"]}
            if "reference_unconverged" in pred.extra
            else {}
        ),
        "certificate": pred.to_dict(),
    }
