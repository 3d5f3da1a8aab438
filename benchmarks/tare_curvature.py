"""Which curvature lets TARE's conjugate gradients do their job (issue 32): the exact
Hessian with a fixed damping (the paper's setting), the Hessian with adaptive damping
(``cg_restarts``), the Gauss-Newton / Fisher matrix (``curvature="fisher"``), and eq. 14
as printed (the validation batch's Hessian).

Two measurements, on TARE's chain preset (PPO-TARE, ``tare.preset("chain")``):

* ``snapshots``: one training run of the default config, stopped every ``--every``
  updates; at each stop, on a fresh rollout split as in training, every variant's
  hypergradient is compared with the *exact* implicit derivative of the same damped
  system, ``g_phi - M (H + d I)^-1 g_theta`` with ``H`` the training objective's dense
  Hessian (``jax.hessian``, solved by ``numpy.linalg.solve``): cosine, CG iterations,
  whether CG met negative curvature, the damping it ended with, and the time of one
  jitted hypergradient (median of 5 calls). ``lambda_min`` / ``lambda_max``: the dense
  Hessian's extreme eigenvalues.
* ``training``: each variant trained from scratch on ``--seeds`` seeds (vmapped): the
  share of its CG solves that stopped at negative curvature over the whole run, the mean
  CG iterations, the mean hypergradient cost relative to the default's (from the run's
  wall time), and the final training return.

Prints two tables, writes JSON to ``benchmarks/results/tare_curvature-cpu-<date>.json``.

    python benchmarks/tare_curvature.py                 # ~10 min on one CPU core
    python benchmarks/tare_curvature.py --seeds 2 --every 160
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from benchmarks._harness import RESULTS
from metareward import envs
from metareward.algos import tare

VARIANTS = {
    "hessian": {},
    "hessian+restarts": {"cg_restarts": 3},
    "fisher": {"curvature": "fisher"},
    "validation (eq. 14 printed)": {"hessian": "validation"},
}


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def exact_hypergradient(trainer, pol, phi, seg_tr, seg_va, damping):
    """``g_phi - M (H + d I)^-1 g_theta`` with the dense training-objective Hessian."""
    inner, _, outer = trainer.objectives(seg_tr, seg_va)
    H = np.asarray(jax.jit(jax.hessian(inner))(pol, phi), np.float64)
    (g_p, g_h), _ = jax.grad(outer, argnums=(0, 1), has_aux=True)(pol, phi)
    x = np.linalg.solve(H + damping * np.eye(H.shape[0]), np.asarray(g_p, np.float64))
    x = jnp.asarray(x, pol.dtype)
    mixed = jax.jvp(lambda p: jax.grad(inner, argnums=1)(p, phi), (pol,), (x,))[1]
    eig = np.linalg.eigvalsh(0.5 * (H + H.T))
    return np.asarray(g_h - mixed, np.float64), float(eig[0]), float(eig[-1])


def snapshots(every: int, seed: int) -> list[dict]:
    env = envs.make("chain")
    base = tare.preset("chain")
    trainers = {name: tare.make_train(dataclasses.replace(base, **kw), env)
                for name, kw in VARIANTS.items()}
    default = trainers["hessian"]
    hypergrads = {name: jax.jit(t.hypergradient) for name, t in trainers.items()}
    run = jax.jit(lambda s: jax.lax.scan(lambda s, _: default.update(s), s, None,
                                         length=every)[0])
    state = default.init(jax.random.PRNGKey(seed))
    rows = []
    for stop in range(0, default.num_updates + 1, every):
        probe, seg = jax.jit(default.collect_segment)(state)
        half = seg.obs.shape[1] // 2
        perm = jax.random.permutation(jax.random.PRNGKey(stop), 2 * half)
        tr, va = perm[:half], perm[half:]
        seg_tr = jax.tree.map(lambda x, cols=tr: x[:, cols], seg)
        seg_va = jax.tree.map(lambda x, cols=va: x[:, cols], seg)
        pol = ravel_pytree(state.params["policy"])[0]
        phi = ravel_pytree(state.params["reward"])[0]
        exact, lo, hi = exact_hypergradient(default, pol, phi, seg_tr, seg_va, base.cg_damping)
        for name, fn in hypergrads.items():
            g, _, info = fn(pol, phi, seg_tr, seg_va)
            jax.block_until_ready(g)
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                jax.block_until_ready(fn(pol, phi, seg_tr, seg_va)[0])
                times.append(time.perf_counter() - t0)
            rows.append({"update": stop, "variant": name,
                         "cosine": _cos(np.asarray(g, np.float64), exact),
                         "cg_iterations": int(info.iterations),
                         "negative_curvature": bool(info.negative_curvature),
                         "damping": float(info.damping), "ms": 1e3 * statistics.median(times),
                         "lambda_min": lo, "lambda_max": hi})
        if stop < default.num_updates:
            state = run(state)
        del probe
    return rows


def training(seeds: int) -> list[dict]:
    env = envs.make("chain")
    base = tare.preset("chain")
    keys = jnp.stack([jax.random.PRNGKey(42 + i) for i in range(seeds)])
    rows = []
    for name, kw in VARIANTS.items():
        trainer = tare.make_train(dataclasses.replace(base, **kw), env)
        fn = jax.jit(jax.vmap(trainer.train)).lower(keys).compile()
        t0 = time.perf_counter()
        _, m = fn(keys)
        jax.block_until_ready(m)
        wall = time.perf_counter() - t0
        ret = np.asarray(m["episode_return"])[:, -20:]
        rows.append({"variant": name, "seconds": wall,
                     "negative_curvature_share": float(np.mean(m["cg_negative_curvature"])),
                     "cg_iterations": float(np.mean(m["cg_iterations"])),
                     "damping_mean": float(np.mean(m["cg_damping"])),
                     "final_return_per_seed": np.nanmean(ret, axis=1).round(2).tolist(),
                     "final_return": float(np.nanmean(ret))})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=80, help="updates between snapshots")
    ap.add_argument("--seed", type=int, default=42, help="the snapshot run's seed")
    ap.add_argument("--seeds", type=int, default=4, help="seeds of each training run")
    ap.add_argument("--skip-training", action="store_true")
    args = ap.parse_args()
    snap = snapshots(args.every, args.seed)
    print("\n| update | variant | cosine with exact | CG iters | neg. curvature | damping "
          "| ms | lambda_min | lambda_max |\n|---|---|---|---|---|---|---|---|---|")
    for r in snap:
        print(f"| {r['update']} | {r['variant']} | {r['cosine']:.3f} | {r['cg_iterations']} "
              f"| {r['negative_curvature']} | {r['damping']:.3g} | {r['ms']:.1f} "
              f"| {r['lambda_min']:.3g} | {r['lambda_max']:.3g} |")
    train = [] if args.skip_training else training(args.seeds)
    if train:
        base_s = train[0]["seconds"]
        print("\n| variant | neg. curvature share | CG iters | mean damping | wall s "
              "| / hessian | final return (per seed) |\n|---|---|---|---|---|---|---|")
        for r in train:
            print(f"| {r['variant']} | {r['negative_curvature_share']:.2f} "
                  f"| {r['cg_iterations']:.1f} | {r['damping_mean']:.3g} | {r['seconds']:.0f} "
                  f"| {r['seconds'] / base_s:.2f} | {r['final_return']:.2f} "
                  f"{r['final_return_per_seed']} |")
    out = RESULTS / f"tare_curvature-cpu-{datetime.date.today()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "jax": jax.__version__,
                               "device": jax.devices()[0].device_kind,
                               "snapshots": snap, "training": train}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
