"""What the benchmark scripts share: a measurement in a fresh process of the same script,
interleaved rounds, and the JSON results file. Standard library only."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def measure_in_subprocess(script: str, worker_args: Sequence[str]) -> dict[str, Any]:
    """Runs ``python script --worker ARGS...`` in a fresh process (so its compile time and
    peak memory are its own) and returns the JSON dict it prints on its last line."""
    cmd = [sys.executable, script, "--worker", *worker_args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(worker_args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def rotated(items: Sequence[Any], round_index: int) -> list[Any]:
    """``items`` rotated by the round number, so that drift of the machine's speed within
    a round does not always favour the same variant."""
    r = round_index % len(items)
    return list(items[r:]) + list(items[:r])


def write_results(path: str | Path, benchmark: str, rows: list[dict], **extra: Any) -> Path:
    """Writes ``{"benchmark", "date", "host", "cpus", **extra, "rows"}`` as JSON."""
    out = {
        "benchmark": benchmark,
        "date": time.strftime("%Y-%m-%d"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        **extra,
        "rows": rows,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    return path
