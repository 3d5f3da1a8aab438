"""Checks of env options (``metareward.envs.make(name, **options)``) before an env is built.

An option's type is that of its default: a gymnax ``EnvParams`` field, a keyword of the
brax env's constructor or of :class:`~metareward.envs.chain.ChainEnv`. A bad value (a
string or a list for a number, NaN, a negative episode length...) would otherwise fail
deep inside JAX once the run has started, or run silently with a broken env; here it is
a ``ValueError`` naming the option, the value and what is allowed, raised by
:func:`metareward.envs.make` before anything is compiled or written.

Rules, by the type of the default:

* ``bool``: ``True``/``False`` (or the strings ``"true"``/``"false"``);
* ``int``: an int (an integral float such as ``1e3`` is taken as one), ``>= 0``; ``> 0``
  for lengths, counts and intervals (:func:`must_be_positive`);
* ``float``: a finite int or float (not a bool; ranges are the env's business);
* a tuple or an array of numbers: as many numbers, none NaN (``inf`` is allowed: brax's
  ``healthy_z_range`` defaults to ``(0.7, inf)``);
* ``str``: a string; any other default: not checked.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

#: Int options that count steps or are lengths and intervals: they must be > 0.
POSITIVE = frozenset({"episode_length", "max_steps_in_episode", "n_frames", "max_oxygen",
                      "player_speed"})

_TRUE, _FALSE = {"true", "yes", "on"}, {"false", "no", "off"}


def must_be_positive(key: str) -> bool:
    """Whether the int option ``key`` must be > 0 (a length, count or interval).

    Args:
        key: An env option's name.

    Returns:
        ``True`` for the options in ``POSITIVE`` and those ending in ``_interval`` or
        ``_length``.
    """
    return key in POSITIVE or key.endswith(("_interval", "_length"))


def _real(value: Any) -> float | None:
    """``value`` as a float if it is a real scalar (not a bool), else ``None``."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # a 0-d numpy/JAX array
        a = np.asarray(value)
        if a.ndim == 0 and a.dtype.kind in "iuf":
            return float(a)
    return None


def check_option(env: str, key: str, value: Any, default: Any) -> Any:
    """``value`` of option ``key`` of ``env``, checked against the type of ``default``.

    Args:
      env: the env's name (for the message).
      key: the option's name.
      value: the value given.
      default: the option's default value, whose type the value must have.

    Returns:
      The value converted to the default's type (an int for an int option given ``1e3``,
      a float for a float option given ``10``, an array for an array option).

    Raises:
      ValueError: ``env option KEY=VALUE for ENV: expects ...`` when it does not fit.
    """

    def fail(expects: str) -> ValueError:
        return ValueError(f"env option {key}={value!r} for {env}: expects {expects}")

    if isinstance(default, bool | np.bool_):
        if isinstance(value, bool | np.bool_):
            return bool(value)
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise fail("true or false")
    if isinstance(default, numbers.Integral):
        positive = must_be_positive(key)
        allowed = "an int > 0" if positive else "an int >= 0"
        v = _real(value)
        if v is None or not math.isfinite(v) or not v.is_integer():
            raise fail(allowed)
        if v < 1 if positive else v < 0:
            raise fail(allowed)
        return int(v)
    if isinstance(default, numbers.Real):
        v = _real(value)
        if v is None or not math.isfinite(v):
            raise fail("a finite number")
        return v
    if isinstance(default, tuple | list) or _is_array(default):
        shape = np.shape(default)
        items = _numbers(value)
        if items is None or np.shape(items) != shape or np.isnan(items).any():
            n = int(np.prod(shape))
            raise fail(f"{n} number{'s' if n != 1 else ''}, e.g. {_show(default)}")
        if _is_array(default):
            import jax.numpy as jnp

            return jnp.asarray(items, dtype=default.dtype)
        return type(default)(float(x) for x in items)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise fail("a string")
        return value
    return value


def check_options(env: str, options: Mapping[str, Any], defaults: Mapping[str, Any],
                  *, extra: Iterable[str] = ()) -> dict[str, Any]:
    """All ``options`` of ``env`` checked (:func:`check_option`) and converted.

    Args:
      env: the env's name (for the messages).
      options: the options given.
      defaults: every known option's default.
      extra: other allowed names, checked elsewhere.

    Returns:
      The options, each converted to its default's type.

    Raises:
      ValueError: an unknown option (the message lists the allowed ones) or a bad value.
    """
    allowed = sorted({*defaults, *extra})
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"{env}: unknown env parameter(s) {unknown}; allowed: {allowed}")
    return {k: check_option(env, k, v, defaults[k]) if k in defaults else v
            for k, v in options.items()}


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and np.ndim(x) > 0


def _numbers(value: Any) -> np.ndarray | None:
    """``value`` as a float array if it is a list/tuple/array of real numbers."""
    if isinstance(value, str | bytes) or not (
            isinstance(value, list | tuple) or _is_array(value)):
        return None
    try:
        a = np.asarray(value)
    except (ValueError, TypeError):
        return None
    if a.dtype.kind not in "iuf":
        return None
    return a.astype(float)


def _show(default: Any) -> str:
    if _is_array(default):
        return str(np.asarray(default).tolist())
    return repr(default)


__all__ = ["POSITIVE", "check_option", "check_options", "must_be_positive"]
