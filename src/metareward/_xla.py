"""XLA settings metareward needs, applied before jax starts its CPU backend."""

from __future__ import annotations

import os
import warnings

#: XLA:CPU's concurrency-optimized thunk scheduler (on by default in jaxlib 0.10.2)
#: deadlocks on some of our vmapped training programs: every thread waits and the
#: program never finishes (reproduced with ``jax.jit(jax.vmap(ppo_train))`` on a 2-core
#: CPU). Turning it off costs nothing measurable here.
CPU_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)


def configure_xla() -> None:
    """Adds :data:`CPU_FLAGS` to ``XLA_FLAGS`` unless the user set those flags already.

    XLA reads ``XLA_FLAGS`` once, when the first backend starts; if that has already
    happened, warn instead (import metareward before running any jax computation).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in CPU_FLAGS if f.split("=")[0] not in flags]
    if not missing:
        return
    os.environ["XLA_FLAGS"] = " ".join([flags, *missing]).strip()
    try:
        from jax._src import xla_bridge

        backends = getattr(xla_bridge, "_backends", {})
        started = "cpu" in backends and xla_bridge.get_backend().platform == "cpu"
    except ImportError:  # pragma: no cover - private API moved
        started = False
    if started:
        warnings.warn(
            "jax started its backend before metareward was imported, so XLA_FLAGS "
            f"{missing} could not take effect; vmapped training may deadlock on CPU. "
            "Import metareward first, or set XLA_FLAGS yourself.",
            RuntimeWarning,
            stacklevel=3,
        )
