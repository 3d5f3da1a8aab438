"""The XLA:CPU setting metareward's training programs need, applied on request.

``import metareward`` leaves ``XLA_FLAGS`` alone. The flag is applied where metareward
trains: by the learners (importing :mod:`metareward.algos`, so the functional API needs
no call), by the ``metareward`` command (:mod:`metareward.cli`), by the training driver
(importing :mod:`metareward.runtime`) and by the test suite (``tests/conftest.py``). A
script that runs jax programs with ``metareward.meta``, ``nets`` or ``rl`` alone calls
:func:`configure_xla` (``metareward.configure_xla()``) first, before jax runs anything.
"""

from __future__ import annotations

import os
import warnings

#: XLA:CPU's concurrency-optimized thunk scheduler (on by default in jaxlib 0.10.2)
#: deadlocks on some of our vmapped training programs: every thread waits and the
#: program never finishes (reproduced with ``jax.jit(jax.vmap(ppo_train))`` on a 2-core
#: CPU). Turning it off costs nothing measurable here.
CPU_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)


def configure_xla() -> list[str]:
    """Adds :data:`CPU_FLAGS` to ``os.environ["XLA_FLAGS"]``, keeping any setting of those
    flags the user made.

    ``import metareward.algos`` (the learners), the ``metareward`` command and
    :mod:`metareward.runtime` (the training driver) call it themselves; ``import
    metareward`` does not. A script that runs jax programs with ``metareward.meta``,
    ``nets`` or ``rl`` alone calls it first, before jax runs any computation::

        import metareward
        metareward.configure_xla()

    With jaxlib 0.10.2 XLA:CPU's concurrency-optimized scheduler deadlocks some vmapped
    training programs; this turns it off. It changes nothing on a GPU or TPU. The flags
    are part of XLA's compilation cache key, so programs compiled with and without them
    are cached apart.

    XLA reads ``XLA_FLAGS`` once, when jax starts its first backend: called after that,
    this still sets the variable (for subprocesses) but warns that this process keeps
    its settings.

    Returns:
        The flags it added (empty if ``XLA_FLAGS`` already set every one of them).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in CPU_FLAGS if f.split("=")[0] not in flags]
    if not missing:
        return []
    os.environ["XLA_FLAGS"] = " ".join([flags, *missing]).strip()
    if _cpu_backend_started():
        warnings.warn(
            "jax started its CPU backend before metareward.configure_xla() ran, so XLA_FLAGS "
            f"{missing} cannot take effect in this process; vmapped training may deadlock on "
            "CPU. Call metareward.configure_xla() before running any jax computation, or set "
            "XLA_FLAGS yourself.",
            RuntimeWarning,
            stacklevel=2,
        )
    return missing


def _cpu_backend_started() -> bool:
    """Whether jax has started its CPU backend (only if jax is imported: never imports
    it)."""
    import sys

    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        backends = getattr(xla_bridge, "_backends", {})
        return "cpu" in backends and xla_bridge.get_backend().platform == "cpu"
    except ImportError:  # pragma: no cover - private API moved
        return False
