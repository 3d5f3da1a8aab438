"""Advantage estimation: GAE (Schulman et al. 2016, eq. 16) and discounted returns.

Time limits: a transition that ends the episode by truncation bootstraps from
``V(final_obs)``; one that ends it by termination does not. In both cases the recursion
is cut, so advantages never leak across episodes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    dones: jax.Array,
    truncations: jax.Array,
    gamma: float | jax.Array,
    gae_lambda: float | jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimates over time-major arrays ``[T, ...]``.

    ``delta_t = r_t + gamma (1 - term_t) V(s'_t) - V(s_t)`` with ``term_t = done_t and not
    trunc_t`` and ``s'_t`` the observation the transition reached (before any reset);
    ``A_t = delta_t + gamma lambda (1 - done_t) A_{t+1}``.

    Args:
      rewards, values, next_values, dones, truncations: arrays of equal shape ``[T, ...]``;
        ``next_values[t] = V(final_obs_t)``.
      gamma: discount; gae_lambda: GAE's lambda (1 gives discounted returns minus V).

    Returns:
      ``(advantages, targets)`` with ``targets = advantages + values`` (lambda-returns).
    """
    deltas = td_errors(rewards, values, next_values, dones, truncations, gamma)
    dones = dones.astype(values.dtype)

    def body(carry: jax.Array, x: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        delta, done = x
        carry = delta + gamma * gae_lambda * (1.0 - done) * carry
        return carry, carry

    _, adv = jax.lax.scan(body, jnp.zeros_like(deltas[0]), (deltas, dones), reverse=True)
    return adv, adv + values


def td_errors(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    dones: jax.Array,
    truncations: jax.Array,
    gamma: float | jax.Array,
) -> jax.Array:
    """``delta_t = r_t + gamma (1 - term_t) V(s'_t) - V(s_t)``, ``term_t = done_t and not
    trunc_t`` (a time limit bootstraps from ``V(final_obs)``): GAE's TD errors."""
    terminated = dones.astype(values.dtype) * (1.0 - truncations.astype(values.dtype))
    return rewards + gamma * (1.0 - terminated) * next_values - values


def gae_rows(
    dones: jax.Array,
    t_index: jax.Array,
    env_index: jax.Array,
    gamma: float | jax.Array,
    gae_lambda: float | jax.Array,
) -> jax.Array:
    """Rows of GAE as a linear map of the TD errors, for chosen transitions.

    GAE is linear in the TD errors: ``A[t, e] = sum_{t'} (gamma lambda)^(t' - t)
    delta[t', e]`` over the ``t' >= t`` of the same episode (no ``done`` in
    ``[t, t')``). This returns, for each transition ``(t_index[i], env_index[i])``, its
    row ``W[i, t']`` of that map, so that ``A = sum(W * delta[:, env_index].T, 1)`` for
    any ``delta`` — e.g. TD errors that depend on a learned reward, differentiated
    (LIRPG rebuilds the mixed advantage of a minibatch this way, as the authors'
    ``COEF_MAT``). Cost and memory ``O(M T)`` for ``M`` transitions, no scan over time.

    Args:
      dones: ``[T, N]`` episode ends of the batch.
      t_index, env_index: ``[M]`` time and env indices of the transitions.

    Returns:
      ``[M, T]`` coefficients.
    """
    d = dones.astype(jnp.float32)
    episode = jnp.cumsum(d, axis=0) - d  # episodes ended strictly before t
    same = episode[:, env_index].T == episode[t_index, env_index][:, None]
    lag = jnp.arange(dones.shape[0])[None, :] - t_index[:, None]
    decay = jnp.power(jnp.asarray(gamma * gae_lambda, jnp.float32), jnp.maximum(lag, 0))
    return jnp.where(same & (lag >= 0), decay, 0.0)


def discounted_returns(
    rewards: jax.Array, dones: jax.Array, gamma: float | jax.Array, bootstrap: jax.Array
) -> jax.Array:
    """``G_t = r_t + gamma (1 - done_t) G_{t+1}``, ``G_T = bootstrap``, over ``[T, ...]``."""

    def body(carry: jax.Array, x: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        r, d = x
        carry = r + gamma * (1.0 - d) * carry
        return carry, carry

    _, ret = jax.lax.scan(body, bootstrap, (rewards, dones.astype(rewards.dtype)), reverse=True)
    return ret
