"""The environment registry: ``make(name, **kwargs)`` and ``names()``."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from brax.envs.base import Env

from metareward.envs.brax_adapter import BraxEnv
from metareward.envs.brax_tasks import HOPPER, REACHER
from metareward.envs.chain import ChainEnv
from metareward.envs.gymnax_adapter import GymnaxEnv
from metareward.envs.options import check_option, check_options
from metareward.envs.pointmass import GOALS, PointMassEnv
from metareward.envs.tasks import PENDULUM, TaskDistribution
from metareward.envs.wrappers import (
    ActionRescale,
    AutoResetWrapper,
    DelayedReward,
    EpisodeStats,
    EpisodeWrapper,
)


@dataclasses.dataclass(frozen=True)
class _Entry:
    factory: Callable[..., Env]
    description: str
    source: str


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, factory: Callable[..., Env], description: str, source: str) -> None:
    """Adds an environment. ``factory(name=..., **kwargs)`` must return an env with a
    ``spec`` (:class:`EnvSpec`) and an ``auto_resets`` flag."""
    if name in _REGISTRY:
        raise ValueError(f"environment {name!r} is already registered")
    _REGISTRY[name] = _Entry(factory, description, source)


def names(source: str | None = None) -> list[str]:
    """Registered environment names, optionally only those of one source
    (``"gymnax"``, ``"brax"``, ``"ours"``)."""
    return sorted(n for n, e in _REGISTRY.items() if source is None or e.source == source)


def describe(name: str) -> str:
    """One-line description of a registered environment."""
    return _entry(name).description


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown environment {name!r}; valid names: {names()}")
    return _REGISTRY[name]


def make(
    name: str,
    *,
    episode_length: int | None = None,
    rescale_actions: bool = True,
    reward_delay: int | None = None,
    randomize: bool = False,
    task_ranges: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Env:
    """Builds a single (unbatched) environment, ready for a learner.

    The result follows the conventions of :mod:`metareward.envs.wrappers`: auto-reset,
    time limits flagged in ``info["truncation"]``, the pre-reset observation in
    ``info["final_obs"]``, episode statistics in ``info``, and (unless
    ``rescale_actions=False``) continuous actions taken in [-1, 1]. Batch it with
    :class:`~metareward.envs.wrappers.VmapWrapper`.

    Args:
      name: one of :func:`names`.
      episode_length: time limit; defaults to the env's own (gymnax) or 1000 (brax).
      rescale_actions: map [-1, 1] to the env's action bounds.
      reward_delay: if given, the reward is summed and released every ``reward_delay``
        steps or at the episode's end (:class:`DelayedReward`, LIRPG's delayed tasks);
        episode statistics keep the true return.
      randomize: a randomised env, a task distribution over its physics (EPG's
        ``p(M)``; see :mod:`metareward.envs.tasks` and :func:`task_distribution`): each
        reset draws a task unless ``reset(rng, task=...)`` gives one; the task is kept in
        ``info["task"]``. Names with a distribution: :func:`randomizable`.
      task_ranges: with ``randomize``, ranges (or choices) of task factors that replace
        the defaults, e.g. ``{"m": (0.8, 1.2)}``.
      **kwargs: env options, e.g. ``backend="generalized"`` for brax envs, or gymnax
        ``EnvParams`` fields (``max_speed=...``).

    Raises:
      ValueError: unknown name, unknown option, an option whose value does not fit its
        type (:mod:`metareward.envs.options`: e.g. NaN or a list for a number, a length
        <= 0), a non-positive ``episode_length`` or ``reward_delay``, ``randomize`` for
        an env without a task distribution, or an unknown task factor.
    """
    entry = _entry(name)
    if task_ranges is not None and not randomize:
        raise ValueError("task_ranges needs randomize=True")
    if randomize:
        kwargs["tasks"] = task_distribution(name).with_overrides(task_ranges)
    if episode_length is not None:
        episode_length = check_option(name, "episode_length", episode_length, 1)
    if reward_delay is not None and (
        isinstance(reward_delay, bool) or not isinstance(reward_delay, int) or reward_delay <= 0
    ):
        raise ValueError(f"reward_delay must be a positive int, got {reward_delay!r}")
    env = entry.factory(name=name, episode_length=episode_length, **kwargs)
    if not env.auto_resets:
        env = AutoResetWrapper(EpisodeWrapper(env, env.spec.episode_length))
    if rescale_actions and not env.spec.discrete:
        env = ActionRescale(env)
    env = EpisodeStats(env)
    return env if reward_delay is None else DelayedReward(env, reward_delay)


#: name -> the default task distribution of ``make(name, randomize=True)``.
_TASKS: dict[str, TaskDistribution] = {"pendulum": PENDULUM}


def register_tasks(name: str, tasks: TaskDistribution) -> None:
    """Gives a registered env a default task distribution; its factory must accept
    ``tasks=`` (a :class:`TaskDistribution`)."""
    _entry(name)
    if name in _TASKS:
        raise ValueError(f"environment {name!r} already has a task distribution")
    _TASKS[name] = tasks


def randomizable() -> list[str]:
    """Names of the envs that ``make(name, randomize=True)`` accepts."""
    return sorted(_TASKS)


def task_distribution(name: str) -> TaskDistribution:
    """The default task distribution of ``make(name, randomize=True)``."""
    _entry(name)
    if name not in _TASKS:
        raise ValueError(f"environment {name!r} has no task distribution (randomize=True); "
                         f"randomisable envs: {randomizable()}")
    return _TASKS[name]


def _gymnax(gymnax_id: str) -> Callable[..., Env]:
    def factory(name: str, episode_length: int | None = None, **kwargs: Any) -> Env:
        return GymnaxEnv(name, gymnax_id, episode_length=episode_length, **kwargs)

    return factory


def _brax(brax_name: str) -> Callable[..., Env]:
    def factory(name: str, episode_length: int | None = None, **kwargs: Any) -> Env:
        return BraxEnv(name, brax_name, episode_length=episode_length or 1000, **kwargs)

    return factory


for _name, _id, _desc in [
    ("pendulum", "Pendulum-v1", "swing up a pendulum; 1-d torque, 200 steps"),
    ("cartpole", "CartPole-v1", "balance a pole on a cart; 2 actions, 500 steps"),
    ("acrobot", "Acrobot-v1", "swing a two-link arm above a line; 3 actions, 500 steps"),
    ("mountaincar", "MountainCar-v0", "drive up a hill by rocking; 3 actions, 200 steps"),
    (
        "mountaincar-continuous",
        "MountainCarContinuous-v0",
        "mountain car with a 1-d force, 999 steps",
    ),
    ("breakout-minatar", "Breakout-MinAtar", "MinAtar Breakout, 10x10x4 grid, 3 actions"),
    ("asterix-minatar", "Asterix-MinAtar", "MinAtar Asterix, 10x10x4 grid, 5 actions"),
    ("freeway-minatar", "Freeway-MinAtar", "MinAtar Freeway, 10x10x7 grid, 3 actions"),
    (
        "space-invaders-minatar",
        "SpaceInvaders-MinAtar",
        "MinAtar Space Invaders, 10x10x6 grid, 4 actions",
    ),
    ("seaquest-minatar", "Seaquest-MinAtar", "MinAtar Seaquest, 10x10x10 grid, 6 actions"),
]:
    register(_name, _gymnax(_id), _desc + " (gymnax)", "gymnax")

for _name, _id, _desc in [
    ("hopper", "hopper", "one-legged hopper, 3-d action"),
    ("walker2d", "walker2d", "2-d biped walker, 6-d action"),
    ("halfcheetah", "halfcheetah", "planar cheetah, 6-d action"),
    ("ant", "ant", "quadruped, 8-d action"),
    ("humanoid", "humanoid", "3-d humanoid, 17-d action"),
    ("reacher", "reacher", "2-link arm reaching a target, 2-d action"),
    ("swimmer", "swimmer", "3-link swimmer, 2-d action"),
    ("inverted-pendulum", "inverted_pendulum", "balance a pole on a cart, 1-d action"),
    (
        "inverted-double-pendulum",
        "inverted_double_pendulum",
        "balance a double pole on a cart, 1-d action",
    ),
]:
    register(_name, _brax(_id), _desc + " (brax, MuJoCo model; backend='mjx' default)", "brax")
register_tasks("hopper", HOPPER)  # EPG's random Hopper (section 4)
register_tasks("reacher", REACHER)  # EPG's random Reacher (section 4)

def _chain(name: str, episode_length: int | None = None, **kwargs: Any) -> Env:
    defaults = {k: p.default for k, p in inspect.signature(ChainEnv).parameters.items()
                if k not in ("name", "episode_length")}
    return ChainEnv(name, episode_length, **check_options(name, kwargs, defaults))


register(
    "chain",
    _chain,
    "TARE's chain: 11 states, start s5, left pays 1, right N(0.5, 1), s10 pays 10 - 0.01 n;"
    " 2 actions, 10 steps",
    "ours",
)


def _chain_truncating(name: str, episode_length: int | None = None, **kwargs: Any) -> Env:
    return _chain(name, episode_length, **{"step_limit_truncates": True, **kwargs})


register(
    "chain-truncating",
    _chain_truncating,
    "TARE's chain with a truncating (bootstrapped) step limit, where plain PPO dithers"
    " between inner states; 2 actions, 10 steps",
    "ours",
)


def _pointmass(name: str, episode_length: int | None = None,
               tasks: TaskDistribution | None = None, **kwargs: Any) -> Env:
    defaults = {k: p.default for k, p in inspect.signature(PointMassEnv).parameters.items()
                if k not in ("name", "episode_length", "tasks")}
    return PointMassEnv(name, episode_length, tasks=tasks,
                        **check_options(name, kwargs, defaults))


register(
    "pointmass",
    _pointmass,
    "a 2-d point mass reaching a goal shown in its observation, reward -distance;"
    " randomize=True draws the goal per task (EPG-style random goals); 50 steps",
    "ours",
)
register_tasks("pointmass", GOALS)
