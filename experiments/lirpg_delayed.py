"""LIRPG vs PPO on delayed-reward tasks (the setting of Figure 4 of Zheng et al. 2018,
``lirpg_slides.md``, on small gymnax envs): the extrinsic reward is summed and paid
every ``--delay`` steps (or at the episode's end).

Learners, ``--seeds`` seeds each, one jitted program per learner and env
(``jax.vmap`` over seeds):

* ``ppo`` — our PPO preset for the env, trained on the delayed reward;
* ``lirpg`` — LIRPG's preset, the policy trained on the learned intrinsic reward alone
  (``r_ex_coef=0, r_in_coef=1``, the paper's "intrinsic only" curve);
* ``lirpg-mix`` (``--mix``) — the policy trained on ``r_ex + r_in``.

Writes ``lirpg_delayed.json`` (per-update mean training return per seed, with env
steps, and a final evaluation of 32 episodes per seed) and ``lirpg_delayed.png`` (mean
± std over seeds of the training return against env steps, one panel per env) to
``--out``. Returns are the true, undelayed ones.

    python experiments/lirpg_delayed.py                      # cartpole and pendulum
    python experiments/lirpg_delayed.py --envs cartpole --seeds 2 --mix
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import warnings
from pathlib import Path

import jax
import numpy as np

import metareward  # noqa: F401  (XLA flags before jax starts)
from metareward import envs
from metareward.algos import lirpg, ppo


def learner(name: str, env_name: str):
    if name == "ppo":
        return ppo, ppo.preset(env_name)
    cfg = lirpg.preset(env_name)
    if name == "lirpg-mix":
        cfg = dataclasses.replace(cfg, r_ex_coef=1.0, r_in_coef=1.0)
    return lirpg, cfg


def run(name: str, env_name: str, delay: int, seeds: int, seed: int) -> dict:
    module, cfg = learner(name, env_name)
    trainer = module.make_train(cfg, envs.make(env_name, reward_delay=delay))
    keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    t0 = time.perf_counter()
    state, metrics = jax.jit(jax.vmap(trainer.train))(keys)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - t0
    ev = jax.jit(jax.vmap(lambda s, k: trainer.evaluate(s, k, 32)))(
        state, jax.random.split(jax.random.PRNGKey(seed + 1), seeds))
    ret = np.asarray(metrics["episode_return"], np.float64)  # [seeds, updates], NaN: none
    steps = np.asarray(metrics["env_steps"])[0]
    return {
        "learner": name,
        "env": env_name,
        "delay": delay,
        "config": dataclasses.asdict(cfg),
        "seconds_with_compile": seconds,
        "env_steps": steps.tolist(),
        "return": [[None if np.isnan(x) else round(float(x), 1) for x in row] for row in ret],
        "eval_per_seed": [round(float(x), 1) for x in np.asarray(ev).mean(1)],
    }


def smooth(ret: np.ndarray, width: int) -> np.ndarray:
    """Trailing mean over ``width`` updates, ignoring NaNs (updates with no episode end)."""
    out = np.full_like(ret, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows stay NaN
        for i in range(ret.shape[1]):
            out[:, i] = np.nanmean(ret[:, max(0, i - width + 1): i + 1], axis=1)
    return out


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env_names = list(dict.fromkeys(r["env"] for r in results))
    fig, axes = plt.subplots(1, len(env_names), figsize=(5.5 * len(env_names), 4), squeeze=False)
    for ax, env_name in zip(axes[0], env_names, strict=True):
        for r in (r for r in results if r["env"] == env_name):
            ret = np.array([[np.nan if x is None else x for x in row] for row in r["return"]])
            ret = smooth(ret, max(1, ret.shape[1] // 50))
            steps = np.asarray(r["env_steps"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mu, sd = np.nanmean(ret, 0), np.nanstd(ret, 0)
            ax.plot(steps, mu, label=f"{r['learner']} (eval {np.mean(r['eval_per_seed']):.0f})")
            ax.fill_between(steps, mu - sd, mu + sd, alpha=0.2)
        ax.set_title(f"{env_name}, reward delayed by {results[0]['delay']} steps")
        ax.set_xlabel("env steps")
        ax.set_ylabel("training return (undelayed)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--envs", nargs="+", default=["cartpole", "pendulum"])
    ap.add_argument("--delay", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mix", action="store_true", help="also LIRPG with r_ex + r_in")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    names = ["ppo", "lirpg"] + (["lirpg-mix"] if args.mix else [])
    results = []
    for env_name in args.envs:
        for name in names:
            r = run(name, env_name, args.delay, args.seeds, args.seed)
            results.append(r)
            print(f"{env_name:9} {name:9} eval per seed {np.round(r['eval_per_seed'], 1)} "
                  f"({r['seconds_with_compile']:.0f} s)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lirpg_delayed.json").write_text(json.dumps(results) + "\n")
    plot(results, out / "lirpg_delayed.png")
    print(f"written to {out / 'lirpg_delayed.json'} and {out / 'lirpg_delayed.png'}")


if __name__ == "__main__":
    main()
