"""Learning curves from run directories: return vs env steps, mean +- std over seeds.

:func:`plot_runs` checks everything before it draws: the output's format (its suffix, one
matplotlib writes) and directory, that every run's metrics.jsonl is UTF-8 text and that
each run has the metric; each failure is a ``ValueError`` naming the file or the value
and what is allowed (``metareward plot`` prints it as one line and exits 2).
"""

from __future__ import annotations

import numbers
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metareward.runtime.paths import check_writable_dir
from metareward.runtime.rundir import RunDir


def _number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def curve(run: RunDir, metric: str = "return_mean") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(env_steps, mean, std)`` over seeds of ``metric``, one point per chunk.

    Chunks where a seed had no finished episode are left out of that seed's values.

    Args:
      run: the run directory.
      metric: a metrics.jsonl field.

    Returns:
      Arrays of the points' env steps (per seed), mean and standard deviation.
    """
    return _curve(run.read_metrics(), metric)


def _curve(
    records: Sequence[dict[str, Any]], metric: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    by_chunk: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        v, chunk, steps = r.get(metric), r.get("chunk"), r.get("env_steps")
        if _number(v) and _number(chunk) and _number(steps):  # else null or malformed
            by_chunk[int(chunk)].append((float(steps), float(v)))
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
    except (FileNotFoundError, KeyError, TypeError, ValueError):
        return run.path.name
    same = [o for o in others if o is not run and _safe_algo(o) == cfg["algo"]]
    return f"{label} {run.path.name}" if same else label


def _safe_algo(run: RunDir) -> str | None:
    try:
        return run.load_config()["algo"]
    except (FileNotFoundError, KeyError, TypeError, ValueError):
        return None


def figure_formats() -> list[str]:
    """The file formats matplotlib can write a figure in.

    Returns:
      The suffixes without the dot, sorted (``png``, ``pdf``, ``svg``...).
    """
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(FigureCanvasBase.get_supported_filetypes())


def check_output(out: str | Path) -> Path:
    """``out`` as the path of a figure, checked before anything is drawn.

    Args:
      out: where the figure goes; its suffix is its format.

    Returns:
      ``out`` as a :class:`~pathlib.Path`.

    Raises:
      ValueError: ``out`` is a directory, has no suffix or one matplotlib does not write
        (the message lists the formats), or its directory cannot be made or written.
    """
    path = Path(out)
    formats = figure_formats()
    allowed = ", ".join(f".{f}" for f in formats)
    if path.is_dir():
        raise ValueError(f"output {str(out)!r} is a directory; give a file name, e.g. "
                         f"{path / 'curves.png'} (formats: {allowed})")
    suffix = path.suffix.lower().lstrip(".")
    if not suffix:
        raise ValueError(f"output {str(out)!r} has no suffix; the suffix is the figure's "
                         f"format, one of {allowed}")
    if suffix not in formats:
        raise ValueError(f"output {str(out)!r}: unknown figure format '.{suffix}'; "
                         f"allowed: {allowed}")
    try:
        check_writable_dir(path.parent)
    except ValueError as e:
        raise ValueError(f"output {str(out)!r} cannot be written: {e}") from None
    return path


def metric_names(records: Sequence[dict[str, Any]]) -> list[str]:
    """The fields of metrics records that can be plotted: a number in some record, or
    null (a return in a chunk without a finished episode).

    Args:
      records: metrics.jsonl records (:meth:`RunDir.read_metrics`).

    Returns:
      The field names, sorted.
    """
    return sorted({k for r in records for k, v in r.items() if v is None or _number(v)})


def _check_metric(runs: Sequence[RunDir], records: Sequence[list[dict[str, Any]]],
                  metric: str) -> None:
    names = [set(metric_names(recs)) for recs in records]
    lacking = [run.path for run, recs, n in zip(runs, records, names, strict=True)
               if recs and metric not in n]
    if not lacking:
        return
    have = set.intersection(*[n for n in names if n]) if any(names) else set()
    which = ", ".join(str(p) for p in lacking)
    raise ValueError(f"no metric {metric!r} in the metrics.jsonl of {which}; "
                     f"metrics{' of these runs' if len(runs) > 1 else ''}: {sorted(have)}")


def plot_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    metric: str = "return_mean",
    title: str | None = None,
) -> Path:
    """Draws several runs on one figure and writes it to ``out`` (PNG, PDF, SVG...).

    Everything is checked before the figure is drawn (see the module docstring).

    Args:
      run_dirs: run directories, each with a metrics.jsonl.
      out: the figure's path; its suffix is its format (:func:`figure_formats`).
      metric: the metrics.jsonl field to plot against env steps.
      title: the figure's title (default: the runs' envs).

    Returns:
      ``out`` as a :class:`~pathlib.Path`.

    Raises:
      FileNotFoundError: a run directory has no metrics.jsonl.
      ValueError: a bad ``out`` (:func:`check_output`), a metrics.jsonl that is not
        UTF-8 text, or a run without ``metric`` (the message lists the metrics it has).
    """
    out = check_output(out)
    runs = [RunDir(p) for p in run_dirs]
    for run in runs:
        if not run.metrics_jsonl.is_file():
            raise FileNotFoundError(f"{run.path} has no metrics.jsonl (not a run directory?)")
    records = [run.read_metrics() for run in runs]
    _check_metric(runs, records, metric)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    envs = set()
    for run, recs in zip(runs, records, strict=True):
        x, mean, std = _curve(recs, metric)
        try:
            envs.add(run.load_config()["env"])
        except (FileNotFoundError, KeyError, TypeError, ValueError):
            pass
        (line,) = ax.plot(x, mean, label=_label(run, runs))
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("env steps (per seed)")
    ax.set_ylabel("episode return" if metric == "return_mean" else metric)
    ax.set_title(title or (", ".join(sorted(envs)) + " (mean ± std over seeds)"))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


__all__ = ["check_output", "curve", "figure_formats", "metric_names", "plot_runs"]
