"""Learning curves from run directories: return vs env steps, mean +- std over seeds."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from metareward.runtime.rundir import RunDir


def curve(run: RunDir, metric: str = "return_mean") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(env_steps, mean, std)`` over seeds of ``metric``, one point per chunk.

    Chunks where a seed had no finished episode are left out of that seed's values.
    """
    by_chunk: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for r in run.read_metrics():
        v = r.get(metric)
        if v is not None:
            by_chunk[r["chunk"]].append((r["env_steps"], float(v)))
    chunks = sorted(by_chunk)
    x = np.array([np.mean([s for s, _ in by_chunk[c]]) for c in chunks], dtype=float)
    vals = [np.array([v for _, v in by_chunk[c]]) for c in chunks]
    mean = np.array([v.mean() for v in vals])
    std = np.array([v.std() for v in vals])
    return x, mean, std


def _label(run: RunDir, others: Sequence[RunDir]) -> str:
    try:
        cfg = run.load_config()
        label = f"{cfg['algo']} ({cfg['run']['seeds']} seeds)"
    except (FileNotFoundError, KeyError, ValueError):
        return run.path.name
    same = [o for o in others if o is not run and _safe_algo(o) == cfg["algo"]]
    return f"{label} {run.path.name}" if same else label


def _safe_algo(run: RunDir) -> str | None:
    try:
        return run.load_config()["algo"]
    except (FileNotFoundError, KeyError, ValueError):
        return None


def plot_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    metric: str = "return_mean",
    title: str | None = None,
) -> Path:
    """Draws several runs on one figure and writes it to ``out`` (PNG, PDF, SVG...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [RunDir(p) for p in run_dirs]
    for run in runs:
        if not run.metrics_jsonl.is_file():
            raise FileNotFoundError(f"{run.path} has no metrics.jsonl (not a run directory?)")
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    envs = set()
    for run in runs:
        x, mean, std = curve(run, metric)
        try:
            envs.add(run.load_config()["env"])
        except (FileNotFoundError, KeyError, ValueError):
            pass
        (line,) = ax.plot(x, mean, label=_label(run, runs))
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("env steps (per seed)")
    ax.set_ylabel("episode return" if metric == "return_mean" else metric)
    ax.set_title(title or (", ".join(sorted(envs)) + " (mean ± std over seeds)"))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


__all__ = ["curve", "plot_runs"]
