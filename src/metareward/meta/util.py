"""Small helpers of the outer-gradient estimators: pytree arithmetic and the checks of
their arguments (counts that fix the program, scalars that may be traced)."""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp

from metareward.aliases import PyTree


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    """The inner product of two pytrees of the same structure.

    Args:
        a: A pytree of arrays.
        b: A pytree of the same structure and shapes.

    Returns:
        ``sum_leaves vdot(a_leaf, b_leaf)``, a scalar.
    """
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def tree_axpy(alpha: jax.Array, x: PyTree, y: PyTree) -> PyTree:
    """``alpha * x + y``, leaf by leaf.

    Args:
        alpha: A scalar.
        x: A pytree of arrays.
        y: A pytree of the same structure.

    Returns:
        A pytree like ``y``.
    """
    return jax.tree.map(lambda a, b: alpha * a + b, x, y)


def check_count(name: str, value: Any, minimum: int) -> None:
    """``ValueError`` unless ``value`` is a Python int ``>= minimum`` (it fixes the
    program: a loop length, a population size).

    Args:
        name: The argument's name, for the message.
        value: Its value.
        minimum: The smallest value allowed.

    Raises:
        ValueError: If ``value`` is not an integer (a ``bool`` is not) ``>= minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be a Python int >= {minimum}, got {value!r}")


def check_scalar(name: str, value: Any, *, positive: bool) -> None:
    """Checks ``value > 0`` (or ``>= 0``) when it is concrete; a tracer passes unchecked.

    Args:
        name: The argument's name, for the message.
        value: Its value (a number, a concrete array, or a tracer).
        positive: Require ``> 0`` rather than ``>= 0``.

    Raises:
        ValueError: If a concrete ``value`` is not a real number, is NaN, or is out of
            range.
    """
    if isinstance(value, jax.core.Tracer):
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    ok = v > 0 if positive else v >= 0
    if not ok or v != v:
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")


def is_zero(value: Any) -> bool:
    """Whether ``value`` is a concrete real zero (a traced value never is).

    Args:
        value: A Python or NumPy number, or an array (a JAX array is never a zero here).

    Returns:
        ``True`` for a real number (a ``numbers.Real``) equal to 0.
    """
    return isinstance(value, numbers.Real) and value == 0


__all__ = ["check_count", "check_scalar", "is_zero", "tree_axpy", "tree_vdot"]
