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

    python benchmarks/lirpg_cost.py
    python benchmarks/lirpg_cost.py --settings cartpole pendulum --repeat 5
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=3.0,
                    help="seconds of timed updates per measurement (at least 5 updates)")
    ap.add_argument("--json", default=str(RESULTS / "lirpg_cost.json"))
    ap.add_argument("--worker", nargs=2, metavar=("SETTING", "LEARNER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.min_time)))
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
