"""What a LIRPG iteration costs over its baseline's (PPO, resp. A2C), same env and batch.

For each setting, LIRPG and the baseline run with the same number of envs, unroll length,
epochs, minibatches, learning rate and network sizes on the same (delayed-reward) env;
one iteration = one rollout and its learning step (``update``). LIRPG adds, in every
minibatch, the intrinsic reward on the whole rollout, a differentiable look-ahead step of
the policy's optimiser and the meta-gradient through it.

Settings (``--settings``):

* ``cartpole`` / ``pendulum``: our tuned presets (``lirpg.PRESETS``; the baseline is the
  PPO preset's batch), ``reward_delay=10``;
* ``pendulum-paper`` / ``hopper-paper``: the authors' MuJoCo settings (1 env x 2048
  steps, 10 epochs of 32 minibatches of 64), ``reward_delay=20`` (hopper: brax/MJX, slow
  to compile on a CPU);
* ``breakout-a2c``: the A2C flavour against our A2C (16 envs x 5 steps).

Each measurement runs in a fresh process (compile time and peak memory its own); the two
learners are interleaved over ``--repeat`` rounds, their order rotated; reported are
medians, and the ratio is the median of the per-round paired ratios of seconds per
iteration. Prints a table, writes JSON.

``--lookahead`` instead compares the two look-aheads (``lirpg.Config.lookahead``, issue
32): LIRPG (cartpole preset, reward delayed by 10, the default authors' look-ahead)
trains minibatch step by minibatch step, and at the policy steps in ``--at`` both
meta-gradients are taken on the same (theta, optimiser state, eta, minibatch); reported
is the cosine between their intrinsic-reward parts, per seed and its mean, and their
norm ratio. The learning results of the two are in ``experiments/lirpg_delayed.py``
(``lirpg`` against ``lirpg-exact``).

    python benchmarks/lirpg_cost.py
    python benchmarks/lirpg_cost.py --settings cartpole pendulum --repeat 5
    python benchmarks/lirpg_cost.py --lookahead --seeds 4   # a few minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks._harness import (  # noqa: E402
    RESULTS,
    measure_in_subprocess,
    paired_rows,
    rotated,
    write_results,
)

SETTINGS = {
    # name: (env, reward_delay, flavour, LIRPG config overrides or preset key)
    "cartpole": ("cartpole", 10, "ppo", "preset"),
    "pendulum": ("pendulum", 10, "ppo", "preset"),
    "pendulum-paper": ("pendulum", 20, "ppo", "paper"),
    "hopper-paper": ("hopper", 20, "ppo", "paper"),
    "breakout-a2c": ("breakout-minatar", None, "a2c", "preset"),
}
SHARED = ("num_envs", "num_steps", "num_epochs", "num_minibatches", "learning_rate",
          "anneal_lr", "gamma", "gae_lambda", "ent_coef", "vf_coef", "max_grad_norm",
          "normalize_obs", "reward_scale", "hidden", "activation", "adam_eps", "clip_eps",
          "vf_clip_eps", "rms_decay", "rms_eps", "rms_initial_scale", "normalize_advantages")


def learners(setting: str):
    """``(env, lirpg_config, baseline_module, baseline_config)`` of a setting."""
    from metareward import envs
    from metareward.algos import a2c, lirpg, ppo

    env_name, delay, flavour, which = SETTINGS[setting]
    env = envs.make(env_name, **({} if delay is None else {"reward_delay": delay}))
    if flavour == "a2c":
        lc = lirpg.A2C_PRESETS.get(env_name, lirpg.A2CConfig())
        base_mod, base_cls = a2c, a2c.Config
    else:
        lc = lirpg.preset(env_name) if which == "preset" else lirpg.Config()
        base_mod, base_cls = ppo, ppo.Config
    fields = {f.name for f in dataclasses.fields(base_cls)}
    bc = base_cls(**{k: getattr(lc, k) for k in SHARED if k in fields and hasattr(lc, k)})
    return env, lc, base_mod, bc


def worker(setting: str, learner: str, min_time: float) -> dict:
    """One measurement, in this (fresh) process."""
    import jax

    from benchmarks._memory import peak_rss_mb
    from metareward.algos import lirpg

    env, lc, base_mod, bc = learners(setting)
    cfg = lc if learner == "lirpg" else bc
    trainer = (lirpg if learner == "lirpg" else base_mod).make_train(cfg, env)
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    t0 = time.perf_counter()
    update = jax.jit(trainer.update).lower(state).compile()
    compile_s = time.perf_counter() - t0
    state, _ = update(state)  # warm-up
    jax.block_until_ready(state)
    times: list[float] = []
    while len(times) < 5 or sum(times) < min_time:
        t0 = time.perf_counter()
        state, _ = update(state)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    batch = cfg.num_envs * cfg.num_steps
    epochs = getattr(cfg, "num_epochs", 1) * getattr(cfg, "num_minibatches", 1)
    return {
        "setting": setting,
        "learner": learner,
        "env": env.spec.name,
        "batch": batch,
        "minibatch_steps": epochs,
        "seconds_per_update": sec,
        "updates": len(times),
        "env_steps_per_s": batch / sec,
        "updates_per_s": 1.0 / sec,
        "compile_s": compile_s,
        "peak_rss_mb": peak_rss_mb(),
        "jax": jax.__version__,
        "device": jax.devices()[0].device_kind,
    }


def lookahead_cosines(seeds: int, at: list[int]) -> list[dict]:
    """Rows ``{"step", "cosine_per_seed", "cosine_mean", "norm_ratio_mean"}``: at each
    policy step in ``at`` (1 = the first), the cosine between the exact and the authors'
    meta-gradients (intrinsic-reward parameters) along an authors'-look-ahead run."""
    import functools

    import jax
    import jax.flatten_util
    import numpy as np

    from metareward import envs
    from metareward.algos import lirpg

    env = envs.make("cartpole", reward_delay=10)
    cfg = lirpg.preset("cartpole")
    assert cfg.lookahead == "constant_second_moment"
    parts = lirpg.make_parts(cfg, env)
    exact = lirpg.make_parts(dataclasses.replace(cfg, lookahead="exact"), env)
    mg = jax.jit(functools.partial(lirpg.meta_gradient, parts))
    mg_exact = jax.jit(functools.partial(lirpg.meta_gradient, exact))
    collect = jax.jit(functools.partial(lirpg.collect, parts))
    eta_step = jax.jit(functools.partial(lirpg.reward_step, parts))  # the intrinsic update
    batch_size = cfg.num_envs * cfg.num_steps
    mb_size = batch_size // cfg.num_minibatches

    cos: dict[int, list[float]] = {a: [] for a in at}
    ratio: dict[int, list[float]] = {a: [] for a in at}
    for seed in range(seeds):
        state = lirpg.init_state(parts, jax.random.PRNGKey(42 + seed))
        n_reward = jax.flatten_util.ravel_pytree(state.params["reward"])[0].size
        key, step = jax.random.PRNGKey(1000 + seed), 0
        while step < max(at):
            next_key, k_roll, _ = jax.random.split(state.key, 3)  # as lirpg.update
            state, batch, _ = collect(state, k_roll)
            state = state.replace(key=next_key)
            theta, eta = lirpg.split_params(state.params)
            opt_theta, opt_eta = state.opt_state["agent"], state.opt_state["reward"]
            for _ in range(cfg.num_epochs):
                key, k = jax.random.split(key)
                perm = jax.random.permutation(k, batch_size).reshape(-1, mb_size)
                for idx in perm:
                    mb = lirpg.minibatch(batch, idx)
                    g, ((new_theta, new_opt, _), aux) = mg(theta, opt_theta, eta, batch, mb)
                    step += 1
                    if step in cos:
                        ge = mg_exact(theta, opt_theta, eta, batch, mb)[0]
                        a, b = np.asarray(g[:n_reward]), np.asarray(ge[:n_reward])
                        na, nb = np.linalg.norm(a), np.linalg.norm(b)
                        cos[step].append(float(a @ b / (na * nb)))
                        ratio[step].append(float(na / nb))
                    eta, opt_eta = eta_step(eta, opt_eta, g, aux["outer_loss"])[:2]
                    theta, opt_theta = new_theta, new_opt
            state = state.replace(
                params={**parts.unravel_theta(theta), **parts.unravel_eta(eta)},
                opt_state={"agent": opt_theta, "reward": opt_eta})
            print(f"seed {seed} policy step {step}", file=sys.stderr, flush=True)
    return [{"step": a, "cosine_per_seed": cos[a], "cosine_mean": float(np.mean(cos[a])),
             "norm_ratio_mean": float(np.mean(ratio[a]))} for a in at]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=3.0,
                    help="seconds of timed updates per measurement (at least 5 updates)")
    ap.add_argument("--json", default=str(RESULTS / "lirpg_cost.json"))
    ap.add_argument("--worker", nargs=2, metavar=("SETTING", "LEARNER"), help=argparse.SUPPRESS)
    ap.add_argument("--lookahead", action="store_true",
                    help="compare the exact and the authors' look-ahead meta-gradients")
    ap.add_argument("--seeds", type=int, default=4, help="--lookahead: seeds")
    ap.add_argument("--at", type=int, nargs="+", default=[1, 2, 3, 6, 11, 21, 51, 101, 201],
                    help="--lookahead: policy steps (minibatch steps, 1 = first) to compare at")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.min_time)))
        return
    if args.lookahead:
        rows = lookahead_cosines(args.seeds, sorted(set(args.at)))
        print(f"{'policy step':>11} {'cosine mean':>11} {'norm ratio':>10}  cosine per seed")
        for r in rows:
            per = ", ".join(f"{c:+.3f}" for c in r["cosine_per_seed"])
            print(f"{r['step']:>11} {r['cosine_mean']:>+11.3f} {r['norm_ratio_mean']:>10.2f}  "
                  f"[{per}]")
        path = args.json if args.json != str(RESULTS / "lirpg_cost.json") else str(
            RESULTS / "lirpg_lookahead.json")
        print(f"written to {write_results(path, 'lirpg_lookahead', rows, seeds=args.seeds)}")
        return

    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.repeat):
        for setting in args.settings:
            for learner in rotated(["lirpg", "baseline"], r):
                m = measure_in_subprocess(__file__, [setting, learner, "--min-time",
                                                     str(args.min_time)])
                runs.setdefault((setting, learner), []).append(m)
                print(f"round {r + 1}/{args.repeat} {setting:15} {learner:8} "
                      f"{m['seconds_per_update'] * 1e3:10.1f} ms/update", file=sys.stderr,
                      flush=True)

    rows = paired_rows(runs, "baseline")
    for row in rows:  # this benchmark's names for the paired ratio
        row["cost_ratio_per_round"] = row.pop("ratio_per_round")
        row["cost_ratio_vs_baseline"] = row.pop("ratio")
    rows.sort(key=lambda r: (args.settings.index(r["setting"]), r["learner"] != "baseline"))

    header = (f"{'setting':15} {'learner':8} {'batch':>6} {'mb steps':>8} {'ms/update':>10} "
              f"{'env-steps/s':>12} {'updates/s':>9} {'cost ratio':>10} {'compile s':>9} "
              f"{'peak MB':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        name = "lirpg" if r["learner"] == "lirpg" else ("a2c" if "a2c" in r["setting"] else "ppo")
        print(f"{r['setting']:15} {name:8} {r['batch']:>6} {r['minibatch_steps']:>8} "
              f"{r['seconds_per_update'] * 1e3:>10.1f} {r['env_steps_per_s']:>12,.0f} "
              f"{r['updates_per_s']:>9.2f} {r['cost_ratio_vs_baseline']:>10.2f} "
              f"{r['compile_s']:>9.1f} {r['peak_rss_mb']:>8.0f}")
    path = write_results(args.json, "lirpg_cost", rows, repeat=args.repeat)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
