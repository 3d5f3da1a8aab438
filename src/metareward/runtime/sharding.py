"""Seeds and populations sharded over devices with ``jax.sharding``: one program, many
devices.

The driver trains ``seeds`` independent seeds as one ``vmap``-ped program. A run's mesh
(:func:`make_mesh`) has two axes, ``"seeds"`` x ``"members"``
(:mod:`metareward.axes`). Every leaf of the batched train state (leading axis: seeds) is
laid out with ``NamedSharding(mesh, P("seeds"))``; leaves that also carry a population
axis (MetaGenRL's agents, their buffers) with ``P("seeds", "members")``. The driver runs
each chunk under ``jax.shard_map`` over that mesh, one program per device: seeds never
communicate; inside a seed, every device works on its block of the population and the
sums that cross blocks (EPG's ES gradient, MetaGenRL's objective-gradient average) are
the explicit collectives of :mod:`metareward.axes`. One device is the plain unsharded
program. With several processes (:mod:`metareward.distributed`) the mesh spans the
devices of all of them and nothing else changes.

How ``D`` devices are split: the seeds take ``gcd(D, seeds)`` of them (no communication),
the population the remaining factor, which must divide the population (every MetaGenRL env
group's agent count; EPG's ``pop_size``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from metareward.algos.config import ConfigError
from metareward.axes import MEMBER_AXIS, SEED_AXIS


def split_devices(n: int, seeds: int, members: Sequence[int] = ()) -> tuple[int, int] | None:
    """``(seed_devices, member_devices)`` for ``n`` devices, or ``None`` when the part the
    seeds cannot take does not divide every population size in ``members``.

    Args:
        n: The devices in all.
        seeds: The run's number of seeds; the seeds take ``gcd(n, seeds)`` devices.
        members: The sizes of the run's population axes, which the rest must divide.

    Returns:
        ``(gcd(n, seeds), n // gcd(n, seeds))``, or ``None``.
    """
    d_seeds = math.gcd(n, seeds)
    d_members = n // d_seeds
    if d_members > 1 and (not members or any(m % d_members for m in members)):
        return None
    return d_seeds, d_members


def _usable_cores() -> int:
    """Cores this process may run on (its affinity on Linux; the CPU count elsewhere)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


def check_cpu_threads(n: int, environ: Mapping[str, str] | None = None,
                      cores: int | None = None) -> None:
    """Raises :class:`ConfigError` when ``n`` forced CPU devices would share fewer XLA
    threads than devices. XLA:CPU runs every device's program on one thread pool, sized by
    the ``NPROC`` environment variable or else the cores this process may use; a collective
    holds its thread until all devices arrive, so with fewer threads than devices the
    programs starve each other and hang (seen with 4 devices on a 2-core machine).

    Args:
        n: The number of CPU devices.
        environ: The environment to read ``NPROC`` from (``None``: ``os.environ``).
        cores: The usable cores when ``NPROC`` is unset (``None``: this process's CPU
            affinity, or the CPU count).

    Raises:
        ConfigError: If the threads are fewer than ``n``.
    """
    environ = os.environ if environ is None else environ
    nproc = environ.get("NPROC")
    threads = int(nproc) if nproc and nproc.isdigit() else (
        cores if cores is not None else _usable_cores())
    if threads < n:
        raise ConfigError(
            f"devices={n} CPU devices would share {threads} XLA thread(s) "
            f"({'NPROC' if nproc else 'usable cores'}); their collectives would deadlock. "
            f"Set NPROC={2 * n} in the environment before jax starts, or use --devices "
            f"{threads} or fewer"
        )


def make_mesh(devices: int | None, seeds: int, members: Sequence[int] = (),
              members_name: str = "population") -> Mesh | None:
    """A ``("seeds", "members")`` mesh over the first ``devices`` local devices of every
    process, or ``None`` when that is one device in all.

    With several processes (:mod:`metareward.distributed`) the mesh holds ``devices x
    processes`` devices, process by process, and that total is what is split.

    Args:
        devices: Local devices to use per process; ``None``: all local devices, or the
            most of them that can be split (see :func:`split_devices`).
        seeds: The run's number of seeds.
        members: The sizes of the run's population axes (empty for a learner without
            one).
        members_name: What the population axes are called, in errors.

    Returns:
        The :class:`jax.sharding.Mesh` (axes ``seeds`` x ``members``), or ``None``.

    Raises:
        ConfigError: Before anything compiles, when ``devices`` is not a positive int,
            exceeds the devices present, or cannot be split over the seeds and
            population, and on forced CPU devices when XLA would have too few threads
            for them (:func:`check_cpu_threads`).
    """
    available = jax.local_devices()
    procs = jax.process_count()
    if devices is not None and not (
        isinstance(devices, int) and not isinstance(devices, bool) and devices > 0
    ):
        raise ConfigError(f"devices must be an int > 0 or None (all), got {devices!r}")
    members = tuple(int(m) for m in members)
    if devices is None:
        # All devices, or as many as the seeds and population share evenly.
        fits = [d for d in range(1, len(available) + 1)
                if split_devices(d * procs, seeds, members)]
        n = max(fits) if fits else 1
    else:
        n = devices
    total = n * procs
    split = split_devices(total, seeds, members)
    if split is None:
        ok = [d for d in range(1, n + 1) if split_devices(d * procs, seeds, members)]
        d_members = total // math.gcd(total, seeds)
        if members:
            what = (f"the remaining factor {d_members} must divide the {members_name} "
                    f"({', '.join(map(str, members))})")
        else:
            what = "this learner has no population axis to put the rest on"
        where = f"devices={n}" if procs == 1 else (
            f"devices={n} per process x {procs} processes = {total}")
        fix = (f"Use --devices one of {ok}, or " if ok else "Use ") + (
            f"--seeds a multiple of {total}")
        raise ConfigError(
            f"{where} cannot be split over seeds={seeds}: the seeds take "
            f"gcd({total}, {seeds}) = {total // d_members} device(s) and {what}. {fix}"
        )
    if n > len(available):
        raise ConfigError(
            f"devices={n}, but this process sees {len(available)} "
            f"{available[0].platform} device(s): {[str(d) for d in available]}"
        )
    if total == 1:
        return None
    if available[0].platform == "cpu" and n > 1:
        check_cpu_threads(n)
    if procs == 1:
        chosen = available[:n]
    else:  # the first n devices of each process, process by process
        chosen = [d for p in range(procs)
                  for d in [d for d in jax.devices() if d.process_index == p][:n]]
    return Mesh(np.asarray(chosen).reshape(split), (SEED_AXIS, MEMBER_AXIS))


def seed_mesh(devices: int | None, seeds: int) -> Mesh | None:
    """:func:`make_mesh` for a learner without a population axis: the seeds take all
    ``devices``, which must divide ``seeds``.

    Args:
        devices: Local devices to use per process (``None``: as :func:`make_mesh`).
        seeds: The run's number of seeds.

    Returns:
        The mesh, or ``None`` for one device.

    Raises:
        ConfigError: As :func:`make_mesh`.
    """
    return make_mesh(devices, seeds)


def state_specs(tree: Any, member_leaves: Any = None) -> Any:
    """A ``PartitionSpec`` per leaf of ``tree`` (leading axis: seeds): ``P("seeds",
    "members")`` where ``member_leaves`` is true, ``P("seeds")`` elsewhere.

    Args:
        tree: A seed-batched pytree (arrays or their shapes).
        member_leaves: A pytree of bools with ``tree``'s structure, true where the
            second axis is the population (``None``: nowhere).

    Returns:
        A pytree of ``PartitionSpec`` with ``tree``'s structure.
    """
    seeds, members = PartitionSpec(SEED_AXIS), PartitionSpec(SEED_AXIS, MEMBER_AXIS)
    if member_leaves is None:
        return jax.tree.map(lambda _: seeds, tree)
    return jax.tree.map(lambda _, m: members if m else seeds, tree, member_leaves)


def state_shardings(tree: Any, mesh: Mesh | None, member_leaves: Any = None) -> Any:
    """:func:`state_specs` as ``NamedSharding``s on ``mesh`` (``None`` when it is).

    Args:
        tree: A seed-batched pytree.
        mesh: The mesh, or ``None``.
        member_leaves: As :func:`state_specs`.

    Returns:
        A pytree of ``NamedSharding`` with ``tree``'s structure, or ``None``.
    """
    if mesh is None:
        return None
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec),
                        state_specs(tree, member_leaves),
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def shard_seeds(tree: Any, mesh: Mesh | None, member_leaves: Any = None) -> Any:
    """Places every leaf of ``tree`` by :func:`state_shardings`; identity when ``mesh``
    is ``None``.

    Args:
        tree: A seed-batched pytree of arrays (the same host values on every process).
        mesh: The mesh, or ``None``.
        member_leaves: As :func:`state_specs`.

    Returns:
        ``tree`` placed on the mesh's devices.
    """
    if mesh is None:
        return tree
    if jax.process_count() > 1:  # a global array is placed from the same host value
        tree = jax.device_get(tree)  # on every process
    return jax.device_put(tree, state_shardings(tree, mesh, member_leaves))


def sharded_spec(spec: Any, mesh: Mesh | None, member_leaves: Any = None) -> Any:
    """``ShapeDtypeStruct`` leaves of ``spec`` carrying :func:`state_shardings` (to lower a
    program for sharded inputs); ``spec`` unchanged when ``mesh`` is ``None``.

    Args:
        spec: A seed-batched pytree of ``ShapeDtypeStruct`` (or arrays).
        mesh: The mesh, or ``None``.
        member_leaves: As :func:`state_specs`.

    Returns:
        ``ShapeDtypeStruct`` leaves with their shardings.
    """
    if mesh is None:
        return spec
    shardings = state_shardings(spec, mesh, member_leaves)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        spec, shardings)


def describe(mesh: Mesh | None) -> str:
    """``"2 cpu devices: 2 seed shard(s) x 1 population shard(s)"``-style summary.

    Args:
        mesh: The run's mesh, or ``None``.

    Returns:
        The summary (``"1 device"`` without a mesh).
    """
    if mesh is None:
        return "1 device"
    sizes = dict(zip(mesh.axis_names, mesh.devices.shape, strict=True))
    procs = len({d.process_index for d in mesh.devices.flat})
    hosts = f" in {procs} processes" if procs > 1 else ""
    return (f"{mesh.size} {mesh.devices.flat[0].platform} devices{hosts}: "
            f"{sizes[SEED_AXIS]} seed shard(s) x {sizes[MEMBER_AXIS]} population shard(s)")


__all__ = ["MEMBER_AXIS", "SEED_AXIS", "PartitionSpec", "check_cpu_threads", "describe",
           "make_mesh", "seed_mesh", "shard_seeds", "sharded_spec", "split_devices",
           "state_shardings", "state_specs"]
