"""Optional Weights & Biases logging: ``off`` (default), ``offline``, ``online``.

``offline`` needs no network: files land in ``RUN_DIR/wandb/`` and can be uploaded later
with ``wandb sync``. wandb is imported only when enabled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MODES = ("off", "offline", "online")


class WandbLogger:
    """One wandb run per metareward run; logs the mean over seeds of each metric, and
    each seed's return, against ``env_steps``."""

    def __init__(
        self,
        mode: str,
        run_dir: Path,
        run_id: str,
        name: str,
        config: dict[str, Any],
        project: str = "metareward",
    ):
        if mode not in MODES or mode == "off":
            raise ValueError(f"wandb mode must be 'offline' or 'online', got {mode!r}")
        import wandb

        self._run = wandb.init(
            mode=mode,
            dir=str(run_dir),
            project=project,
            name=name,
            id=run_id,
            resume="allow",
            config=config,
        )
        self._run.define_metric("env_steps")
        self._run.define_metric("*", step_metric="env_steps")

    def log(self, records: Sequence[dict[str, Any]]) -> None:
        """Logs one chunk's records: the mean over seeds of each numeric metric (non-finite
        values left out) and each seed's ``return_mean``.

        Args:
            records: One metrics record per seed, all of the same chunk (each with ``seed``
                and ``update``; the wandb step is the first record's ``update``).
        """
        keys = [k for k, v in records[0].items() if isinstance(v, int | float) and k != "seed"]
        out: dict[str, float] = {}
        for k in keys:
            vals = [r[k] for r in records if isinstance(r.get(k), int | float)]
            vals = [v for v in vals if math.isfinite(v)]
            if vals:
                out[k] = sum(vals) / len(vals)
        for r in records:
            if r.get("return_mean") is not None:
                out[f"seed_{r['seed']}/return_mean"] = r["return_mean"]
        self._run.log(out, step=int(records[0]["update"]))

    def summary(self, values: dict[str, Any]) -> None:
        """Updates the wandb run's summary.

        Args:
            values: The summary entries to set.
        """
        self._run.summary.update(values)

    def finish(self, exit_code: int = 0) -> None:
        """Finishes the wandb run.

        Args:
            exit_code: The exit code reported to wandb (0: success).
        """
        self._run.finish(exit_code=exit_code)


__all__ = ["MODES", "WandbLogger"]
