"""What a CLN iteration costs over PPO's, same env and batch, for each hypergradient mode.

For each setting, CLN (``metareward.algos.cln``) and PPO run with the same number of envs,
unroll length, epochs, minibatches, learning rate, network sizes and every other PPO
field (copied from the CLN config) on the same env; one iteration = one rollout and its
learning step (``update``). CLN adds the intrinsic reward on the rollout, the reward
buffer ``D_r``, ``reward_steps`` reward iterations (the hypergradient ``g^eta`` on one of
``reward_steps`` minibatches of the rollout, so one pass over it in all, and the eq. 21
regulariser on segments from ``D_r``), a policy conditioned on ``eta`` by Conditional
Layer Normalization, a second critic head ``V_ex`` beside ``V_in``, and perturbed
intrinsic advantages for every minibatch step. The three modes of ``cln.Config.terms``
differ in the hypergradient only:

* ``cln-best-response`` (the paper's "CLN", eq. 15): ``d J_ex / d eta`` through the CLN
  map at the current policy, a backward pass of ``J_ex``;
* ``cln-lirpg`` (eq. 11) / ``cln-all`` (eqs. 9 + 10 + 11): through a differentiable
  look-ahead step of the policy's optimiser (second order).

The issue's target: ``cln-best-response`` costs at most 1.3x PPO per iteration
(``x ppo``); the table's footer and the JSON (``target.met``) say, per setting, whether
the measured ratio meets it.

Settings (``--settings``):

* ``pendulum`` / ``cartpole``: our tuned presets (``cln.PRESETS``; their batch is our PPO
  presets');
* ``pendulum-paper``: ``cln.Config()``'s defaults, the paper's batch (4 envs x 2048
  steps, 10 epochs of 32 minibatches), on pendulum;
* ``hopper-paper``: the same on brax's hopper (brax/MJX, slow to compile on a CPU); not
  run by default: ask for it with ``--settings hopper-paper``.

The default ``--settings`` are ``pendulum cartpole pendulum-paper``. Each measurement
runs in a fresh process (compile time and peak memory its own); the four learners are
interleaved over ``--repeat`` rounds, their order rotated; reported are medians, and
``x ppo`` is the median of the per-round paired ratios of seconds per iteration
(learner / PPO in the same round). Prints a markdown table, writes JSON.

    python benchmarks/cln_cost.py
    python benchmarks/cln_cost.py --settings cartpole pendulum --repeat 5
    python benchmarks/cln_cost.py --settings hopper-paper --repeat 1
    python benchmarks/cln_cost.py --settings pendulum-paper --pin-cpu 0  # steadier on 2 cores
"""

from __future__ import annotations

import argparse
import dataclasses
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
    paired_rows,
    rotated,
    write_results,
)

SETTINGS = {
    # name: (env, CLN config: "preset" = cln.PRESETS[env], "paper" = cln.Config())
    "pendulum": ("pendulum", "preset"),
    "cartpole": ("cartpole", "preset"),
    "pendulum-paper": ("pendulum", "paper"),
    "hopper-paper": ("hopper", "paper"),
}
#: What runs without ``--settings`` (hopper-paper compiles slowly on a CPU).
DEFAULT_SETTINGS = ("pendulum", "cartpole", "pendulum-paper")
#: PPO, then CLN with each ``terms`` of ``cln.TERMS``.
LEARNERS = ("ppo", "cln-best-response", "cln-lirpg", "cln-all")
#: The issue's target: cln-best-response's iteration <= TARGET x PPO's.
TARGET_LEARNER = "cln-best-response"
TARGET = 1.3


def learners(setting: str):
    """``(env, cln_config, ppo_config)`` of a setting; the CLN config's ``terms`` is the
    default (best-response), PPO's fields that CLN shares are copied from it (PPO's own,
    such as ``live_bonus``, keep their defaults)."""
    from metareward import envs
    from metareward.algos import cln, ppo

    env_name, which = SETTINGS[setting]
    env = envs.make(env_name)
    cc = cln.PRESETS[env_name] if which == "preset" else cln.Config()
    pc = ppo.Config(**{f.name: getattr(cc, f.name) for f in dataclasses.fields(ppo.Config)
                       if hasattr(cc, f.name)})
    return env, cc, pc


def config(setting: str, learner: str):
    """``(env, module, config)`` of one learner of a setting."""
    from metareward.algos import cln, ppo

    env, cc, pc = learners(setting)
    if learner == "ppo":
        return env, ppo, pc
    terms = learner.removeprefix("cln-")
    if terms not in cln.TERMS:
        raise ValueError(f"unknown learner {learner!r}; one of {list(LEARNERS)}")
    return env, cln, dataclasses.replace(cc, terms=terms)


def worker(setting: str, learner: str, min_time: float) -> dict:
    """One measurement, in this (fresh) process."""
    import jax

    from benchmarks._memory import peak_rss_mb

    env, mod, cfg = config(setting, learner)
    trainer = mod.make_train(cfg, env)
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    t0 = time.perf_counter()
    update = jax.jit(trainer.update).lower(state).compile()
    compile_s = time.perf_counter() - t0
    state, _ = update(state)  # warm-up
    jax.block_until_ready(state)
    times: list[float] = []
    while len(times) < 5 or sum(times) < min_time:
        t0 = time.perf_counter()
        state, _ = update(state)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    batch = cfg.num_envs * cfg.num_steps
    return {
        "setting": setting,
        "learner": learner,
        "env": env.spec.name,
        "terms": getattr(cfg, "terms", None),
        "reward_steps": getattr(cfg, "reward_steps", None),
        "batch": batch,
        "minibatch_steps": cfg.num_epochs * cfg.num_minibatches,
        "seconds_per_update": sec,
        "updates": len(times),
        "env_steps_per_s": batch / sec,
        "updates_per_s": 1.0 / sec,
        "compile_s": compile_s,
        "peak_rss_mb": peak_rss_mb(),
        "jax": jax.__version__,
        "device": jax.devices()[0].device_kind,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS),
                    choices=list(SETTINGS),
                    help=f"default: {' '.join(DEFAULT_SETTINGS)} (hopper-paper on request)")
    ap.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=list(LEARNERS),
                    help="which learners to time (ppo, the baseline, is always timed)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=3.0,
                    help="seconds of timed updates per measurement (at least 5 updates)")
    ap.add_argument("--pin-cpu", type=int, default=None, metavar="CORE",
                    help="run every measurement pinned to this one CPU core (steadier ratios "
                         "on a small shared machine; default: unpinned)")
    ap.add_argument("--json", default=str(RESULTS / "cln_cost.json"))
    ap.add_argument("--worker", nargs=2, metavar=("SETTING", "LEARNER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.min_time)))
        return

    learners_run = ("ppo", *(x for x in LEARNERS if x in args.learners and x != "ppo"))
    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.repeat):
        for setting in args.settings:
            for learner in rotated(learners_run, r):
                m = measure_in_subprocess(
                    __file__, [setting, learner, "--min-time", str(args.min_time)],
                    cpus=None if args.pin_cpu is None else [args.pin_cpu])
                runs.setdefault((setting, learner), []).append(m)
                print(f"round {r + 1}/{args.repeat} {setting:15} {learner:18} "
                      f"{m['seconds_per_update'] * 1e3:10.1f} ms/update", file=sys.stderr,
                      flush=True)

    rows = paired_rows(runs, "ppo")
    for row in rows:  # this benchmark's names for the paired ratio
        row["x_ppo_per_round"] = row.pop("ratio_per_round")
        row["x_ppo"] = row.pop("ratio")
    rows.sort(key=lambda r: (args.settings.index(r["setting"]), LEARNERS.index(r["learner"])))

    met = {r["setting"]: r["x_ppo"] <= TARGET for r in rows if r["learner"] == TARGET_LEARNER}
    measured = {r["setting"]: r["x_ppo"] for r in rows if r["learner"] == TARGET_LEARNER}
    for r in rows:
        if r["learner"] == TARGET_LEARNER:
            r["meets_target"] = met[r["setting"]]

    cols = ("setting", "learner", "env", "batch", "mb steps", "ms/update", "env-steps/s",
            "updates/s", "x ppo", "compile s", "peak MB")
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join(["---"] * 3 + ["---:"] * (len(cols) - 3)) + "|")
    for r in rows:
        cells = (r["setting"], r["learner"], r["env"], str(r["batch"]),
                 str(r["minibatch_steps"]), f"{r['seconds_per_update'] * 1e3:.1f}",
                 f"{r['env_steps_per_s']:,.0f}", f"{r['updates_per_s']:.2f}",
                 f"{r['x_ppo']:.2f}", f"{r['compile_s']:.1f}", f"{r['peak_rss_mb']:.0f}")
        print("| " + " | ".join(cells) + " |")
    envs_seen = sorted({(r["jax"], r["device"]) for r in rows})
    print("\n" + "; ".join(f"jax {j}, device {d}" for j, d in envs_seen)
          + f"; medians of {args.repeat} round(s)"
          + ("" if args.pin_cpu is None else f"; each process pinned to CPU core {args.pin_cpu}"))
    print(f"target (issue): {TARGET_LEARNER} <= {TARGET}x ppo per iteration: "
          + ", ".join(f"{s} {x:.2f}x {'met' if met[s] else 'NOT met'}"
                      for s, x in measured.items()))
    path = write_results(args.json, "cln_cost", rows, repeat=args.repeat,
                         pinned_cpu=args.pin_cpu,
                         target={"learner": TARGET_LEARNER, "max_x_ppo": TARGET,
                                 "description": f"{TARGET_LEARNER} update <= {TARGET}x "
                                                "ppo update",
                                 "x_ppo": measured, "met": met})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
