"""MetaGenRL meta-training throughput against population size, and the cost of one
objective update against one TD3 policy update.

Population (``--pops``, default 1 4 16; pendulum, 64x64 nets, ``--windows`` windows of 20
steps per objective batch): one MetaGenRL ``update`` is one env step per agent and one
population gradient step (critic steps every update; objective gradient, policy step and
``alpha`` update every other one, TD3's policy delay). Timed over chunks of 20 updates
(a jitted ``lax.scan``) after the random phase, in two modes:

* ``vmap``: the population as one program (``metagenrl.make_train`` with ``num_agents=P``);
* ``sequential``: a one-agent population's program run ``P`` times, the way one process
  per agent (the authors' ray workers) runs them, without the communication.

``x sequential`` = sequential time / vmap time, paired per round (> 1: vmap is faster).

Cost: one agent, the paper's sizes (350x350 ReLU + LayerNorm nets; the meta-gradient on
2 x 100 windows of 20 steps, ``meta_batch="per_part"``, the default; 100 transitions for
TD3): the objective's eq.-6 gradient
(``metagenrl.objective_gradient``: one differentiable SGD step of the policy on
``L_alpha`` through the LSTM, then ``d/d alpha`` of ``-Q(s, pi_{phi'}(s))``) against one TD3
policy update (``grad -Q(s, pi(s))`` and Adam, :mod:`metareward.algos.td3`), same process.

Prints markdown tables, writes JSON.

    python benchmarks/metagenrl_population.py
    python benchmarks/metagenrl_population.py --pops 1 4 --repeat 1 --pin-cpu 0
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
DEFAULT_POPS = (1, 4, 16)
CHUNK = 20


def _config(pop: int, windows: int):
    import dataclasses

    from metareward.algos import metagenrl

    return dataclasses.replace(metagenrl.PRESETS["pendulum"], num_agents=pop,
                               batch_size=windows, learning_starts=2 * CHUNK,
                               buffer_size=4096, anneal_steps=CHUNK)


def _timed(fn, state, min_time: float, reps: int = 3):
    state = fn(state)
    times: list[float] = []
    while len(times) < reps or sum(times) < min_time:
        t0 = time.perf_counter()
        state = fn(state)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def worker(pop: int, mode: str, windows: int, min_time: float) -> dict:
    """One population measurement, in this (fresh) process."""
    import jax

    from metareward import envs
    from metareward.algos import metagenrl

    env = envs.make("pendulum")
    tr = metagenrl.make_train(_config(pop if mode == "vmap" else 1, windows), env)

    def chunk(s):
        return jax.lax.scan(lambda c, _: tr.update(c), s, None, length=CHUNK)[0]

    t0 = time.perf_counter()
    states = [tr.init(jax.random.PRNGKey(i)) for i in range(1 if mode == "vmap" else pop)]
    fn = jax.jit(chunk).lower(states[0]).compile()
    compile_s = time.perf_counter() - t0
    states = [fn(fn(s)) for s in states]  # past the random phase (2 chunks)
    jax.block_until_ready(states)

    def run(ss):
        out = [fn(s) for s in ss]
        return jax.block_until_ready(out)

    sec, n = _timed(run, states, min_time)
    return {"setting": f"pop-{pop}", "learner": mode, "pop_size": pop, "windows": windows,
            "batch": pop, "seconds_per_update": sec / CHUNK, "updates": n * CHUNK,
            **process_facts(compile_s)}


def cost_worker(min_time: float) -> dict:
    """Objective update vs TD3 policy update, one agent at the paper's sizes."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax.flatten_util import ravel_pytree

    from metareward import envs
    from metareward.algos import metagenrl, td3
    from metareward.rl import replay

    env = envs.make("pendulum")
    cfg = metagenrl.Config(num_agents=1, total_steps=1000, buffer_size=4096)
    parts = metagenrl.make_parts(cfg, env)
    group = parts.groups[0]
    st = metagenrl.init(parts, jax.random.PRNGKey(0))
    params = jax.tree.map(lambda x: x[0], st.params["agents"][0])
    alpha = st.params["objective"]
    k = jax.random.split(jax.random.PRNGKey(1), 6)
    B, W, L = cfg.batch_size, cfg.window, 4096
    # the meta-gradient's own windows: (inner_steps + 1) x batch_size with the default
    # meta_batch="per_part" (the authors' 2 x 100), the policy's batch_size with "split"
    n_meta = B * (cfg.inner_steps + 1) if cfg.meta_batch == "per_part" else B
    done = (jnp.arange(L) % 200 == 199)[:, None] * 1.0
    rows = replay.Row(
        obs=jax.random.normal(k[0], (L, 1, 3)),
        action=jax.random.uniform(k[1], (L, 1, 1), minval=-1, maxval=1),
        reward=jax.random.normal(k[2], (L, 1)),
        done=done, truncation=done,  # time limits: terminal 0
        next_obs=jax.random.normal(k[3], (L, 1, 3)), time=jnp.zeros((L, 1)))
    buf = replay.ring_insert(jax.tree.map(lambda x: x[0], st.groups[0].buffer), rows)
    win, mask = replay.ring_windows(k[4], buf, n_meta, W, lambda d: d.done)
    t, e = replay.ring_sample_indices(k[5], buf, B)
    batch = replay.gather(buf, t, e)

    @jax.jit
    def objective_update(a):
        g, _ = metagenrl.objective_gradient(
            parts, group, a, params["actor"], params["critic"], win, mask)
        return jax.tree.map(lambda x, y: x - 1e-3 * y, a, g)

    opt = optax.adam(1e-3)
    flat, unravel = ravel_pytree(params["actor"])

    @jax.jit
    def policy_update(carry):
        f, s = carry
        f, s, _, _, _ = td3.clipped_step(
            lambda v: (group.td3.actor_loss(unravel(v), params["critic"], batch.obs), {}),
            opt, f, s, None)
        return f, s

    out = {}
    for name, fn, init in (("objective", objective_update, alpha),
                           ("td3-policy", policy_update, (flat, opt.init(flat)))):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(init))
        compile_s = time.perf_counter() - t0
        sec, n = _timed(lambda c, fn=fn: jax.block_until_ready(fn(c)), init, min_time, 10)
        out[name] = {"seconds": sec, "calls": n, "compile_s": compile_s}
    return {**out, "x_td3_policy": out["objective"]["seconds"] / out["td3-policy"]["seconds"],
            "windows": n_meta, "window": W, "transitions": B, **process_facts(0.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pops", nargs="+", type=int, default=list(DEFAULT_POPS))
    ap.add_argument("--windows", type=int, default=20,
                    help="windows of 20 steps per objective batch (default 20; paper 100)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--pin-cpu", type=int, default=None, metavar="CORE")
    ap.add_argument("--json", default=str(RESULTS / "metagenrl_population.json"))
    ap.add_argument("--worker", nargs=2, metavar=("POP", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        pop, mode = int(args.worker[0]), args.worker[1]
        out = (cost_worker(args.min_time) if mode == "cost"
               else worker(pop, mode, args.windows, args.min_time))
        print(json.dumps(out))
        return
    for p in args.pops:
        if p < 1:
            ap.error(f"--pops: population sizes must be >= 1, got {p}")
    if args.windows < 2 or args.windows % 2:
        ap.error(f"--windows must be an even number >= 2, got {args.windows}")
    cpus = None if args.pin_cpu is None else [args.pin_cpu]

    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.repeat):
        for pop in args.pops:
            for mode in rotated(MODES, r):
                m = measure_in_subprocess(
                    __file__, [str(pop), mode, "--windows", str(args.windows),
                               "--min-time", str(args.min_time)], cpus=cpus)
                runs.setdefault((f"pop-{pop}", mode), []).append(m)
                print(f"round {r + 1}/{args.repeat} pop {pop:3d} {mode:10} "
                      f"{m['seconds_per_update'] * 1e3:8.2f} ms/update", file=sys.stderr,
                      flush=True)
    rows = vmap_speedup_rows(runs, MODES)
    cost = measure_in_subprocess(__file__, ["1", "cost", "--min-time", str(args.min_time)],
                                 cpus=cpus)

    cols = ("agents", "mode", "ms/update", "env-steps/s", "updates/s", "vmap speed-up",
            "compile s", "peak MB")
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join(["---:", "---"] + ["---:"] * (len(cols) - 2)) + "|")
    for r in rows:
        cells = (str(r["pop_size"]), r["learner"], f"{r['seconds_per_update'] * 1e3:.2f}",
                 f"{r['env_steps_per_s']:,.0f}", f"{r['updates_per_s']:.1f}",
                 f"{r['x_sequential']:.2f}x" if r["learner"] == "vmap" else "1 (baseline)",
                 f"{r['compile_s']:.1f}", f"{r['peak_rss_mb']:.0f}")
        print("| " + " | ".join(cells) + " |")
    print(f"\nobjective update (eq. 6, {cost['windows']} windows of {cost['window']}) "
          f"{cost['objective']['seconds'] * 1e3:.2f} ms vs TD3 policy update "
          f"({cost['transitions']} transitions) {cost['td3-policy']['seconds'] * 1e3:.2f} ms: "
          f"{cost['x_td3_policy']:.1f}x (paper sizes, one agent)")
    seen = sorted({(r["jax"], r["device"]) for r in rows})
    print("; ".join(f"jax {j}, device {d}" for j, d in seen)
          + f"; medians of {args.repeat} round(s)"
          + ("" if args.pin_cpu is None else f"; each process pinned to CPU core {args.pin_cpu}"))
    path = write_results(args.json, "metagenrl_population", rows, repeat=args.repeat,
                         pinned_cpu=args.pin_cpu, windows=args.windows, cost=cost,
                         preset="metagenrl.PRESETS['pendulum']")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
