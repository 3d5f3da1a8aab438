"""Environment for test subprocesses that run whole scripts (experiments, notebooks) at
smoke scale, where compiling dominates: XLA:CPU's cheapest compilation. The programs are
the same, only less optimised; on a 2-core CPU this halves their compile time."""

from __future__ import annotations

import os

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def fast_compile_env(**extra: str) -> dict[str, str]:
    """``os.environ`` with :data:`FAST_COMPILE` added to ``XLA_FLAGS``, plus ``extra``."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()
    return {**os.environ, "XLA_FLAGS": flags, **extra}
