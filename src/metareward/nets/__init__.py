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
from metareward.nets.rewards import (
    REWARD_NETS,
    BoundedHead,
    DenseLNStack,
    EpisodicLSTM,
    IntrinsicReward,
    LSTMConcatReward,
    LSTMMulReward,
    MLPConcatReward,
    MLPMulReward,
    make_reward_net,
)

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "REWARD_NETS",
    "BoundedHead",
    "Categorical",
    "CategoricalPolicy",
    "DenseLNStack",
    "DiagGaussian",
    "EpisodicLSTM",
    "GaussianPolicy",
    "IntrinsicReward",
    "LSTMConcatReward",
    "LSTMMulReward",
    "MLPConcatReward",
    "MLPMulReward",
    "TanhGaussian",
    "ValueNet",
    "activation",
    "make_policy",
    "make_reward_net",
]
