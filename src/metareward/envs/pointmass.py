"""A 2-d point mass that must reach a goal it sees: a cheap random-goal task family.

"Evolved Policy Gradients" (Houthooft et al., NeurIPS 2018, section 4)
meta-trains its loss on random-goal tasks such as random Reacher, whose target is part of
the observation, so that at meta-test time the loss can train an agent *without rewards*,
inferring the task from what it observes. Reacher costs a physics engine per step; this
task family keeps the same structure (a goal drawn per task, shown in the observation,
a dense distance reward) at the cost of a few multiply-adds, so that an ES meta-training
can run for thousands of lifetimes on a CPU.

Dynamics (time step ``dt``, force scale ``force``, velocity damping ``damping``)::

    v' = damping * v + dt * force * clip(a, -1, 1)
    p' = clip(p + dt * v', -bound, bound)
    r  = -|p' - g|_2

Observation: ``[p, v, g]`` (6 floats). Episodes start at rest at a position drawn
uniformly from ``[-start, start]^2`` and never terminate; the step limit truncates them
(``episode_length``, 50 by default). A plain env uses the fixed goal ``goal`` (default
``(0.5, 0.5)``); ``make("pointmass", randomize=True)`` draws ``g`` uniformly from
``[-1, 1]^2`` per task (:data:`GOALS`), kept in ``State.info["task"]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State

from metareward.envs.spec import EnvSpec, SpecMixin
from metareward.envs.tasks import Task, TaskDistribution, resolve_task

#: EPG-style random goals: ``goal`` uniform in ``[-1, 1]^2``.
GOALS = TaskDistribution("random-goal point mass", ranges={"goal": (-1.0, 1.0)},
                         shapes={"goal": (2,)})


class PointMassEnv(SpecMixin, Env):
    """The point mass of the module docstring.

    Args:
      name: registry name.
      episode_length: step limit (default 50), a truncation.
      goal: the goal of a plain (non-randomised) env.
      dt: the dynamics' time step.
      force: the force scale.
      damping: the velocity damping.
      bound: positions are clipped to ``[-bound, bound]^2``.
      start: start positions are uniform in ``[-start, start]^2``.
      tasks: a distribution over ``{"goal": (2,)}`` (a randomised env), or None.
    """

    def __init__(
        self,
        name: str = "pointmass",
        episode_length: int | None = None,
        goal: tuple[float, float] = (0.5, 0.5),
        dt: float = 0.1,
        force: float = 2.0,
        damping: float = 0.9,
        bound: float = 1.5,
        start: float = 0.1,
        tasks: TaskDistribution | None = None,
    ):
        if len(tuple(goal)) != 2:
            raise ValueError(f"{name}: goal must be 2 numbers, got {goal!r}")
        for field, value, lo in (("dt", dt, 0.0), ("force", force, 0.0), ("bound", bound, 0.0)):
            if not value > lo:
                raise ValueError(f"{name}: {field} must be > {lo}, got {value!r}")
        if not 0.0 <= damping <= 1.0:
            raise ValueError(f"{name}: damping must be in [0, 1], got {damping!r}")
        if not 0.0 <= start <= bound:
            raise ValueError(f"{name}: start must be in [0, bound={bound}], got {start!r}")
        if tasks is not None and set(tasks.factors) != {"goal"}:
            raise ValueError(f"{name}: the task factors must be ['goal'], got "
                             f"{list(tasks.factors)}")
        self.goal = tuple(float(g) for g in goal)
        self.dt, self.force, self.damping = float(dt), float(force), float(damping)
        self.bound, self.start = float(bound), float(start)
        self._tasks = tasks
        length = 50 if episode_length is None else int(episode_length)
        self._spec = EnvSpec(name, (6,), False, 2, action_low=(-1.0, -1.0),
                             action_high=(1.0, 1.0), episode_length=length)

    def _goal(self, task: Task | None) -> jax.Array:
        return jnp.asarray(self.goal, jnp.float32) if task is None else task["goal"]

    def reset(self, rng: jax.Array, task: Task | None = None) -> State:
        """A new episode; a randomised env draws its task from ``rng`` unless ``task`` is
        given (a plain env refuses one).

        Args:
          rng: the key of the start position (and of the task's draw, if randomised).
          task: for a randomised env, ``{"goal": [2]}``; None: one drawn from ``rng``.

        Returns:
          The first state, at rest at a uniform position in ``[-start, start]^2``; ``obs`` is
          ``[p, v, g]`` (6 floats).
        """
        rng, task = resolve_task(self._spec.name, self._tasks, rng, task)
        pos = jax.random.uniform(rng, (2,), jnp.float32, -self.start, self.start)
        vel = jnp.zeros((2,), jnp.float32)
        goal = self._goal(task)
        zero = jnp.zeros((), jnp.float32)
        info = {} if task is None else {"task": task}
        obs = jnp.concatenate([pos, vel, goal])
        return State({"pos": pos, "vel": vel}, obs, zero, zero, {}, info)

    def step(self, state: State, action: jax.Array) -> State:
        """One step of the dynamics of the module docstring.

        Args:
          state: the current state.
          action: the force, 2 floats (clipped to ``[-1, 1]``).

        Returns:
          The next state, with reward ``-|p' - g|_2`` and ``done`` always 0.
        """
        goal = self._goal(state.info.get("task"))
        a = jnp.clip(jnp.reshape(action, (2,)), -1.0, 1.0)
        vel = self.damping * state.pipeline_state["vel"] + self.dt * self.force * a
        pos = jnp.clip(state.pipeline_state["pos"] + self.dt * vel, -self.bound, self.bound)
        reward = -jnp.linalg.norm(pos - goal)
        return state.replace(
            pipeline_state={"pos": pos, "vel": vel},
            obs=jnp.concatenate([pos, vel, goal]),
            reward=reward.astype(jnp.float32),
            done=jnp.zeros((), jnp.float32),
        )

    @property
    def observation_size(self) -> int:
        """The size of an observation.

        Returns:
          6 (position, velocity and goal).
        """
        return 6

    @property
    def action_size(self) -> int:
        """The size of an action.

        Returns:
          2.
        """
        return 2

    @property
    def backend(self) -> str:
        """The backend's name.

        Returns:
          ``"pointmass"``.
        """
        return "pointmass"


__all__ = ["GOALS", "PointMassEnv"]
