"""MetaGenRL (``metagenrl_learned_objectives.md``), Table 1/2 in kind at small scale: meta-
train an objective on some envs, then meta-test it (Algorithm 2) on an env outside that
set against the objective's initialisation, TD3, off-policy REINFORCE (the fixed GAE
objective on the same windows and critic) and on-policy REINFORCE.

Meta-training: ``--agents`` TD3 agents dealt round-robin over ``--train-envs``, one jitted
program (``metagenrl.make_train``), the pendulum preset's sizes (64x64 nets) with
``--windows`` windows of 20 steps per objective batch and ``--train-steps`` env steps per
agent. Meta-test: ``--seeds`` fresh agents per method on ``--test-env`` for
``--test-steps`` steps, each method's seeds in one vmapped program. ``--training legacy``
trains the MetaGenRL agents as this module's first version did
(``metagenrl.LEGACY_TRAINING``: DDPG annealed after ``--learning-starts``, no policy
gradient clipping, windows uniform over transitions, the critic on transitions, one batch
split for the meta-gradient, the time input ``t / T``); the default is the authors'
training (``metagenrl.Config``'s defaults; with it ``--anneal-steps`` counts from step 0).
Results measured before issue 33 used the first version's. Writes to ``--out``:

* ``metagenrl_heldout_objective.msgpack``: the meta-trained objective
  (``flax.serialization``);
* ``metagenrl_heldout.json``: per method and seed the training episode returns as
  ``[env step, return]`` where an episode ended, and the final deterministic return
  (10 episodes); the meta-training return per env as ``[update, return]``; wall times,
  settings and device;
* ``metagenrl_heldout.md`` (printed too): mean training return per span of env steps and
  the final return; ``metagenrl_heldout.png``: mean +- std over seeds against env steps.

Scales (``--scale``; every option below overrides its scale's value):

* ``smoke``: 2 agents on ``pendulum`` for 600 steps, meta-test on
  ``mountaincar-continuous``, 2 seeds x 400 steps;
* ``cpu``: 4 agents on ``pendulum`` and ``mountaincar-continuous`` for 30k steps each,
  meta-test on brax ``inverted-pendulum``, 3 seeds x 20k steps (22 minutes on one core,
  2026-11-24). The meta-trained objective's transfer is weak at this budget; the
  learning test's budget, 120k steps per agent (``--train-steps 120000``, 48 minutes on
  one core, 33 of them meta-training), transfers clearly (``experiments/README.md``,
  outputs in ``experiments/results/cpu-120k/``);
* ``paper``: 20 agents (the paper's count) for 600k steps each on ``halfcheetah`` and
  ``walker2d`` (the paper's *Lunar* is not among our envs), meta-test on ``hopper``,
  3 seeds x 1M steps (the paper's Table 1 setting, on accelerators).

    python experiments/metagenrl_heldout.py                          # --scale cpu
    python experiments/metagenrl_heldout.py --train-steps 120000 \
        --out experiments/results/cpu-120k
    python experiments/metagenrl_heldout.py \
        --objective experiments/results/cpu-120k/metagenrl_heldout_objective.msgpack
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
import warnings
from pathlib import Path

import common
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from metareward import envs
from metareward.algos import metagenrl, reinforce, td3

HERE = Path(__file__).resolve().parent
NAME = "metagenrl_heldout"
SCALES = {
    "smoke": common.Scale(
        envs=("pendulum",),
        seeds=2,
        steps={"pendulum": 600},
        extra=dict(
            test_env="mountaincar-continuous",
            agents=2,
            test_steps=400,
            learning_starts=200,
            anneal_steps=200,
            windows=4,
        ),
    ),
    "cpu": common.Scale(
        envs=("pendulum", "mountaincar-continuous"),
        seeds=3,
        steps=dict.fromkeys(("pendulum", "mountaincar-continuous"), 30_000),
        extra=dict(
            test_env="inverted-pendulum",
            agents=4,
            test_steps=20_000,
            learning_starts=5_000,
            anneal_steps=10_000,
            windows=20,
        ),
    ),
    "paper": common.Scale(
        envs=("halfcheetah", "walker2d"),
        seeds=3,
        steps=dict.fromkeys(("halfcheetah", "walker2d"), 600_000),
        extra=dict(
            test_env="hopper",
            agents=20,
            test_steps=1_000_000,
            learning_starts=10_000,
            anneal_steps=10_000,
            windows=20,
        ),
    ),
}
METHODS = ("meta-trained", "initial", "td3", "reinforce-offpolicy", "reinforce-onpolicy")
#: ``--training``: MetaGenRL's training details, the authors' (``metagenrl.Config``'s
#: defaults) or the first version's (``metagenrl.LEGACY_TRAINING``, issue 33).
TRAININGS = ("authors", "legacy")


def _base(args) -> metagenrl.Config:
    """The pendulum preset with ``--windows``, ``--learning-starts`` and, with
    ``--training legacy``, the first version's training (``metagenrl.LEGACY_TRAINING``)."""
    legacy = getattr(args, "training", "authors") == "legacy"
    return dataclasses.replace(
        metagenrl.PRESETS["pendulum"],
        batch_size=args.windows,
        learning_starts=args.learning_starts,
        **(metagenrl.LEGACY_TRAINING if legacy else {}),
    )


def meta_train(args, log, base: metagenrl.Config | None = None) -> tuple[dict, dict, float]:
    """``base``: the config to start from (default :func:`_base`)."""
    base = _base(args) if base is None else base
    cfg = dataclasses.replace(
        base,
        num_agents=args.agents,
        total_steps=args.train_steps,
        buffer_size=args.train_steps,
        anneal_steps=args.anneal_steps,
    )
    tr = metagenrl.make_train(cfg, [envs.make(e) for e in args.train_envs])
    t0 = time.time()
    state, m = jax.jit(tr.train)(jax.random.PRNGKey(args.meta_seed))
    jax.block_until_ready(state)
    if int(state.nonfinite):
        raise FloatingPointError(f"{int(state.nonfinite)} non-finite steps in meta-training")
    curves = {e: np.asarray(m[f"return_{e}"]).tolist() for e in args.train_envs}
    for e, r in curves.items():
        r = np.asarray(r, float)
        n = len(r) // 10
        log(
            f"meta-train {e}: return deciles "
            f"{[round(float(np.nanmean(r[i * n : (i + 1) * n])), 1) for i in range(10)]}"
        )
    return jax.device_get(state.params["objective"]), curves, time.time() - t0


def meta_test(args, alpha, log, base: metagenrl.Config | None = None) -> dict:
    """``base``: the config of the MetaGenRL agents (default :func:`_base`; the
    objective's input flags must match the ones ``alpha`` was meta-trained with)."""
    base = _base(args) if base is None else base
    env = envs.make(args.test_env)
    keys = jax.random.split(jax.random.PRNGKey(100), args.seeds)
    steps = args.test_steps
    cfg = dataclasses.replace(base, num_agents=1, total_steps=steps, buffer_size=steps)
    mg = metagenrl.make_train(cfg, env)
    alpha0 = mg.init(jax.random.PRNGKey(args.meta_seed)).params["objective"]
    rf = metagenrl.make_train(dataclasses.replace(cfg, objective="reinforce"), env)
    t3 = td3.make_train(
        dataclasses.replace(
            td3.PRESETS["pendulum"],
            total_steps=steps,
            buffer_size=steps,
            learning_starts=args.learning_starts,
        ),
        env,
    )
    on_cfg = reinforce.PRESETS["pendulum"]  # 4 envs; 250 steps each per update
    on = reinforce.make_train(
        dataclasses.replace(
            on_cfg, num_steps=max(1, min(250, steps // on_cfg.num_envs)), total_steps=steps
        ),
        env,
    )

    def trained(tr):
        def run(_, k):
            st, m = tr.train(k)
            return {
                "episode_return": m["episode_return"],
                "env_steps": m["env_steps"],
                "final_return": jnp.mean(tr.evaluate(st, jax.random.fold_in(k, 1), 10)),
            }

        return run

    # (fn(objective, key), objective): the objective goes in as an argument, not a
    # closure constant, so a saved objective meta-tests to the same numbers.
    fns = {
        "meta-trained": (lambda a, k: mg.meta_test(a, None, k, 10), alpha),
        "initial": (lambda a, k: mg.meta_test(a, None, k, 10), alpha0),
        "td3": (trained(t3), None),
        "reinforce-offpolicy": (lambda a, k: rf.meta_test({}, None, k, 10), None),
        "reinforce-onpolicy": (trained(on), None),
    }
    out = {}
    for name in args.methods:
        t0 = time.time()
        fn, a = fns[name]
        o = jax.device_get(jax.jit(jax.vmap(fn, (None, 0)))(a, keys))
        out[name] = {k: np.asarray(v).tolist() for k, v in o.items()}
        out[name]["seconds"] = time.time() - t0
        f = np.asarray(o["final_return"])
        log(f"{name:>20s}: final {np.round(f, 1)}, mean {f.mean():.1f} ({time.time() - t0:.0f} s)")
    return out


def _json_safe(x):
    """NaN (no episode ended) -> null, recursively."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def _ended(values, steps=None) -> list:
    """``[step, value]`` (value to 0.01) where a per-update curve has a value (an episode
    ended); ``step`` from ``steps``, else the update index. Most updates end no episode,
    so this keeps the information in a few percent of the full curve's JSON."""
    v = np.asarray(values, dtype=np.float64)
    x = np.arange(len(v)) if steps is None else np.asarray(steps)
    ok = np.isfinite(v)
    return [[int(a), round(float(b), 2)] for a, b in zip(x[ok], v[ok], strict=True)]


def compact(report: dict) -> dict:
    """The report for JSON: meta-training curves per env as ``[update, return]`` pairs,
    meta-test training curves per method and seed as ``[env_step, return]`` pairs (both
    where an episode ended), the rest as it is."""
    out = dict(report)
    if "meta_train" in report:
        mt = report["meta_train"]
        out["meta_train"] = {**mt, "return": {e: _ended(r) for e, r in mt["return"].items()}}
    out["meta_test"] = {
        name: {
            "episode_return": [
                _ended(r, st) for r, st in zip(res["episode_return"], res["env_steps"], strict=True)
            ],
            **{k: v for k, v in res.items() if k not in ("episode_return", "env_steps")},
        }
        for name, res in report["meta_test"].items()
    }
    return out


def table(results: dict, steps: int) -> str:
    edges = np.linspace(0, steps, 6).astype(int)
    head = " | ".join(f"{a / 1000:g}-{b / 1000:g}k" for a, b in itertools.pairwise(edges))
    lines = [f"| method | {head} | final (seeds) |", "|---|" + "---:|" * 6]
    for name, r in results.items():
        er = np.asarray(r["episode_return"], float)
        st = np.asarray(r["env_steps"])
        cells = []
        for a, b in itertools.pairwise(edges):
            sel = np.where((st > a) & (st <= b), er, np.nan)
            cells.append("-" if np.all(np.isnan(sel)) else f"{np.nanmean(sel):.1f}")
        f = np.asarray(r["final_return"])
        seeds = ", ".join(f"{x:.0f}" for x in f)
        lines.append(f"| {name} | {' | '.join(cells)} | {f.mean():.1f} ({seeds}) |")
    return "\n".join(lines)


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        er = np.asarray(r["episode_return"], float)
        st = np.asarray(r["env_steps"])[0]
        bins = np.linspace(0, st[-1], 21)
        idx = np.digitize(st, bins[1:-1])
        per_seed = np.array(
            [
                [
                    np.nanmean(np.where(idx == i, e, np.nan))
                    if np.any((idx == i) & ~np.isnan(e))
                    else np.nan
                    for i in range(20)
                ]
                for e in er
            ]
        )
        mean, std = np.nanmean(per_seed, 0), np.nanstd(per_seed, 0)
        x = 0.5 * (bins[1:] + bins[:-1])
        ax.plot(x, mean, label=name)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel("training episode return")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--scale",
        choices=common.SCALE_NAMES,
        default="cpu",
        help="smoke: seconds (tests); cpu: a 2-core CPU; paper: accelerators",
    )
    ap.add_argument("--train-envs", nargs="+", default=None)
    ap.add_argument("--test-env", default=None)
    ap.add_argument("--agents", type=int, default=None)
    ap.add_argument("--train-steps", type=int, default=None)
    ap.add_argument("--anneal-steps", type=int, default=None)
    ap.add_argument("--learning-starts", type=int, default=None)
    ap.add_argument("--windows", type=int, default=None)
    ap.add_argument(
        "--training",
        choices=TRAININGS,
        default="authors",
        help="authors: the authors' training details (metagenrl.Config's defaults); "
        "legacy: the first version's (metagenrl.LEGACY_TRAINING), as in the "
        "results measured before issue 33",
    )
    ap.add_argument("--test-steps", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--meta-seed", type=int, default=0)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument(
        "--objective",
        type=Path,
        default=None,
        help="a saved objective (.msgpack): skip meta-training",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: experiments/results/<scale>)",
    )
    args = ap.parse_args(argv)
    scale = SCALES[args.scale]
    defaults = {
        "train_envs": list(scale.envs),
        "seeds": scale.seeds,
        "train_steps": scale.steps[scale.envs[0]],
        **scale.extra,
        "out": HERE / "results" / args.scale,
    }
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    for k in ("agents", "train_steps", "test_steps", "seeds", "windows"):
        if getattr(args, k) < 1:
            ap.error(f"--{k.replace('_', '-')} must be >= 1, got {getattr(args, k)}")
    unknown = [e for e in [*args.train_envs, args.test_env] if e not in envs.names()]
    if unknown:
        ap.error(f"unknown env(s) {unknown}; allowed: {', '.join(envs.names())}")
    # Spans where no episode ended are NaN by design (nanmean of nothing).
    warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
    warnings.filterwarnings("ignore", "Degrees of freedom", RuntimeWarning)
    if args.test_env in args.train_envs:
        ap.error(
            f"--test-env {args.test_env!r} is one of --train-envs {args.train_envs}; "
            "the point is an env outside the training set"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
    report = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "device": str(jax.devices()[0]),
    }
    if args.objective is None:
        alpha, curves, sec = meta_train(args, log)
        (args.out / f"{NAME}_objective.msgpack").write_bytes(serialization.to_bytes(alpha))
        report["meta_train"] = {"return": curves, "seconds": sec}
    else:  # the objective's structure from a fresh one, its values from the file
        template = (
            metagenrl.make_train(
                dataclasses.replace(_base(args), num_agents=1), envs.make(args.train_envs[0])
            )
            .init(jax.random.PRNGKey(args.meta_seed))
            .params["objective"]
        )
        alpha = serialization.from_bytes(template, args.objective.read_bytes())
    results = meta_test(args, alpha, log)
    report["meta_test"] = results
    md = (
        f"Meta-test on `{args.test_env}` ({args.seeds} seeds, {args.test_steps} steps; "
        f"objective meta-trained on {', '.join(args.train_envs)}):\n\n"
        + table(results, args.test_steps)
    )
    print(md)
    (args.out / f"{NAME}.md").write_text(md + "\n")
    (args.out / f"{NAME}.json").write_text(json.dumps(_json_safe(compact(report))))
    plot(results, args.out / f"{NAME}.png", f"MetaGenRL meta-test on {args.test_env}")
    return report


if __name__ == "__main__":
    main()
