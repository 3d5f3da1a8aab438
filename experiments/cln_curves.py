"""CLN bilevel intrinsic rewards (``cln_bilevel_intrinsic_rewards.md``): Figures 4, 5 and 6
in kind, learning curves over seeds on ``pendulum`` and, at small scale, brax ``hopper``.

* Figure 4, the comparison: PPO vs LIRPG vs CLN (``ppo``, ``lirpg``, ``cln``). LIRPG runs
  on the dense, undelayed reward, as the CLN paper does, with the policy trained on the
  intrinsic reward alone (``r_ex_coef=0, r_in_coef=1``, its default);
* Figure 5, the ablation of CLN's hypergradient: ``Config.terms`` = ``"best-response"``
  (eq. 15, ``cln``), ``"lirpg"`` (eq. 11, ``cln-lirpg``) and ``"all"`` (eqs. 9 + 10 + 11,
  ``cln-all``);
* Figure 6: the intrinsic return (in env reward units) against the extrinsic return over
  training, for ``cln``.

Each (env, learner) trains ``--seeds`` seeds in one vmapped, jitted program. Configs:
pendulum uses the library's presets (``ppo`` / ``lirpg`` / ``cln.preset("pendulum")``,
which share one batch geometry: 16 envs x 128 steps, 10 epochs, 16 minibatches, lr 1e-3,
gamma 0.95, reward scale 0.1; the ablation learners replace ``terms``); hopper has no
presets, so every learner gets :data:`HOPPER_BATCH` (the paper's PPO settings at 4 env
copies x 512 steps) and otherwise its config's defaults. ``total_steps`` is ``--steps`` or
:data:`STEPS`. Writes to ``--out`` (default ``results/cln_curves``):

* ``.json``: per (env, learner) the per-update training episode return of every seed
  (``episode_return``, ``[seeds, updates]``, null where no episode ended), env steps,
  the final evaluation (32 episodes per seed), wall time (compile included) and config;
  CLN learners add ``intrinsic_return`` per seed and the seed means of ``reg_loss`` and
  the hypergradient norms (``hypergrad_norm``, ``hypergrad_eq15`` or ``hypergrad_eq9 /
  eq10 / eq11``);
* ``.png``: mean +- std over seeds of the training return against env steps; rows:
  comparison (Figure 4) and ablation (Figure 5), columns: envs;
* ``_intrinsic.png``: ``cln``'s intrinsic and extrinsic returns per env (Figure 6);
* ``.md``: the markdown table that is also printed.

    python experiments/cln_curves.py                                  # all, 4 seeds
    python experiments/cln_curves.py --envs pendulum --learners ppo lirpg cln
    python experiments/cln_curves.py --envs pendulum --learners cln cln-lirpg cln-all
    python experiments/cln_curves.py --envs hopper --merge   # add hopper to the results

Hopper is a brax (MJX) env and slow on CPU, about 1e3-1e4 env steps/s, so its default
budget is only 200k steps per seed (a GPU makes it much faster); the paper's curves run to
1M steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import metareward  # noqa: F401  (XLA flags before jax starts)

HERE = Path(__file__).resolve().parent
LEARNERS = ("ppo", "lirpg", "cln", "cln-lirpg", "cln-all")
#: Figure 4's comparison and Figure 5's ablation (the plot's two rows).
COMPARISON = ("ppo", "lirpg", "cln")
ABLATION = ("cln", "cln-lirpg", "cln-all")
#: ``Config.terms`` of each CLN learner.
CLN_TERMS = {"cln": "best-response", "cln-lirpg": "lirpg", "cln-all": "all"}
#: One colour per learner, the same in both rows of the plot.
COLORS = dict(zip(LEARNERS, ("C0", "C1", "C2", "C3", "C4"), strict=True))
ENVS = ("pendulum", "hopper")
#: One budget per env for every learner.
STEPS = {"pendulum": 1_000_000, "hopper": 200_000}
#: The batch every learner uses on hopper (``ppo.Config``, ``lirpg.Config``, ``cln.Config``).
HOPPER_BATCH = {"num_envs": 4, "num_steps": 512, "num_epochs": 10, "num_minibatches": 32,
                "learning_rate": 3e-4, "gamma": 0.99}
#: Fields the learners of one env must agree on (checked by :func:`build`).
SHARED_FIELDS = (*HOPPER_BATCH, "reward_scale")
#: Per-update CLN diagnostics stored as seed means.
DIAGNOSTICS = ("reg_loss", "hypergrad_norm", "hypergrad_eq15", "hypergrad_eq9",
               "hypergrad_eq10", "hypergrad_eq11")


def _config(learner: str, env_name: str):
    """``(module, config)`` of a learner on an env, before ``total_steps``."""
    from metareward.algos import cln, lirpg, ppo

    module = {"ppo": ppo, "lirpg": lirpg}.get(learner, cln)
    if env_name == "hopper":
        cfg = module.Config(**HOPPER_BATCH)
    else:
        cfg = module.preset(env_name)
    if learner == "lirpg":
        cfg = dataclasses.replace(cfg, r_ex_coef=0.0, r_in_coef=1.0)
    elif module is cln:
        cfg = dataclasses.replace(cfg, terms=CLN_TERMS[learner])
    return module, cfg


def build(learner: str, env_name: str, steps: int | None = None):
    """``(trainer, config)`` for a learner on an env (see the module docstring), with
    ``total_steps`` set to ``steps`` (default :data:`STEPS`). Raises if the learner's batch
    differs from the other learners' on that env."""
    from metareward import envs

    module, cfg = _config(learner, env_name)
    ref = _config("ppo", env_name)[1]
    diff = {k: (getattr(cfg, k), getattr(ref, k)) for k in SHARED_FIELDS
            if getattr(cfg, k) != getattr(ref, k)}
    if diff:
        raise ValueError(f"{learner} on {env_name}: batch differs from ppo's: {diff}")
    cfg = dataclasses.replace(cfg, total_steps=steps or STEPS[env_name])
    return module.make_train(cfg, envs.make(env_name)), cfg


def _listed(a: np.ndarray) -> list:
    """``a`` as nested lists with NaN as None (strict JSON)."""
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.isnan(a), None, a).tolist()


def _nanmean(a, axis=0) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        return np.nanmean(np.asarray(a, dtype=np.float64), axis=axis)


def run(learner: str, env_name: str, seeds: int, steps: int | None = None) -> dict:
    trainer, cfg = build(learner, env_name, steps)
    keys = jnp.stack([jax.random.PRNGKey(42 + i) for i in range(seeds)])
    t0 = time.perf_counter()
    state, metrics = jax.jit(jax.vmap(trainer.train))(keys)
    jax.block_until_ready(state)
    wall = time.perf_counter() - t0
    ev_keys = jnp.stack([jax.random.PRNGKey(1000 + i) for i in range(seeds)])
    evals = jax.jit(jax.vmap(lambda s, k: trainer.evaluate(s, k, 32)))(state, ev_keys)
    out = {
        "learner": learner,
        "env": env_name,
        "seeds": seeds,
        "env_steps": np.asarray(metrics["env_steps"][0]).tolist(),
        "episode_return": _listed(metrics["episode_return"]),
        "eval_return_per_seed": np.asarray(evals.mean(axis=1)).tolist(),
        "wall_s": wall,
        "config": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in vars(cfg).items()},
    }
    if "intrinsic_return" in metrics:
        out["intrinsic_return"] = _listed(metrics["intrinsic_return"])
    for k in DIAGNOSTICS:
        if k in metrics:
            out[k] = _listed(_nanmean(metrics[k]))
    return out


def smooth(y: np.ndarray, width: int) -> np.ndarray:
    """Trailing mean over ``width`` updates of each row, ignoring NaNs (updates where no
    episode ended)."""
    return np.stack([_nanmean(y[:, max(0, i - width + 1): i + 1], axis=1)
                     for i in range(y.shape[1])], axis=1)


def _curve(ax, x: np.ndarray, y, label: str, **kw) -> None:
    """Mean +- std over seeds of ``y`` ([seeds, updates], smoothed) against ``x``, at the
    updates where some seed's window has an episode end."""
    y = np.asarray(y, dtype=np.float64)
    ys = smooth(y, max(1, y.shape[1] // 50))
    m = _nanmean(ys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = np.nanstd(ys, axis=0)
    ok = np.isfinite(m)
    (line,) = ax.plot(x[ok], m[ok], label=label, **kw)
    ax.fill_between(x[ok], (m - sd)[ok], (m + sd)[ok], alpha=0.2, color=line.get_color())


def _envs_of(results: list[dict]) -> list[str]:
    return sorted({r["env"] for r in results}, key=ENVS.index)


def plot(results: list[dict], path: Path) -> None:
    """Training return against env steps: row 0 Figure 4's comparison, row 1 Figure 5's
    ablation, one column per env. A row with no learner run is left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs_ = _envs_of(results)
    rows = [(title, group) for title, group in
            (("PPO vs LIRPG vs CLN", COMPARISON), ("CLN hypergradient terms", ABLATION))
            if any(r["learner"] in group for r in results)]
    fig, axes = plt.subplots(len(rows), len(envs_), figsize=(5 * len(envs_), 3.6 * len(rows)),
                             squeeze=False)
    for (title, group), row in zip(rows, axes, strict=True):
        for ax, env_name in zip(row, envs_, strict=True):
            for r in results:
                if r["env"] == env_name and r["learner"] in group:
                    _curve(ax, np.asarray(r["env_steps"]), r["episode_return"], r["learner"],
                           color=COLORS[r["learner"]])
            ax.set_title(f"{env_name}: {title}")
            ax.set_xlabel("environment steps")
            ax.set_ylabel("average return")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_intrinsic(results: list[dict], path: Path, learner: str = "cln") -> bool:
    """Figure 6: ``learner``'s intrinsic and extrinsic (training) returns against env steps,
    one panel per env. Returns False (and writes nothing) if ``learner`` was not run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in results if r["learner"] == learner and "intrinsic_return" in r]
    if not runs:
        return False
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.6), squeeze=False)
    for ax, r in zip(axes[0], runs, strict=True):
        x = np.asarray(r["env_steps"])
        _curve(ax, x, r["episode_return"], "extrinsic return")
        _curve(ax, x, r["intrinsic_return"], "intrinsic return")
        ax.set_title(f"{r['env']}: {learner}")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("average return")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def table(results: list[dict]) -> str:
    lines = ["| env | learner | env steps | final eval return (mean +- std over seeds) | "
             "per seed | wall s |", "|---|---|---|---|---|---|"]
    for r in results:
        ev = np.asarray(r["eval_return_per_seed"])
        lines.append(f"| {r['env']} | {r['learner']} | {r['env_steps'][-1]:,} | "
                     f"{ev.mean():.1f} +- {ev.std():.1f} | {np.round(ev, 1).tolist()} | "
                     f"{r['wall_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--envs", nargs="+", default=list(ENVS), choices=ENVS)
    ap.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=LEARNERS)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=None,
                    help=f"env steps per seed for every run (default: {STEPS})")
    ap.add_argument("--out", default=str(HERE / "results" / "cln_curves"))
    ap.add_argument("--merge", action="store_true",
                    help="keep the (env, learner) runs of an existing --out JSON that this "
                         "call does not rerun (figures and table then show both)")
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = []
    if args.merge and out.with_suffix(".json").exists():
        rerun = {(e, ln) for e in args.envs for ln in args.learners}
        kept = [r for r in json.loads(out.with_suffix(".json").read_text())
                if (r["env"], r["learner"]) not in rerun]
    results = []
    for env_name in args.envs:
        for learner in args.learners:
            r = run(learner, env_name, args.seeds, args.steps)
            results.append(r)
            ev = np.asarray(r["eval_return_per_seed"])
            print(f"{env_name:9} {learner:9} eval {ev.mean():8.2f} +- {ev.std():6.2f} "
                  f"(seeds {np.round(ev, 1).tolist()}) {r['wall_s']:.0f} s", file=sys.stderr,
                  flush=True)
    order = {(e, ln): i for i, (e, ln) in enumerate(
        (e, ln) for e in ENVS for ln in LEARNERS)}
    results = sorted(kept + results, key=lambda r: order[(r["env"], r["learner"])])
    out.with_suffix(".json").write_text(json.dumps(results) + "\n")
    written = [out.with_suffix(".json"), out.with_suffix(".png"), out.with_suffix(".md")]
    plot(results, written[1])
    intrinsic = out.with_name(out.name + "_intrinsic.png")
    if plot_intrinsic(results, intrinsic):
        written.append(intrinsic)
    md = table(results)
    written[2].write_text(md + "\n")
    print(md)
    print("written " + ", ".join(map(str, written)))


if __name__ == "__main__":
    main()
