"""PPO throughput: metareward's PPO against brax's own PPO trainer, same settings.

For each env (gymnax ``pendulum`` and ``cartpole``) both learners run with the same number
of envs, unroll length, minibatches, epochs, total steps and loss hyperparameters (our
tuned presets, :data:`metareward.algos.ppo.PRESETS`). brax's trainer runs in its own
virtual env pinned to jax 0.7.2 (built on first use, see ``benchmarks/peer.py``), because
``brax.training`` does not run on the jax this project uses.

Reported per env and learner: training env-steps/s after compilation, updates/s (one
update = one rollout + its epochs of minibatch steps), compile time, peak resident memory
of the process, and the final return (mean undiscounted return of 128 episodes of the
final stochastic policy), with the ratio ours/peer. Prints a table, writes JSON.

    python benchmarks/ppo_throughput.py                 # both envs, preset step counts
    python benchmarks/ppo_throughput.py --envs cartpole --total-steps 200000

Known differences that remain (brax's design, not settings): brax recomputes GAE inside
every minibatch with the current value net and shuffles whole trajectories; we compute GAE
once per rollout and shuffle single transitions. brax gives truncated steps advantage 0;
we bootstrap them from V(final_obs). brax's cartpole policy is a 1-d Gaussian thresholded
at 0 (brax PPO has no categorical policy); ours is categorical.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._memory import peak_rss_mb
from benchmarks.peer import run_peer
from metareward import envs
from metareward.algos import check_finite, ppo

EVAL_EPISODES = 128


def run_ours(name: str, cfg: ppo.Config, seed: int, repeat: int) -> dict:
    """Compile, then time ``repeat`` training runs of our PPO (median); evaluate."""
    trainer = ppo.make_train(cfg, envs.make(name))
    key = jax.random.PRNGKey(seed)
    t0 = time.perf_counter()
    train = jax.jit(trainer.train).lower(key).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        state, metrics = train(key)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    train_s = statistics.median(times)
    check_finite(metrics)
    ret = jax.jit(lambda s, k: trainer.evaluate(s, k, EVAL_EPISODES))(
        state, jax.random.PRNGKey(seed + 1)
    )
    steps = trainer.num_updates * cfg.num_envs * cfg.num_steps
    return {
        "framework": "metareward",
        "env_steps": steps,
        "compile_s": compile_s,
        "train_time_s": train_s,
        "train_times_s": times,
        "steps_per_s": steps / train_s,
        "updates_per_s": trainer.num_updates / train_s,
        "final_return": float(np.mean(ret)),
        "final_return_std": float(np.std(ret)),
        "peak_rss_mb": peak_rss_mb(),
        "versions": {"jax": jax.__version__},
    }


def run_peer_median(name: str, cfg: ppo.Config, seed: int, repeat: int, autoreset: str) -> dict:
    """``repeat`` runs of brax's PPO (each a fresh process: it compiles every time); the
    record of the run with the median steps/s, with all runs' figures attached."""
    runs = [run_peer(name, seed=seed, autoreset=autoreset, **peer_args(cfg)) for _ in range(repeat)]
    runs.sort(key=lambda r: r["steps_per_s"])
    peer = dict(runs[len(runs) // 2])
    peer["all_steps_per_s"] = [r["steps_per_s"] for r in runs]
    peer["all_compile_s"] = [r["compile_s"] for r in runs]
    peer["updates_per_s"] = peer["steps_per_s"] / (cfg.num_envs * cfg.num_steps)
    return peer


def peer_args(cfg: ppo.Config) -> dict:
    return dict(
        num_envs=cfg.num_envs,
        unroll_length=cfg.num_steps,
        num_minibatches=cfg.num_minibatches,
        num_epochs=cfg.num_epochs,
        total_steps=cfg.total_steps,
        learning_rate=cfg.learning_rate,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_eps=cfg.clip_eps,
        entropy_coef=cfg.ent_coef,
        vf_coef=cfg.vf_coef,
        max_grad_norm=cfg.max_grad_norm,
        normalize_obs=cfg.normalize_obs,
        reward_scale=cfg.reward_scale,
        hidden=cfg.hidden,
        num_eval_envs=EVAL_EPISODES,
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--envs", nargs="+", default=["pendulum", "cartpole"], choices=["pendulum", "cartpole"]
    )
    p.add_argument(
        "--total-steps",
        type=int,
        default=None,
        help="override the presets' step counts (1M pendulum, 500k cartpole)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3, help="timed runs per learner (median)")
    p.add_argument(
        "--peer-autoreset",
        choices=["brax", "resample"],
        default="brax",
        help="brax: brax's AutoResetWrapper as shipped; resample: fresh starts",
    )
    p.add_argument("--skip-peer", action="store_true", help="time ours only")
    p.add_argument("--json", default=str(Path(__file__).parent / "results" / "ppo_throughput.json"))
    args = p.parse_args(argv)

    rows = []
    for name in args.envs:
        cfg = ppo.preset(name)
        if args.total_steps:
            cfg = dataclasses.replace(cfg, total_steps=args.total_steps)
        ours = run_ours(name, cfg, args.seed, args.repeat)
        peer = None
        if not args.skip_peer:
            peer = run_peer_median(name, cfg, args.seed, args.repeat, args.peer_autoreset)
        rows.append(
            {
                "env": name,
                "config": dataclasses.asdict(cfg),
                "ours": ours,
                "peer": peer,
                "ratio_steps_per_s": ours["steps_per_s"] / peer["steps_per_s"] if peer else None,
            }
        )

    header = (
        f"{'env':9} {'learner':11} {'steps/s':>9} {'updates/s':>9} {'compile s':>9} "
        f"{'peak MB':>8} {'final return':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        for label, res in (("metareward", r["ours"]), ("brax-ppo", r["peer"])):
            if res is None:
                continue
            print(
                f"{r['env']:9} {label:11} {res['steps_per_s']:9.0f} "
                f"{res['updates_per_s']:9.1f} {res['compile_s']:9.1f} "
                f"{res['peak_rss_mb']:8.0f} {res['final_return']:13.1f}"
            )
        if r["ratio_steps_per_s"] is not None:
            print(f"{r['env']:9} {'ours/peer':11} {r['ratio_steps_per_s']:9.2f}x")
    out = {
        "benchmark": "ppo_throughput",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_count": os.cpu_count(),
            "device": str(jax.devices()[0]),
        },
        "command": " ".join(["python", "benchmarks/ppo_throughput.py", *(argv or sys.argv[1:])]),
        "peer_autoreset": args.peer_autoreset,
        "results": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
