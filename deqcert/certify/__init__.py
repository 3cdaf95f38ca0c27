"""Certifiers of smoothed DEQs and their statistics.

* :mod:`.vanilla`: Cohen et al.'s CERTIFY / PREDICT, every sample solved fully.
* :mod:`.serialized`: serialized randomized smoothing (warm-started chains)
  with the sound hypergeometric + Clopper-Pearson bound.
* :mod:`.bounds`: all the statistics, one named function each.
* :mod:`.dataset`: :func:`~deqcert.certify.dataset.certify_dataset`, one
  reproducible record per dataset index.
"""
