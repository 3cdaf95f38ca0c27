"""The one set of default sample sizes, shared by the Python API, the CLI and config files.

``create_certifier("serialized")``, ``CertifyConfig()`` and ``deqcert certify``
with no options all mean the same run settings:

* ``n0 = 100`` selection and ``n = 10,000`` estimation samples, ``alpha =
  0.001``, batches (serialized: chains) of 400: Cohen et al.'s ``alpha`` and
  the SRS paper's ``n``, so default certificates are comparable with
  published ones;
* serialized smoothing checks ``K = 400`` reference samples (the sound
  bound's cap at ``sigma = 0.25`` is then ``r = 0.529``; ``n = 2,000, K =
  200`` capped every default radius at 0.410 under the bound before issue 16);
* chains start at the clean input's fixed point (``chain_start = "anchor"``):
  the cheapest start (one solve instead of a 10-step warm-up batch per
  stage, see ``docs/benchmarks.md``) and, like every start, no effect on
  validity.

Torch-free, so the CLI can show them without importing torch.
"""

from __future__ import annotations

from typing import Final

N0 = 100
N = 10_000
ALPHA = 0.001
BATCH = 400
REFERENCE_SAMPLES = 400
CHAIN_START: Final = "anchor"  # a Literal for the options field
