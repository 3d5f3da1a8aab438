"""Hessian-vector products and matrix-free linear solvers on pytrees.

These are the building blocks of implicit differentiation (TARE,
``tare_implicit_reward_learning.md`` eq. 14): the inverse-Hessian-vector product is never
formed from a dense Hessian, only from Hessian-vector products.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def _vdot(a: PyTree, b: PyTree) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _axpy(alpha: jax.Array, x: PyTree, y: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: alpha * a + b, x, y)


def hvp(f: Callable[[PyTree], jax.Array], params: PyTree, v: PyTree) -> PyTree:
    """Hessian of scalar ``f`` at ``params`` times ``v`` (a pytree like ``params``).

    Forward-over-reverse (``jax.jvp`` of ``jax.grad``): cost about one gradient
    evaluation plus one forward-mode pass, memory of one gradient; no dense Hessian.
    """
    return jax.jvp(jax.grad(f), (params,), (v,))[1]


def cg_solve(
    matvec: Callable[[PyTree], PyTree],
    b: PyTree,
    *,
    maxiter: int,
    tol: float = 1e-6,
    damping: float = 0.0,
) -> PyTree:
    """Conjugate gradients for ``(A + damping I) x = b``, ``A`` symmetric positive
    (semi-)definite and given only through ``matvec(v) = A v`` on pytrees.

    Starts from ``x = 0`` and stops after ``maxiter`` iterations or when
    ``|r| <= tol |b|``. Cost: at most ``maxiter`` matvecs (each one HVP when ``A`` is a
    Hessian); memory: four pytrees like ``b``. With exact arithmetic CG is exact after
    ``dim`` iterations. ``damping > 0`` regularises an indefinite or ill-conditioned
    ``A`` (the solution is then that of the damped system). Works under ``jit``/``vmap``
    (``maxiter`` static).
    """
    if not (isinstance(maxiter, int) and maxiter > 0):
        raise ValueError(f"maxiter must be an int > 0, got {maxiter!r}")
    if damping < 0:
        raise ValueError(f"damping must be >= 0, got {damping!r}")

    def A(v: PyTree) -> PyTree:
        av = matvec(v)
        return av if damping == 0.0 else _axpy(damping, v, av)

    x0 = jax.tree.map(jnp.zeros_like, b)
    rr0 = _vdot(b, b)
    stop = (tol**2) * rr0

    def cond(c):
        i, _, _, _, rr = c
        return (i < maxiter) & (rr > stop)

    def body(c):
        i, x, r, p, rr = c
        ap = A(p)
        alpha = rr / _vdot(p, ap)
        x = _axpy(alpha, p, x)
        r = _axpy(-alpha, ap, r)
        rr_new = _vdot(r, r)
        p = _axpy(rr_new / rr, p, r)
        return i + 1, x, r, p, rr_new

    _, x, _, _, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), x0, b, b, rr0))
    return x


def neumann_solve(
    matvec: Callable[[PyTree], PyTree], b: PyTree, *, steps: int, alpha: float
) -> PyTree:
    """Truncated Neumann series for ``A^-1 b``: ``alpha * sum_{j=0}^{steps} (I - alpha
    A)^j b``.

    Converges when the eigenvalues of ``alpha A`` lie in (0, 2) (choose ``alpha`` below
    ``2 / lambda_max``); the error shrinks like ``|1 - alpha lambda_min|^steps``. Cost:
    ``steps`` matvecs; memory: two pytrees like ``b``.
    """
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")

    def body(carry, _):
        p, acc = carry
        p = _axpy(-alpha, matvec(p), p)
        return (p, jax.tree.map(jnp.add, acc, p)), None

    (_, acc), _ = jax.lax.scan(body, (b, b), None, length=steps)
    return jax.tree.map(lambda a: alpha * a, acc)


__all__ = ["cg_solve", "hvp", "neumann_solve"]
