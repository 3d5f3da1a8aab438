"""Seeds sharded over devices with ``jax.sharding``: one program, many devices.

The driver trains ``seeds`` independent seeds as one ``vmap``-ped program. With a
:func:`seed_mesh` of ``D`` devices, every leaf of the batched train state (leading axis:
seeds) is laid out with ``NamedSharding(mesh, P("seeds"))``; ``jax.jit`` then partitions
the same program over the devices (GSPMD), ``seeds / D`` seeds per device, with no
communication (the seeds never interact). One device, or ``devices=1``, is the plain
unsharded program.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from metareward.algos.config import ConfigError

#: The mesh axis name of the seed (batch) axis.
SEED_AXIS = "seeds"


def seed_mesh(devices: int | None, seeds: int) -> Mesh | None:
    """A one-axis mesh over the first ``devices`` local devices, or ``None`` when that
    is one device. ``devices=None``: all local devices, or the most of them that divide
    ``seeds``. Raises :class:`ConfigError` when ``devices`` is
    not a positive int, does not divide ``seeds``, or exceeds the devices present."""
    available = jax.local_devices()
    if devices is not None and not (
        isinstance(devices, int) and not isinstance(devices, bool) and devices > 0
    ):
        raise ConfigError(f"devices must be an int > 0 or None (all), got {devices!r}")
    if devices is None:
        # All devices, or as many as evenly share the seeds (4 seeds on 8 GPUs: 4).
        n = max(d for d in range(1, len(available) + 1) if seeds % d == 0)
    else:
        n = devices
    if seeds % n:
        divisors = [d for d in range(1, n + 1) if seeds % d == 0]
        raise ConfigError(
            f"seeds={seeds} is not divisible by devices={n}: each device trains seeds / "
            f"devices seeds. Use --seeds a multiple of {n}, or --devices one of {divisors}"
        )
    if n > len(available):
        raise ConfigError(
            f"devices={n}, but this process sees {len(available)} "
            f"{available[0].platform} device(s): {[str(d) for d in available]}"
        )
    if n == 1:
        return None
    return Mesh(np.asarray(available[:n]), (SEED_AXIS,))


def seed_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh's seed axis, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(SEED_AXIS))


def shard_seeds(tree: Any, mesh: Mesh | None) -> Any:
    """Places every leaf (leading axis: seeds) of ``tree`` by :func:`seed_sharding`;
    identity when ``mesh`` is ``None``."""
    if mesh is None:
        return tree
    return jax.device_put(tree, seed_sharding(mesh))


def sharded_spec(spec: Any, mesh: Mesh | None) -> Any:
    """``ShapeDtypeStruct`` leaves of ``spec`` carrying :func:`seed_sharding` (to lower a
    program for sharded inputs); ``spec`` unchanged when ``mesh`` is ``None``."""
    if mesh is None:
        return spec
    sh = seed_sharding(mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), spec)


__all__ = ["SEED_AXIS", "seed_mesh", "seed_sharding", "shard_seeds", "sharded_spec"]
