"""The host side of training runs: configs, run directories, chunked execution,
checkpoints with exact resume, logging (JSONL, optional wandb) and plots. Everything here
runs between jitted chunks, never inside them.

Importing it applies metareward's XLA:CPU settings (:func:`metareward.configure_xla`), as
the driver trains: import it before running any jax computation."""

from metareward._xla import configure_xla as _configure_xla
from metareward.runtime.checkpoint import Checkpointer, CheckpointWarning, NoCheckpointError
from metareward.runtime.configs import load_config_file, parse_assignments, resolve_config
from metareward.runtime.driver import (
    NonFiniteError,
    Plan,
    RunInterrupted,
    RunOptions,
    RunResult,
    evaluate,
    load,
    plan_from_run,
    prepare,
    resume,
    start,
)
from metareward.runtime.plot import plot_runs
from metareward.runtime.rundir import METRIC_FIELDS, RunDir

_configure_xla()  # the imports above import jax; none starts its backend

__all__ = [
    "METRIC_FIELDS",
    "CheckpointWarning",
    "Checkpointer",
    "NoCheckpointError",
    "NonFiniteError",
    "Plan",
    "RunDir",
    "RunInterrupted",
    "RunOptions",
    "RunResult",
    "evaluate",
    "load",
    "load_config_file",
    "parse_assignments",
    "plan_from_run",
    "plot_runs",
    "prepare",
    "resolve_config",
    "resume",
    "start",
]
