"""Task distributions: randomised environments for meta-learning (EPG's ``p(M)``).

Houthooft et al., "Evolved Policy Gradients" (NeurIPS 2018), section 4: every inner-loop
worker trains on its own MDP ``M_i ~ p(M)``, e.g. a pendulum or a hopper with random
physics. Here a task is a small pytree (a dict of float32 arrays with a fixed structure
per distribution), so that tasks are sampled, batched and ``vmap``-ped like any other
array:

* :class:`TaskDistribution` -- ``sample(key) -> task``; named factors drawn uniformly
  from ``[low, high]`` (``ranges``) or from a finite set (``choices``), each of a given
  shape (``shapes``, scalar by default). ``sample`` works under ``jit`` and ``vmap``.
* An env built with ``metareward.envs.make(name, randomize=True)`` carries its task in
  ``State.info["task"]``: ``reset(rng)`` draws a task from ``rng``, ``reset(rng,
  task=task)`` uses the given one, and every later ``step`` (auto-resets included) keeps
  it. Every metareward wrapper passes ``task`` through, and
  :class:`~metareward.envs.wrappers.VmapWrapper` gives one task to all its copies (one
  population member, one task) or, with ``task=None``, a task per copy.

Ranges are configurable: ``make("pendulum", randomize=True, task_ranges={"m": (0.8,
1.2)})`` overrides the default range of a factor (unknown names fail, naming those
allowed). Distributions of the brax envs live in :mod:`metareward.envs.brax_tasks`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

Task = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class TaskDistribution:
    """A product distribution over named task factors.

    Args:
      name: what the tasks are (for messages), e.g. ``"random pendulum"``.
      ranges: ``factor -> (low, high)``, drawn uniformly, ``low <= high``.
      choices: ``factor -> (v1, v2, ...)``, drawn uniformly from the values.
      shapes: ``factor -> shape`` for factors that are not scalars (e.g. one mass scale
        per body), each entry drawn independently.

    ``sample(key)`` returns ``{factor: float32 array}`` for every factor of ``ranges``
    and ``choices``.
    """

    name: str
    ranges: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    choices: Mapping[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)
    shapes: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        both = sorted(set(self.ranges) & set(self.choices))
        if both:
            raise ValueError(f"{self.name}: factor(s) {both} have both a range and choices")
        for k, r in self.ranges.items():
            ok = (isinstance(r, tuple | list) and len(r) == 2
                  and all(isinstance(v, int | float) and not isinstance(v, bool) for v in r)
                  and r[0] <= r[1])
            if not ok:
                raise ValueError(f"{self.name}: range of {k!r} must be (low, high) numbers with "
                                 f"low <= high, got {r!r}")
        for k, c in self.choices.items():
            if not (isinstance(c, tuple | list) and len(c) > 0):
                raise ValueError(f"{self.name}: choices of {k!r} must be a non-empty tuple, "
                                 f"got {c!r}")
        unknown = sorted(set(self.shapes) - set(self.factors))
        if unknown:
            raise ValueError(f"{self.name}: shapes given for unknown factor(s) {unknown}")
        object.__setattr__(self, "ranges", {k: tuple(map(float, v)) for k, v in
                                            self.ranges.items()})
        object.__setattr__(self, "choices", {k: tuple(map(float, v)) for k, v in
                                             self.choices.items()})
        object.__setattr__(self, "shapes", {k: tuple(v) for k, v in self.shapes.items()})

    @property
    def factors(self) -> tuple[str, ...]:
        """The names of the task's factors, sorted."""
        return tuple(sorted({*self.ranges, *self.choices}))

    def shape(self, factor: str) -> tuple[int, ...]:
        """The shape of one factor's value.

        Args:
          factor: the factor's name.

        Returns:
          Its entry of ``shapes``, ``()`` (a scalar) if it has none.
        """
        return self.shapes.get(factor, ())

    def sample(self, key: jax.Array) -> Task:
        """One task: a dict of float32 arrays (scalars unless ``shapes`` says otherwise).

        Args:
          key: PRNG key of the draw (split into one key per factor).

        Returns:
          ``{factor: float32 array of shape(factor)}`` for every factor: uniform in its range,
          or a uniformly drawn value of its choices.
        """
        keys = jax.random.split(key, max(len(self.factors), 1))
        task = {}
        for k, f in zip(keys, self.factors, strict=False):
            shape = self.shape(f)
            if f in self.ranges:
                lo, hi = self.ranges[f]
                task[f] = jax.random.uniform(k, shape, jnp.float32, lo, hi)
            else:
                values = jnp.asarray(self.choices[f], jnp.float32)
                task[f] = values[jax.random.randint(k, shape, 0, len(self.choices[f]))]
        return task

    def nominal(self) -> Task:
        """The middle of every range (first choice of every set): a fixed, typical task."""
        task = {}
        for f in self.factors:
            v = (sum(self.ranges[f]) / 2 if f in self.ranges else self.choices[f][0])
            task[f] = jnp.full(self.shape(f), v, jnp.float32)
        return task

    def with_overrides(self, ranges: Mapping[str, Any] | None = None) -> TaskDistribution:
        """A copy with some factors' ranges (a ranged factor) or choices (a factor with
        choices) replaced; unknown factor names fail, naming the allowed ones.

        Args:
          ranges: factor -> new value: a ranged factor's becomes its ``(low, high)`` range,
            any other factor's its choices; ``None`` or empty: no change.

        Returns:
          The new distribution (``self`` when ``ranges`` is empty).

        Raises:
          ValueError: a factor name this distribution does not have.
        """
        if not ranges:
            return self
        unknown = sorted(set(ranges) - set(self.factors))
        if unknown:
            raise ValueError(f"{self.name}: unknown task factor(s) {unknown}; allowed: "
                             f"{list(self.factors)}")
        new_ranges, new_choices = dict(self.ranges), dict(self.choices)
        for k, v in ranges.items():
            if k in self.ranges:
                new_ranges[k] = v
            else:
                new_choices[k] = v
        return dataclasses.replace(self, ranges=new_ranges, choices=new_choices)

    def check(self, task: Any) -> Task:
        """``task`` as a dict of float32 arrays of this distribution's structure (extra
        leading batch axes allowed); fails naming the missing or unknown factors.

        Args:
          task: the task, a mapping of factor name -> array.

        Returns:
          ``{factor: float32 array}`` for every factor (shapes are not checked).

        Raises:
          TypeError: ``task`` is not a mapping.
          ValueError: ``task``'s keys are not exactly the factors.
        """
        if not isinstance(task, Mapping):
            raise TypeError(f"{self.name}: a task is a dict of arrays, got {type(task).__name__}")
        missing = sorted(set(self.factors) - set(task))
        extra = sorted(set(task) - set(self.factors))
        if missing or extra:
            raise ValueError(f"{self.name}: task factors must be {list(self.factors)}; "
                             f"missing {missing}, unknown {extra}")
        return {k: jnp.asarray(task[k], jnp.float32) for k in self.factors}


#: gymnax Pendulum-v1 with random physics (our choice of ranges: the paper has no random
#: pendulum). Nominal values: m = 1, l = 1, g = 10, max_torque = 2.
PENDULUM = TaskDistribution(
    "random pendulum",
    ranges={"m": (0.5, 1.5), "l": (0.5, 1.5), "g": (5.0, 15.0), "max_torque": (1.5, 2.5)},
)


def reset_with_task(env: Any, rng: jax.Array, task: Task | None) -> Any:
    """``env.reset(rng)``, or ``env.reset(rng, task=task)`` when a task is given: what the
    wrappers call, so that envs without tasks keep brax's one-argument ``reset``.

    Args:
        env: The env to reset.
        rng: The reset's PRNG key.
        task: The task (``None``: the env's own reset).

    Returns:
        The env's state.
    """
    return env.reset(rng) if task is None else env.reset(rng, task=task)


__all__ = ["PENDULUM", "Task", "TaskDistribution", "reset_with_task"]


def resolve_task(env_name: str, tasks: TaskDistribution | None, rng: jax.Array,
                 task: Task | None) -> tuple[jax.Array, Task | None]:
    """The task of a reset: for a randomised env (``tasks`` given) ``task`` checked, or one
    drawn from ``rng`` if None; for a plain env None, refusing a given ``task``.

    Args:
      env_name: the env's name (for the message).
      tasks: the env's task distribution, or None for a plain env.
      rng: the reset's key.
      task: the task asked for, or None.

    Returns:
      ``(rng, task)``: the key left for the reset itself (split off the task's draw for a
      randomised env, ``rng`` unchanged for a plain one) and the task (None if plain).

    Raises:
      ValueError: a task given to a plain env.
    """
    if tasks is None:
        if task is not None:
            raise ValueError(f"{env_name} is not randomised: it takes no task "
                             "(build it with make(..., randomize=True))")
        return rng, None
    rng, k_task = jax.random.split(rng)
    return rng, (tasks.sample(k_task) if task is None else tasks.check(task))

