"""EPG (``epg_evolved_policy_gradients.md``) Figures 4/5 in kind: on held-out random
tasks, fresh agents trained by the evolved loss (alpha = 0, no reward input) against the
same loss at initialisation and PPO.

The loss is meta-trained (or loaded) by ``epg_common``. On each held-out task (each with
its physics pinned) and for each agent seed:

* ``evolved``: ``trainer.meta_test`` with the evolved loss of each meta-seed: K updates of
  M steps (the inner budget K x M), no reward seen;
* ``initial``: the same with each meta-seed's loss at initialisation;
* ``zero``: the same with a loss of all zeros (no gradient, so no update: the fresh
  random policy, the no-learning level);
* ``ppo``: PPO (``ppo.preset(env)``) at equal samples, K x M steps, with EPG's batch:
  one env, an update every M steps (K updates), 2 minibatches of M/2 steps, the preset's
  10 epochs (the paper's PPO also updated every 128 steps, EPG's M);
* ``ppo-large``: PPO with the preset unchanged (pendulum: 16 envs x 128 steps per update)
  at ``--ppo-factor`` (25) times the budget, a reference.

PPO sees rewards; it has no meta-seed (its runs are tasks x agents). Final return: mean of
``num_eval`` fresh episodes (10; stochastic policy) on the run's task. Writes
``epg_vs_ppo.json`` (per run: training return per update, NaN/None where no episode
ended, and the final return; the meta-training curves; settings, wall times, device),
section 4.3's ``spearman_ppo`` (the rank correlation of the loss's and PPO's gradients
over the meta-test's updates, per meta-seed), ``epg_vs_ppo.png`` (return against env
steps, mean +- std over runs: all held-out tasks, then one panel per task (up to 4),
then PPO's large budget), ``epg_vs_ppo_meta.png`` (meta-training: members' fitness and
final return per epoch, alpha) and ``epg_vs_ppo.md``.

Scales (``--scale``, see ``epg_common``): ``smoke`` (seconds), ``cpu`` (random pendulum,
the slow test's budget; 6-9 minutes on one core with the other busy, 4-5.5 of them
meta-training, which the other two EPG scripts then load from the cache), ``paper``
(random hopper, the paper's config).

    python experiments/epg_vs_ppo.py                          # --scale cpu
    python experiments/epg_vs_ppo.py --seeds 3 --retrain
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import common
import epg_common
import numpy as np

NAME = "epg_vs_ppo"
SCALES = epg_common.SCALES
METHODS = ("evolved", "initial", "zero", "ppo", "ppo-large")
LABELS = {"evolved": "EPG, evolved loss (no reward)", "initial": "EPG, loss at initialisation",
          "zero": "zero loss (no learning)", "ppo": "PPO, equal samples",
          "ppo-large": "PPO, larger budget"}
COLORS = {"evolved": "C3", "initial": "0.5", "zero": "C2", "ppo": "k", "ppo-large": "C0"}


def ppo_configs(setup: epg_common.Setup, factor: int):
    """``(equal, large)`` PPO configs: EPG's batch at its budget, and the preset at
    ``factor`` times the budget (at least one of its batches)."""
    from metareward.algos import ppo

    c = setup.config
    budget = c.inner_updates * c.steps_per_update
    base = ppo.preset(setup.env_name)
    equal = dataclasses.replace(base, num_envs=1, num_steps=c.steps_per_update,
                                num_minibatches=2, total_steps=budget)
    batch = base.num_envs * base.num_steps
    large = dataclasses.replace(base, total_steps=max(batch, factor * budget // batch * batch))
    return equal, large


def ppo_runs(cfg, env, tasks, keys, num_eval: int) -> dict:
    """PPO with ``cfg`` on every (task, agent): ``episode_return [T, G, updates]``,
    ``env_steps [updates]``, ``final_return [T, G]``. The task is pinned by resetting the
    trainer's envs on it (every copy, auto-resets keep it) and evaluating on it."""
    import jax

    from metareward.algos import onpolicy, ppo
    from metareward.rl.rollout import evaluate_episodes

    tr = ppo.make_train(cfg, env)
    venv = onpolicy.batched_env(cfg, env)  # as the learner steps it
    ep_len = int(env.spec.episode_length)

    def run(task, key):
        k_train, k_env, k_eval = jax.random.split(key, 3)
        s = tr.init(k_train)
        s = s.replace(env_state=venv.reset(k_env, task=task))
        s, m = jax.lax.scan(lambda s, _: tr.update(s), s, None, length=tr.num_updates)
        act = lambda obs, k: tr.act(s, obs, k)
        final = evaluate_episodes(env, act, k_eval, num_eval, ep_len, task=task)
        return {"episode_return": m["episode_return"], "env_steps": m["env_steps"],
                "final_return": final.mean(), "nonfinite": m["nonfinite"][-1]}

    out = jax.device_get(jax.jit(jax.vmap(jax.vmap(run, (None, 0)), (0, None)))(tasks, keys))
    if int(np.max(out["nonfinite"])) > 0:
        epg_common.log(f"warning: PPO skipped non-finite steps: {out['nonfinite'].tolist()}")
    out["env_steps"] = out["env_steps"][0, 0]
    return out


def table(results: dict, setup: epg_common.Setup) -> str:
    head = ["method", "env steps", "final return (mean +- std over runs)",
            "per meta-seed", "per task", "mean training return", "wall s (compile incl.)"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, r in results.items():
        f = common.unlisted(r["final_return"])
        er = common.unlisted(r["episode_return"])
        task_axis = 1 if f.ndim == 3 else 0
        per_task = common.nanmean(np.moveaxis(f, task_axis, 0).reshape(f.shape[task_axis], -1),
                                  axis=1)
        seeds = (", ".join(f"{v:.0f}" for v in epg_common.per_seed(f)) if f.ndim == 3
                 else "- (no meta-seed)")
        lines.append("| " + " | ".join([
            LABELS[name], f"{r['env_steps'][-1]:,}", f"{f.mean():.1f} +- {f.std():.1f}",
            seeds, ", ".join(f"{v:.0f}" for v in per_task),
            f"{float(common.nanmean(er.ravel())):.1f}", f"{r['wall_s']:.0f}"]) + " |")
    return "\n".join(lines)


def plot(results: dict, setup: epg_common.Setup, path: Path) -> None:
    """Figures 4/5's axes: training return against env steps, one panel for all held-out
    tasks, one per task (up to 4), and one with PPO's larger budget; 3 panels a row."""
    shown = min(setup.tasks, 4)
    cols = 3
    rows = -(-(shown + 2) // cols)
    fig, axes = common.grid(rows, cols, 4.6, 3.5)
    axes = axes.ravel()
    for ax in axes[shown + 2:]:
        ax.set_visible(False)

    def runs(name, task=None):
        er = common.unlisted(results[name]["episode_return"])
        if er.ndim == 4:  # [S, T, G, K]
            er = er if task is None else er[:, task:task + 1]
        else:  # [T, G, K]
            er = er if task is None else er[task:task + 1]
        return er.reshape(-1, er.shape[-1])

    big = results["ppo-large"]
    f_big = common.unlisted(big["final_return"])
    for i, ax in enumerate(axes[:shown + 1]):
        task = None if i == 0 else i - 1
        for name in ("evolved", "initial", "zero", "ppo"):
            common.curve(ax, results[name]["env_steps"], runs(name, task), LABELS[name],
                         color=COLORS[name])
        f = f_big.ravel() if task is None else f_big[task]
        ax.axhline(f.mean(), color=COLORS["ppo-large"], ls="--",
                   label=f"PPO final at {big['env_steps'][-1]:,} steps")
        ax.axhspan(f.mean() - f.std(), f.mean() + f.std(), color=COLORS["ppo-large"],
                   alpha=0.1)
        ax.set_title("all held-out tasks" if task is None else f"held-out task {task}: "
                     + ", ".join(f"{k} {np.round(v[task], 2).tolist()}"
                                 for k, v in results["_tasks"].items()),
                     fontsize=9)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("average return (training episodes)")
    axes[0].legend(fontsize=7, loc="center right")
    ax = axes[shown + 1]
    common.curve(ax, big["env_steps"], runs("ppo-large"), LABELS["ppo-large"],
                 color=COLORS["ppo-large"])
    for name in ("evolved", "initial", "zero", "ppo"):
        f = common.unlisted(results[name]["final_return"]).ravel()
        ax.axhline(f.mean(), color=COLORS[name], ls="--",
                   label=f"final: {LABELS[name]} ({results[name]['env_steps'][-1]:,} steps)")
    ax.set_title("PPO's larger budget, all held-out tasks", fontsize=9)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("average return (training episodes)")
    ax.legend(fontsize=7, loc="center right")
    fig.suptitle(f"random {setup.env_name}: meta-test on held-out tasks "
                 f"(mean +- std over meta-seeds x tasks x agents)", fontsize=10)
    common.save(fig, path)


def plot_meta(record: dict, setup: epg_common.Setup, path: Path) -> None:
    """Meta-training: the members' mean fitness (footnote 1) and mean final return per
    epoch (mean +- std over meta-seeds), with alpha of eq. 6."""
    fig, axes = common.grid(1, 2, 5.0, 3.6)
    epochs = np.arange(1, len(record["alpha"][0]) + 1)
    for ax, key, label in ((axes[0, 0], "fitness_mean", "members' mean fitness"),
                           (axes[0, 1], "member_final_return", "members' mean final return")):
        epg_common.band(ax, epochs, record[key], label, color="C3")
        if key == "fitness_mean":
            epg_common.band(ax, epochs, record["fitness_max"], "members' best fitness",
                            color="C1")
        ax.set_xlabel("ES epoch")
        ax.set_ylabel(label)
        tw = ax.twinx()
        tw.plot(epochs, np.asarray(record["alpha"][0]), color="0.5", ls=":", label="alpha")
        tw.set_ylabel("alpha (PPO guidance weight, eq. 6)")
        tw.set_ylim(-0.05, 1.05)
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title(f"meta-training on random {setup.env_name} ({setup.seeds} meta-seeds)",
                     fontsize=9)
    common.save(fig, path)


def main(argv: list[str] | None = None) -> dict:
    ap = common.parser(__doc__, SCALES)
    epg_common.add_options(ap)
    ap.add_argument("--ppo-factor", type=int, default=25,
                    help="PPO's larger budget, in multiples of EPG's inner budget K x M")
    args = ap.parse_args(argv)
    setup = epg_common.resolve(args, SCALES)
    if args.ppo_factor < 1:
        raise SystemExit(f"--ppo-factor must be >= 1, got {args.ppo_factor}")
    ppo_equal, ppo_large = ppo_configs(setup, args.ppo_factor)
    t_start = time.perf_counter()
    env = epg_common.make_env(setup)
    tr = epg_common.trainer(setup, env)
    phi0, phi, record = epg_common.meta_train(setup, tr)
    tasks, keys = epg_common.held_out(setup, env)
    results: dict = {}
    spearman: dict = {}  # section 4.3: rho(dL_phi, dL_PPO) per meta-seed, mean over updates
    test = epg_common.over_runs(lambda p, t, k: tr.meta_test(p, t, k, setup.num_eval))
    zero = jax_zeros(phi0)  # no gradient, no update: the fresh random policy
    for name, p in (("evolved", phi), ("initial", phi0), ("zero", zero)):
        t0 = time.perf_counter()
        o = jax_get(test(p, tasks, keys))
        results[name] = {"episode_return": common.listed(o["episode_return"], 2),
                         "env_steps": np.asarray(o["env_steps"][0, 0, 0]).tolist(),
                         "final_return": common.listed(o["final_return"], 2),
                         "wall_s": time.perf_counter() - t0}
        finals = np.round(epg_common.per_seed(o["final_return"]), 1).tolist()
        if name == "zero":  # no gradient: no rank correlation
            epg_common.log(f"{name}: final return per meta-seed {finals}")
            continue
        spearman[name] = epg_common.per_seed(o["spearman_ppo"])
        epg_common.log(f"{name}: final return per meta-seed {finals}; "
                       f"Spearman rho with PPO's gradient {np.round(spearman[name], 3).tolist()}")
    for name, cfg in (("ppo", ppo_equal), ("ppo-large", ppo_large)):
        t0 = time.perf_counter()
        o = ppo_runs(cfg, env, tasks, keys, setup.num_eval)
        results[name] = {"episode_return": common.listed(o["episode_return"], 2),
                         "env_steps": np.asarray(o["env_steps"]).tolist(),
                         "final_return": common.listed(o["final_return"], 2),
                         "wall_s": time.perf_counter() - t0,
                         "config": common.config_dict(cfg)}
        epg_common.log(f"{name}: final return {float(np.mean(o['final_return'])):.1f} "
                       f"({results[name]['wall_s']:.0f} s)")
    report = {
        "name": NAME, "settings": {**setup.settings(), "ppo_factor": args.ppo_factor},
        "device": epg_common.device(), "held_out_tasks": epg_common.tasks_json(tasks),
        "meta_train": record, "methods": results, "spearman_ppo": spearman,
        "wall_s": {"total": time.perf_counter() - t_start, "meta_train": record["wall_s"],
                   "meta_train_cached": record["cached"]},
    }
    md = (epg_common.meta_train_md(setup, record) + "\n\n"
          + f"Meta-test on held-out random `{setup.env_name}` tasks; final return = mean "
          f"of {setup.num_eval} episodes after training; PPO's runs are tasks x agents:\n\n"
          + table(results, setup)
          + "\n\nSection 4.3's Spearman rank correlation between the gradients of the loss "
          "and of PPO's objective (policy parameters, every meta-test update; mean per "
          "meta-seed; the paper: about 0.5): "
          + "; ".join(f"{LABELS[k]} " + ", ".join(f"{v:.3f}" for v in vs)
                      for k, vs in spearman.items()) + ".")
    shown = {**results, "_tasks": report["held_out_tasks"]}
    common.write(args.out, NAME, report, md, {
        "": lambda p: plot(shown, setup, p),
        "_meta": lambda p: plot_meta(record, setup, p)})
    return report


def jax_zeros(tree):
    import jax
    import jax.numpy as jnp

    return jax.tree.map(jnp.zeros_like, tree)


def jax_get(x):
    import jax

    return jax.device_get(x)


if __name__ == "__main__":
    main()
