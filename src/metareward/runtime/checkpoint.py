"""Checkpoints of a run's full training state (orbax), with integrity checks.

A checkpoint is one orbax step directory ``checkpoints/<update>/`` holding the whole
(seed-batched) train state — parameters, optimizer states, normaliser, env states, PRNG
keys, counters, and a meta-learner's outer state — plus a small JSON ``meta`` item
(update, env steps, wall time). orbax writes into a temporary directory and renames it
when complete, so a save cut off half-way never looks like a checkpoint. On top of that,
after each save we write ``metareward_manifest.json`` with the size and SHA-256 of every
file; a checkpoint whose manifest is missing or does not match (a truncated or damaged
file) is skipped with a warning, moved to ``corrupt_checkpoints/``, and the previous good
one is used.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import jax

MANIFEST = "metareward_manifest.json"


class CheckpointWarning(UserWarning):
    """A checkpoint was found damaged and skipped."""


class NoCheckpointError(FileNotFoundError):
    """A run directory holds no usable checkpoint."""


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_manifest(step_dir: Path) -> None:
    files = {
        str(p.relative_to(step_dir)): {"size": p.stat().st_size, "sha256": _digest(p)}
        for p in sorted(step_dir.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    tmp = step_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(files, indent=0))
    tmp.replace(step_dir / MANIFEST)


def verify(step_dir: Path) -> str | None:
    """``None`` if every file of the checkpoint matches its manifest, else the problem."""
    manifest = step_dir / MANIFEST
    if not manifest.is_file():
        return "no manifest (the save did not finish)"
    try:
        files = json.loads(manifest.read_text())
    except (OSError, ValueError) as e:
        return f"unreadable manifest ({e})"
    for rel, want in files.items():
        p = step_dir / rel
        if not p.is_file():
            return f"missing file {rel}"
        if p.stat().st_size != want["size"]:
            return f"file {rel} has {p.stat().st_size} bytes, expected {want['size']}"
        if _digest(p) != want["sha256"]:
            return f"file {rel} does not match its checksum"
    return None


class Checkpointer:
    """Saves and restores the train state of one run directory.

    ``max_to_keep`` newest checkpoints are kept, so a damaged newest one still leaves
    an older good one. Saves are asynchronous by default: ``save`` copies the state to
    host memory and returns while orbax writes the files in the background; the
    manifest that marks the checkpoint good is written once the files are complete (at
    the next ``save``, ``wait``, ``restore_latest`` or ``close``).
    """

    def __init__(self, directory: str | Path, max_to_keep: int = 3, asynchronous: bool = True,
                 primary_only: bool = False):
        self.directory = Path(directory).absolute()
        self.max_to_keep = max_to_keep
        self.asynchronous = asynchronous
        # In a multi-process run only process 0 saves (host copies it gathered) and
        # restores; orbax must then not wait for the other processes at its barriers.
        self.primary_only = primary_only
        self._manager = None
        self._pending: int | None = None

    @property
    def manager(self):
        if self._manager is None:
            ocp = _ocp()
            extra = {}
            if self.primary_only:
                # (orbax refuses create=True with active_processes: make it here.)
                self.directory.mkdir(parents=True, exist_ok=True)
                extra["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
                    primary_host=0, active_processes={0})
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self.max_to_keep,
                enable_async_checkpointing=self.asynchronous,
                create=not self.primary_only,
                **extra,
            )
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        return self._manager

    def wait(self) -> None:
        """Blocks until the last save is on disk, then marks it good (its manifest)."""
        if self._pending is None:
            return
        step, self._pending = self._pending, None
        self.manager.wait_until_finished()
        step_dir = self.directory / str(step)
        if step_dir.is_dir():  # (orbax may already have removed it: max_to_keep)
            _write_manifest(step_dir)

    def steps(self) -> list[int]:
        """Steps (update counts) of the complete checkpoints on disk, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(
            int(p.name)
            for p in self.directory.iterdir()
            if p.is_dir() and p.name.isdigit() and (p / MANIFEST).is_file()
        )

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> Path:
        """Starts writing the checkpoint of update ``step``; see the class docstring."""
        ocp = _ocp()
        self.wait()
        step_dir = self.directory / str(step)
        if step_dir.exists():  # e.g. a damaged checkpoint of this step was skipped
            shutil.rmtree(step_dir)
            self.close()
        # Host copies first: orbax's handling of numpy arrays is several times cheaper.
        state = jax.device_get(state)
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self._pending = step
        if not self.asynchronous:
            self.wait()
        return step_dir

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]]:
        """The newest good checkpoint as ``(step, state, meta)``.

        ``abstract_state`` gives the structure, shapes and dtypes (``jax.eval_shape`` of
        the batched ``init``). Damaged checkpoints are moved aside with a
        :class:`CheckpointWarning` and the next older one is tried.
        """
        ocp = _ocp()
        self.wait()
        candidates = sorted(
            (int(p.name) for p in self.directory.iterdir() if p.is_dir() and p.name.isdigit()),
            reverse=True,
        ) if self.directory.is_dir() else []
        for step in candidates:
            step_dir = self.directory / str(step)
            problem = verify(step_dir)
            if problem is None:
                try:
                    restored = self.manager.restore(
                        step,
                        args=ocp.args.Composite(
                            state=ocp.args.StandardRestore(abstract_state),
                            meta=ocp.args.JsonRestore(),
                        ),
                    )
                    return step, restored.state, dict(restored.meta)
                except Exception as e:  # orbax/tensorstore raise many types
                    problem = f"restore failed: {type(e).__name__}: {e}"
            self._quarantine(step_dir, problem)
        raise NoCheckpointError(f"no usable checkpoint in {self.directory}")

    def _quarantine(self, step_dir: Path, problem: str) -> None:
        dest = self.directory.parent / "corrupt_checkpoints" / step_dir.name
        warnings.warn(
            f"checkpoint {step_dir} is damaged ({problem}); moved to {dest}, "
            "using the previous one",
            CheckpointWarning,
            stacklevel=3,
        )
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(step_dir), str(dest))
        self.close()  # the manager caches the step list

    def close(self) -> None:
        """Finishes a pending save and releases orbax's manager."""
        self.wait()
        if self._manager is not None:
            self._manager.close()
            self._manager = None


def abstract(tree: Any) -> Any:
    """Shapes and dtypes (weak types dropped) of a pytree of arrays or abstract values."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


__all__ = ["MANIFEST", "CheckpointWarning", "Checkpointer", "NoCheckpointError", "verify"]
