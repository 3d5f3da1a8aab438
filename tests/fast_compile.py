"""XLA:CPU's cheapest compilation, for the default suite (``tests/conftest.py``), for test
subprocesses that run whole scripts (experiments, notebooks) at smoke scale, and for the
subprocesses that compare split programs with unsplit ones. The programs compute the same
functions, only less optimised; on a 2-core CPU this halves their compile time."""

from __future__ import annotations

import os

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def with_fast_compile(flags: str) -> str:
    """``XLA_FLAGS`` value ``flags`` with :data:`FAST_COMPILE` added (once)."""
    return flags if FAST_COMPILE in flags else f"{flags} {FAST_COMPILE}".strip()


def fast_compile_env(**extra: str) -> dict[str, str]:
    """``os.environ`` with :data:`FAST_COMPILE` added to ``XLA_FLAGS``, plus ``extra``."""
    return {**os.environ, "XLA_FLAGS": with_fast_compile(os.environ.get("XLA_FLAGS", "")),
            **extra}
