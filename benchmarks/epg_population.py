"""EPG meta-training throughput against population size: the population as one vmapped
program versus its members run one after another.

One ES epoch of EPG (``metareward.algos.epg``, the ``pendulum`` preset: every member
trains a fresh agent for 64 updates of 64 steps on its own random pendulum, then runs 3
evaluation episodes) is measured for population sizes ``--pops`` (default 1 8 32 128):

* ``vmap``: ``trainer.update``, the whole epoch as one jitted program (every member's
  inner loop vmapped, then the ES step). A population of 1 has no ES step: its row is one
  member's inner loop under ``vmap``;
* ``sequential``: the same members, one jitted single-member inner loop called ``P`` times
  from Python, the way one process per member (the authors' MPI workers) runs them,
  without the communication.

Env steps per epoch = ``P * (64 * 64 + 3 * 200)``. Reported: seconds per epoch, env-steps/s,
epochs/s, compile time, peak memory (each measurement in a fresh process), and
``x sequential``: the paired ratio of the sequential epoch time to the vmapped one in the
same round (> 1: vmap is faster). On a CPU the vmapped program runs the members' small
matmuls as larger ones; on a GPU the gain is much larger (one kernel launch per op for the
whole population). Prints a markdown table, writes JSON.

    python benchmarks/epg_population.py
    python benchmarks/epg_population.py --pops 8 32 --repeat 3 --pin-cpu 0
"""

from __future__ import annotations

import argparse
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
    process_facts,
    rotated,
    vmap_speedup_rows,
    write_results,
)

MODES = ("vmap", "sequential")
DEFAULT_POPS = (1, 8, 32, 128)


def _config(pop: int):
    import dataclasses

    from metareward.algos import epg

    # pop 1: no antithetic pair (only its inner loop is timed).
    return dataclasses.replace(epg.preset("pendulum"), pop_size=max(pop, 2),
                               antithetic=pop >= 2 and pop % 2 == 0)


def worker(pop: int, mode: str, min_time: float) -> dict:
    """One measurement, in this (fresh) process."""
    import jax
    import jax.numpy as jnp

    from metareward import envs
    from metareward.algos import epg

    env = envs.make("pendulum", randomize=True)
    cfg = _config(pop)
    tr = epg.make_train(cfg, env)
    state = tr.init(jax.random.PRNGKey(0))
    phi = state.params["loss"]
    tasks = jax.vmap(env.tasks.sample)(jax.random.split(jax.random.PRNGKey(1), pop))
    keys = jax.random.split(jax.random.PRNGKey(2), pop)
    alpha = jnp.float32(0.0)

    t0 = time.perf_counter()
    if mode == "vmap" and pop >= 2:
        fn = jax.jit(tr.update).lower(state).compile()
        run = lambda s: fn(s)[0]
    elif mode == "vmap":
        phis = jax.tree.map(lambda x: jnp.broadcast_to(x, (pop, *x.shape)), phi)
        fn = jax.jit(jax.vmap(tr.inner, in_axes=(0, 0, 0, None))).lower(
            phis, tasks, keys, alpha).compile()

        def run(s):
            jax.block_until_ready(fn(phis, tasks, keys, alpha))
            return s
    else:
        one = jax.jit(tr.inner).lower(
            phi, jax.tree.map(lambda x: x[0], tasks), keys[0], alpha).compile()
        members = [(jax.tree.map(lambda x, i=i: x[i], tasks), keys[i]) for i in range(pop)]

        def run(s):
            out = [one(phi, t, k, alpha)[0] for t, k in members]
            jax.block_until_ready(out)
            return s
    compile_s = time.perf_counter() - t0

    state = jax.block_until_ready(run(state))  # warm-up
    times: list[float] = []
    while len(times) < 3 or sum(times) < min_time:
        t0 = time.perf_counter()
        state = jax.block_until_ready(run(state))
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    ep_len = int(env.spec.episode_length)
    # epg.env_steps_per_epoch is per population; one member's share times pop:
    batch = pop * (cfg.inner_updates * cfg.steps_per_update + cfg.eval_episodes * ep_len)
    if pop >= 2:
        assert batch == epg.env_steps_per_epoch(cfg, ep_len)
    return {
        "setting": f"pop-{pop}",
        "learner": mode,
        "pop_size": pop,
        "batch": batch,
        "seconds_per_update": sec,
        "updates": len(times),
        **process_facts(compile_s),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pops", nargs="+", type=int, default=list(DEFAULT_POPS))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=3.0,
                    help="seconds of timed epochs per measurement (at least 3 epochs)")
    ap.add_argument("--pin-cpu", type=int, default=None, metavar="CORE",
                    help="pin every measurement to this CPU core (steadier on small machines)")
    ap.add_argument("--json", default=str(RESULTS / "epg_population.json"))
    ap.add_argument("--worker", nargs=2, metavar=("POP", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(int(args.worker[0]), args.worker[1], args.min_time)))
        return
    for p in args.pops:
        if p < 1:
            ap.error(f"--pops: population sizes must be >= 1, got {p}")

    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.repeat):
        for pop in args.pops:
            for mode in rotated(MODES, r):
                m = measure_in_subprocess(
                    __file__, [str(pop), mode, "--min-time", str(args.min_time)],
                    cpus=None if args.pin_cpu is None else [args.pin_cpu])
                runs.setdefault((f"pop-{pop}", mode), []).append(m)
                print(f"round {r + 1}/{args.repeat} pop {pop:4d} {mode:10} "
                      f"{m['seconds_per_update']:8.3f} s/epoch", file=sys.stderr, flush=True)

    rows = vmap_speedup_rows(runs, MODES)
    for row in rows:
        row["epochs_per_s"] = row.pop("updates_per_s")

    cols = ("pop", "mode", "env steps/epoch", "s/epoch", "env-steps/s", "epochs/s",
            "vmap speed-up", "compile s", "peak MB")
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join(["---:", "---"] + ["---:"] * (len(cols) - 2)) + "|")
    for r in rows:
        cells = (str(r["pop_size"]), r["learner"], f"{r['batch']:,}",
                 f"{r['seconds_per_update']:.3f}", f"{r['env_steps_per_s']:,.0f}",
                 f"{r['epochs_per_s']:.2f}",
                 f"{r['x_sequential']:.2f}x" if r["learner"] == "vmap" else "1 (baseline)",
                 f"{r['compile_s']:.1f}", f"{r['peak_rss_mb']:.0f}")
        print("| " + " | ".join(cells) + " |")
    seen = sorted({(r["jax"], r["device"]) for r in rows})
    print("\n" + "; ".join(f"jax {j}, device {d}" for j, d in seen)
          + f"; medians of {args.repeat} round(s)"
          + ("" if args.pin_cpu is None else f"; each process pinned to CPU core {args.pin_cpu}")
          + "; vmap speed-up = sequential s/epoch / vmap s/epoch, paired per round")
    path = write_results(args.json, "epg_population", rows, repeat=args.repeat,
                         pinned_cpu=args.pin_cpu, preset="epg.PRESETS['pendulum']")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
