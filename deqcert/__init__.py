"""deqcert: certified robustness of Deep Equilibrium Models.

The documented Python API is re-exported here.  Heavy submodules are imported
lazily, on first use of a name: ``import deqcert`` does not import torch.
"""

import importlib as _importlib
from typing import Any as _Any

from .errors import (
    CheckpointError,
    DataError,
    DeqcertError,
    DeqcertWarning,
    OptionError,
    PluginLoadError,
    RegistrationError,
    ResultsError,
    UnknownNameError,
)
from .protocols import (
    ABSTAIN,
    Certificate,
    Certifier,
    EquilibriumModel,
    FixedPointSolver,
    NoiseSampler,
    Prediction,
    SolverResult,
)
from .registry import (
    create_certifier,
    create_dataset,
    create_model,
    create_noise,
    create_solver,
    list_certifiers,
    list_datasets,
    list_models,
    list_noises,
    list_solvers,
)

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "save_checkpoint": "deqcert.checkpoint",
    "load_checkpoint": "deqcert.checkpoint",
    "checkpoint_metadata": "deqcert.checkpoint",
    "default_checkpoint": "deqcert.checkpoint",
    "train": "deqcert.train",
    "TrainConfig": "deqcert.train",
    "CertifyConfig": "deqcert.run.config",
    "certify_dataset": "deqcert.certify.dataset",
    "adapt": "deqcert.adapters",
}


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'deqcert' has no attribute {name!r}")
    return getattr(_importlib.import_module(module), name)


def __dir__() -> list[str]:
    """The public API (lazy names included), not the module's own imports."""
    return sorted(set(__all__) | {"errors", "protocols", "registry"})


__all__ = [
    "ABSTAIN",
    "Certificate",
    "Certifier",
    "CheckpointError",
    "DataError",
    "DeqcertError",
    "DeqcertWarning",
    "EquilibriumModel",
    "FixedPointSolver",
    "NoiseSampler",
    "OptionError",
    "PluginLoadError",
    "Prediction",
    "RegistrationError",
    "ResultsError",
    "SolverResult",
    "UnknownNameError",
    "__version__",
    "create_certifier",
    "create_dataset",
    "create_model",
    "create_noise",
    "create_solver",
    "list_certifiers",
    "list_datasets",
    "list_models",
    "list_noises",
    "list_solvers",
    *_LAZY,
]
