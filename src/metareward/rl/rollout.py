"""Collecting experience: ``lax.scan`` over time of a vmapped env."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State

from metareward.envs.wrappers import VmapWrapper

#: ``act(obs, key) -> (raw_action, env_action, log_prob)`` for a batch of observations.
ActFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array, jax.Array]]


def sampler(dist_fn: Callable[[jax.Array], Any]) -> ActFn:
    """The :data:`ActFn` of a stochastic policy: ``act(obs, key)`` samples a raw action
    from ``dist_fn(obs)`` and returns it with its env action and log-probability.

    Args:
        dist_fn: ``obs -> distribution`` with ``sample``, ``to_env`` and ``log_prob``
            (:mod:`metareward.nets.distributions`), e.g. the policy applied to the
            normalised observations.

    Returns:
        ``act(obs, key) -> (raw_action, env_action, log_prob)``.
    """

    def act(obs: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        dist = dist_fn(obs)
        raw = dist.sample(key)
        return raw, dist.to_env(raw), dist.log_prob(raw)

    return act


class Transition(NamedTuple):
    """One step of experience; a rollout stacks them time-major ``[T, num_envs, ...]``.

    ``next_obs`` is the observation the transition reached, before any auto-reset
    (``info["final_obs"]``); ``completed_return`` is the finished episode's return on the
    step that ended it, else 0.
    """

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    reward: jax.Array
    done: jax.Array
    truncation: jax.Array
    next_obs: jax.Array
    completed_return: jax.Array
    completed_length: jax.Array


def rollout(
    env: Env, env_state: State, act: ActFn, key: jax.Array, num_steps: int
) -> tuple[State, Transition]:
    """Runs ``num_steps`` steps of a (vmapped) env under ``act``.

    Args:
        env: The batched env (``N`` envs, e.g. a ``VmapWrapper``).
        env_state: Its state to start from.
        act: The :data:`ActFn`, ``act(obs, key) -> (raw_action, env_action, log_prob)``.
        key: PRNG key, split into one per step.
        num_steps: ``T``, steps to run (static).

    Returns:
        ``(env_state, traj)``: the final env state and the time-major stacked
        transitions ``[T, N, ...]``.
    """

    def step(state: State, key: jax.Array) -> tuple[State, Transition]:
        raw, env_action, log_prob = act(state.obs, key)
        nxt = env.step(state, env_action)
        tr = Transition(
            obs=state.obs,
            action=raw,
            log_prob=log_prob,
            reward=nxt.reward,
            done=nxt.done,
            truncation=nxt.info["truncation"],
            next_obs=nxt.info["final_obs"],
            completed_return=nxt.info["completed_return"],
            completed_length=nxt.info["completed_length"],
        )
        return nxt, tr

    # Keys split once, outside the loop: one PRNG call instead of one per step.
    return jax.lax.scan(step, env_state, jax.random.split(key, num_steps))


def episode_metrics(traj: Transition) -> dict[str, jax.Array]:
    """Mean and std of the returns, and mean length, of the episodes that ended in
    ``traj`` (NaN if none did), and their number ``episodes``.

    Args:
        traj: Transitions (any leading shape, e.g. ``[T, N]``) with ``done``,
            ``completed_return`` and ``completed_length``.

    Returns:
        ``{"episode_return", "episode_return_std", "episode_length", "episodes"}``.
    """
    done = traj.done.astype(jnp.float32)
    n = jnp.sum(done)
    safe_n = jnp.maximum(n, 1.0)
    mean_ret = jnp.sum(traj.completed_return * done) / safe_n
    var_ret = jnp.sum(jnp.square(traj.completed_return - mean_ret) * done) / safe_n
    mean_len = jnp.sum(traj.completed_length * done) / safe_n
    nan = jnp.float32(jnp.nan)
    return {
        "episode_return": jnp.where(n > 0, mean_ret, nan),
        "episode_return_std": jnp.where(n > 0, jnp.sqrt(var_ret), nan),
        "episode_length": jnp.where(n > 0, mean_len, nan),
        "episodes": n.astype(jnp.int32),
    }


def episodic_sum(
    running: jax.Array, values: jax.Array, done: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Per-episode sums of ``values`` carried across rollouts. LIRPG's and CLN's
    ``intrinsic_return``.

    Args:
        running: ``[N]``, each env's sum so far in its current episode.
        values: ``[T, N]``, the values to sum.
        done: ``[T, N]``, episode-end flags (the step with ``done`` is the episode's last).

    Returns:
        ``(running', mean)``: the sums carried into the next rollout ``[N]`` and the
        mean sum of the episodes that ended in this one (NaN if none did).
    """

    def accumulate(run, x):
        v, d = x
        total = run + v
        return jnp.where(d > 0, 0.0, total), jnp.where(d > 0, total, 0.0)

    running, ended = jax.lax.scan(accumulate, running, (values, done))
    n = jnp.sum(done)
    return running, jnp.where(n > 0, jnp.sum(ended) / jnp.maximum(n, 1), jnp.nan)


def evaluate_episodes(
    env: Env,
    act: Callable[[jax.Array, jax.Array], jax.Array],
    key: jax.Array,
    num_episodes: int,
    max_steps: int,
    task: Any = None,
) -> jax.Array:
    """Undiscounted return of the first episode of each of ``num_episodes`` envs.

    Args:
      env: a *single* env following the metareward conventions (time-limited).
      act: ``act(obs_batch, key) -> env_action_batch``.
      key: PRNG key of the resets and the actions.
      num_episodes: episodes, each in its own env of a batch.
      max_steps: steps to run; the env's time limit guarantees every episode ends.
      task: for a randomised env (:mod:`metareward.envs.tasks`), the task every episode
        runs on; ``None``: the env's own (a random task per episode if randomised).

    Returns:
      ``[num_episodes]`` returns.
    """
    venv = VmapWrapper(env, num_episodes)
    key, reset_key = jax.random.split(key)
    state = venv.reset(reset_key) if task is None else venv.reset(reset_key, task=task)

    def step(carry, _):
        state, key, ret, alive = carry
        key, sub = jax.random.split(key)
        nxt = venv.step(state, act(state.obs, sub))
        ret = ret + alive * nxt.reward
        alive = alive * (1.0 - nxt.done)
        return (nxt, key, ret, alive), None

    zeros = jnp.zeros((num_episodes,), jnp.float32)
    (_, _, ret, _), _ = jax.lax.scan(
        step, (state, key, zeros, jnp.ones_like(zeros)), None, length=max_steps
    )
    return ret


__all__ = ["ActFn", "Transition", "episode_metrics", "episodic_sum", "evaluate_episodes",
           "rollout", "sampler"]
