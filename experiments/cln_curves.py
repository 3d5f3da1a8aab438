"""CLN bilevel intrinsic rewards (``cln_bilevel_intrinsic_rewards.md``): Figures 4, 5 and 6
in kind, learning curves over seeds.

* Figure 4, the comparison: PPO vs LIRPG vs CLN (``ppo``, ``lirpg``, ``cln``). LIRPG runs
  on the dense, undelayed reward, as the CLN paper does, with the policy trained on the
  intrinsic reward alone (``r_ex_coef=0, r_in_coef=1``, its default);
* Figure 5, the ablation of CLN's hypergradient: ``Config.terms`` = ``"best-response"``
  (eq. 15, ``cln``, the paper's 1TERM), ``"lirpg"`` (eq. 11, ``cln-lirpg``) and ``"all"``
  (eqs. 9 + 10 + 11, ``cln-all``, 3TERMS); and the control ``cln-nohyper``, ``cln`` with
  the hypergradient off (``hypergrad_coef=0``: eta trains on eq. 21 alone), which tells
  whether the hypergradient changes anything at all;
* Figure 6: the intrinsic return (in env reward units) against the extrinsic return over
  training, for ``cln``.

Each (env, learner) trains its seeds in one vmapped, jitted program. Every learner on an
env shares one batch geometry (checked by :func:`build`).

Scales (``--scale``):

* ``smoke``: ``pendulum``, 2 seeds, 2 updates of every learner;
* ``cpu``: ``pendulum``, 1M steps, 4 seeds, all six learners, with the library's presets
  (``ppo`` / ``lirpg`` / ``cln.preset("pendulum")``: 16 envs x 128 steps, 10 epochs,
  16 minibatches, lr 1e-3, gamma 0.95, reward scale 0.1; 32 minutes on one core with
  the other busy, ~20 on an idle machine);
* ``mujoco-cpu``: the paper's setting at its budget on one CPU core: MuJoCo (brax,
  ``backend=common.MUJOCO_CPU_BACKEND``) ``hopper`` and ``walker2d``, 1M steps, 5 seeds,
  the paper's batch (:data:`PAPER_BATCH`), ``ppo``, ``lirpg``, ``cln`` and the control
  ``cln-nohyper`` (Figure 5's other terms are left out: each CLN run costs about an hour
  here). Each run trains in a resumable run directory
  (``runs/experiments/mujoco-cpu/cln_curves/<env>-<learner>``); the same command
  continues an interrupted grid;
* ``paper``: MuJoCo (brax) ``hopper``, ``walker2d``, ``halfcheetah``, ``ant``, 1M steps,
  5 seeds, the paper's batch (:data:`PAPER_BATCH`: 4 env copies x 2048 steps); the
  ablation on ``hopper`` only, as the paper's Figure 5.

Writes to ``--out``:

* ``cln_curves.json``: per (env, learner) the per-update training episode return of
  every seed (``episode_return``, ``[seeds, updates]``, null where no episode ended), env
  steps, the final evaluation (32 episodes per seed), wall time (compile included) and
  config; CLN learners add ``intrinsic_return`` per seed and per-seed ``reg_loss`` and
  hypergradient norms (``hypergrad_norm``, ``hypergrad_eq15`` or ``hypergrad_eq9 / eq10 /
  eq11``);
* ``cln_curves.png``: mean +- std over seeds of the training return against env steps;
  rows: comparison (Figure 4) and ablation (Figure 5), columns: envs;
* ``cln_curves_intrinsic.png``: ``cln``'s intrinsic and extrinsic returns (Figure 6);
* ``cln_curves.md``: the table that is also printed.

    python experiments/cln_curves.py                                  # --scale cpu
    python experiments/cln_curves.py --learners ppo lirpg cln
    python experiments/cln_curves.py --scale paper --envs hopper --merge
    taskset -c 1 python experiments/cln_curves.py --scale mujoco-cpu      # hours; resumable
"""

from __future__ import annotations

import dataclasses

import common

NAME = "cln_curves"
LEARNERS = ("ppo", "lirpg", "cln", "cln-lirpg", "cln-all", "cln-nohyper")
#: Figure 4's comparison and Figure 5's ablation (the plot's two rows).
COMPARISON = ("ppo", "lirpg", "cln")
ABLATION = ("cln", "cln-lirpg", "cln-all", "cln-nohyper")
#: ``Config.terms`` of each CLN learner.
CLN_TERMS = {"cln": "best-response", "cln-lirpg": "lirpg", "cln-all": "all",
             "cln-nohyper": "best-response"}
#: CLN learners with the hypergradient off (``hypergrad_coef=0``), the control.
NO_HYPER = ("cln-nohyper",)
#: One colour per learner, the same in both rows of the plot.
COLORS = dict(zip(LEARNERS, ("C0", "C1", "C2", "C3", "C4", "C5"), strict=True))
MUJOCO = ("hopper", "walker2d", "halfcheetah", "ant")
MUJOCO_CPU = ("hopper", "walker2d")
#: The paper's batch for every learner on the MuJoCo envs (section 5, "Experimental
#: Setup": 4 env copies x 2048 steps; PPO's MuJoCo epochs, minibatches and lr).
PAPER_BATCH = {"num_envs": 4, "num_steps": 2048, "num_epochs": 10, "num_minibatches": 32,
               "learning_rate": 3e-4, "gamma": 0.99}
#: Fields the learners of one env must agree on (checked by :func:`build`).
SHARED_FIELDS = (*PAPER_BATCH, "reward_scale")
#: Per-update CLN diagnostics kept per seed.
DIAGNOSTICS = ("intrinsic_return", "reg_loss", "reg_explained", "adv_corr", "hypergrad_norm",
               "hypergrad_eq15", "hypergrad_eq9", "hypergrad_eq10", "hypergrad_eq11")
SCALES = {
    "smoke": common.Scale(envs=("pendulum",), seeds=2, steps={"pendulum": 4096},
                          extra={"ablation_envs": ("pendulum",)}),
    "cpu": common.Scale(envs=("pendulum",), seeds=4, steps={"pendulum": 1_000_000},
                        extra={"ablation_envs": ("pendulum",)}),
    "mujoco-cpu": common.Scale(
        envs=MUJOCO_CPU, seeds=5, steps=dict.fromkeys(MUJOCO_CPU, 1_000_000), run_dirs=True,
        extra={"ablation_envs": MUJOCO_CPU, "learners": (*COMPARISON, *NO_HYPER),
               "env_kwargs": {"backend": common.MUJOCO_CPU_BACKEND}}),
    "paper": common.Scale(envs=MUJOCO, seeds=5, steps=dict.fromkeys(MUJOCO, 1_000_000),
                          extra={"ablation_envs": ("hopper",)}),
}


def _config(learner: str, env_name: str):
    """``(module, config)`` of a learner on an env, before ``total_steps``: the library's
    preset for small envs, :data:`PAPER_BATCH` on MuJoCo envs."""
    from metareward.algos import cln, lirpg, ppo

    module = {"ppo": ppo, "lirpg": lirpg}.get(learner, cln)
    if env_name in MUJOCO:
        cfg = module.Config(**PAPER_BATCH)
    else:
        cfg = module.preset(env_name)
    if learner == "lirpg":
        cfg = dataclasses.replace(cfg, r_ex_coef=0.0, r_in_coef=1.0)
    elif module is cln:
        cfg = dataclasses.replace(cfg, terms=CLN_TERMS[learner])
        if learner in NO_HYPER:
            cfg = dataclasses.replace(cfg, hypergrad_coef=0.0)
    return module, cfg


def build(learner: str, env_name: str, steps: int | None = None,
          env_kwargs: dict | None = None) -> common.Run:
    """The run of a learner on an env (see the module docstring), with ``total_steps``
    set to ``steps`` (the config's own if None). Raises if the learner's batch differs
    from PPO's on that env."""
    cfg = _config(learner, env_name)[1]
    ref = _config("ppo", env_name)[1]
    diff = {k: (getattr(cfg, k), getattr(ref, k)) for k in SHARED_FIELDS
            if getattr(cfg, k) != getattr(ref, k)}
    if diff:
        raise ValueError(f"{learner} on {env_name}: batch differs from ppo's: {diff}")
    algo = {"ppo": "ppo", "lirpg": "lirpg"}.get(learner, "cln")
    return common.Run(algo, env_name, common.with_steps(cfg, steps), dict(env_kwargs or {}))


def _envs_of(results: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["env"] for r in results))


def plot(results: list[dict], path) -> None:
    """Training return against env steps: row 0 Figure 4's comparison, row 1 Figure 5's
    ablation, one column per env. A row with no learner run is left out."""
    envs_ = _envs_of(results)
    rows = [(title, group) for title, group in
            (("PPO vs LIRPG vs CLN", COMPARISON), ("CLN hypergradient terms", ABLATION))
            if any(r["learner"] in group for r in results)]
    fig, axes = common.grid(len(rows), len(envs_))
    for (title, group), row in zip(rows, axes, strict=True):
        for ax, env_name in zip(row, envs_, strict=True):
            for r in results:
                if r["env"] == env_name and r["learner"] in group:
                    common.curve(ax, r["env_steps"], r["episode_return"], r["learner"],
                                 color=COLORS[r["learner"]])
            ax.set_title(f"{env_name}: {title}")
            ax.set_xlabel("environment steps")
            ax.set_ylabel("average return")
            ax.legend(fontsize=8)
    common.save(fig, path)


def plot_intrinsic(results: list[dict], path, learner: str = "cln") -> None:
    """Figure 6: ``learner``'s intrinsic and extrinsic (training) returns against env
    steps, one panel per env (an empty panel if ``learner`` was not run)."""
    runs = [r for r in results if r["learner"] == learner and "intrinsic_return" in r]
    fig, axes = common.grid(1, max(1, len(runs)))
    for ax, r in zip(axes[0], runs, strict=False):
        common.curve(ax, r["env_steps"], r["episode_return"], "extrinsic return")
        common.curve(ax, r["env_steps"], r["intrinsic_return"], "intrinsic return")
        ax.set_title(f"{r['env']}: {learner}")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("average return")
        ax.legend(fontsize=8)
    common.save(fig, path)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = common.parser(__doc__, SCALES, resumable=True)
    ap.add_argument("--learners", nargs="+", default=None, choices=LEARNERS,
                    help="(default: the scale's; all six except at mujoco-cpu)")
    args = ap.parse_args(argv)
    scale = common.resolve(args, SCALES)
    learners = args.learners or scale.extra.get("learners", LEARNERS)
    todo = [(e, ln) for e in scale.envs for ln in learners
            if ln in COMPARISON or e in scale.extra["ablation_envs"]]
    env_kwargs = scale.extra.get("env_kwargs", {})
    jobs = [({"env": e, "learner": ln},
             lambda e=e, ln=ln: build(ln, e, scale.steps[e], env_kwargs)) for e, ln in todo]
    if args.finished_only:
        jobs = common.finished_jobs(jobs, args.runs / NAME)
    kept = common.kept_runs(args.out / f"{NAME}.json", ("env", "learner"), jobs, scale.seeds,
                            lambda r: build(r["learner"], r["env"], r["config"]["total_steps"],
                                            env_kwargs)) if args.merge else []

    def write(results: list[dict]) -> None:
        common.write(args.out, NAME, results, common.eval_table(results),
                     {"": lambda p: plot(results, p),
                      "_intrinsic": lambda p: plot_intrinsic(results, p)})

    results = common.train_all(jobs, scale.seeds, keep=DIAGNOSTICS, kept=kept,
                               learners=LEARNERS,
                               runs=args.runs and args.runs / NAME, after_each=write)
    if not scale.run_dirs:
        write(results)
    return results


if __name__ == "__main__":
    main()
