"""What the benchmark scripts share: a measurement in a fresh process of the same script,
interleaved rounds, and the JSON results file. Standard library only, and ``metareward``'s
XLA:CPU setting: every benchmark (and each worker process it starts) measures programs
compiled as the ``metareward`` command compiles them (:func:`metareward.configure_xla`;
``import metareward`` imports no jax)."""

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

import metareward

metareward.configure_xla()

RESULTS = Path(__file__).resolve().parent / "results"


def measure_in_subprocess(script: str, worker_args: Sequence[str],
                          cpus: Sequence[int] | None = None) -> dict[str, Any]:
    """Runs ``python script --worker ARGS...`` in a fresh process (so its compile time and
    peak memory are its own) and returns the JSON dict it prints on its last line.

    ``cpus``: pin the process to these CPU cores (Linux ``sched_setaffinity``), e.g.
    ``[0]``; on a small shared machine one pinned core gives much steadier timings than
    XLA's threads spread over cores that other work also uses."""
    cmd = [sys.executable, script, "--worker", *worker_args]
    pin = None
    if cpus is not None:
        cores = set(cpus)
        pin = lambda: os.sched_setaffinity(0, cores)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, preexec_fn=pin)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(worker_args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def process_facts(compile_s: float) -> dict[str, Any]:
    """What every worker reports besides its timings: compile time, this process's peak
    memory, the jax version and the device (imports jax, so call it in a worker)."""
    import jax

    from benchmarks._memory import peak_rss_mb

    return {"compile_s": compile_s, "peak_rss_mb": peak_rss_mb(), "jax": jax.__version__,
            "device": jax.devices()[0].device_kind}


def rotated(items: Sequence[Any], round_index: int) -> list[Any]:
    """``items`` rotated by the round number, so that drift of the machine's speed within
    a round does not always favour the same variant."""
    r = round_index % len(items)
    return list(items[r:]) + list(items[:r])


def paired_rows(runs: dict[tuple[str, str], list[dict]], baseline: str) -> list[dict]:
    """One row per ``(setting, learner)`` of per-round measurements (dicts with
    ``seconds_per_update``, ``compile_s``, ``peak_rss_mb``, ``batch``): medians over rounds,
    ``seconds_all``, env-steps/s and updates/s, and the paired ratio to the ``baseline``
    learner of the same setting: ``ratio_per_round`` (learner / baseline in each round)
    and ``ratio`` (their median)."""
    import statistics

    rows = []
    for (setting, _learner), ms in runs.items():
        row = dict(ms[0])
        for k in ("seconds_per_update", "compile_s", "peak_rss_mb"):
            row[k] = statistics.median(m[k] for m in ms)
        row["seconds_all"] = [m["seconds_per_update"] for m in ms]
        row["env_steps_per_s"] = row["batch"] / row["seconds_per_update"]
        row["updates_per_s"] = 1.0 / row["seconds_per_update"]
        base = runs[(setting, baseline)]
        per_round = [m["seconds_per_update"] / b["seconds_per_update"]
                     for m, b in zip(ms, base, strict=True)]
        row["ratio_per_round"] = per_round
        row["ratio"] = statistics.median(per_round)
        rows.append(row)
    return rows


def vmap_speedup_rows(runs: dict[tuple[str, str], list[dict]],
                      modes: Sequence[str] = ("vmap", "sequential")) -> list[dict]:
    """:func:`paired_rows` of a population benchmark (learners ``"vmap"`` and
    ``"sequential"`` per ``pop-P`` setting): every row gets the vmapped program's speed-up,
    ``x_sequential_per_round`` (sequential time / vmapped time in each round) and
    ``x_sequential`` (their median), in place of ``ratio``; sorted by ``pop_size``, then
    ``modes``."""
    import statistics

    rows = paired_rows(runs, "vmap")
    for row in rows:
        seq, vm = runs[(row["setting"], "sequential")], runs[(row["setting"], "vmap")]
        per_round = [s["seconds_per_update"] / v["seconds_per_update"]
                     for s, v in zip(seq, vm, strict=True)]
        del row["ratio_per_round"], row["ratio"]
        row["x_sequential_per_round"] = per_round
        row["x_sequential"] = statistics.median(per_round)
    rows.sort(key=lambda r: (r["pop_size"], list(modes).index(r["learner"])))
    return rows


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
