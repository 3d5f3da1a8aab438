"""Learned reward networks (flax.linen), used through pure ``init``/``apply``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from metareward.nets.policies import MLP, orthogonal


class IntrinsicReward(nn.Module):
    """LIRPG's intrinsic reward ``r_eta(s, a)`` (Zheng, Oh & Singh 2018; the authors'
    ``MlpPolicyIntrinsicReward`` / ``CnnPolicyIntrinsicReward``), bounded by
    ``bound * tanh``.

    Continuous actions: an MLP on ``concat(obs, action)`` with one output. Discrete
    actions: an MLP on ``obs`` with one output per action, of which the taken action's is
    returned. Hidden layers orthogonal(sqrt 2), output orthogonal(1), zero biases (as
    baselines' ``fc``).

    ``__call__(obs [..., obs_dim], action [..., action_dim] or int [...]) -> [...]``.
    """

    discrete: bool
    action_size: int
    hidden: Sequence[int] = (64, 64)
    activation: str = "tanh"
    bound: float = 1.0

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        if self.discrete:
            x = MLP(tuple(self.hidden), self.activation)(obs)
            r = nn.Dense(self.action_size, kernel_init=orthogonal(1.0))(x)
            r = jnp.take_along_axis(r, action[..., None].astype(jnp.int32), axis=-1)[..., 0]
        else:
            x = MLP(tuple(self.hidden), self.activation)(jnp.concatenate([obs, action], -1))
            r = nn.Dense(1, kernel_init=orthogonal(1.0))(x)[..., 0]
        return self.bound * jnp.tanh(r)


# --- TARE's learned-reward architectures ---------------------------------------------------
#
# TARE (Taming Reward for policy gradient, "implicit reward learning"): section B.3, Figure 7
# and Appendix F ("Various architectures used for reward parameterization"); Table 1 gives
# LSTM hidden size 32 and output bound b = 20. All five modules share one time-major call:
#
#     module.apply(params, obs, action, reward, t, done) -> r_phi        # [T, *B]
#
# obs [T, *B, obs_dim]; action [T, *B, action_size] (continuous) or int [T, *B] (discrete,
# one-hot encoded inside); reward [T, *B] (already normalised by the caller, as the paper
# does); t [T, *B] (time step within the episode, scaled by the caller); done [T, *B] (1.0
# where the transition ends an episode; only the recurrent variants read it). *B is zero or
# more batch axes. The output is ``bound * tanh(Dense(1)(features))`` in (-bound, bound).
#
# Choices where the paper is silent (documented once here):
# - Every hidden fully connected layer is Dense -> LayerNorm -> ReLU (Appendix F: "use ReLU
#   activation and orthogonal initialisation, we also use layer normalisation"), kernel
#   orthogonal(sqrt 2), zero bias, all of width ``hidden``; that includes the two layers of
#   mlp-concat and the two layers that replace the LSTM in mlp-mul.
# - The LSTMs' inputs get no extra LayerNorm: lstm-f / lstm-b read the raw concatenation
#   [s, a, r, t] (Appendix F: "concatenated together and then fed into a two-layer LSTM"),
#   lstm-b-mul reads E1 * E2, whose factors already end in LayerNorm -> ReLU. LSTM cells are
#   flax's ``OptimizedLSTMCell`` with its default init (LeCun-normal input kernels,
#   orthogonal recurrent kernels, zero biases); lstm-b-mul has one LSTM layer (B.3: "an LSTM"),
#   lstm-f / lstm-b two (Appendix F).
# - Output layer: Dense(1) with orthogonal(1 / bound) kernel and zero bias, so the initial
#   pre-tanh value is O(1 / bound) and the initial r_phi ~ bound * tanh(z / bound) ~ z is of
#   unit scale (like the normalised extrinsic reward) rather than near +-bound.
# - With zero biases at init, LayerNorm after the first Dense of the 2-d [r, t] input makes
#   E2 depend only on the direction of (r, t) until the biases move; kept as specified.


def _dense_block(x: jax.Array, width: int, name: str) -> jax.Array:
    """One hidden fully connected layer: Dense(orthogonal sqrt 2, zero bias) -> LayerNorm
    -> ReLU. Must be called from inside a compact method (the submodules bind there)."""
    x = nn.Dense(
        width,
        kernel_init=orthogonal(math.sqrt(2.0)),
        bias_init=nn.initializers.zeros,
        name=f"{name}_dense",
    )(x)
    return nn.relu(nn.LayerNorm(name=f"{name}_ln")(x))


class DenseLNStack(nn.Module):
    """``num_layers`` x (Dense -> LayerNorm -> ReLU), width ``width`` (TARE Appendix F:
    ReLU, orthogonal init, layer normalisation)."""

    width: int
    num_layers: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_layers):
            x = _dense_block(x, self.width, f"layer{i}")
        return x


class BoundedHead(nn.Module):
    """``bound * tanh(Dense(1)(x))[..., 0]``; kernel orthogonal(1 / bound), zero bias."""

    bound: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        z = nn.Dense(1, kernel_init=orthogonal(1.0 / self.bound), bias_init=nn.initializers.zeros)(
            x
        )
        return self.bound * jnp.tanh(z[..., 0])


class _MaskedLSTMStep(nn.Module):
    """One LSTM step whose incoming carry is multiplied by ``keep`` (0 drops it)."""

    features: int

    @nn.compact
    def __call__(
        self, carry: tuple[jax.Array, jax.Array], inputs: tuple[jax.Array, jax.Array]
    ) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        x, keep = inputs
        carry = jax.tree.map(lambda c: c * keep[..., None], carry)
        # flax's default recurrent init, drawn vmap-safely (metareward.nets.orthogonal)
        cell = nn.OptimizedLSTMCell(self.features, recurrent_kernel_init=orthogonal(),
                                    name="cell")
        return cell(carry, x)


def scan_lstm(
    step: type[nn.Module], features: int, x: jax.Array, mask: jax.Array, *, axis: int,
    reverse: bool, name: str,
) -> jax.Array:
    """An LSTM layer as ``nn.scan`` of ``step`` over ``axis`` of ``x`` from a zero carry;
    call it inside a compact module (its parameters are that module's ``name``).

    Args:
        step: The step module, ``step(features)(carry, (x_t, mask_t)) -> (carry, h_t)``
            (how the mask acts on the carry is the step's).
        features: The LSTM's hidden size.
        x: Inputs ``[..., F]`` with the time axis at ``axis``.
        mask: The per-step mask, ``x``'s shape without its last axis.
        axis: The time axis (0: time-major).
        reverse: Run from the last step to the first.
        name: The scan's parameter scope.

    Returns:
        The hidden states, ``x``'s shape with ``features`` last.
    """
    scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False},
                   in_axes=axis, out_axes=axis, reverse=reverse)
    batch = x.shape[:axis] + x.shape[axis + 1 : -1]
    zeros = jnp.zeros((*batch, features), x.dtype)
    return scan(features, name=name)((zeros, zeros), (x, mask))[1]


class EpisodicLSTM(nn.Module):
    """A time-major LSTM layer (``jax.lax.scan`` through ``nn.scan``) that never carries
    state across an episode boundary.

    ``__call__(x [T, *B, F], done [T, *B]) -> h [T, *B, features]``. Forward
    (``backward=False``): the carry entering step t is zero when ``done[t-1] = 1``, and at
    t = 0. Backward (``backward=True``, TARE's choice, section B.3): the scan runs from
    t = T-1 down to 0 and the carry entering step t (coming from t+1) is zero when
    ``done[t] = 1``, and at t = T-1. So a segment gives the same outputs as its episode
    pieces run separately.
    """

    features: int
    backward: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, done: jax.Array) -> jax.Array:
        done = done.astype(x.dtype)
        if self.backward:
            reset = done
        else:
            reset = jnp.concatenate([jnp.zeros_like(done[:1]), done[:-1]], axis=0)
        keep = 1.0 - reset
        return scan_lstm(_MaskedLSTMStep, self.features, x, keep, axis=0,
                         reverse=self.backward, name="scan")


def _check_sizes(action_size: int, hidden: int, lstm_hidden: int, bound: float) -> None:
    for label, value in (
        ("action_size", action_size),
        ("hidden", hidden),
        ("lstm_hidden", lstm_hidden),
    ):
        if int(value) != value or value <= 0:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    if not isinstance(bound, jax.core.Tracer) and (not bound > 0 or not math.isfinite(bound)):
        raise ValueError(f"bound must be a positive finite number, got {bound!r}")


def _prepare(
    discrete: bool,
    action_size: int,
    obs: jax.Array,
    action: jax.Array,
    reward: jax.Array,
    t: jax.Array,
    done: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Checks shapes; returns ``[s, a]`` [T, *B, obs_dim + action_size], ``[r, t]``
    [T, *B, 2] and ``done`` [T, *B], all in obs's float dtype."""
    obs = jnp.asarray(obs)
    dtype = obs.dtype if jnp.issubdtype(obs.dtype, jnp.floating) else jnp.float32
    obs = obs.astype(dtype)
    lead = obs.shape[:-1]
    if obs.ndim < 2:
        raise ValueError(f"obs must be [T, *B, obs_dim], got shape {obs.shape}")
    for label, x in (("reward", reward), ("t", t), ("done", done)):
        if jnp.shape(x) != lead:
            raise ValueError(f"{label} must have shape {lead} (obs.shape[:-1]), got {jnp.shape(x)}")
    action = jnp.asarray(action)
    if discrete:
        if action.shape != lead:
            raise ValueError(f"discrete action must have shape {lead}, got {action.shape}")
        a = jax.nn.one_hot(action, action_size, dtype=dtype)
    else:
        if action.shape != (*lead, action_size):
            raise ValueError(
                f"continuous action must have shape {(*lead, action_size)}, got {action.shape}"
            )
        a = action.astype(dtype)
    sa = jnp.concatenate([obs, a], axis=-1)
    rt = jnp.stack([jnp.asarray(reward, dtype), jnp.asarray(t, dtype)], axis=-1)
    return sa, rt, jnp.asarray(done, dtype)


class _RewardNetBase(nn.Module):
    """Fields and the call shared by TARE's reward nets (see the comment block above).

    Not a net by itself: each subclass defines ``features(sa, rt, done) -> [T, *B, width]``,
    the torso between the prepared inputs (``[s, a]``, ``[r, t]``, ``done``) and the
    bounded head."""

    discrete: bool
    action_size: int
    hidden: int = 64
    lstm_hidden: int = 32
    bound: float = 20.0

    @nn.compact
    def __call__(
        self, obs: jax.Array, action: jax.Array, reward: jax.Array, t: jax.Array, done: jax.Array
    ) -> jax.Array:
        _check_sizes(self.action_size, self.hidden, self.lstm_hidden, self.bound)
        sa, rt, done = _prepare(self.discrete, self.action_size, obs, action, reward, t, done)
        return BoundedHead(self.bound, name="head")(self.features(sa, rt, done))


class MLPConcatReward(_RewardNetBase):
    """TARE's MLPConcat (Appendix F): ``[s, a, r, t]`` -> 2 x (Dense -> LayerNorm -> ReLU)
    -> ``bound * tanh(Dense(1))``. Per step: ignores ``done`` and time order.

    ``__call__(obs, action, reward, t, done) -> [T, *B]``.
    """

    def features(self, sa: jax.Array, rt: jax.Array, done: jax.Array) -> jax.Array:
        """The torso: 2 x (Dense -> LayerNorm -> ReLU) of ``[s, a, r, t]``.

        Args:
            sa: ``[T, *B, obs_dim + action_size]`` state-action inputs ``[s, a]``.
            rt: ``[T, *B, 2]`` extrinsic reward and time ``[r, t]``.
            done: ``[T, *B]`` episode-end flags (ignored).

        Returns:
            ``[T, *B, hidden]`` features for the bounded head.
        """
        return DenseLNStack(self.hidden, 2, name="torso")(jnp.concatenate([sa, rt], axis=-1))


class MLPMulReward(_RewardNetBase):
    """TARE's MLPMul (Appendix F): E1 = 2 x (Dense -> LayerNorm -> ReLU) of ``[s, a]``,
    E2 = the same of ``[r, t]``, ``h = E1 * E2`` elementwise (the multiplicative
    interaction of section B.3 / Figure 7), then two fully connected layers in place of the
    LSTM -> ``bound * tanh(Dense(1))``. Per step: ignores ``done`` and time order.

    ``__call__(obs, action, reward, t, done) -> [T, *B]``.
    """

    def features(self, sa: jax.Array, rt: jax.Array, done: jax.Array) -> jax.Array:
        """The torso: the two embeddings multiplied, then 2 x (Dense -> LayerNorm -> ReLU).

        Args:
            sa: ``[T, *B, obs_dim + action_size]`` state-action inputs ``[s, a]``.
            rt: ``[T, *B, 2]`` extrinsic reward and time ``[r, t]``.
            done: ``[T, *B]`` episode-end flags (ignored).

        Returns:
            ``[T, *B, hidden]`` features for the bounded head.
        """
        h = DenseLNStack(self.hidden, 2, name="sa_embed")(sa)
        h = h * DenseLNStack(self.hidden, 2, name="rt_embed")(rt)
        return DenseLNStack(self.hidden, 2, name="torso")(h)


class LSTMConcatReward(_RewardNetBase):
    """TARE's LSTMf / LSTMb (Appendix F): ``[s, a, r, t]`` -> ``num_layers`` stacked
    :class:`EpisodicLSTM` layers (hidden ``lstm_hidden``; Table 1: 32) running forward
    (LSTMf) or backward (LSTMb) in time -> ``bound * tanh(Dense(1))``.

    The recurrence never crosses an episode boundary (``done``, see :class:`EpisodicLSTM`);
    each segment starts (forward) / ends (backward) from a zero carry.
    ``__call__(obs, action, reward, t, done) -> [T, *B]``.
    """

    backward: bool = False
    num_layers: int = 2

    def features(self, sa: jax.Array, rt: jax.Array, done: jax.Array) -> jax.Array:
        """The torso: ``num_layers`` :class:`EpisodicLSTM` layers over ``[s, a, r, t]``.

        Args:
            sa: ``[T, *B, obs_dim + action_size]`` state-action inputs ``[s, a]``.
            rt: ``[T, *B, 2]`` extrinsic reward and time ``[r, t]``.
            done: ``[T, *B]`` episode-end flags; the recurrence restarts at episode boundaries.

        Returns:
            ``[T, *B, lstm_hidden]`` features for the bounded head.
        """
        h = jnp.concatenate([sa, rt], axis=-1)
        for i in range(self.num_layers):
            h = EpisodicLSTM(self.lstm_hidden, self.backward, name=f"lstm{i}")(h, done)
        return h


class LSTMMulReward(_RewardNetBase):
    """TARE's LSTMbMul, the paper's default (section B.3, Figure 7, Appendix F):
    E1 = 2 x (Dense -> LayerNorm -> ReLU) of ``[s, a]``, E2 = the same of ``[r, t]``,
    ``E1 * E2`` elementwise -> ``num_layers`` :class:`EpisodicLSTM` layer(s) (hidden
    ``lstm_hidden``; Table 1: 32) running backward in time (``backward=True``) ->
    ``bound * tanh(Dense(1))`` (Table 1: b = 20).

    Running backward lets r_phi at step t see the extrinsic rewards that follow it in the
    episode (credit assignment); the carry is zeroed where ``done[t] = 1`` so it never
    crosses an episode boundary. ``__call__(obs, action, reward, t, done) -> [T, *B]``.
    """

    backward: bool = True
    num_layers: int = 1

    def features(self, sa: jax.Array, rt: jax.Array, done: jax.Array) -> jax.Array:
        """The torso: the embeddings multiplied, then ``num_layers`` :class:`EpisodicLSTM` layers.

        Args:
            sa: ``[T, *B, obs_dim + action_size]`` state-action inputs ``[s, a]``.
            rt: ``[T, *B, 2]`` extrinsic reward and time ``[r, t]``.
            done: ``[T, *B]`` episode-end flags; the recurrence restarts at episode boundaries.

        Returns:
            ``[T, *B, lstm_hidden]`` features for the bounded head.
        """
        h = DenseLNStack(self.hidden, 2, name="sa_embed")(sa)
        h = h * DenseLNStack(self.hidden, 2, name="rt_embed")(rt)
        for i in range(self.num_layers):
            h = EpisodicLSTM(self.lstm_hidden, self.backward, name=f"lstm{i}")(h, done)
        return h


class PerStep(nn.Module):
    """A per-step reward ``net(obs, action) -> [...]`` (LIRPG's signature, any flax module)
    called with TARE's time-major signature ``(obs, action, reward, t, done) -> [T, *B]``,
    ignoring ``reward``, ``t`` and ``done``: one reward module then serves LIRPG
    (``lirpg.make_train(..., reward_net=net)``) and TARE
    (``tare.make_train(..., reward_net=PerStep(net))``).

    Discrete actions arrive as integer indices, as LIRPG passes them; the wrapped
    module's parameters sit under ``"net"``.
    """

    net: nn.Module

    def __call__(
        self, obs: jax.Array, action: jax.Array, reward: jax.Array, t: jax.Array, done: jax.Array
    ) -> jax.Array:
        return self.net(obs, action)


REWARD_NETS: tuple[str, ...] = ("mlp-concat", "mlp-mul", "lstm-f", "lstm-b", "lstm-b-mul")


def make_reward_net(
    name: str = "lstm-b-mul",
    *,
    discrete: bool,
    action_size: int,
    hidden: int = 64,
    lstm_hidden: int = 32,
    bound: float = 20.0,
) -> nn.Module:
    """Builds one of TARE's reward parameterisations (Appendix F) by name.

    Defaults follow TARE's Table 1 (LSTM hidden 32, bound b = 20) and its
    64-wide fully connected layers. Every module is called as
    ``apply(params, obs, action, reward, t, done) -> r_phi [T, *B]`` (time-major).

    Args:
        name: One of :data:`REWARD_NETS`: ``"mlp-concat"`` (MLPConcat), ``"mlp-mul"``
            (MLPMul), ``"lstm-f"`` (LSTMf), ``"lstm-b"`` (LSTMb), ``"lstm-b-mul"``
            (LSTMbMul, the paper's default).
        discrete: Whether the env's actions are discrete.
        action_size: The number of discrete actions, or the action dimension.
        hidden: Width of the fully connected layers.
        lstm_hidden: Hidden size of the LSTM.
        bound: The output bound ``b``: ``r_phi = b * tanh(...)`` lies in ``(-b, b)``.

    Returns:
        The flax module.

    Raises:
        ValueError: For an unknown ``name``, a size that is not a positive integer, or
            a ``bound`` that is not positive and finite.
    """
    if name not in REWARD_NETS:
        raise ValueError(f"unknown reward net {name!r}; allowed: {list(REWARD_NETS)}")
    _check_sizes(action_size, hidden, lstm_hidden, bound)
    kw = dict(
        discrete=bool(discrete),
        action_size=int(action_size),
        hidden=int(hidden),
        lstm_hidden=int(lstm_hidden),
        bound=bound if isinstance(bound, jax.core.Tracer) else float(bound),
    )
    if name == "mlp-concat":
        return MLPConcatReward(**kw)
    if name == "mlp-mul":
        return MLPMulReward(**kw)
    if name == "lstm-f":
        return LSTMConcatReward(**kw, backward=False, num_layers=2)
    if name == "lstm-b":
        return LSTMConcatReward(**kw, backward=True, num_layers=2)
    return LSTMMulReward(**kw, backward=True, num_layers=1)


__all__ = [
    "REWARD_NETS",
    "BoundedHead",
    "DenseLNStack",
    "EpisodicLSTM",
    "IntrinsicReward",
    "LSTMConcatReward",
    "LSTMMulReward",
    "MLPConcatReward",
    "MLPMulReward",
    "PerStep",
    "make_reward_net",
    "scan_lstm",
]
