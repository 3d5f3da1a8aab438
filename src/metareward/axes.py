"""Mesh axis names, and the collectives an algorithm uses on its population axis when a
run is split over devices.

A run's device mesh (:func:`metareward.runtime.sharding.make_mesh`) has two axes:
``"seeds"`` (independent training runs, never communicating) and ``"members"`` (the
members of one run's population: EPG's perturbed losses, MetaGenRL's agents). The
driver runs each chunk under ``jax.shard_map`` over that mesh: every device holds its
block of the seeds and, inside a seed, its block of the population. An algorithm works
on its block with :func:`local_members` and joins the blocks with explicit collectives:
:func:`gather_members` (EPG's fitness values, for the rank shaping), :func:`sum_members`
(the ES gradient, the sum of the agents' objective gradients), :func:`mean_members`
(metrics). Outside such a ``shard_map`` (one device, or a call from a notebook) all of
them are the identity, so the same algorithm code runs unchanged.

This module depends on ``jax`` alone, so algorithms import it without the host runtime.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

#: Mesh axis of the independent seeds (the leading axis of the driver's batched state).
SEED_AXIS = "seeds"
#: Mesh axis of a run's population (EPG members, MetaGenRL agents).
MEMBER_AXIS = "members"


def member_shards() -> int:
    """How many devices the population is split over here: the size of the mesh's
    ``"members"`` axis inside a ``jax.shard_map`` that makes it manual, else 1. Static."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or MEMBER_AXIS not in mesh.manual_axes:
        return 1
    return int(dict(zip(mesh.axis_names, mesh.axis_sizes, strict=True))[MEMBER_AXIS])


def local_members(tree: Any) -> Any:
    """This device's block of the leading (population) axis of every leaf: rows ``[i *
    n / d, (i + 1) * n / d)`` on member device ``i`` of ``d``; the identity when the
    population is not split. ``n`` must be divisible by ``d`` (the driver checks).

    Args:
        tree: A pytree whose leaves have the whole population ``[n, ...]`` as leading
            axis.

    Returns:
        The same tree with leaves ``[n / d, ...]``.

    Raises:
        ValueError: If a leaf's leading axis does not divide by ``d``.
    """
    d = member_shards()
    if d == 1:
        return tree
    i = jax.lax.axis_index(MEMBER_AXIS)

    def block(x: jax.Array) -> jax.Array:
        n = x.shape[0]
        if n % d:
            raise ValueError(f"a population axis of {n} does not split over {d} devices")
        return jax.lax.dynamic_slice_in_dim(x, i * (n // d), n // d)

    return jax.tree.map(block, tree)


def gather_members(tree: Any) -> Any:
    """The whole population axis from every device's block (all-gather, in device
    order: the inverse of :func:`local_members`); identity when not split.

    Args:
        tree: A pytree of this device's blocks ``[n / d, ...]``.

    Returns:
        The same tree with leaves ``[n, ...]``, identical on every member device.
    """
    if member_shards() == 1:
        return tree
    return _packed(lambda x: jax.lax.all_gather(x, MEMBER_AXIS, tiled=True), tree, rows=True)


def _packed(collective: Any, tree: Any, rows: bool = False) -> Any:
    """``collective`` of every leaf of ``tree``, run as one collective on one array per
    dtype: the leaves flattened and concatenated (``rows``: kept ``[rows, -1]`` and
    concatenated along axis 1, for an all-gather along axis 0).

    XLA already fuses the leaves into one tuple collective, but the collective library
    may run one operation per tuple element, each a round trip between hosts: with gloo
    on CPU, packing MetaGenRL's objective gradients (~30 arrays) took a two-process step
    from 0.15 s to 0.06 s (``benchmarks/scaling.py --processes 1 2``)."""
    leaves, treedef = jax.tree.flatten(tree)
    if len(leaves) <= 1:
        return jax.tree.unflatten(treedef, [collective(x) for x in leaves])
    groups: dict[Any, list[int]] = {}
    for i, x in enumerate(leaves):
        groups.setdefault(jnp.result_type(x), []).append(i)
    out = list(leaves)
    for idx in groups.values():
        if rows:
            parts = [jnp.reshape(leaves[i], (jnp.shape(leaves[i])[0], -1)) for i in idx]
            flat = collective(jnp.concatenate(parts, axis=1))
            offset = 0
            for i, part in zip(idx, parts, strict=True):
                width = part.shape[1]
                out[i] = flat[:, offset:offset + width].reshape(
                    (flat.shape[0], *jnp.shape(leaves[i])[1:]))
                offset += width
        else:
            flat = collective(jnp.concatenate([jnp.ravel(leaves[i]) for i in idx]))
            offset = 0
            for i in idx:
                size = math.prod(jnp.shape(leaves[i]))
                out[i] = flat[offset:offset + size].reshape(jnp.shape(leaves[i]))
                offset += size
    return jax.tree.unflatten(treedef, out)


def sum_members(tree: Any) -> Any:
    """The sum over the member devices (all-reduce); identity when not split.

    Args:
        tree: A pytree of arrays.

    Returns:
        The elementwise sum of ``tree`` over the member devices, on each of them.
    """
    if member_shards() == 1:
        return tree
    return _packed(lambda x: jax.lax.psum(x, MEMBER_AXIS), tree)


def mean_members(tree: Any) -> Any:
    """The mean over the member devices (all-reduce); identity when not split.

    Args:
        tree: A pytree of arrays.

    Returns:
        The elementwise mean of ``tree`` over the member devices, on each of them.
    """
    if member_shards() == 1:
        return tree
    return _packed(lambda x: jax.lax.pmean(x, MEMBER_AXIS), tree)


__all__ = ["MEMBER_AXIS", "SEED_AXIS", "gather_members", "local_members", "mean_members",
           "member_shards", "sum_members"]
