"""Helpers for the tests that run the ``metareward`` console script in subprocesses
(``test_cli.py``, ``test_faults.py``)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

SCRIPT = Path(sys.executable).with_name("metareward")
if not SCRIPT.exists():
    SCRIPT = Path(shutil.which("metareward") or "metareward")

# A small PPO cartpole: 2 seeds x 12 updates of 2 envs x 16 steps.
TINY = [
    "--seeds", "2",
    "--set", "num_envs=2",
    "--set", "num_steps=16",
    "--set", "num_epochs=1",
    "--set", "num_minibatches=2",
    "--set", "hidden=16,16",
]


def run(*args, cwd, timeout=300, env=None):
    """The console script with ``args``, to the end (captured output)."""
    return subprocess.run(
        [str(SCRIPT), *map(str, args)], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env=env,
    )


def ok(p):
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p


def tree_bytes(run_dir):
    """``(update, leaves)``: every leaf of the newest checkpoint (all seeds' full state), as
    raw bytes."""
    from metareward.runtime import driver

    _, update, state, _ = driver.load(run_dir)
    return update, [np.asarray(x).tobytes() for x in jax.tree.leaves(state)]


def metrics_without_timing(run_dir):
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    drop = {"wall_time", "steps_per_sec"}
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines]
