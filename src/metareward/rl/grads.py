"""Gradient clipping on flat parameter vectors (``jax.flatten_util.ravel_pytree``), with
the finiteness check the learners use to skip a bad step."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def clip_by_global_norm(grads: jax.Array, max_norm: float) -> tuple[jax.Array, jax.Array,
                                                                     jax.Array]:
    """Global-norm clipping of a flat gradient, differentiable (it is used inside
    look-ahead steps that are differentiated).

    ``g * min(1, max_norm / (||g|| + 1e-6))``, as ``optax.clip_by_global_norm`` up to its
    epsilon; a non-finite gradient becomes zero.

    Args:
        grads: A flat gradient ``[P]``.
        max_norm: The largest norm kept.

    Returns:
        ``(clipped, norm, ok)``: the clipped gradient (zero where not ``ok``), the norm
        before clipping, and whether it is finite.
    """
    norm = jnp.sqrt(jnp.sum(grads**2))
    ok = jnp.isfinite(norm)
    scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
    return jnp.where(ok, grads * scale, 0.0), norm, ok
