"""PPO: clipped-surrogate policy optimisation (Schulman et al. 2017).

"Proximal Policy Optimization Algorithms", arXiv:1707.06347: clipped surrogate (eq. 7),
value loss and entropy bonus (eq. 9), GAE advantages (Schulman et al. 2016), several
epochs of minibatch Adam per rollout.

Usage::

    env = metareward.envs.make("cartpole")
    trainer = ppo.make_train(ppo.preset("cartpole"), env)
    state, metrics = jax.jit(jax.vmap(trainer.train))(jax.random.split(key, 4))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import flax.linen as nn
import jax
import optax
from brax.envs.base import Env

from metareward.algos import config as cfg
from metareward.algos import onpolicy
from metareward.algos.onpolicy import LiveBonus, with_live_bonus
from metareward.rl.losses import ppo_loss


@dataclasses.dataclass(frozen=True)
class Config(onpolicy.PPOBase):
    """PPO hyperparameters. Defaults are the paper's MuJoCo settings (Table 3: horizon
    2048, Adam 3e-4, 10 epochs, minibatch 64, gamma 0.99, lambda 0.95, clip 0.2) with the
    details of OpenAI baselines' ppo2 (Adam eps 1e-5, gradient-norm clip 0.5, value
    coefficient 0.5, linearly annealed learning rate, normalised observations and
    advantages, rewards normalised by ``VecNormalize``'s running return scale). See
    :data:`PRESETS` for the tuned small-env settings.

    ``live_bonus``: a constant added to the reward the learner trains on at every step
    (``0``: none), after any reward delay and before ``reward_scale``. With it this is
    the "PPO-bonus" baseline of LIRPG (Zheng et al. 2018, Figure 4;
    "A2C-bonus" in its Atari Figure 2b, :class:`metareward.algos.a2c.Config`).
    Training metrics and :func:`evaluate` report the env's own return, without it.

    ``max_grad_norm=None`` turns the gradient clip off: the PPO paper does not clip
    (the clip is ppo2's), and neither does brax's PPO by default.
    """

    live_bonus: float = 0.0

    optional_grad_clip: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        cfg.non_negative("live_bonus", self.live_bonus)


#: Settings tuned for the small gymnax envs (used by the tests and the quick start), with
#: a fixed ``reward_scale`` in place of the running reward normalisation.
TUNED: dict[str, dict[str, Any]] = {
    # PureJaxRL's classic-control settings with lr 5e-4 (2.5e-4 left a seed short).
    "cartpole": dict(num_envs=4, num_steps=128, total_steps=500_000, num_epochs=4,
                     num_minibatches=4, learning_rate=5e-4, ent_coef=0.01, normalize_obs=False,
                     normalize_reward=False),
    "pendulum": dict(num_envs=16, num_steps=128, total_steps=1_000_000, num_epochs=10,
                     num_minibatches=16, learning_rate=1e-3, gamma=0.95, reward_scale=0.1,
                     normalize_reward=False),
}
#: The tuned PPO configs (value loss unclipped, as tuned and measured; ``ppo2`` and
#: ``Config()`` clip it); LIRPG's, CLN's and TARE's presets start from :data:`TUNED`.
PRESETS: dict[str, Config] = {env: Config(**kw, vf_clip_eps=None) for env, kw in TUNED.items()}


preset = cfg.preset_function(PRESETS, Config, "ppo")


def objective(config: Config) -> onpolicy.Objective:
    """PPO's minibatch loss: the clipped surrogate (Schulman et al. 2017, eq. 7), the value
    loss and the entropy bonus (eq. 9), :func:`metareward.rl.losses.ppo_loss`.

    Args:
        config: The PPO config; its ``clip_eps``, ``vf_coef``, ``ent_coef`` and
            ``vf_clip_eps`` set the loss.

    Returns:
        ``loss(dist, values, adv, batch) -> (loss, aux)``, an
        :data:`~metareward.algos.onpolicy.Objective` for
        :func:`~metareward.algos.onpolicy.make_loss`.
    """

    def loss(dist, values: jax.Array, adv: jax.Array, b: onpolicy.Batch):
        return ppo_loss(dist.log_prob(b.action), b.log_prob, adv, values, b.value, b.target,
                        dist.entropy(), clip_eps=config.clip_eps, vf_coef=config.vf_coef,
                        ent_coef=config.ent_coef, vf_clip_eps=config.vf_clip_eps)

    return loss


def make_loss(config: Config) -> Callable[[nn.Module, nn.Module], onpolicy.LossFn]:
    """The PPO loss of ``config`` as a function of the policy and value modules.

    Args:
        config: The PPO config.

    Returns:
        ``factory(policy, value) -> loss(params, batch)``.
    """
    return onpolicy.make_loss(config, objective(config))


def make_train(config: Config, env: Env) -> onpolicy.Trainer:
    """Binds PPO to a single env (batched here with ``config.num_envs``).

    Returns a :class:`~metareward.algos.onpolicy.Trainer` with pure ``init(key)``,
    ``update(state)`` and ``train(key)``. Bad configs or env/config mismatches raise
    ``ValueError`` here, before anything is compiled.

    Args:
        config: The PPO config.
        env: A single env from :func:`metareward.envs.make` (not batched).

    Returns:
        The :class:`~metareward.algos.onpolicy.Trainer`.

    Raises:
        TypeError: If ``config`` is not a :class:`Config` or ``env`` is not a single
            metareward env.
        ValueError: On bad configs or env/config mismatches.
    """
    if not isinstance(config, Config):
        raise TypeError(f"expected metareward.algos.ppo.Config, got {type(config).__name__}")
    num_updates = config.total_steps // (config.num_envs * config.num_steps)
    total_sgd = max(num_updates, 1) * config.num_epochs * config.num_minibatches
    lr = onpolicy.annealed(config.learning_rate, config.anneal_lr, total_sgd)
    optimizer = optax.adam(lr, eps=config.adam_eps)
    return onpolicy.make_learner(config, env, make_loss(config), optimizer, config.num_epochs,
                                 config.num_minibatches)


__all__ = ["PRESETS", "TUNED", "Config", "LiveBonus", "make_loss", "make_train", "objective",
           "preset", "with_live_bonus"]
