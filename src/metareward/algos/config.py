"""Validation of algorithm configs: bad values fail before any compilation."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from metareward.errors import ConfigError  # (defined there for light imports; re-exported)
from metareward.nets.policies import ACTIVATIONS


def check(name: str, value: Any, ok: bool, allowed: str) -> None:
    """Raises :class:`ConfigError` naming the field, its value and what is allowed."""
    if not ok:
        raise ConfigError(f"config field {name}={value!r} is invalid; allowed: {allowed}")


def positive_int(name: str, value: Any) -> None:
    check(
        name,
        value,
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        "an int > 0",
    )


def in_range(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and (value > lo if lo_open else value >= lo) and value <= hi
    check(name, value, ok, f"a number in {'(' if lo_open else '['}{lo}, {hi}]")


def non_negative(name: str, value: Any) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    check(name, value, ok, "a number >= 0")


def positive(name: str, value: Any) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    check(name, value, ok, "a number > 0")


def hidden_sizes(name: str, value: Sequence[int]) -> None:
    ok = isinstance(value, tuple | list) and all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in value
    )
    check(name, value, ok, "a tuple of ints > 0, e.g. (64, 64)")


def activation_name(name: str, value: str) -> None:
    check(name, value, value in ACTIVATIONS, f"one of {sorted(ACTIVATIONS)}")


def replace(config: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that names unknown fields and the valid ones."""
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise ConfigError(
            f"unknown config field(s) {unknown} for {type(config).__module__}.Config; "
            f"valid fields: {sorted(fields)}"
        )
    return dataclasses.replace(config, **changes)
