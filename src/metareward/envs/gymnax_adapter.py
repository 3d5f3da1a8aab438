"""gymnax environments behind brax's ``Env``/``State`` protocol.

gymnax >= 1.0 steps with its own auto-reset and returns ``(obs, state, reward, terminated,
truncated, info)`` with the pre-reset observation in ``info["final_observation"]``. The
adapter keeps that split: ``State.done`` is ``terminated or truncated``,
``State.info["truncation"]`` is 1 when the episode ended on the time limit only (the
learner bootstraps there), and ``State.info["final_obs"]`` is the observation the
transition reached, before any reset. ``State.obs`` is the observation to act on next.

Key stream: ``reset(rng)`` splits ``rng -> (rng, k)`` and resets gymnax with ``k``;
every ``step`` splits ``info["rng"] -> (rng, k)`` and calls gymnax's ``step`` with ``k``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State

from metareward.envs.options import check_options
from metareward.envs.spec import EnvSpec, SpecMixin
from metareward.envs.tasks import Task, TaskDistribution, resolve_task


class GymnaxEnv(SpecMixin, Env):
    """Adapter from a gymnax environment to brax's ``Env``.

    Args:
      name: metareward name of the env (for messages and the spec).
      gymnax_id: gymnax registry id, e.g. ``"CartPole-v1"``.
      episode_length: overrides gymnax's ``max_steps_in_episode`` when given.
      tasks: a :class:`~metareward.envs.tasks.TaskDistribution` over fields of the gymnax
        ``EnvParams`` (a randomised env: each reset draws a task, kept in
        ``State.info["task"]`` and applied to every step; see :mod:`metareward.envs.tasks`).
        The action bounds in the spec are those of the largest values in its ranges.
      **params: other fields of the gymnax ``EnvParams`` to override.
    """

    def __init__(self, name: str, gymnax_id: str, episode_length: int | None = None,
                 tasks: TaskDistribution | None = None, **params: Any):
        # gymnax is imported here, when a gymnax env is made: importing it takes seconds
        # and starts jax's backend (metareward.configure_xla must come first)
        import gymnax
        from gymnax.environments import spaces

        env, env_params = gymnax.make(gymnax_id)
        if episode_length is not None:
            params["max_steps_in_episode"] = int(episode_length)
        fields = set(env_params.__dataclass_fields__)
        # unknown names, and values that do not fit the type of the field's default
        params = check_options(name, params, {f: getattr(env_params, f) for f in fields})
        if tasks is not None:
            unknown = sorted(set(tasks.factors) - fields)
            if unknown:
                raise ValueError(f"{name}: task factor(s) {unknown} are not env parameters; "
                                 f"allowed: {sorted(fields)}")
        self._env = env
        self._params = env_params.replace(**params)
        self._tasks = tasks
        widest = self._params
        if tasks is not None:
            widest = widest.replace(**{k: max(tasks.ranges.get(k) or tasks.choices[k])
                                       for k in tasks.factors})
        space = env.action_space(widest)
        obs_shape = tuple(env.observation_space(widest).shape)
        length = int(self._params.max_steps_in_episode)
        if isinstance(space, spaces.Discrete):
            self._spec = EnvSpec(name, obs_shape, True, int(space.n), episode_length=length)
        else:
            shape = tuple(space.shape)
            low = tuple(float(x) for x in jnp.broadcast_to(space.low, shape))
            high = tuple(float(x) for x in jnp.broadcast_to(space.high, shape))
            self._spec = EnvSpec(
                name, obs_shape, False, int(shape[0]), low, high, episode_length=length
            )

    @property
    def gymnax_env(self) -> Any:
        """The wrapped gymnax environment."""
        return self._env

    @property
    def gymnax_params(self) -> Any:
        """The gymnax ``EnvParams`` in use."""
        return self._params

    def _task_params(self, task: Any) -> Any:
        return self._params if task is None else self._params.replace(**task)

    @property
    def auto_resets(self) -> bool:
        """gymnax resets by itself; no auto-reset wrapper is needed."""
        return True

    def reset(self, rng: jax.Array, task: Task | None = None) -> State:
        """A new episode; a randomised env draws its task from ``rng`` unless ``task`` is
        given (an env without tasks refuses one).

        Args:
          rng: the reset's key.
          task: for a randomised env, the ``EnvParams`` fields of the task; None: one drawn
            from ``rng``.

        Returns:
          The first state (``info`` with ``rng``, ``truncation``, ``final_obs`` and, for a
          task, ``task``).
        """
        rng, task = resolve_task(self._spec.name, self._tasks, rng, task)
        rng, key = jax.random.split(rng)
        obs, env_state = self._env.reset(key, self._task_params(task))
        obs = jnp.asarray(obs, jnp.float32)
        zero = jnp.zeros((), jnp.float32)
        info = {"rng": rng, "truncation": zero, "final_obs": obs}
        if task is not None:
            info["task"] = task
        return State(env_state, obs, zero, zero, {}, info)

    def step(self, state: State, action: jax.Array) -> State:
        """One gymnax step (which auto-resets an ended episode by itself).

        Args:
          state: the current state.
          action: the action.

        Returns:
          The next state: ``done`` on termination or truncation, ``info["truncation"]`` 1
          only for a truncation without termination, ``info["final_obs"]`` the observation
          the step reached before gymnax's auto-reset.
        """
        rng, key = jax.random.split(state.info["rng"])
        obs, env_state, reward, terminated, truncated, info = self._env.step(
            key, state.pipeline_state, action, self._task_params(state.info.get("task"))
        )
        terminated = jnp.asarray(terminated, bool)
        truncation = jnp.logical_and(jnp.asarray(truncated, bool), ~terminated)
        done = jnp.logical_or(terminated, truncation)
        new_info = {
            **state.info,
            "rng": rng,
            "truncation": truncation.astype(jnp.float32),
            "final_obs": jnp.asarray(info["final_observation"], jnp.float32),
        }
        return state.replace(
            pipeline_state=env_state,
            obs=jnp.asarray(obs, jnp.float32),
            reward=jnp.asarray(reward, jnp.float32).reshape(()),
            done=done.astype(jnp.float32),
            info=new_info,
        )

    @property
    def observation_size(self) -> int:
        """The size of an observation.

        Returns:
          The spec's ``obs_size``.
        """
        return self._spec.obs_size

    @property
    def action_size(self) -> int:
        """The size of the action space.

        Returns:
          The spec's ``action_size``.
        """
        return self._spec.action_size

    @property
    def backend(self) -> str:
        """The backend's name.

        Returns:
          ``"gymnax"``.
        """
        return "gymnax"


__all__ = ["GymnaxEnv"]
