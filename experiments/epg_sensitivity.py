"""EPG (``epg_evolved_policy_gradients.md``) Figure 9: how sensitive the learned loss is
to each kind of input at each time point of its buffer, ``||dL_t*/dx_t||_2``.

The loss is meta-trained (or loaded) by ``epg_common``. For every run (meta-seed x
held-out task x agent) a fresh agent is trained by the loss with the meta-test's alpha
(``alpha_final``, 0 here; ``epg.inner_run``: the agent ``meta_test`` trains); from
its final state the loss's inputs ``x = epg.loss_inputs(...)`` ``[N, F]`` are built
(buffer row 0 the oldest, N - 1 the newest), and the gradient of the loss of one scored step ``t*``,
``trainer.loss_net.apply(phi, x, M)[j]``, is taken w.r.t. ``x``. The F columns are
grouped into the kinds ``loss_inputs`` builds (observation: obs size; action: action
size; termination: 1; memory: ``memory_size``; policy mean and policy log-std: action
size each; reward: 1 with ``use_reward``), and the L2 norm of each kind's gradient is
taken at every row ``t``. Rows ``N - M .. N - 1`` are scored by the dense part; the
others reach the loss only through the temporal convolutions' context. With the paper's
convolutions (kernel 8, stride 7) on N = 128 rows the windows cover rows 0..126: the
newest row never reaches the context, and its gradient is 0 unless it is t* itself.

The scored step: ``--scored-step j`` (0 = the oldest of the M scored rows), default
``floor(25 M / 128)``: the paper's t = 25 in its 128-step window, at the same relative
place in our window (cpu: M = 64, N = 128, j = 12, buffer row t* = 76; the paper had
M = N = 128, so its window was the whole buffer). The initial loss (second panel) is
measured the same way on its own meta-test runs, for contrast.

Writes ``epg_sensitivity.json`` (per run, per row, per kind the norm; the kinds and
their columns; settings, wall times, device), ``epg_sensitivity.png`` (one line per
kind against the buffer position, mean +- std over runs, log scale; evolved loss left,
initial loss right) and ``epg_sensitivity.md`` (per kind: the norm at t* against the
mean over the other rows, the other scored rows and the context-only rows).

Scales (``--scale``, see ``epg_common``): ``smoke`` (seconds), ``cpu`` (random pendulum,
the slow test's budget; 1-2 minutes on one core with the other busy, the meta-training
loaded from the cache that ``epg_vs_ppo.py`` left; 4-5.5 minutes more without it),
``paper`` (random hopper, the paper's config).

    python experiments/epg_sensitivity.py                     # --scale cpu
    python experiments/epg_sensitivity.py --scored-step 63    # the newest step
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import common
import epg_common
import numpy as np

NAME = "epg_sensitivity"
SCALES = epg_common.SCALES
METHODS = ("evolved", "initial")
LABELS = {"evolved": "evolved loss", "initial": "loss at initialisation"}


def kinds(cfg, spec) -> list[tuple[str, int]]:
    """``(kind, columns)`` in the order ``epg.loss_inputs`` concatenates them."""
    A, O = spec.action_size, spec.obs_size  # noqa: E741
    out = [("observation", O), ("action", A), ("termination", 1),
           ("memory", cfg.memory_size), ("policy mean", A), ("policy log-std", A)]
    return out + ([("reward", 1)] if cfg.use_reward else [])


def default_step(m: int) -> int:
    """The paper's t = 25 of 128 at the same relative place in a window of ``m``."""
    return 25 * m // 128


def sig(a, digits: int = 4) -> list:
    """``a`` as nested lists, each value to ``digits`` significant digits."""
    a = np.asarray(a, np.float64)
    return np.array([float(f"{v:.{digits}g}") for v in a.ravel()]).reshape(a.shape).tolist()


def summary(norms: np.ndarray, t_star: int, n: int, m: int) -> dict:
    """Per kind (last axis of ``norms [..., N, kinds]``), mean over runs of the norm at
    ``t_star``, over the other rows, the other scored rows and the context-only rows."""
    mean = norms.reshape(-1, *norms.shape[-2:]).mean(axis=0)  # [N, kinds]
    rows = np.arange(n)
    other = rows != t_star
    scored_other = (rows >= n - m) & other
    context = rows < n - m
    pick = lambda sel: mean[sel].mean(axis=0) if sel.any() else np.full(mean.shape[1], np.nan)
    return {"at_scored_step": mean[t_star], "elsewhere": pick(other),
            "other_scored": pick(scored_other), "context_only": pick(context),
            "mean_per_row": mean}


def table(results: dict, kind_list: list, t_star: int) -> str:
    head = ["loss", "kind", "columns", f"norm at t* = {t_star}", "mean elsewhere",
            "ratio", "mean, other scored rows", "mean, context-only rows"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for name, r in results.items():
        s = r["_summary"]
        for i, (kind, cols) in enumerate(kind_list):
            at, el = s["at_scored_step"][i], s["elsewhere"][i]
            lines.append("| " + " | ".join([
                LABELS[name], kind, str(cols), f"{at:.3g}", f"{el:.3g}",
                f"{at / el:.1f}" if el > 0 else "-", f"{s['other_scored'][i]:.3g}",
                f"{s['context_only'][i]:.3g}"]) + " |")
    return "\n".join(lines)


def plot(results: dict, kind_list: list, setup: epg_common.Setup, t_star: int,
         path: Path) -> None:
    """Figure 9's axes: gradient norm per kind of input against the buffer position."""
    n, m = setup.config.buffer_size, setup.config.steps_per_update
    fig, axes = common.grid(1, 2, 6.0, 4.0)
    x = np.arange(n)
    for ax, name in zip(axes[0], METHODS, strict=True):
        norms = np.asarray(results[name]["_norms"])
        runs = norms.reshape(-1, n, len(kind_list))
        for i, (kind, cols) in enumerate(kind_list):
            epg_common.band(ax, x, runs[:, :, i], f"{kind} ({cols})", log_y=True,
                            band_alpha=0.12, color=f"C{i}")
        ax.axvspan(n - m - 0.5, n - 0.5, color="0.9", zorder=0, label="scored rows (M)")
        ax.axvline(t_star, color="k", ls="--", lw=0.8, label=f"t* = {t_star}")
        ax.set_title(f"{LABELS[name]}: ||dL_t*/dx_t||_2, held-out random {setup.env_name}",
                     fontsize=9)
        ax.set_xlabel("buffer position t (0 = oldest)")
        ax.set_ylabel("||dL_t*/dx_t||_2 per kind of input")
        ax.legend(fontsize=7, ncol=2)
    common.save(fig, path)


def main(argv: list[str] | None = None) -> dict:
    import jax
    import jax.numpy as jnp

    from metareward.algos import epg

    ap = common.parser(__doc__, SCALES)
    epg_common.add_options(ap)
    ap.add_argument("--scored-step", type=int, default=None,
                    help="j, the scored step whose loss is differentiated, 0 .. M - 1 "
                         "(0: the oldest scored row; default 25 M // 128, the paper's t=25)")
    args = ap.parse_args(argv)
    setup = epg_common.resolve(args, SCALES)
    cfg = setup.config
    n, m = cfg.buffer_size, cfg.steps_per_update
    j = default_step(m) if args.scored_step is None else args.scored_step
    if not 0 <= j < m:
        raise SystemExit(f"--scored-step must be in [0, {m - 1}] (M = {m}), got {j}")
    t_star = n - m + j
    t_start = time.perf_counter()
    env = epg_common.make_env(setup)
    tr = epg_common.trainer(setup, env)
    kind_list = kinds(cfg, tr.spec)
    bounds = np.cumsum([0] + [c for _, c in kind_list])
    phi0, phi, record = epg_common.meta_train(setup, tr)
    tasks, keys = epg_common.held_out(setup, env)

    def sensitivity(p, t, k):
        s, _ = epg.inner_run(tr.parts, p, t, epg_common.run_key(k),
                             jnp.float32(cfg.alpha_final))
        x = epg.loss_inputs(tr.parts, s.params, s.obs_stats, s.act_stats, s.rew_stats,
                            s.buffer)
        if x.shape != (n, int(bounds[-1])):  # static: fails while tracing
            raise RuntimeError(f"loss_inputs gives {x.shape}; the kinds {kind_list} add up "
                               f"to {(n, int(bounds[-1]))}: update kinds()")
        g = jax.grad(lambda x: tr.loss_net.apply(p, x, m)[j])(x)  # [N, F]
        return jnp.stack([jnp.linalg.norm(g[:, a:b], axis=-1)
                          for a, b in itertools.pairwise(bounds)], axis=-1)

    fn = epg_common.over_runs(sensitivity)
    results: dict = {}
    for name, p in (("evolved", phi), ("initial", phi0)):
        t0 = time.perf_counter()
        norms = np.asarray(jax.device_get(fn(p, tasks, keys)), np.float64)  # [S,T,G,N,kinds]
        s = summary(norms, t_star, n, m)
        results[name] = {
            "norms": sig(norms), "_norms": norms, "_summary": s,
            "at_scored_step": sig(s["at_scored_step"]), "elsewhere": sig(s["elsewhere"]),
            "other_scored": sig(s["other_scored"]), "context_only": sig(s["context_only"]),
            "wall_s": time.perf_counter() - t0}
        epg_common.log(f"{name}: at t* " + ", ".join(
            f"{k} {v:.3g}" for (k, _), v in zip(kind_list, s["at_scored_step"], strict=True)))
    report = {
        "name": NAME, "settings": {**setup.settings(), "scored_step": j, "t_star": t_star},
        "device": epg_common.device(), "kinds": [[k, c] for k, c in kind_list],
        "norms_axes": ["meta-seed", "task", "agent", "buffer position", "kind"],
        "held_out_tasks": epg_common.tasks_json(tasks), "meta_train": record,
        "methods": results,
        "wall_s": {"total": time.perf_counter() - t_start, "meta_train": record["wall_s"],
                   "meta_train_cached": record["cached"]},
    }
    md = (epg_common.meta_train_md(setup, record) + "\n\n"
          + f"||dL_t*/dx_t||_2 per kind of input, mean over meta-seeds x held-out tasks x "
          f"agents, at the end of each run; t* = buffer row {t_star} of 0..{n - 1} (scored "
          f"step {j} of the newest {m} rows):\n\n" + table(results, kind_list, t_star))
    common.write(args.out, NAME, report, md,
                 {"": lambda path: plot(results, kind_list, setup, t_star, path)})
    return report


if __name__ == "__main__":
    main()
