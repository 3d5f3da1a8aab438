"""How the test suites compile (``tests/conftest.py``): the default suite with XLA:CPU's
cheapest settings, any run that may select a learning threshold as users compile."""

import os

import pytest
from conftest import compile_choice, pytest_collection_modifyitems, pytest_runtest_setup
from fast_compile import FAST_COMPILE


@pytest.mark.parametrize("markexpr,expected", [
    ("not slow and not accelerator", "fast"),  # the default suite (pyproject's addopts)
    ("slow and not learning", "fast"),  # CI's second run
    ("(slow or foo) and not learning", "fast"),
    ("not learning and not accelerator", "fast"),
    ("learning", "default"),  # CI's third run
    ("not slow", "default"),  # accelerator tests may run
    ("not accelerator", "default"),  # slow learning tests may run
    ("slow", "default"),
    ("accelerator", "default"),
    ("accelerator and not learning", "fast"),  # no such test: each is a learning one
    ("slow or accelerator", "default"),
    ("not learning", "fast"),
    ("slow and accelerator", "default"),
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



class _Item:
    """What pytest_collection_modifyitems reads of a test item."""

    def __init__(self, nodeid, *marks):
        self.nodeid, self.marks = nodeid, set(marks)

    def get_closest_marker(self, name):
        return name if name in self.marks else None


def test_learning_and_accelerator_marks_are_checked():
    ok = [_Item("t::a", "learning", "slow"), _Item("t::b", "learning", "accelerator"),
          _Item("t::c"), _Item("t::d", "slow")]
    pytest_collection_modifyitems(None, ok)
    with pytest.raises(pytest.UsageError,
                       match="t::e: a learning test must also be marked slow or accelerator"):
        pytest_collection_modifyitems(None, [*ok, _Item("t::e", "learning")])
    with pytest.raises(pytest.UsageError,
                       match="t::f: an accelerator test must also be marked learning"):
        pytest_collection_modifyitems(None, [*ok, _Item("t::f", "accelerator")])


def test_a_learning_test_fails_in_a_fast_compiled_run(monkeypatch):
    learning, other = _Item("t::a", "learning", "slow"), _Item("t::c", "slow")
    monkeypatch.setenv("XLA_FLAGS", FAST_COMPILE)
    with pytest.raises(pytest.fail.Exception, match="a learning threshold"):
        pytest_runtest_setup(learning)
    pytest_runtest_setup(other)
    monkeypatch.setenv("XLA_FLAGS", "")
    pytest_runtest_setup(learning)
