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
    """Looks up an activation by name; fails with the list of valid names.

    Args:
        name: A key of ``ACTIVATIONS``.

    Returns:
        The activation function.

    Raises:
        ValueError: For an unknown name.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def orthogonal(gain: float = 1.0, column_axis: int = -1) -> nn.initializers.Initializer:
    """Orthogonal initialiser with the given gain: flax's ``nn.initializers.orthogonal``
    (Saxe et al. 2014; the QR of a Gaussian matrix, signs fixed by ``diag(R)``), the same
    values bit for bit, except that a ``vmap`` of it (many seeds or population members
    initialised in one program) draws its matrices one at a time with ``lax.map``
    instead of as one batched QR.

    Why: on CPU, jaxlib 0.10.2 runs a *batched* LAPACK QR by splitting the batch over
    XLA's intra-op thread pool and blocking until the pieces finish; under XLA:CPU's
    default (concurrency-optimised) scheduler two such QRs start at once (the layers of
    a network are independent), each occupies a pool thread waiting for work queued
    behind the other, and the program never finishes (seen with ``jax.jit(jax.vmap(
    train))`` on a 2-core CPU, and in PureJaxRL's vmapped PPO). One matrix at a time
    has nothing to split and cannot wait on the pool. Initialisation is a negligible
    part of a training program, so the sequential draw costs nothing measurable, and
    it lets the project keep XLA's default scheduler (``benchmarks/RESULTS.md``,
    issue 37: about 10% faster training on CPU than with that scheduler turned off).

    Args:
        gain: The scale of the orthogonal matrix.
        column_axis: The axis of the columns that are orthonormal (flax's argument).

    Returns:
        The initialiser ``init(key, shape, dtype=float32) -> array``.
    """
    flax_init = nn.initializers.orthogonal(gain, column_axis=column_axis)

    def init(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        @jax.custom_batching.custom_vmap
        def draw(k: jax.Array) -> jax.Array:
            return flax_init(k, shape, dtype)

        @draw.def_vmap
        def draw_each(axis_size: int, in_batched: list[bool], k: jax.Array):
            if not in_batched[0]:
                return draw(k), False
            return jax.lax.map(draw, k), True

        return draw(key)

    return init


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
    """The policy module for an action space: categorical if ``discrete`` else Gaussian.

    Args:
        discrete: Categorical policy if true, else Gaussian.
        action_size: Number of discrete actions, or the action dimension.
        hidden: Hidden layer sizes.
        activation: Name of the hidden activation (a key of ``ACTIVATIONS``).
        squash: Gaussian only: a tanh-squashed Gaussian.
        log_std_init: Gaussian only: the initial state-independent log-std.

    Returns:
        A :class:`CategoricalPolicy` or :class:`GaussianPolicy`.

    Raises:
        ValueError: If ``squash`` is set with discrete actions.
    """
    if discrete:
        if squash:
            raise ValueError("squash=True needs continuous actions; this env is discrete")
        return CategoricalPolicy(action_size, tuple(hidden), activation)
    return GaussianPolicy(action_size, tuple(hidden), activation, squash, log_std_init)


class _Torso(nn.Module):
    """``Dense -> [LayerNorm] -> activation`` per hidden size (TD3 / MetaGenRL nets: the
    MetaGenRL code puts LayerNorm in every hidden layer of its policy and critics)."""

    hidden: Sequence[int]
    activation: str
    layer_norm: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation(self.activation)
        for h in self.hidden:
            x = nn.Dense(h)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = act(x)
        return x


class DeterministicPolicy(nn.Module):
    """Deterministic policy ``mu(s)`` of DDPG / TD3 (Lillicrap et al. 2016; Fujimoto et
    al. 2018): an MLP torso and ``tanh`` scaled to the action box ``[low, high]``
    (``tanh * action limit`` in the MetaGenRL and TD3 code). Flax's default (LeCun
    normal) kernel init, zero biases."""

    action_dim: int
    hidden: Sequence[int] = (256, 256)
    activation: str = "relu"
    layer_norm: bool = False
    low: float | Sequence[float] = -1.0
    high: float | Sequence[float] = 1.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = _Torso(tuple(self.hidden), self.activation, self.layer_norm)(obs)
        y = jnp.tanh(nn.Dense(self.action_dim)(x))
        low = jnp.asarray(self.low, jnp.float32)
        high = jnp.asarray(self.high, jnp.float32)
        return low + 0.5 * (y + 1.0) * (high - low)


class QNetwork(nn.Module):
    """Action-value function ``Q(s, a)`` on ``concat(s, a)`` -> scalar (output shape =
    batch shape); torso as :class:`DeterministicPolicy`'s."""

    hidden: Sequence[int] = (256, 256)
    activation: str = "relu"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = jnp.concatenate([obs, action], axis=-1)
        x = _Torso(tuple(self.hidden), self.activation, self.layer_norm)(x)
        return nn.Dense(1)(x)[..., 0]


__all__ = ["ACTIVATIONS", "MLP", "CategoricalPolicy", "DeterministicPolicy", "GaussianPolicy",
           "QNetwork", "ValueNet", "activation", "make_policy", "orthogonal"]
