"""brax physics backends on this machine: which is fastest for the MuJoCo envs, and which
keeps the task.

For each env (default ``hopper`` and ``walker2d``) and backend (``mjx``,
``generalized``, ``positional``, ``spring``; :data:`metareward.envs.brax_adapter.BACKENDS`)
a fresh process steps ``num_envs`` copies of ``metareward.envs.make(env, backend=...)``
(time limit and auto-reset included) for 2048 steps each under uniform random actions,
one jitted ``lax.scan``, at the batch sizes the papers use (1 env: LIRPG's and AWR's;
4 envs: CLN's). Reported per (env, backend, num_envs): env-steps/s after compilation
(median of ``--repeat`` rollouts), compile time, and the ratio of its time to ``mjx``'s
(the reference physics) in the same round, rounds interleaved with the backend order
rotated; and, to tell whether the backend keeps the task, the random policy's mean
episode length and return over the timed rollouts: a backend whose random hopper
stays up several times as long as under ``mjx`` is a different task, however fast.

Prints a table, writes ``benchmarks/results/brax_backends.json``.

    python benchmarks/brax_backends.py                       # ~25 min on one core
    python benchmarks/brax_backends.py --envs hopper --rounds 1 --cpu 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (
    RESULTS,
    measure_in_subprocess,
    process_facts,
    rotated,
    write_results,
)

BACKENDS = ("mjx", "generalized", "positional", "spring")
STEPS = 2048


def worker(env_name: str, backend: str, num_envs: list[int], repeat: int) -> dict:
    """Times random-policy rollouts of ``env_name`` on ``backend`` for each batch size."""
    import jax
    import jax.numpy as jnp

    from metareward import envs

    env = envs.make(env_name, backend=backend)
    rows, compile_total = [], 0.0
    for n in num_envs:
        def rollout(key, n=n):
            k_reset, k_act = jax.random.split(key)
            state = jax.vmap(env.reset)(jax.random.split(k_reset, n))

            def step(carry, k):
                state, ret, length, sums = carry
                a = jax.random.uniform(k, (n, env.spec.action_size), minval=-1.0, maxval=1.0)
                state = jax.vmap(env.step)(state, a)
                ret, length = ret + state.reward, length + 1
                done = state.done > 0
                sums = sums + jnp.stack([done.sum(), jnp.where(done, ret, 0.0).sum(),
                                         jnp.where(done, length, 0).sum()])
                return (state, jnp.where(done, 0.0, ret), jnp.where(done, 0, length),
                        sums), None

            init = (state, jnp.zeros(n), jnp.zeros(n, jnp.int32), jnp.zeros(3))
            (_, _, _, sums), _ = jax.lax.scan(step, init, jax.random.split(k_act, STEPS))
            return sums

        fn = jax.jit(rollout)
        t0 = time.perf_counter()
        compiled = fn.lower(jax.random.PRNGKey(0)).compile()
        compile_s = time.perf_counter() - t0
        compile_total += compile_s
        jax.block_until_ready(compiled(jax.random.PRNGKey(0)))  # warm-up
        times, sums = [], jnp.zeros(3)
        for i in range(repeat):
            t0 = time.perf_counter()
            out = jax.block_until_ready(compiled(jax.random.PRNGKey(i + 1)))
            times.append(time.perf_counter() - t0)
            sums = sums + out
        episodes, ret, length = (float(x) for x in sums)
        rows.append({
            "num_envs": n, "seconds_per_update": statistics.median(times),
            "batch": n * STEPS, "compile_s": compile_s, "episodes": episodes,
            "random_return": ret / episodes if episodes else None,
            "random_episode_length": length / episodes if episodes else None,
        })
    return {"env": env_name, "backend": backend, "rows": rows,
            **process_facts(compile_total)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--envs", nargs="+", default=["hopper", "walker2d"])
    ap.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    ap.add_argument("--num-envs", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed rollouts per measurement")
    ap.add_argument("--cpu", type=int, default=None, help="pin the workers to this core")
    ap.add_argument("--json", default=str(RESULTS / "brax_backends.json"))
    ap.add_argument("--worker", nargs=2, metavar=("ENV", "BACKEND"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if "mjx" not in args.backends:
        ap.error("--backends must include mjx, the reference the others are compared with")
    if min([*args.num_envs, args.rounds, args.repeat]) < 1:
        ap.error("--num-envs, --rounds and --repeat must be >= 1")
    if args.worker:
        print(json.dumps(worker(*args.worker, args.num_envs, args.repeat)))
        return

    cpus = None if args.cpu is None else [args.cpu]
    runs: dict[tuple[str, str, int], list[dict]] = {}
    for r in range(args.rounds):
        for env_name in args.envs:
            for backend in rotated(args.backends, r):
                m = measure_in_subprocess(
                    __file__, [env_name, backend, "--num-envs", *map(str, args.num_envs),
                               "--repeat", str(args.repeat)], cpus)
                for row in m["rows"]:
                    runs.setdefault((env_name, backend, row["num_envs"]), []).append(
                        {**row, "peak_rss_mb": m["peak_rss_mb"], "jax": m["jax"],
                         "device": m["device"]})
                    print(f"round {r + 1}/{args.rounds} {env_name:9} {backend:11} "
                          f"n={row['num_envs']} {row['batch'] / row['seconds_per_update']:8.0f}"
                          " steps/s", file=sys.stderr, flush=True)

    rows = []
    for (env_name, backend, n), ms in runs.items():
        base = runs[(env_name, "mjx", n)]
        secs = [m["seconds_per_update"] for m in ms]
        per_round = [a / b["seconds_per_update"] for a, b in zip(secs, base, strict=True)]
        eps = sum(m["episodes"] for m in ms)
        rows.append({
            "env": env_name, "backend": backend, "num_envs": n,
            "seconds_per_update": statistics.median(secs), "seconds_all": secs,
            "env_steps_per_s": ms[0]["batch"] / statistics.median(secs),
            "time_ratio_vs_mjx_per_round": per_round,
            "time_ratio_vs_mjx": statistics.median(per_round),
            "compile_s": statistics.median(m["compile_s"] for m in ms),
            "episodes": eps,
            "random_return": (sum(m["random_return"] * m["episodes"] for m in ms if m["episodes"])
                              / eps if eps else None),
            "random_episode_length": (sum(m["random_episode_length"] * m["episodes"]
                                          for m in ms if m["episodes"]) / eps if eps else None),
            "peak_rss_mb": max(m["peak_rss_mb"] for m in ms),
            "jax": ms[0]["jax"], "device": ms[0]["device"],
        })
    rows.sort(key=lambda r: (r["env"], r["num_envs"], BACKENDS.index(r["backend"])))

    header = (f"{'env':9} {'backend':11} {'envs':>4} {'steps/s':>8} {'time/mjx':>8} "
              f"{'compile s':>9} {'rand ep len':>11} {'rand return':>11}")
    print(header)
    print("-" * len(header))
    for r in rows:
        ln = r["random_episode_length"]
        rt = r["random_return"]
        print(f"{r['env']:9} {r['backend']:11} {r['num_envs']:>4} {r['env_steps_per_s']:>8.0f} "
              f"{r['time_ratio_vs_mjx']:>8.2f} {r['compile_s']:>9.1f} "
              f"{'-' if ln is None else f'{ln:.1f}':>11} {'-' if rt is None else f'{rt:.1f}':>11}")
    path = write_results(args.json, "brax_backends", rows, rollout_steps=STEPS,
                         rounds=args.rounds, repeat=args.repeat, pinned_cpu=args.cpu)
    print(f"written {path}")


if __name__ == "__main__":
    main()
