"""Hessian-vector products and matrix-free linear solvers on pytrees.

These are the building blocks of implicit differentiation (TARE, "Taming Reward: learning
parameterised rewards for policy gradient by implicit differentiation", eq. 14 and the
conjugate-gradient problem below it):
the inverse-Hessian-vector product is never formed from a dense Hessian, only from
Hessian-vector products.

Scalar settings (``tol``, ``damping``, ``alpha``) may be traced values (swept with
``vmap``); they are validated when they are concrete Python or NumPy numbers. Counts that
fix the program (``maxiter``, ``steps``) must be Python ints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metareward.aliases import PyTree
from metareward.meta.util import check_count, check_scalar, is_zero, tree_axpy, tree_vdot


def hvp(f: Callable[[PyTree], jax.Array], params: PyTree, v: PyTree) -> PyTree:
    """Hessian of scalar ``f`` at ``params`` times ``v``.

    Forward-over-reverse (``jax.jvp`` of ``jax.grad``): cost about one gradient
    evaluation plus one forward-mode pass, memory of one gradient; no dense Hessian.
    Inside a jitted loop over many ``v`` (CG), XLA hoists the loop-invariant primal pass
    out of the loop: linearising once by hand (``jax.linearize``) measured no faster.

    Args:
        f: ``f(params)``, a scalar.
        params: Where the Hessian is taken (a pytree).
        v: The vector, a pytree like ``params``.

    Returns:
        ``H v``, a pytree like ``params``.
    """
    return jax.jvp(jax.grad(f), (params,), (v,))[1]


class CGInfo(NamedTuple):
    """Diagnostics of :func:`cg_solve` (arrays, so they can be logged from a jitted run)."""

    iterations: jax.Array
    """Matrix-vector products done (int32)."""
    residual_norm: jax.Array
    """``|b - (A + damping I) x|`` (CG's recursive residual) at the returned ``x``."""
    negative_curvature: jax.Array
    """True if CG stopped at a direction ``p`` with ``p'(A + damping I)p <= 0`` (with
    ``restarts``: at the last attempt)."""
    min_curvature: jax.Array | float = float("nan")
    """The smallest Rayleigh quotient ``p'(A + damping I)p / p'p`` over the search
    directions of the last attempt (NaN where not tracked)."""
    damping: jax.Array | float = float("nan")
    """The damping of the last attempt (the given one unless ``restarts`` raised it)."""


def cg_solve(
    matvec: Callable[[PyTree], PyTree],
    b: PyTree,
    *,
    maxiter: int,
    tol: float = 1e-6,
    damping: float = 0.0,
    restarts: int = 0,
    return_info: bool = False,
) -> PyTree | tuple[PyTree, CGInfo]:
    """Conjugate gradients for ``(A + damping I) x = b``, ``A`` symmetric positive
    (semi-)definite and given only through ``matvec(v) = A v`` on pytrees.

    Starts from ``x = 0`` and stops after ``maxiter`` iterations, when
    ``|r| <= tol |b|``, or at the first search direction of non-positive curvature
    (``p'Ap <= 0``, which a Hessian of a non-convex loss can have): then the iterate
    before that direction is returned — finite, and the exact CG iterate in the
    subspace searched so far — rather than a division by ``p'Ap`` (the truncated-Newton
    rule). ``damping > 0`` makes an ill-conditioned or indefinite ``A`` better behaved;
    the answer is then that of the damped system. In exact arithmetic CG is exact
    after ``dim`` iterations for an SPD ``A``.

    **Adaptive damping** (``restarts > 0``): when CG meets a direction of non-positive
    curvature, it starts again from ``x = 0`` with the damping raised to twice the most
    negative curvature of ``A`` met so far (``d <- max(2 (d - q), 2 d + 1e-6)``, ``q`` the
    smallest Rayleigh quotient ``p'(A + d I)p / p'p`` of the attempt), at most
    ``restarts`` times; the last attempt's answer is returned. The damping then tracks the
    problem's own indefiniteness instead of a fixed guess; each attempt costs up to
    ``maxiter`` matvecs.

    Cost: at most ``maxiter`` matvecs, ``(restarts + 1) maxiter`` with restarts (each one
    Hessian-vector product when ``A`` is a Hessian); memory: four pytrees like ``b``.
    Works under ``jit`` and ``vmap`` (``maxiter`` and ``restarts`` are static; ``tol``
    and ``damping`` may be traced). Implemented with ``lax.while_loop``, so it is not
    reverse-differentiable itself (the hypergradients in :mod:`metareward.meta` do not
    need that).

    Args:
        matvec: ``matvec(v) = A v`` on pytrees like ``b``.
        b: The right-hand side (a pytree).
        maxiter: Iterations at most per attempt (a Python int >= 1).
        tol: Stop when ``|r| <= tol |b|`` (>= 0).
        damping: Added to ``A``'s diagonal (>= 0).
        restarts: Adaptive-damping restarts at most (a Python int >= 0).
        return_info: Also return the :class:`CGInfo`.

    Returns:
        ``x`` (a pytree like ``b``), or ``(x, CGInfo)`` with ``return_info=True``.

    Raises:
        ValueError: If ``maxiter``, ``restarts``, ``tol`` or ``damping`` is out of range.
    """
    check_count("maxiter", maxiter, 1)
    check_count("restarts", restarts, 0)
    check_scalar("tol", tol, positive=False)
    check_scalar("damping", damping, positive=False)
    rr0 = tree_vdot(b, b)
    dtype = jnp.result_type(rr0)
    d0 = jnp.asarray(damping, dtype)

    def attempt(d: jax.Array):
        def A(v: PyTree) -> PyTree:
            return tree_axpy(d, v, matvec(v))

        return _cg(A, b, rr0, maxiter=maxiter, tol=tol)

    if restarts == 0:
        A = matvec if is_zero(damping) else (lambda v: tree_axpy(damping, v, matvec(v)))
        x, i, rr, neg, q = _cg(A, b, rr0, maxiter=maxiter, tol=tol)
        d_used = d0
    else:
        def again(c):
            k, _, _, _, _, neg, _ = c
            return neg & (k <= restarts)

        def retry(c):
            k, d, _, _, _, _, q = c
            d = jnp.maximum(2.0 * (d - q), 2.0 * d + 1e-6)
            return (k + 1, d, *attempt(d))

        first = (jnp.int32(1), d0, *attempt(d0))
        _, d_used, x, i, rr, neg, q = jax.lax.while_loop(again, retry, first)
    if return_info:
        return x, CGInfo(i, jnp.sqrt(rr), neg, q, d_used)
    return x


def _cg(A: Callable[[PyTree], PyTree], b: PyTree, rr0: jax.Array, *, maxiter: int,
        tol: float):
    """Plain CG from ``x = 0`` on ``A x = b``: ``(x, iterations, |r|^2, negative curvature
    met, smallest Rayleigh quotient p'Ap / p'p of the search directions)``."""
    x0 = jax.tree.map(jnp.zeros_like, b)
    stop = jnp.square(tol) * rr0
    inf = jnp.asarray(jnp.inf, jnp.result_type(rr0))

    def cond(c):
        i, _, _, _, rr, neg, _ = c
        return (i < maxiter) & (rr > stop) & ~neg

    def body(c):
        i, x, r, p, rr, _, qmin = c
        ap = A(p)
        pap = tree_vdot(p, ap)
        q = pap / jnp.maximum(tree_vdot(p, p), jnp.finfo(rr.dtype).tiny)
        neg = ~(pap > 0)  # also catches a NaN curvature
        alpha = jnp.where(neg, 0.0, rr / jnp.where(neg, 1.0, pap))
        x = tree_axpy(alpha, p, x)
        r = tree_axpy(-alpha, ap, r)
        rr_new = tree_vdot(r, r)
        p = tree_axpy(rr_new / jnp.where(rr > 0, rr, 1.0), p, r)
        return i + 1, x, r, p, rr_new, neg, jnp.minimum(qmin, jnp.where(jnp.isnan(q), -inf, q))

    init = (jnp.int32(0), x0, b, b, rr0, jnp.zeros((), bool), inf)
    i, x, _, _, rr, neg, qmin = jax.lax.while_loop(cond, body, init)
    return x, i, rr, neg, qmin


def neumann_solve(
    matvec: Callable[[PyTree], PyTree], b: PyTree, *, steps: int, alpha: float
) -> PyTree:
    """Truncated Neumann series for ``A^-1 b``: ``alpha * sum_{j=0}^{steps} (I - alpha
    A)^j b`` (as in Lorraine et al. 2020's implicit hyperparameter gradients).

    Converges when the eigenvalues of ``alpha A`` lie in (0, 2) (choose ``alpha`` below
    ``2 / lambda_max``); the error shrinks like ``|1 - alpha lambda_min|^steps``. Cost:
    ``steps`` matvecs; memory: two pytrees like ``b``. Works under ``jit`` and ``vmap``
    (``steps`` static, ``alpha`` may be traced) and is differentiable (``lax.scan``).

    Args:
        matvec: ``matvec(v) = A v`` on pytrees like ``b``.
        b: The right-hand side (a pytree).
        steps: The series' last power (a Python int >= 0).
        alpha: The step (> 0).

    Returns:
        The approximation of ``A^-1 b``, a pytree like ``b``.

    Raises:
        ValueError: If ``steps`` or ``alpha`` is out of range.
    """
    check_count("steps", steps, 0)
    check_scalar("alpha", alpha, positive=True)

    def body(carry, _):
        p, acc = carry
        p = tree_axpy(-alpha, matvec(p), p)
        return (p, jax.tree.map(jnp.add, acc, p)), None

    (_, acc), _ = jax.lax.scan(body, (b, b), None, length=steps)
    return jax.tree.map(lambda a: alpha * a, acc)


__all__ = ["CGInfo", "cg_solve", "hvp", "neumann_solve"]
