"""What a TARE iteration costs over its inner learner's (PPO, resp. AWR), same env and batch,
and what the implicit step alone costs for 1, 5, 10 and 20 conjugate-gradient steps.

For each setting, TARE and its baseline run with the same envs, unroll length, network
sizes and number of policy gradient steps per iteration: PPO-TARE does ``num_epochs x
num_minibatches`` minibatch steps on each half of the batch (two rounds, the halves
swapped), so the PPO baseline gets the whole batch in ``2 x num_minibatches``
minibatches of the same size; AWR-TARE does ``value_steps`` and ``policy_steps`` per
round, so the AWR baseline gets twice as many of each. TARE adds, per round, the learned
reward on the data, and the implicit hypergradient (eq. 14: one extrinsic gradient, CG's
Hessian-vector products, one mixed second derivative) and an Adam step on the reward.

Rows:

* ``update``: one iteration (``update``: rollout + learning), TARE (default 10 CG steps)
  and the baseline; ``cost ratio`` = TARE / baseline, paired per round.
* ``implicit``: the jitted hypergradient alone (``tare.hypergradient``) on one fixed
  round's data, for ``cg_steps`` in 1, 5, 10, 20; ``cost ratio`` = its time / the
  baseline's iteration. For AWR the data are one rollout's columns (``num_steps`` rows),
  not the whole replay buffer the real iteration runs the reward net over, so the row
  is a lower bound there. CG stops early at negative curvature or at its tolerance, so
  more ``cg_steps`` need not cost more.

Settings: ``chain`` (PPO-TARE's chain preset), ``pendulum`` (PPO-TARE's pendulum preset),
``pendulum-awr`` (AWR-TARE, a small AWR-sized setting). Each measurement runs in a fresh
process (compile time and peak memory its own), interleaved over ``--repeat`` rounds in
rotated order; medians are reported. Prints a table, writes JSON.

    python benchmarks/tare_cost.py
    python benchmarks/tare_cost.py --settings pendulum --repeat 5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks._harness import (  # noqa: E402
    RESULTS,
    measure_in_subprocess,
    rotated,
    write_results,
)

SETTINGS = ("chain", "pendulum", "pendulum-awr")
CG_STEPS = (1, 5, 10, 20)


def learners(setting: str, cg_steps: int = 10):
    """``(env, tare_config, baseline_module, baseline_config)`` of a setting."""
    from metareward import envs
    from metareward.algos import awr, ppo, tare

    if setting == "pendulum-awr":
        env = envs.make("pendulum")
        tc = tare.AWRConfig(num_envs=8, num_steps=128, buffer_size=8192, value_steps=50,
                            policy_steps=100, policy_learning_rate=1e-3, hypergrad_batch=1024,
                            reward_scale=0.1, cg_steps=cg_steps)
        bc = awr.Config(num_envs=tc.num_envs, num_steps=tc.num_steps,
                        buffer_size=tc.buffer_size, value_steps=2 * tc.value_steps,
                        policy_steps=2 * tc.policy_steps, value_batch_size=tc.value_batch_size,
                        policy_batch_size=tc.policy_batch_size,
                        value_learning_rate=tc.value_learning_rate,
                        policy_learning_rate=tc.policy_learning_rate, momentum=tc.momentum,
                        gamma=tc.gamma, td_lambda=tc.td_lambda, hidden=tc.hidden,
                        activation=tc.activation, reward_scale=tc.reward_scale)
        return env, tc, awr, bc
    env = envs.make(setting)
    tc = dataclasses.replace(tare.preset(setting), cg_steps=cg_steps)
    bc = ppo.Config(num_envs=tc.num_envs, num_steps=tc.num_steps,
                    num_epochs=tc.num_epochs, num_minibatches=2 * tc.num_minibatches,
                    learning_rate=tc.learning_rate, anneal_lr=tc.anneal_lr,
                    gamma=tc.gamma, gae_lambda=tc.gae_lambda, ent_coef=tc.ent_coef,
                    normalize_obs=tc.normalize_obs, reward_scale=tc.reward_scale,
                    normalize_reward=False, vf_clip_eps=None, hidden=tc.hidden,
                    activation=tc.activation)
    return env, tc, ppo, bc


def _time(fn, args, min_time: float) -> tuple[float, int]:
    import jax

    times: list[float] = []
    while len(times) < 5 or sum(times) < min_time:
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def worker(setting: str, kind: str, cg_steps: int, min_time: float) -> dict:
    """One measurement, in this (fresh) process: ``kind`` is ``tare``, ``baseline`` (one
    iteration) or ``implicit`` (the hypergradient alone)."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from benchmarks._memory import peak_rss_mb
    from metareward.algos import tare

    env, tc, base_mod, bc = learners(setting, cg_steps)
    cfg = bc if kind == "baseline" else tc
    trainer = (base_mod if kind == "baseline" else tare).make_train(cfg, env)
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    is_awr = isinstance(tc, tare.AWRConfig)
    if kind == "implicit":
        state = jax.jit(trainer.update)(state)[0]  # a filled buffer / trained networks
        state, seg = jax.jit(partial(tare.rollout_segment, trainer.parts))(state)
        half = tc.num_envs // 2
        seg_tr = jax.tree.map(lambda x: x[:, :half], seg)
        seg_va = jax.tree.map(lambda x: x[:, half:], seg)
        pol = ravel_pytree(state.params["policy"])[0]
        phi = ravel_pytree(state.params["reward"])[0]
        args = [pol, phi, seg_tr, seg_va]
        if is_awr:
            k1, k2 = jax.random.split(jax.random.PRNGKey(1))
            n = tc.hypergrad_batch

            def idx(k):
                return (jax.random.randint(k, (n,), 0, tc.num_steps),
                        jax.random.randint(jax.random.fold_in(k, 1), (n,), 0, half))

            args += [idx(k1), idx(k2), jnp.ones((tc.num_steps,), bool)]
        fn = partial(tare.hypergradient, trainer.parts)
    else:
        args = [state]
        fn = trainer.update
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))  # warm-up
    sec, n = _time(compiled, args, min_time)
    batch = cfg.num_envs * cfg.num_steps
    return {
        "setting": setting,
        "kind": kind,
        "cg_steps": cg_steps if kind != "baseline" else None,
        "env": env.spec.name,
        "inner": "awr" if is_awr else "ppo",
        "reward_net": tc.reward_net,
        "batch": batch,
        "seconds": sec,
        "repeats": n,
        "env_steps_per_s": batch / sec if kind != "implicit" else None,
        "updates_per_s": 1.0 / sec,
        "compile_s": compile_s,
        "peak_rss_mb": peak_rss_mb(),
        "jax": jax.__version__,
        "device": jax.devices()[0].device_kind,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--cg-steps", nargs="+", type=int, default=list(CG_STEPS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=3.0,
                    help="seconds of timed calls per measurement (at least 5 calls)")
    ap.add_argument("--json", default=str(RESULTS / "tare_cost.json"))
    ap.add_argument("--worker", nargs=3, metavar=("SETTING", "KIND", "CG"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        s, kind, cg = args.worker
        print(json.dumps(worker(s, kind, int(cg), args.min_time)))
        return

    variants = [("baseline", 10), ("tare", 10)] + [("implicit", k) for k in args.cg_steps]
    runs: dict[tuple[str, str, int], list[dict]] = {}
    for r in range(args.repeat):
        for setting in args.settings:
            for kind, cg in rotated(variants, r):
                m = measure_in_subprocess(__file__, [setting, kind, str(cg), "--min-time",
                                                     str(args.min_time)])
                runs.setdefault((setting, kind, cg), []).append(m)
                print(f"round {r + 1}/{args.repeat} {setting:13} {kind:9} cg={cg:<3} "
                      f"{m['seconds'] * 1e3:10.1f} ms", file=sys.stderr, flush=True)

    rows = []
    for (setting, kind, _cg), ms in runs.items():
        row = dict(ms[0])
        for k in ("seconds", "compile_s", "peak_rss_mb"):
            row[k] = statistics.median(m[k] for m in ms)
        row["seconds_all"] = [m["seconds"] for m in ms]
        row["updates_per_s"] = 1.0 / row["seconds"]
        if kind != "implicit":
            row["env_steps_per_s"] = row["batch"] / row["seconds"]
        base = runs[(setting, "baseline", 10)]
        per_round = [m["seconds"] / b["seconds"] for m, b in zip(ms, base, strict=True)]
        row["cost_ratio_per_round"] = per_round
        row["cost_ratio_vs_baseline_update"] = statistics.median(per_round)
        rows.append(row)
    order = {v: i for i, v in enumerate(variants)}
    rows.sort(key=lambda r: (args.settings.index(r["setting"]),
                             order[(r["kind"], r["cg_steps"] or 10)]))

    header = (f"{'setting':13} {'what':18} {'batch':>6} {'ms':>9} {'env-steps/s':>12} "
              f"{'calls/s':>8} {'x baseline update':>17} {'compile s':>9} {'peak MB':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        base_name = "awr" if r["inner"] == "awr" else "ppo"
        what = {"baseline": f"{base_name} update",
                "tare": f"tare update cg={r['cg_steps']}",
                "implicit": f"implicit cg={r['cg_steps']}"}[r["kind"]]
        sps = f"{r['env_steps_per_s']:>12,.0f}" if r["env_steps_per_s"] else f"{'-':>12}"
        print(f"{r['setting']:13} {what:18} {r['batch']:>6} {r['seconds'] * 1e3:>9.1f} {sps} "
              f"{r['updates_per_s']:>8.2f} {r['cost_ratio_vs_baseline_update']:>17.2f} "
              f"{r['compile_s']:>9.1f} {r['peak_rss_mb']:>8.0f}")
    path = write_results(args.json, "tare_cost", rows, repeat=args.repeat,
                         target="tare update (cg=10) <= 3x baseline update")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
