"""Validation of algorithm configs: bad values fail before any compilation.

Float hyperparameters may also be JAX values, so that a sweep is one program::

    sweep = lambda lr, key: ppo.make_train(replace(config, learning_rate=lr), env).train(key)
    jax.jit(jax.vmap(sweep))(learning_rates, keys)

A concrete scalar array is checked by its value; a tracer (inside ``jit``/``vmap``)
cannot be inspected and is not checked. Fields that set shapes or program structure
(sizes, counts, flags, names) must stay Python values.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import jax
import numpy as np

from metareward.errors import ConfigError  # (defined there for light imports; re-exported)
from metareward.nets.policies import ACTIVATIONS

ConfigT = TypeVar("ConfigT")


def is_traced(*values: Any) -> bool:
    """Whether any of ``values`` is a JAX tracer (a hyperparameter being swept inside
    ``jit``/``vmap``), whose value cannot be checked before compiling."""
    return any(isinstance(v, jax.core.Tracer) for v in values)


def number(value: Any) -> Any:
    """A concrete real scalar array as a Python float (so it is checked by value);
    anything else unchanged.

    Args:
        value: A config field's value.

    Returns:
        ``float(value)`` for a concrete 0-d floating JAX or NumPy array (or NumPy float
        scalar), else ``value`` itself.
    """
    if isinstance(value, jax.Array | np.ndarray | np.floating) and not is_traced(value):
        if value.shape == () and np.issubdtype(value.dtype, np.floating):
            return float(value)
    return value


def maybe(condition: Any) -> bool:
    """A condition that decides program structure (e.g. "is there target noise?"): its
    value if it is concrete, ``True`` if it is traced, so that a swept value takes the
    general branch (the special branch must be a shortcut of it, e.g. for a zero).

    Args:
        condition: A concrete value or a JAX tracer.

    Returns:
        ``True`` if ``condition`` is traced, else ``bool(condition)``.
    """
    return is_traced(condition) or bool(condition)


def log(value: Any) -> Any:
    """``math.log`` of a Python number, ``jnp.log`` of a JAX value (a swept field).

    Args:
        value: A positive number, or a JAX array.

    Returns:
        Its natural logarithm (a float, or a JAX array).
    """
    if isinstance(value, jax.Array):
        return jax.numpy.log(value)
    return math.log(value)


def check(name: str, value: Any, ok: Any, allowed: str) -> None:
    """Raises :class:`ConfigError` naming the field, its value and what is allowed.

    Args:
        name: The field's name.
        value: Its value (named in the error).
        ok: Whether the value is allowed; not checked if it is traced.
        allowed: What is allowed, in words.
    """
    if is_traced(ok):
        return
    if not ok:
        raise ConfigError(f"config field {name}={value!r} is invalid; allowed: {allowed}")


def positive_int(name: str, value: Any) -> None:
    """Checks that ``value`` is a Python ``int > 0`` (a ``bool`` is not, nor is a tracer:
    sizes and counts set shapes).

    Args:
        name: The field's name.
        value: Its value.

    Raises:
        ConfigError: If ``value`` is not an ``int > 0``.
    """
    check(
        name,
        value,
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        "an int > 0",
    )


def in_range(
    name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False
) -> None:
    """Checks ``lo <= value <= hi`` (strict at an open end); tracers pass.

    Args:
        name: The field's name.
        value: Its value (a concrete scalar array is checked by value).
        lo: Lower bound.
        hi: Upper bound.
        lo_open: Whether ``lo`` itself is excluded.
        hi_open: Whether ``hi`` itself is excluded.

    Raises:
        ConfigError: If ``value`` is not a number (``bool`` is not) in the interval.
    """
    value = number(value)
    if is_traced(value):
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and (value > lo if lo_open else value >= lo)
    ok = ok and (value < hi if hi_open else value <= hi)
    interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    check(name, value, ok, f"a number in {interval}")


def non_negative(name: str, value: Any) -> None:
    """Checks ``value >= 0``; tracers pass.

    Args:
        name: The field's name.
        value: Its value (a concrete scalar array is checked by value).

    Raises:
        ConfigError: If ``value`` is not a number ``>= 0`` (``bool`` is not).
    """
    value = number(value)
    if is_traced(value):
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    check(name, value, ok, "a number >= 0")


def positive(name: str, value: Any) -> None:
    """Checks ``value > 0``; tracers pass.

    Args:
        name: The field's name.
        value: Its value (a concrete scalar array is checked by value).

    Raises:
        ConfigError: If ``value`` is not a number ``> 0`` (``bool`` is not).
    """
    value = number(value)
    if is_traced(value):
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    check(name, value, ok, "a number > 0")


def hidden_sizes(name: str, value: Sequence[int]) -> None:
    """Checks a network's hidden layer sizes.

    Args:
        name: The field's name.
        value: Its value: must be a tuple or list of ``int > 0``.

    Raises:
        ConfigError: If ``value`` is not a tuple or list of ints ``> 0``.
    """
    ok = isinstance(value, tuple | list) and all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in value
    )
    check(name, value, ok, "a tuple of ints > 0, e.g. (64, 64)")


def activation_name(name: str, value: str) -> None:
    """Checks an activation's name.

    Args:
        name: The field's name.
        value: Its value: must be a key of :data:`metareward.nets.policies.ACTIVATIONS`.

    Raises:
        ConfigError: If ``value`` is not a known activation.
    """
    check(name, value, value in ACTIVATIONS, f"one of {sorted(ACTIVATIONS)}")


class DefaultConfigWarning(UserWarning):
    """A config was asked for an env without a preset: the paper's defaults are used."""


def preset_function(presets: Mapping[str, ConfigT], config_cls: Callable[[], ConfigT],
                    algorithm: str) -> Callable[[str], ConfigT]:
    """An algorithm module's ``preset(env_name)``: :func:`preset` bound to its presets and
    its ``Config``, so that each learner declares its lookup in one line.

    Args:
        presets: The algorithm's presets, by env name (looked up at each call, so entries
            added later are found).
        config_cls: Its config class; ``config_cls()`` are the paper defaults.
        algorithm: The algorithm's name, for messages.

    Returns:
        ``preset(env_name) -> Config``: the tuned config for ``env_name`` if there is one,
        else the paper defaults (with a :class:`DefaultConfigWarning`); ``ConfigError``
        for an env name that is not registered.
    """

    def lookup(env_name: str) -> ConfigT:
        return preset(presets, config_cls(), env_name, algorithm)

    lookup.__name__ = lookup.__qualname__ = "preset"
    lookup.__module__ = config_cls.__module__
    lookup.__doc__ = (
        f"The tuned :class:`{config_cls.__module__}.{config_cls.__qualname__}` for "
        "``env_name`` if there is one, else the paper defaults (with a "
        ":class:`~metareward.algos.config.DefaultConfigWarning`); ``ConfigError`` for an "
        "env name that is not registered (:func:`metareward.algos.config.preset`)."
    )
    return lookup


def preset(presets: Mapping[str, Any], default: Any, env_name: str, algorithm: str) -> Any:
    """The preset of ``algorithm`` for ``env_name``, or its paper defaults (with a
    :class:`DefaultConfigWarning`) for a registered env without one.

    Args:
        presets: The algorithm's presets, by env name.
        default: Its paper defaults (``Config()``).
        env_name: A registered env's name, or a comma-separated list of them (a
            multi-env learner: the first one's preset).
        algorithm: The algorithm's name, for messages.

    Returns:
        ``presets[env_name]`` (of the first name), else ``default``.

    Raises:
        ConfigError: a name that is not a registered env (a typo such as ``"cartpol"``);
            the message lists the envs with presets.
    """
    from metareward.envs import registry as env_registry

    names = [n.strip() for n in str(env_name).split(",")]
    known = set(env_registry.names())
    for name in names:
        if name not in known:
            raise ConfigError(
                f"unknown env {name!r} for a {algorithm} preset; envs with {algorithm} "
                f"presets: {sorted(presets)} (every env: metareward.envs.names())"
            )
    if names[0] in presets:
        return presets[names[0]]
    warnings.warn(
        f"no {algorithm} preset for env {names[0]!r}: using the paper defaults "
        f"({type(default).__module__}.{type(default).__qualname__}()); envs with presets: "
        f"{sorted(presets)}",
        DefaultConfigWarning,
        stacklevel=3,
    )
    return default


def replace(config: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that names unknown fields and the valid ones.

    Args:
        config: A config dataclass.
        **changes: New values of its fields, by name.

    Returns:
        A copy of ``config`` with ``changes`` applied (its ``__post_init__``, where it
        has one, validates it again).

    Raises:
        ConfigError: If a name in ``changes`` is not a field of ``config``; the message
            lists the valid fields.
    """
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise ConfigError(
            f"unknown config field(s) {unknown} for {type(config).__module__}.Config; "
            f"valid fields: {sorted(fields)}"
        )
    return dataclasses.replace(config, **changes)


__all__ = ["ConfigError", "DefaultConfigWarning", "activation_name", "check", "hidden_sizes",
           "in_range", "is_traced", "log", "maybe", "non_negative", "number", "positive",
           "positive_int", "preset", "preset_function", "replace"]
