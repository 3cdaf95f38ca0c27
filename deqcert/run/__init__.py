"""The run layer: from a config to certificates, one hop a step.

* :mod:`.config`: :class:`CertifyConfig`, the schema of a run, with
  :meth:`~CertifyConfig.from_sources` (layers in) and
  :meth:`~CertifyConfig.build` (pipeline out);
* :mod:`.layers`: config files, ``--set`` overrides and merging, shared by
  ``certify`` and ``train``;
* :mod:`.roles`: the solver roles a certifier takes, read from its options;
* :mod:`.pipeline`: :class:`CertifyPipeline`, the built and validated run;
* :mod:`.executors`: where the inputs are certified (``local``, ``ray``);
* :mod:`.sharding` and :mod:`.resolve`: shards, device and noise level.

Names are imported lazily, so that importing one submodule does not import
the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "CertifyConfig": "deqcert.run.config",
    "CertifyPipeline": "deqcert.run.pipeline",
    "RunSummary": "deqcert.run.pipeline",
    "build_pipeline": "deqcert.run.pipeline",
    "Shard": "deqcert.run.sharding",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'deqcert.run' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = list(_LAZY)
