"""AWR-TARE's update (Algorithm 1 with AWR inside): collect into the replay buffer, the
learned reward on the rollout, and per round (the halves of the buffer's env columns
swapped on the second) the inner step (AWR's value then policy regressions on the
training half with ``r_phi``'s TD(lambda) advantages, ``phi`` fixed) then the reward
step (the implicit hypergradient on entries drawn from each half).

"Taming Reward: learning parameterised rewards for policy gradient by implicit
differentiation", Algorithm 1, eq. 12; AWR's
value and policy steps as :mod:`metareward.algos.awr` (Peng et al. 2019, Algorithm 1).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metareward.algos.tare import core, reward
from metareward.aliases import Metrics, Params
from metareward.rl import replay
from metareward.rl.grads import clipped_step
from metareward.rl.losses import action_bound_penalty, awr_policy_loss, awr_weights
from metareward.rl.normalize import RunningStats
from metareward.rl.rollout import Transition, episodic_sum

Index = tuple[jax.Array, jax.Array]


class BufferData(NamedTuple):
    """What an update's rounds read: the buffer's rows ``[L, N]`` (``done`` set on the
    last invalid row, so that no recurrence carries from the empty rows into the first
    valid one), its number of valid rows and ``[L]`` mask, the update's starting
    parameters and the statistics after the rollout."""

    rows: replay.Row
    size: jax.Array
    valid: jax.Array
    params: Params
    obs_stats: RunningStats
    reward_stats: RunningStats


def buffer_data(parts: core.Parts, state: core.TareState, traj: Transition, time: jax.Array
                ) -> tuple[replay.ReplayBuffer, BufferData]:
    """Appends the rollout to the replay buffer (flattened raw observations, raw
    rewards, the time in the episode) and reads it back for the rounds.

    Args:
      parts: The static parts.
      state: The state after :func:`~metareward.algos.tare.core.collect`.
      traj: The rollout.
      time: Its steps' times.

    Returns:
      ``(the new buffer, BufferData)``.
    """
    row = replay.Row.from_rollout(traj, parts.flatten_obs, time=time)
    buf = replay.insert(state.buffer, row)
    L = parts.buffer_rows
    done = jnp.where((jnp.arange(L) == L - buf.size - 1)[:, None], 1.0, buf.data.done)
    data = BufferData(rows=buf.data._replace(done=done), size=buf.size,
                      valid=replay.valid_mask(buf), params=state.params,
                      obs_stats=state.obs_stats, reward_stats=state.reward_stats)
    return buf, data


def buffer_segment(parts: core.Parts, data: BufferData,
                   vals: jax.Array | None = None) -> core.Segment:
    """The whole buffer as a :class:`~metareward.algos.tare.core.Segment` ``[L, N]``.

    Args:
      parts: The static parts.
      data: The buffer.
      vals: The flat ``{value, value_ex}`` parameters to value it with (``None``: the
        update's starting values, ``data.params``).

    Returns:
      The segment ``[L, N]``.
    """
    p = data.params if vals is None else {**data.params, **parts.unravel["value"](vals)}
    return core.make_segment(parts, p, data.obs_stats, data.reward_stats, data.rows, None)


def sample_entries(parts: core.Parts, size: jax.Array, key: jax.Array, n: int) -> Index:
    """``n`` entries ``(t, e)`` drawn uniformly, with replacement, from the valid rows of
    a half's ``N/2`` columns.

    Args:
      parts: The static parts (``buffer_rows``, ``half``).
      size: The buffer's number of valid rows (its newest rows).
      key: PRNG key.
      n: Number of entries.

    Returns:
      ``(t, e)``: row indices into the buffer ``[n]`` and column indices into the
      half ``[n]``.
    """
    num = jnp.maximum(size, 1)
    t = parts.buffer_rows - num + jax.random.randint(key, (n,), 0, num)
    e = jax.random.randint(jax.random.fold_in(key, 1), (n,), 0, parts.half)
    return t, e


def sgd_steps(loss_fn: Callable, optimizer: optax.GradientTransformation, flat: jax.Array,
              opt_state: Any, bad: jax.Array, sample: Callable[[jax.Array], Any],
              key: jax.Array, num_steps: int, max_grad_norm: float | None = None
              ) -> tuple[jax.Array, Any, jax.Array, Metrics]:
    """``num_steps`` minibatch steps of ``optimizer`` on ``loss_fn(flat, batch)``,
    ``batch = sample(key)`` (:func:`metareward.rl.grads.clipped_step`, the gradient's
    global norm clipped at ``max_grad_norm``; ``None``: unclipped, the authors'); a
    non-finite loss or gradient is skipped and counted.

    Args:
      loss_fn: ``loss_fn(flat, batch) -> (loss, metrics)``.
      optimizer: The optimiser of ``flat``.
      flat: The flat parameters.
      opt_state: Their optimiser state.
      bad: The count of skipped steps so far.
      sample: ``sample(key) -> batch``.
      key: PRNG key, split into one per step.
      num_steps: Number of steps.
      max_grad_norm: Global-norm clip of the gradient (``None``: unclipped).

    Returns:
      ``(flat, opt_state, bad, mean metrics)``.
    """

    def step(carry, k):
        flat, opt_state, bad = carry
        batch = sample(k)
        flat, opt_state, ok, _, aux = clipped_step(lambda f: loss_fn(f, batch), optimizer,
                                                   flat, opt_state, max_grad_norm)
        return (flat, opt_state, bad + (~ok)), aux

    (flat, opt_state, bad), m = jax.lax.scan(step, (flat, opt_state, bad),
                                             jax.random.split(key, num_steps))
    return flat, opt_state, bad, jax.tree.map(jnp.mean, m)


def value_loss(parts: core.Parts, vals: jax.Array, batch: tuple) -> tuple[jax.Array, Metrics]:
    """AWR's value regression (Algorithm 1, value step): ``V`` on the parameterised
    TD(lambda) targets, ``V_ex`` on the extrinsic ones, in the net's normalised units
    (targets over ``value_scale``).

    Args:
      parts: The static parts.
      vals: The flat ``{value, value_ex}`` parameters.
      batch: ``(obs, target, target_ex)``: a minibatch of observations and the
        parameterised and extrinsic TD(lambda) targets.

    Returns:
      ``(loss, metrics)``: the sum of the two regressions, and each
      (``value_loss``, ``value_ex_loss``).
    """
    q = parts.unravel["value"](vals)
    obs, tgt, tgt_ex = batch
    scale = parts.value_scale
    lv = 0.5 * jnp.mean(jnp.square(parts.value.apply(q["value"], obs) - tgt / scale))
    lx = 0.5 * jnp.mean(jnp.square(parts.value.apply(q["value_ex"], obs) - tgt_ex / scale))
    return lv + lx, {"value_loss": lv, "value_ex_loss": lx}


def policy_loss(parts: core.Parts, pol: jax.Array, batch: tuple) -> tuple[jax.Array, Metrics]:
    """AWR's policy regression (eqs. 4, 12): ``-E[w log pi(a|s)]``, plus for continuous
    actions the AWR code's penalty on Gaussian means outside the action bounds
    (:func:`metareward.rl.losses.action_bound_penalty`).

    Args:
      parts: The static parts.
      pol: The flat policy parameters.
      batch: ``(obs, action, weight)``: a minibatch of observations, actions and their
        advantage weights ``w``.

    Returns:
      ``(loss, metrics)`` (``policy_loss``, ``entropy``, ``weight_mean``).
    """
    c = parts.config
    obs, action, w = batch
    dist = reward.policy_dist(parts, core.policy_params(parts, pol), obs)
    loss = awr_policy_loss(dist.log_prob(action), w)
    aux = {"policy_loss": loss, "entropy": jnp.mean(dist.entropy()),
           "weight_mean": jnp.mean(w)}
    if not parts.spec.discrete:
        loss = loss + c.action_bound_coef * action_bound_penalty(
            dist.mean, parts.action_low, parts.action_high)
    return loss, aux


def value_step(parts: core.Parts, data: BufferData, vals: jax.Array, opt_vals: Any,
               bad: jax.Array, phi: jax.Array, cols: jax.Array, key: jax.Array
               ) -> tuple[jax.Array, Any, jax.Array, Metrics]:
    """Algorithm 1, lines 4-6 (AWR), first half: ``value_steps`` SGD-momentum steps of
    :func:`value_loss` on minibatches of the training half, the targets computed once
    with ``phi`` fixed and the current values.

    Args:
      parts: The static parts.
      data: The buffer.
      vals: The flat ``{value, value_ex}`` parameters.
      opt_vals: Their optimiser state.
      bad: The count of skipped steps so far.
      phi: The flat reward parameters.
      cols: The training half's env columns ``[N/2]``.
      key: PRNG key.

    Returns:
      ``(vals, opt_vals, bad, metrics)``.
    """
    c = parts.config
    seg_tr = core.take(buffer_segment(parts, data, vals), cols)
    target = reward.param_advantage(parts, phi, seg_tr)[1]

    def batch(k):
        t, e = sample_entries(parts, data.size, k, c.value_batch_size)
        return seg_tr.obs[t, e], target[t, e], seg_tr.ret_ex[t, e]

    return sgd_steps(partial(value_loss, parts), parts.optimizers["value"], vals, opt_vals,
                     bad, batch, key, c.value_steps, c.max_grad_norm)


def policy_step(parts: core.Parts, data: BufferData, pol: jax.Array, opt_pol: Any, bad: jax.Array,
                phi: jax.Array, seg_tr: core.Segment, key: jax.Array
                ) -> tuple[jax.Array, Any, jax.Array, Metrics]:
    """Algorithm 1, lines 4-6 (AWR), second half: ``policy_steps`` SGD-momentum steps of
    :func:`policy_loss` on minibatches of the training half, weighted by ``exp(A_phi /
    beta)`` (clipped; advantages under the updated values, normalised over the valid
    rows, ``phi`` fixed).

    Args:
      parts: The static parts.
      data: The buffer (its ``size`` and ``valid`` mask).
      pol: The flat policy parameters.
      opt_pol: Their optimiser state.
      bad: The count of skipped steps so far.
      phi: The flat reward parameters.
      seg_tr: The training half of the buffer ``[L, N/2]``, valued with the updated
        values (:func:`buffer_segment`).
      key: PRNG key.

    Returns:
      ``(pol, opt_pol, bad, metrics)``.
    """
    c = parts.config
    adv = reward.param_advantage(parts, phi, seg_tr)[0]
    mean, std = reward.valid_mean_std(adv, data.valid)
    adv_n = (adv - mean) / (std + 1e-5) if c.normalize_advantages else adv
    weights = awr_weights(adv_n, c.temperature, c.weight_clip)

    def batch(k):
        t, e = sample_entries(parts, data.size, k, c.policy_batch_size)
        return seg_tr.obs[t, e], seg_tr.action[t, e], weights[t, e]

    return sgd_steps(partial(policy_loss, parts), parts.optimizers["policy"], pol, opt_pol,
                     bad, batch, key, c.policy_steps, c.max_grad_norm)


def round_step(parts: core.Parts, data: BufferData, carry: tuple,
               xs: tuple[jax.Array, jax.Array]) -> tuple[tuple, Metrics]:
    """One round: the value step, the policy step, then the reward step
    (:func:`metareward.algos.tare.reward.reward_update`) on ``hypergrad_batch`` entries
    drawn from each half.

    Args:
      parts: The static parts.
      data: The buffer.
      carry: ``(pol, vals, opt_policy, opt_value, phi, opt_reward, nonfinite)``.
      xs: ``(columns [2, N/2] (training, validation), key)``.

    Returns:
      ``(carry, metrics)``.
    """
    pol, vals, opt_pol, opt_vals, phi, opt_phi, bad = carry
    cols, k = xs
    k_v, k_pi, k_tr, k_va = jax.random.split(k, 4)
    vals, opt_vals, bad, vm = value_step(parts, data, vals, opt_vals, bad, phi, cols[0], k_v)
    seg_all = buffer_segment(parts, data, vals)
    seg_tr, seg_va = core.take(seg_all, cols[0]), core.take(seg_all, cols[1])
    pol, opt_pol, bad, pm = policy_step(parts, data, pol, opt_pol, bad, phi, seg_tr, k_pi)
    n = parts.config.hypergrad_batch
    idx_tr = sample_entries(parts, data.size, k_tr, n)
    idx_va = sample_entries(parts, data.size, k_va, n)
    phi, opt_phi, bad_r, rm = reward.reward_update(parts, pol, phi, opt_phi, seg_tr, seg_va, idx_tr,
                                                   idx_va, data.valid)
    return (pol, vals, opt_pol, opt_vals, phi, opt_phi, bad + bad_r), {**vm, **pm, **rm}


def update(parts: core.Parts, state: core.TareState) -> tuple[core.TareState, Metrics]:
    """One iteration of AWR-TARE (Algorithm 1): collect into the buffer, the learned
    reward on the rollout's rows, ``rounds`` of (value step, policy step, reward step).

    Args:
      parts: The static parts (an :class:`~metareward.algos.tare.AWRConfig`).
      state: The train state.

    Returns:
      ``(state, metrics)``.
    """
    c = parts.config
    state, traj, time, key = core.collect(parts, state)
    buf, data = buffer_data(parts, state, traj, time)
    seg = buffer_segment(parts, data)
    newest = jax.tree.map(lambda x: x[parts.buffer_rows - c.num_steps:], seg)
    r_phi = reward.learned_reward(parts, state.params["reward"], newest)
    param_run, param_ret = episodic_sum(state.param_return, r_phi, traj.done)
    k_split, k_rounds = jax.random.split(key)
    p, opt = state.params, state.opt_state
    carry = (core.flat_params(p, "policy"), core.flat_params(p, "value"), opt["policy"],
             opt["value"], core.flat_params(p, "reward"), opt["reward"], state.nonfinite)
    (pol, vals, opt_pol, opt_vals, phi, opt_phi, nonfinite), metrics = jax.lax.scan(
        lambda cr, xs: round_step(parts, data, cr, xs), carry,
        (core.split_columns(parts, k_split), jax.random.split(k_rounds, parts.rounds)))
    params = {**parts.unravel["policy"](pol), **parts.unravel["value"](vals),
              **parts.unravel["reward"](phi)}
    return core.finish_update(parts, state, traj, r_phi, metrics, params=params,
                              opt_state={"policy": opt_pol, "value": opt_vals, "reward": opt_phi},
                              buffer=buf, nonfinite=nonfinite, param_return=param_run,
                              param_mean=param_ret,
                              extra={"buffer_size": buf.size * c.num_envs})


__all__ = ["BufferData", "buffer_data", "buffer_segment", "policy_loss", "policy_step",
           "round_step", "sample_entries", "sgd_steps", "update", "value_loss", "value_step"]
