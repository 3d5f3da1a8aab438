"""metareward's XLA:CPU settings, applied on request: none by default, XLA's
concurrency-optimized scheduler turned off with ``METAREWARD_XLA_SEQUENTIAL_SCHEDULER=1``.

``import metareward`` leaves ``XLA_FLAGS`` alone. The settings are applied where
metareward trains: by the learners (importing :mod:`metareward.algos`, so the functional API needs
no call), by the ``metareward`` command (:mod:`metareward.cli`), by the training driver
(importing :mod:`metareward.runtime`) and by the test suite (``tests/conftest.py``). A
script that runs jax programs with ``metareward.meta``, ``nets`` or ``rl`` alone calls
:func:`configure_xla` (``metareward.configure_xla()``) first, before jax runs anything.
"""

from __future__ import annotations

import os
import warnings

#: The environment variable that turns XLA:CPU's concurrency-optimized thunk scheduler
#: off (``1``) in every process where metareward applies its settings.
SEQUENTIAL_SCHEDULER_ENV = "METAREWARD_XLA_SEQUENTIAL_SCHEDULER"

#: The flag that variable applies. Up to issue 37 it was always applied: with jaxlib
#: 0.10.2 the concurrency-optimized scheduler (XLA:CPU's default) deadlocked vmapped
#: training programs. The cause was a batched LAPACK QR (flax's orthogonal initialiser
#: under ``vmap``) whose pieces wait on the thread pool that the other QRs occupy;
#: :func:`metareward.nets.orthogonal` now draws one matrix at a time, so metareward's
#: programs no longer need the flag, and run about 10% faster without it on CPU
#: (``benchmarks/RESULTS.md``). Turn it back on for a program of your own that vmaps a
#: batched ``jnp.linalg`` call (QR, SVD, eigh, LU) on CPU and hangs.
SEQUENTIAL_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def cpu_flags() -> tuple[str, ...]:
    """The XLA:CPU flags :func:`configure_xla` applies: none, or the sequential-scheduler
    flag where ``METAREWARD_XLA_SEQUENTIAL_SCHEDULER=1``.

    Returns:
        The flags.

    Raises:
        ValueError: For a value of the variable other than ``0``, ``1`` or empty.
    """
    value = os.environ.get(SEQUENTIAL_SCHEDULER_ENV, "")
    if value not in ("", "0", "1"):
        raise ValueError(f"{SEQUENTIAL_SCHEDULER_ENV}={value!r}: allowed are 0, 1 or unset")
    return (SEQUENTIAL_SCHEDULER_FLAG,) if value == "1" else ()


def configure_xla() -> list[str]:
    """Adds :func:`cpu_flags` to ``os.environ["XLA_FLAGS"]``, keeping any setting of those
    flags the user made. By default there are none: XLA:CPU's own settings are the
    fastest for metareward's programs, which no longer meet the scheduler deadlock that
    the flag worked around (:data:`SEQUENTIAL_SCHEDULER_FLAG`);
    ``METAREWARD_XLA_SEQUENTIAL_SCHEDULER=1`` applies it.

    ``import metareward.algos`` (the learners), the ``metareward`` command and
    :mod:`metareward.runtime` (the training driver) call it themselves; ``import
    metareward`` does not. A script that runs jax programs with ``metareward.meta``,
    ``nets`` or ``rl`` alone calls it first, before jax runs any computation::

        import metareward
        metareward.configure_xla()

    The flag changes nothing on a GPU or TPU. Flags are part of XLA's compilation cache
    key, so programs compiled with and without them are cached apart.

    XLA reads ``XLA_FLAGS`` once, when jax starts its first backend: called after that,
    this still sets the variable (for subprocesses) but warns that this process keeps
    its settings.

    Returns:
        The flags it added (empty if ``XLA_FLAGS`` already set every one of them).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in cpu_flags() if f.split("=")[0] not in flags]
    if not missing:
        return []
    os.environ["XLA_FLAGS"] = " ".join([flags, *missing]).strip()
    if _cpu_backend_started():
        warnings.warn(
            "jax started its CPU backend before metareward.configure_xla() ran, so XLA_FLAGS "
            f"{missing} cannot take effect in this process. Call metareward.configure_xla() "
            "before running any jax computation, or set "
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
