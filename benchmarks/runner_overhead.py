"""What the chunked runner (``metareward train``) costs over one jitted program.

The runner executes ``chunk_updates`` updates per jitted call and between calls writes
metrics.jsonl, checks for non-finite values, draws the progress bar and saves orbax
checkpoints. This compares, for PPO with 4 seeds on each env (our tuned presets):

* ``one-program`` — ``jax.jit(jax.vmap(trainer.train))``: the whole run as one call (the
  baseline; no logging, no checkpoints);
* ``runner`` — :func:`metareward.runtime.driver.start` with its defaults (about 100
  chunks, a checkpoint every 10 chunks);
* ``runner-k1`` — one update per chunk, a checkpoint every 10 chunks (the worst case).

Each measurement runs in a fresh process (so compile time and peak memory are its own),
and the variants are interleaved over ``--repeat`` rounds, their order rotated each round
(medians are reported; the ratio is the median of the per-round ratios), since timings on
a shared machine drift. The runner's time is its whole chunk loop, host work
included; compile time is the chunk program's (plus init's for the baseline, which
compiles them together). Prints a table, writes JSON.

    python benchmarks/runner_overhead.py
    python benchmarks/runner_overhead.py --envs cartpole --repeat 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks._harness import measure_in_subprocess, rotated, write_results  # noqa: E402

VARIANTS = ("one-program", "runner", "runner-k1")


def worker(env: str, variant: str, seeds: int) -> dict:
    """One measurement, in this (fresh) process."""
    sys.path.insert(0, str(ROOT))
    import io

    import jax
    import numpy as np

    from benchmarks._memory import peak_rss_mb
    from metareward.runtime import driver

    chunk = 1 if variant == "runner-k1" else None
    opts = driver.RunOptions(seeds=seeds, chunk_updates=chunk, eval_episodes=0)
    plan = driver.prepare("ppo", env, options=opts)
    steps = plan.num_updates * plan.config.num_envs * plan.config.num_steps * seeds
    if variant == "one-program":
        keys = plan.keys()
        t0 = time.perf_counter()
        train = jax.jit(jax.vmap(plan.learner.train)).lower(keys).compile()
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        state, metrics = train(keys)
        jax.block_until_ready(state)
        train_s = time.perf_counter() - t0
        ret = np.asarray(metrics["episode_return"])[:, -10:]
        final = float(np.nanmean(ret))
    else:
        with tempfile.TemporaryDirectory() as d:
            res = driver.start(plan, Path(d) / "run", stream=io.StringIO(), progress=False)
        compile_s, train_s, final = res.compile_time, res.loop_time, res.final_return
    return {
        "env": env,
        "variant": variant,
        "seeds": seeds,
        "chunk_updates": None if variant == "one-program" else plan.chunk_updates,
        "num_updates": plan.num_updates,
        "env_steps": steps,
        "compile_s": compile_s,
        "train_s": train_s,
        "steps_per_s": steps / train_s,
        "updates_per_s": plan.num_updates / train_s,
        "peak_rss_mb": peak_rss_mb(),
        "final_return": final,
        "jax": jax.__version__,
        "device": jax.devices()[0].device_kind,
    }


def measure(env: str, variant: str, seeds: int) -> dict:
    return measure_in_subprocess(__file__, [env, variant, "--seeds", str(seeds)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--envs", nargs="+", default=["cartpole", "pendulum"])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "runner_overhead.json"))
    ap.add_argument("--worker", nargs=2, metavar=("ENV", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.seeds)))
        return

    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.repeat):
        for env in args.envs:
            for variant in rotated(VARIANTS, r):
                m = measure(env, variant, args.seeds)
                runs.setdefault((env, variant), []).append(m)
                print(f"round {r + 1}/{args.repeat} {env:9} {variant:12} "
                      f"{m['steps_per_s']:>10,.0f} steps/s", file=sys.stderr, flush=True)

    rows = []
    for ms in runs.values():
        row = dict(ms[0])
        for k in ("compile_s", "train_s", "peak_rss_mb"):
            row[k] = statistics.median(m[k] for m in ms)
        row["train_s_all"] = [m["train_s"] for m in ms]
        row["steps_per_s"] = row["env_steps"] / row["train_s"]
        row["updates_per_s"] = row["num_updates"] / row["train_s"]
        row["final_return"] = statistics.median(m["final_return"] for m in ms)
        rows.append(row)
    for row in rows:
        # Paired: the ratio within each round, then the median over rounds.
        base = runs[(row["env"], "one-program")]
        mine = runs[(row["env"], row["variant"])]
        ratios = [b["train_s"] / m["train_s"] for m, b in zip(mine, base, strict=True)]
        row["ratios_per_round"] = ratios
        row["ratio_vs_one_program"] = statistics.median(ratios)

    header = (f"{'env':9} {'variant':12} {'K':>4} {'env-steps/s':>12} {'updates/s':>10} "
              f"{'ratio':>6} {'compile s':>9} {'peak MB':>8} {'return':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        k = "-" if r["chunk_updates"] is None else str(r["chunk_updates"])
        print(f"{r['env']:9} {r['variant']:12} {k:>4} {r['steps_per_s']:>12,.0f} "
              f"{r['updates_per_s']:>10.1f} {r['ratio_vs_one_program']:>6.3f} "
              f"{r['compile_s']:>9.1f} {r['peak_rss_mb']:>8.0f} {r['final_return']:>8.1f}")
    write_results(args.json, "runner_overhead", rows, repeat=args.repeat)
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
