"""Evolution-strategies gradient estimates (Salimans et al. 2017; EPG's outer loop,
"Evolved Policy Gradients", eq. 5)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from metareward.aliases import PyTree
from metareward.axes import gather_members, local_members, sum_members
from metareward.meta.util import check_count, check_scalar

SHAPINGS = ("none", "centered_ranks")


def centered_ranks(x: jax.Array) -> jax.Array:
    """Ranks of ``x`` (shape ``[n]``) mapped linearly to [-0.5, 0.5]: the fitness
    shaping of Salimans et al. 2017 (and EPG's ES). Tied values share their average rank
    (so an antithetic pair with equal fitness adds nothing to the ES direction; breaking
    the tie by position would add a random step). A NaN fitness (a diverged member) ranks
    lowest, never highest as a plain sort would put it.

    Args:
        x: Fitness values ``[n]``.

    Returns:
        The centred ranks ``[n]``, float32.
    """
    n = x.shape[0]
    x = jnp.where(jnp.isnan(x), -jnp.inf, x)
    ranks = jax.scipy.stats.rankdata(x, method="average").astype(jnp.float32) - 1.0
    return ranks / jnp.maximum(n - 1, 1) - 0.5


def es_grad(
    fitness: Callable[[PyTree], jax.Array],
    params: PyTree,
    key: jax.Array,
    *,
    pop_size: int,
    sigma: float,
    antithetic: bool = True,
    shaping: str = "centered_ranks",
    args: PyTree = None,
    has_aux: bool = False,
) -> tuple[PyTree, jax.Array] | tuple[PyTree, jax.Array, PyTree]:
    """Estimate of the ascent direction of ``E_eps[fitness(params + sigma eps)]``,
    ``eps ~ N(0, I)``: ``1 / (pop_size sigma) sum_i F_i eps_i``.

    The ``pop_size`` perturbed parameter sets are evaluated with ``jax.vmap``. Fitness is
    *maximised* here (an ascent direction); negate it for a loss. Cost: ``pop_size``
    fitness evaluations (in one vmapped batch); memory: ``pop_size`` copies of ``params``
    and of the noise. Works under ``jit`` and ``vmap`` (``pop_size`` static, ``sigma`` may
    be traced).

    Args:
        fitness: ``fitness(params)`` (or ``fitness(params, args_i)`` with ``args``), a
            scalar to maximise (``(value, aux)`` with ``has_aux``).
        params: The mean parameters, a pytree.
        key: PRNG key of the noise.
        pop_size: Number of perturbed members (a Python int >= 2).
        sigma: Standard deviation of the perturbations (> 0).
        antithetic: Use pairs ``+eps, -eps`` (``pop_size`` must be even), which cancels
            the even part of the fitness and lowers the variance.
        shaping: ``"centered_ranks"`` replaces fitness values by their centred ranks
            (invariant to monotone transforms of fitness, robust to outliers, a NaN
            fitness ranked worst); ``"none"`` uses them as they are (a NaN then makes the
            direction NaN: check the returned values).
        args: Per-member inputs, a pytree whose leaves have a leading axis of
            ``pop_size``; member ``i`` is evaluated as ``fitness(params_i, args_i)``
            (EPG: its own task and PRNG key). With ``antithetic``, members ``i`` and
            ``i + pop_size / 2`` carry ``+eps_i`` and ``-eps_i``: give them the same
            ``args`` for common random numbers.
        has_aux: ``fitness`` returns ``(value, aux)``; the members' ``aux`` (stacked on
            a leading ``pop_size`` axis) is returned third.

    Returns:
        ``(direction, fitness_values)``: a pytree like ``params`` and the
        ``[pop_size]`` raw fitness values; ``(direction, fitness_values, aux)`` with
        ``has_aux``.

    Raises:
        ValueError: For a ``pop_size`` that is not an int >= 2 (or odd with
            ``antithetic``), a ``sigma`` that is not > 0, an unknown ``shaping``, or a
            leaf of ``args`` without a leading ``pop_size`` axis.
    """
    check_count("pop_size", pop_size, 2)
    if antithetic and pop_size % 2:
        raise ValueError(f"antithetic sampling needs an even pop_size, got {pop_size}")
    check_scalar("sigma", sigma, positive=True)
    if shaping not in SHAPINGS:
        raise ValueError(f"shaping must be one of {list(SHAPINGS)}, got {shaping!r}")
    flat, unravel = ravel_pytree(params)
    if antithetic:
        half = jax.random.normal(key, (pop_size // 2, flat.shape[0]), flat.dtype)
        eps = jnp.concatenate([half, -half])
    else:
        eps = jax.random.normal(key, (pop_size, flat.shape[0]), flat.dtype)
    # Split over devices (metareward.axes; the driver's shard_map), each evaluates its
    # block of the population; the fitness values are gathered for the rank shaping and
    # the weighted sum of the noise is an all-reduce. Unsplit, these are identities.
    eps_local = local_members(eps)
    if args is None:
        out = jax.vmap(lambda e: fitness(unravel(flat + sigma * e)))(eps_local)
    else:
        for leaf in jax.tree.leaves(args):
            if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != pop_size:
                raise ValueError(f"every leaf of args needs a leading axis of pop_size = "
                                 f"{pop_size}; got shape {jnp.shape(leaf)}")
        out = jax.vmap(lambda e, a: fitness(unravel(flat + sigma * e), a))(
            eps_local, local_members(args))
    values, aux = gather_members(out if has_aux else (out, None))
    weights = centered_ranks(values) if shaping == "centered_ranks" else values
    direction = sum_members(local_members(weights) @ eps_local) / (pop_size * sigma)
    if has_aux:
        return unravel(direction), values, aux
    return unravel(direction), values


__all__ = ["SHAPINGS", "centered_ranks", "es_grad"]
