"""The SRS-against-vanilla benchmark (``benchmarks/srs_vs_vanilla.py``), on the library API.

* :mod:`.config`: :class:`~.config.Config` (everything a run depends on) and the command line;
* :mod:`.methods`: the certifier configurations, their keys and labels;
* :mod:`.running`: certifying input by input, every method in turn, over worker processes;
* :mod:`.records`: saving and loading the per-input records, bounds evaluated from counts;
* :mod:`.tables` and :mod:`.losses`: the markdown tables; :mod:`.render`: the whole section;
* :mod:`.plot`: the figure; :mod:`.cli`: ``main``.

Records are those of :func:`deqcert.certify.dataset.certify_dataset`; certified accuracy
and ACR come from :func:`deqcert.report.summarize` (through ``benchmarks/common.py``), the
``paper`` / ``repro`` rows from :func:`deqcert.report.with_bound`.
"""
