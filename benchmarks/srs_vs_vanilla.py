"""Serialized (SRS) against vanilla randomized smoothing on the bundled noise-trained MDEQs.

Every method certifies the same test inputs of ``mnist-sample`` with the same
run seed (input ``i`` draws its noise from ``noise_generator(seed, i)``, through
:func:`deqcert.certify.dataset.certify_dataset`), and the methods are
interleaved input by input so that a change in machine load hits them all
alike.  Tables (printed, and written to ``benchmarks/results/``):

1. **headline** (all inputs): vanilla with 30 Anderson steps from zeros
   (``vanilla-30A``, which is also ``h_ref``) against SRS with one step and
   the ``sound`` bound, chains started by a warm-up batch or at the anchor;
2. **matrix** (the first ``--matrix-inputs``): vanilla 1A / 5A, SRS 3A and
   1B, and SRS 1A with the ``paper`` and ``repro`` bounds (computed from the
   ``sound`` run's counts: the bound does not change the sampling; both are
   marked as not sound); on the first ``--baseline-inputs`` also the
   consistency runs, vanilla 30A without compaction and SRS 1N, whose
   certificates must equal vanilla 30A's and SRS 1A's;
3. **K ablation** (the first ``--ablation-inputs``): the reference subset
   size ``K`` against the radius cap (the radius at ``d = 0``,
   ``C_m = n``) and certified accuracy against cost;
4. **loss analysis**: why sound SRS certifies less than vanilla, per input.

One step of ``naive``, ``anderson`` or ``broyden`` from the same state is the
same computation (each starts with the plain step ``z <- f(z)``), so SRS 1N,
1A and 1B give identical certificates; only 1A runs on every input unless
``--all-one-step`` is given, and the tables report how many 1N / 1B
certificates equal 1A's.

Run ``python benchmarks/srs_vs_vanilla.py`` (the full configuration, for
``make bench``), ``--quick`` (a few inputs at small ``n``, same tables), or
pick ``--n``, ``--inputs``, ... ; ``--render`` rebuilds the tables and the plot
from the saved per-input records without certifying anything.

The code lives in ``benchmarks/srs/`` (config, methods, running, records, tables,
losses, render, plot, cli); this file keeps the command.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from srs.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
