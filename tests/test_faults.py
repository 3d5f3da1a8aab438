"""Fault injection against the ``metareward`` command (issue 31): SIGKILL between saves,
inside an asynchronous save and before the first checkpoint; a second Ctrl-C inside a
save; two resumes or two trains at once; ``eval`` while a run trains; a code or config
change; a checkpoint copied in from another run; Ctrl-C during imports and during the
final evaluation; a full disk. Each run that was cut must end, after ``resume``, with
the same final state (bitwise, every leaf of every seed) and the same metrics as one
uninterrupted run.

Four cases with a cheaper check elsewhere or rarer in practice (two trains into one
``--out``, a foreign checkpoint, Ctrl-C in the final evaluation, a full disk) are ``slow``.

The moments are hit with the pause points of :mod:`metareward.runtime.faults`: the run
stops there and says so on stderr, the test kills or signals it, or releases it.
"""

import json
import re
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_runs import SCRIPT, TINY, metrics_without_timing, ok, run, tree_bytes
from fast_compile import fast_compile_env

from metareward.runtime.checkpoint import MANIFEST

pytestmark = pytest.mark.xdist_group("faults")  # one worker: the fixtures run once

# 24 updates in 12 chunks of 2, a checkpoint every 3 chunks (updates 6, 12, 18, 24).
BASE = ["ppo", "--env", "cartpole", *TINY, "--total-steps", 2 * 16 * 24,
        "--chunk-updates", 2, "--checkpoint-every", 3, "--no-progress"]
ARGS = [*BASE, "--eval-episodes", 0]
ENV = fast_compile_env()


def _start(*args, cwd, fault=None, release=None):
    """The console script in the background, paused at ``fault`` if given."""
    env = dict(ENV)
    if fault is not None:
        env["METAREWARD_FAULT"] = fault
    if release is not None:
        env["METAREWARD_FAULT_RELEASE"] = str(release)
    return subprocess.Popen([str(SCRIPT), *map(str, args)], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(proc, text, timeout=240):
    """Reads ``proc``'s stderr until a line contains ``text``; returns what was read."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    proc.kill()
    out, err = proc.communicate()
    raise AssertionError(f"{text!r} never came (exit {proc.returncode}):\n"
                         f"{''.join(seen)}{err}\n{out}")


def _saved(run_dir, update):
    """Waits until the asynchronous save of ``update`` has its final name."""
    deadline = time.monotonic() + 60
    while update is not None and not (run_dir / "checkpoints" / str(update)).is_dir():
        assert time.monotonic() < deadline, f"the save of update {update} never finished"
        time.sleep(0.01)


def _killed_at(cwd, name, fault, sig=signal.SIGKILL, finished=6):
    """A run of ARGS stopped by ``sig`` at pause point ``fault``, once the asynchronous
    save of update ``finished`` (if any) has its final name."""
    release = cwd / f"release-{name}"
    proc = _start("train", *ARGS, "--out", name, cwd=cwd, fault=fault, release=release)
    _wait_for(proc, f"fault point {fault}")
    _saved(cwd / name, finished)
    proc.send_signal(sig)
    release.touch()  # (SIGTERM: the run stops at the end of the paused chunk)
    proc.communicate(timeout=120)
    return cwd / name


def _files(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def _assert_same_as_reference(run_dir, reference):
    u_ref, ref_state = tree_bytes(reference)
    u_run, run_state = tree_bytes(run_dir)
    assert u_ref == u_run == 24
    assert len(ref_state) == len(run_state)
    assert all(a == b for a, b in zip(ref_state, run_state, strict=True)), "state differs"
    assert metrics_without_timing(run_dir) == metrics_without_timing(reference)


@pytest.fixture(scope="session")  # once, even if xdist interleaves other modules
def reference(tmp_path_factory):
    """The uninterrupted run every cut run must end equal to."""
    cwd = tmp_path_factory.mktemp("reference")
    ok(run("train", *ARGS, "--out", "ref", cwd=cwd, env=ENV))
    return cwd / "ref"


@pytest.fixture(scope="session")
def stopped(tmp_path_factory):
    """A run stopped by SIGTERM at chunk 4 (its checkpoint: update 10, its summary:
    interrupted), which tests copy and continue."""
    return _killed_at(tmp_path_factory.mktemp("stopped"), "cut", "after-chunk:4",
                      sig=signal.SIGTERM)


def _copy(stopped, tmp_path):
    shutil.copytree(stopped, tmp_path / "cut")
    return tmp_path / "cut"


def _resume(run_dir, **kw):
    return run("resume", run_dir, "--no-progress", cwd=run_dir.parent, env=ENV, **kw)


# ----------------------------------------------------------------------------- SIGKILL


@pytest.mark.parametrize("fault,resumed_from", [
    ("after-chunk:4", 6),  # D1: between two saves (the newest one finished at chunk 2)
    ("in-save:12", 6),  # inside the asynchronous save of update 12, before its rename
    ("after-chunk:1", None),  # before the first checkpoint: the run starts over
])
def test_sigkill_then_resume_is_exact(reference, tmp_path, fault, resumed_from):
    cut = _killed_at(tmp_path, "cut", fault, finished=resumed_from)
    p = ok(_resume(cut))
    if resumed_from is None:
        assert "starting it over from update 0" in p.stdout
    else:
        assert f"resuming from the checkpoint of update {resumed_from}" in p.stdout
    assert "warning" not in p.stderr, p.stderr  # nothing was found damaged
    assert not (cut / "corrupt_checkpoints").exists()
    _assert_same_as_reference(cut, reference)


def test_a_second_ctrl_c_inside_a_save_waits_for_it(reference, tmp_path):
    """D2: the second Ctrl-C, 50 ms after the first, lands in the wait for a save."""
    release = tmp_path / "release"
    proc = _start("train", *ARGS, "--out", "cut", cwd=tmp_path, fault="in-save:12",
                  release=release)
    _wait_for(proc, "fault point in-save:12")
    proc.send_signal(signal.SIGINT)
    _wait_for(proc, "SIGINT received")
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # the main thread now waits for the paused save
    time.sleep(0.5)
    release.touch()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err and "interrupted" in err, err
    assert (tmp_path / "cut" / "checkpoints" / "12" / MANIFEST).is_file()
    p = ok(_resume(tmp_path / "cut"))
    assert "resuming from the checkpoint of update 12" in p.stdout
    _assert_same_as_reference(tmp_path / "cut", reference)


# ------------------------------------------------------------------- one writer, readers


def test_two_resumes_at_once_one_is_refused_naming_the_holder(reference, stopped, tmp_path):
    """D5: two resumes both ran and wrote duplicate metrics records."""
    cut = _copy(stopped, tmp_path)
    first = _start("resume", cut, "--no-progress", cwd=tmp_path, fault="after-chunk:7")
    _wait_for(first, "fault point after-chunk:7")
    second = _resume(cut)
    assert second.returncode == 2, second.stderr
    assert f"is in use by process {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
    first.kill()  # SIGKILL: the kernel drops its lock
    first.communicate(timeout=120)
    ok(_resume(cut))
    recs = [(r["chunk"], r["seed"]) for r in map(json.loads,
                                                 (cut / "metrics.jsonl").read_text().splitlines())]
    assert len(recs) == len(set(recs)) == 24
    _assert_same_as_reference(cut, reference)


@pytest.mark.slow
def test_two_trains_into_one_out(tmp_path):
    procs = [_start("train", *ARGS, "--out", "same", cwd=tmp_path) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "Traceback" not in loser
    assert ("is in use by process" in loser or "already a run directory" in loser
            or "is not empty" in loser), loser


def test_eval_while_training_moves_nothing(reference, tmp_path):
    """D3: `eval` moved the trainer's newest checkpoint aside (no manifest yet)."""
    release = tmp_path / "release"
    proc = _start("train", *ARGS, "--out", "live", cwd=tmp_path, fault="after-chunk:4",
                  release=release)
    _wait_for(proc, "fault point after-chunk:4")
    _saved(tmp_path / "live", 6)
    before = _files(tmp_path / "live" / "checkpoints")
    p = ok(run("eval", tmp_path / "live", "--episodes", 2, cwd=tmp_path, env=ENV))
    assert "checkpoint of update 6" in p.stdout and "warning" not in p.stderr
    assert _files(tmp_path / "live" / "checkpoints") == before
    release.touch()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "Unable to find" not in err and "warning" not in err, err
    assert not (tmp_path / "live" / "corrupt_checkpoints").exists()
    _assert_same_as_reference(tmp_path / "live", reference)


# ---------------------------------------------------------- incompatible and foreign state


def test_a_changed_config_is_refused_in_place_and_rolling_back_recovers(reference, stopped,
                                                                       tmp_path):
    """D4 (a config.json edited to another `hidden`; a renamed state field takes the same
    path: tests/test_checkpoint.py) and D7 (a failed resume overwrote summary.json)."""
    cut = _copy(stopped, tmp_path)
    summary = (cut / "summary.json").read_text()
    assert json.loads(summary)["status"] == "interrupted"
    original = (cut / "config.json").read_text()
    cfg = json.loads(original)
    cfg["config"]["hidden"] = [32, 32]
    (cut / "config.json").write_text(json.dumps(cfg))
    before = _files(cut / "checkpoints")
    p = _resume(cut)
    assert p.returncode == 2, p.stderr
    assert "does not fit the state the current code and config build: leaf " in p.stderr
    assert "has shape" in p.stderr and "Traceback" not in p.stderr
    assert _files(cut / "checkpoints") == before
    assert not (cut / "corrupt_checkpoints").exists()
    assert (cut / "summary.json").read_text() == summary
    (cut / "config.json").write_text(original)
    ok(_resume(cut))
    _assert_same_as_reference(cut, reference)


@pytest.mark.slow
def test_a_checkpoint_of_another_run_is_refused(reference, stopped, tmp_path):
    cut = _copy(stopped, tmp_path)
    # Another run's checkpoint of a later update, copied in.
    shutil.copytree(reference / "checkpoints" / "24", cut / "checkpoints" / "24")
    p = _resume(cut)
    assert p.returncode == 2 and "was written by another run" in p.stderr, p.stderr
    assert (cut / "checkpoints" / "24").is_dir()
    shutil.rmtree(cut / "checkpoints" / "24")
    ok(_resume(cut))
    _assert_same_as_reference(cut, reference)


# -------------------------------------------------------------------------------- Ctrl-C


@pytest.mark.slow
def test_ctrl_c_during_the_final_evaluation_is_honoured(tmp_path):
    proc = _start("train", *BASE, "--eval-episodes", 2, "--out", "ev", cwd=tmp_path,
                  fault="in-eval:0")
    _wait_for(proc, "fault point in-eval:0")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "final evaluation was skipped" in err and "Traceback" not in err
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["update"] == 24
    assert not (tmp_path / "ev" / "eval.json").exists()


def test_ctrl_c_while_importing_is_one_line(tmp_path):
    proc = subprocess.Popen([str(SCRIPT), "train", *map(str, ARGS), "--out", "x"],
                            cwd=tmp_path, env=ENV, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    time.sleep(0.3)  # inside `import jax` and the algorithms (seconds on this CPU)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err and err.strip().endswith("interrupted"), err


# ------------------------------------------------------------------------------ disk full


def _small_filesystem():
    """``unshare`` + a tmpfs in a private mount namespace, if this machine lets us (root,
    or unprivileged user namespaces); else ``None``."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    for prefix in ([unshare, "-m"], [unshare, "-rm"]):
        probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                               capture_output=True)
        if probe.returncode == 0:
            return prefix
    return None


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))


@pytest.mark.slow
def test_a_full_disk_ends_in_one_error_line_and_the_run_resumes(tmp_path):
    """A checkpoint write fails: one `error:` line naming the checkpoint (it used to be 442
    lines of absl tracebacks), no traceback, and the run, given room again, resumes from the
    newest checkpoint written before the failed one.

    Where a tmpfs can be mounted (root, as on CI), the disk really fills: 700 kB, a
    checkpoint every 2 updates (130-300 kB each at hidden=64,64, depending on how orbax's
    chunks compress), so at least one checkpoint is written before the disk fills, and the
    resume must come from the one before the failed save. (At 300 kB the first save
    sometimes failed already.) Elsewhere the write fails on a 150 kB file-size limit
    (``RLIMIT_FSIZE``: "File too large") during the first checkpoint, and the run starts
    over."""
    train = [str(SCRIPT), "train", *map(str, ARGS), "--out", "full", "--checkpoint-every",
             "1", "--set", "hidden=64,64"]
    prefix = _small_filesystem()
    if prefix is not None:
        disk = tmp_path / "disk"
        disk.mkdir()
        script = (f"mount -t tmpfs -o size=700k tmpfs {disk} && cd {disk} && "
                  f"{' '.join(train)}; code=$?; cp -a {disk}/full {tmp_path}/saved; "
                  "exit $code")
        p = subprocess.run([*prefix, "sh", "-c", script], capture_output=True, text=True,
                           env=ENV, timeout=300)
        reason = "No space left on device"
    else:
        train[train.index("full")] = "saved"
        p = subprocess.run(train, cwd=tmp_path, capture_output=True, text=True, env=ENV,
                           timeout=300, preexec_fn=_limit_file_size)
        reason = "File too large"
    assert p.returncode == 1, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    failed = re.fullmatch(r"metareward train: error: writing checkpoint \S*/checkpoints/(\d+) "
                          f"failed: {reason}", last)
    assert failed is not None, p.stderr
    assert p.stderr.count("error:") == 1 and "absl" not in p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    before = int(failed.group(1)) - 2  # the checkpoint before the failed one (every 2 updates)
    if prefix is not None:
        assert before > 0, last  # the disk filled after a checkpoint was written
    p = ok(run("resume", tmp_path / "saved", "--no-progress", cwd=tmp_path, env=ENV))
    resumed = (f"resuming from the checkpoint of update {before} " if before > 0
               else "starting it over from update 0")
    assert resumed in p.stdout, p.stdout
    assert "done: 24 updates" in p.stdout, p.stdout


def test_a_recorded_ctrl_c_in_a_gc_callback_prints_no_traceback(monkeypatch):
    """A Ctrl-C that lands in one of JAX's garbage-collection callbacks reaches
    ``sys.unraisablehook`` ("Exception ignored ... KeyboardInterrupt"): the command's hook
    drops it once :mod:`metareward.interrupts` has recorded it (it is raised again at the
    next safe point); any other unraisable exception, or an unrecorded Ctrl-C, is shown."""
    import types

    from metareward import cli, interrupts

    shown = []
    hook = cli._quiet_closed_loops(shown.append)
    report = lambda e: types.SimpleNamespace(exc_value=e, exc_type=type(e))
    monkeypatch.setattr(interrupts, "_seen", False)
    hook(report(KeyboardInterrupt()))
    monkeypatch.setattr(interrupts, "_seen", True)
    hook(report(KeyboardInterrupt()))
    hook(report(ValueError("other")))
    hook(report(RuntimeError("Event loop is closed")))
    assert [type(r.exc_value).__name__ for r in shown] == ["KeyboardInterrupt", "ValueError"]
