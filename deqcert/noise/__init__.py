"""Noise samplers for randomized smoothing: Gaussian (L2), Laplace and uniform (L1).

Each sampler draws noise in pixel space with a caller-supplied generator and
turns a lower bound on the top-class probability into a certified radius in
its :attr:`norm`.  Build them by name with :func:`deqcert.create_noise`.
"""

from ._base import AdditiveNoise, NoiseDraw
from .gaussian import GaussianNoise
from .laplace import LaplaceNoise
from .uniform import UniformNoise

__all__ = ["AdditiveNoise", "GaussianNoise", "LaplaceNoise", "NoiseDraw", "UniformNoise"]
