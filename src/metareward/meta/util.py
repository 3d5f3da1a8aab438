"""Small helpers of the outer-gradient estimators: pytree arithmetic and the checks of
their arguments (counts that fix the program, scalars that may be traced)."""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp

from metareward.aliases import PyTree


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    """The inner product of two pytrees of the same structure."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def tree_axpy(alpha: jax.Array, x: PyTree, y: PyTree) -> PyTree:
    """``alpha * x + y``, leaf by leaf."""
    return jax.tree.map(lambda a, b: alpha * a + b, x, y)


def check_count(name: str, value: Any, minimum: int) -> None:
    """``ValueError`` unless ``value`` is a Python int ``>= minimum`` (it fixes the
    program: a loop length, a population size)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be a Python int >= {minimum}, got {value!r}")


def check_scalar(name: str, value: Any, *, positive: bool) -> None:
    """Checks ``value > 0`` (or ``>= 0``) when it is concrete; a tracer passes unchecked."""
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
    """Whether ``value`` is a concrete real zero (a traced value never is)."""
    return isinstance(value, numbers.Real) and value == 0


__all__ = ["check_count", "check_scalar", "is_zero", "tree_axpy", "tree_vdot"]
