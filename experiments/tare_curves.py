"""TARE's comparison (paper Figure 6 in kind): PPO and AWR with and without TARE, learning
curves over seeds, on CPU-sized envs (``pendulum`` and TARE's ``chain``).

Each (env, learner) trains ``--seeds`` seeds in one vmapped, jitted program with the
library's presets (PPO / AWR: their ``PRESETS``; PPO-TARE / AWR-TARE: ``tare.PRESETS`` /
``tare.AWR_PRESETS``). Writes ``results/tare_curves.json`` (per-update mean episode return
of every seed, final evaluation returns, wall time), ``results/tare_curves.png``
(mean +- std over seeds against env steps) and prints a markdown table.

    python experiments/tare_curves.py                       # all, 4 seeds
    python experiments/tare_curves.py --envs chain --learners ppo ppo-tare
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
LEARNERS = ("ppo", "ppo-tare", "awr", "awr-tare")
ENVS = ("chain", "pendulum")
#: One budget per env for every learner (the presets' own differ).
STEPS = {"chain": 163_840, "pendulum": 300_000}


def build(learner: str, env_name: str, steps: int | None = None):
    """``(trainer, config)`` for a learner on an env, from the library's presets, with
    ``total_steps`` set to ``steps`` (default :data:`STEPS`)."""
    import dataclasses

    from metareward import envs
    from metareward.algos import awr, ppo, tare

    env = envs.make(env_name)
    if learner == "ppo":
        module = ppo
        if env_name == "chain":  # the PPO-TARE chain preset's batch and policy settings
            t = tare.preset("chain")
            cfg = ppo.Config(num_envs=t.num_envs, num_steps=t.num_steps,
                             num_epochs=t.num_epochs, num_minibatches=2 * t.num_minibatches,
                             learning_rate=t.learning_rate, anneal_lr=False,
                             ent_coef=t.ent_coef, normalize_obs=False, hidden=t.hidden)
        else:
            cfg = ppo.preset(env_name)
    elif learner == "awr":
        module = awr
        cfg = awr.PRESETS.get(env_name) or awr.Config(
            num_envs=16, num_steps=32, buffer_size=8192, value_steps=50, policy_steps=100,
            policy_learning_rate=1e-3, normalize_obs=False)
    else:
        module = tare
        cfg = tare.preset(env_name, inner="awr" if learner == "awr-tare" else "ppo")
    cfg = dataclasses.replace(cfg, total_steps=steps or STEPS[env_name])
    return module.make_train(cfg, env), cfg


def run(learner: str, env_name: str, seeds: int, steps: int | None = None) -> dict:
    trainer, cfg = build(learner, env_name, steps)
    keys = jnp.stack([jax.random.PRNGKey(42 + i) for i in range(seeds)])
    t0 = time.perf_counter()
    state, metrics = jax.jit(jax.vmap(trainer.train))(keys)
    jax.block_until_ready(state)
    wall = time.perf_counter() - t0
    ev_keys = jnp.stack([jax.random.PRNGKey(1000 + i) for i in range(seeds)])
    evals = jax.jit(jax.vmap(lambda s, k: trainer.evaluate(s, k, 32)))(state, ev_keys)
    out = {
        "learner": learner,
        "env": env_name,
        "seeds": seeds,
        "env_steps": np.asarray(metrics["env_steps"][0]).tolist(),
        "episode_return": np.asarray(metrics["episode_return"]).tolist(),
        "eval_return_per_seed": np.asarray(evals.mean(axis=1)).tolist(),
        "wall_s": wall,
        "config": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in vars(cfg).items()},
    }
    for k in ("param_return", "cg_negative_curvature", "hypergrad_norm"):
        if k in metrics:
            out[k] = np.nanmean(np.asarray(metrics[k]), axis=0).tolist()
    return out


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs_ = sorted({r["env"] for r in results}, key=lambda e: ENVS.index(e))
    fig, axes = plt.subplots(1, len(envs_), figsize=(5 * len(envs_), 3.6), squeeze=False)
    for ax, env_name in zip(axes[0], envs_, strict=True):
        for r in results:
            if r["env"] != env_name:
                continue
            x = np.asarray(r["env_steps"])
            y = np.asarray(r["episode_return"], dtype=float)  # [seeds, updates]
            # mean over a window of updates, then over seeds
            w = max(1, y.shape[1] // 50)
            ys = np.stack([np.convolve(np.nan_to_num(s, nan=np.nanmean(s)), np.ones(w) / w,
                                       mode="same") for s in y])
            m, sd = ys.mean(0), ys.std(0)
            ax.plot(x, m, label=r["learner"])
            ax.fill_between(x, m - sd, m + sd, alpha=0.2)
        ax.set_title(env_name)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("average return (training episodes)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--envs", nargs="+", default=list(ENVS), choices=ENVS)
    ap.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=LEARNERS)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=None,
                    help=f"env steps per seed for every run (default: {STEPS})")
    ap.add_argument("--out", default=str(HERE / "results" / "tare_curves"))
    args = ap.parse_args()
    results = []
    for env_name in args.envs:
        for learner in args.learners:
            r = run(learner, env_name, args.seeds, args.steps)
            results.append(r)
            ev = np.asarray(r["eval_return_per_seed"])
            print(f"{env_name:9} {learner:9} eval {ev.mean():8.2f} +- {ev.std():6.2f} "
                  f"(seeds {np.round(ev, 1).tolist()}) {r['wall_s']:.0f} s", file=sys.stderr,
                  flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results) + "\n")
    plot(results, out.with_suffix(".png"))
    print("| env | learner | env steps | final eval return (mean +- std over seeds) | "
          "per seed | wall s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        ev = np.asarray(r["eval_return_per_seed"])
        print(f"| {r['env']} | {r['learner']} | {r['env_steps'][-1]:,} | "
              f"{ev.mean():.1f} +- {ev.std():.1f} | {np.round(ev, 1).tolist()} | "
              f"{r['wall_s']:.0f} |")
    print(f"written {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
