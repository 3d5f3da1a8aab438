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
from metareward.nets.rewards import IntrinsicReward

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "Categorical",
    "CategoricalPolicy",
    "DiagGaussian",
    "GaussianPolicy",
    "IntrinsicReward",
    "TanhGaussian",
    "ValueNet",
    "activation",
    "make_policy",
]
