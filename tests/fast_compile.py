"""XLA flags for the tests.

:data:`TEST_XLA_FLAGS` (every test process, set by ``conftest.py``): LLVM optimisation
level 1 rather than XLA:CPU's default. Measured 2026-12-04 on one core of the 2-core CPU,
the other busy with a training run (a 20-update PPO run on pendulum, two vmapped seeds,
cold cache, two interleaved rounds): compile 8-10 s against 13 s, run 2.4-2.8 s against
2.7 s, and the trained parameters identical bit for bit.

:data:`FAST_COMPILE` (test subprocesses that run whole scripts, experiments and
notebooks, at smoke scale, where compiling dominates): XLA:CPU's cheapest compilation.
On the same run: compile 5.5-5.8 s, but run 5.8-8.7 s, and the parameters differ (by up
to 0.34 after 20 updates), so it is only for the smoke runs, whose numbers nothing
quotes.
"""

from __future__ import annotations

import os

TEST_XLA_FLAGS = "--xla_backend_optimization_level=1"
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def fast_compile_env(**extra: str) -> dict[str, str]:
    """``os.environ`` with :data:`FAST_COMPILE` added to ``XLA_FLAGS`` (after, so it
    wins over :data:`TEST_XLA_FLAGS`), plus ``extra``."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()
    return {**os.environ, "XLA_FLAGS": flags, **extra}
