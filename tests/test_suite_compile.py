"""How the test suites compile (``tests/conftest.py``): the default suite with XLA:CPU's
cheapest settings, any run that may select learning thresholds as users compile."""

import os

import pytest
from conftest import compile_choice
from fast_compile import FAST_COMPILE


@pytest.mark.parametrize("markexpr,expected", [
    ("not slow and not accelerator", "fast"),  # the default suite (pyproject's addopts)
    ("not slow", "default"),  # accelerator tests may run
    ("not accelerator", "default"),  # slow tests may run
    ("slow", "default"),
    ("accelerator", "default"),
    ("slow or accelerator", "default"),
    ("", "default"),  # pytest -m "": every test, learning ones included
])
def test_choice_follows_the_mark_expression(markexpr, expected):
    assert compile_choice(markexpr, None) == expected


def test_the_environment_variable_overrides_and_is_checked():
    assert compile_choice("slow", "fast") == "fast"
    assert compile_choice("not slow", "default") == "default"
    with pytest.raises(pytest.UsageError, match="METAREWARD_TEST_XLA='x': allowed are"):
        compile_choice("", "x")


def test_this_run_compiles_as_chosen(request):
    choice = compile_choice(request.config.getoption("markexpr", "") or "",
                            os.environ.get("METAREWARD_TEST_XLA"))
    assert (FAST_COMPILE in os.environ.get("XLA_FLAGS", "")) == (choice == "fast")
