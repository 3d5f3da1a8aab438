r"""rejax's PPO, or PureJaxRL's ``ppo.py`` from a checkout, on a gymnax env: the peer side of
``benchmarks/peers.py``.

Runs INSIDE the peer virtual env that ``benchmarks/peers.py`` builds (rejax 0.1.3 on this
project's jax / flax / optax / gymnax pins), never in the project's env; it imports no
``metareward`` module and contains no code of either peer: rejax is an installed package,
PureJaxRL is imported from the directory given with ``--purejaxrl-dir`` (a checkout of
its repository; PureJaxRL is not on PyPI).

Both peers were written against gymnax < 1.0, whose ``step`` returns five values
``(obs, state, reward, done, info)``; gymnax 1.0 returns six (``terminated`` and
``truncated`` apart). :class:`FiveValueStep` adapts a gymnax 1.0 env to the old
signature (``done = terminated | truncated``), which is what the peers were written for.

Prints one JSON record on its last line: compile time, the seconds of each timed run,
env steps, final return, peak memory.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
from _memory import peak_rss_mb  # benchmarks/ is on sys.path when run as a script
from _timing import time_call

EVAL_EPISODES = 128


class FiveValueStep:
    """A gymnax 1.0 env whose ``step`` returns gymnax 0.0.x's five values.

    Args:
        env: the gymnax 1.0 environment to adapt.
    """

    def __init__(self, env: Any) -> None:
        self._env = env

    def __getattr__(self, name: str) -> Any:
        if name == "_env":  # not yet set (copy.deepcopy builds the object bare)
            raise AttributeError(name)
        return getattr(self._env, name)

    def __deepcopy__(self, memo: dict) -> FiveValueStep:
        # rejax deep-copies its config, env included; gymnax envs hold no state
        return self

    def step(self, key: jax.Array, state: Any, action: Any, params: Any = None) -> tuple:
        """gymnax 0.0.x's ``step``: ``(obs, state, reward, done, info)``."""
        obs, state, reward, terminated, truncated, info = self._env.step(
            key, state, action, params
        )
        return obs, state, reward, jnp.logical_or(terminated, truncated), info


def make_env(gymnax_id: str, flatten: bool = False) -> tuple[FiveValueStep, Any]:
    """``gymnax.make`` with the env adapted by :class:`FiveValueStep`.

    Args:
        gymnax_id: gymnax's env id, e.g. ``"CartPole-v1"``.
        flatten: flatten the observations (gymnax's ``FlattenObservationWrapper``, as
            PureJaxRL does for every env: rejax's MLPs act on the last axis only).

    Returns:
        ``(env, env_params)``.
    """
    env, params = _GYMNAX_MAKE(gymnax_id)
    if flatten:
        from gymnax.wrappers.purerl import FlattenObservationWrapper

        env = FlattenObservationWrapper(env)
    return FiveValueStep(env), params


_GYMNAX_MAKE = gymnax.make


def rejax_program(cfg: dict[str, Any], gymnax_id: str, num_seeds: int):
    """rejax's PPO built from ``cfg`` (rejax's field names); returns ``(train, evaluate,
    env_steps)``:
    ``train(keys)`` jitted over ``num_seeds`` vmapped seeds (no evaluation inside the
    timed program), ``evaluate(train_state, keys)`` the mean return of
    :data:`EVAL_EPISODES` episodes per seed."""
    from rejax import PPO
    from rejax.evaluate import evaluate

    env, params = make_env(gymnax_id, flatten=True)
    algo = PPO.create(env=env, env_params=params, **cfg)
    # one evaluation slot at the end, and no evaluation in the timed program
    algo = algo.replace(eval_freq=cfg["total_timesteps"], skip_initial_evaluation=True,
                        eval_callback=lambda a, ts, rng: jnp.zeros(()))

    def train(key):
        ts, _ = algo.train(key)
        return ts

    def evaluate_one(ts, key):
        act = algo.make_act(ts)
        _, returns = evaluate(act, key, env, params, EVAL_EPISODES,
                              params.max_steps_in_episode)
        return returns.mean()

    updates = int(np.ceil(cfg["total_timesteps"] / (cfg["num_envs"] * cfg["num_steps"])))
    steps = updates * cfg["num_envs"] * cfg["num_steps"]
    return _vmapped(train, num_seeds), _vmapped(evaluate_one, num_seeds), steps


def purejaxrl_program(cfg: dict[str, Any], gymnax_id: str, num_seeds: int, directory: str):
    """PureJaxRL's ``make_train`` (its ``ppo.py`` in ``directory``) on ``cfg`` (its config
    dict); returns ``(train, evaluate, env_steps)``. PureJaxRL has no evaluation of its
    own: ``evaluate`` returns the mean of the last 128 finished training episodes' returns
    that its ``LogWrapper`` reports (``returned_episode_returns``)."""
    sys.path.insert(0, str(Path(directory).resolve()))
    gymnax.make = make_env  # PureJaxRL calls gymnax.make(ENV_NAME) itself
    ppo = importlib.import_module("ppo")
    cfg = {**cfg, "ENV_NAME": gymnax_id, "DEBUG": False}
    make = ppo.make_train(cfg)

    def train(key):
        out = make(key)
        info = out["metrics"]
        done = info["returned_episode"][-8:].reshape(-1)
        rets = info["returned_episode_returns"][-8:].reshape(-1)
        return jnp.sum(jnp.where(done, rets, 0.0)) / jnp.maximum(done.sum(), 1)

    steps = int(cfg["NUM_UPDATES"]) * cfg["NUM_ENVS"] * cfg["NUM_STEPS"]
    return _vmapped(train, num_seeds), None, steps


def rejax_profile(cfg: dict[str, Any], gymnax_id: str, calls: int,
                  num_seeds: int = 1) -> dict[str, Any]:
    """Times the stages of one rejax PPO update at ``cfg``'s shapes: the rollout
    (``collect_trajectories``), GAE (``calculate_gae``), the epochs of minibatch steps
    and the whole update (``train_iteration``), each vmapped over ``num_seeds`` seeds.

    Args:
        cfg: rejax's config dict.
        gymnax_id: gymnax's env id.
        calls: timed calls per stage.
        num_seeds: seeds vmapped in each stage (none at 1).

    Returns:
        Stage name -> ``{"us", "hlo_ops"}``.
    """
    from rejax import PPO

    env, params = make_env(gymnax_id, flatten=True)
    algo = PPO.create(env=env, env_params=params, **cfg)
    batch = lambda fn: jax.vmap(fn) if num_seeds > 1 else fn
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    ts = jax.jit(batch(algo.init_state))(keys if num_seeds > 1 else keys[0])
    ts1, traj = jax.jit(batch(algo.collect_trajectories))(ts)
    last_val = jax.jit(batch(lambda t: algo.critic.apply(t.critic_ts.params, t.last_obs)))(ts1)
    adv, targets = jax.jit(batch(algo.calculate_gae))(traj, last_val)

    def epochs(ts, traj, adv, targets):
        def update_epoch(ts, _):
            rng, mb_rng = jax.random.split(ts.rng)
            ts = ts.replace(rng=rng)
            mbs = algo.shuffle_and_split(_minibatch(traj, adv, targets), mb_rng)
            ts, _ = jax.lax.scan(lambda t, mb: (algo.update(t, mb), None), ts, mbs)
            return ts, None
        return jax.lax.scan(update_epoch, ts, None, algo.num_epochs)[0]

    return {
        "rollout": time_call(batch(algo.collect_trajectories), ts, calls=calls),
        "gae": time_call(batch(algo.calculate_gae), traj, last_val, calls=calls),
        "epochs": time_call(batch(epochs), ts1, traj, adv, targets, calls=calls),
        "update": time_call(batch(algo.train_iteration), ts, calls=calls),
    }


def _minibatch(traj: Any, adv: Any, targets: Any) -> Any:
    from rejax.algos.ppo import AdvantageMinibatch

    return AdvantageMinibatch(traj, adv, targets)


def _vmapped(fn, num_seeds: int):
    return jax.jit(jax.vmap(fn) if num_seeds > 1 else fn)


def main(argv: list[str] | None = None) -> None:
    """Builds the peer's program, compiles it, times ``--repeat`` runs, evaluates; prints
    one JSON line.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).
    """
    p = argparse.ArgumentParser()
    p.add_argument("--learner", choices=["rejax", "purejaxrl"], required=True)
    p.add_argument("--gymnax-id", required=True)
    p.add_argument("--config", required=True, help="JSON dict in the peer's own field names")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--purejaxrl-dir", default=None)
    p.add_argument("--profile", type=int, default=0, metavar="CALLS",
                   help="time the stages of one update (rejax), CALLS calls each")
    args = p.parse_args(argv)
    cfg = json.loads(args.config)
    if args.profile:
        print(json.dumps(rejax_profile(cfg, args.gymnax_id, args.profile, args.seeds)))
        return
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.seeds)
    arg = keys if args.seeds > 1 else keys[0]
    if args.learner == "rejax":
        train, evaluate, steps = rejax_program(cfg, args.gymnax_id, args.seeds)
    else:
        if cfg.get("NUM_UPDATES") is None:
            cfg["NUM_UPDATES"] = cfg["TOTAL_TIMESTEPS"] // cfg["NUM_STEPS"] // cfg["NUM_ENVS"]
        cfg["MINIBATCH_SIZE"] = cfg["NUM_ENVS"] * cfg["NUM_STEPS"] // cfg["NUM_MINIBATCHES"]
        train, evaluate, steps = purejaxrl_program(cfg, args.gymnax_id, args.seeds,
                                                   args.purejaxrl_dir)
    t0 = time.perf_counter()
    compiled = train.lower(arg).compile()
    compile_s = time.perf_counter() - t0
    seconds = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(arg))
        seconds.append(time.perf_counter() - t0)
    if evaluate is not None:
        ekeys = jax.random.split(jax.random.PRNGKey(args.seed + 1), args.seeds)
        final = evaluate(out, ekeys if args.seeds > 1 else ekeys[0])
    else:
        final = out
    print(json.dumps({
        "compile_s": compile_s, "seconds": seconds, "env_steps": steps * args.seeds,
        "final_return": float(np.mean(np.asarray(final))), "peak_rss_mb": peak_rss_mb(),
        "jax": jax.__version__,
    }))


if __name__ == "__main__":
    main()
