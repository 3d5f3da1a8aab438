"""Advantage estimation: GAE (Schulman et al. 2016, eq. 16), TD(lambda) targets and
discounted returns.

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
      rewards: ``r_t``, ``[T, ...]``.
      values: ``V(s_t)``, ``[T, ...]``.
      next_values: ``V(final_obs_t)``, the value of the observation each step reached,
        ``[T, ...]``.
      dones: 1 where the episode ended at step ``t``, ``[T, ...]``.
      truncations: 1 where it ended by the time limit (bootstraps), ``[T, ...]``.
      gamma: discount.
      gae_lambda: GAE's lambda (1 gives discounted returns minus V).

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


def td_lambda_targets(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    dones: jax.Array,
    truncations: jax.Array,
    gamma: float | jax.Array,
    td_lambda: float | jax.Array,
) -> jax.Array:
    """TD(lambda) returns over time-major ``[T, ...]`` arrays, the value targets of AWR
    (Peng et al. 2019, "Advantage-Weighted Regression", Section 3.3; the authors'
    ``_compute_return``).

    ``R_t = r_t + gamma [(1 - lambda) V(s'_t) + lambda R_{t+1}]`` within an episode,
    ``R_t = r_t + gamma V(s'_t)`` on its last step if truncated (or at the end of the
    data) and ``R_t = r_t`` if terminated. Computed as GAE's ``adv + V`` (:func:`gae`).

    Args:
        rewards: ``r_t``, ``[T, ...]``.
        values: ``V(s_t)``, ``[T, ...]``.
        next_values: ``V(s'_t)`` of the observation each step reached, ``[T, ...]``.
        dones: 1 where the episode ended at step ``t``.
        truncations: 1 where it ended by the time limit (bootstraps).
        gamma: Discount.
        td_lambda: The TD(lambda) mixing parameter.

    Returns:
        ``R^lambda``, ``[T, ...]``.
    """
    return gae(rewards, values, next_values, dones, truncations, gamma, td_lambda)[1]


def td_errors(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    dones: jax.Array,
    truncations: jax.Array,
    gamma: float | jax.Array,
) -> jax.Array:
    """``delta_t = r_t + gamma (1 - term_t) V(s'_t) - V(s_t)``, ``term_t = done_t and not
    trunc_t`` (a time limit bootstraps from ``V(final_obs)``): GAE's TD errors.

    Args:
        rewards: ``r_t``, ``[T, ...]``.
        values: ``V(s_t)``, ``[T, ...]``.
        next_values: ``V(s'_t)`` of the observation each step reached (the final
            observation at a time limit), ``[T, ...]``.
        dones: Episode ends, ``[T, ...]``.
        truncations: Time-limit ends, ``[T, ...]`` (a subset of ``dones``).
        gamma: Discount.

    Returns:
        ``delta``, ``[T, ...]``.
    """
    terminated = dones.astype(values.dtype) * (1.0 - truncations.astype(values.dtype))
    return rewards + gamma * (1.0 - terminated) * next_values - values


def discounted_cumsum(x: jax.Array, discounts: jax.Array) -> jax.Array:
    """``y_t = x_t + discounts_t * y_{t+1}`` (``y_T = 0``) over the leading (time) axis,
    by a parallel associative scan: ``O(log T)`` depth instead of ``T`` sequential steps,
    and differentiable in ``x`` and ``discounts``.

    GAE is ``discounted_cumsum(td_errors(...), gamma * lambda * (1 - done))``: a linear
    map of the TD errors, which LIRPG differentiates with respect to a learned reward
    (the authors build it as a dense ``COEF_MAT``; this computes the same numbers in
    ``O(T log T)`` work for the whole batch).

    Args:
        x: ``[T, ...]``.
        discounts: ``[T, ...]``, the factor from ``y_{t+1}`` to ``y_t``.

    Returns:
        ``y``, ``[T, ...]``.
    """

    def compose(later, earlier):  # each element is the affine map y -> b + a y
        a_l, b_l = later
        a_e, b_e = earlier
        return a_e * a_l, b_e + a_e * b_l

    return jax.lax.associative_scan(compose, (discounts, x), reverse=True, axis=0)[1]


def discounted_returns(
    rewards: jax.Array, dones: jax.Array, gamma: float | jax.Array, bootstrap: jax.Array
) -> jax.Array:
    """``G_t = r_t + gamma (1 - done_t) G_{t+1}``, ``G_T = bootstrap``, over ``[T, ...]``.

    Args:
        rewards: ``r_t``, ``[T, ...]``.
        dones: Episode ends, ``[T, ...]``.
        gamma: Discount.
        bootstrap: ``G_T``, the value after the last step, ``[...]``.

    Returns:
        ``G``, ``[T, ...]``.
    """

    def body(carry: jax.Array, x: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        r, d = x
        carry = r + gamma * (1.0 - d) * carry
        return carry, carry

    _, ret = jax.lax.scan(body, bootstrap, (rewards, dones.astype(rewards.dtype)), reverse=True)
    return ret


__all__ = ["discounted_cumsum", "discounted_returns", "gae", "td_errors", "td_lambda_targets"]
