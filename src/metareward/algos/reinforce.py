"""REINFORCE with a GAE baseline, on-policy: the "on-policy REINFORCE (GAE)" baseline of
MetaGenRL ("Improving Generalization in Meta Reinforcement Learning using Learned
Objectives", section 2 eqs. 2-3 and Appendix B.3,
which uses Spinning Up's VPG).

Williams 1992 with the generalised advantage estimate of Schulman et al. 2015b:
``grad_phi E[sum_t log pi_phi(a_t | s_t) A(tau, V, t)]`` (eq. 3). One ``update``
collects ``num_envs x num_steps`` steps with the current Gaussian (or softmax) policy,
computes GAE(``gamma``, ``gae_lambda``) with the value net, and takes ``num_epochs``
full-batch Adam steps on ``-E[log pi(a|s) A] + vf_coef * 0.5 E[(V - R)^2] - ent_coef
* H`` (:func:`metareward.rl.losses.a2c_loss`). With the default ``num_epochs = 1`` the
policy gradient is the unbiased on-policy estimate of eq. 3; more epochs reuse the batch
off-policy without a correction (PPO's clipping is what makes that safe).

Defaults: Spinning Up's VPG (4000 steps per update, ``gamma = 0.99``,
``lambda = 0.97``, Adam 3e-4, 64x64 tanh). Where this differs: VPG fits ``V`` with 80
separate Adam steps (lr 1e-3) per batch; here policy and value share one Adam step on
the summed loss (``vf_coef`` sets the value's weight), as the other on-policy learners
of this library do (:mod:`metareward.algos.onpolicy`).

The off-policy variant (REINFORCE with GAE on windows from a replay buffer, a TD3 critic
giving ``V``) is MetaGenRL with its objective fixed to this estimator, and lives with
MetaGenRL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import flax.linen as nn
import optax
from brax.envs.base import Env

from metareward.algos import a2c, onpolicy
from metareward.algos import config as cfg


@dataclasses.dataclass(frozen=True)
class Config(onpolicy.BaseConfig):
    """On-policy REINFORCE (GAE) hyperparameters; defaults from Spinning Up's VPG (one env
    x 4000 steps, Adam 3e-4 constant, lambda 0.97, no gradient clipping)."""

    num_steps: int = 4000
    anneal_lr: bool = False
    gae_lambda: float = 0.97
    max_grad_norm: float | None = None
    #: Full-batch gradient steps per rollout (1: the plain on-policy estimator).
    num_epochs: int = 1

    optional_grad_clip: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        cfg.positive_int("num_epochs", self.num_epochs)


PRESETS: dict[str, Config] = {
    # Our PPO pendulum preset's gamma and reward scale; smaller batches, more updates.
    "pendulum": Config(num_envs=4, num_steps=500, total_steps=1_000_000,
                       learning_rate=1e-3, gamma=0.95, reward_scale=0.1),
    "cartpole": Config(num_envs=4, num_steps=500, total_steps=500_000, learning_rate=1e-3,
                       normalize_obs=False),
}


preset = cfg.preset_function(PRESETS, Config, "reinforce")


def make_loss(config: Config) -> Callable[[nn.Module, nn.Module], onpolicy.LossFn]:
    """REINFORCE with GAE (eq. 3) plus the value regression, as a function of the modules:
    A2C's loss (:func:`metareward.algos.a2c.objective`) on full-batch rollouts.

    Args:
        config: The REINFORCE config (``vf_coef``, ``ent_coef``,
            ``normalize_advantages``).

    Returns:
        ``factory(policy, value) -> loss(params, batch)``.
    """
    return onpolicy.make_loss(config, a2c.objective(config))


def make_train(config: Config, env: Env) -> onpolicy.Trainer:
    """Binds on-policy REINFORCE to a single env (batched with ``config.num_envs``).
    Bad configs or env/config mismatches raise here, before anything is compiled.

    Args:
        config: The REINFORCE config.
        env: A single env from :func:`metareward.envs.make` (not batched).

    Returns:
        A :class:`~metareward.algos.onpolicy.Trainer` with pure ``init(key)``,
        ``update(state)`` and ``train(key)``.

    Raises:
        TypeError: If ``config`` is not a :class:`Config` or ``env`` is not a single
            metareward env.
        ValueError: On bad configs or env/config mismatches.
    """
    if not isinstance(config, Config):
        raise TypeError(
            f"expected metareward.algos.reinforce.Config, got {type(config).__name__}")
    num_updates = max(config.total_steps // (config.num_envs * config.num_steps), 1)
    lr = onpolicy.annealed(config.learning_rate, config.anneal_lr, num_updates * config.num_epochs)
    return onpolicy.make_onpolicy(
        config, env, make_loss=make_loss(config), optimizer=optax.adam(lr),
        max_grad_norm=(config.max_grad_norm if config.max_grad_norm is not None
                       else float("inf")),
        num_epochs=config.num_epochs, num_minibatches=1,
    )


__all__ = ["PRESETS", "Config", "make_loss", "make_train", "preset"]
