"""Gradient clipping on flat parameter vectors (``jax.flatten_util.ravel_pytree``), with
the finiteness check the learners use to skip a bad step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax


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


def clipped_step(
    loss_fn: Callable[[jax.Array], tuple[jax.Array, Any]],
    optimizer: optax.GradientTransformation,
    flat: jax.Array,
    opt_state: optax.OptState,
    max_grad_norm: float | None,
) -> tuple[jax.Array, optax.OptState, jax.Array, jax.Array, Any]:
    """One optimiser step on a flat parameter vector (TD3's, AWR's and MetaGenRL's
    steps, TARE-AWR's without the clip).

    The gradient is clipped to ``max_grad_norm`` (if given); a non-finite loss or
    gradient feeds the optimiser a zero gradient and keeps the parameters.

    Args:
        loss_fn: ``loss_fn(flat) -> (loss, aux)``.
        optimizer: The optimiser.
        flat: The flat parameter vector.
        opt_state: Its optimiser state.
        max_grad_norm: Global-norm clip, or ``None``.

    Returns:
        ``(flat, opt_state, ok, loss, aux)``; ``ok`` False where the step was skipped;
        ``aux`` gains ``grad_norm``.
    """
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(flat)
    norm = jnp.sqrt(jnp.sum(grads**2))
    ok = jnp.isfinite(loss) & jnp.isfinite(norm)
    if max_grad_norm is not None:
        grads = grads * jnp.minimum(1.0, max_grad_norm / (norm + 1e-6))
    grads = jnp.where(ok, grads, 0.0)
    updates, new_state = optimizer.update(grads, opt_state, flat)
    return jnp.where(ok, flat + updates, flat), new_state, ok, loss, {**aux, "grad_norm": norm}


__all__ = ["clip_by_global_norm", "clipped_step"]
