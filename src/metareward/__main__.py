"""The ``metareward`` command (minimal for now: ``list`` and ``train``).

    metareward list
    metareward train ppo --env cartpole --seeds 4
    metareward train a2c --env cartpole --set total_steps=200000 --set ent_coef=0.0

``train`` uses the algorithm's tuned preset for the env when there is one (else its
paper defaults), applies ``--set key=value`` overrides (validated before anything is
compiled), trains all seeds as one ``jax.jit(jax.vmap(train))`` program, and prints the
training curve and a final evaluation.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from typing import Any

import numpy as np


def _parse_set(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v  # a bare string, e.g. activation=relu
    return out


def cmd_list() -> None:
    from metareward import envs
    from metareward.algos import ALGORITHMS

    print("algorithms:")
    for name, mod in ALGORITHMS.items():
        print(f"  {name:26} {(mod.__doc__ or '').strip().splitlines()[0]}")
    print("environments:")
    for name in envs.names():
        print(f"  {name:26} {envs.describe(name)}")


def cmd_train(args: argparse.Namespace) -> None:
    import jax

    from metareward import envs
    from metareward.algos import ALGORITHMS, check_finite
    from metareward.algos.config import replace

    if args.algo not in ALGORITHMS:
        raise SystemExit(f"unknown algorithm {args.algo!r}; valid: {sorted(ALGORITHMS)}")
    if args.seeds <= 0:
        raise SystemExit(f"--seeds must be > 0, got {args.seeds}")
    mod = ALGORITHMS[args.algo]
    overrides = _parse_set(args.set)
    if args.total_steps is not None:
        overrides["total_steps"] = args.total_steps
    try:
        config = replace(mod.preset(args.env), **overrides)
        env = envs.make(args.env)
        trainer = mod.make_train(config, env)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"error: {e}") from None

    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.seeds)
    print(
        f"{args.algo} on {args.env}: {args.seeds} seed(s) x {config.total_steps} steps, "
        f"{trainer.num_updates} updates"
    )
    t0 = time.perf_counter()
    train = jax.jit(jax.vmap(trainer.train)).lower(keys).compile()
    print(f"compiled in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    state, metrics = train(keys)
    jax.block_until_ready(state)
    dt = time.perf_counter() - t0
    steps = args.seeds * trainer.num_updates * config.num_envs * config.num_steps
    print(f"trained in {dt:.1f} s ({steps / dt:,.0f} env-steps/s over all seeds)")
    check_finite(metrics)
    ret = np.asarray(metrics["episode_return"])  # [seeds, updates]
    env_steps = np.asarray(metrics["env_steps"])[0]
    print(f"{'env steps':>10}  episode return (mean +- std over seeds)")
    for chunk in np.array_split(np.arange(ret.shape[1]), min(10, ret.shape[1])):
        r = np.nanmean(ret[:, chunk], axis=1)
        print(f"{env_steps[chunk[-1]]:>10}  {np.nanmean(r):9.1f} +- {np.nanstd(r):.1f}")
    ev = jax.jit(jax.vmap(lambda s, k: trainer.evaluate(s, k, args.eval_episodes)))(
        state, jax.random.split(jax.random.PRNGKey(args.seed + 1), args.seeds)
    )
    per_seed = np.asarray(ev).mean(axis=1)
    print(
        f"final policy, {args.eval_episodes} episodes per seed: "
        f"{per_seed.mean():.1f} +- {per_seed.std():.1f}  (per seed: "
        f"{', '.join(f'{x:.1f}' for x in per_seed)})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="metareward", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="algorithms and environments")
    t = sub.add_parser("train", help="train an algorithm on an env, many seeds at once")
    t.add_argument("algo")
    t.add_argument("--env", required=True)
    t.add_argument("--seeds", type=int, default=4)
    t.add_argument("--seed", type=int, default=0, help="base PRNG seed")
    t.add_argument("--total-steps", type=int, default=None)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--eval-episodes", type=int, default=32)
    args = parser.parse_args(argv)
    if args.command == "list":
        cmd_list()
    else:
        cmd_train(args)


if __name__ == "__main__":
    main(sys.argv[1:])
