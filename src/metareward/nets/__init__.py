"""Neural networks (flax.linen), used through pure ``init``/``apply``."""

from metareward.nets.distributions import Categorical, DiagGaussian, TanhGaussian
from metareward.nets.policies import (
    ACTIVATIONS,
    MLP,
    CategoricalPolicy,
    GaussianPolicy,
    ValueNet,
    activation,
    make_policy,
)

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "Categorical",
    "CategoricalPolicy",
    "DiagGaussian",
    "GaussianPolicy",
    "TanhGaussian",
    "ValueNet",
    "activation",
    "make_policy",
]
