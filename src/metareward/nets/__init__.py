"""Neural networks (flax.linen), used through pure ``init``/``apply``."""

from metareward.nets.cln import (
    CLNMLP,
    CLNCategoricalPolicy,
    CLNGaussianPolicy,
    ConditionalLayerNorm,
    RewardBody,
    make_cln_policy,
    reward_head,
)
from metareward.nets.distributions import Categorical, DiagGaussian, TanhGaussian
from metareward.nets.metagenrl import (
    ObjectiveLSTM,
    check_objective_inputs,
    masked_zscore,
    relu_square,
)
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
    "CLNMLP",
    "MLP",
    "REWARD_NETS",
    "BoundedHead",
    "CLNCategoricalPolicy",
    "CLNGaussianPolicy",
    "Categorical",
    "CategoricalPolicy",
    "ConditionalLayerNorm",
    "DenseLNStack",
    "DiagGaussian",
    "EpisodicLSTM",
    "GaussianPolicy",
    "IntrinsicReward",
    "LSTMConcatReward",
    "LSTMMulReward",
    "MLPConcatReward",
    "MLPMulReward",
    "ObjectiveLSTM",
    "RewardBody",
    "TanhGaussian",
    "ValueNet",
    "activation",
    "check_objective_inputs",
    "make_cln_policy",
    "make_policy",
    "make_reward_net",
    "masked_zscore",
    "relu_square",
    "reward_head",
]
