"""The environment registry: ``make(name, **kwargs)`` and ``names()``.

Your own env: a class with ``reset(rng) -> State``, ``step(state, action) -> State``, a
``spec`` (:class:`~metareward.envs.spec.EnvSpec`) and an ``auto_resets`` flag (subclass
brax's ``Env`` and :class:`~metareward.envs.spec.SpecMixin`, which gives ``spec`` from
``self._spec`` and ``auto_resets=False``), and a factory ``factory(name=...,
episode_length=..., **options)`` given to :func:`register`. To make it known to every
process (``metareward eval``, ``resume``), name a function that registers it in your
package's entry-point group ``metareward.envs`` (:data:`ENTRY_POINT_GROUP`).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from collections.abc import Callable
from typing import Any

from brax.envs.base import Env

from metareward.envs.brax_adapter import BraxEnv
from metareward.envs.brax_tasks import HOPPER, REACHER
from metareward.envs.chain import ChainEnv
from metareward.envs.gymnax_adapter import GymnaxEnv
from metareward.envs.options import check_option, check_options
from metareward.envs.pointmass import GOALS, PointMassEnv
from metareward.envs.spec import EnvSpec
from metareward.envs.tasks import PENDULUM, TaskDistribution
from metareward.envs.wrappers import (
    ActionRescale,
    AutoResetWrapper,
    DelayedReward,
    EpisodeStats,
    EpisodeWrapper,
)

#: The entry-point group of third-party envs: each entry point names a function, called
#: with no arguments, that registers envs (or a module whose import registers them).
ENTRY_POINT_GROUP = "metareward.envs"

#: The keyword arguments :func:`make` gives every factory.
FACTORY_KEYWORDS = ("name", "episode_length")


@dataclasses.dataclass(frozen=True)
class _Entry:
    factory: Callable[..., Env]
    description: str
    source: str


_REGISTRY: dict[str, _Entry] = {}
_plugins_loaded = False


def register(name: str, factory: Callable[..., Env], description: str = "",
             source: str = "user", *, overwrite: bool = False) -> None:
    """Adds an environment to the registry, so that :func:`make` (and the ``metareward``
    command, in this process) builds it by name.

    ``make(name, **options)`` calls ``factory(name=name, episode_length=..., **options)``
    (``episode_length`` is None unless the caller gave one: the env's default applies);
    the factory returns an env with ``reset(rng)``, ``step(state, action)``, a ``spec``
    (:class:`~metareward.envs.spec.EnvSpec`) and an ``auto_resets`` flag (``False``:
    :func:`make` adds the time limit and auto-reset). For other processes, register it
    from an entry point (:data:`ENTRY_POINT_GROUP`).

    Args:
      name: the env's name.
      factory: builds the env; it must accept the keyword arguments ``name`` and
        ``episode_length`` (explicitly or through ``**kwargs``).
      description: one line for ``metareward list`` and :func:`describe`.
      source: a label that :func:`names` can select by (``"gymnax"``, ``"brax"`` and
        ``"ours"`` are metareward's own).
      overwrite: replace an env of that name (and forget its task distribution,
        :func:`register_tasks`), e.g. when a notebook cell runs again; without it a
        name registered already is refused.

    Raises:
      ValueError: ``name`` is registered already and ``overwrite`` is False.
      TypeError: ``factory`` is not callable or does not accept ``name`` and
        ``episode_length``.
    """
    _check_factory(name, factory)
    _load_plugins()
    _add(name, factory, description, source, overwrite)


def _add(name: str, factory: Callable[..., Env], description: str, source: str,
         overwrite: bool) -> None:
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"environment {name!r} is already registered (source "
                         f"{_REGISTRY[name].source!r}); pass overwrite=True to replace it")
    if name in _REGISTRY:
        _TASKS.pop(name, None)  # the old env's distribution
    _REGISTRY[name] = _Entry(factory, description, source)


def _check_factory(name: str, factory: Callable[..., Env]) -> None:
    if not callable(factory):
        raise TypeError(f"environment {name!r}: factory must be callable, got {factory!r}")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature (some builtins): checked when made
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    takes = {k for k, p in params.items()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                           inspect.Parameter.KEYWORD_ONLY)}
    missing = [k for k in FACTORY_KEYWORDS if k not in takes]
    if missing:
        raise TypeError(
            f"environment {name!r}: the factory {getattr(factory, '__name__', factory)!r} "
            f"does not accept the keyword argument(s) {missing}; make() calls "
            "factory(name=..., episode_length=..., **options) (episode_length None: the "
            "env's default)")


def _load_plugins() -> None:
    """Registers the envs of the entry-point group :data:`ENTRY_POINT_GROUP`, once (the
    first lookup or registration). A plugin that fails is named in a ``RuntimeError``,
    once; the others are registered all the same."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    failed = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
            if not isinstance(loaded, types.ModuleType):
                loaded()
        except Exception as e:  # the others still load; this one is named below
            failed.append((ep, e))
    if failed:
        raise RuntimeError("; ".join(
            f"the env plugin {ep.name} = {ep.value} (entry-point group "
            f"{ENTRY_POINT_GROUP!r}) failed: {type(e).__name__}: {e}" for ep, e in failed)
        ) from failed[0][1]


def names(source: str | None = None) -> list[str]:
    """Registered environment names, including those of entry-point plugins.

    Args:
      source: only the envs of this source (``"gymnax"``, ``"brax"``, ``"ours"``, a
        :func:`register` call's label), or all if None.

    Returns:
      The names, sorted.
    """
    _load_plugins()
    return sorted(n for n, e in _REGISTRY.items() if source is None or e.source == source)


def describe(name: str) -> str:
    """One-line description of a registered environment.

    Args:
        name: A registered env's name.

    Returns:
        Its description.

    Raises:
        ValueError: an unknown name (the message lists the registered ones).
    """
    return _entry(name).description


def _entry(name: str) -> _Entry:
    _load_plugins()
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
      TypeError: the env the factory returned lacks ``reset``, ``step``, ``spec`` or
        ``auto_resets``, or a brax ``Env`` subclass lacks an abstract member (the message
        names what is missing).
      RuntimeError: an entry-point plugin (:data:`ENTRY_POINT_GROUP`) failed to load.
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
    try:
        env = entry.factory(name=name, episode_length=episode_length, **kwargs)
    except TypeError as e:
        if not str(e).startswith("Can't instantiate abstract class"):
            raise
        raise TypeError(f"environment {name!r}: {e} (a brax Env also needs the properties "
                        "observation_size, action_size and backend)") from e
    _check_env(name, env)
    if not env.auto_resets:
        env = AutoResetWrapper(EpisodeWrapper(env, env.spec.episode_length))
    if rescale_actions and not env.spec.discrete:
        env = ActionRescale(env)
    env = EpisodeStats(env)
    return env if reward_delay is None else DelayedReward(env, reward_delay)


def _check_env(name: str, env: Any) -> None:
    """Raises a ``TypeError`` naming what the env a factory returned lacks."""
    missing = [m for m in ("reset", "step") if not callable(getattr(env, m, None))]
    problems = [f"the method(s) {', '.join(missing)}"] if missing else []
    try:
        spec = env.spec
    except AttributeError:
        problems.append("spec (an EnvSpec: SpecMixin gives it from self._spec, which "
                        "__init__ sets)")
    else:
        if not isinstance(spec, EnvSpec):
            problems.append(f"a spec of type EnvSpec (got {type(spec).__name__})")
    try:
        auto_resets = env.auto_resets
    except AttributeError:
        problems.append("auto_resets (a bool; SpecMixin gives False)")
    else:
        if not isinstance(auto_resets, bool):
            problems.append(f"auto_resets of type bool (got {type(auto_resets).__name__})")
    if problems:
        raise TypeError(
            f"environment {name!r}: its factory returned a {type(env).__name__}, which lacks "
            f"{'; '.join(problems)}. An env needs reset(rng) -> State, step(state, action) "
            "-> State, spec and auto_resets (see metareward.envs.register)")


#: name -> the default task distribution of ``make(name, randomize=True)``.
_TASKS: dict[str, TaskDistribution] = {"pendulum": PENDULUM}


def register_tasks(name: str, tasks: TaskDistribution, *, overwrite: bool = False) -> None:
    """Gives a registered env a default task distribution (``make(name, randomize=True)``).

    Args:
      name: a registered env, whose factory accepts ``tasks=`` (a
        :class:`TaskDistribution`).
      tasks: the distribution.
      overwrite: replace the env's distribution if it has one.

    Raises:
      ValueError: unknown env, or one with a distribution already and ``overwrite`` False.
    """
    _entry(name)
    if name in _TASKS and not overwrite:
        raise ValueError(f"environment {name!r} already has a task distribution")
    _TASKS[name] = tasks


def randomizable() -> list[str]:
    """Names of the envs that ``make(name, randomize=True)`` accepts."""
    _load_plugins()
    return sorted(_TASKS)


def task_distribution(name: str) -> TaskDistribution:
    """The default task distribution of ``make(name, randomize=True)``.

    Args:
        name: A registered env's name.

    Returns:
        Its task distribution.

    Raises:
        ValueError: an unknown env, or one without a task distribution.
    """
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
    _add(_name, _gymnax(_id), _desc + " (gymnax)", "gymnax", overwrite=False)

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
    _add(_name, _brax(_id), _desc + " (brax, MuJoCo model; backend='mjx' default)", "brax",
         overwrite=False)
_TASKS["hopper"] = HOPPER  # EPG's random Hopper (section 4)
_TASKS["reacher"] = REACHER  # EPG's random Reacher (section 4)

def _chain(name: str, episode_length: int | None = None, **kwargs: Any) -> Env:
    defaults = {k: p.default for k, p in inspect.signature(ChainEnv).parameters.items()
                if k not in ("name", "episode_length")}
    return ChainEnv(name, episode_length, **check_options(name, kwargs, defaults))


_add(
    "chain",
    _chain,
    "TARE's chain: 11 states, start s5, left pays 1, right N(0.5, 1), s10 pays 10 - 0.01 n;"
    " 2 actions, 10 steps",
    "ours",
    overwrite=False,
)


def _chain_truncating(name: str, episode_length: int | None = None, **kwargs: Any) -> Env:
    return _chain(name, episode_length, **{"step_limit_truncates": True, **kwargs})


_add(
    "chain-truncating",
    _chain_truncating,
    "TARE's chain with a truncating (bootstrapped) step limit, where plain PPO dithers"
    " between inner states; 2 actions, 10 steps",
    "ours",
    overwrite=False,
)


def _pointmass(name: str, episode_length: int | None = None,
               tasks: TaskDistribution | None = None, **kwargs: Any) -> Env:
    defaults = {k: p.default for k, p in inspect.signature(PointMassEnv).parameters.items()
                if k not in ("name", "episode_length", "tasks")}
    return PointMassEnv(name, episode_length, tasks=tasks,
                        **check_options(name, kwargs, defaults))


_add(
    "pointmass",
    _pointmass,
    "a 2-d point mass reaching a goal shown in its observation, reward -distance;"
    " randomize=True draws the goal per task (EPG-style random goals); 50 steps",
    "ours",
    overwrite=False,
)
_TASKS["pointmass"] = GOALS


__all__ = ["ENTRY_POINT_GROUP", "FACTORY_KEYWORDS", "describe", "make", "names", "randomizable",
           "register", "register_tasks", "task_distribution"]
