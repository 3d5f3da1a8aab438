"""Batch statistics the learners share: advantage normalisation and masked moments.

Each is the one place its formula is written; the learners call these rather than
repeating them, so that a change (an epsilon, a biased variance) is made once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def standardize(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    """``(x - mean(x)) / (std(x) + eps)`` over all entries: advantage normalisation
    (OpenAI baselines' ppo2, which every on-policy learner here follows).

    Args:
        x: Any array (usually a minibatch of advantages).
        eps: Added to the (biased) standard deviation.

    Returns:
        ``x`` standardised, the same shape.
    """
    return (x - x.mean()) / (x.std() + eps)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``sum(x * mask) / max(sum(mask), 1)``: the mean of ``x`` over the entries where
    ``mask`` is 1 (0 where there are none).

    Args:
        x: Values.
        mask: 0/1 weights broadcastable to ``x``, of ``x``'s dtype.

    Returns:
        A scalar.
    """
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def masked_mean_std(x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and (biased) standard deviation of ``x`` over the entries where ``mask`` is
    nonzero.

    Args:
        x: Values.
        mask: Same shape as ``x``; booleans or 0/1 numbers.

    Returns:
        ``(mean, std)``, scalars (``(0, 0)`` with no valid entry).
    """
    m = mask.astype(x.dtype)
    n = jnp.maximum(jnp.sum(m), 1.0)
    mean = jnp.sum(x * m) / n
    var = jnp.sum(jnp.square(x - mean) * m) / n
    return mean, jnp.sqrt(var)


__all__ = ["masked_mean", "masked_mean_std", "standardize"]
