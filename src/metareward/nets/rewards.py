"""Learned reward networks (flax.linen), used through pure ``init``/``apply``."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from metareward.nets.policies import MLP, orthogonal


class IntrinsicReward(nn.Module):
    """LIRPG's intrinsic reward ``r_eta(s, a)`` (Zheng, Oh & Singh 2018; the authors'
    ``MlpPolicyIntrinsicReward`` / ``CnnPolicyIntrinsicReward``), bounded by
    ``bound * tanh``.

    Continuous actions: an MLP on ``concat(obs, action)`` with one output. Discrete
    actions: an MLP on ``obs`` with one output per action, of which the taken action's is
    returned. Hidden layers orthogonal(sqrt 2), output orthogonal(1), zero biases (as
    baselines' ``fc``).

    ``__call__(obs [..., obs_dim], action [..., action_dim] or int [...]) -> [...]``.
    """

    discrete: bool
    action_size: int
    hidden: Sequence[int] = (64, 64)
    activation: str = "tanh"
    bound: float = 1.0

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        if self.discrete:
            x = MLP(tuple(self.hidden), self.activation)(obs)
            r = nn.Dense(self.action_size, kernel_init=orthogonal(1.0))(x)
            r = jnp.take_along_axis(r, action[..., None].astype(jnp.int32), axis=-1)[..., 0]
        else:
            x = MLP(tuple(self.hidden), self.activation)(jnp.concatenate([obs, action], -1))
            r = nn.Dense(1, kernel_init=orthogonal(1.0))(x)[..., 0]
        return self.bound * jnp.tanh(r)


__all__ = ["IntrinsicReward"]
