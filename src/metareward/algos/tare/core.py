"""TARE's static parts, its state, and the stages both flavours share: initialisation,
collecting experience (Algorithm 1, line 2), laying it out as a :class:`Segment`, the
train/validation split of the env columns, and the end of an update (metrics, state).

"Taming Reward: learning parameterised rewards for policy gradient by implicit
differentiation", Algorithm 1 and Appendix F.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from brax.envs.base import Env
from flax import struct
from jax.flatten_util import ravel_pytree

from metareward.algos import common
from metareward.algos.tare.config import AWRConfig, Config
from metareward.aliases import Metrics, Params
from metareward.envs.spec import EnvSpec
from metareward.rl import replay
from metareward.rl.gae import gae, td_errors
from metareward.rl.normalize import RunningStats
from metareward.rl.rollout import Transition, episode_metrics, rollout, sampler
from metareward.rl.shuffle import permutation

#: The parameter groups each optimiser state steps (the keys of ``TareState.opt_state``):
#: PPO's one Adam over policy and values (``"agent"``), AWR's SGD on the policy
#: (``"policy"``) and on the two value nets (``"value"``), and Adam on the reward.
PARAM_GROUPS: dict[str, tuple[str, ...]] = {
    "agent": ("policy", "value", "value_ex"),
    "policy": ("policy",),
    "value": ("value", "value_ex"),
    "reward": ("reward",),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Parts:
    """What stays fixed through a run, built once by :func:`metareward.algos.tare.make_parts`:
    the config, the env (batched as ``venv``), the nets, the optimisers (keyed like
    ``TareState.opt_state``), the maps from flat parameter vectors back to parameter
    groups (``unravel[key](flat) -> {name: params}``, keyed like :data:`PARAM_GROUPS`),
    the observation preprocessing and the sizes of a run."""

    config: Config | AWRConfig
    spec: EnvSpec
    venv: Env
    policy: nn.Module
    value: nn.Module
    reward_net: nn.Module
    optimizers: dict[str, optax.GradientTransformation]
    unravel: dict[str, Callable[[jax.Array], dict[str, Params]]]
    flatten_obs: Callable[[jax.Array], jax.Array]
    prep: Callable[[RunningStats, jax.Array], jax.Array]
    num_updates: int
    #: 2 with ``swap`` (the halves swap roles), else 1.
    rounds: int
    #: AWR: rows of the replay buffer (``buffer_size // num_envs``); PPO: 0.
    buffer_rows: int
    #: ``V`` in return units is ``value_scale`` times the net (AWR: ``1 / (1 - gamma)``).
    value_scale: Any
    #: Continuous actions: the env's action bounds (AWR's penalty); else None.
    action_low: jax.Array | None
    action_high: jax.Array | None

    @property
    def is_ppo(self) -> bool:
        """Whether the inner learner is PPO (the config's class picks it)."""
        return isinstance(self.config, Config)

    @property
    def half(self) -> int:
        """Env columns in each of the training and validation halves."""
        return self.config.num_envs // 2


@struct.dataclass
class TareState(common.LearnerState):
    """What TARE carries between updates (a pytree).

    ``params = {"policy", "value", "value_ex", "reward"}``: ``theta`` is the policy (the
    parameters the implicit derivative is taken for) with ``V`` (parameterised returns)
    and ``V_ex`` (extrinsic returns); ``phi`` the learned reward. ``opt_state``: a dict
    keyed by what each optimiser state steps (:data:`PARAM_GROUPS`), each over the flat
    vector of its group: PPO ``{"agent": Adam over {policy, value, value_ex}, "reward":
    Adam}``; AWR ``{"policy": SGD-momentum, "value": SGD-momentum over {value,
    value_ex}, "reward": Adam}``. ``reward_stats`` normalise the extrinsic reward fed to
    ``r_phi``; ``episode_step`` is each env's step within its episode; ``param_return``
    its running sum of ``r_phi``. ``buffer`` is AWR's replay buffer of
    :class:`metareward.rl.replay.Row` (``None`` for PPO).
    """

    obs_stats: RunningStats
    reward_stats: RunningStats
    episode_step: jax.Array
    param_return: jax.Array
    buffer: Any = None


class Segment(NamedTuple):
    """Experience laid out time-major ``[T, N]`` (a rollout, or AWR's buffer): what the
    reward net, the advantages and the objectives need. ``obs`` normalised; ``r_in``
    the reward net's extrinsic-reward input (normalised); ``t_in`` its time input (the
    step in the episode over the env's time limit); ``td_v`` the TD errors of ``V``
    without the reward (``gamma (1 - term) V(s') - V(s)``), ``v`` / ``v_ex`` the values;
    ``adv_ex`` / ``ret_ex`` the extrinsic advantages and targets; ``lam_disc`` =
    ``gamma lambda_param (1 - done)`` (PPO) or ``gamma lambda_td (1 - done)`` (AWR).
    ``log_prob`` (the behaviour policy's) is ``None`` in AWR's buffer segments."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array | None
    r_ex: jax.Array
    r_in: jax.Array
    t_in: jax.Array
    done: jax.Array
    td_v: jax.Array
    v: jax.Array
    v_ex: jax.Array
    adv_ex: jax.Array
    ret_ex: jax.Array
    lam_disc: jax.Array


def flat_params(params: Params, group: str) -> jax.Array:
    """The flat vector of a parameter group (:data:`PARAM_GROUPS`), what its optimiser
    steps; ``Parts.unravel[group]`` maps it back.

    Args:
      params: The parameter dict, by net (``policy``, ``value``, ``value_ex``,
        ``reward``).
      group: A key of :data:`PARAM_GROUPS`.

    Returns:
      The group's parameters raveled into one vector.
    """
    return ravel_pytree({k: params[k] for k in PARAM_GROUPS[group]})[0]


def policy_params(parts: Parts, pol: jax.Array) -> Params:
    """The policy's parameter tree from its flat vector.

    Args:
      parts: The static parts.
      pol: The flat ``policy`` group (:func:`flat_params`).

    Returns:
      The policy net's parameters.
    """
    return parts.unravel["policy"](pol)["policy"]


def init_params(policy: nn.Module, value: nn.Module, reward_net: nn.Module, spec: EnvSpec,
                keys: tuple[jax.Array, ...]) -> Params:
    """Initial ``{"policy", "value", "value_ex", "reward"}`` from four keys.

    Args:
      policy: The policy net.
      value: The value net (initialised twice: ``V`` and ``V_ex``).
      reward_net: The reward net, with TARE's signature ``(obs, action, reward, t, done)``.
      spec: The env's spec (observation and action sizes).
      keys: ``(k_policy, k_value, k_value_ex, k_reward)``.

    Returns:
      The parameter dict of :class:`TareState`.
    """
    k_pi, k_v, k_vx, k_r = keys
    dummy, dummy_a = common.example_inputs(spec)
    z1 = jnp.zeros((1,), jnp.float32)
    return {
        **common.actor_critic_params(policy, value, spec, k_pi, k_v),
        "value_ex": value.init(k_vx, dummy),
        "reward": reward_net.init(k_r, dummy, dummy_a, z1, z1, z1),
    }


def init(parts: Parts, key: jax.Array) -> TareState:
    """A fresh state: nets, optimiser states, statistics, envs reset (and AWR's empty
    buffer).

    Args:
      parts: The static parts.
      key: The run's key.

    Returns:
      The initial :class:`TareState`.
    """
    k_pi, k_v, k_vx, k_r, k_env, key = jax.random.split(key, 6)
    params = init_params(parts.policy, parts.value, parts.reward_net, parts.spec,
                         (k_pi, k_v, k_vx, k_r))
    opt_state = {k: opt.init(flat_params(params, k)) for k, opt in parts.optimizers.items()}
    n = parts.config.num_envs
    buffer = None
    if not parts.is_ppo:
        row = replay.Row.example(parts.spec, n, with_time=True)
        buffer = replay.init(row, parts.buffer_rows)
    return TareState(
        params=params,
        opt_state=opt_state,
        reward_stats=RunningStats.create(()),
        **common.run_start(parts.spec, parts.venv, k_env, key),
        episode_step=jnp.zeros((n,), jnp.int32),
        param_return=jnp.zeros((n,), jnp.float32),
        buffer=buffer,
    )


#: Env actions of the current policy (:func:`metareward.algos.common.act_with_policy`).
act = common.act_with_policy


def collect(parts: Parts, state: TareState
            ) -> tuple[TareState, Transition, jax.Array, jax.Array]:
    """Algorithm 1, line 2: a rollout of ``num_steps`` steps of every env with the
    current policy, and the statistics it updates.

    Args:
      parts: The static parts.
      state: The train state.

    Returns:
      ``(state, traj, time, key)``: the state with envs, key, observation and reward
      statistics and episode steps advanced; the rollout ``[T, N]``; each step's time in
      its episode over the env's time limit ``[T, N]`` (the reward net's ``t`` input);
      the key for this update's learning.
    """
    key, k_roll, k_learn = jax.random.split(state.key, 3)
    params, stats = state.params, state.obs_stats

    policy_act = sampler(lambda obs: parts.policy.apply(params["policy"], parts.prep(stats, obs)))
    env_state, traj = rollout(parts.venv, state.env_state, policy_act, k_roll,
                              parts.config.num_steps)

    def count(step, done):
        return jnp.where(done > 0, 0, step + 1), step

    ep_step, t_idx = jax.lax.scan(count, state.episode_step, traj.done)
    new_stats = (stats.update_until(parts.flatten_obs(traj.obs), state.env_steps,
                                    parts.config.normalizer_samples)
                 if parts.config.normalize_obs else stats)
    reward_stats = state.reward_stats.update(traj.reward)
    state = state.replace(env_state=env_state, key=key, obs_stats=new_stats,
                          reward_stats=reward_stats, episode_step=ep_step)
    time = t_idx.astype(jnp.float32) / float(parts.spec.episode_length)
    return state, traj, time, k_learn


def rollout_rows(traj: Transition, time: jax.Array) -> replay.Row:
    """A rollout's steps as :class:`metareward.rl.replay.Row` ``[T, N]`` with ``time``
    (observations as the env gives them; the raw extrinsic reward).

    Args:
      traj: The rollout's transitions ``[T, N]``.
      time: Each step's time in its episode ``[T, N]``.

    Returns:
      The rows ``[T, N]``.
    """
    return replay.Row(obs=traj.obs, action=traj.action, reward=traj.reward, done=traj.done,
                      truncation=traj.truncation, next_obs=traj.next_obs, time=time)


def _lambdas(config: Config | AWRConfig) -> tuple[Any, Any]:
    """``(lambda of the extrinsic GAE, lambda of the parameterised advantage)``."""
    if isinstance(config, Config):
        return config.gae_lambda, config.param_gae_lambda
    return config.td_lambda, config.td_lambda


def values(parts: Parts, value_params: Params, obs_n: jax.Array) -> jax.Array:
    """``V(s)`` in return units (AWR: the net's output times ``1 / (1 - gamma)``, as the
    AWR code's value normalisation).

    Args:
      parts: The static parts (``value_scale``: ``1`` for PPO).
      value_params: A value net's parameters (``value`` or ``value_ex``).
      obs_n: Normalised observations ``[..., obs_size]``.

    Returns:
      The values ``[...]``.
    """
    return parts.value_scale * parts.value.apply(value_params, obs_n)


def make_segment(parts: Parts, params: Params, obs_stats: RunningStats,
                 reward_stats: RunningStats, rows: replay.Row,
                 log_prob: jax.Array | None) -> Segment:
    """Experience as the reward net, the advantages and the objectives read it
    (Appendix F: the reward net sees normalised observations, the raw actions, the
    extrinsic reward normalised by running statistics and the time in the episode).

    Args:
      parts: The static parts.
      params: The parameters (``"value"`` and ``"value_ex"`` are read).
      obs_stats: The running statistics of observations.
      reward_stats: The running statistics of rewards.
      rows: Time-major steps ``[T, N]`` with ``time``.
      log_prob: The behaviour policy's log-probabilities ``[T, N]`` (None for AWR).

    Returns:
      The :class:`Segment`, with the current values and the extrinsic advantages (GAE
      with ``gae_lambda`` for PPO, TD(lambda) for AWR).
    """
    c = parts.config
    obs_n, next_n = parts.prep(obs_stats, rows.obs), parts.prep(obs_stats, rows.next_obs)
    v = values(parts, params["value"], obs_n)
    v_ex = values(parts, params["value_ex"], obs_n)
    next_v = values(parts, params["value"], next_n)
    next_ex = values(parts, params["value_ex"], next_n)
    r_ex = rows.reward * c.reward_scale
    lam, p_lam = _lambdas(c)
    done, trunc = rows.done, rows.truncation
    adv_ex, ret_ex = gae(r_ex, v_ex, next_ex, done, trunc, c.gamma, lam)
    td_v = td_errors(jnp.zeros_like(r_ex), v, next_v, done, trunc, c.gamma)
    return Segment(
        obs=obs_n, action=rows.action, log_prob=log_prob, r_ex=r_ex,
        r_in=reward_stats.normalize(rows.reward), t_in=rows.time, done=done, td_v=td_v,
        v=v, v_ex=v_ex, adv_ex=adv_ex, ret_ex=ret_ex,
        lam_disc=c.gamma * p_lam * (1.0 - done),
    )


def rollout_segment(parts: Parts, state: TareState) -> tuple[TareState, Segment]:
    """Collects one rollout (:func:`collect`) and lays it out as a :class:`Segment`.

    Args:
      parts: The static parts.
      state: The train state.

    Returns:
      ``(state after the rollout, its Segment [T, N])``.
    """
    state, traj, time, _ = collect(parts, state)
    return state, make_segment(parts, state.params, state.obs_stats, state.reward_stats,
                               rollout_rows(traj, time), traj.log_prob)


def split_columns(parts: Parts, key: jax.Array) -> jax.Array:
    """Algorithm 1, line 2 and Appendix F's swap: a random split of the ``N`` env columns
    into a training and a validation half.

    Args:
      parts: The static parts.
      key: The split's key.

    Returns:
      ``[rounds, 2, N/2]`` column indices, (training, validation) per round; the second
      round (``swap``) swaps them.
    """
    perm = permutation(key, parts.config.num_envs)
    a, b = perm[:parts.half], perm[parts.half:]
    return jnp.stack([jnp.stack([a, b]), jnp.stack([b, a])])[:parts.rounds]


def take(seg: Segment, cols: jax.Array) -> Segment:
    """The env columns ``cols`` of a segment.

    Args:
      seg: A segment ``[T, N]``.
      cols: Env column indices ``[M]``.

    Returns:
      The segment ``[T, M]``.
    """
    return jax.tree.map(lambda x: x[:, cols], seg)


def reward_by_action(spec: EnvSpec, r_phi: jax.Array, action: jax.Array) -> Metrics:
    """Discrete envs with at most 8 actions: the mean learned reward of each action
    ``r_param_action{k}`` (0 if the action was not taken: no NaN, which the runner
    would take for a diverged run) and how often it was taken, ``action{k}_count``;
    the paper's Figure 4 compares the chain's left and right moves.

    Args:
      spec: The env's spec.
      r_phi: The learned reward of each step ``[T, N]``.
      action: The actions taken ``[T, N]``.

    Returns:
      ``{"r_param_action{k}", "action{k}_count"}`` for each action ``k``; ``{}`` for a
      continuous env or one with more than 8 actions.
    """
    if not spec.discrete or spec.action_size > 8:
        return {}
    out = {}
    for k in range(spec.action_size):
        m = (action == k).astype(jnp.float32)
        n = jnp.sum(m)
        out[f"r_param_action{k}"] = jnp.sum(r_phi * m) / jnp.maximum(n, 1.0)
        out[f"action{k}_count"] = n
    return out


def finish_update(parts: Parts, state: TareState, traj: Transition, r_phi: jax.Array,
                  round_metrics: Metrics, **new: Any) -> tuple[TareState, Metrics]:
    """The end of an update (both flavours): the metrics of the rounds (averaged), of the
    rollout's episodes and of the learned reward on it, and the state advanced.

    Args:
      parts: The static parts.
      state: The state after :func:`collect`.
      traj: The rollout.
      r_phi: The learned reward on the rollout ``[T, N]`` (before this update's steps).
      round_metrics: The rounds' metrics, stacked over rounds.
      **new: The state's new ``params``, ``opt_state``, ``nonfinite``,
        ``param_return`` (and AWR's ``buffer``); ``param_mean`` the mean per-episode
        sum of ``r_phi`` and ``extra`` metrics to add.

    Returns:
      ``(state, metrics)``.
    """
    env_steps = state.env_steps + parts.config.num_envs * parts.config.num_steps
    extra = new.pop("extra", {})
    metrics = {**jax.tree.map(jnp.mean, round_metrics), **episode_metrics(traj),
               "param_return": new.pop("param_mean"), "r_param_mean": jnp.mean(r_phi),
               "r_param_std": jnp.std(r_phi),
               **reward_by_action(parts.spec, r_phi, traj.action), **extra,
               "env_steps": env_steps, "nonfinite": new["nonfinite"]}
    state = common.advance(state, env_steps, **new)
    return state, metrics


__all__ = ["PARAM_GROUPS", "Parts", "Segment", "TareState", "act", "collect",
           "finish_update", "flat_params", "init", "init_params",
           "make_segment", "policy_params", "reward_by_action", "rollout_rows",
           "rollout_segment", "split_columns", "take", "values"]
