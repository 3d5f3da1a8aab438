"""brax's locomotion environments (MuJoCo models shipped with brax).

The physics backend is selectable: ``"mjx"`` (MuJoCo-XLA, the default, as in brax) or
brax's own ``"generalized"``, ``"positional"`` and ``"spring"``. brax envs do not end on a
time limit nor reset themselves: :func:`metareward.envs.make` adds
:class:`~metareward.envs.wrappers.EpisodeWrapper` and
:class:`~metareward.envs.wrappers.AutoResetWrapper`. brax envs compile slowly on a CPU
(10-20 s each); they are meant for accelerators. Randomised physics (EPG's random Hopper
and Reacher, ``make(name, randomize=True)``): :mod:`metareward.envs.brax_tasks`.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import jax
import numpy as np
from brax.envs.base import State, Wrapper

from metareward.envs.brax_tasks import task_physics
from metareward.envs.options import check_options
from metareward.envs.spec import EnvSpec, SpecMixin
from metareward.envs.tasks import Task, TaskDistribution, resolve_task

BACKENDS = ("mjx", "generalized", "positional", "spring")


class BraxEnv(SpecMixin, Wrapper):
    """A brax env with a :class:`EnvSpec` (observation shape, action bounds).

    Args:
      name: metareward name (``"inverted-pendulum"``).
      brax_name: brax registry name (``"inverted_pendulum"``).
      backend: one of :data:`BACKENDS`.
      episode_length: the time limit recorded in the spec (applied by ``make``).
      tasks: a :class:`~metareward.envs.tasks.TaskDistribution` over the env's physics
        (a randomised env, ``"mjx"`` backend only: each reset draws a task, kept in
        ``State.info["task"]`` and applied to every step; see
        :mod:`metareward.envs.brax_tasks`).
      **kwargs: passed to the brax env's constructor.
    """

    def __init__(
        self,
        name: str,
        brax_name: str,
        backend: str = "mjx",
        episode_length: int = 1000,
        tasks: TaskDistribution | None = None,
        **kwargs: Any,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"{name}: unknown backend {backend!r}; allowed: {list(BACKENDS)}")
        from brax import envs as brax_envs

        physics = None if tasks is None else task_physics(name, brax_name, tasks, backend)
        env_class = physics.env_class if physics is not None else None
        defaults = constructor_defaults(
            env_class or getattr(brax_envs, "_envs", {}).get(brax_name))
        if defaults is not None:  # names and types checked before the model is built
            kwargs = check_options(name, kwargs, defaults)
        if physics is not None:
            kwargs = {**physics.env_kwargs, **kwargs}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Brax System")
            try:
                if physics is not None and physics.env_class is not None:
                    env = physics.env_class(backend=backend, **kwargs)
                else:
                    env = brax_envs.get_environment(brax_name, backend=backend, **kwargs)
            except TypeError as e:
                raise ValueError(f"{name}: bad env argument(s) {sorted(kwargs)}: {e}") from e
        super().__init__(env)
        self._tasks, self._physics, self._nominal_sys = tasks, physics, env.sys
        shape = jax.eval_shape(env.reset, jax.random.PRNGKey(0)).obs.shape
        ctrl = np.asarray(env.sys.actuator.ctrl_range, np.float32)
        low = tuple(float(x) for x in ctrl[:, 0])
        high = tuple(float(x) for x in ctrl[:, 1])
        self._spec = EnvSpec(
            name, tuple(shape), False, int(env.action_size), low, high, int(episode_length)
        )

    def reset(self, rng: jax.Array, task: Task | None = None) -> State:
        """A new episode; a randomised env draws its task from ``rng`` unless ``task`` is
        given (an env without tasks refuses one).

        Args:
          rng: the reset's key (a randomised env splits the task's draw off it).
          task: for a randomised env, the task to run; None: one drawn from ``rng``.

        Returns:
          The brax env's first state (a randomised env's with ``info["task"]``).
        """
        rng, task = resolve_task(self._spec.name, self._tasks, rng, task)
        if task is None:
            return self.env.reset(rng)
        return self._physics.reset(self.env, self._nominal_sys, rng, task)

    def step(self, state: State, action: jax.Array) -> State:
        """One step of the brax env (a randomised env's in the physics of ``state.info["task"]``).

        Args:
          state: the current state.
          action: the action (``action_size`` floats; the spec bounds are the control range).

        Returns:
          The next state.
        """
        if self._tasks is None:
            return self.env.step(state, action)
        return self._physics.step(self.env, self._nominal_sys, state, action)


def constructor_defaults(cls: type | None) -> dict[str, Any] | None:
    """Keyword -> default of a brax env class's constructor, following ``**kwargs`` up
    to the base classes (``PipelineEnv``'s ``n_frames``, ``debug``); ``None`` if unknown.

    Args:
      cls: the brax env class, or ``None``.

    Returns:
      The keywords with a default (``backend`` left out: :class:`BraxEnv` takes it), or
      ``None`` when the signature cannot be read.
    """
    if cls is None:
        return None
    out: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        try:
            params = inspect.signature(klass.__init__).parameters.values()
        except (TypeError, ValueError):
            return None
        for p in params:
            if p.default is not p.empty and p.name != "backend":
                out.setdefault(p.name, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return out
    return None


__all__ = ["BACKENDS", "BraxEnv", "constructor_defaults"]
