"""Conditional Layer Normalization and the networks of the CLN bilevel method.

Zhang, Stadie & Ba, "Learning Intrinsic Rewards as a Bi-Level Optimization Problem"
(2020), section 3.3. A policy ``pi_{theta, eta}`` is
conditioned on the last-layer weights ``eta`` of an intrinsic reward ``r_{phi, eta}``
through layer normalisation whose gain and bias are affine images of ``eta`` (eqs. 18-20);
the affine maps are the Self-Tuning-Network best-response function ``w*_phi(eta)``
(eq. 13) and train with the policy.

* :class:`ConditionalLayerNorm` -- eqs. 18-20, usable in any flax module.
* :class:`CLNMLP`, :class:`CLNGaussianPolicy`, :class:`CLNCategoricalPolicy`,
  :func:`make_cln_policy` -- an MLP policy whose chosen hidden layers are CLN layers.
* :class:`RewardBody` and :func:`reward_head` -- the intrinsic reward split into its body
  ``phi`` (features) and its last layer ``eta`` (a flat vector, so that perturbations
  ``eta + eps`` and conditioning are plain array arithmetic).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from metareward.nets.distributions import Categorical, DiagGaussian, TanhGaussian
from metareward.nets.policies import MLP, activation, orthogonal


class ConditionalLayerNorm(nn.Module):
    """Conditional Layer Normalization (Zhang, Stadie & Ba, eqs. 18-20)::

        CLN(a | c) = f[ g / sigma (a - mu) + b ],   g = sigmoid(f_c(c)),   b = h_c(c)

    ``mu, sigma``: mean and standard deviation of ``a`` over its last (feature) axis, as in
    layer norm (Ba et al. 2016); ``f_c, h_c``: affine maps (``Dense``) of the conditioning
    vector ``c`` (the paper's ``eta``, the intrinsic reward's last layer); the gain lies in
    ``(0, 1)`` (the paper's sigmoid gate "stabilizes training"). Unlike layer norm there
    are no free gain and bias parameters: ``c`` provides them.

    Choices the paper leaves open: ``sigma = sqrt(var + epsilon)``; ``f_c`` and ``h_c``
    kernels start at ``N(0, kernel_std^2)`` (0.01, the Self-Tuning Networks' hypernet
    init), biases at 0, so the initial gain is about 1/2 and the initial bias about 0.

    Call: ``(x [..., H], cond [..., C], index=None, tile=False) -> [..., H]``. Batch axes
    of ``x`` and ``cond`` broadcast. When many samples share few conditioning vectors
    ``cond [M, C]``, gain and bias can be computed once per row of ``cond`` and then
    spread over the samples, either

    * by ``index`` (int array of ``x``'s batch shape): sample ``j`` uses ``cond[index[j]]``
      (a gather; its gradient a scatter-add), or
    * by ``tile=True`` (``x [k * M, H]``): sample ``j`` uses ``cond[j % M]``, the layout of
      a ``[k, M]`` batch flattened row-major (a broadcast and reshape; its gradient a sum
      over ``k``, much cheaper on a CPU than a scatter-add).

    The gain is sown into the ``"intermediates"`` collection
    (``apply(..., mutable=["intermediates"])``).
    """

    epsilon: float = 1e-6
    kernel_std: float = 0.01
    activation: Callable[[jax.Array], jax.Array] | None = None

    @nn.compact
    def __call__(
        self, x: jax.Array, cond: jax.Array, index: jax.Array | None = None,
        tile: bool = False,
    ) -> jax.Array:
        features = x.shape[-1]
        if tile and (index is not None or x.ndim != 2 or cond.ndim != 2
                     or x.shape[0] % cond.shape[0]):
            raise ValueError(
                f"tile=True needs x [k * M, H] and cond [M, C] and no index; got x "
                f"{x.shape}, cond {cond.shape}, index {'given' if index is not None else None}")
        init = nn.initializers.normal(self.kernel_std)
        gain = nn.sigmoid(nn.Dense(features, kernel_init=init, name="f_c")(cond))  # eq. 19
        bias = nn.Dense(features, kernel_init=init, name="h_c")(cond)  # eq. 20
        self.sow("intermediates", "gain", gain)  # no-op unless that collection is mutable
        if index is not None:
            gain, bias = gain[index], bias[index]
        elif tile:
            reps = x.shape[0] // cond.shape[0]
            gain = jnp.broadcast_to(gain, (reps, *gain.shape)).reshape(x.shape)
            bias = jnp.broadcast_to(bias, (reps, *bias.shape)).reshape(x.shape)
        mu = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
        y = gain * (x - mu) * jax.lax.rsqrt(var + self.epsilon) + bias  # eq. 18
        return y if self.activation is None else self.activation(y)


def cln_layer_indices(cln_layers: Sequence[int], num_hidden: int) -> tuple[int, ...]:
    """``cln_layers`` as non-negative indices into ``num_hidden`` hidden layers (negative
    ones count from the end, as in Python); fails naming the bad index.

    Args:
        cln_layers: Indices of the conditioned hidden layers.
        num_hidden: The number of hidden layers.

    Returns:
        The indices in ``[0, num_hidden)``, sorted.

    Raises:
        ValueError: For an index that is not an int in ``[-num_hidden, num_hidden)``, a
            layer named twice, or an empty ``cln_layers``.
    """
    out = []
    for i in cln_layers:
        if not isinstance(i, int) or isinstance(i, bool) or not -num_hidden <= i < num_hidden:
            raise ValueError(
                f"cln_layers entry {i!r} is invalid; allowed: an int in "
                f"[{-num_hidden}, {num_hidden - 1}] (the policy has {num_hidden} hidden layers)"
            )
        out.append(i % num_hidden)
    if len(set(out)) != len(out):
        raise ValueError(f"cln_layers={tuple(cln_layers)!r} names a layer twice")
    if not out:
        raise ValueError("cln_layers is empty; allowed: at least one hidden layer, e.g. (-1,)")
    return tuple(sorted(out))


class CLNMLP(nn.Module):
    """MLP torso whose hidden layers in ``cln_layers`` are ``Dense -> CLN -> activation``
    (conditioned on ``cond``) and the others ``Dense -> activation``. The paper applies CLN
    to the final hidden layer only (``cln_layers=(-1,)``, "sufficient" for its problems).
    Dense kernels orthogonal(sqrt 2), zero biases, as :class:`metareward.nets.MLP`."""

    hidden: Sequence[int] = (64, 64)
    activation: str = "tanh"
    cln_layers: Sequence[int] = (-1,)

    @nn.compact
    def __call__(
        self, x: jax.Array, cond: jax.Array, index: jax.Array | None = None,
        tile: bool = False,
    ) -> jax.Array:
        act = activation(self.activation)
        layers = cln_layer_indices(self.cln_layers, len(self.hidden))
        for i, h in enumerate(self.hidden):
            x = nn.Dense(h, kernel_init=orthogonal(math.sqrt(2.0)))(x)
            if i in layers:
                x = ConditionalLayerNorm(name=f"cln_{i}")(x, cond, index, tile)
            x = act(x)
        return x


class CLNGaussianPolicy(nn.Module):
    """Gaussian policy ``pi_{theta, eta}(a | s)`` on a :class:`CLNMLP` torso, with a
    state-independent log-std (as :class:`metareward.nets.GaussianPolicy`; the log-std is
    not conditioned). ``__call__(obs, cond, index=None, tile=False)``."""

    action_dim: int
    hidden: Sequence[int] = (64, 64)
    activation: str = "tanh"
    cln_layers: Sequence[int] = (-1,)
    squash: bool = False
    log_std_init: float = 0.0

    @nn.compact
    def __call__(
        self, obs: jax.Array, cond: jax.Array, index: jax.Array | None = None,
        tile: bool = False,
    ) -> DiagGaussian:
        x = CLNMLP(self.hidden, self.activation, self.cln_layers)(obs, cond, index, tile)
        mean = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01))(x)
        log_std = self.param(
            "log_std", nn.initializers.constant(self.log_std_init), (self.action_dim,)
        )
        cls = TanhGaussian if self.squash else DiagGaussian
        return cls(mean, jnp.broadcast_to(log_std, mean.shape))


class CLNCategoricalPolicy(nn.Module):
    """Softmax policy on a :class:`CLNMLP` torso.
    ``__call__(obs, cond, index=None, tile=False)``."""

    num_actions: int
    hidden: Sequence[int] = (64, 64)
    activation: str = "tanh"
    cln_layers: Sequence[int] = (-1,)

    @nn.compact
    def __call__(
        self, obs: jax.Array, cond: jax.Array, index: jax.Array | None = None,
        tile: bool = False,
    ) -> Categorical:
        x = CLNMLP(self.hidden, self.activation, self.cln_layers)(obs, cond, index, tile)
        return Categorical(nn.Dense(self.num_actions, kernel_init=orthogonal(0.01))(x))


def make_cln_policy(
    discrete: bool,
    action_size: int,
    hidden: Sequence[int] = (64, 64),
    activation: str = "tanh",
    cln_layers: Sequence[int] = (-1,),
    squash: bool = False,
    log_std_init: float = 0.0,
) -> nn.Module:
    """The CLN-conditioned policy for an action space (categorical if ``discrete``).

    Args:
        discrete: Categorical policy if true, else Gaussian.
        action_size: Number of discrete actions, or the action dimension.
        hidden: Hidden layer sizes.
        activation: Name of the hidden activation (a key of ``ACTIVATIONS``).
        cln_layers: Which hidden layers are conditioned (negative indices count from the
            end).
        squash: Gaussian only: a tanh-squashed Gaussian.
        log_std_init: Gaussian only: the initial state-independent log-std.

    Returns:
        A :class:`CLNCategoricalPolicy` or :class:`CLNGaussianPolicy`.

    Raises:
        ValueError: For bad ``cln_layers`` (:func:`cln_layer_indices`) or ``squash``
            with discrete actions.
    """
    cln_layer_indices(cln_layers, len(hidden))  # fail early, before any init
    if discrete:
        if squash:
            raise ValueError("squash=True needs continuous actions; this env is discrete")
        return CLNCategoricalPolicy(action_size, tuple(hidden), activation, tuple(cln_layers))
    return CLNGaussianPolicy(action_size, tuple(hidden), activation, tuple(cln_layers), squash,
                             log_std_init)


class RewardBody(nn.Module):
    """The body ``phi`` of the intrinsic reward ``r_{phi, eta}(s, a)``: an MLP on
    ``concat(obs, action)`` (continuous actions) or on ``obs`` (discrete; the head then
    has one output per action, as LIRPG's). Returns features ``[..., hidden[-1]]``."""

    discrete: bool
    hidden: Sequence[int] = (64, 64)
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = obs if self.discrete else jnp.concatenate([obs, action], axis=-1)
        return MLP(tuple(self.hidden), self.activation)(x)


class ValueHeads(nn.Module):
    """``outputs`` state values on one MLP torso -> ``[..., outputs]`` (CLN's intrinsic
    and extrinsic values share a torso: one network's cost in every minibatch step).
    Hidden layers as :class:`metareward.nets.MLP`; each head its own ``Dense(1)``
    (``head_i``), orthogonal(1), zero bias. Separate heads rather than one ``Dense(outputs)``:
    on a CPU XLA runs a one-column matmul as a matrix-vector product, and two of those
    forward and backward cost ~20% less than one two-column matmul for a 64x64 critic at
    minibatch 256 (about 7 ms in 320 minibatch steps, single core)."""

    hidden: Sequence[int] = (64, 64)
    activation: str = "tanh"
    outputs: int = 2

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = MLP(tuple(self.hidden), self.activation)(obs)
        heads = [nn.Dense(1, kernel_init=orthogonal(1.0), name=f"head_{i}")(x)
                 for i in range(self.outputs)]
        return jnp.concatenate(heads, axis=-1)


def reward_head_size(num_features: int, discrete: bool, action_size: int) -> int:
    """Length of the flat last-layer vector ``eta``: ``(features + 1) * outputs``.

    Args:
        num_features: ``F``, the number of features.
        discrete: Whether the action space is discrete (``action_size`` outputs, else 1).
        action_size: The number of discrete actions.

    Returns:
        ``(num_features + 1) * outputs``.
    """
    outputs = action_size if discrete else 1
    return (num_features + 1) * outputs


def init_reward_head(key: jax.Array, num_features: int, discrete: bool,
                     action_size: int) -> jax.Array:
    """``eta`` at initialisation: orthogonal(1) kernel, zero bias (as LIRPG's head).

    Args:
        key: PRNG key of the kernel.
        num_features: ``F``, the number of features.
        discrete: Whether the action space is discrete (``action_size`` outputs, else 1).
        action_size: The number of discrete actions.

    Returns:
        ``eta`` ``[(F + 1) * O]``, float32.
    """
    outputs = action_size if discrete else 1
    kernel = orthogonal(1.0)(key, (num_features, outputs), jnp.float32)
    return jnp.concatenate([kernel.reshape(-1), jnp.zeros((outputs,), jnp.float32)])


def reward_design(features: jax.Array, action: jax.Array, *, discrete: bool,
                  action_size: int) -> jax.Array:
    """``Phi(s, a) [..., D]`` with ``r_{phi, eta}(s, a) = Phi(s, a) . eta``: the last layer
    is linear in ``eta = [W.ravel(), b]`` (``W [F, O]`` row-major, ``b [O]``). Continuous
    actions (``O = 1``): ``Phi = [features, 1]``. Discrete (``O = action_size``, the taken
    action's output): ``Phi = [features (x) onehot(a), onehot(a)]``.

    Args:
        features: The features ``[..., F]``.
        action: The taken actions ``[...]`` (ints; read only when ``discrete``).
        discrete: Whether the action space is discrete.
        action_size: The number of discrete actions.

    Returns:
        ``Phi`` ``[..., (F + 1) * O]``.
    """
    if not discrete:
        return jnp.concatenate([features, jnp.ones((*features.shape[:-1], 1), features.dtype)],
                               axis=-1)
    onehot = jax.nn.one_hot(action, action_size, dtype=features.dtype)
    outer = features[..., :, None] * onehot[..., None, :]
    return jnp.concatenate([outer.reshape((*features.shape[:-1], -1)), onehot], axis=-1)


def reward_head(
    features: jax.Array,
    eta: jax.Array,
    action: jax.Array,
    *,
    discrete: bool,
    action_size: int,
) -> jax.Array:
    """The last layer ``r = features . W + b`` with ``eta = [W.ravel(), b]``
    (:func:`reward_design` dotted with ``eta``).

    The output is unbounded: CLN's regulariser (eq. 21) sets its scale.

    Args:
        features: The features ``[..., F]``.
        eta: The head ``[..., (F + 1) * O]``, whose batch axes broadcast with the
            features' (e.g. one perturbed ``eta + eps`` per env column).
        action: The taken actions ``[...]`` (read only when ``discrete``: the taken
            action's output is returned).
        discrete: Whether the action space is discrete (``O = action_size``; else
            ``O = 1``).
        action_size: The number of discrete actions.

    Returns:
        The rewards ``[...]``.

    Raises:
        ValueError: If ``eta``'s last axis is not ``(F + 1) * O``.
    """
    num_features = features.shape[-1]
    outputs = action_size if discrete else 1
    if eta.shape[-1] != (num_features + 1) * outputs:
        raise ValueError(
            f"eta has {eta.shape[-1]} entries; a head on {num_features} features with "
            f"{outputs} output(s) needs {(num_features + 1) * outputs}"
        )
    phi = reward_design(features, action, discrete=discrete, action_size=action_size)
    return jnp.sum(phi * eta, axis=-1)


__all__ = [
    "CLNMLP",
    "CLNCategoricalPolicy",
    "CLNGaussianPolicy",
    "ConditionalLayerNorm",
    "RewardBody",
    "ValueHeads",
    "cln_layer_indices",
    "init_reward_head",
    "make_cln_policy",
    "reward_design",
    "reward_head",
    "reward_head_size",
]
