"""Shared test setup. Tests run on CPU; jitted programs are shared per module where the
shapes agree, since compilation dominates small CPU tests.

**How the suites compile.** A run that cannot select a ``learning`` test (one that checks
a learning threshold; every accelerator test is one too) compiles with XLA:CPU's cheapest
settings (:data:`fast_compile.FAST_COMPILE`): the programs compute the same functions,
less optimised, and such a run checks algebra, contracts, envs and failure handling.
That is the default suite (``pytest``), and ``pytest -m "slow and not learning"``; cold,
the default suite took 38:41 on one core against 55:05 (2026-12-04). A run that may
select one (``pytest -m learning``, ``pytest -m slow``, ``pytest -m ""``) compiles as
users do, since the thresholds were measured on programs compiled that way: another
optimisation level changes the floats, and RL amplifies that (under
``--xla_backend_optimization_level=1`` LIRPG's delayed-cartpole seeds fell from a mean
above 400 to 381). ``METAREWARD_TEST_XLA=default`` or ``fast`` overrides the choice, and a
``learning`` test in a fast-compiled run fails at setup, naming the reason.

CI (``.ci/run``) runs the non-learning slow tests in a run of their own, so they compile
as the default suite did and reuse its compilation cache entries (XLA's flags are part of
the cache key)."""

import os

import pytest
from _pytest.mark.expression import Expression
from fast_compile import FAST_COMPILE, with_fast_compile

from metareward import configure_xla

os.environ.setdefault("JAX_PLATFORMS", "cpu")

#: Values of ``METAREWARD_TEST_XLA``.
XLA_CHOICES = ("default", "fast")
#: The marker sets a learning test can carry: ``learning`` with ``slow``, ``accelerator``
#: or both (:func:`pytest_collection_modifyitems` checks it).
_LEARNING_MARKS = ({"learning", "slow"}, {"learning", "accelerator"},
                   {"learning", "slow", "accelerator"})


def may_select_learning(markexpr: str) -> bool:
    """Whether a ``-m`` expression is true for some test marked ``learning`` (whose
    markers are one of :data:`_LEARNING_MARKS`); the empty expression selects every
    test."""
    if not markexpr.strip():
        return True
    expr = Expression.compile(markexpr)
    return any(expr.evaluate(lambda name, marks=marks, **_kw: name in marks)
               for marks in _LEARNING_MARKS)


def compile_choice(markexpr: str, override: str | None) -> str:
    """``"fast"`` or ``"default"`` for a run with mark expression ``markexpr``: see the
    module docstring."""
    if override is not None:
        if override not in XLA_CHOICES:
            raise pytest.UsageError(
                f"METAREWARD_TEST_XLA={override!r}: allowed are {', '.join(XLA_CHOICES)}")
        return override
    return "default" if may_select_learning(markexpr) else "fast"


def pytest_configure(config: pytest.Config) -> None:
    """Adds ``fast_compile.FAST_COMPILE`` to ``XLA_FLAGS`` for a fast-compiling run, then
    metareward's XLA:CPU flags (:func:`metareward.configure_xla`, as the ``metareward``
    command does; ``import metareward`` leaves ``XLA_FLAGS`` alone), before any test
    module imports JAX (XLA reads the flags once, when its backend starts). Subprocesses
    inherit them."""
    choice = compile_choice(config.getoption("markexpr", "") or "",
                            os.environ.get("METAREWARD_TEST_XLA"))
    if choice == "fast":
        os.environ["XLA_FLAGS"] = with_fast_compile(os.environ.get("XLA_FLAGS", ""))
    configure_xla()
    # the command's persistent compilation cache stays off in tests (no writes to the
    # home directory, compile counts as without it); tests/test_cli_compile_cache.py
    # turns it on in its own processes
    os.environ.setdefault("METAREWARD_COMPILE_CACHE", "off")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Checks :data:`_LEARNING_MARKS`: a ``learning`` test is also ``slow`` or
    ``accelerator`` (so the default suite never selects it), and an ``accelerator`` test
    is a ``learning`` one (a learning run at a GPU's budget)."""
    for item in items:
        learning = item.get_closest_marker("learning") is not None
        if learning and not (item.get_closest_marker("slow")
                             or item.get_closest_marker("accelerator")):
            raise pytest.UsageError(f"{item.nodeid}: a learning test must also be marked "
                                    "slow or accelerator")
        if item.get_closest_marker("accelerator") and not learning:
            raise pytest.UsageError(f"{item.nodeid}: an accelerator test must also be marked "
                                    "learning")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fails a ``learning`` test in a fast-compiled run: its threshold holds for programs
    compiled as users compile them."""
    if item.get_closest_marker("learning") and FAST_COMPILE in os.environ.get("XLA_FLAGS", ""):
        pytest.fail("a learning threshold, measured on programs compiled as users compile "
                    "them, in a run compiling with tests/fast_compile.py's XLA_FLAGS: run "
                    "it as `pytest -m learning`, without METAREWARD_TEST_XLA=fast",
                    pytrace=False)
