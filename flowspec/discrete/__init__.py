r"""Discrete Flow Matching: mixture paths over tokens, their rates, losses and sampler.

Flow Matching on sequences of tokens from a finite vocabulary (Gat, Remez, Shaul,
Kreuk, Chen, Synnaeve, Adi, Lipman, "Discrete Flow Matching", NeurIPS 2024), with the
conventions of the continuous core: t = 0 source, t = 1 data, batch-first integer
token arrays (B, *event), one Array API namespace per call, caller-drawn uniforms for
every random draw.

>>> from flowspec import discrete as fd
>>> fd.MixturePath(fd.Polynomial(2), vocab_size=5, mask_token=4)
MixturePath(Polynomial(n=2.0), vocab_size=5, mask_token=4)
"""

from .kolmogorov import kolmogorov_residual
from .losses import cross_entropy, generalized_kl
from .marginal import EmpiricalMarginal
from .paths import MixturePath
from .rates import conditional_rate, posterior_to_rate, rate_to_posterior
from .sampler import categorical, euler, jump_probabilities, jump_step
from .schedules import Cosine, KappaCoefficients, KappaSchedule, Linear, Polynomial

__all__ = [
    "Cosine",
    "EmpiricalMarginal",
    "KappaCoefficients",
    "KappaSchedule",
    "Linear",
    "MixturePath",
    "Polynomial",
    "categorical",
    "conditional_rate",
    "cross_entropy",
    "euler",
    "generalized_kl",
    "jump_probabilities",
    "jump_step",
    "kolmogorov_residual",
    "posterior_to_rate",
    "rate_to_posterior",
]
