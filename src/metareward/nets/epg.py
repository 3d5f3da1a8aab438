"""EPG's learned loss ``L_phi`` and the agent's memory unit.

Houthooft et al., "Evolved Policy Gradients" (NeurIPS 2018), section 3.3 and Figure 2,
sizes from section 4.1:

* :class:`EPGLoss` -- temporal convolutions over the agent's last ``N`` steps of
  experience give a context vector ``f_context``; a dense net scores each of the ``M`` most
  recent steps from that step's inputs and the context; the loss is the mean of those
  scores. Inputs per step (built by :mod:`metareward.algos.epg`): normalised observation,
  action, termination ``d``, the memory output ``mem``, the policy's distribution
  ``pi(.|s)`` (mean and log-std) and, when configured, the normalised reward.
* :class:`MemoryUnit` -- 32 tanh units with a constant input, trained with the policy by
  SGD in the inner loop, read by the loss only (never by the policy).

Sizes (:data:`LOSS_ARCHS`): ``"paper"`` is section 4.1 (conv k8 s7 -> 8 channels, conv k4
s2 -> 8 channels, both leaky ReLU, flattened into a fully connected layer of 32; dense
part: 16 hidden units, leaky ReLU, one output); ``"code"`` is the authors' code (conv k6
s5 -> 16, conv k4 s2 -> 32, mean over time, linear 32; ``openai/EPG``). The paper does
not say whether the 32-unit layer has an activation; here it has a leaky ReLU in
``"paper"`` and none in ``"code"`` (a linear layer there).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

#: name -> (conv layers as (kernel, stride, channels), pooling, context size, dense hidden).
LOSS_ARCHS: dict[str, dict] = {
    "paper": {"conv": ((8, 7, 8), (4, 2, 8)), "pool": "flatten", "context": 32, "hidden": 16},
    "code": {"conv": ((6, 5, 16), (4, 2, 32)), "pool": "mean", "context": 32, "hidden": 16},
}


def min_input_length(conv: Sequence[tuple[int, int, int]]) -> int:
    """The fewest time steps ``conv`` layers (``(kernel, stride, channels)``, no padding)
    take: each layer needs at least its kernel, the last one output step.

    Args:
      conv: the layers, first to last.

    Returns:
      The smallest input length with at least one output step (29 for ``"paper"``, 21
      for ``"code"``).
    """
    need = 1
    for k, s, _ in reversed(conv):
        need = (need - 1) * s + k
    return need


def conv_output_length(length: int, conv: Sequence[tuple[int, int, int]]) -> int:
    """Time steps left after ``conv`` layers (``(kernel, stride, channels)``, no padding)
    on ``length`` steps; fails with the smallest length that fits when it is too short.

    Args:
      length: time steps of the input.
      conv: the layers, first to last.

    Returns:
      The time steps of the last layer's output.

    Raises:
      ValueError: when ``length`` is shorter than :func:`min_input_length`.
    """
    if length < min_input_length(conv):
        raise ValueError(f"a buffer of {length} steps is too short for the loss's temporal "
                         f"convolutions: they need at least {min_input_length(conv)} steps")
    for k, s, _ in conv:
        length = (length - k) // s + 1
    return length


class EPGLoss(nn.Module):
    """``L_phi``: scores the ``recent`` newest of ``N`` steps of experience.

    Call ``(x [N, F], recent) -> [recent]``: ``x`` the per-step inputs, oldest first; the
    output is the per-step loss of steps ``N - recent .. N - 1`` (the caller averages
    them: Figure 2's loss for a batch of ``M`` sequential samples).

    Attributes: ``conv`` ``(kernel, stride, channels)`` per temporal-conv layer, ``pool``
    (``"flatten"``: the conv output flattened into the context layer; ``"mean"``: its mean
    over time), ``context`` size of ``f_context``, ``hidden`` units of the dense part,
    ``context_activation`` (leaky ReLU on ``f_context`` or not).
    """

    conv: Sequence[tuple[int, int, int]] = LOSS_ARCHS["paper"]["conv"]
    pool: str = "flatten"
    context: int = 32
    hidden: int = 16
    context_activation: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, recent: int) -> jax.Array:
        if x.ndim != 2:
            raise ValueError(f"EPGLoss expects inputs [N, F], got shape {x.shape}")
        if not 0 < recent <= x.shape[0]:
            raise ValueError(f"recent={recent} must be in [1, N={x.shape[0]}]")
        conv_output_length(x.shape[0], self.conv)
        h = x[None]  # [1, N, F]: one sequence
        for k, s, c in self.conv:
            h = nn.leaky_relu(nn.Conv(c, (k,), strides=(s,), padding="VALID")(h))
        h = h[0]
        h = h.reshape(-1) if self.pool == "flatten" else jnp.mean(h, axis=0)
        ctx = nn.Dense(self.context, name="context")(h)
        if self.context_activation:
            ctx = nn.leaky_relu(ctx)
        steps = x[-recent:]
        z = jnp.concatenate([steps, jnp.broadcast_to(ctx, (recent, self.context))], axis=-1)
        z = nn.leaky_relu(nn.Dense(self.hidden, name="hidden")(z))
        return nn.Dense(1, name="out")(z)[:, 0]


def make_loss(arch: str = "paper") -> EPGLoss:
    """The loss net of a named architecture (:data:`LOSS_ARCHS`).

    Args:
      arch: a key of :data:`LOSS_ARCHS` (``"paper"`` or ``"code"``).

    Returns:
      The :class:`EPGLoss` module.

    Raises:
      ValueError: for an unknown ``arch``.
    """
    if arch not in LOSS_ARCHS:
        raise ValueError(f"unknown EPG loss architecture {arch!r}; allowed: {list(LOSS_ARCHS)}")
    a = LOSS_ARCHS[arch]
    return EPGLoss(tuple(a["conv"]), a["pool"], a["context"], a["hidden"],
                   context_activation=arch == "paper")


class MemoryUnit(nn.Module):
    """EPG's memory (section 3.3): ``size`` tanh units on a constant input of 1, i.e.
    ``mem = tanh(W 1 + b)``; trained by the inner loop's SGD with the policy, fed to the
    loss only. Call ``() -> [size]``."""

    size: int = 32

    @nn.compact
    def __call__(self) -> jax.Array:
        return jnp.tanh(nn.Dense(self.size)(jnp.ones((1,), jnp.float32)))


__all__ = ["LOSS_ARCHS", "EPGLoss", "MemoryUnit", "conv_output_length", "make_loss",
           "min_input_length"]
