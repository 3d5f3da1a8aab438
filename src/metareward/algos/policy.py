"""Policies outside training: what a learner's ``act`` reads, one seed of a seed-batched
state, and saving a trained policy to a file that a fresh process acts with.

Every learner's ``act(state, obs, key, deterministic=False)`` reads only ``state.params``
(and ``state.obs_stats`` where the learner normalises observations), so a
:class:`Policy` holding those two acts exactly as the train state it came from::

    trainer = ppo.make_train(ppo.preset("cartpole"), env)
    states, _ = jax.jit(jax.vmap(trainer.train))(jax.random.split(key, 4))
    state = take_seed(states, 2)                       # seed 2 of the batch
    save_policy("cartpole_ppo.msgpack", trainer, state)
    ...                                                # another process
    policy = load_policy("cartpole_ppo.msgpack")
    actions = policy.act(obs, key, deterministic=True)

A policy file is a msgpack document (``flax.serialization``) with the algorithm's
registered name, its config, the env it was trained on, and :class:`Policy`'s arrays.
Loading rebuilds the learner from the registry (nothing is compiled and no env is
stepped), so the file holds no code.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization, struct

from metareward.rl.normalize import RunningStats

FORMAT = "metareward-policy/1"


@struct.dataclass
class Policy:
    """What ``act`` reads of a train state.

    Attributes:
        params: The learner's parameters (``state.params``: the policy's and, small
            beside it, the value's or learned reward's).
        obs_stats: The running observation statistics the policy normalises with, or
            ``None`` for a learner without them (TD3/DDPG, MetaGenRL).
    """

    params: Any
    obs_stats: RunningStats | None = None


def policy_of(state: Any) -> Policy:
    """The :class:`Policy` of a train state (its ``params`` and ``obs_stats``).

    Args:
        state: A learner's train state (one seed; see :func:`take_seed`), or for EPG an
            inner agent's ``InnerState`` (``inner_run``'s first output).

    Returns:
        ``Policy(state.params, state.obs_stats)`` (``obs_stats`` ``None`` if absent).
    """
    if isinstance(state, Policy):
        return state
    if not hasattr(state, "params"):
        raise TypeError(f"expected a train state with params, got {type(state).__name__}")
    return Policy(params=state.params, obs_stats=getattr(state, "obs_stats", None))


def num_seeds(state: Any) -> int:
    """The size of the leading (seed) axis of a seed-batched state, as
    ``jax.vmap(trainer.train)`` returns it; ``ValueError`` if its leaves disagree.

    Args:
        state: A train state batched over seeds on every leaf's leading axis.

    Returns:
        The number of seeds.

    Raises:
        ValueError: If a leaf is a scalar or the leaves' leading axes differ.
    """
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(state)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"not a seed-batched state: its leaves' leading axes are {sorted(map(str, sizes))}"
        )
    return int(sizes.pop())


def check_one_seed(state: Any, what: str = "evaluate") -> None:
    """``ValueError`` if ``state`` is seed-batched (its ``update_step`` has an axis), for
    functions that take one seed's state; a :class:`Policy` is not checked.

    Args:
        state: A train state.
        what: The function's name, for the message.
    """
    step = getattr(state, "update_step", None)
    if step is not None and np.ndim(step) > 0:
        raise ValueError(
            f"{what} takes one seed's state; this one is batched over {np.shape(step)[0]} "
            f"seeds: take one with metareward.algos.take_seed(state, i), or "
            f"jax.vmap({what}) over the seeds"
        )


def take_seed(state: Any, index: int) -> Any:
    """Seed ``index`` of a seed-batched state (every leaf's leading axis indexed).

    Args:
        state: A state batched over seeds (``jax.vmap(trainer.train)(keys)[0]``), or a
            :class:`Policy` of one.
        index: Which seed, ``0 <= index < num_seeds(state)`` (negative counts from the
            end).

    Returns:
        The same pytree with the seed axis removed: what ``act`` and ``evaluate`` take.
    """
    n = num_seeds(state)
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or not -n <= index < n:
        raise IndexError(f"seed index {index!r} is out of range; allowed: -{n} ... {n - 1}")
    return jax.tree.map(lambda x: x[index], state)


def _algorithm_of(config: Any) -> str:
    from metareward.algos.registry import algorithm_names, get_algorithm

    names = [n for n in algorithm_names() if type(config) is get_algorithm(n).config]
    if not names:
        raise ValueError(f"{type(config).__qualname__} is not a registered algorithm's config")
    return names[0]


def _env_names(learner: Any) -> list[str]:
    envs = getattr(learner, "envs", None) or (learner.env,)
    return [e.spec.name for e in envs]


def save_policy(
    path: str | os.PathLike[str],
    learner: Any,
    state: Any,
    *,
    env_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Writes the policy of ``state`` (one seed) to ``path``, atomically.

    Args:
        path: The file to write (parent directories are created).
        learner: The learner ``state`` was trained by (its config, env and registered
            algorithm are recorded).
        state: One seed's train state, or its :class:`Policy`.
        env_kwargs: The options the env was built with (``metareward.envs.make(name,
            **env_kwargs)``), recorded so that :func:`load_policy` rebuilds the same env;
            default: the algorithm's registered env options.

    Returns:
        The path written.

    Raises:
        ValueError: the state is seed-batched (take one with :func:`take_seed`), or the
            learner's config is not a registered algorithm's.
        OSError: the file cannot be written (the message names it).
    """
    from metareward.algos.registry import get_algorithm
    from metareward.runtime.configs import config_to_dict

    policy = policy_of(state)
    name = _algorithm_of(learner.config)
    _check_like(_template(learner), policy, "the state to save")
    meta = {
        "format": FORMAT,
        "algorithm": name,
        "config": config_to_dict(learner.config),
        "envs": _env_names(learner),
        "env_kwargs": dict(get_algorithm(name).env_kwargs if env_kwargs is None else env_kwargs),
    }
    body = {
        "meta": json.dumps(meta, sort_keys=True),
        "policy": serialization.to_state_dict(jax.tree.map(np.asarray, policy)),
    }
    data = serialization.msgpack_serialize(body)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(f"cannot write policy file {str(path)!r}: {e.strerror or e}") from e
    return path


def _template(learner: Any) -> Policy:
    """The shapes of the learner's :class:`Policy` (of the state its ``act`` takes:
    ``policy_init(key)`` where a learner has one, as EPG's inner agent, else ``init``)."""
    init = getattr(learner, "policy_init", None) or learner.init
    return policy_of(jax.eval_shape(init, jax.random.PRNGKey(0)))


def _check_like(template: Any, policy: Any, what: str) -> None:
    """``ValueError`` naming the first leaf where ``policy`` differs in structure or shape
    from ``template`` (a seed-batched state has an extra leading axis everywhere)."""
    t_paths = jax.tree_util.tree_flatten_with_path(template)[0]
    p_paths = jax.tree_util.tree_flatten_with_path(policy)[0]
    if [p for p, _ in t_paths] != [p for p, _ in p_paths]:
        raise ValueError(f"{what} does not have the learner's parameters' structure")
    for (p, t), (_, x) in zip(t_paths, p_paths, strict=True):
        if tuple(np.shape(x)) != tuple(t.shape):
            hint = (" (a seed-batched state? take one seed with take_seed)"
                    if tuple(np.shape(x))[1:] == tuple(t.shape) else "")
            raise ValueError(f"{what}: {jax.tree_util.keystr(p)} has shape {np.shape(x)}, "
                             f"the learner's is {tuple(t.shape)}{hint}")


@dataclasses.dataclass(frozen=True)
class LoadedPolicy:
    """A policy read back by :func:`load_policy`.

    Attributes:
        learner: The learner rebuilt from the file (its ``act``, ``evaluate``, ``env``).
        policy: The saved :class:`Policy`.
        algorithm: The registered algorithm's name.
        config: The learner's config.
    """

    learner: Any
    policy: Policy
    algorithm: str
    config: Any

    def act(self, obs: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
        """Env actions for a batch of raw observations, as the learner's ``act``.

        Args:
            obs: ``[N, ...]`` raw (unnormalised) observations.
            key: PRNG key of the action sampling.
            deterministic: Act with the policy's mode instead of sampling.

        Returns:
            ``[N, ...]`` env actions, one per observation.
        """
        return self.learner.act(self.policy, obs, key, deterministic)

    def evaluate(self, key: jax.Array, num_episodes: int = 16,
                 deterministic: bool = False) -> jax.Array:
        """Returns of ``num_episodes`` fresh episodes of this policy on the rebuilt env
        (the first env of a multi-env learner).

        Args:
            key: PRNG key of the resets and the actions.
            num_episodes: Episodes to run, each in its own env of a batch.
            deterministic: Act with the policy's mode instead of sampling.

        Returns:
            ``[num_episodes]`` undiscounted returns.
        """
        from metareward.rl.rollout import evaluate_episodes

        env = self.learner.env
        fn = lambda obs, k: self.act(obs, k, deterministic)
        return evaluate_episodes(env, fn, key, num_episodes, env.spec.episode_length)


def load_policy(path: str | os.PathLike[str]) -> LoadedPolicy:
    """Reads a policy written by :func:`save_policy`.

    Args:
        path: The policy file.

    Returns:
        A :class:`LoadedPolicy`; its ``act`` gives the same actions as the saved state's.

    Raises:
        OSError: the file cannot be read (the message names it).
        ValueError: the file is not a policy file, or names an algorithm or env that is
            not registered here, or its arrays do not fit the rebuilt learner.
    """
    from metareward import envs
    from metareward.algos.registry import get_algorithm
    from metareward.runtime.configs import apply_overrides

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise OSError(f"cannot read policy file {str(path)!r}: {e.strerror or e}") from e
    try:
        body = serialization.msgpack_restore(raw)
        meta = json.loads(body["meta"])
        assert meta.get("format") == FORMAT
    except Exception as e:
        raise ValueError(f"{str(path)!r} is not a metareward policy file ({FORMAT})") from e
    spec = get_algorithm(meta["algorithm"])
    config = apply_overrides(spec.config(), meta["config"], f"policy file {str(path)!r}")
    made = [envs.make(n, **meta["env_kwargs"]) for n in meta["envs"]]
    learner = spec.make_train(config, made if spec.multi_env else made[0])
    template = _template(learner)
    policy = serialization.from_state_dict(template, body["policy"])
    _check_like(template, policy, f"policy file {str(path)!r}")
    policy = jax.tree.map(jax.numpy.asarray, policy)
    return LoadedPolicy(learner=learner, policy=policy, algorithm=meta["algorithm"],
                        config=config)


__all__ = [
    "LoadedPolicy",
    "Policy",
    "check_one_seed",
    "load_policy",
    "num_seeds",
    "policy_of",
    "save_policy",
    "take_seed",
]
