"""Hypergradients of bilevel problems: unrolled and implicit.

Bilevel problem: ``min_h outer(p*(h), h)`` with ``p*(h)`` reached by minimising
``inner(p, h)``. All losses are minimised; ``params`` and ``hparams`` are pytrees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from metareward.meta.solvers import _vdot, cg_solve, hvp, neumann_solve

PyTree = Any
SOLVERS = ("cg", "neumann")


def unrolled_hypergrad(
    inner_update: Callable[[PyTree, PyTree, jax.Array], PyTree],
    outer_loss: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    hparams: PyTree,
    num_steps: int,
) -> PyTree:
    """``d outer_loss(params_K, hparams) / d hparams`` with ``params_{k+1} =
    inner_update(params_k, hparams, k)`` for ``k < K = num_steps``, by reverse-mode
    differentiation through the ``lax.scan`` of the updates.

    ``num_steps=1`` is LIRPG's one-step meta-gradient (``lirpg_slides.md``) and
    MetaGenRL's (``metagenrl_learned_objectives.md``). Cost: about 2-3x the ``K``
    updates; memory grows linearly with ``K`` (every intermediate ``params_k`` is kept).
    """
    if not (isinstance(num_steps, int) and num_steps >= 1):
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")

    def total(h: PyTree) -> jax.Array:
        def step(p, k):
            return inner_update(p, h, k), None

        p_k, _ = jax.lax.scan(step, params, jnp.arange(num_steps))
        return outer_loss(p_k, h)

    return jax.grad(total)(hparams)


def implicit_hypergrad(
    inner_loss: Callable[[PyTree, PyTree], jax.Array],
    outer_loss: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    hparams: PyTree,
    *,
    hessian_loss: Callable[[PyTree, PyTree], jax.Array] | None = None,
    solver: str = "cg",
    maxiter: int = 10,
    damping: float = 0.0,
    tol: float = 1e-10,
    neumann_alpha: float = 1.0,
) -> PyTree:
    """Implicit-function-theorem hypergradient at a stationary point ``params`` of
    ``inner_loss(., hparams)``:

        d_h outer - (d2_{h,p} inner) [d2_{p,p} H + damping I]^-1 d_p outer,

    with ``H = hessian_loss`` if given (TARE evaluates its Hessian on the validation
    batch, eq. 14 of ``tare_implicit_reward_learning.md``) else ``inner_loss``. The
    inverse-Hessian-vector product is solved by conjugate gradients (``solver="cg"``,
    ``maxiter`` HVPs, optional ``damping``) or a truncated Neumann series
    (``solver="neumann"``, ``maxiter`` terms with step ``neumann_alpha``; ``damping`` is
    added to the Hessian in both). Cost: ``maxiter`` Hessian-vector products
    (forward-over-reverse) + one gradient of the outer loss + one mixed second
    derivative; memory independent of how ``params`` was reached. No dense Hessian.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {list(SOLVERS)}, got {solver!r}")
    h_loss = inner_loss if hessian_loss is None else hessian_loss
    g_p, g_h = jax.grad(outer_loss, argnums=(0, 1))(params, hparams)

    def matvec(v: PyTree) -> PyTree:
        return hvp(lambda p: h_loss(p, hparams), params, v)

    if solver == "cg":
        x = cg_solve(matvec, g_p, maxiter=maxiter, tol=tol, damping=damping)
    else:
        damped = matvec if damping == 0.0 else (
            lambda v: jax.tree.map(lambda a, b: a + damping * b, matvec(v), v)
        )
        x = neumann_solve(damped, g_p, steps=maxiter, alpha=neumann_alpha)

    def inner_grad_dot_x(h: PyTree) -> jax.Array:
        return _vdot(jax.grad(inner_loss)(params, h), x)

    mixed = jax.grad(inner_grad_dot_x)(hparams)
    return jax.tree.map(lambda a, b: a - b, g_h, mixed)


__all__ = ["SOLVERS", "implicit_hypergrad", "unrolled_hypergrad"]
