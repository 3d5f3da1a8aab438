"""A replay buffer as a pytree held in the train state: time-major rows of a vectorised env.

The buffer stores any pytree of arrays (``data``) with leading axes ``[L, N, ...]``: ``L``
rows (time steps) of ``N`` envs. Rows are kept in *natural time order*, newest at the
end: :func:`insert` shifts the buffer by the ``T`` rows of a rollout
(``concatenate([old[T:], new])``), so that, because the env states persist between
rollouts, row ``t + 1`` of env ``e`` is the step that followed row ``t`` (unless the
episode ended at row ``t``). Recursions over time (TD(lambda), GAE, n-step returns,
an LSTM over trajectories) therefore run over the whole buffer as over one long rollout,
e.g. ``metareward.rl.gae.gae(...)`` on ``[L, N]`` arrays.

``size`` counts the valid rows; the invalid ones (zeros, never inserted) are the first
``L - size``. Nothing here knows what a row holds: AWR stores observations, actions,
rewards and flags; TARE's AWR flavour adds a time index.

Everything is a pure function of the buffer, jittable and vmappable over seeds::

    buf = replay.init(example_row, num_rows=L)     # example_row: pytree of [N, ...]
    buf = replay.insert(buf, rollout_rows)         # pytree of [T, N, ...]
    t, e = replay.sample_indices(key, buf, 256)    # uniform among valid entries
    batch = replay.gather(buf, t, e)               # pytree of [256, ...]

This replaces the circular, path-indexed buffer of the AWR code (Peng et al. 2019,
``xbpeng/awr``, ``util/replay_buffer.py``): that one stores whole episodes and keeps
start/end indices per entry; here episodes are delimited by the ``done`` flags in the
rows, as in a rollout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct


class Row(NamedTuple):
    """The one row type the off-policy learners store (AWR, TD3/DDPG, TARE's AWR flavour,
    MetaGenRL): one env step of every env, leading axis ``[N]`` (``[T, N]`` for a
    rollout's rows, ``[L, N]`` in the buffer).

    Attributes:
      obs: Flattened observations (raw: a learner normalises when it reads them).
      action: Actions as the learner stores them (AWR: policy-space; TD3: env-space).
      reward: Rewards as the learner stores them (TD3, AWR: scaled by ``reward_scale``;
        TARE: raw, its reward net reads them normalised).
      done: 1 where the episode ended at this step (terminal or time limit).
      truncation: 1 where it ended by the time limit (a bootstrap, not a terminal).
      next_obs: The observation the step reached, before any auto-reset
        (``info["final_obs"]``).
      time: Optional: the step's time ``t / T`` in its episode (MetaGenRL's objective
        reads it); ``None`` (no leaf) for the learners that do not.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    done: jax.Array
    truncation: jax.Array
    next_obs: jax.Array
    time: jax.Array | None = None

    @property
    def terminal(self) -> jax.Array:
        """``done * (1 - truncation)``: 1 where the episode truly ended (no bootstrap)."""
        return self.done * (1.0 - self.truncation.astype(self.done.dtype))

    @classmethod
    def example(cls, spec: Any, num_envs: int, with_time: bool = False) -> Row:
        """The shapes and dtypes of one row of ``num_envs`` envs, to size a buffer with
        (:func:`init`, :func:`ring_init`).

        Args:
            spec: The env's :class:`~metareward.envs.spec.EnvSpec`.
            num_envs: ``N``, the leading axis of every leaf.
            with_time: Include the ``time`` leaf (MetaGenRL, TARE's AWR flavour).

        Returns:
            A ``Row`` of ``jax.ShapeDtypeStruct``: flattened float32 observations,
            actions in the policy's space (int32 indices for a discrete env, float32
            vectors otherwise), float32 scalars.
        """
        f32 = jnp.float32
        scalar = jax.ShapeDtypeStruct((num_envs,), f32)
        obs = jax.ShapeDtypeStruct((num_envs, spec.obs_size), f32)
        action = (jax.ShapeDtypeStruct((num_envs,), jnp.int32) if spec.discrete
                  else jax.ShapeDtypeStruct((num_envs, spec.action_size), f32))
        return cls(obs=obs, action=action, reward=scalar, done=scalar, truncation=scalar,
                   next_obs=obs, time=scalar if with_time else None)

    @classmethod
    def from_rollout(
        cls,
        traj: Any,
        flatten_obs: Callable[[jax.Array], jax.Array],
        reward_scale: float | jax.Array | None = None,
        time: jax.Array | None = None,
    ) -> Row:
        """The rows of a time-major rollout (:class:`metareward.rl.rollout.Transition`
        ``[T, N, ...]``): observations flattened, everything but the action float32.

        Args:
            traj: The rollout.
            flatten_obs: Flattens the env's observations to ``[..., obs_size]``.
            reward_scale: Stored rewards are ``reward_scale`` times the env's (``None``:
                the env's).
            time: The optional ``time`` column.

        Returns:
            ``[T, N]`` rows.
        """
        reward = traj.reward if reward_scale is None else traj.reward * reward_scale
        return cls(
            obs=flatten_obs(traj.obs).astype(jnp.float32),
            action=traj.action,
            reward=reward.astype(jnp.float32),
            done=traj.done.astype(jnp.float32),
            truncation=traj.truncation.astype(jnp.float32),
            next_obs=flatten_obs(traj.next_obs).astype(jnp.float32),
            time=time,
        )


class _Shape:
    """The static sizes of a buffer's ``data`` (``[L, N, ...]`` leaves)."""

    data: Any

    @property
    def num_rows(self) -> int:
        """Capacity ``L`` in rows (static)."""
        return jax.tree.leaves(self.data)[0].shape[0]

    @property
    def num_envs(self) -> int:
        """Number of env columns ``N`` (static)."""
        return jax.tree.leaves(self.data)[0].shape[1]


@struct.dataclass
class ReplayBuffer(_Shape):
    """Time-major transitions of ``N`` envs (a pytree).

    Attributes:
      data: pytree of arrays with leading axes ``[L, N, ...]``, oldest row first.
      size: int32 scalar, number of valid rows (``0 <= size <= L``); the valid rows are
        the last ``size``.
    """

    data: Any
    size: jax.Array


def init(example_row: Any, num_rows: int) -> ReplayBuffer:
    """An empty buffer of ``num_rows`` rows shaped like ``example_row``.

    Args:
      example_row: pytree of arrays ``[N, ...]`` (one time step of every env; values
        are ignored, only shapes and dtypes matter; ``jax.ShapeDtypeStruct`` works too).
      num_rows: capacity ``L`` in rows (transitions = ``L * N``).
    """
    if not isinstance(num_rows, int) or num_rows < 1:
        raise ValueError(f"num_rows={num_rows!r} is invalid; allowed: an int > 0")
    leaves = jax.tree.leaves(example_row)
    if not leaves or any(len(x.shape) < 1 for x in leaves):
        raise ValueError("example_row must be a pytree of arrays with a leading env axis [N]")
    n = leaves[0].shape[0]
    if any(x.shape[0] != n for x in leaves):
        raise ValueError(f"every leaf of example_row needs the same env axis N={n}")
    data = jax.tree.map(lambda x: jnp.zeros((num_rows, *x.shape), x.dtype), example_row)
    return ReplayBuffer(data=data, size=jnp.zeros((), jnp.int32))


def insert(buf: ReplayBuffer, rows: Any) -> ReplayBuffer:
    """Appends ``rows`` at the end, dropping the ``T`` oldest rows. If ``T >= L`` only the
    last ``L`` rows are kept.

    Args:
      buf: the buffer.
      rows: pytree of ``[T, N, ...]``, same structure as ``buf.data`` (cast to its
        dtypes).

    Returns:
      The new buffer.

    Raises:
      ValueError: if a leaf of ``rows`` does not match the buffer's ``[N, ...]``.
    """
    L = buf.num_rows
    T = jax.tree.leaves(rows)[0].shape[0]

    def shift(old: jax.Array, new: jax.Array) -> jax.Array:
        if new.shape[1:] != old.shape[1:]:
            raise ValueError(f"rows of shape {new.shape[1:]} do not fit a buffer of {old.shape}")
        new = new.astype(old.dtype)
        if T >= L:
            return new[T - L :]
        return jnp.concatenate([old[T:], new], axis=0)

    data = jax.tree.map(shift, buf.data, rows)
    return ReplayBuffer(data=data, size=jnp.minimum(buf.size + T, L).astype(jnp.int32))


def valid_mask(buf: ReplayBuffer) -> jax.Array:
    """``[L]`` bool: which rows hold inserted data (the last ``size``).

    Args:
      buf: the buffer.

    Returns:
      The mask ``[L]``.
    """
    return jnp.arange(buf.num_rows) >= buf.num_rows - buf.size


def sample_indices(
    key: jax.Array, buf: ReplayBuffer, batch_size: int, mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """``(t_idx, e_idx)``, each ``[batch_size]`` int32: entries drawn uniformly, with
    replacement, among the valid ones (valid row and, if given, ``mask[e]``).

    Args:
      key: PRNG key.
      buf: the buffer; must hold at least one valid row (else the rows drawn are invalid,
        index ``L - 1``).
      batch_size: number of entries (static).
      mask: optional ``[N]`` bool, the env columns to draw from (e.g. TARE's training
        half of the envs); at least one must be true.

    Validity is per row, so a uniform draw over the valid (row, env) pairs is a uniform
    valid row times a uniform allowed env.
    """
    L, N = buf.num_rows, buf.num_envs
    k_t, k_e = jax.random.split(key)
    size = jnp.maximum(buf.size, 1)
    t_idx = L - size + jax.random.randint(k_t, (batch_size,), 0, size)
    if mask is None:
        e_idx = jax.random.randint(k_e, (batch_size,), 0, N)
    else:
        if mask.shape != (N,):
            raise ValueError(f"mask must have shape ({N},) (one flag per env), got {mask.shape}")
        logits = jnp.where(mask, 0.0, -jnp.inf)
        e_idx = jax.random.categorical(k_e, logits, shape=(batch_size,))
    return t_idx.astype(jnp.int32), e_idx.astype(jnp.int32)


def gather(buf: ReplayBuffer, t_idx: jax.Array, e_idx: jax.Array) -> Any:
    """The entries ``(t_idx[i], e_idx[i])`` of every leaf: pytree of ``[B, ...]``.

    Args:
      buf: the buffer.
      t_idx: row indices ``[B]``.
      e_idx: env indices ``[B]``.

    Returns:
      Pytree of ``[B, ...]``, the structure of ``buf.data``.
    """
    return jax.tree.map(lambda x: x[t_idx, e_idx], buf.data)


# ----------------------------------------------------------------------------------------
# A ring buffer: O(rows inserted) per insert, for learners that insert a few rows at a time
# into a large buffer (TD3, MetaGenRL: one env step per update into 1e6 transitions), where
# :func:`insert`'s shift would copy the whole buffer every step.


@struct.dataclass
class RingBuffer(_Shape):
    """Time-major transitions of ``N`` envs in a circular buffer (a pytree).

    Attributes:
      data: pytree of arrays ``[L, N, ...]``; row ``head - 1`` (mod ``L``) is the newest,
        row ``head - size`` the oldest valid one.
      size: int32 scalar, number of valid rows (``0 <= size <= L``).
      head: int32 scalar, the row the next insert writes (a multiple of the rows per
        insert, so an insert never wraps).

    Consecutive rows of one env column are consecutive steps of that env (unless an
    episode ended in between, as the rows' own ``done`` flags say), so windows of ``W``
    steps (:func:`ring_windows`) are runs of rows, taken modulo ``L``.
    """

    data: Any
    size: jax.Array
    head: jax.Array


def ring_init(example_row: Any, num_rows: int) -> RingBuffer:
    """An empty ring buffer of ``num_rows`` rows shaped like ``example_row``. If rows are
    inserted ``T`` at a time, ``num_rows`` must be a multiple of ``T`` (checked by
    :func:`ring_insert`).

    Args:
      example_row: pytree of arrays ``[N, ...]``, as :func:`init` takes it.
      num_rows: capacity ``L`` in rows.

    Returns:
      The empty :class:`RingBuffer` (``head = 0``).

    Raises:
      ValueError: as :func:`init`: a ``num_rows`` that is not an int > 0, or an
        ``example_row`` without a common leading env axis.
    """
    buf = init(example_row, num_rows)
    return RingBuffer(data=buf.data, size=buf.size, head=jnp.zeros((), jnp.int32))


def ring_insert(buf: RingBuffer, rows: Any) -> RingBuffer:
    """Writes ``rows`` (pytree of ``[T, N, ...]``) at ``head`` (``dynamic_update_slice``:
    in place inside a jitted loop), overwriting the oldest rows once full.

    Args:
      buf: the ring buffer.
      rows: pytree of ``[T, N, ...]``, same structure as ``buf.data``; ``T`` must divide
        the buffer's ``L`` rows.

    Returns:
      The new ring buffer (``head`` advanced by ``T``).

    Raises:
      ValueError: if ``T`` does not divide ``L`` or a leaf does not match the buffer's
        ``[N, ...]``.
    """
    L = buf.num_rows
    T = jax.tree.leaves(rows)[0].shape[0]
    if L % T:
        raise ValueError(
            f"a ring buffer of {L} rows takes inserts of a divisor of {L} rows, got {T}"
        )

    def put(old: jax.Array, new: jax.Array) -> jax.Array:
        if new.shape[1:] != old.shape[1:]:
            raise ValueError(f"rows of shape {new.shape[1:]} do not fit a buffer of {old.shape}")
        start = (buf.head,) + (0,) * (old.ndim - 1)
        return jax.lax.dynamic_update_slice(old, new.astype(old.dtype), start)

    return RingBuffer(
        data=jax.tree.map(put, buf.data, rows),
        size=jnp.minimum(buf.size + T, L).astype(jnp.int32),
        head=((buf.head + T) % L).astype(jnp.int32),
    )


def ring_sample_indices(
    key: jax.Array, buf: RingBuffer, batch_size: int
) -> tuple[jax.Array, jax.Array]:
    """``(t_idx, e_idx)``, each ``[batch_size]`` int32: entries drawn uniformly, with
    replacement, among the valid rows and all envs (use :func:`gather`).

    Args:
      key: PRNG key.
      buf: the ring buffer; should hold a valid row (else every draw is row
        ``head - 1``, invalid).
      batch_size: number of entries (static).

    Returns:
      ``(t_idx, e_idx)``.
    """
    L, N = buf.num_rows, buf.num_envs
    k_t, k_e = jax.random.split(key)
    size = jnp.maximum(buf.size, 1)
    age = jax.random.randint(k_t, (batch_size,), 0, size)  # 0: the newest row
    t_idx = (buf.head - 1 - age) % L
    e_idx = jax.random.randint(k_e, (batch_size,), 0, N)
    return t_idx.astype(jnp.int32), e_idx.astype(jnp.int32)


def ring_windows(
    key: jax.Array, buf: RingBuffer, batch_size: int, length: int, done: Callable[[Any], Any]
) -> tuple[Any, jax.Array]:
    """``(windows, mask)``: ``batch_size`` windows of ``length`` consecutive steps of one
    env each, starting at a uniformly drawn valid row, as a pytree of ``[B, W, ...]``, and
    ``mask [B, W]`` (float): 1 for steps that belong to the window's first episode and
    are valid rows, 0 after the episode ended inside the window (the step with
    ``done = 1`` is the last valid one) or past the newest row. Masked steps hold
    whatever the buffer has there.

    (MetaGenRL's ``window_sampler="transition"``: a start uniform over transitions draws
    an episode in proportion to its length and cuts windows at its end, unlike the
    authors' code; :func:`ring_episode_windows` draws as they do.)

    Args:
      key: PRNG key.
      buf: the buffer.
      batch_size: ``B``, number of windows (static).
      length: ``W``, steps per window (static).
      done: ``done(data) -> [L, N]`` picks the episode-end flags from the buffer's rows.

    Returns:
      ``(windows, mask)`` as above.
    """
    L, N = buf.num_rows, buf.num_envs
    k_t, k_e = jax.random.split(key)
    size = jnp.maximum(buf.size, 1)
    age = jax.random.randint(k_t, (batch_size,), 0, size)  # of the first step
    k = jnp.arange(length)
    t = (buf.head - 1 - age[:, None] + k[None, :]) % L  # [B, W]
    e = jax.random.randint(k_e, (batch_size,), 0, N)[:, None]
    windows = jax.tree.map(lambda x: x[t, e], buf.data)
    in_buffer = k[None, :] <= age[:, None]  # not past the newest row
    ended = jnp.asarray(done(buf.data))[t, e] > 0
    # Valid while no earlier step of the window ended its episode.
    before_end = jnp.cumsum(ended, axis=1) - ended == 0
    return windows, (in_buffer & before_end).astype(jnp.float32)


# ----------------------------------------------------------------------------------------
# Completed episodes of a ring buffer, for drawing windows episode-uniformly (MetaGenRL as
# the authors' code draws them, ``louiskirsch/metagenrl``, ``ReplayBuffer.sample_time_batch``).


@struct.dataclass
class EpisodeIndex:
    """The completed episodes held in a :class:`RingBuffer`, per env column (a pytree).

    Kept next to the buffer and updated on every insert (:func:`episode_insert`), so a
    draw (:func:`ring_episode_windows`) costs ``O(batch x length)``, not a scan of the
    buffer. An episode is *held* while all its rows are valid: its record is dropped
    when the insert that overwrites its first row happens. Records are a ring of
    ``L`` slots per column (an episode has at least one row, so at most ``L`` are held),
    oldest first.

    Attributes:
      start: int32 ``[L, N]``, the buffer row of each record's first step.
      length: int32 ``[L, N]``, each record's number of steps.
      count: int32 ``[N]``, held episodes per column (the valid records are the last
        ``count`` before ``head``).
      head: int32 ``[N]``, the slot the next record writes.
      open_length: int32 ``[N]``, steps of each column's episode in progress so far.
    """

    start: jax.Array
    length: jax.Array
    count: jax.Array
    head: jax.Array
    open_length: jax.Array


def episode_index_init(buf: RingBuffer) -> EpisodeIndex:
    """An empty index for ``buf`` (which must be empty too).

    Args:
      buf: the (empty) ring buffer, for ``L`` and ``N``.

    Returns:
      The :class:`EpisodeIndex`, all zeros.
    """
    L, N = buf.num_rows, buf.num_envs
    zl, zn = jnp.zeros((L, N), jnp.int32), jnp.zeros((N,), jnp.int32)
    return EpisodeIndex(start=zl, length=zl, count=zn, head=zn, open_length=zn)


def episode_insert(index: EpisodeIndex, head: jax.Array, done: jax.Array) -> EpisodeIndex:
    """The index after :func:`ring_insert` wrote ``T`` rows at ``head`` whose episode-end
    flags are ``done``.

    Row by row: drops the oldest record if this row overwrites its first step, then
    extends the episode in progress and, where ``done``, records it (if it still fits
    in the buffer: an episode longer than ``L`` rows is never held).

    Args:
      index: the index before the insert.
      head: the buffer's ``head`` before that insert.
      done: ``[T, N]`` episode-end flags of the inserted rows.

    Returns:
      The updated :class:`EpisodeIndex`.

    Raises:
      ValueError: if ``done`` is not ``[T, N]``.
    """
    L, N = index.start.shape
    done = jnp.asarray(done) > 0
    if done.ndim != 2 or done.shape[1] != N:
        raise ValueError(
            f"done must be [T, {N}] (one flag per inserted row and env), got {done.shape}"
        )
    cols = jnp.arange(N)

    def one(idx: EpisodeIndex, xs: tuple[jax.Array, jax.Array]):
        row, d = xs
        oldest = (idx.head - idx.count) % L
        pop = (idx.count > 0) & (idx.start[oldest, cols] == row)
        count = idx.count - pop.astype(jnp.int32)
        n = idx.open_length + 1
        rec = d & (n <= L)
        first = (row - n + 1) % L
        start = idx.start.at[idx.head, cols].set(jnp.where(rec, first, idx.start[idx.head, cols]))
        length = idx.length.at[idx.head, cols].set(jnp.where(rec, n, idx.length[idx.head, cols]))
        out = EpisodeIndex(
            start=start,
            length=length,
            count=count + rec.astype(jnp.int32),
            head=jnp.where(rec, (idx.head + 1) % L, idx.head).astype(jnp.int32),
            open_length=jnp.where(d, 0, n).astype(jnp.int32),
        )
        return out, None

    rows = (head + jnp.arange(done.shape[0])) % L
    index, _ = jax.lax.scan(one, index, (rows.astype(jnp.int32), done))
    return index


def ring_episode_windows(
    key: jax.Array, buf: RingBuffer, index: EpisodeIndex, batch_size: int, length: int
) -> tuple[Any, jax.Array]:
    """``(windows, mask)`` like :func:`ring_windows`, drawn as the MetaGenRL authors'
    code draws them: an episode uniformly among the completed episodes held (over all
    env columns), then the window's start uniformly among the ``max(len - length, 0) +
    1`` offsets that keep it inside the episode. ``mask [B, W]``: 1 on the first
    ``min(len, length)`` steps (all of them unless the episode is shorter than the
    window), so every valid step of a window lies in one episode. With no completed
    episode held the mask is all zeros.

    Args:
      key: PRNG key.
      buf: the ring buffer.
      index: its :class:`EpisodeIndex`.
      batch_size: ``B``, number of windows (static).
      length: ``W``, steps per window (static).

    Returns:
      ``(windows, mask)``: pytree of ``[B, W, ...]`` and ``[B, W]`` float.
    """
    L, N = buf.num_rows, buf.num_envs
    k_e, k_r, k_o = jax.random.split(key, 3)
    count = index.count
    if N == 1:
        e = jnp.zeros((batch_size,), jnp.int32)
    else:  # a column in proportion to its episodes: uniform over all episodes
        logits = jnp.where(count > 0, jnp.log(jnp.maximum(count, 1).astype(jnp.float32)), -jnp.inf)
        logits = jnp.where(jnp.any(count > 0), logits, 0.0)
        e = jax.random.categorical(k_e, logits, shape=(batch_size,)).astype(jnp.int32)
    n_e = count[e]
    r = jax.random.randint(k_r, (batch_size,), 0, jnp.maximum(n_e, 1))
    slot = (index.head[e] - n_e + r) % L
    first, n = index.start[slot, e], index.length[slot, e]
    off = jax.random.randint(k_o, (batch_size,), 0, jnp.maximum(n - length, 0) + 1)
    k = jnp.arange(length)
    t = (first[:, None] + off[:, None] + k[None, :]) % L
    windows = jax.tree.map(lambda x: x[t, e[:, None]], buf.data)
    mask = (k[None, :] < jnp.minimum(n, length)[:, None]) & (n_e > 0)[:, None]
    return windows, mask.astype(jnp.float32)


__all__ = [
    "EpisodeIndex",
    "ReplayBuffer",
    "RingBuffer",
    "Row",
    "episode_index_init",
    "episode_insert",
    "gather",
    "init",
    "insert",
    "ring_episode_windows",
    "ring_init",
    "ring_insert",
    "ring_sample_indices",
    "ring_windows",
    "sample_indices",
    "valid_mask",
]
