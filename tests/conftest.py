"""Shared fixtures. Tests run on CPU; jitted programs are shared per module where the
shapes agree, since compilation dominates small CPU tests.

XLA:CPU compiles at LLVM optimisation level 1 here (``tests/fast_compile.py``:
:data:`~fast_compile.TEST_XLA_FLAGS`) instead of its default: the programs compute the
same bits (a PPO run's parameters compared bit for bit), compile in about 30% less time
and run as fast (measured on the 2-core CPU, 2026-12-04; ``fast_compile.py``). With a
cold compile cache, CI's case, compiling is most of the suite's time.
``METAREWARD_TEST_XLA=default`` keeps XLA's own settings."""

import os

from fast_compile import TEST_XLA_FLAGS

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if os.environ.get("METAREWARD_TEST_XLA") != "default" and TEST_XLA_FLAGS not in os.environ.get(
        "XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()
