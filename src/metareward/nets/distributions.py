"""Action distributions as pytrees, so jitted functions can return them.

Each distribution samples a *raw* action (what ``log_prob`` is evaluated on) and maps it
to the action the env receives with ``to_env``: the identity for :class:`Categorical` and
:class:`DiagGaussian` (the env wrapper clips to [-1, 1]), ``tanh`` for
:class:`TanhGaussian`. Learners store raw actions, so log-probabilities are exact.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

_LOG_2PI = math.log(2.0 * math.pi)


@struct.dataclass
class Categorical:
    """Categorical distribution over ``logits.shape[-1]`` actions."""

    logits: jax.Array

    def sample(self, key: jax.Array) -> jax.Array:
        """Samples one action per batch entry.

        Args:
          key: PRNG key of the draw.

        Returns:
          ``[...]`` int action indices (``logits``'s shape without its last axis).
        """
        return jax.random.categorical(key, self.logits)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log-probability of given actions.

        Args:
          x: ``[...]`` action indices (cast to int32).

        Returns:
          ``[...]`` log-probabilities.
        """
        logp = jax.nn.log_softmax(self.logits)
        return jnp.take_along_axis(logp, x[..., None].astype(jnp.int32), axis=-1)[..., 0]

    def entropy(self) -> jax.Array:
        """Entropy of the distribution.

        Returns:
          ``[...]`` entropies (over the last axis of ``logits``).
        """
        logp = jax.nn.log_softmax(self.logits)
        return -jnp.sum(jnp.exp(logp) * logp, axis=-1)

    def mode(self) -> jax.Array:
        """The most likely action.

        Returns:
          ``[...]`` argmax of ``logits`` over the last axis.
        """
        return jnp.argmax(self.logits, axis=-1)

    def to_env(self, x: jax.Array) -> jax.Array:
        """The env action of a raw action: the identity.

        Args:
          x: ``[...]`` action indices.

        Returns:
          ``x`` unchanged.
        """
        return x


@struct.dataclass
class DiagGaussian:
    """Diagonal Gaussian N(mean, exp(log_std)^2); log-prob summed over the last axis."""

    mean: jax.Array
    log_std: jax.Array

    def sample(self, key: jax.Array) -> jax.Array:
        """Samples a raw action ``mean + exp(log_std) * eps``, ``eps ~ N(0, I)``.

        Args:
          key: PRNG key of the draw.

        Returns:
          ``[..., D]`` actions, ``mean``'s shape and dtype.
        """
        eps = jax.random.normal(key, self.mean.shape, self.mean.dtype)
        return self.mean + jnp.exp(self.log_std) * eps

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log-density of raw actions, summed over the last axis.

        Args:
          x: ``[..., D]`` raw actions.

        Returns:
          ``[...]`` log-densities.
        """
        z = (x - self.mean) * jnp.exp(-self.log_std)
        return jnp.sum(-0.5 * z**2 - self.log_std - 0.5 * _LOG_2PI, axis=-1)

    def entropy(self) -> jax.Array:
        """Entropy, summed over the last axis.

        Returns:
          ``[...]`` entropies.
        """
        log_std = jnp.broadcast_to(self.log_std, self.mean.shape)
        return jnp.sum(log_std + 0.5 * (1.0 + _LOG_2PI), axis=-1)

    def mode(self) -> jax.Array:
        """The most likely raw action.

        Returns:
          ``[..., D]``: ``mean``.
        """
        return self.mean

    def to_env(self, x: jax.Array) -> jax.Array:
        """The env action of a raw action: the identity (the env wrapper clips).

        Args:
          x: ``[..., D]`` raw actions.

        Returns:
          ``x`` unchanged.
        """
        return x


@struct.dataclass
class TanhGaussian(DiagGaussian):
    """Gaussian on the pre-tanh action u; the env receives tanh(u).

    ``log_prob(u) = log N(u) - sum log(1 - tanh(u)^2)`` with the stable form
    ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))``. ``entropy`` is that of the
    pre-tanh Gaussian (the squashed entropy has no closed form).
    """

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log-density of the squashed action ``tanh(x)``, evaluated at the pre-tanh ``x``
        (see the class docstring).

        Args:
          x: ``[..., D]`` pre-tanh actions.

        Returns:
          ``[...]`` log-densities, the Gaussian's minus the summed log-Jacobian of ``tanh``.
        """
        log_det = 2.0 * (math.log(2.0) - x - jax.nn.softplus(-2.0 * x))
        return super().log_prob(x) - jnp.sum(log_det, axis=-1)

    def to_env(self, x: jax.Array) -> jax.Array:
        """The env action of a pre-tanh action.

        Args:
          x: ``[..., D]`` pre-tanh actions.

        Returns:
          ``[..., D]``: ``tanh(x)``, in ``(-1, 1)``.
        """
        return jnp.tanh(x)


def kl_divergence(p: Categorical | DiagGaussian, q: Categorical | DiagGaussian) -> jax.Array:
    """``KL(p || q)`` per batch entry, in closed form, for two distributions of the same
    kind (a :class:`TanhGaussian`'s is that of its pre-tanh Gaussians: the squashing is
    a bijection, which leaves the KL unchanged).

    Args:
      p: a :class:`Categorical` or a :class:`DiagGaussian` (or subclass).
      q: one of the same kind as ``p``.

    Returns:
      The divergence, summed over the action dimensions (shape: the batch shape).
    """
    if isinstance(p, Categorical) and isinstance(q, Categorical):
        lp, lq = jax.nn.log_softmax(p.logits), jax.nn.log_softmax(q.logits)
        return jnp.sum(jnp.exp(lp) * (lp - lq), axis=-1)
    if isinstance(p, DiagGaussian) and isinstance(q, DiagGaussian):
        var_ratio = jnp.exp(2.0 * (p.log_std - q.log_std))
        gap = jnp.square((p.mean - q.mean) * jnp.exp(-q.log_std))
        kl = 0.5 * (var_ratio + gap - 1.0) - (p.log_std - q.log_std)
        return jnp.sum(jnp.broadcast_to(kl, p.mean.shape), axis=-1)
    raise TypeError(f"no closed-form KL between {type(p).__name__} and {type(q).__name__}")


__all__ = ["Categorical", "DiagGaussian", "TanhGaussian", "kl_divergence"]
