"""The algorithm registry: what the ``metareward`` command can train.

An algorithm is a frozen ``Config`` dataclass, optional per-env presets, and
``make_train(config, env) -> Learner``. Registering it is all the command needs::

    register_algorithm(
        "ppo", config=ppo.Config, make_train=ppo.make_train, presets=ppo.PRESETS,
        description="PPO, clipped surrogate (Schulman et al. 2017)",
    )

Third-party packages can add algorithms without touching metareward through the
``metareward.algorithms`` entry-point group; each entry point names a zero-argument
callable that calls :func:`register_algorithm`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
from brax.envs.base import Env


class Learner(Protocol):
    """What every ``make_train(config, env)`` returns: the learner contract.

    Fields: ``config`` and ``env`` (the first env of a multi-env learner; all of them in
    ``envs``), ``num_updates`` (updates in a full run), and pure, jittable functions:

    * ``init(key) -> state``; ``update(state) -> (state, metrics)``: one update;
    * ``train(key) -> (state, metrics)``: ``init`` then ``num_updates`` updates in one
      ``lax.scan`` (metrics stacked over updates), so ``jax.vmap(train)`` runs seeds
      and, with float hyperparameters as JAX values, sweeps as one program;
    * ``act(state, obs, key, deterministic=False) -> actions`` for a batch of raw
      observations; it reads only ``state.params`` and ``state.obs_stats`` (where the
      learner normalises observations), so a :class:`~metareward.algos.policy.Policy`
      acts like the state it came from (EPG acts with an inner agent's state, its
      ``policy_init(key)`` builds one);
    * ``evaluate(state, key, num_episodes, deterministic) -> returns``.

    States follow one convention: ``params`` (a dict of the parameters of each net),
    ``key``, ``update_step`` (updates done), ``env_steps`` (transitions collected) and
    ``nonfinite`` (steps skipped for a non-finite loss or gradient).

    What the chunked runner needs of it:

    ``init(key) -> state`` and ``update(state) -> (state, metrics)`` are pure and
    jittable; ``state`` is a pytree holding *everything* that changes during training
    (parameters, optimizer and normaliser state, env states, PRNG key, counters, outer
    state of meta-learners), which is what makes checkpoints resume exactly. ``state``
    has a ``params`` field (checked for non-finite values between chunks). ``metrics``
    is a flat dict of scalars with at least ``env_steps`` (cumulative); the optional
    ``episode_return``, ``episode_return_std``, ``episode_length`` and ``episodes``
    describe the episodes that ended during the update (NaN when none did); a learner
    with more such metrics names them in an optional ``episode_metric_names`` attribute
    (e.g. LIRPG's ``intrinsic_return``), and the runner treats them alike (a NaN is no
    error where no episode ended; chunk records weight them by episodes); a mapping
    ``{name: count_name}`` gives a metric its own episode count (MetaGenRL's
    ``return_ENV`` / ``episodes_ENV``, one pair per env).
    ``evaluate(state, key, num_episodes, deterministic=False) -> [num_episodes]``: returns
    of fresh episodes of the current policy (its mode if ``deterministic``).

    A learner with a population inside one run (EPG's members, MetaGenRL's agents) may
    say so for sharding (:mod:`metareward.runtime.sharding`): ``population_sizes``, a
    tuple of the sizes of its population axes (each must be divisible by the devices the
    population is split over), ``population_name`` (what those sizes are, for errors),
    and ``population_leaves(state)``, a pytree of bools like ``state`` marking the
    leaves whose leading axis is a population axis (laid out over the ``"members"``
    devices with the state; omitted: none, as for EPG, whose members live only inside
    ``update``).
    """

    config: Any
    env: Env
    num_updates: int

    def init(self, key: jax.Array) -> Any:
        """A fresh train state.

        Args:
            key: PRNG key of the initialisation (parameters, env resets).

        Returns:
            The initial train state (a pytree).
        """
        ...

    def update(self, state: Any) -> tuple[Any, dict[str, jax.Array]]:
        """One update.

        Args:
            state: The train state.

        Returns:
            ``(state, metrics)``: the state after the update and a flat dict of scalar metrics
            (at least ``env_steps``).
        """
        ...

    def train(self, key: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        """``init`` then ``num_updates`` updates in one ``lax.scan``.

        Args:
            key: PRNG key of the run.

        Returns:
            ``(state, metrics)``: the final train state and the metrics stacked over updates
            (``[num_updates]`` each).
        """
        ...

    def act(
        self, state: Any, obs: jax.Array, key: jax.Array, deterministic: bool = ...
    ) -> jax.Array:
        """Actions for a batch of raw observations.

        Args:
            state: A train state or a :class:`~metareward.algos.policy.Policy` (only
                ``params`` and ``obs_stats`` are read).
            obs: ``[N, ...]`` raw observations.
            key: PRNG key of the action sampling.
            deterministic: Act with the policy's mode instead of sampling.

        Returns:
            ``[N, ...]`` env actions.
        """
        ...

    def evaluate(
        self, state: Any, key: jax.Array, num_episodes: int = ..., deterministic: bool = ...
    ) -> jax.Array:
        """Returns of fresh episodes of the current policy.

        Args:
            state: The train state.
            key: PRNG key of the resets and the actions.
            num_episodes: Episodes to run.
            deterministic: Act with the policy's mode instead of sampling.

        Returns:
            ``[num_episodes]`` undiscounted returns.
        """
        ...


@dataclasses.dataclass(frozen=True)
class AlgoSpec:
    """A registered algorithm."""

    name: str
    description: str
    config: type
    make_train: Callable[[Any, Env], Learner]
    presets: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: Options the algorithm's env is built with (under the user's), e.g.
    #: ``{"randomize": True}`` for a meta-learner over a task distribution.
    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: A meta-learner (``metareward meta-train``): one update is one outer iteration.
    meta: bool = False
    #: The meta-learned part of a train state (e.g. EPG's loss parameters): what
    #: ``metareward meta-test`` loads from a run and hands to the learner's
    #: ``meta_test(learned, task, key, num_eval)``. ``None``: no meta-test.
    learned: Callable[[Any], Any] | None = None
    #: Trains on several envs at once (``make_train(config, [env, ...])``; on the command
    #: line ``--envs a,b``), e.g. MetaGenRL's population over different envs.
    multi_env: bool = False

    def default_config(self, env_name: str) -> Any:
        """The tuned preset for ``env_name`` if there is one, else the paper defaults
        (with a warning); ``ConfigError`` for an unknown env (see
        :func:`metareward.algos.config.preset`).

        Args:
            env_name: The env's registered name.

        Returns:
            An instance of the algorithm's ``config`` class.
        """
        from metareward.algos.config import preset

        return preset(self.presets, self.config(), env_name, self.name)


_ALGOS: dict[str, AlgoSpec] = {}
_plugins_loaded = False


def register_algorithm(
    name: str,
    *,
    config: type,
    make_train: Callable[[Any, Env], Learner],
    description: str,
    presets: Mapping[str, Any] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    meta: bool = False,
    learned: Callable[[Any], Any] | None = None,
    multi_env: bool = False,
) -> AlgoSpec:
    """Adds an algorithm to the registry (and so to the ``metareward`` command).

    Args:
        name: The algorithm's name (on the command line).
        config: Its config class (a dataclass type); ``config()`` are the defaults.
        make_train: ``make_train(config, env) -> Learner``.
        description: A one-line description (``metareward list`` prints it).
        presets: Tuned configs by env name (``None``: none).
        env_kwargs: Options its env is always built with (``metareward.envs.make``).
        meta: A meta-learner, trained by ``metareward meta-train``.
        learned: ``learned(state)``: its meta-learned parameters, for
            ``metareward meta-test`` (see :mod:`metareward.runtime.meta_test`).
        multi_env: ``make_train`` takes a list of envs (the command's ``--envs a,b``).

    Returns:
        The registered :class:`AlgoSpec`.

    Raises:
        TypeError: If ``config`` is not a dataclass type.
        ValueError: If ``name`` is already registered.
    """
    if not dataclasses.is_dataclass(config) or not isinstance(config, type):
        raise TypeError(f"config must be a dataclass type, got {config!r}")
    if name in _ALGOS:
        raise ValueError(f"algorithm {name!r} is already registered")
    spec = AlgoSpec(name, description, config, make_train, dict(presets or {}),
                    dict(env_kwargs or {}), bool(meta), learned, bool(multi_env))
    _ALGOS[name] = spec
    return spec


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="metareward.algorithms"):
        ep.load()()


def algorithm_names() -> list[str]:
    """Registered algorithm names."""
    _load_plugins()
    return sorted(_ALGOS)


def get_algorithm(name: str) -> AlgoSpec:
    """The registered algorithm ``name``; ``ValueError`` listing the valid names if none.

    Args:
        name: The algorithm's name (entry-point plugins are loaded first).

    Returns:
        Its :class:`AlgoSpec`.

    Raises:
        ValueError: If no algorithm ``name`` is registered.
    """
    _load_plugins()
    if name not in _ALGOS:
        raise ValueError(f"unknown algorithm {name!r}; valid: {sorted(_ALGOS)}")
    return _ALGOS[name]


__all__ = ["AlgoSpec", "Learner", "algorithm_names", "get_algorithm", "register_algorithm"]
