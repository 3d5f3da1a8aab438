"""MetaGenRL's neural objective ``L_alpha(tau, x(phi), V)`` as a flax.linen module.

Kirsch, van Steenkiste & Schmidhuber, "Improving Generalization in Meta Reinforcement
Learning using Learned Objectives" (ICLR 2020), section 3.2, Figure 2 and Appendix
B.1 (eq. 7); sizes and details the paper leaves open from the authors' code
(``louiskirsch/metagenrl``).

:class:`ObjectiveLSTM` scores each step ``t`` of a batch of ``B`` windows of ``W`` steps:

* action embedding (eq. 7): a shared MLP applied to each action dimension ``j``'s pair
  ``[a_t_j, pi_phi(s_t)_j]`` (a convolution with kernel 1 and stride 1 over the action
  axis), then the mean over ``j``: independent of the action dimensionality ``A`` and
  invariant to permuting the action dimensions;
* input embedding of ``[z(r_t), t / T, z(V_{t+1} (1 - d_t)), z(V_t)]`` with ``z`` a
  z-score over the valid entries of the whole batch; ``V`` enters under
  ``stop_gradient`` (section 3.2, footnote 3: the value estimates are constant inputs,
  so no gradient reaches the critic through ``L_alpha``);
* an LSTM that runs backward in time (B.1: "runs backwards in time") over the
  concatenation of both embeddings, so step ``t``'s output depends on steps ``>= t``;
* an MLP head to a scalar ``x``, bounded as ``l_t = eta * tanh(x / eta)`` (B.1: "bounded
  between -eta and eta using a scaled tanh"; the code's ``tanh(x * 1e-3) / 1e-3``).

The objective of a window is ``sum_t l_t`` (:meth:`ObjectiveLSTM.objective_sum`); the
policy follows ``grad_phi`` of it, and gradients reach ``phi`` only through
``policy_action`` (B.1: "We only allow gradients to flow backwards through pi_phi(s_t)").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from metareward.nets.policies import orthogonal
from metareward.nets.rewards import scan_lstm


def relu_square(x: jax.Array) -> jax.Array:
    """The authors' mixed activation (B.1: "ReLU activations for half of the units and
    square activations for the other half"): ReLU on the first ``ceil(n / 2)`` of the
    ``n`` features of the last axis, square on the rest.

    Args:
        x: Pre-activations ``[..., n]``.

    Returns:
        The activations ``[..., n]``.
    """
    k = (x.shape[-1] + 1) // 2
    return jnp.concatenate([nn.relu(x[..., :k]), jnp.square(x[..., k:])], axis=-1)


def masked_zscore(x: jax.Array, mask: jax.Array, eps: float = 1e-8) -> jax.Array:
    """``(x - mean) / sqrt(var + eps)`` with mean and (biased) variance over the entries
    where ``mask`` is nonzero, across all axes (the whole batch); masked entries of the
    result are 0. ``x`` and ``mask`` have the same shape; with no valid entry the result
    is all zeros.

    Args:
        x: The values.
        mask: Nonzero at the valid entries, ``x``'s shape.
        eps: Added to the variance.

    Returns:
        The standardised values, ``x``'s shape.
    """
    valid = mask != 0
    x = jnp.where(valid, x, 0.0)
    n = jnp.maximum(jnp.sum(valid), 1).astype(x.dtype)
    mean = jnp.sum(x) / n
    var = jnp.sum(jnp.where(valid, jnp.square(x - mean), 0.0)) / n
    return jnp.where(valid, (x - mean) * jax.lax.rsqrt(var + eps), 0.0)


def _dense_stack(
    x: jax.Array, widths: Sequence[int], layer_norm: bool, name: str
) -> jax.Array:
    """``Dense -> relu_square [-> LayerNorm]`` per width (the authors' ``mlp``: activation,
    then layer norm). Must be called from inside a compact method."""
    for i, w in enumerate(widths):
        x = relu_square(nn.Dense(w, name=f"{name}_dense{i}")(x))
        if layer_norm:
            x = nn.LayerNorm(name=f"{name}_ln{i}")(x)
    return x


class _MaskedLSTMStep(nn.Module):
    """One LSTM step; at a masked step (``valid == 0``) the outgoing carry is zero, so the
    carry that reaches the next (earlier) valid step is the initial zero state."""

    features: int

    @nn.compact
    def __call__(
        self, carry: tuple[jax.Array, jax.Array], inputs: tuple[jax.Array, jax.Array]
    ) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        x, valid = inputs  # [B, F], [B] bool
        # flax's default recurrent init, drawn vmap-safely (metareward.nets.orthogonal)
        cell = nn.OptimizedLSTMCell(self.features, recurrent_kernel_init=orthogonal(),
                                    name="cell")
        new_carry, h = cell(carry, x)
        keep = valid[:, None]
        new_carry = jax.tree.map(lambda c: jnp.where(keep, c, 0.0), new_carry)
        return new_carry, h


def _positive_int(label: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{label} must be a positive integer, got {value!r}")


class ObjectiveLSTM(nn.Module):
    """MetaGenRL's ``L_alpha``: per-step objective values of ``B`` windows of ``W`` steps.

    Call (all float32; ``A`` any action dimension, the same parameters serve every ``A``)::

        apply(params, reward, value, next_value, time, action, policy_action, mask)
            -> per_step [B, W]

    * ``reward`` ``[B, W]``: ``r_t``;
    * ``value`` ``[B, W]``: ``V_t = Q(s_t, pi(s_t))``;
    * ``next_value`` ``[B, W]``: ``V_{t+1} (1 - done_t)`` (prepared by the caller);
    * ``time`` ``[B, W]``: ``t / T`` in ``[0, 1]`` (B.1: 0 at the start of the episode, 1
      at its final transition);
    * ``action`` ``[B, W, A]``: ``a_t`` from the replay buffer;
    * ``policy_action`` ``[B, W, A]``: ``pi_phi(s_t)``, the only input through which
      gradients reach the policy;
    * ``mask`` ``[B, W]``: 1 for valid steps, 0 for steps after the episode ended inside
      the window.

    ``per_step[b, t]`` is ``l_t`` in ``(-bound, bound)`` at valid steps and exactly 0 at
    masked steps; it depends only on valid steps ``>= t`` of window ``b`` and, through the
    z-scores, on the batch's statistics of reward and values. Inputs at masked steps are
    replaced by 0 before use (so even NaN padding there is harmless) and leave the batch
    statistics alone. ``value`` and ``next_value`` pass through ``jax.lax.stop_gradient``:
    their gradient is exactly 0. Use :meth:`objective_sum` for ``sum_t l_t`` per window
    (``apply(..., method="objective_sum") -> [B]``).

    Architecture (defaults = the authors' configuration; activations ``relu_square``:
    half ReLU, half square units, as B.1 recommends and the code uses everywhere):

    * action embedding: per action dimension ``j``, ``[a_t_j, pi_phi(s_t)_j]`` (2) ->
      ``action_embed`` layers of ``Dense -> relu_square -> LayerNorm`` (3 x 32), then the
      mean over ``j`` -> ``[B, W, 32]``;
    * input embedding: ``[z(r_t), t / T, z(next_value), z(V_t)]`` (4) -> ``embed_hidden``
      layers of ``Dense -> relu_square`` (32, 32; no LayerNorm, as the code's
      ``obj_func_input_transform_layernorm=False``) -> linear ``Dense(embed_out)`` (8);
      each ``z`` is :func:`masked_zscore` (eps ``zscore_eps``) over the valid entries of
      the batch, reward, value and next value separately;
    * an LSTM (flax ``OptimizedLSTMCell``, ``lstm_size`` = 32 units, zero initial state)
      run backward in time, ``t = W-1 .. 0``, over the 40-d concatenation; at masked steps
      the carry it passes on is reset to zero;
    * head: ``head_hidden`` layers of ``Dense -> relu_square -> LayerNorm`` (32, 32) ->
      ``Dense(1)`` = ``x``; ``l_t = bound * tanh(x / bound)`` (``bound`` = eta = 1000).

    Ablations (section 5.2.2): ``use_time=False`` drops ``t / T``; ``use_value=False``
    drops ``V_t`` and ``V_{t+1}``; ``use_next_value=False`` drops ``V_{t+1}`` only. A dropped
    input is replaced by a zero column (after z-scoring), so parameter shapes do not
    depend on the flags.

    With the defaults the module has 15,497 parameters (action embedding 2,400; input
    embedding 1,480; LSTM 9,344; head 2,273), the paper's "15K" (section 3.3).
    """

    lstm_size: int = 32
    action_embed: Sequence[int] = (32, 32, 32)
    embed_hidden: Sequence[int] = (32, 32)
    embed_out: int = 8
    head_hidden: Sequence[int] = (32, 32)
    bound: float = 1000.0
    use_time: bool = True
    use_value: bool = True
    use_next_value: bool = True
    zscore_eps: float = 1e-8

    def _check_fields(self) -> None:
        _positive_int("lstm_size", self.lstm_size)
        _positive_int("embed_out", self.embed_out)
        if not self.action_embed:
            raise ValueError("action_embed is empty; allowed: at least one layer, e.g. (32,)")
        for label, widths in (("action_embed", self.action_embed),
                              ("embed_hidden", self.embed_hidden),
                              ("head_hidden", self.head_hidden)):
            for w in widths:
                _positive_int(f"{label} entry", w)
        if not isinstance(self.bound, jax.core.Tracer) and not (
                self.bound > 0 and math.isfinite(self.bound)):
            raise ValueError(f"bound must be a positive finite number, got {self.bound!r}")
        if not self.zscore_eps > 0:
            raise ValueError(f"zscore_eps must be positive, got {self.zscore_eps!r}")

    @nn.compact
    def __call__(
        self,
        reward: jax.Array,
        value: jax.Array,
        next_value: jax.Array,
        time: jax.Array,
        action: jax.Array,
        policy_action: jax.Array,
        mask: jax.Array,
    ) -> jax.Array:
        self._check_fields()
        check_objective_inputs(reward, value, next_value, time, action, policy_action, mask)
        # float32 unless the policy's actions are wider (float64 under jax_enable_x64).
        f32 = jnp.promote_types(jnp.asarray(policy_action).dtype, jnp.float32)
        valid = jnp.asarray(mask) != 0  # [B, W]

        def clean(x: jax.Array) -> jax.Array:  # zero (and NaN-free) at masked steps
            x = jnp.asarray(x, f32)
            keep = valid if x.ndim == 2 else valid[..., None]
            return jnp.where(keep, x, 0.0)

        reward, time = clean(reward), clean(time)
        value = clean(jax.lax.stop_gradient(value))
        next_value = clean(jax.lax.stop_gradient(next_value))
        action, policy_action = clean(action), clean(policy_action)

        # Action embedding (eq. 7): the same MLP on every action dimension's pair.
        pairs = jnp.stack([action, policy_action], axis=-1)  # [B, W, A, 2]
        act = _dense_stack(pairs, self.action_embed, True, "action_embed")
        act = jnp.mean(act, axis=-2)  # [B, W, action_embed[-1]]

        # Input embedding of [z(r), t, z(V_{t+1}), z(V_t)].
        zero = jnp.zeros_like(reward)
        z_r = masked_zscore(reward, valid, self.zscore_eps)
        z_next = masked_zscore(next_value, valid, self.zscore_eps)
        z_v = masked_zscore(value, valid, self.zscore_eps)
        cols = [
            z_r,
            time if self.use_time else zero,
            z_next if self.use_value and self.use_next_value else zero,
            z_v if self.use_value else zero,
        ]
        other = _dense_stack(jnp.stack(cols, axis=-1), self.embed_hidden, False, "input_embed")
        other = nn.Dense(self.embed_out, name="input_embed_out")(other)  # [B, W, embed_out]

        # Backward-in-time LSTM over the concatenated embeddings.
        x = jnp.concatenate([act, other], axis=-1)
        h = scan_lstm(_MaskedLSTMStep, self.lstm_size, x, valid, axis=1, reverse=True,
                      name="lstm")  # [B, W, lstm]

        # Bounded scalar head.
        h = _dense_stack(h, self.head_hidden, True, "head")
        out = nn.Dense(1, name="head_out")(h)[..., 0]
        out = self.bound * jnp.tanh(out / self.bound)
        return jnp.where(valid, out, 0.0)

    def objective_sum(self, *inputs: jax.Array) -> jax.Array:
        """``sum_t l_t`` over the valid steps of each window -> ``[B]``.

        Args:
            *inputs: ``(reward, value, next_value, time, action, policy_action, mask)``,
                as ``__call__`` takes them.

        Returns:
            ``[B]``; masked steps contribute exactly 0.
        """
        return jnp.sum(self(*inputs), 1)


def check_objective_inputs(
    reward: jax.Array,
    value: jax.Array,
    next_value: jax.Array,
    time: jax.Array,
    action: jax.Array,
    policy_action: jax.Array,
    mask: jax.Array,
) -> tuple[int, int, int]:
    """Checks the shapes of :class:`ObjectiveLSTM`'s inputs (``B, W, A >= 1``).

    Args:
        reward: ``[B, W]``.
        value: ``[B, W]``.
        next_value: ``[B, W]``.
        time: ``[B, W]``.
        action: ``[B, W, A]``.
        policy_action: ``[B, W, A]``.
        mask: ``[B, W]``.

    Returns:
        ``(B, W, A)``.

    Raises:
        ValueError: Naming the offending shapes.
    """
    shape = jnp.shape(reward)
    if len(shape) != 2:
        raise ValueError(f"reward must be [B, W], got shape {shape}")
    if 0 in shape:
        raise ValueError(f"reward must be [B, W] with B, W >= 1, got shape {shape}")
    for label, x in (("value", value), ("next_value", next_value), ("time", time),
                     ("mask", mask)):
        if jnp.shape(x) != shape:
            raise ValueError(
                f"{label} must have reward's shape [B, W] = {shape}, got {jnp.shape(x)}")
    a_shape = jnp.shape(action)
    if len(a_shape) != 3 or a_shape[:2] != shape or a_shape[2] == 0:
        raise ValueError(
            f"action must be [B, W, A] with [B, W] = {shape} (reward's shape) and A >= 1, "
            f"got shape {a_shape}")
    if jnp.shape(policy_action) != a_shape:
        raise ValueError(f"policy_action must have action's shape [B, W, A] = {a_shape}, "
                         f"got {jnp.shape(policy_action)}")
    return shape[0], shape[1], a_shape[2]


__all__ = ["ObjectiveLSTM", "check_objective_inputs", "masked_zscore", "relu_square"]
