"""Checkpoints of a run's full training state (orbax), with integrity and identity checks.

A checkpoint is one orbax step directory ``checkpoints/<update>/`` holding the whole
(seed-batched) train state — parameters, optimizer states, normaliser, env states, PRNG
keys, counters, and a meta-learner's outer state — plus a small JSON ``meta`` item
(update, env steps, wall time, and the ``run_id`` of the run that wrote it).

What makes a checkpoint good, and what happens when one is not:

* orbax writes into ``<update>.orbax-checkpoint-tmp`` and renames it to ``<update>``
  once complete, so a save cut off half-way never looks like a checkpoint.
* ``metareward_manifest.json`` (size and SHA-256 of every file) is written *inside the
  temporary directory* by orbax's finalisation callback, before the rename: a finished
  checkpoint has its manifest the moment it exists, whatever happens to the process after
  (SIGKILL between saves, a second Ctrl-C). A finished orbax step without a manifest (a
  checkpoint written by an older version, or a synchronous save killed between the
  rename and the manifest) is *recoverable*: it is used if it restores and fits, and
  gets its manifest then.
* **Damage** (a file missing, truncated or not matching its checksum; a step orbax never
  finished) is quarantined by a writer (``train``/``resume``): the step moves to
  ``corrupt_checkpoints/`` with a :class:`CheckpointWarning` and the next older one is
  tried. A reader (``eval``, ``meta-test``, :func:`metareward.runtime.driver.load`) only
  skips it, and never moves, deletes or writes a checkpoint file.
* **Incompatibility** (the state's structure, shapes or dtypes differ from what the current
  code and config build: a renamed field, an edited ``hidden``) raises
  :class:`IncompatibleCheckpointError` naming the first differing leaf, and leaves every
  file in place, so rolling the code back recovers the run.
* **A checkpoint of another run** (copied in) is refused with
  :class:`ForeignCheckpointError`; it carries the ``run_id`` of its own run.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import jax

from metareward.runtime import faults

MANIFEST = "metareward_manifest.json"
#: orbax's name for a step directory being written (``<step>`` + this suffix).
TMP_SUFFIX = ".orbax-checkpoint-tmp"
#: The file orbax writes into a step directory when it finalises it.
ORBAX_STEP_METADATA = "_CHECKPOINT_METADATA"
#: orbax bookkeeping it rewrites when it commits the step (after the manifest is written),
#: so left out of the manifest; the state's own files are all in it.
_UNMANIFESTED = (ORBAX_STEP_METADATA, "commit_success.txt")


class CheckpointWarning(UserWarning):
    """A checkpoint was found damaged and skipped."""


class NoCheckpointError(FileNotFoundError):
    """A run directory holds no usable checkpoint."""


class IncompatibleCheckpointError(ValueError):
    """A checkpoint's state does not fit what the current code and config build."""


class ForeignCheckpointError(ValueError):
    """A checkpoint was written by another run."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (disk full, permissions...); the older ones are intact."""


def _write_error(step_dir: Path, e: BaseException) -> CheckpointWriteError:
    """One line for a failed save: tensorstore's messages end in the OS error before a
    bracketed spec of hundreds of characters, which is cut off."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if isinstance(e, OSError) and e.strerror:
        first = e.strerror
    elif " [os_error_code=" in first or " [tensorstore_spec=" in first:
        first = re.split(r" \[(?:os_error_code|tensorstore_spec)=", first)[0]
        first = first.rsplit(": ", 1)[-1]
    if len(first) > 300:
        first = first[:300] + "..."
    return CheckpointWriteError(f"writing checkpoint {step_dir} failed: {first}")


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
        if p.is_file() and not p.name.startswith(MANIFEST) and p.name not in _UNMANIFESTED
    }
    tmp = step_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(files, indent=0))
    tmp.replace(step_dir / MANIFEST)


def verify(step_dir: Path) -> str | None:
    """``None`` if every file of the checkpoint matches its manifest, else the problem.

    A step that orbax finished but that has no manifest is reported as ``"no manifest
    (...)"``: :meth:`Checkpointer.restore_latest` still tries it (see the module
    docstring); :func:`finished` tells the two apart.

    Args:
      step_dir: a checkpoint's step directory (``checkpoints/<step>``).

    Returns:
      ``None``, or the problem in words (no or unreadable manifest, a missing file, a
      wrong size or checksum).
    """
    manifest = step_dir / MANIFEST
    if not manifest.is_file():
        return "no manifest (the save did not finish)"
    try:
        files = json.loads(manifest.read_text())
    except (OSError, ValueError) as e:
        return f"unreadable manifest ({e})"
    if not isinstance(files, dict):
        return "unreadable manifest (not a JSON object)"
    for rel, want in files.items():
        p = step_dir / rel
        if not p.is_file():
            return f"missing file {rel}"
        if p.stat().st_size != want["size"]:
            return f"file {rel} has {p.stat().st_size} bytes, expected {want['size']}"
        if _digest(p) != want["sha256"]:
            return f"file {rel} does not match its checksum"
    return None


def finished(step_dir: Path) -> bool:
    """Whether orbax finished this step directory (renamed it from its temporary name
    after writing its step metadata), whether or not it has a manifest.

    Args:
      step_dir: a directory under ``checkpoints/``.

    Returns:
      ``True`` if its name is a step number and it holds orbax's step metadata.
    """
    return step_dir.name.isdigit() and (step_dir / ORBAX_STEP_METADATA).is_file()


def _path_name(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _leaves(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """``"a/b/c" -> (shape, dtype)`` of every array leaf of a pytree of arrays, abstract
    arrays or orbax array metadata (dataclass fields and dict keys read alike)."""
    flat = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))[0]
    return {
        "/".join(_path_name(e) for e in path): (tuple(leaf.shape), str(leaf.dtype))
        for path, leaf in flat
        if hasattr(leaf, "shape")
    }


def first_difference(saved: Any, wanted: Any) -> str | None:
    """The first leaf (in the wanted state's order) where a checkpoint's state ``saved``
    and the state the code builds now, ``wanted``, differ in presence, shape or dtype;
    ``None`` if they agree.

    Args:
      saved: the checkpoint's state (its pytree of arrays, or of their metadata).
      wanted: the state the code builds now (e.g. ``jax.eval_shape`` of ``init``).

    Returns:
      The difference in words, or ``None``; a leaf only in the checkpoint is reported
      after every wanted leaf agreed.
    """
    have, want = _leaves(saved), _leaves(wanted)
    for name, (shape, dtype) in want.items():
        if name not in have:
            return f"leaf {name} {shape} is not in the checkpoint"
        if have[name][0] != shape:
            return f"leaf {name} has shape {have[name][0]} in the checkpoint, {shape} now"
        if have[name][1] != dtype:
            return f"leaf {name} has dtype {have[name][1]} in the checkpoint, {dtype} now"
    extra = [n for n in have if n not in want]
    if extra:
        return f"leaf {extra[0]} of the checkpoint is not in the current state"
    return None


class Checkpointer:
    """Saves and restores the train state of one run directory.

    ``max_to_keep`` newest checkpoints are kept, so a damaged newest one still leaves an
    older good one. Saves are asynchronous by default: ``save`` copies the state to host
    memory and returns while orbax writes the files in the background; orbax's
    finalisation callback writes the manifest before the step gets its final name (see
    the module docstring).

    Args:
      directory: the run's ``checkpoints/`` directory.
      max_to_keep: newest checkpoints kept.
      asynchronous: write in the background (``wait`` blocks until done).
      primary_only: in a multi-process run only process 0 saves and restores.
      read_only: a reader (``eval``, ``meta-test``): it never writes, moves or deletes a
        file, and skips a damaged checkpoint instead of quarantining it.
      run_id: the identity of the run; saved with each checkpoint, and a checkpoint
        carrying another run's id is refused on restore (``None``: not checked).
    """

    def __init__(self, directory: str | Path, max_to_keep: int = 3, asynchronous: bool = True,
                 primary_only: bool = False, read_only: bool = False,
                 run_id: str | None = None):
        self.directory = Path(directory).absolute()
        self.max_to_keep = max_to_keep
        self.asynchronous = asynchronous and not read_only
        # In a multi-process run only process 0 saves (host copies it gathered) and
        # restores; orbax must then not wait for the other processes at its barriers.
        self.primary_only = primary_only
        self.read_only = read_only
        self.run_id = run_id
        self._manager = None
        self._pending: int | None = None
        self._callback_error: BaseException | None = None

    @property
    def manager(self):
        """The orbax ``CheckpointManager`` of ``directory``, built on first use.

        Returns:
          The manager (read-only for a reader; for ``primary_only``, saving on process 0 only).
        """
        if self._manager is None:
            ocp = _ocp()
            extra: dict[str, Any] = {}
            if self.primary_only:
                # (orbax refuses create=True with active_processes: make it here.)
                self.directory.mkdir(parents=True, exist_ok=True)
                extra["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
                    primary_host=0, active_processes={0})
            if self.asynchronous:
                extra["async_options"] = ocp.AsyncOptions(
                    post_finalization_callback=self._on_finalized)
            if self.read_only:
                options = ocp.CheckpointManagerOptions(read_only=True, create=False)
            else:
                options = ocp.CheckpointManagerOptions(
                    max_to_keep=self.max_to_keep,
                    enable_async_checkpointing=self.asynchronous,
                    create=not self.primary_only,
                    **extra,
                )
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        return self._manager

    def remove_unfinished(self) -> list[str]:
        """Deletes the temporary directories of saves that never finished (a process
        killed while writing); only for the run's one writer, which holds its lock.

        Returns:
          The names removed.
        """
        if self.read_only or not self.directory.is_dir():
            return []
        stale = sorted(p for p in self.directory.iterdir() if TMP_SUFFIX in p.name)
        for p in stale:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        return [p.name for p in stale]

    def _on_finalized(self) -> None:
        """orbax's post-finalisation callback (its background thread): the step's files
        are complete and still under the temporary name; the manifest goes in now, so the
        rename that follows publishes a checkpoint that is already marked good."""
        step = self._pending
        if step is None:
            return
        faults.point("in-save", step)
        try:
            for name in (f"{step}{TMP_SUFFIX}", str(step)):
                if (self.directory / name).is_dir():
                    _write_manifest(self.directory / name)
                    return
        except Exception as e:  # reported by wait(), not lost in orbax's thread
            self._callback_error = _write_error(self.directory / str(step), e)

    def wait(self) -> None:
        """Blocks until the last save is on disk and marked good (its manifest).

        Signal-safe: a ``KeyboardInterrupt`` (a second Ctrl-C) arriving while it waits is
        held until the checkpoint is complete, then raised."""
        if self._pending is None:
            return
        interrupted: BaseException | None = None
        step_dir = self.directory / str(self._pending)
        failure: BaseException | None = None
        while True:
            try:
                self.manager.wait_until_finished()
                # (orbax may already have removed it: max_to_keep; or a synchronous save)
                if step_dir.is_dir() and not (step_dir / MANIFEST).is_file():
                    _write_manifest(step_dir)
                break
            except KeyboardInterrupt as e:
                interrupted = e
            except Exception as e:  # orbax's background thread failed: disk full...
                failure = _write_error(step_dir, e)
                break
        self._pending = None
        if failure is not None:
            raise failure
        error, self._callback_error = self._callback_error, None
        if error is not None:
            raise error
        if interrupted is not None:
            raise interrupted

    def steps(self) -> list[int]:
        """Steps (update counts) of the finished checkpoints on disk, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(int(p.name) for p in self.directory.iterdir()
                      if p.is_dir() and finished(p))

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> Path:
        """Starts writing the checkpoint of update ``step``; see the class docstring.

        Args:
          step: the update count the checkpoint is of (its directory's name); an existing
            directory of that step is replaced.
          state: the (seed-batched) train state; copied to host memory before writing.
          meta: the JSON ``meta`` item (``run_id`` is added when the checkpointer has one).

        Returns:
          The step directory (still being written when asynchronous).

        Raises:
          PermissionError: the checkpointer was opened read-only.
          CheckpointWriteError: orbax failed to start the save.
        """
        if self.read_only:
            raise PermissionError(f"{self.directory} was opened read-only")
        ocp = _ocp()
        self.wait()
        step_dir = self.directory / str(step)
        if step_dir.exists():  # e.g. a damaged checkpoint of this step was skipped
            shutil.rmtree(step_dir)
            self.close()
        if self.run_id is not None:
            meta = {**meta, "run_id": self.run_id}
        # Host copies first: orbax's handling of numpy arrays is several times cheaper.
        state = _fill_empty(jax.device_get(state))
        self._pending = step
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
                force=True,
            )
        except Exception as e:
            self._pending = None
            raise _write_error(step_dir, e) from e
        if not self.asynchronous:
            self.wait()
        return step_dir

    def candidates(self) -> list[int]:
        """Steps of every step directory (finished or not), newest first."""
        if not self.directory.is_dir():
            return []
        return sorted((int(p.name) for p in self.directory.iterdir()
                       if p.is_dir() and p.name.isdigit()), reverse=True)

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]]:
        """The newest good checkpoint as ``(step, state, meta)``.

        Args:
          abstract_state: the structure, shapes and dtypes the current code builds
            (``jax.eval_shape`` of the batched ``init``).

        Returns:
          ``(step, state, meta)`` of the newest checkpoint that is intact, of this run,
          and fits ``abstract_state``.

        Raises:
          NoCheckpointError: no intact checkpoint (damaged ones were quarantined by a
            writer, skipped by a reader, each with a :class:`CheckpointWarning`).
          IncompatibleCheckpointError: the newest intact checkpoint's state differs from
            ``abstract_state`` (message: the first differing leaf); nothing is moved.
          ForeignCheckpointError: the newest intact checkpoint is another run's.
        """
        self.wait()
        damaged: list[int] = []
        for step in self.candidates():
            step_dir = self.directory / str(step)
            problem = verify(step_dir)
            if problem is not None and (step_dir / MANIFEST).is_file():
                self._damaged(step_dir, problem)
                damaged.append(step)
                continue
            if problem is not None and not finished(step_dir):
                self._damaged(step_dir, "orbax never finished it")
                damaged.append(step)
                continue
            try:
                meta = self._read_meta(step)
            except Exception as e:  # orbax/tensorstore raise many types
                self._damaged(step_dir, f"unreadable meta: {type(e).__name__}: {e}")
                damaged.append(step)
                continue
            self._check_identity(step_dir, meta)
            self._check_fits(step, step_dir, abstract_state)
            try:
                state = self._read_state(step, abstract_state)
            except Exception as e:
                self._damaged(step_dir, f"restore failed: {type(e).__name__}: {e}")
                damaged.append(step)
                continue
            mismatch = first_difference(state, abstract_state)
            if mismatch is not None:
                raise IncompatibleCheckpointError(
                    f"checkpoint {step_dir} restored with other shapes than the current "
                    f"code builds: {mismatch}")
            if problem is not None and not self.read_only:
                _write_manifest(step_dir)  # finished, restored and fits: good
            return step, state, meta
        where = (f"; {len(damaged)} damaged one(s) were "
                 + ("skipped" if self.read_only else
                    f"moved to {self.directory.parent / 'corrupt_checkpoints'}")
                 if damaged else "")
        raise NoCheckpointError(f"no usable checkpoint in {self.directory}{where}")

    def _read_meta(self, step: int) -> dict[str, Any]:
        ocp = _ocp()
        restored = self.manager.restore(
            step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        meta = restored.meta
        if not isinstance(meta, dict):
            raise ValueError(f"meta is a {type(meta).__name__}, not an object")
        return dict(meta)

    def _read_state(self, step: int, abstract_state: Any) -> Any:
        ocp = _ocp()
        restored = self.manager.restore(
            step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_fill_empty(abstract_state))))
        return _unfill_empty(restored.state, abstract_state)

    def _check_identity(self, step_dir: Path, meta: dict[str, Any]) -> None:
        owner = meta.get("run_id")
        if self.run_id is not None and owner is not None and owner != self.run_id:
            raise ForeignCheckpointError(
                f"checkpoint {step_dir} was written by another run (run_id {owner}, this "
                f"run's is {self.run_id}); remove it from {self.directory}")

    def _check_fits(self, step: int, step_dir: Path, abstract_state: Any) -> None:
        try:  # (reads the state's metadata file; writes nothing)
            saved = _ocp().StandardCheckpointHandler().metadata(step_dir / "state")
            saved = getattr(saved, "tree", saved)
        except Exception:  # no readable metadata: the restore itself will tell
            return
        if saved is None:
            return
        mismatch = first_difference(saved, _fill_empty(abstract_state))
        if mismatch is not None:
            raise IncompatibleCheckpointError(
                f"checkpoint {step_dir} does not fit the state the current code and config "
                f"build: {mismatch}. Nothing was changed on disk; resume with the code and "
                "config that wrote it")

    def _damaged(self, step_dir: Path, problem: str) -> None:
        if self.read_only:
            warnings.warn(f"checkpoint {step_dir} is damaged ({problem}); skipped",
                          CheckpointWarning, stacklevel=3)
            return
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
        """Finishes a pending save and releases orbax's manager (a manager whose save
        failed is dropped without closing: closing its event loop under tensorstore's
        failed writes only prints their tracebacks)."""
        try:
            self.wait()
        except BaseException:
            self._manager = None
            raise
        if self._manager is not None:
            self._manager.close()
            self._manager = None


#: The shape a zero-size leaf is saved with (orbax refuses to write zero-size arrays).
_EMPTY_SHAPE = (1,)


def _fill_empty(tree: Any) -> Any:
    """``tree`` with every zero-size leaf (e.g. an MJX model's ``act`` of a model without
    activations, shape ``(seeds, 0)``) replaced by a one-element placeholder of its
    dtype, concrete or abstract like the leaf; the placeholder is what is written and
    read, and :func:`_unfill_empty` gives the leaf its shape back from the abstract
    state. A checkpoint whose placeholder meets a non-empty leaf (or the other way
    round) does not fit (:meth:`Checkpointer.restore_latest`)."""
    import numpy as np

    def fill(x: Any) -> Any:
        if getattr(x, "size", 1) != 0:
            return x
        if isinstance(x, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct(_EMPTY_SHAPE, x.dtype)
        return np.zeros(_EMPTY_SHAPE, x.dtype)

    return jax.tree.map(fill, tree)


def _unfill_empty(tree: Any, abstract_state: Any) -> Any:
    """The inverse of :func:`_fill_empty`: each leaf that is zero-size in
    ``abstract_state`` becomes an empty array of that shape and dtype."""
    import numpy as np

    return jax.tree.map(
        lambda x, a: np.zeros(a.shape, a.dtype) if a.size == 0 else x, tree, abstract_state)


def abstract(tree: Any) -> Any:
    """Shapes and dtypes (weak types dropped) of a pytree of arrays or abstract values."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


__all__ = [
    "MANIFEST",
    "CheckpointWarning",
    "CheckpointWriteError",
    "Checkpointer",
    "ForeignCheckpointError",
    "IncompatibleCheckpointError",
    "NoCheckpointError",
    "finished",
    "first_difference",
    "verify",
]
