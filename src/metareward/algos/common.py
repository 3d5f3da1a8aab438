"""What every learner shares, written once: its state's and its ``Trainer``'s contract
fields, and the two stages it ends with.

* :class:`LearnerState`: the state fields of the contract
  (:class:`metareward.algos.registry.Learner`); :func:`zero_counters` for a fresh state,
  :func:`run_start` for the fields a state with an observation normaliser starts a run
  with; :func:`advance` for the state one update on;
* :class:`LearnerBase`: the ``Trainer`` fields of the contract;
* :func:`run_length`: env steps per update and updates per run, checked;
* :func:`example_inputs`: a zero observation and action to initialise nets with;
  :func:`actor_critic_params`: a fresh policy and value function initialised on them;
* :func:`scan_train`: ``train(key) = lax.scan(update, init(key))`` over the run;
* :func:`episode_evaluator`: ``evaluate(state, key, num_episodes, deterministic)``,
  returns of fresh episodes of ``act``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from brax.envs.base import Env
from flax import struct

from metareward.algos.policy import check_one_seed
from metareward.aliases import Metrics, Params
from metareward.envs.spec import EnvSpec
from metareward.rl import replay
from metareward.rl.normalize import RunningStats
from metareward.rl.rollout import evaluate_episodes


@struct.dataclass
class LearnerState:
    """The fields every learner's state has (the contract's conventions,
    :class:`metareward.algos.registry.Learner`); each learner's state derives from it and
    adds its own (observation statistics, buffers, targets, ...).

    Attributes:
      params: A dict of the parameters of each net.
      opt_state: A dict of optimiser states keyed by what each steps: a ``params`` key,
        or ``"agent"`` for one optimiser over the policy and value together.
      env_state: The (batched) env state, so a run resumes mid-episode.
      key: The learner's PRNG key.
      update_step: Updates done (int32).
      env_steps: Transitions collected (int32).
      nonfinite: Gradient steps skipped for a non-finite loss or gradient (int32).
    """

    params: Any
    opt_state: dict[str, Any]
    env_state: Any
    key: jax.Array
    update_step: jax.Array
    env_steps: jax.Array
    nonfinite: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class LearnerBase:
    """The contract's fields (:class:`metareward.algos.registry.Learner`), declared once;
    each learner's ``Trainer`` derives from it and adds its nets and method pieces.

    Attributes:
      config: The learner's config.
      env: The (single, unbatched) env it trains on (its first, for several envs).
      spec: ``env``'s :class:`~metareward.envs.spec.EnvSpec`.
      num_updates: Updates in a full run.
      init: ``init(key) -> state``.
      update: ``update(state) -> (state, metrics)``.
      train: ``train(key) -> (state, metrics)`` (:func:`scan_train`).
      act: ``act(state, obs, key, deterministic=False) -> actions``.
      evaluate: ``evaluate(state, key, num_episodes, deterministic) -> returns``
        (:func:`episode_evaluator`).
    """

    config: Any
    env: Env
    spec: Any
    num_updates: int
    init: Callable[[jax.Array], Any]
    update: Callable[[Any], tuple[Any, Metrics]]
    train: Callable[[jax.Array], tuple[Any, Metrics]]
    act: Callable[..., jax.Array]
    evaluate: Callable[..., jax.Array]

    def _replace(self, **changes: Any) -> LearnerBase:
        """A copy with ``changes`` (as ``NamedTuple._replace``; ``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


def zero_counters() -> dict[str, jax.Array]:
    """``update_step``, ``env_steps`` and ``nonfinite`` of a fresh state, int32 zeros.

    Returns:
        A dict to splat into a :class:`LearnerState` constructor.
    """
    zero = lambda: jnp.zeros((), jnp.int32)
    return {"update_step": zero(), "env_steps": zero(), "nonfinite": zero()}


def run_start(spec: EnvSpec, venv: Env, k_env: jax.Array, key: jax.Array) -> dict[str, Any]:
    """The fields a learner with an observation normaliser starts a run with: the
    normaliser empty, every env reset, the run's key and zero counters.

    Args:
        spec: The env's spec (the normaliser's size).
        venv: The batched env.
        k_env: The key of the envs' reset.
        key: The key the state carries on.

    Returns:
        ``{"obs_stats", "env_state", "key", "update_step", "env_steps", "nonfinite"}``, to
        splat into the state's constructor.
    """
    return {"obs_stats": RunningStats.create((spec.obs_size,)),
            "env_state": venv.reset(k_env), "key": key, **zero_counters()}


def advance(state: Any, env_steps: jax.Array, **changes: Any) -> Any:
    """The state one update on: ``update_step + 1``, ``env_steps`` as counted by the
    update, and the update's other ``changes`` (params, optimiser states, envs, key...).
    A field not in ``changes`` keeps its value.

    Args:
        state: The state the update started from (any learner's).
        env_steps: Transitions collected so far, this update's included.
        **changes: The other fields the update changed.

    Returns:
        ``state.replace(update_step=state.update_step + 1, env_steps=env_steps, **changes)``.
    """
    return state.replace(update_step=state.update_step + 1, env_steps=env_steps, **changes)


def run_length(config: Any) -> tuple[int, int]:
    """``(rollout_size, num_updates)`` of a config with ``num_envs``, ``num_steps`` and
    ``total_steps``: the env steps one update collects (``num_envs * num_steps``) and the
    whole updates in the run; a run shorter than one rollout fails here, before compiling.

    Args:
        config: A learner's config.

    Returns:
        ``(num_envs * num_steps, total_steps // (num_envs * num_steps))``.

    Raises:
        ValueError: ``total_steps`` is less than one rollout.
    """
    rollout_size = config.num_envs * config.num_steps
    num_updates = config.total_steps // rollout_size
    if num_updates < 1:
        raise ValueError(
            f"total_steps={config.total_steps} is less than one rollout "
            f"(num_envs * num_steps = {rollout_size})"
        )
    return rollout_size, num_updates


def example_inputs(spec: EnvSpec) -> tuple[jax.Array, jax.Array]:
    """A batch of one zero observation (flattened) and one zero action in the policy's
    action space, for initialising nets: the ``obs`` and ``action`` of a one-env
    :meth:`metareward.rl.replay.Row.example`, as arrays.

    Args:
        spec: The env's spec.

    Returns:
        ``(obs [1, obs_size] float32, action [1] int32 or [1, action_size] float32)``.
    """
    row = replay.Row.example(spec, 1)
    return (jnp.zeros(row.obs.shape, row.obs.dtype),
            jnp.zeros(row.action.shape, row.action.dtype))


def actor_critic_params(policy: nn.Module, value: nn.Module, spec: EnvSpec, k_pi: jax.Array,
                        k_v: jax.Array) -> dict[str, Params]:
    """Fresh parameters of a policy and a value function on the env's observations.

    Args:
        policy: The policy module (``policy(obs)`` a distribution).
        value: The value module (``value(obs)``).
        spec: The env's spec (:func:`example_inputs`).
        k_pi: The policy's key.
        k_v: The value function's key.

    Returns:
        ``{"policy": ..., "value": ...}``.
    """
    obs, _ = example_inputs(spec)
    return {"policy": policy.init(k_pi, obs), "value": value.init(k_v, obs)}


def act_with_policy(
    parts: Any, state: Any, obs: jax.Array, key: jax.Array, deterministic: bool = False
) -> jax.Array:
    """Env actions of a learner's stochastic policy for a batch of raw observations: the
    ``act`` of every learner whose parts hold ``policy`` (a module returning a
    distribution) and ``prep`` (observation flattening and normalisation).

    Args:
        parts: The learner's static parts (``parts.policy``, ``parts.prep``).
        state: A train state or a :class:`~metareward.algos.policy.Policy` (reads
            ``params["policy"]`` and ``obs_stats``).
        obs: Raw observations ``[B, *obs_shape]``.
        key: PRNG key (unused if ``deterministic``).
        deterministic: Act with the distribution's mode.

    Returns:
        Env actions ``[B, ...]``.
    """
    dist = parts.policy.apply(state.params["policy"], parts.prep(state.obs_stats, obs))
    raw = dist.mode() if deterministic else dist.sample(key)
    return dist.to_env(raw)


def scan_train(
    init: Callable[[jax.Array], Any],
    update: Callable[[Any], tuple[Any, Metrics]],
    num_updates: int,
) -> Callable[[jax.Array], tuple[Any, Metrics]]:
    """A learner's whole run as one program.

    Args:
        init: ``init(key) -> state``.
        update: ``update(state) -> (state, metrics)``.
        num_updates: Updates in the run (static).

    Returns:
        ``train(key) -> (state, metrics)``: ``init`` then ``num_updates`` updates in one
        ``lax.scan``, metrics stacked over updates (``jax.vmap(train)`` runs seeds, or a
        sweep over float hyperparameters, as one program).
    """

    def train(key: jax.Array) -> tuple[Any, Metrics]:
        state = init(key)
        return jax.lax.scan(lambda s, _: update(s), state, None, length=num_updates)

    return train


def episode_evaluator(
    env: Env, act: Callable[..., jax.Array], episode_length: int
) -> Callable[..., jax.Array]:
    """Evaluation of a learner's policy on fresh episodes.

    Args:
        env: The (single, unbatched) env to evaluate on: the env's own reward, without
            what a learner adds for training (a live bonus, a delay is the env's).
        act: ``act(state, obs, key, deterministic) -> env actions``.
        episode_length: Steps of an episode at most.

    Returns:
        ``evaluate(state, key, num_episodes=16, deterministic=False) -> [num_episodes]``:
        returns of ``num_episodes`` fresh episodes under ``act`` (its mode if
        ``deterministic``). A state batched over seeds fails in one line (take one with
        :func:`metareward.algos.policy.take_seed`, or ``jax.vmap`` the call).
    """

    def evaluate(
        state: Any, key: jax.Array, num_episodes: int = 16, deterministic: bool = False
    ) -> jax.Array:
        """Returns of ``num_episodes`` fresh episodes of the current policy."""
        check_one_seed(state)
        fn = lambda obs, k: act(state, obs, k, deterministic)
        return evaluate_episodes(env, fn, key, num_episodes, episode_length)

    return evaluate


__all__ = ["LearnerBase", "LearnerState", "act_with_policy", "actor_critic_params", "advance",
           "episode_evaluator", "example_inputs", "run_length", "run_start", "scan_train",
           "zero_counters"]
