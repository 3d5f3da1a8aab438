"""A run directory: everything needed to reproduce, resume and compare a run.

::

    runs/ppo-cartpole-20261122-101500/
      config.json      resolved config, run options, seeds, package versions, git commit
      metrics.jsonl    one record per chunk per seed (see METRIC_FIELDS)
      checkpoints/     orbax checkpoints of the full train state (see checkpoint.py)
      curve.png        return vs env steps, mean +- std over seeds
      eval.json        the latest ``metareward eval`` (or end-of-training) evaluation
      summary.json     how the run ended: finished / interrupted / non-finite
      wandb/           only with --wandb offline|online
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

#: Fields every metrics.jsonl record has; algorithms add their own scalars (losses...).
METRIC_FIELDS = (
    "seed",  # index of the seed in the run, 0..seeds-1
    "chunk",  # index of the chunk, 0-based
    "update",  # updates done by the end of the chunk
    "env_steps",  # env steps of this seed by the end of the chunk
    "wall_time",  # seconds of training (all sessions of the run, compilation excluded)
    "steps_per_sec",  # env steps per second in this chunk, summed over all seeds
    "return_mean",  # mean return of the episodes that ended in the chunk (null if none)
    "return_std",  # their standard deviation (null if none)
    "episodes",  # how many ended
)

_PACKAGES = (
    "metareward",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "chex",
    "orbax-checkpoint",
    "brax",
    "mujoco",
    "mujoco-mjx",
    "gymnax",
    "numpy",
    "wandb",
)


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_info() -> dict[str, Any] | None:
    """Commit (and whether the tree is dirty) of the metareward source, if it is a git
    checkout (an editable install); ``None`` otherwise."""
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def default_run_dir(algo: str, env: str, root: str | Path = "runs") -> Path:
    """``runs/ALGO-ENV-YYYYmmdd-HHMMSS`` (with ``-2``, ``-3``... if taken)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{algo}-{env.replace(',', '+')}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _clean(v: Any) -> Any:
    """NaN/inf become null: metrics.jsonl stays strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class RunDir:
    """Paths and files of one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config_json = property(lambda self: self.path / "config.json")
    metrics_jsonl = property(lambda self: self.path / "metrics.jsonl")
    checkpoints = property(lambda self: self.path / "checkpoints")
    curve_png = property(lambda self: self.path / "curve.png")
    eval_json = property(lambda self: self.path / "eval.json")
    summary_json = property(lambda self: self.path / "summary.json")

    def exists(self) -> bool:
        return self.config_json.is_file()

    def create(self, record: dict[str, Any]) -> None:
        """Makes the directory and writes ``config.json`` (fails if it is already a run)."""
        if self.exists():
            raise FileExistsError(
                f"{self.path} is already a run directory; continue it with "
                f"`metareward resume {self.path}` or choose another --out"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        record = {
            **record,
            "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "versions": versions(),
            "git": git_info(),
            "host": platform.node(),
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        }
        self.write_json(self.config_json, record)

    def load_config(self) -> dict[str, Any]:
        if not self.exists():
            raise FileNotFoundError(f"{self.path} is not a run directory (no config.json)")
        return json.loads(self.config_json.read_text())

    @staticmethod
    def write_json(path: Path, obj: Any) -> None:
        """Atomic write (temp file + rename): readers never see half a file."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
        os.replace(tmp, path)

    def append_metrics(self, records: Iterable[dict[str, Any]]) -> None:
        lines = [
            json.dumps({k: _clean(v) for k, v in r.items()}, default=_json_default)
            for r in records
        ]
        # No fsync: records past the checkpoint a run resumes from are dropped anyway,
        # and a line cut off by a crash is skipped when reading.
        with self.metrics_jsonl.open("a") as f:
            f.write("".join(line + "\n" for line in lines))

    def read_metrics(self) -> list[dict[str, Any]]:
        """All complete records (a line cut off by a crash is ignored)."""
        if not self.metrics_jsonl.is_file():
            return []
        out = []
        for line in self.metrics_jsonl.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def truncate_metrics(self, max_update: int) -> None:
        """Drops records past ``max_update`` (written after the checkpoint resumed from)."""
        kept = [r for r in self.read_metrics() if r.get("update", 0) <= max_update]
        tmp = self.metrics_jsonl.with_name("metrics.jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.metrics_jsonl)


__all__ = ["METRIC_FIELDS", "RunDir", "default_run_dir", "git_info", "versions"]
