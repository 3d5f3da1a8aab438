"""PPO-TARE's update (Algorithm 1 with PPO inside): collect, the learned reward on the
rollout, and per round (the halves swapped on the second) the inner step (epochs of
PPO minibatch steps on the training half with ``r_phi``'s advantages, ``phi`` fixed)
then the reward step (the implicit hypergradient on the validation half).

"Taming Reward: learning parameterised rewards for policy gradient by implicit
differentiation", Algorithm 1, eq. 11.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from metareward.algos.tare import core
from metareward.algos.tare.reward import eq11_loss, learned_reward, param_advantage, reward_update
from metareward.aliases import Metrics
from metareward.rl.grads import clipped_step
from metareward.rl.losses import ppo_loss
from metareward.rl.rollout import episodic_sum
from metareward.rl.shuffle import permutation
from metareward.rl.stats import standardize

Batch = dict[str, jax.Array]


def inner_loss(parts: core.Parts, theta: jax.Array, batch: Batch) -> tuple[jax.Array, Metrics]:
    """The policy's loss on a minibatch (eq. 11 with ``A_phi``): PPO's clipped surrogate
    (``policy_objective="clipped"``, the paper's "PPO") or eq. 11 itself (``"eq11"``),
    plus ``V``'s regression on the parameterised returns and ``V_ex``'s on the extrinsic
    ones (each weighted by ``vf_coef``).

    Args:
      parts: The static parts.
      theta: The flat ``{policy, value, value_ex}`` (``opt_state["agent"]``'s vector).
      batch: ``obs, action, log_prob, adv, target, v, ret_ex`` per sample.

    Returns:
      ``(loss, metrics)``.
    """
    c = parts.config
    p = parts.unravel["agent"](theta)
    dist = parts.policy.apply(p["policy"], batch["obs"])
    logp = dist.log_prob(batch["action"])
    v = parts.value.apply(p["value"], batch["obs"])
    v_ex = parts.value.apply(p["value_ex"], batch["obs"])
    adv = batch["adv"]
    if c.normalize_advantages:
        adv = standardize(adv)
    if c.policy_objective == "clipped":
        loss, aux = ppo_loss(logp, batch["log_prob"], adv, v, batch["v"], batch["target"],
                             dist.entropy(), clip_eps=c.clip_eps, vf_coef=c.vf_coef,
                             ent_coef=c.ent_coef, vf_clip_eps=c.vf_clip_eps)
    else:  # eq. 11, what the hypergradient differentiates
        pl, aux = eq11_loss(logp, batch["log_prob"], adv, dist.entropy(), c.kl_coef,
                            c.ent_coef)
        value_loss = 0.5 * jnp.mean((v - batch["target"]) ** 2)
        loss = pl + c.vf_coef * value_loss
        aux = {**aux, "policy_loss": pl, "value_loss": value_loss,
               "entropy": jnp.mean(dist.entropy())}
    v_ex_loss = 0.5 * jnp.mean((v_ex - batch["ret_ex"]) ** 2)
    return loss + c.vf_coef * v_ex_loss, {**aux, "value_ex_loss": v_ex_loss}


def minibatch_step(parts: core.Parts, carry: tuple[jax.Array, Any, jax.Array], batch: Batch
                   ) -> tuple[tuple[jax.Array, Any, jax.Array], Metrics]:
    """One Adam step of ``theta`` on :func:`inner_loss`, the gradient clipped at
    ``max_grad_norm`` (:func:`metareward.rl.grads.clipped_step`, as every learner's step);
    a non-finite loss or gradient feeds Adam a zero gradient, keeps ``theta`` and is
    counted.

    Args:
      parts: The static parts.
      carry: ``(theta, its Adam state, skipped steps)``.
      batch: The minibatch.

    Returns:
      ``(carry, metrics)``.
    """
    theta, opt, bad = carry
    theta, opt, ok, loss, aux = clipped_step(
        lambda th: inner_loss(parts, th, batch), parts.optimizers["agent"], theta, opt,
        parts.config.max_grad_norm)
    return (theta, opt, bad + (~ok)), {"loss": loss, **aux}


def inner_step(parts: core.Parts, theta: jax.Array, opt: Any, bad: jax.Array, phi: jax.Array,
               seg_tr: core.Segment, key: jax.Array
               ) -> tuple[tuple[jax.Array, Any, jax.Array], Metrics]:
    """Algorithm 1, lines 4-6 (PPO): ``num_epochs`` epochs of ``num_minibatches`` minibatch
    steps on the training half, the advantages ``A_phi`` computed once with ``phi``
    fixed (under ``stop_gradient``: arrays from here on).

    Args:
      parts: The static parts.
      theta: The flat agent.
      opt: Its Adam state.
      bad: The count of skipped steps.
      phi: The flat reward parameters.
      seg_tr: The training half ``[T, N/2]``.
      key: The epochs' permutation key.

    Returns:
      ``((theta, opt, bad), per-step metrics [epochs, minibatches])``.
    """
    c = parts.config
    n = c.num_steps * parts.half
    mb = n // c.num_minibatches
    adv, target = param_advantage(parts, phi, seg_tr)
    data = {"obs": seg_tr.obs, "action": seg_tr.action, "log_prob": seg_tr.log_prob,
            "adv": adv, "target": target, "v": seg_tr.v, "ret_ex": seg_tr.ret_ex}
    data = jax.tree.map(lambda x: x.reshape((-1, *x.shape[2:])), data)

    def epoch(carry, k):
        perm = permutation(k, n)
        mbs = jax.tree.map(lambda x: x[perm].reshape((c.num_minibatches, mb, *x.shape[1:])),
                           data)
        return jax.lax.scan(lambda cr, b: minibatch_step(parts, cr, b), carry, mbs)

    return jax.lax.scan(epoch, (theta, opt, bad), jax.random.split(key, c.num_epochs))


def round_step(parts: core.Parts, seg: core.Segment, carry: tuple, xs: tuple[jax.Array, jax.Array]
               ) -> tuple[tuple, Metrics]:
    """One round: the inner step on the training half, then the reward step
    (:func:`metareward.algos.tare.reward.reward_update`) with the trained policy.

    Args:
      parts: The static parts.
      seg: The rollout ``[T, N]``.
      carry: ``(theta, opt_agent, phi, opt_reward, nonfinite)``.
      xs: ``(columns [2, N/2] (training, validation), key)``.

    Returns:
      ``(carry, metrics)``.
    """
    theta, opt_theta, phi, opt_phi, bad = carry
    cols, k = xs
    seg_tr, seg_va = core.take(seg, cols[0]), core.take(seg, cols[1])
    (theta, opt_theta, bad), losses = inner_step(parts, theta, opt_theta, bad, phi, seg_tr, k)
    pol = core.flat_params(parts.unravel["agent"](theta), "policy")
    phi, opt_phi, bad_r, rmetrics = reward_update(parts, pol, phi, opt_phi, seg_tr, seg_va)
    metrics = {**jax.tree.map(jnp.mean, losses), **rmetrics}
    return (theta, opt_theta, phi, opt_phi, bad + bad_r), metrics


def update(parts: core.Parts, state: core.TareState) -> tuple[core.TareState, Metrics]:
    """One iteration of PPO-TARE (Algorithm 1): collect, the learned reward on the
    rollout, ``rounds`` of (inner step, reward step).

    Args:
      parts: The static parts (a :class:`~metareward.algos.tare.Config`).
      state: The train state.

    Returns:
      ``(state, metrics)``.
    """
    state, traj, time, key = core.collect(parts, state)
    seg = core.make_segment(parts, state.params, state.obs_stats, state.reward_stats,
                            core.rollout_rows(traj, time), traj.log_prob)
    r_phi = learned_reward(parts, state.params["reward"], seg)
    param_run, param_ret = episodic_sum(state.param_return, r_phi, traj.done)
    k_split, k_rounds = jax.random.split(key)
    theta = core.flat_params(state.params, "agent")
    phi = core.flat_params(state.params, "reward")
    carry = (theta, state.opt_state["agent"], phi, state.opt_state["reward"],
             state.nonfinite)
    (theta, opt_theta, phi, opt_phi, nonfinite), metrics = jax.lax.scan(
        lambda cr, xs: round_step(parts, seg, cr, xs), carry,
        (core.split_columns(parts, k_split), jax.random.split(k_rounds, parts.rounds)))
    params = {**parts.unravel["agent"](theta), **parts.unravel["reward"](phi)}
    return core.finish_update(parts, state, traj, r_phi, metrics, params=params,
                              opt_state={"agent": opt_theta, "reward": opt_phi},
                              nonfinite=nonfinite, param_return=param_run, param_mean=param_ret)


__all__ = ["inner_loss", "inner_step", "minibatch_step", "round_step", "update"]
