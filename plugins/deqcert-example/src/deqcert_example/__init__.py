"""deqcert-example: a third-party deqcert plugin.

It registers, through the entry points in its ``pyproject.toml``:

* the solver ``km`` (:class:`~deqcert_example.km.KMSolver`), a
  Krasnoselskii-Mann averaged iteration;
* the noise sampler ``gaussian-linf``
  (:class:`~deqcert_example.noise.GaussianLinfNoise`), Gaussian noise certified
  in the L-infinity norm.
"""

from .km import KMSolver
from .noise import GaussianLinfNoise

__all__ = ["GaussianLinfNoise", "KMSolver"]
__version__ = "0.1.0"
