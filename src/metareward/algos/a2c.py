"""A2C: synchronous advantage actor-critic (Mnih et al. 2016).

The synchronous A3C of "Asynchronous Methods for Deep Reinforcement Learning",
arXiv:1602.01783, as in OpenAI baselines' a2c: n-step returns from short rollouts of many
envs, one RMSProp step per rollout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import optax
from brax.envs.base import Env

from metareward.algos import config as cfg
from metareward.algos import onpolicy
from metareward.rl.losses import a2c_loss


@dataclasses.dataclass(frozen=True)
class Config(onpolicy.A2CBase):
    """A2C hyperparameters; defaults from OpenAI baselines' a2c (Atari): 16 envs x 5 steps,
    RMSProp lr 7e-4 (decay 0.99, eps 1e-5) linearly annealed, entropy 0.01, value
    coefficient 0.5, gradient-norm clip 0.5, gamma 0.99, n-step returns
    (``gae_lambda=1``); see :class:`~metareward.algos.onpolicy.A2CBase`.

    ``live_bonus``: a constant added to every step's training reward, the "A2C-bonus"
    baseline of LIRPG (see :class:`metareward.algos.ppo.Config`)."""

    live_bonus: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        cfg.non_negative("live_bonus", self.live_bonus)


#: Settings tuned for the small gymnax envs.
PRESETS: dict[str, Config] = {
    # The defaults (16 envs, entropy 0.01, TF-style RMSProp) at 500k steps.
    "cartpole": Config(total_steps=500_000),
}


preset = cfg.preset_function(PRESETS, Config, "a2c")


def objective(config: Any) -> onpolicy.Objective:
    """A2C's minibatch loss (Mnih et al. 2016, Algorithm S3): the policy gradient of the
    advantages, the value regression and the entropy bonus
    (:func:`metareward.rl.losses.a2c_loss`). REINFORCE uses it too.

    Args:
        config: The learner's config; its ``vf_coef`` and ``ent_coef`` weight the value
            and entropy terms.

    Returns:
        ``loss(dist, values, adv, batch) -> (loss, aux)``, an
        :data:`~metareward.algos.onpolicy.Objective` for
        :func:`~metareward.algos.onpolicy.make_loss`.
    """

    def loss(dist, values: jax.Array, adv: jax.Array, b: onpolicy.Batch):
        return a2c_loss(dist.log_prob(b.action), adv, values, b.target, dist.entropy(),
                        vf_coef=config.vf_coef, ent_coef=config.ent_coef)

    return loss


def make_loss(config: Config) -> Callable[[nn.Module, nn.Module], onpolicy.LossFn]:
    """The A2C loss of ``config`` as a function of the policy and value modules.

    Args:
        config: The A2C config.

    Returns:
        ``factory(policy, value) -> loss(params, batch)``.
    """
    return onpolicy.make_loss(config, objective(config))


def make_train(config: Config, env: Env) -> onpolicy.Trainer:
    """Binds A2C to a single env (batched here with ``config.num_envs``); see
    :func:`metareward.algos.ppo.make_train` for the returned functions.

    Args:
        config: The A2C config.
        env: A single env from :func:`metareward.envs.make` (not batched).

    Returns:
        A :class:`~metareward.algos.onpolicy.Trainer` with pure ``init(key)``,
        ``update(state)`` and ``train(key)``.

    Raises:
        TypeError: If ``config`` is not a :class:`Config` or ``env`` is not a single
            metareward env.
        ValueError: On bad configs or env/config mismatches, before anything is compiled.
    """
    if not isinstance(config, Config):
        raise TypeError(f"expected metareward.algos.a2c.Config, got {type(config).__name__}")
    num_updates = max(config.total_steps // (config.num_envs * config.num_steps), 1)
    lr = onpolicy.annealed(config.learning_rate, config.anneal_lr, num_updates)
    optimizer = optax.rmsprop(lr, decay=config.rms_decay, eps=config.rms_eps,
                              initial_scale=config.rms_initial_scale)
    return onpolicy.make_learner(config, env, make_loss(config), optimizer, 1, 1)


__all__ = ["PRESETS", "Config", "make_loss", "make_train", "objective", "preset"]
