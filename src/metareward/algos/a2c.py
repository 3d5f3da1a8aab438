"""A2C: synchronous advantage actor-critic (Mnih et al. 2016).

The synchronous A3C of "Asynchronous Methods for Deep Reinforcement Learning",
arXiv:1602.01783, as in OpenAI baselines' a2c: n-step returns from short rollouts of many
envs, one RMSProp step per rollout.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import optax
from brax.envs.base import Env

from metareward.algos import config as cfg
from metareward.algos.onpolicy import Batch, LossFn, Trainer, make_onpolicy
from metareward.algos.ppo import with_live_bonus
from metareward.rl.losses import a2c_loss


@dataclasses.dataclass(frozen=True)
class Config:
    """A2C hyperparameters; defaults from OpenAI baselines' a2c (Atari): 16 envs x 5 steps,
    RMSProp lr 7e-4 (decay 0.99, eps 1e-5) linearly annealed, entropy 0.01, value
    coefficient 0.5, gradient-norm clip 0.5, gamma 0.99, n-step returns
    (``gae_lambda=1``). ``rms_initial_scale=1`` starts RMSProp's second-moment
    accumulator at 1 as TensorFlow's RMSProp (used by baselines) does; PyTorch starts at 0,
    which makes the first steps very large.

    ``live_bonus``: a constant added to every step's training reward, the "A2C-bonus"
    baseline of LIRPG (see :class:`metareward.algos.ppo.Config`)."""

    num_envs: int = 16
    num_steps: int = 5
    total_steps: int = 1_000_000
    learning_rate: float = 7e-4
    anneal_lr: bool = True
    rms_decay: float = 0.99
    rms_eps: float = 1e-5
    rms_initial_scale: float = 1.0
    gamma: float = 0.99
    gae_lambda: float = 1.0
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    normalize_obs: bool = True
    normalize_advantages: bool = False
    reward_scale: float = 1.0
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    squash: bool = False
    log_std_init: float = 0.0
    live_bonus: float = 0.0

    def __post_init__(self) -> None:
        for name in ("num_envs", "num_steps", "total_steps"):
            cfg.positive_int(name, getattr(self, name))
        cfg.positive("learning_rate", self.learning_rate)
        cfg.in_range("rms_decay", self.rms_decay, 0.0, 1.0, lo_open=True)
        cfg.positive("rms_eps", self.rms_eps)
        cfg.non_negative("rms_initial_scale", self.rms_initial_scale)
        cfg.in_range("gamma", self.gamma, 0.0, 1.0)
        cfg.in_range("gae_lambda", self.gae_lambda, 0.0, 1.0)
        cfg.non_negative("ent_coef", self.ent_coef)
        cfg.non_negative("vf_coef", self.vf_coef)
        cfg.positive("max_grad_norm", self.max_grad_norm)
        cfg.positive("reward_scale", self.reward_scale)
        cfg.hidden_sizes("hidden", self.hidden)
        cfg.activation_name("activation", self.activation)
        cfg.non_negative("live_bonus", self.live_bonus)
        object.__setattr__(self, "hidden", tuple(self.hidden))


#: Settings tuned for the small gymnax envs.
PRESETS: dict[str, Config] = {
    # The defaults (16 envs, entropy 0.01, TF-style RMSProp) at 500k steps.
    "cartpole": Config(total_steps=500_000),
}


def preset(env_name: str) -> Config:
    """The tuned config for ``env_name`` if there is one, else the paper defaults (with a
    :class:`~metareward.algos.config.DefaultConfigWarning`); ``ConfigError`` for an env
    name that is not registered (see :func:`metareward.algos.config.preset`)."""
    return cfg.preset(PRESETS, Config(), env_name, "a2c")


def make_loss(config: Config):
    """The A2C loss of ``config`` as a function of the policy and value modules."""

    def factory(policy: nn.Module, value: nn.Module) -> LossFn:
        def loss(params, b: Batch):
            dist = policy.apply(params["policy"], b.obs)
            adv = b.advantage
            if config.normalize_advantages:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            return a2c_loss(
                dist.log_prob(b.action),
                adv,
                value.apply(params["value"], b.obs),
                b.target,
                dist.entropy(),
                vf_coef=config.vf_coef,
                ent_coef=config.ent_coef,
            )

        return loss

    return factory


def make_train(config: Config, env: Env) -> Trainer:
    """Binds A2C to a single env (batched here with ``config.num_envs``); see
    :func:`metareward.algos.ppo.make_train` for the returned functions."""
    if not isinstance(config, Config):
        raise TypeError(f"expected metareward.algos.a2c.Config, got {type(config).__name__}")
    num_updates = max(config.total_steps // (config.num_envs * config.num_steps), 1)
    lr = (
        optax.linear_schedule(config.learning_rate, 0.0, num_updates)
        if config.anneal_lr
        else config.learning_rate
    )
    optimizer = optax.rmsprop(
        lr, decay=config.rms_decay, eps=config.rms_eps, initial_scale=config.rms_initial_scale
    )
    return with_live_bonus(
        lambda e: make_onpolicy(
            config,
            e,
            make_loss=make_loss(config),
            optimizer=optimizer,
            max_grad_norm=config.max_grad_norm,
            num_epochs=1,
            num_minibatches=1,
        ),
        config,
        env,
    )


__all__ = ["PRESETS", "Config", "make_loss", "make_train", "preset"]
