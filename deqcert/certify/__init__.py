"""Certifiers of smoothed DEQs and their statistics.

* :mod:`.vanilla`: Cohen et al.'s CERTIFY / PREDICT, every sample solved fully.
* :mod:`.serialized`: serialized randomized smoothing (warm-started chains)
  with the sound hypergeometric + Clopper-Pearson bound.
* :mod:`.verified`: exact serialized smoothing of contractive DEQs, every vote
  checked in float64 by :mod:`.verifier`.
* :mod:`.base`: what every certifier shares (options, the input check,
  ``decide``, ``build_certificate``); :mod:`.sampling`: batched noisy solves;
  :mod:`.chains`: the warm-started chains serialized and verified share.
* :mod:`.bounds`: all the statistics, one named function each.
* :mod:`.dataset`: :func:`~deqcert.certify.dataset.certify_dataset`, one
  reproducible record per dataset index.
"""
