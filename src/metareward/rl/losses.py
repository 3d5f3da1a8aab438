"""Surrogate losses of the on-policy learners. All are minimised."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ppo_loss(
    log_prob: jax.Array,
    old_log_prob: jax.Array,
    advantages: jax.Array,
    values: jax.Array,
    old_values: jax.Array,
    targets: jax.Array,
    entropy: jax.Array,
    *,
    clip_eps: float | jax.Array,
    vf_coef: float | jax.Array,
    ent_coef: float | jax.Array,
    vf_clip_eps: float | jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7 and eq. 9).

    ``L = -E[min(rho A, clip(rho, 1-eps, 1+eps) A)] + c_v L_V - c_e E[H]`` with
    ``rho = exp(log_prob - old_log_prob)`` and ``L_V = 0.5 E[(V - target)^2]``, or with
    ``vf_clip_eps`` the clipped value loss of OpenAI baselines' ppo2
    ``0.5 E[max((V - t)^2, (V_old + clip(V - V_old, -c, c) - t)^2)]``.
    Advantages are used as given (normalise them before, if wanted).

    Args:
        log_prob: ``log pi(a|s)`` of the taken actions under the current policy ``[B]``.
        old_log_prob: Their log-probabilities under the rollout's policy ``[B]``.
        advantages: ``A`` ``[B]``.
        values: ``V(s)`` of the current value net ``[B]``.
        old_values: ``V_old(s)`` at the rollout (read only with ``vf_clip_eps``) ``[B]``.
        targets: The value targets ``[B]``.
        entropy: The policy's entropy at each ``s`` ``[B]``.
        clip_eps: ``eps``, the ratio's clip range.
        vf_coef: ``c_v``.
        ent_coef: ``c_e``.
        vf_clip_eps: ``c``, the value clip range (``None``: unclipped value loss).

    Returns:
        ``(loss, aux)``; aux holds ``policy_loss, value_loss, entropy, approx_kl``
        (``E[(rho - 1) - log rho]``) and ``clip_frac``.
    """
    log_ratio = log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    policy_loss = -jnp.mean(jnp.minimum(unclipped, clipped))
    if vf_clip_eps is None:
        value_loss = 0.5 * jnp.mean((values - targets) ** 2)
    else:
        v_clip = old_values + jnp.clip(values - old_values, -vf_clip_eps, vf_clip_eps)
        value_loss = 0.5 * jnp.mean(jnp.maximum((values - targets) ** 2, (v_clip - targets) ** 2))
    ent = jnp.mean(entropy)
    loss = policy_loss + vf_coef * value_loss - ent_coef * ent
    aux = {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": ent,
        "approx_kl": jnp.mean((ratio - 1.0) - log_ratio),
        "clip_frac": jnp.mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32)),
    }
    return loss, aux


def a2c_loss(
    log_prob: jax.Array,
    advantages: jax.Array,
    values: jax.Array,
    targets: jax.Array,
    entropy: jax.Array,
    *,
    vf_coef: float | jax.Array,
    ent_coef: float | jax.Array,
    stop_advantage_gradient: bool = True,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Advantage actor-critic loss (Mnih et al. 2016, "Asynchronous Methods for Deep
    Reinforcement Learning", Algorithm S3).

    ``L = -E[log pi(a|s) sg(A)] + c_v 0.5 E[(V - target)^2] - c_e E[H]``.

    Args:
        log_prob: ``log pi(a|s)`` of the taken actions.
        advantages: ``A``.
        values: ``V(s)``.
        targets: The value targets.
        entropy: The policy's entropy at each ``s``.
        vf_coef: ``c_v``.
        ent_coef: ``c_e``.
        stop_advantage_gradient: Treat ``A`` as a constant (``sg``, the paper's policy
            gradient: ``A`` is computed from ``V``, whose own loss is the second term).
            ``False`` lets gradients reach ``A``, e.g. a learned reward it was built
            from (a meta-gradient through the policy loss).

    Returns:
        ``(loss, aux)``; aux holds ``policy_loss``, ``value_loss`` and ``entropy``.
    """
    if stop_advantage_gradient:
        advantages = jax.lax.stop_gradient(advantages)
    policy_loss = -jnp.mean(log_prob * advantages)
    value_loss = 0.5 * jnp.mean((values - targets) ** 2)
    ent = jnp.mean(entropy)
    loss = policy_loss + vf_coef * value_loss - ent_coef * ent
    return loss, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": ent}


def awr_weights(
    advantages: jax.Array,
    temperature: float | jax.Array,
    weight_clip: float | jax.Array,
) -> jax.Array:
    """Advantage weights of AWR: ``w = min(exp(A / beta), w_max)``.

    Peng et al. 2019 ("Advantage-Weighted Regression", arXiv:1910.00177), Algorithm 1,
    policy step: the policy regresses on actions weighted by ``exp(A / beta)``; TARE
    eq. 4, and eq. 12 with a learned reward.
    ``weight_clip`` (``w_max``, 20 in the authors' code) bounds the weight of rare large
    advantages. Differentiable in ``advantages`` (zero gradient where clipped): TARE
    differentiates the policy step with respect to a learned reward through them; AWR
    itself treats them as constants.

    Args:
        advantages: ``A`` (any shape).
        temperature: ``beta`` (> 0).
        weight_clip: ``w_max``.

    Returns:
        ``w``, ``advantages``' shape.
    """
    return jnp.minimum(jnp.exp(advantages / temperature), weight_clip)


def awr_policy_loss(log_prob: jax.Array, weights: jax.Array) -> jax.Array:
    """AWR's weighted log-likelihood, negated to be minimised: ``L = -E[w log pi(a|s)]``
    (Peng et al. 2019, Algorithm 1; TARE eq. 4 with ``w = exp(A / beta)`` from
    :func:`awr_weights`).

    Args:
        log_prob: ``log pi(a|s)`` of the taken actions.
        weights: ``w``, the same shape.

    Returns:
        The scalar loss.
    """
    return -jnp.mean(weights * log_prob)


def action_bound_penalty(mean: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
    """The AWR code's penalty on Gaussian means outside the action bounds (``xbpeng/awr``,
    ``action_bound_loss``; not in the paper): ``0.5 E[sum_i (min(mu_i - lo_i, 0)^2 +
    max(mu_i - hi_i, 0)^2)]``.

    Args:
        mean: The policy's means ``mu``, ``[B, A]``.
        low: The lower action bounds ``[A]``.
        high: The upper action bounds ``[A]``.

    Returns:
        The penalty, a scalar.
    """
    violation = jnp.sum(jnp.square(jnp.minimum(mean - low, 0.0))
                        + jnp.square(jnp.maximum(mean - high, 0.0)), axis=-1)
    return 0.5 * jnp.mean(violation)


__all__ = ["a2c_loss", "action_bound_penalty", "awr_policy_loss", "awr_weights", "ppo_loss"]
