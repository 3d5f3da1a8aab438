"""What every experiment entry point shares: the ``--scale`` switch, training seeds in one
vmapped program, mean +- std curves over seeds, and writing JSON, PNG and markdown.

Each entry point defines ``SCALES``: a dict from ``"smoke"`` (seconds, for the tests),
``"cpu"`` (a 2-core CPU, under ~30 minutes, pure-JAX envs) and ``"paper"`` (the paper's
settings and MuJoCo envs, meant for accelerators) to a :class:`Scale`, and may add more
(``"mujoco-cpu"``: the paper's settings on brax MuJoCo envs at the paper's budget, hours
on one CPU core). All run the same code; only the envs, budgets and seed counts differ.

A scale with ``run_dirs=True`` (or any scale given ``--runs DIR``) trains each run in a
run directory through :mod:`metareward.runtime.driver`, as ``metareward train`` does:
chunked, checkpointed, resumable. Running the same command again reads the finished
runs, resumes the unfinished ones (``metareward resume DIR`` also does) and starts the
rest; the outputs are rewritten after every run, so a grid split over several sittings
has its partial results on disk. Checkpoints live under ``runs/`` (not committed).

Outputs go to ``--out`` (default ``experiments/results/<scale>/``) as ``<name>.json``
(everything measured, per seed), ``<name>*.png`` (figures: mean +- std over seeds) and
``<name>.md`` (the table that is also printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import metareward  # noqa: F401  (XLA flags before jax starts)

HERE = Path(__file__).resolve().parent
#: The scales every entry point has (it may add more).
SCALE_NAMES = ("smoke", "cpu", "paper")
#: Where run directories go by default: ``runs/experiments/<scale>/<name>/<run>``.
RUNS = HERE.parent / "runs" / "experiments"
#: The brax physics backend of the ``mujoco-cpu`` scales: the fastest on a CPU that
#: keeps the task. ``python benchmarks/brax_backends.py --cpu 0`` (2026-12-03, one core
#: of the 2-core VM, 2048 random-action steps per env, 2 rounds): with 4 envs (5 vmapped
#: seeds are a batch of 5) ``generalized`` takes 0.50x (hopper) and 0.47x (walker2d) of
#: ``mjx``'s time, with the same random-policy episodes (mean length 21.7 vs 21.6 and
#: 19.3 vs 20.7 steps); ``positional`` and ``spring`` take 0.10-0.26x but change the task:
#: a random hopper stays up 4-5x as long (86-103 steps), a random walker 12x (230-266).
MUJOCO_CPU_BACKEND = "generalized"


@dataclasses.dataclass(frozen=True)
class Scale:
    """One size of an experiment: ``envs`` to run, ``steps`` per seed (per env, ``None``
    keeps the config's ``total_steps``), ``seeds`` per (env, learner), free-form
    ``extra`` settings the entry point reads, and ``run_dirs``: train each run in a
    resumable run directory (:func:`train_in_run_dir`) rather than in memory."""

    envs: tuple[str, ...]
    seeds: int
    steps: dict[str, int | None]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    run_dirs: bool = False


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of an experiment: a registered algorithm (``metareward list``), its full
    config, an env and the env's options; what ``metareward train`` would be given."""

    algo: str
    env: str
    config: Any
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def trainer(self) -> Any:
        """The learner, built as ``metareward train`` builds it."""
        from metareward import envs
        from metareward.algos.registry import get_algorithm

        spec = get_algorithm(self.algo)
        return spec.make_train(self.config,
                               envs.make(self.env, **{**spec.env_kwargs, **self.env_kwargs}))


def parser(doc: str, scales: dict[str, Scale], *, resumable: bool = False
           ) -> argparse.ArgumentParser:
    """An argument parser with ``--scale``, ``--seeds``, ``--steps``, ``--envs`` and
    ``--out``, the shared options of every entry point, and with ``resumable`` (an entry
    point that trains through :func:`train_all`) ``--runs``."""
    missing = set(SCALE_NAMES) - set(scales)
    if missing:
        raise ValueError(f"SCALES lacks {sorted(missing)}")
    ap = argparse.ArgumentParser(description=doc.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=list(scales), default="cpu",
                    help="smoke: seconds (tests); cpu: a 2-core CPU in under ~30 min; "
                         "paper: the paper's settings and envs (accelerators)"
                         + ("; mujoco-cpu: the paper's settings on MuJoCo envs at the "
                            "paper's budget, hours on one CPU core, resumable"
                            if "mujoco-cpu" in scales else ""))
    ap.add_argument("--seeds", type=int, default=None,
                    help="seeds per run (default: the scale's: "
                         + ", ".join(f"{k} {v.seeds}" for k, v in scales.items()) + ")")
    ap.add_argument("--steps", type=int, default=None,
                    help="env steps per seed for every run (default: the scale's)")
    ap.add_argument("--envs", nargs="+", default=None,
                    help="envs to run (default: the scale's: "
                         + "; ".join(f"{k} {' '.join(v.envs)}" for k, v in scales.items())
                         + ")")
    ap.add_argument("--out", type=Path, default=None,
                    help="output directory (default: experiments/results/<scale>)")
    if resumable:
        ap.add_argument("--runs", type=Path, default=None,
                        help="train each run in a resumable run directory under DIR "
                             "(default for scales that use run directories: "
                             "runs/experiments/<scale>); the same command resumes them")
        ap.add_argument("--merge", action="store_true",
                        help="keep the runs of the existing <name>.json in --out that this "
                             "call does not run (a grid split over machines or sittings "
                             "whose run directories are gone); each kept run must have "
                             "the config this code would run, or the call fails naming it")
        ap.add_argument("--finished-only", action="store_true",
                        help="train nothing: rebuild the outputs from the run directories "
                             "of this call that have finished, leaving out (with a message) "
                             "the ones that have not; with --merge the results file's "
                             "records of those are kept")
    return ap


def resolve(args: argparse.Namespace, scales: dict[str, Scale]) -> Scale:
    """The scale chosen on the command line with ``--seeds/--steps/--envs`` applied, and
    ``args.out`` filled in. Fails with the allowed values on a bad override."""
    from metareward.envs import registry

    scale = scales[args.scale]
    envs_ = tuple(args.envs) if args.envs else scale.envs
    unknown = [e for e in envs_ if e not in registry.names()]
    if unknown:
        raise SystemExit(f"unknown env(s) {unknown}; allowed: {', '.join(registry.names())}")
    if args.seeds is not None and args.seeds < 1:
        raise SystemExit(f"--seeds must be >= 1, got {args.seeds}")
    if args.steps is not None and args.steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {args.steps}")
    steps = {e: args.steps or scale.steps.get(e) for e in envs_}
    if args.out is None:
        args.out = HERE / "results" / args.scale
    if getattr(args, "runs", None) is None and scale.run_dirs:
        args.runs = RUNS / args.scale
    if getattr(args, "finished_only", False) and args.runs is None:
        raise SystemExit(f"--finished-only reads run directories, and --scale {args.scale} "
                         "trains in memory; pass --runs DIR")
    return dataclasses.replace(scale, envs=envs_, seeds=args.seeds or scale.seeds,
                               steps=steps, run_dirs=getattr(args, "runs", None) is not None)


def with_steps(cfg: Any, steps: int | None) -> Any:
    """``cfg`` with ``total_steps`` replaced (kept when ``steps`` is None)."""
    return cfg if steps is None else dataclasses.replace(cfg, total_steps=steps)


def listed(a: Any, digits: int | None = None) -> list:
    """``a`` as nested lists with NaN as None (strict JSON)."""
    a = np.asarray(a, dtype=np.float64)
    if digits is not None:
        a = np.round(a, digits)
    return np.where(np.isnan(a), None, a).tolist()


def unlisted(a: Sequence) -> np.ndarray:
    """The inverse of :func:`listed`: None back to NaN."""
    return np.array(a, dtype=np.float64)


def nanmean(a: Any, axis: int = 0) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        return np.nanmean(np.asarray(a, dtype=np.float64), axis=axis)


def config_dict(cfg: Any) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}


def train_seeds(trainer: Any, cfg: Any, seeds: int, *, seed: int = 42,
                eval_episodes: int = 32, keep: Sequence[str] = (),
                keep_state: bool = False) -> dict:
    """Train ``seeds`` seeds of ``trainer`` in one vmapped, jitted program (keys
    ``PRNGKey(seed + i)``), then evaluate each on ``eval_episodes`` fresh episodes.

    Returns a JSON-ready record: ``env_steps`` (per update), ``episode_return``
    ``[seeds, updates]`` (mean return of the training episodes that ended in each update,
    None where none did), ``eval_return_per_seed``, ``wall_s`` (compile included),
    ``config``, and for each metric in ``keep`` its per-seed curve. With ``keep_state``
    the trained (vmapped) state is returned under ``"_state"`` (not JSON)."""
    import jax
    import jax.numpy as jnp

    keys = jnp.stack([jax.random.PRNGKey(seed + i) for i in range(seeds)])
    t0 = time.perf_counter()
    state, metrics = jax.jit(jax.vmap(trainer.train))(keys)
    jax.block_until_ready(state)
    wall = time.perf_counter() - t0
    ev_keys = jnp.stack([jax.random.PRNGKey(1000 + seed + i) for i in range(seeds)])
    evals = jax.jit(jax.vmap(lambda s, k: trainer.evaluate(s, k, eval_episodes)))(
        state, ev_keys)
    out = {
        "seeds": seeds,
        "env_steps": np.asarray(metrics["env_steps"][0]).tolist(),
        "episode_return": listed(metrics["episode_return"], 3),
        "eval_return_per_seed": np.asarray(evals.mean(axis=1)).tolist(),
        "wall_s": wall,
        "config": config_dict(cfg),
    }
    for k in keep:
        if k in metrics:
            out[k] = listed(metrics[k], 5)
    if keep_state:
        out["_state"] = state
    return out


def kept_runs(path: Path, keys: Sequence[str], jobs: Sequence[tuple[dict, Any]],
              seeds: int, rebuild: Callable[[dict], Run]) -> list[dict]:
    """The records of the results file ``path`` (``<name>.json``; none if it does not
    exist) whose labels no job in ``jobs`` has: what ``--merge`` keeps.

    Each kept record is checked against ``rebuild(record)``, the :class:`Run` this code
    makes for its labels (at the record's own ``total_steps``), and against ``seeds``: a
    record of another config, env options or seed count fails the call, naming it,
    rather than mixing two versions of an experiment in one table. A field the config
    class has renamed since (its ``renamed_fields``) is compared under its new name.

    Args:
        path: the results JSON written by an earlier call (:func:`write`).
        keys: the labels that name a run (``("env", "learner")``).
        jobs: this call's ``(labels, build)`` jobs.
        seeds: this call's seeds per run.
        rebuild: the run this code makes for a record's labels.

    Returns:
        The kept records, in the file's order.
    """
    from metareward.runtime import configs

    path = Path(path)
    if not path.is_file():
        return []
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"--merge: cannot read {path}: {e}") from e
    new = {tuple(labels[k] for k in keys) for labels, _ in jobs}
    kept = [r for r in old if tuple(r.get(k) for k in keys) not in new]
    for r in kept:
        run = rebuild(r)
        as_dict = configs.config_to_dict if "run_dir" in r else config_dict
        now = json.loads(json.dumps(as_dict(run.config)))
        renamed = getattr(type(run.config), "renamed_fields", {})
        config = {renamed.get(k, k): v for k, v in r["config"].items()}
        recorded = {**_defaults_of_fields_added_since(run.config, config, as_dict), **config}
        if (now, seeds) != (recorded, r["seeds"]) \
                or run.env_kwargs != r.get("env_kwargs", run.env_kwargs):
            raise SystemExit(f"--merge: {path} holds the run "
                             f"{run_name({k: r[k] for k in keys})} with another config, env "
                             "options or seed count than this call runs; rerun it or "
                             "write to another --out")
    return kept


def _defaults_of_fields_added_since(config: Any, recorded: dict,
                                    as_dict: Callable[[Any], dict]) -> dict:
    """The defaults of the fields of ``config``'s dataclass that the ``recorded`` config
    lacks: fields added to the code after the record was written. The record's run had
    their default behaviour, as ``metareward resume`` assumes for a ``config.json`` that
    lacks them; so a kept record matches a rebuilt run only if the run keeps them at their
    default."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)
                if f.name not in recorded and f.default is not dataclasses.MISSING}
    if not defaults:
        return {}
    full = json.loads(json.dumps(as_dict(dataclasses.replace(config, **defaults))))
    return {k: full[k] for k in defaults if k in full}


def train_all(jobs: Sequence[tuple[dict, Callable[[], Any]]], seeds: int, *,
              keys: Sequence[str] = ("env", "learner"), keep: Sequence[str] = (),
              runs: Path | None = None, kept: Sequence[dict] = (),
              learners: Sequence[str] = (),
              after_each: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Run ``jobs`` in turn and return ``kept`` followed by one record per job with its
    ``labels`` in front, logging each as it finishes.

    Each job is ``(labels, build)``; ``build()`` returns a :class:`Run` or a
    ``(trainer, config)`` pair. Without ``runs`` a job trains in memory
    (:func:`train_seeds`); with ``runs`` (only for :class:`Run` jobs) it trains in its
    run directory ``runs / run_name(labels)`` (:func:`train_in_run_dir`), and
    ``after_each(kept + results so far)`` is called after every job, to write partial
    outputs. ``kept`` are records of earlier calls (:func:`kept_runs`); with ``learners``
    (the entry point's learner order) kept and new records are listed by env, then by
    ``learners``, whatever call made them."""
    results = list(kept)

    def ordered() -> list[dict]:
        rank = {ln: i for i, ln in enumerate(learners)}
        if not rank:
            return results
        return sorted(results, key=lambda r: (r["env"], r.get("delay", 0),
                                              rank.get(r["learner"], len(rank))))

    for labels, build in jobs:
        built = build()
        if runs is not None:
            if not isinstance(built, Run):
                raise TypeError(f"{labels}: run directories need a Run, got {type(built)}")
            r = {**labels, **train_in_run_dir(built, Path(runs) / run_name(labels), seeds,
                                              keep=keep)}
        else:
            trainer, cfg = (built.trainer(), built.config) if isinstance(built, Run) else built
            r = {**labels, **train_seeds(trainer, cfg, seeds, keep=keep)}
        log_run(r, keys)
        results.append(r)
        if after_each is not None and runs is not None:
            after_each(ordered())
    return ordered()


def finished_jobs(jobs: Sequence[tuple[dict, Any]], runs: Path
                  ) -> list[tuple[dict, Any]]:
    """The jobs whose run directory under ``runs`` has finished: what ``--finished-only``
    keeps, so that :func:`train_all` only reads them. Each job left out is named on
    stderr; with ``--merge`` its earlier record, if any, is kept by :func:`kept_runs`.

    Args:
        jobs: an entry point's ``(labels, build)`` jobs.
        runs: the directory of the entry point's run directories
            (``runs / run_name(labels)``).

    Returns:
        The jobs whose run has finished, in their order.
    """
    done = []
    for labels, build in jobs:
        path = Path(runs) / run_name(labels)
        if _finished(path):
            done.append((labels, build))
        else:
            state = "unfinished" if (path / "config.json").is_file() else "not started"
            print(f"--finished-only: leaving out {run_name(labels)} ({state}: {path})",
                  file=sys.stderr, flush=True)
    return done


def run_name(labels: dict) -> str:
    """A run directory's name from a job's labels: ``hopper-20-lirpg``."""
    return "-".join(str(v) for v in labels.values())


def train_in_run_dir(run: Run, path: Path, seeds: int, *, seed: int = 0,
                     keep: Sequence[str] = (), checkpoint_every: int = 5,
                     eval_episodes: int = 32) -> dict:
    """Train ``run`` in the run directory ``path`` to its end, as ``metareward train``
    does (``seeds`` vmapped seeds, keys ``split(PRNGKey(seed), seeds)``, about 100
    chunks, a checkpoint every ``checkpoint_every`` chunks, ``eval_episodes`` per seed
    evaluated at the end), and return its record (:func:`run_record`).

    A finished run is only read; an unfinished one is resumed from its newest
    checkpoint (exactly); one whose recorded config differs from ``run`` fails, naming
    the directory, rather than mixing two experiments. A config field added to the code
    after the run was made counts as recorded at its default, as ``metareward resume``
    takes it."""
    from metareward.algos.config import ConfigError
    from metareward.runtime.checkpoint import (
        ForeignCheckpointError,
        IncompatibleCheckpointError,
        NoCheckpointError,
    )
    from metareward.runtime.driver import NonFiniteError
    from metareward.runtime.lock import RunLockedError

    try:
        return _train_in_run_dir(run, Path(path), seeds, seed=seed, keep=keep,
                                 checkpoint_every=checkpoint_every,
                                 eval_episodes=eval_episodes)
    except (ConfigError, RunLockedError, ForeignCheckpointError, IncompatibleCheckpointError,
            NoCheckpointError, NonFiniteError) as e:
        # One line, as `metareward resume` says it, not a traceback: another process
        # holds the run, its checkpoint is another run's, or training diverged.
        raise SystemExit(f"error: {e}") from None


def _train_in_run_dir(run: Run, path: Path, seeds: int, *, seed: int,
                      keep: Sequence[str], checkpoint_every: int,
                      eval_episodes: int) -> dict:
    from metareward.runtime import configs, driver
    from metareward.runtime.rundir import RunDir

    rd = RunDir(path)
    if (path / "config.json").is_file():
        rec = rd.load_config()
        want = json.loads(json.dumps(configs.config_to_dict(run.config)))
        recorded = {**_defaults_of_fields_added_since(run.config, rec["config"],
                                                      configs.config_to_dict),
                    **rec["config"]}
        if (rec["algo"], rec["env"], recorded, rec.get("env_kwargs") or {},
                rec["run"]["seeds"]) != (run.algo, run.env, want, run.env_kwargs, seeds):
            raise SystemExit(f"{path} holds a different run (algo, env, config, env "
                             "options or seeds); move it away or pass another --runs")
        if not _finished(path):
            print(f"resuming {path}", file=sys.stderr, flush=True)
            driver.resume(path, stream=sys.stderr, progress=False)
    else:
        plan = driver.prepare(
            run.algo, run.env, overrides=configs.config_to_dict(run.config),
            env_kwargs=run.env_kwargs,
            options=driver.RunOptions(seeds=seeds, seed=seed, checkpoint_every=checkpoint_every,
                                      eval_episodes=eval_episodes))
        print(f"training {path}", file=sys.stderr, flush=True)
        driver.start(plan, out=path, stream=sys.stderr, progress=False)
    return run_record(path, keep)


def _finished(path: Path) -> bool:
    summary = Path(path) / "summary.json"
    return (summary.is_file() and json.loads(summary.read_text()).get("status") == "finished"
            and (Path(path) / "eval.json").is_file())


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (results name no machine)."""
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return str(path)


def run_record(path: Path, keep: Sequence[str] = ()) -> dict:
    """The record of a finished run directory, in :func:`train_seeds`'s form: one
    ``episode_return`` column per chunk (the mean return of the training episodes that
    ended in it), ``env_steps`` at each chunk's end, ``eval_return_per_seed`` from
    ``eval.json``, ``wall_s`` the summed chunk time of all its sessions (compilation not
    included: ``compile_s`` is the last session's), ``config``, ``run_dir``, and each
    metric in ``keep`` per seed and chunk."""
    from metareward.runtime.rundir import RunDir

    rd = RunDir(path)
    rec = rd.load_config()
    seeds = rec["run"]["seeds"]
    by_seed: list[list[dict]] = [[] for _ in range(seeds)]
    for m in sorted(rd.read_metrics(), key=lambda m: (m["update"], m["seed"])):
        by_seed[m["seed"]].append(m)
    summary = json.loads(rd.summary_json.read_text())
    ev = json.loads(rd.eval_json.read_text())

    def column(k: str) -> list:
        return [[m.get(k) for m in rows] for rows in by_seed]

    out = {
        "seeds": seeds,
        "env_steps": [m["env_steps"] for m in by_seed[0]],
        "episode_return": listed(unlisted(column("return_mean")), 3),
        "eval_return_per_seed": ev["per_seed"],
        "wall_s": summary["wall_time"],
        "compile_s": summary["compile_time"],
        "config": rec["config"],
        "env_kwargs": rec.get("env_kwargs") or {},
        "run_dir": _shown(Path(path)),
    }
    for k in keep:
        if any(k in m for m in by_seed[0]):
            out[k] = listed(unlisted(column(k)), 5)
    return out


def smooth(y: np.ndarray, width: int) -> np.ndarray:
    """Trailing mean over ``width`` updates of each row, ignoring NaNs (updates where no
    episode ended)."""
    return np.stack([nanmean(y[:, max(0, i - width + 1): i + 1], axis=1)
                     for i in range(y.shape[1])], axis=1)


def curve(ax: Any, x: Sequence, y: Any, label: str, **kw: Any) -> None:
    """Mean +- std over seeds of ``y`` (``[seeds, updates]``, NaN or None where there is
    no value; smoothed over ~1/50 of the run) against ``x``, where some seed has a
    value."""
    y = unlisted(y)
    ys = smooth(y, max(1, y.shape[1] // 50))
    m = nanmean(ys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = np.nanstd(ys, axis=0)
    x = np.asarray(x)
    ok = np.isfinite(m)
    (line,) = ax.plot(x[ok], m[ok], label=label, **kw)
    ax.fill_between(x[ok], (m - sd)[ok], (m + sd)[ok], alpha=0.2, color=line.get_color())
    ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grid(rows: int, cols: int, width: float = 5.0, height: float = 3.6) -> tuple[Any, Any]:
    plt = pyplot()
    return plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)


def curve_panels(results: list[dict], path: Path, *, label: Callable[[dict], str],
                 color: Callable[[dict], Any], title: Callable[[str, Any], str],
                 row: str | None = None, width: float = 5.0, height: float = 3.6) -> None:
    """Training return against env steps, mean +- std over seeds: one panel per env
    (columns) and per value of ``r[row]`` (rows; one row if None), one curve per run."""
    envs_ = list(dict.fromkeys(r["env"] for r in results))
    rows = sorted({r[row] for r in results}) if row else [None]
    fig, axes = grid(len(rows), len(envs_), width, height)
    for axrow, value in zip(axes, rows, strict=True):
        for ax, env_name in zip(axrow, envs_, strict=True):
            for r in results:
                if r["env"] == env_name and (row is None or r[row] == value):
                    curve(ax, r["env_steps"], r["episode_return"], label(r), color=color(r))
            ax.set_title(title(env_name, value))
            ax.set_xlabel("environment steps")
            ax.set_ylabel("average return (training episodes)")
            ax.legend(fontsize=8)
    save(fig, path)


def eval_table(results: list[dict], keys: Sequence[str] = ("env", "learner")) -> str:
    """Markdown: one row per run, the final evaluation return mean +- std over seeds."""
    head = [*keys, "env steps", "final eval return (mean +- std over seeds)", "per seed",
            "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        ev = np.asarray(r["eval_return_per_seed"])
        cells = [str(r[k]) for k in keys] + [
            f"{r['env_steps'][-1]:,}", f"{ev.mean():.1f} +- {ev.std():.1f}",
            str(np.round(ev, 1).tolist()), f"{r['wall_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def log_run(r: dict, keys: Sequence[str] = ("env", "learner")) -> None:
    ev = np.asarray(r["eval_return_per_seed"])
    print(" ".join(f"{r[k]!s:12}" for k in keys)
          + f" eval {ev.mean():8.2f} +- {ev.std():6.2f} (seeds {np.round(ev, 1).tolist()})"
          f" {r['wall_s']:.0f} s", file=sys.stderr, flush=True)


def write(out: Path, name: str, results: Any, md: str,
          figures: dict[str, Callable[[Path], None]]) -> list[Path]:
    """Write ``<name>.json`` (``results``, keys starting with ``_`` dropped),
    ``<name><suffix>.png`` for each figure-drawing function in ``figures`` (keyed by
    suffix), and ``<name>.md`` into ``out``; print the table and the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if not str(k).startswith("_")}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    written = [out / f"{name}.json"]
    written[0].write_text(json.dumps(clean(results)) + "\n")
    for suffix, draw in figures.items():
        path = out / f"{name}{suffix}.png"
        draw(path)
        written.append(path)
    written.append(out / f"{name}.md")
    written[-1].write_text(md + "\n")
    print(md)
    print("written " + ", ".join(map(str, written)))
    return written


def save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    pyplot().close(fig)
