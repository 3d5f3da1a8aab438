"""EPG (``epg_evolved_policy_gradients.md``) Figure 6: the KL divergence between the
policies before and after each inner-loop update, with a randomly initialised loss (left)
and with the evolved loss (right), on held-out random tasks.

The loss is meta-trained (or loaded) by ``epg_common``. For every run (meta-seed x
held-out task x agent) a fresh agent is trained for K updates (``epg.inner_run``, the
agent ``meta_test`` trains) and the trainer's per-update ``kl``, ``KL(pi_old || pi_new)``
averaged over the update's M new states, is recorded, for:

* ``initial``: each meta-seed's loss at initialisation, alpha = 0;
* ``initial-ppo``: the same loss at alpha = 1, i.e. the inner loop of the first ES
  epoch of meta-training, which is all PPO guidance (the paper's left panel is "outer-loop
  iteration 1"; which alpha its runs had it does not say);
* ``evolved``: the evolved loss, alpha = 0 (the paper's right panel: the last iteration,
  without PPO guidance).

Writes ``epg_kl.json`` (per run the KL per update, settings, wall times, device),
``epg_kl.png`` (KL against inner update, mean +- std over runs, log scale, the runs
themselves thin) and ``epg_kl.md`` (mean, median, max KL, and the share of updates whose
KL exceeds 10x the method's median: the "spikes" of section 4.4).

Scales (``--scale``, see ``epg_common``): ``smoke`` (seconds), ``cpu`` (random pendulum,
the slow test's budget; 1-2 minutes on one core with the other busy, the meta-training
loaded from the cache that ``epg_vs_ppo.py`` left; 4-5.5 minutes more without it),
``paper`` (random hopper, the paper's config).

    python experiments/epg_kl.py                              # --scale cpu
"""

from __future__ import annotations

import time
from pathlib import Path

import common
import epg_common
import numpy as np

NAME = "epg_kl"
SCALES = epg_common.SCALES
METHODS = ("initial", "initial-ppo", "evolved")
LABELS = {"initial": "loss at initialisation (alpha = 0)",
          "initial-ppo": "loss at initialisation + PPO guidance (alpha = 1, ES epoch 1)",
          "evolved": "evolved loss (alpha = 0)"}
COLORS = {"initial": "C0", "initial-ppo": "C2", "evolved": "C3"}
SPIKE = 10.0


def table(results: dict) -> str:
    head = ["method", "runs x updates", "mean KL", "median KL", "max KL",
            f"updates with KL > {SPIKE:g}x median", "mean KL per meta-seed"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, r in results.items():
        kl = np.asarray(r["kl"], np.float64)
        med = float(np.median(kl))
        lines.append("| " + " | ".join([
            LABELS[name], f"{int(np.prod(kl.shape[:3]))} x {kl.shape[-1]}",
            f"{kl.mean():.3g}", f"{med:.3g}", f"{kl.max():.3g}",
            f"{np.mean(kl > SPIKE * med):.1%}",
            ", ".join(f"{v:.3g}" for v in epg_common.per_seed(kl))]) + " |")
    return "\n".join(lines)


def plot(results: dict, setup: epg_common.Setup, path: Path) -> None:
    """Figure 6's two panels (initial loss left, evolved right), shared log y axis."""
    fig, axes = common.grid(1, 2, 5.5, 3.8)
    panels = ((axes[0, 0], ("initial", "initial-ppo"), "loss at initialisation"),
              (axes[0, 1], ("evolved",), "evolved loss"))
    lo, hi = np.inf, 0.0
    for ax, names, title in panels:
        for name in names:
            kl = np.asarray(results[name]["kl"], np.float64)
            runs = kl.reshape(-1, kl.shape[-1])
            x = np.arange(1, runs.shape[1] + 1)
            for r in runs:
                ax.plot(x, r, color=COLORS[name], lw=0.4, alpha=0.3)
            epg_common.band(ax, x, runs, LABELS[name], log_y=True, color=COLORS[name], lw=1.8)
            pos = runs[runs > 0]
            if pos.size:
                lo, hi = min(lo, pos.min()), max(hi, pos.max())
        ax.set_title(f"{title}, held-out random {setup.env_name}", fontsize=9)
        ax.set_xlabel("inner-loop update (policy update)")
        ax.set_ylabel("KL(pi_old || pi_new)")
        ax.legend(fontsize=7)
    if hi > 0:
        for ax, _, _ in panels:
            ax.set_ylim(lo / 2, hi * 2)
    common.save(fig, path)


def main(argv: list[str] | None = None) -> dict:
    import jax
    import jax.numpy as jnp

    from metareward.algos import epg

    ap = common.parser(__doc__, SCALES)
    epg_common.add_options(ap)
    args = ap.parse_args(argv)
    setup = epg_common.resolve(args, SCALES)
    t_start = time.perf_counter()
    env = epg_common.make_env(setup)
    tr = epg_common.trainer(setup, env)
    phi0, phi, record = epg_common.meta_train(setup, tr)
    tasks, keys = epg_common.held_out(setup, env)

    def kl_run(alpha: float):
        def fn(p, t, k):
            m = epg.inner_run(tr.parts, p, t, epg_common.run_key(k), jnp.float32(alpha))[1]
            return {"kl": m["kl"], "episode_return": m["episode_return"],
                    "inner_nonfinite": m["inner_nonfinite"]}
        return epg_common.over_runs(fn)

    at0 = kl_run(0.0)  # one compiled program for both losses
    runs = {"initial": (at0, phi0), "initial-ppo": (kl_run(1.0), phi0), "evolved": (at0, phi)}
    results: dict = {}
    for name, (fn, p) in runs.items():
        t0 = time.perf_counter()
        o = jax.device_get(fn(p, tasks, keys))
        kl = np.asarray(o["kl"], np.float64)
        results[name] = {"kl": common.listed(kl, 7),
                         "episode_return": common.listed(o["episode_return"], 2),
                         "inner_nonfinite": int(np.sum(o["inner_nonfinite"])),
                         "wall_s": time.perf_counter() - t0}
        epg_common.log(f"{name}: KL mean {kl.mean():.3g}, median {np.median(kl):.3g}, "
                       f"max {kl.max():.3g}")
    report = {
        "name": NAME, "settings": setup.settings(), "device": epg_common.device(),
        "held_out_tasks": epg_common.tasks_json(tasks), "meta_train": record,
        "methods": results,
        "wall_s": {"total": time.perf_counter() - t_start, "meta_train": record["wall_s"],
                   "meta_train_cached": record["cached"]},
    }
    md = (epg_common.meta_train_md(setup, record) + "\n\n"
          + f"KL(pi_old || pi_new) per inner update (mean over the update's "
          f"{setup.config.steps_per_update} new states), meta-seeds x held-out tasks x "
          f"agents:\n\n" + table(results))
    common.write(args.out, NAME, report, md, {"": lambda p: plot(results, setup, p)})
    return report


if __name__ == "__main__":
    main()
