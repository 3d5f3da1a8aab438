"""Chunked, checkpointed, resumable training runs: what ``metareward train`` does.

A run trains ``seeds`` copies of a registered algorithm as one program,
``jax.jit`` of a ``lax.scan`` of ``chunk_updates`` calls to the ``vmap``-ped
``update``. Between chunks the host (never the jitted core) writes ``metrics.jsonl``,
checks for non-finite values, saves checkpoints and redraws the progress bar.

Exactness: every chunk runs the same compiled program (a chunk shorter than
``chunk_updates`` at the end of the run skips its extra iterations with ``lax.cond`` on
a non-batched count), checkpoints are written only at chunk boundaries, and they hold
the complete state, so ``resume`` replays exactly the computation an uninterrupted run
does: on CPU the final parameters and metrics are bitwise equal.

Use from Python::

    plan = prepare("ppo", "cartpole", overrides={"total_steps": "100000"})
    result = start(plan, out="runs/my-run")
    result = resume("runs/my-run")          # after an interruption
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from metareward import distributed, envs, interrupts
from metareward.algos.config import ConfigError
from metareward.algos.registry import AlgoSpec, Learner, get_algorithm
from metareward.axes import sum_members
from metareward.runtime import configs, faults, sharding
from metareward.runtime.checkpoint import (
    Checkpointer,
    ForeignCheckpointError,
    IncompatibleCheckpointError,
    NoCheckpointError,
    abstract,
)
from metareward.runtime.lock import RunLock, RunLockedError
from metareward.runtime.progress import Progress
from metareward.runtime.rundir import RunDir, default_run_dir
from metareward.runtime.wandb_log import MODES as WANDB_MODES
from metareward.runtime.wandb_log import WandbLogger

#: Errors process 0 meets in the run directory, raised on every process (most specific
#: first: the first class an error is an instance of is the one the others raise).
_SHARED_ERRORS: tuple[type[Exception], ...] = (
    ForeignCheckpointError, IncompatibleCheckpointError, NoCheckpointError, RunLockedError,
    ConfigError, FileNotFoundError, ValueError, OSError)

#: Per-update metrics that are NaN by design when no episode ended in the update.
EPISODE_METRICS = ("episode_return", "episode_return_std", "episode_length")
_TARGET_CHUNKS = 100


class NonFiniteError(FloatingPointError):
    """A loss, metric or parameter became NaN/inf; the run stopped."""


class RunInterrupted(Exception):
    """SIGINT/SIGTERM stopped the run after a checkpoint was written."""

    def __init__(self, signum: int, run_dir: Path, update: int, during_eval: bool = False):
        self.signum, self.run_dir, self.update = signum, run_dir, update
        #: The final evaluation was left running in a thread: exit the process soon.
        self.during_eval = during_eval
        name = signal.Signals(signum).name
        if during_eval:
            super().__init__(
                f"{name}: training had finished (update {update}, checkpoint saved); the "
                f"final evaluation was skipped. Evaluate with: metareward eval {run_dir}")
            return
        super().__init__(
            f"{name}: stopped after update {update}; checkpoint saved, plot in "
            f"{run_dir / 'curve.png'}. Continue with: metareward resume {run_dir}"
        )


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a run is executed (not what is trained: that is the algorithm's Config).

    Attributes:
      seeds: independent seeds trained at once (vmapped).
      seed: base PRNG seed; seed ``i`` uses ``jax.random.split(PRNGKey(seed), seeds)[i]``.
      devices: local devices the run is sharded over: the seeds take ``gcd(devices,
        seeds)`` of them, a population (EPG members, MetaGenRL agents) the rest, which
        must divide it (``None``: all, or the most that split so); see
        :mod:`metareward.runtime.sharding`.
      chunk_updates: updates per jitted chunk (one metrics record per chunk and seed);
        ``None`` picks about 100 chunks per run.
      checkpoint_every: save a checkpoint every this many chunks (and always at the
        end, on SIGINT/SIGTERM, and before stopping on a non-finite value).
      wandb: ``off`` | ``offline`` | ``online``.
      eval_episodes: episodes per seed evaluated at the end (0: none).
    """

    seeds: int = 4
    seed: int = 0
    devices: int | None = None
    chunk_updates: int | None = None
    checkpoint_every: int = 10
    wandb: str = "off"
    eval_episodes: int = 32

    def __post_init__(self) -> None:
        def pos_int(name: str, v: Any) -> None:
            if not (isinstance(v, int) and not isinstance(v, bool) and v > 0):
                raise ConfigError(f"{name} must be an int > 0, got {v!r}")

        pos_int("seeds", self.seeds)
        if self.devices is not None:
            pos_int("devices", self.devices)
        pos_int("checkpoint_every", self.checkpoint_every)
        if self.chunk_updates is not None:
            pos_int("chunk_updates", self.chunk_updates)
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**32):
            raise ConfigError(f"seed must be an int in [0, 2**32), got {self.seed!r}")
        if not (isinstance(self.eval_episodes, int) and self.eval_episodes >= 0):
            raise ConfigError(f"eval_episodes must be an int >= 0, got {self.eval_episodes!r}")
        if self.wandb not in WANDB_MODES:
            raise ConfigError(f"wandb must be one of {list(WANDB_MODES)}, got {self.wandb!r}")


@dataclasses.dataclass(frozen=True)
class Plan:
    """A validated run: the algorithm, its resolved config, the env and the learner.
    Building one compiles nothing; every bad input fails here."""

    algo: AlgoSpec
    env_name: str
    env_kwargs: dict[str, Any]
    config: Any
    options: RunOptions
    learner: Learner

    @property
    def num_updates(self) -> int:
        """Updates in a full run (the learner's ``num_updates``).

        Returns:
          The number of updates.
        """
        return int(self.learner.num_updates)

    @property
    def chunk_updates(self) -> int:
        """Updates per jitted chunk: ``--chunk-updates`` or about 100 chunks per run, clamped to
        ``[1, num_updates]``.

        Returns:
          The number of updates per chunk.
        """
        k = self.options.chunk_updates or math.ceil(self.num_updates / _TARGET_CHUNKS)
        return max(1, min(k, self.num_updates))

    def keys(self) -> jax.Array:
        """One PRNG key per seed, split from ``PRNGKey(options.seed)``.

        Returns:
          ``[seeds, 2]`` keys (``options.seeds`` of them).
        """
        return jax.random.split(jax.random.PRNGKey(self.options.seed), self.options.seeds)

    def mesh(self) -> Mesh | None:
        """The run's ``("seeds", "members")`` device mesh (``None`` on one device); a
        :class:`ConfigError` when ``--devices`` cannot be split over the seeds and the
        learner's population (:func:`metareward.runtime.sharding.make_mesh`)."""
        return sharding.make_mesh(
            self.options.devices, self.options.seeds,
            getattr(self.learner, "population_sizes", ()),
            getattr(self.learner, "population_name", "population"))

    def record(self) -> dict[str, Any]:
        """What ``config.json`` stores to rebuild this plan."""
        return {
            "algo": self.algo.name,
            "env": self.env_name,
            "env_kwargs": self.env_kwargs,
            "config": configs.config_to_dict(self.config),
            "run": {
                **dataclasses.asdict(self.options),
                "chunk_updates": self.chunk_updates,
                "num_updates": self.num_updates,
            },
        }


def prepare(
    algo: str,
    env: str,
    *,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    options: RunOptions | None = None,
) -> Plan:
    """Resolves defaults <- ``config_file`` <- ``overrides`` and builds the learner.

    Args:
      algo: a registered algorithm's name.
      env: a registered env's name, or a comma-separated list of them for a multi-env
        algorithm; its preset gives the defaults.
      config_file: a ``.json``/``.toml``/``.yaml`` config file, or ``None``.
      overrides: config values by key (e.g. from ``--set``), applied last.
      env_kwargs: options for ``metareward.envs.make``, over the algorithm's own.
      options: the run's :class:`RunOptions` (``None``: the defaults).

    Returns:
      The :class:`Plan`.

    Raises:
      ConfigError: unknown key or bad value, or devices that cannot be split over the
        seeds and the population (before anything is compiled or written).
      ValueError: unknown algorithm or env, an env list for a one-env algorithm or one
        that names an env twice (``ConfigError`` is a ``ValueError``).
    """
    spec = get_algorithm(algo)
    names = [n.strip() for n in env.split(",")]
    if len(names) > 1 and not spec.multi_env:
        raise ValueError(f"{algo} trains on one env; got the list {env!r}")
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"env list {env!r} names an env twice or has an empty name")
    for name in names:
        envs.describe(name)  # unknown env: ValueError listing the valid names
    config = configs.resolve_config(spec.default_config(env), config_file, overrides)
    env_kwargs = dict(env_kwargs or {})
    made = [envs.make(n, **{**spec.env_kwargs, **env_kwargs}) for n in names]
    learner = spec.make_train(config, made if spec.multi_env else made[0])
    options = options or RunOptions()
    plan = Plan(spec, env, env_kwargs, config, options, learner)
    plan.mesh()  # device count vs seeds and population: fail now
    return plan


def plan_from_run(run_dir: str | Path, *, any_devices: bool = False) -> Plan:
    """Rebuilds the plan recorded in a run directory's ``config.json``.

    Args:
      run_dir: the run directory.
      any_devices: to read the run's checkpoints (evaluate, meta-test), on whatever
        devices this machine has: the recorded ``devices`` is dropped (without it, a run
        trained on 4 GPUs cannot be loaded on a laptop).

    Returns:
      The :class:`Plan` (as :func:`plan_from_record`).
    """
    return plan_from_record(RunDir(run_dir).load_config(), run_dir, any_devices=any_devices)


def plan_from_record(rec: Mapping[str, Any], run_dir: str | Path = "the run", *,
                     any_devices: bool = False) -> Plan:
    """Rebuilds the plan a ``config.json`` record (:meth:`Plan.record`) describes (see
    :func:`plan_from_run`).

    Args:
      rec: the record (``algo``, ``env``, ``config``, ``env_kwargs``, ``run``).
      run_dir: where it comes from, for the message.
      any_devices: drop the recorded ``devices`` (see :func:`plan_from_run`).

    Returns:
      The :class:`Plan`.

    Raises:
      ValueError: if the rebuilt learner's number of updates differs from the record's,
        or as :func:`prepare`.
    """
    run = dict(rec["run"])
    run.pop("num_updates", None)
    if any_devices:
        run["devices"] = None
    plan = prepare(
        rec["algo"],
        rec["env"],
        overrides=rec["config"],
        env_kwargs=rec.get("env_kwargs"),
        options=RunOptions(**{k: run[k] for k in run if k in _OPTION_FIELDS}),
    )
    if plan.num_updates != rec["run"]["num_updates"]:
        raise ValueError(
            f"{run_dir}: config.json says {rec['run']['num_updates']} updates but the "
            f"rebuilt learner has {plan.num_updates}; was the algorithm changed?"
        )
    return plan


_OPTION_FIELDS = {f.name for f in dataclasses.fields(RunOptions)}


# ----------------------------------------------------------------------------------------
# The jitted chunk


def _params_finite(state: Any) -> jax.Array:
    params = getattr(state, "params", state)
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(params)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _population_leaves(learner: Learner, abstract_state: Any) -> Any:
    """The learner's ``population_leaves`` of one seed's state, or ``None``."""
    fn = getattr(learner, "population_leaves", None)
    if fn is None:
        return None
    one = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), abstract_state)
    return fn(one)


def _on_mesh(fn: Callable, mesh: Mesh | None, in_specs: Any, out_specs: Any) -> Callable:
    """``fn`` (over the batched seeds) as one program per device with ``jax.shard_map``:
    each device runs ``fn`` on its block of seeds and of the population, which the
    algorithms join with the explicit collectives of :mod:`metareward.axes`. ``fn``
    itself when ``mesh`` is ``None``.

    (Not GSPMD's automatic partitioning: on this stack it split the EPG loss's
    convolutions across the seed devices too, and XLA:CPU then deadlocked on the
    collectives it had added.)"""
    if mesh is None:
        return fn
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                         check_vma=False)


@dataclasses.dataclass(frozen=True)
class Programs:
    """A plan's jitted programs laid out on its device mesh (what a run compiles):
    ``init(keys)`` and ``chunk(states, n)`` (:func:`make_chunk`); ``keys`` placed on the
    mesh; ``spec`` the train state's shapes with their shardings (to lower ``chunk``),
    ``population_leaves`` and ``place(state)`` to lay a host or restored state out."""

    mesh: Mesh | None
    keys: jax.Array
    abstract_state: Any
    population_leaves: Any
    spec: Any
    init: Callable
    chunk: Callable

    def place(self, state: Any) -> Any:
        return sharding.shard_seeds(state, self.mesh, self.population_leaves)


def programs(plan: Plan, chunk_updates: int | None = None) -> Programs:
    """The plan's :class:`Programs` for chunks of ``chunk_updates`` (default: the plan's)."""
    mesh = plan.mesh()
    keys = sharding.shard_seeds(plan.keys(), mesh)
    abstract_state = jax.eval_shape(jax.vmap(plan.learner.init), keys)
    leaves = _population_leaves(plan.learner, abstract_state)
    specs = sharding.state_specs(abstract_state, leaves)
    # Shapes and dtypes alone (weak types dropped), so a fresh run and a resumed one
    # (whose state comes from disk) compile the very same program.
    spec = sharding.sharded_spec(abstract(abstract_state), mesh, leaves)
    K = chunk_updates or plan.chunk_updates
    return Programs(mesh, keys, abstract_state, leaves, spec,
                    make_init(plan.learner, mesh, specs),
                    make_chunk(plan.learner, K, spec, mesh, specs))


def make_init(learner: Learner, mesh: Mesh | None = None, state_specs: Any = None):
    """``init(keys[seeds]) -> states`` (jitted), laid out by ``state_specs`` on ``mesh``
    (:func:`metareward.runtime.sharding.state_specs`)."""
    fn = _on_mesh(jax.vmap(learner.init), mesh, sharding.PartitionSpec(sharding.SEED_AXIS),
                  state_specs)
    return jax.jit(fn)


def make_chunk(learner: Learner, chunk_updates: int, abstract_state: Any,
               mesh: Mesh | None = None, state_specs: Any = None) -> Callable:
    """``chunk(states, n) -> (states, metrics[K, seeds], params_finite[seeds])``: ``n <=
    K`` updates of every seed, the rest of the ``K`` iterations skipped.

    Args:
      learner: the learner (its ``update``).
      chunk_updates: ``K``, the iterations of one chunk (static).
      abstract_state: the seed-batched train state's shapes and dtypes (for the
        metrics' shapes).
      mesh: the device mesh; with it, one program per device (``None``: one program).
      state_specs: the state's partition specs (with ``mesh``).

    Returns:
      The jitted ``chunk``.
    """
    update = jax.vmap(learner.update)
    _, metrics_shape = jax.eval_shape(update, abstract_state)

    def skip(states):
        n = jax.tree.leaves(states)[0].shape[0]  # this device's seeds
        return states, jax.tree.map(lambda s: jnp.zeros((n, *s.shape[1:]), s.dtype),
                                    metrics_shape)

    def chunk(states, n):
        def body(s, i):
            return jax.lax.cond(i < n, update, skip, s)

        states, metrics = jax.lax.scan(body, states, jnp.arange(chunk_updates))
        # A population split over devices: finite only if every device's block is.
        bad = sum_members((~jax.vmap(_params_finite)(states)).astype(jnp.int32))
        return states, metrics, bad == 0

    P = sharding.PartitionSpec
    seeds = P(sharding.SEED_AXIS)
    return jax.jit(_on_mesh(chunk, mesh, (state_specs, P()),
                            (state_specs, P(None, sharding.SEED_AXIS), seeds)))


# ----------------------------------------------------------------------------------------
# Host side: records, non-finite checks


def _chunk_records(
    metrics: dict[str, np.ndarray],
    n: int,
    chunk: int,
    update: int,
    episodic: tuple[str, ...] | Mapping[str, str] = (),
) -> list[dict[str, Any]]:
    """One record per seed from ``[n, seeds]`` per-update metrics (see METRIC_FIELDS).

    ``episodic`` names the learner's own per-episode metrics (NaN where no episode
    ended): each is averaged over the chunk weighted by the episodes of each update,
    ``None`` if none ended."""
    m = {k: np.asarray(v)[:n] for k, v in metrics.items()}
    seeds = next(iter(m.values())).shape[1]
    eps = m.get("episodes")
    out = []
    for s in range(seeds):
        rec: dict[str, Any] = {"seed": s, "chunk": chunk, "update": update}
        rec["env_steps"] = int(m["env_steps"][n - 1, s])
        if eps is not None and "episode_return" in m:
            cnt = eps[:, s].astype(np.float64)
            total = cnt.sum()
            has = cnt > 0
            rec["episodes"] = int(total)
            if total > 0:
                mu = m["episode_return"][has, s].astype(np.float64)
                sd = m.get("episode_return_std", np.zeros_like(m["episode_return"]))[has, s]
                mean = float((cnt[has] * mu).sum() / total)
                second = float((cnt[has] * (sd.astype(np.float64) ** 2 + mu**2)).sum() / total)
                rec["return_mean"] = mean
                rec["return_std"] = math.sqrt(max(second - mean**2, 0.0))
                if "episode_length" in m:
                    ln = m["episode_length"][has, s].astype(np.float64)
                    rec["episode_length"] = float((cnt[has] * ln).sum() / total)
        for k in ("episodes", "return_mean", "return_std"):
            rec.setdefault(k, None)  # a learner without episode metrics, or none ended
        for k in episodic:
            k_eps = m.get(_count_key(episodic, k), eps)
            if k in m and k_eps is not None:
                cnt = k_eps[:, s].astype(np.float64)
                has = cnt > 0
                rec[k] = (float((cnt[has] * m[k][has, s].astype(np.float64)).sum() / cnt.sum())
                          if has.any() else None)
        for k, v in m.items():
            if k in rec or k in EPISODE_METRICS or k in episodic or k in ("env_steps", "episodes"):
                continue
            col = v[:, s]
            if np.issubdtype(col.dtype, np.floating):
                rec[k] = float(col.mean())
            else:
                rec[k] = col[-1].item()
        out.append(rec)
    return out


def _count_key(episodic: tuple[str, ...] | Mapping[str, str], name: str) -> str:
    """The metric counting the episodes behind episodic metric ``name``: the learner's
    ``episode_metric_names`` may map names to their own counts (e.g. MetaGenRL's return
    of each env), else ``episodes``."""
    return episodic.get(name, "episodes") if isinstance(episodic, Mapping) else "episodes"


def _first_nonfinite(
    metrics: dict[str, np.ndarray],
    n: int,
    params_ok: np.ndarray,
    episodic: tuple[str, ...] | Mapping[str, str] = (),
) -> tuple[str, int, int, Any] | None:
    """``(what, update offset, seed, value)`` of the first non-finite value, if any
    (episode metrics, ``EPISODE_METRICS`` and ``episodic``, count only where an episode
    ended)."""
    eps = metrics.get("episodes")
    first = None
    # The loss first: on a tie (same update) it is the most telling name.
    for k in sorted(metrics, key=lambda k: (k != "loss", k)):
        v = np.asarray(metrics[k])[:n]
        if k == "nonfinite":
            bad = v > 0
        elif np.issubdtype(v.dtype, np.floating):
            bad = ~np.isfinite(v)
            k_eps = metrics.get(_count_key(episodic, k), eps) if k in episodic else eps
            if (k in EPISODE_METRICS or k in episodic) and k_eps is not None:
                bad &= np.asarray(k_eps)[:n] > 0
        else:
            continue
        if bad.any():
            u, s = np.argwhere(bad)[0]
            if first is None or u < first[1]:
                what = "gradient (steps skipped)" if k == "nonfinite" else k
                first = (what, int(u), int(s), v[u, s].item())
    if first is None and not params_ok.all():
        s = int(np.argmin(params_ok))
        first = ("parameters", n - 1, s, None)
    return first


# ----------------------------------------------------------------------------------------
# Signals


class _Signals:
    """SIGINT/SIGTERM set a flag (the run stops after the current chunk and checkpoints);
    a second SIGINT raises KeyboardInterrupt at once."""

    def __init__(self, out: TextIO):
        self.received: int | None = None
        self._old: dict[int, Any] = {}
        self._out = out

    def _handler(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        print(
            f"\n{signal.Signals(signum).name} received: stopping after the current chunk "
            "and writing a checkpoint (Ctrl-C again aborts without one)",
            file=self._out,
            flush=True,
        )

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        if interrupts.seen():  # Ctrl-C came before (and was perhaps swallowed)
            self.received = signal.SIGINT
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


# ----------------------------------------------------------------------------------------
# Running


@dataclasses.dataclass
class RunResult:
    """How a run ended, and its final (seed-batched) state."""

    run_dir: Path
    status: str  # "finished"
    update: int
    env_steps: int
    wall_time: float  # summed time of the chunks (all sessions of the run)
    loop_time: float  # this session's chunk loop, host work (logging, checkpoints) included
    compile_time: float
    state: Any
    final_return: float | None
    eval_returns: np.ndarray | None  # [seeds] mean eval return per seed


def _agreed_error(fn: Callable[[], Any]) -> Any:
    """``fn()`` on process 0; an error it raises is raised on every process (same type
    when it is one of the run's own errors), so none waits for the others."""
    value = kind = message = None
    if distributed.is_main():
        try:
            value = fn()
        except _SHARED_ERRORS as e:
            if distributed.process_count() == 1:
                raise
            kind = next(i for i, t in enumerate(_SHARED_ERRORS) if isinstance(e, t))
            message = str(e)
    value, kind, message = distributed.agree([value, kind, message])
    if kind is not None:
        raise _SHARED_ERRORS[kind](message)
    return value


def start(
    plan: Plan,
    out: str | Path | None = None,
    *,
    stream: TextIO | None = None,
    progress: bool = True,
) -> RunResult:
    """Trains a new run to the end.

    Every check comes before anything is written: ``out`` must be a new or empty,
    writable directory, and the compiled programs must fit the machine's memory
    (:func:`compile_run`); then the directory is created, locked (one writer) and given
    its ``config.json``. In a multi-process run process 0 creates it and every process
    uses its path.

    Args:
      plan: the validated run (:func:`prepare`).
      out: the run directory (default ``runs/ALGO-ENV-TIMESTAMP``).
      stream: where progress lines go (default stdout).
      progress: draw the progress bar.

    Returns:
      The :class:`RunResult`.
    """
    def check() -> str:
        rd = RunDir(out if out is not None else default_run_dir(plan.algo.name,
                                                                plan.env_name))
        rd.check_new()
        return str(rd.path)

    path = _agreed_error(check)
    compiled = compile_run(plan, fresh=True)
    interrupts.check()  # Ctrl-C while compiling: stop before anything is written
    run_id = uuid.uuid4().hex[:12]
    held: list[RunLock] = []  # (process 0's; a lock is not sent to the others)
    _agreed_error(lambda: held.append(RunDir(path).create(
        {**plan.record(), "run_id": run_id, "wandb_id": run_id,
         "processes": distributed.process_count()})))
    lock = held[0] if held else None
    try:
        return _execute(plan, RunDir(path), compiled, resume=False, stream=stream,
                        progress=progress)
    finally:
        if lock is not None:
            lock.release()


def resume(
    run_dir: str | Path, *, stream: TextIO | None = None, progress: bool = True
) -> RunResult:
    """Continues a run from its newest good checkpoint to the end (in a multi-process run,
    process 0 reads the run directory and sends the others what they need).

    The run directory is locked first (a second ``resume`` or a ``train`` still running
    there fails with :class:`~metareward.runtime.lock.RunLockedError`). A run that
    stopped before its first checkpoint starts over from update 0, which is exact: the
    initial state comes from the recorded seeds.

    Args:
      run_dir: the run directory.
      stream: where progress lines go (default stdout).
      progress: draw the progress bar.

    Returns:
      The :class:`RunResult`.
    """
    rd = RunDir(run_dir)
    held: list[RunLock] = []
    # Not a run directory, a damaged config.json, or in use: said before anything else.
    rec = _agreed_error(lambda: (rd.load_config(), held.append(rd.lock()))[0])
    lock = held[0] if held else None
    try:
        plan = plan_from_record(rec, run_dir)
        compiled = compile_run(plan, fresh=True)
        return _execute(plan, rd, compiled, resume=True, stream=stream, progress=progress)
    finally:
        if lock is not None:
            lock.release()


def load(run_dir: str | Path) -> tuple[Plan, int, Any, dict[str, Any]]:
    """The newest good checkpoint of a run (for notebooks, ``eval`` and tests).

    A reader: it takes no lock and never moves, deletes or writes a checkpoint file, so
    it is safe on a run that is still training (a damaged checkpoint is skipped with a
    warning; the run's own ``resume`` quarantines it).

    Args:
      run_dir: the run directory.

    Returns:
      ``(plan, update, state, meta)``: the run's :class:`Plan` (on this machine's
      devices), the checkpoint's update, the train state batched over seeds, and the
      checkpoint's metadata.
    """
    rd = RunDir(run_dir)
    plan = plan_from_run(run_dir, any_devices=True)
    ckpt = Checkpointer(rd.checkpoints, read_only=True, run_id=rd.run_id())
    try:
        abstract_state = jax.eval_shape(jax.vmap(plan.learner.init), plan.keys())
        update, state, meta = ckpt.restore_latest(abstract_state)
    finally:
        ckpt.close()
    return plan, update, state, meta


def _eval_program(plan: Plan, episodes: int, deterministic: bool) -> Callable:
    """``fn(states, keys) -> [seeds, episodes]`` returns, jitted (not yet compiled)."""
    return jax.jit(jax.vmap(
        lambda s, k: plan.learner.evaluate(s, k, episodes, deterministic=deterministic)))


def _eval_keys(plan: Plan, seed_offset: int = 1) -> jax.Array:
    return jax.random.split(jax.random.PRNGKey(plan.options.seed + seed_offset),
                            plan.options.seeds)


def evaluate(
    plan: Plan, state: Any, episodes: int, *, deterministic: bool = False, seed_offset: int = 1
) -> np.ndarray:
    """``[seeds, episodes]`` returns of fresh episodes of each seed's policy.

    Args:
      plan: the run.
      state: the train state, batched over seeds.
      episodes: episodes per seed.
      deterministic: act with the policies' deterministic actions.
      seed_offset: the evaluation keys come from ``options.seed + seed_offset`` (one per
        seed).

    Returns:
      The returns ``[seeds, episodes]``.

    Raises:
      ConfigError: ``episodes`` is not a positive int, or the evaluation would need more
        memory than the machine has (checked when compiling, before running).
    """
    if not (isinstance(episodes, int) and episodes > 0):
        raise ConfigError(f"episodes must be an int > 0, got {episodes!r}")
    keys = _eval_keys(plan, seed_offset)
    fn = _eval_program(plan, episodes, deterministic).lower(state, keys).compile()
    check_memory(fn, f"evaluating {episodes} episode(s) per seed", None)
    return np.asarray(fn(state, keys))


# ----------------------------------------------------------------------------------------
# Compiling, and what the compiled programs need


class ResourceError(ConfigError):
    """A run would need more memory than the machine has (found before running it)."""


#: Set to ``off`` to run a program the memory estimate refuses.
MEMORY_CHECK_ENV = "METAREWARD_MEMORY_CHECK"


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def memory_needed(compiled: Any) -> int | None:
    """Bytes a compiled program allocates on its device (arguments, outputs and
    temporaries, less what outputs alias), from XLA's buffer assignment; ``None`` where
    the backend does not say."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)


def memory_available() -> tuple[int, str] | None:
    """``(bytes, where)`` free for one program: a GPU/TPU's free device memory, or the
    host's available memory for CPU devices (``/proc/meminfo``); ``None`` if unknown."""
    dev = jax.local_devices()[0]
    if dev.platform != "cpu":
        stats = dev.memory_stats() or {}
        if "bytes_limit" not in stats:
            return None
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0)), f"{dev.device_kind}"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "this machine (host memory)"
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this machine"
    except (ValueError, OSError):
        return None


def check_memory(compiled: Any, what: str, mesh: Mesh | None) -> None:
    """Refuses a program that cannot fit, before it runs.

    Args:
      compiled: a compiled program (``jax.jit(f).lower(...).compile()``).
      what: what it does, for the message.
      mesh: the run's device mesh; on CPU devices, which share the host's memory, the
        per-device need is multiplied by its size.

    Raises:
      ResourceError: the estimate exceeds the free memory (unless the environment
        variable ``METAREWARD_MEMORY_CHECK=off``).
    """
    if os.environ.get(MEMORY_CHECK_ENV, "on").lower() in ("off", "0", "false", "no"):
        return
    need, free = memory_needed(compiled), memory_available()
    if need is None or free is None:
        return
    if jax.local_devices()[0].platform == "cpu" and mesh is not None:
        need *= mesh.devices.size
    if need > free[0]:
        raise ResourceError(
            f"{what} would need about {_gib(need)} of memory, more than the "
            f"{_gib(free[0])} free on {free[1]}; lower --seeds, num_envs, the network "
            f"size or --eval-episodes (or set {MEMORY_CHECK_ENV}=off to try anyway)")


@dataclasses.dataclass(frozen=True)
class Compiled:
    """A plan's programs, compiled and checked against the machine's memory: ``init``
    (``None`` if not asked for), ``chunk``, ``evaluate`` (the end-of-run evaluation;
    ``None`` without one, or on a process other than 0), and the compile time."""

    programs: Programs
    init: Callable | None
    chunk: Callable
    evaluate: Callable | None
    compile_time: float


def compile_run(plan: Plan, *, fresh: bool = True) -> Compiled:
    """Compiles a run's programs and checks that they fit in memory; writes nothing.

    Args:
      plan: the run.
      fresh: also compile ``init`` (a new run, or a resume that finds no checkpoint).

    Returns:
      The :class:`Compiled` programs.

    Raises:
      ResourceError: a program would need more memory than the machine has free.
    """
    progs = programs(plan)
    t0 = time.perf_counter()
    init = progs.init.lower(progs.keys).compile() if fresh else None
    chunk = progs.chunk.lower(progs.spec, np.int32(plan.chunk_updates)).compile()
    check_memory(chunk, f"a chunk of {plan.chunk_updates} update(s) of "
                 f"{plan.options.seeds} seed(s)", progs.mesh)
    ev = None
    if plan.options.eval_episodes > 0 and distributed.is_main():
        ev = _eval_program(plan, plan.options.eval_episodes, False).lower(
            abstract(progs.abstract_state), _eval_keys(plan)).compile()
        check_memory(ev, f"the final evaluation ({plan.options.eval_episodes} episodes "
                     "per seed, --eval-episodes)", None)
    return Compiled(progs, init, chunk, ev, time.perf_counter() - t0)


def write_eval(rd: RunDir, update: int, env_steps: int, returns: np.ndarray, det: bool) -> dict:
    """Writes an evaluation's summary to the run's ``eval.json`` (replacing it).

    Args:
      rd: the run directory.
      update: the update the evaluated state is at.
      env_steps: the env steps recorded with that update's checkpoint.
      returns: ``[seeds, episodes]`` episode returns (:func:`evaluate`).
      det: whether the policy acted deterministically.

    Returns:
      The record written: ``update``, ``env_steps``, ``episodes_per_seed``,
      ``deterministic``, and the ``mean``, ``std`` and ``per_seed`` of the seeds' mean
      returns.
    """
    per_seed = returns.mean(axis=1)
    rec = {
        "update": update,
        "env_steps": env_steps,
        "episodes_per_seed": int(returns.shape[1]),
        "deterministic": det,
        "mean": float(per_seed.mean()),
        "std": float(per_seed.std()),
        "per_seed": [float(x) for x in per_seed],
    }
    RunDir.write_json(rd.eval_json, rec)
    return rec


def _local_seeds(keys: jax.Array) -> list[int]:
    """The seeds whose state lives on this process's devices."""
    n = keys.shape[0]
    return sorted({i for sh in keys.addressable_shards for i in range(n)[sh.index[0]]})


def _restore(ckpt: Checkpointer | None, progs: Programs,
             ) -> tuple[int, Any, dict[str, Any]] | None:
    """The newest good checkpoint, laid out on the mesh; ``None`` if the run never wrote
    one (it stopped before its first checkpoint: it starts over). Process 0 reads it
    (``ckpt`` is ``None`` on the others) and broadcasts it; an error there is raised on
    every process. (With one process the broadcast and agreement are identities.)"""
    found: list[Any] = []

    def read() -> tuple[int, dict[str, Any]] | None:
        corrupt = ckpt.directory.parent / "corrupt_checkpoints"
        if not ckpt.candidates() and not (corrupt.is_dir() and any(corrupt.iterdir())):
            return None
        update, state, meta = ckpt.restore_latest(progs.abstract_state)
        found.append(state)
        return update, meta

    got = _agreed_error(read)  # (``read`` runs on process 0, where ``ckpt`` is set)
    if got is None:
        return None
    update, meta = got
    state = found[0] if found else jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                                                progs.abstract_state)
    return update, progs.place(distributed.broadcast(jax.device_get(state))), meta


def _interruptible(fn: Callable[[], Any], sig: _Signals) -> tuple[bool, Any]:
    """``(True, fn())``, or ``(False, None)`` as soon as a signal arrives (``fn`` is
    then abandoned in a daemon thread: the caller's process should exit soon).

    For the final evaluation: one XLA program, which a signal cannot stop, and the run
    is already saved."""
    box: dict[str, Any] = {}

    def work() -> None:
        faults.point("in-eval", 0)
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    thread = threading.Thread(target=work, name="metareward-eval", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.05)
        if sig.received is not None:
            return False, None
    if "error" in box:
        raise box["error"]
    return True, box["value"]


class _Session:
    """One session of a run (a ``start`` or a ``resume``) and its mutable bookkeeping:
    where the run is (``update``, ``env_steps``, ``wall``), the last checkpoint written
    (``saved_update``) and how the session ends (``status``). :func:`_execute` calls
    :meth:`start`, :meth:`run_chunks`, :meth:`stop_if_signalled`, :meth:`evaluate`, and
    always :meth:`close` (the summary), whatever stopped it.

    Process 0 writes the run directory: config (read here), metrics, checkpoints,
    summary, plot, wandb. Every process takes part in the collectives that get it the
    metrics and states to write."""

    def __init__(self, plan: Plan, rd: RunDir, compiled: Compiled, *, stream: TextIO | None,
                 progress: bool):
        self._out = stream or sys.stdout
        self.procs, self.main = distributed.process_count(), distributed.is_main()
        self._tag = "" if self.procs == 1 else (
            f"[process {distributed.process_index()}/{self.procs}] ")
        self.plan, self.rd, self.compiled = plan, rd, compiled
        self.opts = plan.options
        episodic = getattr(plan.learner, "episode_metric_names", ())
        self.episodic = dict(episodic) if isinstance(episodic, Mapping) else tuple(episodic)
        self.total, self.K = plan.num_updates, plan.chunk_updates
        self.record = rd.load_config() if self.main else {}
        run_id = self.record.get("run_id") or self.record.get("wandb_id")
        self.ckpt = (Checkpointer(rd.checkpoints, primary_only=self.procs > 1, run_id=run_id)
                     if self.main else None)
        self.wb: WandbLogger | None = None
        self.status = "failed"
        self.started = False  # a resume that fails before it has a state keeps the last summary
        self.failing = False
        self.update = self.env_steps = 0
        self.wall = self.loop_time = 0.0
        self.compile_time = compiled.compile_time
        self.last_return: float | None = None
        self.saved_update: int | None = None
        self.local: list[int] = []
        self.bar = Progress(enabled=progress and self.main)

    def say(self, *a: Any) -> None:
        print(self._tag + " ".join(map(str, a)), file=self._out, flush=True)

    def start(self, resume: bool) -> Any:
        """Says what runs where, clears unfinished saves, and returns the state to train
        from: the newest good checkpoint's (``resume``) or a fresh one (also when a
        resumed run never wrote a checkpoint); opens wandb."""
        progs, rd, main = self.compiled.programs, self.rd, self.main
        mesh = progs.mesh
        self.say(
            f"{self.plan.algo.name} on {self.plan.env_name}: {self.opts.seeds} seed(s), "
            f"{self.total} updates in {math.ceil(self.total / self.K)} chunk(s) of {self.K}"
        )
        self.say(f"run directory: {rd.path}" + ("" if main else " (written by process 0)"))
        if mesh is not None:
            self.say(f"sharded over {sharding.describe(mesh)}")
        self.local = _local_seeds(progs.keys)
        if self.procs > 1:
            self.say(f"this process holds seed(s) {self.local}")
        if self.ckpt is not None:  # this process holds the run's lock: no save is running
            for name in self.ckpt.remove_unfinished():
                self.say(f"removed {rd.checkpoints / name}, a save that never finished")
        restored = _restore(self.ckpt, progs) if resume else None
        if restored is not None:
            self.update, state, meta = restored
            self.wall = float(meta.get("wall_time", 0.0))
            self.env_steps = int(meta.get("env_steps", 0))
            if main:
                rd.truncate_metrics(self.update)
            self.say(f"resuming from the checkpoint of update {self.update} "
                     f"({self.env_steps:,} env steps)")
        else:
            if resume:
                self.say("no checkpoint was written before the run stopped: starting it over "
                         "from update 0")
                if main:
                    rd.truncate_metrics(0)
            state = self.compiled.init(progs.keys)
        self.started = True
        self.saved_update = self.update if restored is not None else None

        if self.opts.wandb != "off" and main:
            self.wb = WandbLogger(
                self.opts.wandb, rd.path, self.record.get("wandb_id", uuid.uuid4().hex[:12]),
                rd.path.name, self.record,
            )
        self.say(f"compiled in {self.compile_time:.1f} s")
        return state

    def save(self, upd: int, st: Any, steps: int) -> None:
        """Checkpoints ``st`` as update ``upd`` (once: a no-op if that one was saved)."""
        if self.saved_update == upd:
            return
        host = distributed.gather(st)  # (a collective: every process calls it)
        if self.ckpt is not None:
            self.ckpt.save(upd, host, {"update": upd, "env_steps": steps,
                                       "wall_time": self.wall})
        self.saved_update = upd

    def run_chunks(self, state: Any, sig: _Signals) -> tuple[Any, bool]:
        """Trains ``state`` to the end or to a signal, chunk by chunk: ``(state, stop)``,
        ``stop`` when the processes agreed to stop at a signal.

        Pipelined: chunk c+1 is dispatched (jax runs it asynchronously) before the host
        logs and checkpoints chunk c, so host work overlaps the computation."""
        total, K, procs = self.total, self.K, self.procs
        chunk_fn = self.compiled.chunk
        self.bar.update(self.update, total, self.env_steps, 0.0, None)
        loop_start = last_done = time.perf_counter()
        wall_start = self.wall
        # Stop at a signal. Several processes must stop at the same chunk: the flag
        # they act on is the one all of them agreed on after the previous chunk.
        stop = False

        def launch(st: Any, upd: int) -> tuple[int, Any] | None:
            if upd >= total or stop or (procs == 1 and sig.received is not None):
                return None
            n = min(K, total - upd)
            return n, chunk_fn(st, np.int32(n))

        pending = launch(state, self.update)
        while pending is not None:
            n, (new_state, metrics, params_ok) = pending
            chunk, done = self.update // K, self.update + n
            pending = launch(new_state, done)
            metrics, params_ok = distributed.gather((metrics, params_ok))
            if procs > 1:
                stop = distributed.any_process(sig.received is not None)
            now = time.perf_counter()
            dt, last_done = now - last_done, now
            self._check_finite(state, metrics, n, params_ok)
            self.update, state = done, new_state
            self.wall = wall_start + (now - loop_start)
            self._log_chunk(state, metrics, n, chunk, dt)
        self.bar.close()
        self.loop_time = time.perf_counter() - loop_start
        return state, stop

    def _check_finite(self, state: Any, metrics: dict[str, np.ndarray], n: int,
                      params_ok: Any) -> None:
        """Raises :class:`NonFiniteError` if the chunk after ``state`` (the last good
        one, checkpointed first) produced a non-finite metric or parameter."""
        bad = _first_nonfinite(metrics, n, np.asarray(params_ok), self.episodic)
        if bad is not None:
            what, u, s, value = bad
            self.save(self.update, state, self.env_steps)  # the state before this chunk is good
            self.status = "nonfinite"
            at_steps = int(np.asarray(metrics["env_steps"])[u, s])
            raise NonFiniteError(
                f"non-finite {what}"
                + (f" ({value})" if value is not None else "")
                + f" at update {self.update + u + 1} (env step {at_steps:,}) of seed {s}. "
                f"The last good checkpoint is update {self.saved_update} in "
                f"{self.rd.checkpoints}. Lower the learning rate or check the reward scale."
            )

    def _log_chunk(self, state: Any, metrics: dict[str, np.ndarray], n: int, chunk: int,
                   dt: float) -> None:
        """Chunk ``chunk``'s records (``metrics.jsonl``, wandb; the other processes' own
        line at a checkpoint boundary), its checkpoint at a boundary, the progress bar."""
        opts, update, total = self.opts, self.update, self.total
        recs = _chunk_records(metrics, n, chunk, update, self.episodic)
        sps = sum(r["env_steps"] for r in recs) - self.env_steps * opts.seeds
        sps /= max(dt, 1e-9)
        self.env_steps = recs[0]["env_steps"]
        for r in recs:
            r["wall_time"] = round(self.wall, 4)
            r["steps_per_sec"] = round(sps, 1)
        rets = [r["return_mean"] for r in recs if r.get("return_mean") is not None]
        if rets:
            self.last_return = float(np.mean(rets))
        boundary = (chunk + 1) % opts.checkpoint_every == 0 or update == total
        if self.main:
            self.rd.append_metrics(recs)
            if self.wb is not None:
                self.wb.log(recs)
        elif boundary:  # the other processes log their own seeds' part
            mine = [recs[i]["return_mean"] for i in self.local
                    if recs[i].get("return_mean") is not None]
            ret = f"{np.mean(mine):.1f}" if mine else "-"
            self.say(f"update {update}/{total}, {self.env_steps:,} env steps per seed: "
                     f"return {ret} over seed(s) {self.local}")
        if boundary:
            self.save(update, state, self.env_steps)
        faults.point("after-chunk", chunk)
        self.bar.update(update, total, self.env_steps, sps, self.last_return)

    def stop_if_signalled(self, state: Any, sig: _Signals, stop: bool) -> None:
        """After the chunks: at a signal, checkpoints and raises :class:`RunInterrupted`;
        else the run has finished."""
        signum = sig.received
        if signum is not None or stop:
            self.save(self.update, state, self.env_steps)
            self.status = "interrupted"
            raise RunInterrupted(signum or signal.SIGTERM, self.rd.path, self.update)
        self.status = "finished"

    def evaluate(self, state: Any, sig: _Signals) -> np.ndarray | None:
        """The final evaluation (``eval.json``): ``[seeds]`` mean returns, or ``None``
        (none asked for, or not process 0). Process 0 evaluates every seed on its own
        device (several processes: the gathered state), with the program compiled
        before training; a signal abandons it (:class:`RunInterrupted`)."""
        eval_returns = None
        if self.opts.eval_episodes > 0:
            host = distributed.gather(state)
            if self.main:
                done, ev = _interruptible(
                    lambda: np.asarray(self.compiled.evaluate(host, _eval_keys(self.plan))),
                    sig)
                if not done:
                    raise RunInterrupted(sig.received, self.rd.path, self.update,
                                         during_eval=True)
                rec = write_eval(self.rd, self.update, self.env_steps, ev, False)
                eval_returns = np.asarray(rec["per_seed"])
                self.say(
                    f"evaluation, {self.opts.eval_episodes} episodes per seed: "
                    f"{rec['mean']:.1f} +- {rec['std']:.1f} over seeds"
                )
        return eval_returns

    def close(self) -> None:
        """The end of the session, however it ended: the last checkpoint, then the
        summary (:func:`_finish`). While an error is on its way out (``failing``), a
        second one here (the same full disk) is a warning: the first is the cause."""
        self.bar.close()
        summary = {
            "status": self.status,
            "update": self.update,
            "num_updates": self.total,
            "env_steps": self.env_steps,
            "wall_time": round(self.wall, 3),
            "loop_time": round(self.loop_time, 3),
            "compile_time": round(self.compile_time, 3),
            "last_return": self.last_return,
        }
        for step in (lambda: self.ckpt is not None and self.ckpt.close(),
                     lambda: _finish(self.rd, self.main and self.started, self.wb,
                                     self.status, summary)):
            try:
                step()
            except OSError as e:
                if not self.failing:
                    raise
                print(f"warning: {e}", file=sys.stderr)


def _execute(
    plan: Plan, rd: RunDir, compiled: Compiled, *, resume: bool, stream: TextIO | None,
    progress: bool,
) -> RunResult:
    """One session of a run, from its state (restored or new) to the end or a stop,
    written so that a crash or SIGKILL at any moment leaves a run that resumes exactly."""
    run = _Session(plan, rd, compiled, stream=stream, progress=progress)
    with _Signals(sys.stderr) as sig:
        try:
            state = run.start(resume)
            state, stop = run.run_chunks(state, sig)
            run.stop_if_signalled(state, sig, stop)
            eval_returns = run.evaluate(state, sig)
            return RunResult(
                rd.path, run.status, run.update, run.env_steps, run.wall, run.loop_time,
                run.compile_time, state, run.last_return, eval_returns,
            )
        except BaseException:
            run.failing = True
            raise
        finally:
            run.close()


def _finish(rd: RunDir, write: bool, wb: WandbLogger | None, status: str,
            summary: dict[str, Any]) -> None:
    """The end of a session of a run: ``summary.json`` and the plot (when ``write``: on
    process 0, once the run had a state; a resume that failed before keeps the last
    summary), and wandb's summary."""
    if write:
        RunDir.write_json(rd.summary_json, summary)
        if rd.metrics_jsonl.is_file():
            from metareward.runtime.plot import plot_runs

            try:
                plot_runs([rd.path], rd.curve_png)
            except Exception as e:  # a figure is not worth hiding why the run stopped
                print(f"warning: could not draw {rd.curve_png}: {e}", file=sys.stderr)
    if wb is not None:
        wb.summary(summary)
        wb.finish(exit_code=0 if status == "finished" else 1)


__all__ = [
    "NonFiniteError",
    "Plan",
    "RunInterrupted",
    "RunOptions",
    "RunResult",
    "evaluate",
    "load",
    "make_chunk",
    "plan_from_record",
    "plan_from_run",
    "prepare",
    "resume",
    "start",
    "write_eval",
]

