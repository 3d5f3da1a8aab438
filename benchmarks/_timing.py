"""Timing one jitted function, for the profile benchmarks and the peer scripts (imports
jax and numpy only, so that the peers' venvs can use it too)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def time_call(fn: Callable[..., Any], *args: Any, calls: int = 200) -> dict[str, float]:
    """Median microseconds of one call of the jitted ``fn`` over ``calls`` calls (after a
    warm-up call), the number of instructions of its optimised HLO and XLA's cost analysis.

    Args:
        fn: the function (jitted here).
        *args: its arguments.
        calls: timed calls.

    Returns:
        ``{"us", "hlo_ops", "flops", "bytes"}``: the median, the instruction count, and
        XLA's cost analysis of the program (floating-point operations and bytes accessed;
        a loop's body counted once, not per iteration).
    """
    compiled = jax.jit(fn).lower(*args).compile()
    ops = sum(1 for line in compiled.as_text().splitlines() if " = " in line)
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, list):  # older jax: one dict per program
        cost = cost[0] if cost else {}
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return {"us": float(np.median(times)) * 1e6, "hlo_ops": ops,
            "flops": float(cost.get("flops", float("nan"))),
            "bytes": float(cost.get("bytes accessed", float("nan")))}
