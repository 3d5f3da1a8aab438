"""Cost of the hypergradient estimators: implicit (CG) vs unrolled, as the inner horizon K grows.

The bilevel problem is the one the learned-reward methods solve, at the size the papers
use: a tanh 64x64 Gaussian policy (obs 17, actions 6, HalfCheetah-sized) and a 64x64
reward net r_phi(s, a) on a training batch and a validation batch of 2048 transitions
each (all fixed, random).

* inner loss (policy, on the training batch): AWR's advantage-weighted log-likelihood with
  the learned reward as advantage, ``-mean(min(exp(r_phi(s, a)), 20) log pi_theta(a|s))``
  (TARE eq. 12), plus weight decay 1e-4;
* outer loss (on the validation batch): the extrinsic policy-gradient surrogate
  ``-mean(A_ex log pi_theta(a|s))``.

Variants (one jitted program each, a fresh process each):

* ``implicit`` — :func:`metareward.meta.implicit_hypergrad`, 10 CG steps (``tol=0``, so
  all 10 run unless CG meets negative curvature; the iterations done are reported), the
  Hessian on the validation batch (TARE eq. 14), damping 0.3 — the smallest of 1e-3, 1e-2,
  3e-2, 0.1, 0.3, 1 with which CG meets no negative curvature at this (random,
  non-stationary) point, so that the 10 Hessian-vector products are what is timed. The
  baseline of the ratios.
* ``unrolled`` — :func:`metareward.meta.unrolled_hypergrad` through K full-batch Adam
  steps of the inner loss (the optimiser state in the carry, as LIRPG's look-ahead), for
  each K in ``--ks``;
* ``unrolled-remat`` — the same with ``remat=True`` (each step recomputed in the backward
  pass), for each K in ``--remat-ks``.

Reported: seconds per hypergradient after compilation (median of repeated calls, then
the median over ``--repeat`` interleaved rounds), hypergradients/s, inner steps/s,
transitions/s (training-batch transitions per second whose hypergradient is computed),
compile time, XLA's buffer assignment for the program (``memory_analysis``: temporaries,
the memory the estimator needs beyond its inputs and outputs — exact, and the same on
every run), the process's peak RSS (VmHWM; on a GPU also the device's peak bytes in use),
and the ratios time / time(implicit) and temp / temp(implicit) (paired per round). The
crossover — the K above which unrolled is slower, and the K above which it needs more
memory than implicit — is interpolated linearly in K between the measured Ks.

    python benchmarks/hypergrad.py                      # Ks 1 3 10 30 100, 3 rounds
    python benchmarks/hypergrad.py --ks 1 10 100 --repeat 1
"""

from __future__ import annotations

import argparse
import itertools
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
    rotated,
    write_results,
)

OBS, ACT, BATCH, HIDDEN = 17, 6, 2048, (64, 64)
CG_STEPS, DAMPING, INNER_LR = 10, 0.3, 3e-4


def problem(seed: int = 0):
    """``(theta, phi, inner, outer, hessian_loss)`` of the benchmark's bilevel problem."""
    import jax
    import jax.numpy as jnp

    from metareward.nets import GaussianPolicy, ValueNet

    policy = GaussianPolicy(action_dim=ACT, hidden=HIDDEN)
    reward = ValueNet(hidden=HIDDEN)  # a scalar head on concat(s, a)
    ks = jax.random.split(jax.random.PRNGKey(seed), 6)
    s_tr, s_va = (jax.random.normal(k, (BATCH, OBS)) for k in ks[:2])
    a_tr, a_va = (jnp.tanh(jax.random.normal(k, (BATCH, ACT))) for k in ks[2:4])
    adv_ex = jax.random.normal(ks[4], (BATCH,))
    theta = policy.init(ks[5], s_tr[:1])
    phi = reward.init(ks[5], jnp.concatenate([s_tr[:1], a_tr[:1]], -1))

    def logp(th, s, a):
        return policy.apply(th, s).log_prob(a)

    def awr(th, ph, s, a):
        r = reward.apply(ph, jnp.concatenate([s, a], -1))
        w = jnp.minimum(jnp.exp(r), 20.0)
        decay = sum(jnp.sum(p**2) for p in jax.tree.leaves(th))
        return -jnp.mean(w * logp(th, s, a)) + 1e-4 * decay

    inner = lambda th, ph: awr(th, ph, s_tr, a_tr)
    hessian_loss = lambda th, ph: awr(th, ph, s_va, a_va)
    outer = lambda th, ph: -jnp.mean(adv_ex * logp(th, s_va, a_va))
    return theta, phi, inner, outer, hessian_loss


def build(variant: str, k: int):
    """``(fn, theta, phi)``: the jittable ``fn(theta, phi) -> (hypergrad, cg_iterations)``
    of a variant and its arguments."""
    import jax
    import jax.numpy as jnp
    import optax

    from metareward.meta import implicit_hypergrad, unrolled_hypergrad

    theta, phi, inner, outer, hessian_loss = problem()
    if variant == "implicit":
        def fn(th, ph):
            g, info = implicit_hypergrad(inner, outer, th, ph, hessian_loss=hessian_loss,
                                         maxiter=CG_STEPS, damping=DAMPING, tol=0.0,
                                         return_info=True)
            return g, info.iterations
        return fn, theta, phi

    opt = optax.adam(INNER_LR)

    def step(carry, ph, _k):
        th, st = carry
        upd, st = opt.update(jax.grad(inner)(th, ph), st)
        return optax.apply_updates(th, upd), st

    def fn(th, ph):
        g = unrolled_hypergrad(step, lambda c, p: outer(c[0], p), (th, opt.init(th)), ph, k,
                               remat=variant == "unrolled-remat")
        return g, jnp.int32(0)

    return fn, theta, phi


def worker(variant: str, k: int, min_time: float) -> dict:
    """One measurement, in this (fresh) process."""
    import jax
    import numpy as np

    import metareward  # noqa: F401  (XLA:CPU flags before jax starts)
    from benchmarks._memory import peak_rss_mb

    fn, theta, phi = build(variant, k)
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(theta, phi).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    g, iters = compiled(theta, phi)  # warm-up
    jax.block_until_ready(g)
    finite = bool(all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(g)))
    times: list[float] = []
    while len(times) < 3 or sum(times) < min_time:
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(theta, phi))
        times.append(time.perf_counter() - t0)
    dev = jax.devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    return {
        "variant": variant,
        "K": k,
        "seconds": statistics.median(times),
        "calls": len(times),
        "compile_s": compile_s,
        "xla_temp_mb": mem.temp_size_in_bytes / 2**20,
        "xla_args_mb": mem.argument_size_in_bytes / 2**20,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_compile_mb": rss_before,
        "device_peak_mb": stats["peak_bytes_in_use"] / 2**20 if stats else None,
        "cg_iterations": int(iters) if variant == "implicit" else None,
        "finite": finite,
        "jax": jax.__version__,
        "device": dev.device_kind,
    }


def crossover(rows: list[dict], key: str) -> float | None:
    """Smallest K (interpolated linearly between measured Ks) at which plain unrolled's
    ``key`` reaches implicit's; None if it never does in the measured range."""
    base = next(r[key] for r in rows if r["variant"] == "implicit")
    pts = sorted((r["K"], r[key]) for r in rows if r["variant"] == "unrolled")
    if pts and pts[0][1] >= base:
        return float(pts[0][0])
    for (k0, v0), (k1, v1) in itertools.pairwise(pts):
        if v0 < base <= v1:
            return k0 + (base - v0) * (k1 - k0) / (v1 - v0)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 3, 10, 30, 100])
    ap.add_argument("--remat-ks", type=int, nargs="*", default=[10, 100])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=2.0,
                    help="seconds of timed calls per measurement (at least 3 calls)")
    ap.add_argument("--json", default=str(RESULTS / "hypergrad.json"))
    ap.add_argument("--worker", nargs=2, metavar=("VARIANT", "K"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.min_time)))
        return

    variants = [("implicit", CG_STEPS)] + [("unrolled", k) for k in args.ks]
    variants += [("unrolled-remat", k) for k in args.remat_ks]
    runs: dict[tuple[str, int], list[dict]] = {}
    for r in range(args.repeat):
        for variant, k in rotated(variants, r):
            m = measure_in_subprocess(__file__, [variant, str(k), "--min-time",
                                                 str(args.min_time)])
            runs.setdefault((variant, k), []).append(m)
            print(f"round {r + 1}/{args.repeat} {variant:15} K={k:<4} "
                  f"{m['seconds'] * 1e3:9.2f} ms", file=sys.stderr, flush=True)

    base = runs[("implicit", CG_STEPS)]
    rows = []
    for (variant, k), ms in runs.items():
        row = dict(ms[0])
        for key in ("seconds", "compile_s", "peak_rss_mb"):
            row[key] = statistics.median(m[key] for m in ms)
        row["seconds_all"] = [m["seconds"] for m in ms]
        steps = k if variant != "implicit" else 0
        row["inner_steps"] = steps
        row["hypergrads_per_s"] = 1.0 / row["seconds"]
        row["inner_steps_per_s"] = steps / row["seconds"] if steps else None
        row["transitions_per_s"] = BATCH / row["seconds"]
        per_round = [m["seconds"] / b["seconds"] for m, b in zip(ms, base, strict=True)]
        row["time_ratio_per_round"] = per_round
        row["time_ratio_vs_implicit"] = statistics.median(per_round)
        row["temp_ratio_vs_implicit"] = row["xla_temp_mb"] / base[0]["xla_temp_mb"]
        row["finite"] = all(m["finite"] for m in ms)
        rows.append(row)
    rows.sort(key=lambda r: (r["variant"] != "implicit", r["variant"], r["K"]))

    header = (f"{'variant':15} {'K':>4} {'ms/hypergrad':>12} {'hypergrads/s':>12} "
              f"{'transitions/s':>13} {'time ratio':>10} {'compile s':>9} "
              f"{'XLA temp MB':>11} {'temp ratio':>10} {'peak RSS MB':>11}")
    print(header)
    print("-" * len(header))
    for r in rows:
        k = f"{r['K']}" if r["variant"] != "implicit" else f"cg{r['cg_iterations']}"
        print(f"{r['variant']:15} {k:>4} {r['seconds'] * 1e3:>12.2f} "
              f"{r['hypergrads_per_s']:>12.1f} {r['transitions_per_s']:>13,.0f} "
              f"{r['time_ratio_vs_implicit']:>10.2f} {r['compile_s']:>9.1f} "
              f"{r['xla_temp_mb']:>11.1f} {r['temp_ratio_vs_implicit']:>10.2f} "
              f"{r['peak_rss_mb']:>11.0f}")
    cross = {"time_K": crossover(rows, "seconds"), "memory_K": crossover(rows, "xla_temp_mb")}
    for what, k in (("is slower", cross["time_K"]), ("needs more memory", cross["memory_K"])):
        msg = f"from K = {k:.1f}" if k is not None else f"at no K <= {max(args.ks)}"
        print(f"crossover: unrolled {what} than implicit ({CG_STEPS} CG steps) {msg}")
    if not all(r["finite"] for r in rows):
        print("warning: a variant returned a non-finite hypergradient", file=sys.stderr)
    path = write_results(args.json, "hypergrad", rows, repeat=args.repeat, crossover=cross,
                         problem={"obs": OBS, "act": ACT, "batch": BATCH,
                                  "hidden": list(HIDDEN), "cg_steps": CG_STEPS,
                                  "damping": DAMPING, "inner_lr": INNER_LR})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
