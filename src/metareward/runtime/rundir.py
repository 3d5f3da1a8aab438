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
      .lock            held by the one process training the run (see lock.py)

``--out`` must be a new or empty directory: :meth:`RunDir.check_new` says why not before
anything is compiled, and :meth:`RunDir.create` makes it under its lock.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from metareward.errors import ConfigError
from metareward.runtime.lock import LOCK_FILE, RunLock
from metareward.runtime.paths import check_writable_dir

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
    """The versions of Python and of the packages a run depends on.

    Returns:
      ``{"python": ..., package: version}``; ``None`` for a package not installed.
    """
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


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """Re-raises an ``OSError`` without a file name (a write that hit a full disk) as one
    that names ``path``."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from e


def default_run_dir(algo: str, env: str, root: str | Path = "runs") -> Path:
    """``runs/ALGO-ENV-YYYYmmdd-HHMMSS`` (with ``-2``, ``-3``... if taken).

    Args:
      algo: the algorithm's name.
      env: the env's name (a comma-separated list becomes ``a+b``).
      root: the directory the run directories go in.

    Returns:
      A path that does not exist yet (under ``root``).
    """
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
        """Whether this is a run directory (it has a ``config.json`` file).

        Returns:
          ``True`` if ``config.json`` is a file.
        """
        return self.config_json.is_file()

    def check_new(self) -> None:
        """Raises ``ConfigError`` unless the path can become a new run directory: absent
        or an empty directory, not under a file, and writable. Writes nothing.

        A directory left by an earlier process (a lock file, a ``config.json`` without
        checkpoints) is not new: continue it with ``metareward resume``."""
        p = self.path
        try:
            check_writable_dir(p)
        except ValueError as e:
            raise ConfigError(f"--out {e}") from None
        if self.exists():
            raise ConfigError(
                f"{p} is already a run directory; continue it with "
                f"`metareward resume {p}` or choose another --out")
        entries = sorted(e.name for e in p.iterdir()) if p.is_dir() else []
        if entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise ConfigError(f"--out {p} is not empty (it holds {shown}); give a new or "
                              "empty directory")

    def create(self, record: dict[str, Any]) -> RunLock:
        """Makes the directory, takes its lock and writes ``config.json``.

        Args:
          record: what ``config.json`` stores (:meth:`metareward.runtime.driver.Plan.record`
            and the run's identity); the creation time, versions, git commit, host and
            command line are added.

        Returns:
          The run's :class:`~metareward.runtime.lock.RunLock`, held (release it when the
          run ends, or let the process's end release it).

        Raises:
          ConfigError: the path is not a new or empty directory (:meth:`check_new`).
          RunLockedError: another process is creating or running it.
          OSError: the directory cannot be made or written (the message names it).
        """
        self.check_new()
        self.path.mkdir(parents=True, exist_ok=True)
        lock = RunLock(self.path).acquire()
        try:
            self.check_new_locked()
            record = {
                **record,
                "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "versions": versions(),
                "git": git_info(),
                "host": platform.node(),
                "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
            }
            self.write_json(self.config_json, record)
        except BaseException:
            lock.release()
            raise
        return lock

    def check_new_locked(self) -> None:
        """:meth:`check_new` for a directory whose lock this process holds (the lock
        file is its only entry)."""
        others = sorted(e.name for e in self.path.iterdir() if e.name != LOCK_FILE)
        if self.exists():
            raise ConfigError(f"{self.path} became a run directory while this one started; "
                              f"continue it with `metareward resume {self.path}`")
        if others:
            raise ConfigError(f"--out {self.path} is not empty (it holds "
                              f"{', '.join(others[:5])}); give a new or empty directory")

    def lock(self) -> RunLock:
        """Takes the run directory's lock (:class:`~metareward.runtime.lock.RunLock`).

        Raises:
          RunLockedError: another process holds it.
        """
        return RunLock(self.path).acquire()

    def load_config(self) -> dict[str, Any]:
        """The run's ``config.json``.

        Raises:
          FileNotFoundError: there is none (not a run directory).
          ConfigError: it is not UTF-8 JSON holding an object with the keys a run
            directory's config has (the message names the file).
        """
        if not self.exists():
            raise FileNotFoundError(f"{self.path} is not a run directory (no config.json)")
        try:
            rec = json.loads(self.config_json.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"{self.config_json} is not UTF-8 text") from None
        except ValueError as e:
            raise ConfigError(f"{self.config_json} is not valid JSON: {e}") from None
        if not isinstance(rec, dict):
            raise ConfigError(f"{self.config_json} does not hold a JSON object")
        missing = [k for k in ("algo", "env", "config", "run") if k not in rec]
        if missing:
            raise ConfigError(f"{self.config_json} lacks the key(s) {missing} a run "
                              "directory's config.json has")
        bad = [k for k in ("config", "run") if not isinstance(rec[k], dict)]
        if bad or "num_updates" not in rec["run"]:
            raise ConfigError(f"{self.config_json}: 'config' and 'run' must be objects and "
                              "'run' must have 'num_updates'")
        return rec

    def run_id(self) -> str | None:
        """The run's identity, saved with each checkpoint (``None`` for a run directory
        from before checkpoints carried it)."""
        rec = self.load_config()
        return rec.get("run_id") or rec.get("wandb_id")

    @staticmethod
    def write_json(path: Path, obj: Any) -> None:
        """Atomic write (temp file + rename): readers never see half a file.

        Args:
          path: the file to write (the temp file is ``path`` with ``.tmp`` appended).
          obj: the JSON-serialisable object, written indented with a final newline.

        Raises:
          OSError: the write or rename failed (the temp file is removed first; an error
            without a file name is re-raised naming ``path``).
        """
        tmp = path.with_name(path.name + ".tmp")
        with naming(path):
            try:
                tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
                os.replace(tmp, path)
            except OSError:
                tmp.unlink(missing_ok=True)
                raise

    def append_metrics(self, records: Iterable[dict[str, Any]]) -> None:
        """Appends records to ``metrics.jsonl``, one JSON line each (not fsynced).

        Args:
          records: the metrics records; a non-finite float becomes ``null``.
        """
        lines = [
            json.dumps({k: _clean(v) for k, v in r.items()}, default=_json_default)
            for r in records
        ]
        # No fsync: records past the checkpoint a run resumes from are dropped anyway,
        # and a line cut off by a crash is skipped when reading.
        with naming(self.metrics_jsonl), self.metrics_jsonl.open("a") as f:
            f.write("".join(line + "\n" for line in lines))

    def read_metrics(self) -> list[dict[str, Any]]:
        """All complete records (a line cut off by a crash is ignored, and so is a line
        that is not a JSON object).

        Returns:
          The records, in file order; ``[]`` without a metrics.jsonl.

        Raises:
          ValueError: the file is not UTF-8 text (not a metrics file).
        """
        if not self.metrics_jsonl.is_file():
            return []
        try:
            text = self.metrics_jsonl.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{self.metrics_jsonl} is not UTF-8 text (byte {e.start}: "
                             f"{e.reason}); it is not a metrics file") from None
        out = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def truncate_metrics(self, max_update: int) -> None:
        """Drops records past ``max_update`` (written after the checkpoint resumed from).

        Args:
          max_update: the last update to keep; records without ``update`` count as update 0
            and are kept. Incomplete or non-object lines are dropped too (the file is
            rewritten from :meth:`read_metrics`).
        """
        kept = [r for r in self.read_metrics() if r.get("update", 0) <= max_update]
        tmp = self.metrics_jsonl.with_name("metrics.jsonl.tmp")
        with naming(self.metrics_jsonl):
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.metrics_jsonl)


__all__ = ["METRIC_FIELDS", "RunDir", "default_run_dir", "git_info", "versions"]
