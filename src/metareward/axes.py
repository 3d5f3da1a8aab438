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

from typing import Any

import jax

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
    population is not split. ``n`` must be divisible by ``d`` (the driver checks)."""
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
    order: the inverse of :func:`local_members`); identity when not split."""
    if member_shards() == 1:
        return tree
    return jax.tree.map(lambda x: jax.lax.all_gather(x, MEMBER_AXIS, tiled=True), tree)


def sum_members(tree: Any) -> Any:
    """The sum over the member devices (all-reduce); identity when not split."""
    if member_shards() == 1:
        return tree
    return jax.lax.psum(tree, MEMBER_AXIS)


def mean_members(tree: Any) -> Any:
    """The mean over the member devices (all-reduce); identity when not split."""
    if member_shards() == 1:
        return tree
    return jax.lax.pmean(tree, MEMBER_AXIS)


__all__ = ["MEMBER_AXIS", "SEED_AXIS", "gather_members", "local_members", "mean_members",
           "member_shards", "sum_members"]
