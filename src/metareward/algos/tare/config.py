"""TARE's settings: :class:`RewardFields` (what both flavours add to their inner
learner: the learned reward, its optimiser and the hypergradient), :class:`Config` (TARE
on PPO's config, :class:`metareward.algos.onpolicy.PPOBase`, registered as ``tare``) and
:class:`AWRConfig` (TARE on AWR's, :class:`metareward.algos.awr.Config`, ``tare-awr``).
The config's class picks the inner learner; the presets of each."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from metareward.algos import awr, onpolicy
from metareward.algos import config as cfg
from metareward.nets.rewards import REWARD_NETS

HESSIANS = ("train", "validation")
CURVATURES = ("hessian", "fisher")
POLICY_OBJECTIVES = ("clipped", "eq11")


@dataclasses.dataclass(frozen=True)
class RewardFields:
    """The fields TARE adds to its inner learner's, in both flavours (Algorithm 1, Table
    1), and their checks (run after the inner learner's).

    The reward net (``reward_net`` one of :data:`metareward.nets.REWARD_NETS`, embedding
    width ``reward_hidden``, LSTM width ``reward_lstm_hidden`` = 32 and output bound
    ``reward_bound`` = 20 as Table 1); Adam on ``phi`` with ``reward_learning_rate`` 1e-3
    and gradient-norm clip ``reward_max_grad_norm`` 0.5 (Table 1), ``reward_updates``
    steps per round; the policy trains on ``r_in_coef * r_phi + r_ex_coef * r_ex``;
    ``cg_steps`` 10 (Table 1) with ``cg_damping``; ``swap``. ``hessian`` (``"train"``,
    the implicit derivative, or ``"validation"``, eq. 14 as printed), ``curvature``
    (``"hessian"`` or ``"fisher"``), ``cg_restarts`` (adaptive damping) and
    ``hypergrad_coef`` (0: the reward frozen): see the package docstring.
    ``num_envs`` must be even: the env columns split into training and
    validation halves.

    Float fields may be JAX values (a sweep, :mod:`metareward.algos.config`).
    """

    # the learned reward and its optimiser
    reward_net: str = "lstm-b-mul"
    reward_hidden: int = 64
    reward_lstm_hidden: int = 32
    reward_bound: float = 20.0
    reward_learning_rate: float = 1e-3
    reward_max_grad_norm: float = 0.5
    reward_updates: int = 1
    r_in_coef: float = 1.0
    r_ex_coef: float = 0.0
    # the hypergradient
    cg_steps: int = 10
    cg_damping: float = 0.1
    swap: bool = True
    hessian: str = "train"
    curvature: str = "hessian"
    cg_restarts: int = 3
    hypergrad_coef: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()  # the inner learner's checks
        for name, allowed in (("hessian", HESSIANS), ("curvature", CURVATURES)):
            cfg.check(name, getattr(self, name), getattr(self, name) in allowed,
                      f"one of {list(allowed)}")
        cfg.check("cg_restarts", self.cg_restarts, isinstance(self.cg_restarts, int)
                  and not isinstance(self.cg_restarts, bool) and self.cg_restarts >= 0,
                  "an int >= 0")
        for name in ("reward_hidden", "reward_lstm_hidden", "reward_updates", "cg_steps"):
            cfg.positive_int(name, getattr(self, name))
        cfg.check("num_envs", self.num_envs, self.num_envs >= 2 and self.num_envs % 2 == 0,
                  "an even int >= 2 (the env columns split into training and validation "
                  "halves)")
        cfg.check("reward_net", self.reward_net, self.reward_net in REWARD_NETS,
                  f"one of {list(REWARD_NETS)}")
        for name in ("reward_bound", "reward_learning_rate", "reward_max_grad_norm"):
            cfg.positive(name, getattr(self, name))
        for name in ("r_in_coef", "r_ex_coef", "cg_damping", "hypergrad_coef"):
            cfg.non_negative(name, getattr(self, name))
        cfg.check("r_in_coef", self.r_in_coef, self.r_in_coef > 0,
                  "a number > 0 (with 0 the learned reward has no effect on the policy)")


@dataclasses.dataclass(frozen=True)
class Config(RewardFields, onpolicy.PPOBase):
    """TARE on PPO (registered as ``tare``): :class:`RewardFields` on PPO's own config
    (:class:`metareward.algos.onpolicy.PPOBase`; defaults: the PPO baseline's MuJoCo
    settings, Adam 3e-4, 10 epochs, tanh 64x64), 8 envs x 256 steps, 16 minibatches per
    epoch, a constant learning rate.

    ``num_epochs, num_minibatches`` are per round, over the training half. GAE
    ``gae_lambda`` of the extrinsic advantages and ``param_gae_lambda`` (1: the paper's
    "sum of parameterised rewards minus the value function") of the parameterised ones;
    ``policy_objective`` (``"clipped"``, PPO's surrogate, or ``"eq11"``) and eq. 11's
    ``kl_coef``: see the package docstring. ``squash`` is PPO's (a tanh-squashed
    Gaussian); ``vf_clip_eps`` clips the value loss of the clipped surrogate (``None``,
    the default, as before PPO-TARE took PPO's config; not with ``"eq11"``).
    ``normalize_reward`` must stay ``False``: the learned reward replaces the env's in
    the policy's objective, and the extrinsic returns ``V_ex`` regresses on are scaled by
    ``reward_scale`` alone. ``normalizer_samples`` (``None``, the default: never) freezes
    the observation statistics after that many env steps, as AWR-TARE's (AWR's field).
    """

    num_envs: int = 8
    num_steps: int = 256
    normalizer_samples: int | None = None
    anneal_lr: bool = False
    normalize_reward: bool = False
    num_minibatches: int = 16
    vf_clip_eps: float | None = None
    param_gae_lambda: float = 1.0
    kl_coef: float = 1.0
    policy_objective: str = "clipped"

    def __post_init__(self) -> None:
        super().__post_init__()
        cfg.check("policy_objective", self.policy_objective,
                  self.policy_objective in POLICY_OBJECTIVES,
                  f"one of {list(POLICY_OBJECTIVES)}")
        cfg.check("normalize_reward", self.normalize_reward, self.normalize_reward is False,
                  "False for TARE (the learned reward replaces the env's; see tare.Config)")
        if self.policy_objective == "eq11":
            cfg.check("vf_clip_eps", self.vf_clip_eps, self.vf_clip_eps is None,
                      "None with policy_objective='eq11' (its value loss is unclipped)")
        if self.normalizer_samples is not None:
            cfg.positive_int("normalizer_samples", self.normalizer_samples)
        cfg.in_range("param_gae_lambda", self.param_gae_lambda, 0.0, 1.0)
        cfg.non_negative("kl_coef", self.kl_coef)


@dataclasses.dataclass(frozen=True)
class AWRConfig(RewardFields, awr.Config):
    """TARE on AWR (registered as ``tare-awr``): :class:`RewardFields` on AWR's own
    config (:class:`metareward.algos.awr.Config`: Peng et al.'s code, ReLU 64x64 nets as
    TARE Table 1; the observation normaliser frozen after ``normalizer_samples`` =
    300,000 env steps, as that code's), 8 envs x 256 steps.

    AWR's fields mean what they mean there, over the training half: ``buffer_size``
    transitions, ``td_lambda`` (of both advantages), ``temperature`` beta,
    ``weight_clip``, ``value_steps`` and ``policy_steps`` of SGD with ``momentum`` at
    ``value_learning_rate`` / ``policy_learning_rate`` on minibatches of
    ``value_batch_size`` / ``policy_batch_size``, ``action_std`` (the Gaussian's fixed
    std unless ``learn_std``), ``action_bound_coef`` (the AWR code's penalty on means
    outside the action bounds), ``value_scale`` (``None``: ``1 / (1 - gamma)``),
    ``max_grad_norm`` (``None``: no clipping, the authors'). TARE adds
    ``hypergrad_batch``: transitions drawn from each half for the hypergradient.

    Until AWR-TARE took AWR's config its own fields were ``value_lr``, ``policy_lr``,
    ``value_batch`` and ``policy_batch``; a config file or run directory with those
    names still loads (:attr:`renamed_fields`).
    """

    num_envs: int = 8
    num_steps: int = 256
    hypergrad_batch: int = 4096

    #: Old field name -> new (read by :func:`metareward.runtime.configs.apply_overrides`).
    renamed_fields: ClassVar[dict[str, str]] = {
        "value_lr": "value_learning_rate", "policy_lr": "policy_learning_rate",
        "value_batch": "value_batch_size", "policy_batch": "policy_batch_size"}

    def __post_init__(self) -> None:
        super().__post_init__()
        cfg.positive_int("hypergrad_batch", self.hypergrad_batch)


#: Settings for the small envs (tests, benchmark, experiments).
PRESETS: dict[str, Config] = {
    # Chain (tests/test_tare_learning.py): the policy learns slower than the reward
    # (Adam 1e-4 against the reward's 3e-3 with 5 steps per round), else it commits to
    # whatever the untrained reward favours; advantages not normalised, so that the
    # reward's scale and offset matter to the policy (normalised, they are directions the
    # hypergradient cannot see, and they drift: r_phi saturated at +-20 and some seeds
    # dithered). 320 updates of 16 x 32 steps (163,840 env steps).
    "chain": Config(
        num_envs=16, num_steps=32, total_steps=163_840, num_epochs=4, num_minibatches=4,
        learning_rate=1e-4, gamma=0.99, gae_lambda=0.95, ent_coef=0.01, normalize_obs=False,
        normalize_advantages=False, hidden=(32, 32), reward_hidden=32, reward_lstm_hidden=32,
        reward_learning_rate=3e-3, reward_updates=5,
    ),
    "pendulum": Config(
        num_envs=16, num_steps=128, total_steps=1_000_000, num_epochs=10, num_minibatches=8,
        learning_rate=1e-3, gamma=0.95, reward_scale=0.1,
    ),
}
PRESETS["chain-truncating"] = PRESETS["chain"]
#: AWR-TARE: the AWR presets' batch and learning rates, half the steps per round (two
#: rounds per iteration), a smaller buffer (the reward net runs over all of it).
AWR_PRESETS: dict[str, AWRConfig] = {
    "pendulum": AWRConfig(
        num_envs=16, num_steps=128, total_steps=200_000, buffer_size=16_384, value_steps=100,
        policy_steps=200, policy_learning_rate=1e-3, hypergrad_batch=2048,
    ),
    "chain": AWRConfig(
        num_envs=16, num_steps=32, total_steps=81_920, buffer_size=8192, value_steps=25,
        policy_steps=50, policy_learning_rate=1e-3, hypergrad_batch=1024, normalize_obs=False,
        hidden=(32, 32), reward_hidden=32, reward_learning_rate=1e-2, reward_updates=5,
    ),
}
AWR_PRESETS["chain-truncating"] = AWR_PRESETS["chain"]
#: AWR-TARE on MuJoCo: TARE, Appendix E, takes AWR's hyperparameters from the AWR code, so
#: the actor step size and action std are the AWR baseline's per-env ones
#: (:data:`metareward.algos.awr.MUJOCO_ACTOR`, from ``awr_configs.py``); the rest are
#: :class:`AWRConfig`'s defaults.
AWR_PRESETS.update({
    env: AWRConfig(policy_learning_rate=actor["policy_learning_rate"],
                   action_std=actor["action_std"])
    for env, actor in awr.MUJOCO_ACTOR.items()
})


preset = cfg.preset_function(PRESETS, Config, "tare")


__all__ = ["AWR_PRESETS", "CURVATURES", "HESSIANS", "POLICY_OBJECTIVES", "PRESETS", "AWRConfig",
           "Config", "RewardFields", "preset"]
