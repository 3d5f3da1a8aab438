"""Checkpoints in-process (issue 31): a finished checkpoint is good the moment it exists,
damage is quarantined while incompatibility and foreign checkpoints are refused with every
file left in place, readers never touch a file, and waiting is signal-safe."""

import os
import time
import warnings

import jax
import numpy as np
import pytest

from metareward.runtime.checkpoint import (
    MANIFEST,
    ORBAX_STEP_METADATA,
    Checkpointer,
    CheckpointWarning,
    ForeignCheckpointError,
    IncompatibleCheckpointError,
    NoCheckpointError,
    abstract,
    first_difference,
)


def _tree(i, width=4):
    return {
        "w": np.full((3, width), i, np.float32),
        "opt": {"mu": np.full((3, width), -i, np.float32), "count": np.array([i], np.int32)},
        "key": np.array([[i, 7]], np.uint32),
    }


TEMPLATE = jax.eval_shape(lambda: _tree(0))


def _files(root):
    """Every file under ``root`` with its size and mtime: what a reader must not change."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _saved(tmp_path, steps=(1, 2, 3), run_id="run-a"):
    ck = Checkpointer(tmp_path / "checkpoints", run_id=run_id)
    for i in steps:
        ck.save(i, _tree(i), {"update": i})
    ck.close()
    return tmp_path / "checkpoints"


def test_the_manifest_is_there_the_moment_the_checkpoint_is(tmp_path):
    """D1: the manifest used to be written at the *next* save; a SIGKILL in between left
    the newest finished checkpoint unmarked. Now it is inside the step before the rename."""
    ck = Checkpointer(tmp_path / "checkpoints", run_id="r")
    big = {"w": np.ones((512, 1024), np.float32)}  # a save that takes a moment
    seen = []
    for step in (1, 2, 3):
        ck.save(step, big, {"update": step})  # asynchronous: returns before the files
        step_dir = tmp_path / "checkpoints" / str(step)
        deadline = time.monotonic() + 60
        while not step_dir.is_dir():  # the first moment the step exists under its name
            assert time.monotonic() < deadline
            time.sleep(0.0005)
        seen.append((step_dir / MANIFEST).is_file())
    ck.close()
    assert seen == [True, True, True]


def test_a_finished_step_without_manifest_is_recovered_not_damaged(tmp_path):
    ckpts = _saved(tmp_path)
    os.remove(ckpts / "3" / MANIFEST)  # an older version's checkpoint, or a sync save cut off
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        step, state, meta = Checkpointer(ckpts, run_id="run-a").restore_latest(TEMPLATE)
    assert step == 3 and meta["update"] == 3
    np.testing.assert_array_equal(state["w"], _tree(3)["w"])
    assert (ckpts / "3" / MANIFEST).is_file()  # a writer marks it good once it restored


def test_an_unfinished_or_damaged_step_is_quarantined_by_a_writer(tmp_path):
    ckpts = _saved(tmp_path)
    os.remove(ckpts / "3" / MANIFEST)
    os.remove(ckpts / "3" / ORBAX_STEP_METADATA)  # orbax never finished it
    victim = max((p for p in (ckpts / "2").rglob("*") if p.is_file() and p.name != MANIFEST),
                 key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:-3])  # truncated
    with pytest.warns(CheckpointWarning) as record:
        step, _, _ = Checkpointer(ckpts, run_id="run-a").restore_latest(TEMPLATE)
    assert step == 1
    text = " ".join(str(w.message) for w in record)
    assert "3 is damaged (orbax never finished it)" in text and "bytes, expected" in text
    assert sorted(os.listdir(tmp_path / "corrupt_checkpoints")) == ["2", "3"]


def test_a_reader_never_moves_or_writes_a_file(tmp_path):
    """D3: `eval` on a running run moved the trainer's newest checkpoint aside."""
    ckpts = _saved(tmp_path)
    os.remove(ckpts / "3" / MANIFEST)  # between the rename and the manifest of old
    victim = max((p for p in (ckpts / "2").rglob("*") if p.is_file() and p.name != MANIFEST),
                 key=lambda p: p.stat().st_size)
    victim.write_bytes(b"x" + victim.read_bytes()[1:])  # checksum mismatch
    before = _files(tmp_path)
    reader = Checkpointer(ckpts, read_only=True, run_id="run-a")
    step, _, _ = reader.restore_latest(TEMPLATE)
    assert step == 3
    os.remove(ckpts / "3" / ORBAX_STEP_METADATA)
    before = _files(tmp_path)
    with pytest.warns(CheckpointWarning, match="skipped"):
        assert reader.restore_latest(TEMPLATE)[0] == 1
    reader.close()
    assert _files(tmp_path) == before
    with pytest.raises(PermissionError):
        reader.save(4, _tree(4), {})


@pytest.mark.parametrize(
    "template,match",
    [
        (jax.eval_shape(lambda: _tree(0, width=5)),
         r"leaf opt/mu has shape \(3, 4\) in the checkpoint, \(3, 5\) now"),
        (jax.eval_shape(lambda: {**_tree(0), "renamed": _tree(0)["w"]}),
         r"leaf renamed \(3, 4\) is not in the checkpoint"),
        (jax.eval_shape(lambda: {k: v for k, v in _tree(0).items() if k != "key"}),
         r"leaf key of the checkpoint is not in the current state"),
        (jax.eval_shape(lambda: {**_tree(0), "key": np.zeros((1, 2), np.int32)}),
         r"leaf key has dtype uint32 in the checkpoint, int32 now"),
    ],
)
def test_an_incompatible_state_fails_naming_the_leaf_and_moves_nothing(tmp_path, template,
                                                                       match):
    """D4: a code or config change used to quarantine every checkpoint as damaged."""
    ckpts = _saved(tmp_path)
    before = _files(tmp_path)
    ck = Checkpointer(ckpts, run_id="run-a")
    with pytest.raises(IncompatibleCheckpointError, match=match):
        ck.restore_latest(template)
    ck.close()
    assert _files(tmp_path) == before
    # Rolling the code back recovers the run.
    assert Checkpointer(ckpts, run_id="run-a").restore_latest(TEMPLATE)[0] == 3


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    ckpts = _saved(tmp_path, run_id="run-a")
    before = _files(tmp_path)
    with pytest.raises(ForeignCheckpointError, match="written by another run"):
        Checkpointer(ckpts, run_id="run-b").restore_latest(TEMPLATE)
    assert _files(tmp_path) == before


def test_no_checkpoint_says_how_many_were_damaged(tmp_path):
    ckpts = _saved(tmp_path, steps=(1,))
    os.remove(ckpts / "1" / ORBAX_STEP_METADATA)
    os.remove(ckpts / "1" / MANIFEST)
    with pytest.warns(CheckpointWarning), pytest.raises(
            NoCheckpointError, match="1 damaged one"):
        Checkpointer(ckpts).restore_latest(TEMPLATE)


def test_wait_holds_a_second_ctrl_c_until_the_checkpoint_is_marked_good(tmp_path):
    """D2: a second Ctrl-C inside `wait()` left the finished checkpoint without manifest."""
    ck = Checkpointer(tmp_path / "checkpoints", run_id="r")
    ck.save(1, _tree(1), {"update": 1})
    real, calls = ck.manager.wait_until_finished, []

    def interrupted_once():
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        real()

    ck.manager.wait_until_finished = interrupted_once
    with pytest.raises(KeyboardInterrupt):
        ck.wait()
    assert len(calls) == 2 and (tmp_path / "checkpoints" / "1" / MANIFEST).is_file()
    ck.manager.wait_until_finished = real
    ck.close()


def test_first_difference_agrees_on_equal_trees():
    assert first_difference(TEMPLATE, jax.eval_shape(lambda: _tree(5))) is None


def test_state_with_empty_arrays_round_trips(tmp_path):
    """A state may hold zero-size arrays (an MJX hopper's ``pipeline_state.act``, shape
    ``(seeds, 0)``), which orbax refuses to write: they are saved as placeholders and
    come back with their shapes; a checkpoint whose empty leaf is now non-empty (or the
    other way round) does not fit."""
    state = {"act": np.zeros((3, 0), np.float32), "w": np.arange(6.0).reshape(3, 2),
             "n": np.zeros((0,), np.int32)}
    ck = Checkpointer(tmp_path / "checkpoints", run_id="r", asynchronous=False)
    ck.save(4, state, {"update": 4})
    ck.close()
    step, back, _ = Checkpointer(tmp_path / "checkpoints", run_id="r").restore_latest(
        abstract(state))
    assert step == 4 and back["act"].shape == (3, 0) and back["n"].shape == (0,)
    assert back["act"].dtype == np.float32 and back["n"].dtype == np.int32
    np.testing.assert_array_equal(back["w"], state["w"])
    grown = {**state, "act": np.zeros((3, 2), np.float32)}
    with pytest.raises(IncompatibleCheckpointError, match="act"):
        Checkpointer(tmp_path / "checkpoints", run_id="r").restore_latest(abstract(grown))
