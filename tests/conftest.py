"""Shared test setup. Tests run on CPU; jitted programs are shared per module where the
shapes agree, since compilation dominates small CPU tests.

**How the suites compile.** A run whose ``-m`` expression leaves out both the slow and
the accelerator tests (the default suite, ``pytest``) compiles with XLA:CPU's cheapest
settings (:data:`fast_compile.FAST_COMPILE`): the programs compute the same functions,
less optimised, and the default suite checks algebra, contracts and failure handling,
never a learning threshold; cold, it took 38:41 on one core against 55:05 (2026-12-04).
Any other run (``pytest -m slow``, ``pytest -m ""``) compiles as users do, since the
learning thresholds were measured on programs compiled that way: another optimisation
level changes the floats, and RL amplifies that (under
``--xla_backend_optimization_level=1`` LIRPG's delayed-cartpole seeds fell from a mean
above 400 to 381). ``METAREWARD_TEST_XLA=default`` or ``fast`` overrides the choice."""

import os

import pytest
from fast_compile import with_fast_compile

os.environ.setdefault("JAX_PLATFORMS", "cpu")

#: Values of ``METAREWARD_TEST_XLA``.
XLA_CHOICES = ("default", "fast")


def compile_choice(markexpr: str, override: str | None) -> str:
    """``"fast"`` or ``"default"`` for a run with mark expression ``markexpr``: see the
    module docstring."""
    if override is not None:
        if override not in XLA_CHOICES:
            raise pytest.UsageError(
                f"METAREWARD_TEST_XLA={override!r}: allowed are {', '.join(XLA_CHOICES)}")
        return override
    excluded = "not slow" in markexpr and "not accelerator" in markexpr
    return "fast" if excluded else "default"


def pytest_configure(config: pytest.Config) -> None:
    """Adds ``fast_compile.FAST_COMPILE`` to ``XLA_FLAGS`` for a fast-compiling run, before
    any test module imports JAX (XLA reads the flags once, when its backend starts)."""
    choice = compile_choice(config.getoption("markexpr", "") or "",
                            os.environ.get("METAREWARD_TEST_XLA"))
    if choice == "fast":
        os.environ["XLA_FLAGS"] = with_fast_compile(os.environ.get("XLA_FLAGS", ""))
