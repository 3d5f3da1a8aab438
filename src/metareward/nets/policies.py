"""Policies and value functions (flax.linen), used through pure ``init``/``apply``.

Initialisation follows the OpenAI baselines / PPO implementations: orthogonal weights
with gain sqrt(2) in hidden layers, 0.01 for the policy head and 1.0 for the value head,
zero biases; state-independent log-std initialised to ``log_std_init`` (0 by default).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from metareward.nets.distributions import Categorical, DiagGaussian, TanhGaussian

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": nn.tanh,
    "relu": nn.relu,
    "elu": nn.elu,
    "swish": nn.swish,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Looks up an activation by name; fails with the list of valid names."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def orthogonal(gain: float) -> nn.initializers.Initializer:
    """Orthogonal initialiser with the given gain."""
    return nn.initializers.orthogonal(gain)


class MLP(nn.Module):
    """Fully connected torso: ``Dense -> activation`` for each hidden size."""

    hidden: Sequence[int] = (64, 64)
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation(self.activation)
        for h in self.hidden:
            x = act(nn.Dense(h, kernel_init=orthogonal(math.sqrt(2.0)))(x))
        return x


class GaussianPolicy(nn.Module):
    """Gaussian policy with a state-independent log-std (PPO, Schulman et al. 2017).

    Returns a :class:`DiagGaussian`, or a :class:`TanhGaussian` when ``squash``.
    """

    action_dim: int
    hidden: Sequence[int] = (64, 64)
    activation: str = "tanh"
    squash: bool = False
    log_std_init: float = 0.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> DiagGaussian:
        x = MLP(self.hidden, self.activation)(obs)
        mean = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01))(x)
        log_std = self.param(
            "log_std", nn.initializers.constant(self.log_std_init), (self.action_dim,)
        )
        log_std = jnp.broadcast_to(log_std, mean.shape)
        cls = TanhGaussian if self.squash else DiagGaussian
        return cls(mean, log_std)


class CategoricalPolicy(nn.Module):
    """Softmax policy over ``num_actions`` discrete actions."""

    num_actions: int
    hidden: Sequence[int] = (64, 64)
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: jax.Array) -> Categorical:
        x = MLP(self.hidden, self.activation)(obs)
        return Categorical(nn.Dense(self.num_actions, kernel_init=orthogonal(0.01))(x))


class ValueNet(nn.Module):
    """State-value function V(s) -> scalar (output shape = batch shape)."""

    hidden: Sequence[int] = (64, 64)
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = MLP(self.hidden, self.activation)(obs)
        return nn.Dense(1, kernel_init=orthogonal(1.0))(x)[..., 0]


def make_policy(
    discrete: bool,
    action_size: int,
    hidden: Sequence[int] = (64, 64),
    activation: str = "tanh",
    squash: bool = False,
    log_std_init: float = 0.0,
) -> nn.Module:
    """The policy module for an action space: categorical if ``discrete`` else Gaussian."""
    if discrete:
        if squash:
            raise ValueError("squash=True needs continuous actions; this env is discrete")
        return CategoricalPolicy(action_size, tuple(hidden), activation)
    return GaussianPolicy(action_size, tuple(hidden), activation, squash, log_std_init)
