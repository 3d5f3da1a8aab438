"""MetaGenRL (``metagenrl_learned_objectives.md``) ablations, section 5.2.2 (Figure 5: the
objective's parametrisation) and section 5.2.3 (Figure 6: several inner gradient steps
on ``phi``), at small scale: for each variant, meta-train an objective on some envs, then
meta-test it (Algorithm 2: fresh agents, the objective frozen, no DDPG annealing) on a
test env; the objective's initialisation is meta-tested once as a reference.

Variants (``--variants`` picks a subset; ``metagenrl.Config`` fields in brackets):

* ``full``: the objective of Figure 2, inputs ``r_t, t / T, V_{t+1}, V_t`` and the actions;
* ``no-t``: without the time ``t / T`` (``use_time=False``);
* ``no-V``: without any value estimate, neither ``V_t`` nor ``V_{t+1}``, the paper's
  "does not receive any information about the value estimates" (``use_value=False``, which
  drops both, and ``use_next_value=False``);
* ``no-V_{t+1}``: without ``V_{t+1}``, keeping ``V_t`` (``use_next_value=False``);
* ``inner-3``, ``inner-5``: 3 and 5 policy steps inside the meta-gradient (eq. 8,
  ``inner_steps``); the meta-gradient's batch is ``inner_steps + 1`` disjoint parts of
  ``--windows`` windows each (the authors' training, ``--training authors``, the
  default). With ``--training legacy`` (the first version's training,
  ``metagenrl.LEGACY_TRAINING``) one batch of ``--windows`` windows is split into the
  parts, so it is rounded up to a multiple of ``inner_steps + 1`` (20 -> 20 for 3 steps,
  24 for 5; ``full`` and the input ablations then use ``--windows`` rounded up to a
  multiple of 2). Results measured before issue 33 used the first version's training.

Every variant meta-trains with the same envs, agents, steps and meta-seed(s), from the
same initial objective (its parameter shapes do not depend on the input flags: a dropped
input is a zero column). Each is meta-tested with the MetaGenRL agent config of its
variant (a dropped input stays dropped), ``--seeds`` seeds per meta-trained objective; the
number of inner steps only matters for meta-training, so the ``inner-*`` objectives are
meta-tested exactly like ``full`` (one policy step per batch of ``--windows`` windows).
``initial`` meta-tests each meta-seed's initial objective with ``full``'s inputs.
Meta-training and meta-testing are the functions of ``metagenrl_heldout.py`` (64x64 nets,
20-step windows, TD3 critics); ``--meta-seeds K`` meta-trains K objectives per variant
(meta-seeds ``--meta-seed`` .. ``--meta-seed + K - 1``) and pools their meta-test runs.

Writes to ``--out``:

* ``metagenrl_ablations_<variant>_<meta-seed>_objective.msgpack``: each meta-trained
  objective (``flax.serialization``; ``no-V_{t+1}`` as ``no-V_t1``);
* ``metagenrl_ablations.json``: ``meta_test``: per method (the variants and ``initial``)
  the training episode returns per run as ``[env step, return]`` where an episode ended,
  the final deterministic return per run (10 episodes) and the meta-seed of each run;
  ``meta_train``: per variant the meta-training return per env (mean over the agents whose
  episode ended) as ``[update, return]`` per meta-seed and the seconds; the variants'
  configs, settings, wall times and device;
* ``metagenrl_ablations.md`` (printed too): per method the mean meta-test training return
  per span of env steps, the final return, and the meta-training return at the end (mean
  of the last tenth of the episodes that ended, per env);
* ``metagenrl_ablations.png``: Figure 5's two panels, (a) the meta-training return per
  variant against env steps per agent, one panel per training env (mean +- std of the
  population's episode returns in each of 20 spans), (b) the meta-test return per method
  against env steps (mean +- std over runs).

Scales (``--scale``; every option below overrides its scale's value):

* ``smoke``: 2 agents on ``pendulum`` for 600 steps, meta-test on
  ``mountaincar-continuous`` (no episode ends in 400 steps: panel (b) stays empty), 2
  seeds x 400 steps, two variants (``no-V_{t+1}``, ``inner-3``: an input ablation and
  the several-inner-steps path; all six took 8.4 minutes on one core with XLA's fast
  compilation, ``tests/fast_compile.py``, thirteen programs to compile: six
  meta-trainings, 45-60 s each, and seven meta-tests, ~25 s each);
* ``cpu``: 2 agents (one per env) on ``pendulum`` and ``mountaincar-continuous`` for 6k
  steps each (random actions for 1.5k, DDPG annealed over 3k: from step 0 with the
  authors' training, after the 1.5k with ``--training legacy``), meta-test on ``pendulum`` as
  Figure 5b tests on a meta-training env (fresh agents), 2 seeds x 8k steps, all six
  variants. Compiling dominates: ~90 s per meta-training program (measured on one core)
  times six; brax ``inverted-pendulum`` as test env (as in ``metagenrl_heldout.py``)
  would add ~2 minutes of compiling to each of the seven meta-tests. Measured
  (2026-11-24, ``taskset -c 1``, the other core busy): 24.4 minutes;
* ``paper``: Figure 5's setting: 20 agents for 600k steps each on ``halfcheetah`` and
  ``walker2d`` (standing in for the paper's *Lunar*, not among our envs), meta-test on
  ``halfcheetah`` as Figure 5b (fresh agents in a meta-training env), 6 meta-seeds x 2
  seeds x 1M steps, 100 windows per batch (Table 4's batch size; with ``--training legacy``
  102 for ``inner-5``); on accelerators. Figure 6's out-of-distribution test:
  ``--test-env hopper --meta-seeds 3``.

    python experiments/metagenrl_ablations.py                          # --scale cpu
    python experiments/metagenrl_ablations.py --variants full no-V inner-3
    python experiments/metagenrl_ablations.py --scale paper --test-env hopper --meta-seeds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import jax
import metagenrl_heldout as heldout
import numpy as np
from flax import serialization

from metareward import envs
from metareward.algos import metagenrl

HERE = Path(__file__).resolve().parent
NAME = "metagenrl_ablations"
#: Variant name -> the ``metagenrl.Config`` fields it changes.
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "no-t": {"use_time": False},
    "no-V": {"use_value": False, "use_next_value": False},
    "no-V_{t+1}": {"use_next_value": False},
    "inner-3": {"inner_steps": 3},
    "inner-5": {"inner_steps": 5},
}
#: What a default run meta-tests: every variant, then the initial objective.
METHODS = (*VARIANTS, "initial")
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
            meta_seeds=1,
            variants=["no-V_{t+1}", "inner-3"],
        ),
    ),
    "cpu": common.Scale(
        envs=("pendulum", "mountaincar-continuous"),
        seeds=2,
        steps=dict.fromkeys(("pendulum", "mountaincar-continuous"), 6_000),
        extra=dict(
            test_env="pendulum",
            agents=2,
            test_steps=8_000,
            learning_starts=1_500,
            anneal_steps=3_000,
            windows=20,
            meta_seeds=1,
        ),
    ),
    "paper": common.Scale(
        envs=("halfcheetah", "walker2d"),
        seeds=2,
        steps=dict.fromkeys(("halfcheetah", "walker2d"), 600_000),
        extra=dict(
            test_env="halfcheetah",
            agents=20,
            test_steps=1_000_000,
            learning_starts=10_000,
            anneal_steps=10_000,
            windows=100,
            meta_seeds=6,
        ),
    ),
}


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def configs(args: argparse.Namespace, variant: str) -> tuple[metagenrl.Config, metagenrl.Config]:
    """``(meta-train, meta-test)`` MetaGenRL configs of ``variant``: heldout's base config
    (``--training``) with the variant's fields; with ``meta_batch="split"`` (``--training
    legacy``) windows per batch rounded up to a multiple of ``inner_steps + 1``. The
    meta-test config keeps the input flags but takes one inner step (Algorithm 2 never
    uses it), so every ``inner-*`` meta-tests like ``full``."""
    change = VARIANTS[variant]
    inner = change.get("inner_steps", 1)
    base = heldout._base(args)
    split = base.meta_batch == "split"
    rounded = lambda k: _round_up(args.windows, k) if split else args.windows
    test = dataclasses.replace(
        base, batch_size=rounded(2), **{k: v for k, v in change.items() if k != "inner_steps"}
    )
    train = dataclasses.replace(test, inner_steps=inner, batch_size=rounded(inner + 1))
    return train, test


def _slug(variant: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "", variant.replace("+", ""))


def _pool(runs: list[dict], meta_seeds: list[int]) -> dict:
    """One method's meta-test results of several meta-seeds as one: runs concatenated,
    seconds summed, each run's meta-seed in ``meta_seed``."""
    out = {
        k: [x for r in runs for x in r[k]] for k in ("episode_return", "env_steps", "final_return")
    }
    out["meta_seed"] = [s for r, s in zip(runs, meta_seeds, strict=True) for _ in r["final_return"]]
    out["seconds"] = float(sum(r["seconds"] for r in runs))
    return out


def end_return(curve: Any) -> float:
    """Mean of the last tenth (at least one) of a meta-training curve's finite values
    (updates where an episode ended); NaN if none ended."""
    v = np.asarray(curve, float)
    v = v[np.isfinite(v)]
    return float(v[-max(1, len(v) // 10) :].mean()) if len(v) else float("nan")


def table(results: dict, meta_train: dict, train_envs: list[str], steps: int) -> str:
    """:func:`metagenrl_heldout.table` (meta-test return per span of env steps, final
    return per run) plus a column: the meta-training return at the end per env."""
    lines = heldout.table(results, steps).split("\n")
    lines[0] += f" meta-train end ({' / '.join(train_envs)}) |"
    lines[1] += "---:|"
    for i, name in enumerate(results, start=2):
        cell = "-"
        if name in meta_train:
            ends = [
                np.nanmean([end_return(c) for c in meta_train[name]["return"][e]])
                for e in train_envs
            ]
            cell = " / ".join("-" if np.isnan(x) else f"{x:.1f}" for x in ends)
        lines[i] += f" {cell} |"
    return "\n".join(lines)


def _label(name: str) -> str:
    return name.replace("V_{t+1}", "$V_{t+1}$")


def plot(results: dict, meta_train: dict, train_envs: list[str], test_env: str, path: Path) -> None:
    """Figure 5: (a) meta-training return per variant, one panel per training env
    (mean +- std of the per-update population returns in 20 spans, meta-seeds pooled);
    (b) meta-test return per method against env steps (mean +- std over runs)."""
    fig, axes = common.grid(1, len(train_envs) + 1, 5.0, 3.8)
    axes = axes[0]
    colors = {name: f"C{i}" for i, name in enumerate(METHODS)}
    colors["initial"] = "0.4"
    for ax, env_name in zip(axes[:-1], train_envs, strict=True):
        for name, mt in meta_train.items():
            curves = [np.asarray(c, float) for c in mt["return"][env_name]]
            n = len(curves[0])
            bins = np.linspace(0, n, 21).astype(int)
            x, mean, std = [], [], []
            for a, b in itertools.pairwise(bins):
                v = np.concatenate([c[a:b] for c in curves])
                v = v[np.isfinite(v)]
                if len(v):
                    x.append(0.5 * (a + b))
                    mean.append(v.mean())
                    std.append(v.std())
            x, mean, std = map(np.asarray, (x, mean, std))
            ax.plot(x, mean, label=_label(name), color=colors[name])
            ax.fill_between(x, mean - std, mean + std, alpha=0.2, color=colors[name])
        ax.set_title(f"(a) meta-training on {env_name}")
        ax.set_xlabel("env steps per agent")
        ax.set_ylabel("episode return (population)")
        ax.legend(fontsize=8)
    ax = axes[-1]
    if not any(np.isfinite(np.asarray(r["episode_return"], float)).any() for r in results.values()):
        ax.text(0.5, 0.5, "no meta-test episode ended", ha="center", transform=ax.transAxes)
    for name, r in results.items():
        common.curve(
            ax,
            r["env_steps"][0],
            r["episode_return"],
            _label(name),
            color=colors[name],
            linestyle="--" if name == "initial" else "-",
        )
    ax.set_title(f"(b) meta-test on {test_env}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("training episode return")
    ax.legend(fontsize=8)
    common.save(fig, path)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--scale",
        choices=common.SCALE_NAMES,
        default="cpu",
        help="smoke: minutes (tests); cpu: one CPU core, ~26 min; paper: accelerators",
    )
    ap.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help=f"variants to run (default all: {' '.join(VARIANTS)})",
    )
    ap.add_argument("--train-envs", nargs="+", default=None)
    ap.add_argument("--test-env", default=None)
    ap.add_argument("--agents", type=int, default=None)
    ap.add_argument("--train-steps", type=int, default=None)
    ap.add_argument("--anneal-steps", type=int, default=None)
    ap.add_argument("--learning-starts", type=int, default=None)
    ap.add_argument(
        "--windows",
        type=int,
        default=None,
        help="windows per objective batch (rounded up per variant)",
    )
    ap.add_argument(
        "--training",
        choices=heldout.TRAININGS,
        default="authors",
        help="authors: the authors' training details (metagenrl.Config's "
        "defaults); legacy: the first version's (metagenrl.LEGACY_TRAINING)",
    )
    ap.add_argument("--test-steps", type=int, default=None)
    ap.add_argument(
        "--seeds", type=int, default=None, help="meta-test seeds per meta-trained objective"
    )
    ap.add_argument(
        "--meta-seeds", type=int, default=None, help="objectives meta-trained per variant"
    )
    ap.add_argument("--meta-seed", type=int, default=0, help="the first meta-seed")
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
        "variants": list(VARIANTS),
        **scale.extra,
        "out": HERE / "results" / args.scale,
    }
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    # Everything checked before anything is built or compiled, with the allowed values.
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; allowed: {', '.join(VARIANTS)}")
    args.variants = list(dict.fromkeys(args.variants))
    for k in ("agents", "train_steps", "test_steps", "seeds", "windows", "meta_seeds"):
        if getattr(args, k) < 1:
            raise SystemExit(f"--{k.replace('_', '-')} must be >= 1, got {getattr(args, k)}")
    unknown = [e for e in [*args.train_envs, args.test_env] if e not in envs.names()]
    if unknown:
        raise SystemExit(f"unknown env(s) {unknown}; allowed: {', '.join(envs.names())}")
    if args.agents < len(args.train_envs):
        raise SystemExit(
            f"--agents {args.agents} is fewer than the {len(args.train_envs)} "
            "--train-envs; every env needs at least one agent"
        )
    # Spans where no episode ended are NaN by design (nanmean of nothing).
    warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
    warnings.filterwarnings("ignore", "Degrees of freedom", RuntimeWarning)
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    stamp = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
    meta_seeds = list(range(args.meta_seed, args.meta_seed + args.meta_seeds))
    with_seed = lambda s, methods: argparse.Namespace(
        **{**vars(args), "meta_seed": s, "methods": methods}
    )
    report: dict[str, Any] = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "device": str(jax.devices()[0]),
        "variants": {},
        "meta_train": {},
    }
    results: dict[str, dict] = {}
    for variant in args.variants:
        train_cfg, test_cfg = configs(args, variant)
        report["variants"][variant] = {
            "changes": VARIANTS[variant],
            "train_windows": train_cfg.batch_size,
            "test_windows": test_cfg.batch_size,
        }
        log: Callable[[str], None] = lambda msg, v=variant: stamp(f"{v}: {msg}")
        curves, seconds, runs, files = [], [], [], []
        for s in meta_seeds:
            alpha, c, sec = heldout.meta_train(with_seed(s, []), log, train_cfg)
            log(f"meta-seed {s}: meta-trained in {sec:.0f} s")
            f = args.out / f"{NAME}_{_slug(variant)}_{s}_objective.msgpack"
            f.write_bytes(serialization.to_bytes(alpha))
            curves.append(c)
            seconds.append(sec)
            files.append(f.name)
            r = heldout.meta_test(with_seed(s, ["meta-trained"]), alpha, log, test_cfg)
            runs.append(r["meta-trained"])
        results[variant] = _pool(runs, meta_seeds)
        report["meta_train"][variant] = {
            "return": {e: [c[e] for c in curves] for e in args.train_envs},
            "seconds": seconds,
            "objective_files": files,
        }
    _, full_test = configs(args, "full")
    results["initial"] = _pool(
        [
            heldout.meta_test(
                with_seed(s, ["initial"]), None, lambda msg: stamp(f"initial: {msg}"), full_test
            )["initial"]
            for s in meta_seeds
        ],
        meta_seeds,
    )
    report["meta_test"] = results
    report["seconds"] = time.time() - t_start
    md = (
        f"MetaGenRL ablations (Figure 5, 6): meta-test on `{args.test_env}` "
        f"({len(meta_seeds)} meta-seed(s) x {args.seeds} seeds, {args.test_steps} steps; "
        f"objectives meta-trained by {args.agents} agents on "
        f"{', '.join(args.train_envs)}, {args.train_steps} steps each; "
        f"{report['seconds'] / 60:.1f} min on {report['device']}):\n\n"
        + table(results, report["meta_train"], args.train_envs, args.test_steps)
    )
    out = heldout.compact({"meta_test": results})
    out = {
        **report,
        "meta_test": out["meta_test"],
        "meta_train": {
            v: {
                **mt,
                "return": {e: [heldout._ended(c) for c in cs] for e, cs in mt["return"].items()},
            }
            for v, mt in report["meta_train"].items()
        },
    }
    common.write(
        args.out,
        NAME,
        heldout._json_safe(out),
        md,
        {"": lambda p: plot(results, report["meta_train"], args.train_envs, args.test_env, p)},
    )
    return report


if __name__ == "__main__":
    main()
