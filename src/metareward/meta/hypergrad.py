"""Hypergradients of bilevel problems: unrolled and implicit.

Bilevel problem: ``min_h outer(p*(h), h)`` with ``p*(h)`` reached by minimising
``inner(p, h)``. All losses are minimised (an RL objective ``J`` enters as ``-J``);
``params`` and ``hparams`` are arbitrary pytrees of floating-point arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from metareward.aliases import PyTree
from metareward.meta.solvers import CGInfo, cg_solve, hvp, neumann_solve
from metareward.meta.util import check_count, check_scalar, is_zero, tree_axpy, tree_vdot

SOLVERS = ("cg", "neumann")


def unrolled_hypergrad(
    inner_update: Callable[[PyTree, PyTree, jax.Array], PyTree],
    outer_loss: Callable[[PyTree, PyTree], Any],
    params: PyTree,
    hparams: PyTree,
    num_steps: int,
    *,
    has_aux: bool = False,
    remat: bool = False,
) -> PyTree | tuple[PyTree, Any]:
    """``d outer_loss(params_K, hparams) / d hparams`` with ``params_{k+1} =
    inner_update(params_k, hparams, k)`` for ``k < K = num_steps``, by reverse-mode
    differentiation through the ``lax.scan`` of the updates (``k`` is an int32 array).

    ``num_steps=1`` is LIRPG's one-step meta-gradient (Zheng et al. 2018, "On Learning
    Intrinsic Rewards for Policy Gradient Methods": the gradient of ``J_ex(theta')``
    through ``theta' = theta + update(eta)``) and MetaGenRL's (Kirsch et al. 2020, eq. 6).
    ``params`` may carry more than the parameters — e.g. ``(theta, optax_state)`` for a
    look-ahead step of Adam or RMSProp; ``outer_loss`` then picks ``theta`` out of it.

    Cost: one forward pass of the ``K`` updates and one backward pass (about 3x the
    updates; ~4x with ``remat``). Memory grows linearly with ``K``: every step's
    intermediates are kept (with ``remat``, only each ``params_k``).

    Args:
        inner_update: ``inner_update(params_k, hparams, k) -> params_{k+1}``.
        outer_loss: ``outer_loss(params_K, hparams)``, a scalar (``(loss, aux)`` with
            ``has_aux``).
        params: The initial ``params_0`` (a pytree).
        hparams: The hyperparameters differentiated (a pytree).
        num_steps: ``K``, the number of inner updates (a Python int >= 1).
        has_aux: ``outer_loss`` returns ``(loss, aux)`` and the result is
            ``(hypergrad, aux)`` (as in ``jax.grad``).
        remat: Recompute each inner step in the backward pass (``jax.checkpoint``)
            instead of storing its intermediates.

    Returns:
        The hypergradient, a pytree like ``hparams``; ``(hypergrad, aux)`` with
        ``has_aux``.

    Raises:
        ValueError: If ``num_steps`` is not a Python int >= 1.
    """
    check_count("num_steps", num_steps, 1)

    def total(h: PyTree):
        def step(p, k):
            return inner_update(p, h, k), None

        if remat:
            step = jax.checkpoint(step)
        p_k, _ = jax.lax.scan(step, params, jnp.arange(num_steps, dtype=jnp.int32))
        return outer_loss(p_k, h)

    return jax.grad(total, has_aux=has_aux)(hparams)


def _inverse_hvp(
    h_loss: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    hparams: PyTree,
    g_p: PyTree,
    *,
    solver: str,
    maxiter: int,
    tol: float,
    damping: float,
    restarts: int,
    neumann_alpha: float,
    return_info: bool,
) -> tuple[PyTree, CGInfo | None]:
    """``(x, info)``: ``x ~= [d2_{p,p} h_loss(params, hparams) + damping I]^-1 g_p``, the
    inverse-Hessian-vector product of :func:`implicit_hypergrad` (its arguments, same
    meaning), by conjugate gradients (:func:`cg_solve`) or a truncated Neumann series
    (:func:`neumann_solve`); Hessian-vector products by :func:`hvp`.

    ``info``: CG's :class:`CGInfo`; for Neumann, ``None`` unless ``return_info`` (then
    ``maxiter`` iterations, the residual of the damped system at ``x`` at the cost of one
    more Hessian-vector product, and no curvature check).
    """

    def matvec(v: PyTree) -> PyTree:
        return hvp(lambda p: h_loss(p, hparams), params, v)

    if solver == "cg":
        x, info = cg_solve(matvec, g_p, maxiter=maxiter, tol=tol, damping=damping,
                           restarts=restarts, return_info=True)
    else:
        damped = matvec if is_zero(damping) else (lambda v: tree_axpy(damping, v, matvec(v)))
        x = neumann_solve(damped, g_p, steps=maxiter, alpha=neumann_alpha)
        info = None
        if return_info:  # one more matvec, only when asked
            r = jax.tree.map(jnp.subtract, g_p, damped(x))
            info = CGInfo(jnp.int32(maxiter), jnp.sqrt(tree_vdot(r, r)), jnp.zeros((), bool),
                          damping=jnp.asarray(damping, jnp.result_type(tree_vdot(r, r))))
    return x, info


def implicit_hypergrad(
    inner_loss: Callable[[PyTree, PyTree], jax.Array],
    outer_loss: Callable[[PyTree, PyTree], Any],
    params: PyTree,
    hparams: PyTree,
    *,
    hessian_loss: Callable[[PyTree, PyTree], jax.Array] | None = None,
    solver: str = "cg",
    maxiter: int = 10,
    damping: float = 0.0,
    restarts: int = 0,
    tol: float = 1e-10,
    neumann_alpha: float = 1.0,
    has_aux: bool = False,
    return_info: bool = False,
) -> Any:
    """Implicit-function-theorem hypergradient at a stationary point ``params`` of
    ``inner_loss(., hparams)``:

        d_h outer - (d2_{h,p} inner) [d2_{p,p} H + damping I]^-1 d_p outer,

    with ``H = hessian_loss`` if given, else ``inner_loss``. Only ``H = inner_loss``'s
    Hessian gives ``dp*/dh = -H^-1 d2_{p,h} inner`` (the implicit function theorem at
    ``d_p inner = 0``), and with it this is the exact total derivative of
    ``outer(p*(h), h)``; another ``hessian_loss`` is an approximation (TARE's eq. 14 as
    printed puts the validation batch there; a Gauss-Newton matrix keeps CG positive
    definite).

    Cost: one gradient of ``outer_loss``; ``maxiter`` Hessian-vector products
    (forward-over-reverse, see :func:`hvp`); one forward-over-reverse mixed product for
    ``d2_{h,p} inner``. Memory: a few pytrees
    like ``params`` and one gradient's intermediates, independent of how ``params``
    was reached. No dense Hessian is formed.

    Args:
        inner_loss: ``inner_loss(params, hparams)``, a scalar; ``params`` should be its
            stationary point.
        outer_loss: ``outer_loss(params, hparams)``, a scalar (``(loss, aux)`` with
            ``has_aux``).
        params: The inner solution ``p*`` (a pytree).
        hparams: The hyperparameters ``h`` differentiated (a pytree).
        hessian_loss: ``H(params, hparams)`` whose Hessian in ``params`` is inverted
            (``None``: ``inner_loss``).
        solver: The inverse-Hessian-vector product is solved by conjugate gradients
            (``"cg"``: at most ``maxiter`` iterations, early stop at relative residual
            ``tol`` or at negative curvature, see :func:`cg_solve`) or a truncated
            Neumann series (``"neumann"``: ``maxiter`` terms with step
            ``neumann_alpha``).
        maxiter: CG iterations at most, or Neumann terms (a Python int >= 1).
        damping: Added to the Hessian in both solvers (>= 0; may be traced).
        restarts: CG only: raise the damping and start again when CG meets negative
            curvature, at most this many times (:func:`cg_solve`'s adaptive damping).
        tol: CG's relative residual at which it stops.
        neumann_alpha: The Neumann series' step (> 0; may be traced).
        has_aux: ``outer_loss`` returns ``(loss, aux)``.
        return_info: Append the solver's :class:`CGInfo` (for Neumann: ``maxiter``
            iterations, the residual of the damped system at the answer, no curvature
            check).

    Returns:
        ``hypergrad`` (a pytree like ``hparams``), ``(hypergrad, aux)``,
        ``(hypergrad, info)`` or ``(hypergrad, aux, info)``.

    Raises:
        ValueError: For an unknown ``solver`` or an invalid ``maxiter``, ``damping``,
            ``restarts``, ``tol`` or ``neumann_alpha``.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {list(SOLVERS)}, got {solver!r}")
    check_count("maxiter", maxiter, 1)
    check_scalar("damping", damping, positive=False)
    h_loss = inner_loss if hessian_loss is None else hessian_loss

    if has_aux:
        (g_p, g_h), aux = jax.grad(outer_loss, argnums=(0, 1), has_aux=True)(params, hparams)
    else:
        (g_p, g_h), aux = jax.grad(outer_loss, argnums=(0, 1))(params, hparams), None

    x, info = _inverse_hvp(h_loss, params, hparams, g_p, solver=solver, maxiter=maxiter,
                           tol=tol, damping=damping, restarts=restarts,
                           neumann_alpha=neumann_alpha, return_info=return_info)

    # (d2_{h,p} inner) x: the directional derivative of d_h inner along x in params.
    mixed = jax.jvp(lambda p: jax.grad(inner_loss, argnums=1)(p, hparams), (params,), (x,))[1]
    hypergrad = jax.tree.map(jnp.subtract, g_h, mixed)
    out = (hypergrad,)
    if has_aux:
        out += (aux,)
    if return_info:
        out += (info,)
    return out[0] if len(out) == 1 else out


__all__ = ["SOLVERS", "implicit_hypergrad", "unrolled_hypergrad"]
