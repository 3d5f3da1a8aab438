"""AWR: advantage-weighted regression (Peng, Kumar, Zhang & Levine 2019).

"Advantage-Weighted Regression: Simple and Scalable Off-Policy Reinforcement Learning",
arXiv:1910.00177, Algorithm 1, as the TARE paper uses it (eq. 4 and Appendix F:
policy and value nets
64x64 ReLU, SGD with momentum, other settings from the authors' code). One ``update``:

1. collect ``num_envs x num_steps`` transitions with the current policy and append them
   to a replay buffer of the most recent ``buffer_size`` transitions
   (:mod:`metareward.rl.replay`);
2. compute TD(lambda) targets ``R^lambda`` over the whole buffer with the current value
   function, then take ``value_steps`` minibatch SGD-momentum steps on
   ``0.5 E[(V(s) - R^lambda)^2]`` (Algorithm 1, value step);
3. recompute the targets with the updated ``V``, advantages ``A = R^lambda - V(s)``,
   weights ``w = min(exp(A / beta), w_max)``
   (:func:`metareward.rl.losses.awr_weights`), then ``policy_steps`` minibatch
   SGD-momentum steps on ``-E[w log pi(a|s)]`` (Algorithm 1, policy step; TARE eq. 4;
   :func:`metareward.rl.losses.awr_policy_loss`).

Details from the authors' code (``xbpeng/awr``), not spelled out in the paper:

* ``learning/awr_agent.py``: value steps first, then policy steps, each iteration;
  TD(lambda) returns of every stored path with the current ``V``
  (``_compute_batch_new_vals``; here :func:`metareward.rl.gae.gae`'s ``adv + V``, the
  same numbers, a terminal failure bootstrapping from 0 and a time limit from
  ``V(final_obs)``); the values recomputed after the value steps; advantages normalised
  over the buffer, ``(A - mean) / (std + 1e-5)`` (``_calc_adv``,
  ``normalize_advantages``); ``exp(A / temp)`` clipped at ``weight_clip=20``, ``temp=1``;
  ``td_lambda=0.95``, ``discount=0.99``; critic SGD lr 0.01, actor lr 5e-5 (2.5e-5 to
  1e-4 by env: :data:`MUJOCO_ACTOR`), momentum 0.9 (TensorFlow's ``MomentumOptimizer``
  = ``optax.sgd(lr, momentum)``), minibatches of 256;
  the action-bound penalty ``10 * 0.5 E[sum_i (min(mu_i - lo_i, 0)^2 +
  max(mu_i - hi_i, 0)^2)]`` on the Gaussian mean (``actor_bound_loss_weight``,
  ``action_bound_coef``); the critic's output in normalised units, ``V = net(s) / (1 -
  gamma)`` and its loss ``0.5 E[(net(s) - R^lambda (1 - gamma))^2]`` (``val_norm``,
  ``value_scale``).
* ``learning/rl_agent.py``: a *fixed* action std (``action_std``, 0.2 or 0.4 in
  ``awr_configs.py``, by env: :data:`MUJOCO_ACTOR`; the log-std is a non-trainable
  variable); here ``log_std`` starts at ``log(action_std)`` and gets no gradient unless
  ``learn_std``. The observation normaliser is updated only during the first
  ``normalizer_samples`` samples, then frozen.
* ``awr_configs.py``: 2048 samples per iteration, a buffer of 50000 transitions, 200
  critic and 1000 actor steps per iteration.

Where this differs: the authors' rollouts are whole episodes of one env and their
minibatches walk through a shuffled buffer; here ``num_envs`` envs step in lock-step
for ``num_steps`` (episodes continue across updates, the unfinished ends of the newest
rows bootstrap from ``V(final_obs)``) and minibatch entries are drawn uniformly, with
replacement, from the valid part of the buffer (:func:`metareward.rl.replay.sample_indices`).
Hidden layers are 64x64 ReLU (TARE, Appendix F) rather than the authors' 128x64.
Optional global-norm gradient clipping (``max_grad_norm``; the authors have none).

Usage::

    env = metareward.envs.make("pendulum")
    trainer = awr.make_train(awr.preset("pendulum"), env)
    state, metrics = jax.jit(jax.vmap(trainer.train))(jax.random.split(key, 4))
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from brax.envs.base import Env, State
from flax import struct
from jax.flatten_util import ravel_pytree

from metareward.algos import common, onpolicy
from metareward.algos import config as cfg
from metareward.aliases import Metrics, Params
from metareward.envs.spec import EnvSpec
from metareward.envs.wrappers import VmapWrapper
from metareward.nets.policies import ValueNet, make_policy
from metareward.rl import replay
from metareward.rl.gae import td_lambda_targets
from metareward.rl.grads import clipped_step
from metareward.rl.losses import action_bound_penalty, awr_policy_loss, awr_weights
from metareward.rl.normalize import RunningStats
from metareward.rl.replay import ReplayBuffer
from metareward.rl.rollout import episode_metrics, rollout, sampler
from metareward.rl.stats import masked_mean_std


@dataclasses.dataclass(frozen=True)
class Config:
    """AWR hyperparameters. Defaults: the authors' MuJoCo settings (``awr_configs.py``,
    ``awr_agent.py``; the actor step size and action std of their Ant and Humanoid) with
    TARE's 64x64 ReLU nets; see the module docstring for where each comes from and
    :data:`PRESETS` for the per-env MuJoCo actor settings and tuned small-env settings.

    ``buffer_size`` is in transitions (the buffer holds ``buffer_size // num_envs`` rows
    of ``num_envs``); ``value_steps`` and ``policy_steps`` are minibatch gradient steps
    per update (per ``num_envs * num_steps`` new transitions). ``value_scale=None`` means
    ``1 / (1 - gamma)``. ``normalizer_samples=None`` never freezes the observation
    normaliser.
    """

    num_envs: int = 1
    num_steps: int = 2048
    total_steps: int = 1_000_000
    buffer_size: int = 50_000
    value_steps: int = 200
    policy_steps: int = 1000
    value_batch_size: int = 256
    policy_batch_size: int = 256
    value_learning_rate: float = 0.01
    policy_learning_rate: float = 5e-5
    momentum: float = 0.9
    gamma: float = 0.99
    td_lambda: float = 0.95
    temperature: float = 1.0
    weight_clip: float = 20.0
    normalize_advantages: bool = True
    action_std: float = 0.2
    learn_std: bool = False
    action_bound_coef: float = 10.0
    value_scale: float | None = None
    max_grad_norm: float | None = None
    normalize_obs: bool = True
    normalizer_samples: int | None = 300_000
    reward_scale: float = 1.0
    hidden: tuple[int, ...] = (64, 64)
    #: The value network's hidden layers; ``None``: the same as ``hidden`` (the paper's).
    value_hidden: tuple[int, ...] | None = None
    activation: str = "relu"

    def __post_init__(self) -> None:
        for name in (
            "num_envs",
            "num_steps",
            "total_steps",
            "buffer_size",
            "value_steps",
            "policy_steps",
            "value_batch_size",
            "policy_batch_size",
        ):
            cfg.positive_int(name, getattr(self, name))
        cfg.positive("value_learning_rate", self.value_learning_rate)
        cfg.positive("policy_learning_rate", self.policy_learning_rate)
        cfg.in_range("momentum", self.momentum, 0.0, 1.0, hi_open=True)
        cfg.in_range("gamma", self.gamma, 0.0, 1.0)
        cfg.in_range("td_lambda", self.td_lambda, 0.0, 1.0)
        cfg.positive("temperature", self.temperature)
        cfg.positive("weight_clip", self.weight_clip)
        cfg.positive("action_std", self.action_std)
        cfg.non_negative("action_bound_coef", self.action_bound_coef)
        if self.value_scale is None:
            cfg.check("gamma", self.gamma, self.gamma < 1.0,
                      "a number in [0, 1) when value_scale is None (1 / (1 - gamma))")
        else:
            cfg.positive("value_scale", self.value_scale)
        if self.max_grad_norm is not None:
            cfg.positive("max_grad_norm", self.max_grad_norm)
        if self.normalizer_samples is not None:
            cfg.positive_int("normalizer_samples", self.normalizer_samples)
        cfg.positive("reward_scale", self.reward_scale)
        cfg.hidden_sizes("hidden", self.hidden)
        cfg.activation_name("activation", self.activation)
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if self.value_hidden is not None:
            cfg.hidden_sizes("value_hidden", self.value_hidden)
            object.__setattr__(self, "value_hidden", tuple(self.value_hidden))
        rollout_size = self.num_envs * self.num_steps
        cfg.check("buffer_size", self.buffer_size, self.buffer_size >= rollout_size,
                  f"an int >= num_envs * num_steps = {rollout_size} (one rollout)")

    @property
    def value_layers(self) -> tuple[int, ...]:
        """The value network's hidden layer sizes: ``value_hidden``, else ``hidden``."""
        return self.hidden if self.value_hidden is None else self.value_hidden


#: The authors' per-env actor settings for MuJoCo (``xbpeng/awr`` ``awr_configs.py``:
#: ``actor_stepsize`` and the fixed ``action_std``; every other entry there is the same
#: for all five envs and is :class:`Config`'s default). Swimmer has no entry there and
#: keeps the defaults. AWR-TARE's MuJoCo presets take the same two numbers
#: (:data:`metareward.algos.tare.AWR_PRESETS`; TARE, Appendix E: AWR's other
#: hyperparameters follow the AWR code).
MUJOCO_ACTOR: dict[str, dict[str, float]] = {
    "walker2d": dict(policy_learning_rate=2.5e-5, action_std=0.4),
    "hopper": dict(policy_learning_rate=1e-4, action_std=0.4),
    "halfcheetah": dict(policy_learning_rate=5e-5, action_std=0.4),
    "ant": dict(policy_learning_rate=5e-5, action_std=0.2),
    "humanoid": dict(policy_learning_rate=5e-5, action_std=0.2),
}

#: Settings tuned for the small gymnax envs (used by the tests and the quick start), and
#: the authors' MuJoCo settings (:data:`MUJOCO_ACTOR`).
PRESETS: dict[str, Config] = {
    # Pendulum: budget 200k env steps (~98 updates of 16 envs x 128 steps); the authors'
    # lambda, clip, temperature, std and critic lr, with gamma 0.95 (as our PPO preset),
    # a 20k-transition buffer, 100 critic and 400 actor steps per update, actor lr 1e-3.
    # Mean stochastic evaluation return about -190 per seed (tests/test_awr.py).
    "pendulum": Config(
        num_envs=16,
        num_steps=128,
        total_steps=200_000,
        buffer_size=20_480,
        value_steps=100,
        policy_steps=400,
        value_learning_rate=0.01,
        policy_learning_rate=1e-3,
        gamma=0.95,
    ),
    **{env: Config(**actor) for env, actor in MUJOCO_ACTOR.items()},
}


preset = cfg.preset_function(PRESETS, Config, "awr")


class Parts(NamedTuple):
    """The static parts of AWR bound to a config and an env, built once by
    :func:`make_parts` and passed to every stage (nothing here is traced state).

    ``venv`` is the env batched with ``config.num_envs``; ``policy_opt`` and
    ``value_opt`` the SGD-momentum optimisers of the flattened parameter vectors;
    ``value_scale`` the critic's output scale (``1 / (1 - gamma)`` by default);
    ``flatten_obs`` and ``prep`` flatten (and ``prep`` also normalises) observations;
    ``action_low``/``action_high`` the action box (``None`` for discrete actions);
    ``num_rows`` the buffer's rows of ``num_envs`` transitions; ``num_updates`` the
    updates of a run.
    """

    config: Config
    spec: EnvSpec
    venv: Env
    policy: nn.Module
    value: nn.Module
    policy_opt: optax.GradientTransformation
    value_opt: optax.GradientTransformation
    value_scale: float | jax.Array
    flatten_obs: Callable[[jax.Array], jax.Array]
    prep: Callable[[RunningStats, jax.Array], jax.Array]
    action_low: jax.Array | None
    action_high: jax.Array | None
    num_rows: int
    num_updates: int


@struct.dataclass
class AwrState(common.LearnerState):
    """Everything AWR carries between updates (a pytree).

    ``params = {"policy": ..., "value": ...}``; ``opt_state = {"policy": ..., "value":
    ...}``, the SGD-momentum state of each net's flattened parameter vector (keyed as
    ``params``); ``buffer`` the replay buffer of :class:`metareward.rl.replay.Row`
    (``time`` unset); ``obs_stats`` the observation normaliser; ``nonfinite`` counts
    gradient steps skipped because the loss or gradient was not finite.
    """

    obs_stats: RunningStats
    buffer: ReplayBuffer


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer(common.LearnerBase):
    """AWR bound to a config and an env; all functions pure and jittable
    (``init / update / train / act / evaluate``: the
    :class:`~metareward.algos.registry.Learner` protocol; ``policy`` and ``value`` the
    nets). The stages are module functions of :class:`Parts` (:func:`make_parts`)."""

    policy: nn.Module
    value: nn.Module


def make_parts(config: Config, env: Env) -> Parts:
    """Validates ``config`` against ``env`` and builds AWR's static parts.

    Args:
        config: AWR hyperparameters.
        env: A single env (``metareward.envs.make``); batched here with
            ``config.num_envs``.

    Returns:
        The :class:`Parts` every stage takes.

    Raises:
        TypeError: ``config`` is not an AWR :class:`Config`, or ``env`` is not a single
            metareward env.
        ValueError: ``total_steps`` is less than one rollout.
    """
    if not isinstance(config, Config):
        raise TypeError(f"expected metareward.algos.awr.Config, got {type(config).__name__}")
    spec = onpolicy.check_env(env)
    N = config.num_envs
    _, num_updates = common.run_length(config)
    discrete = spec.discrete
    policy = make_policy(discrete, spec.action_size, config.hidden, config.activation,
                         False, cfg.log(config.action_std))
    value = ValueNet(config.value_layers, config.activation)
    value_scale = critic_scale(config)
    flatten_obs, prep = onpolicy.obs_preprocessor(spec, config.normalize_obs)
    a_low = a_high = None
    if not discrete:
        a_low = jnp.asarray(spec.action_low or (-1.0,) * spec.action_size, jnp.float32)
        a_high = jnp.asarray(spec.action_high or (1.0,) * spec.action_size, jnp.float32)
    return Parts(
        config=config, spec=spec, venv=VmapWrapper(env, N), policy=policy, value=value,
        policy_opt=optax.sgd(config.policy_learning_rate, momentum=config.momentum),
        value_opt=optax.sgd(config.value_learning_rate, momentum=config.momentum),
        value_scale=value_scale, flatten_obs=flatten_obs, prep=prep, action_low=a_low,
        action_high=a_high, num_rows=config.buffer_size // N, num_updates=num_updates,
    )


def init(parts: Parts, key: jax.Array) -> AwrState:
    """AWR, Algorithm 1, lines 1-2: a random policy (and value function) and an empty
    replay buffer ``D``.

    Args:
        parts: The static parts (:func:`make_parts`).
        key: PRNG key.

    Returns:
        The initial :class:`AwrState` (env reset, normaliser empty).
    """
    k_pi, k_v, k_env, key = jax.random.split(key, 4)
    params = common.actor_critic_params(parts.policy, parts.value, parts.spec, k_pi, k_v)
    return AwrState(
        params=params,
        opt_state={"policy": parts.policy_opt.init(ravel_pytree(params["policy"])[0]),
                   "value": parts.value_opt.init(ravel_pytree(params["value"])[0])},
        buffer=replay.init(replay.Row.example(parts.spec, parts.config.num_envs), parts.num_rows),
        **common.run_start(parts.spec, parts.venv, k_env, key),
    )


#: Env actions of the current policy (:func:`metareward.algos.common.act_with_policy`).
act = common.act_with_policy


def collect(
    parts: Parts, state: AwrState, key: jax.Array
) -> tuple[State, Any, RunningStats, ReplayBuffer]:
    """AWR, Algorithm 1, line 4: add trajectories sampled with the current policy to the
    replay buffer ``D`` (``num_envs x num_steps`` transitions; the oldest drop out).

    The observation normaliser is updated with the new observations while
    ``env_steps < normalizer_samples`` (the authors' normaliser, then frozen).

    Args:
        parts: The static parts.
        state: The train state.
        key: PRNG key of the rollout.

    Returns:
        ``(env_state, traj, obs_stats, buffer)``: the envs after the rollout, the
        rollout (:func:`metareward.rl.rollout.rollout`), the updated normaliser and the
        buffer with the new rows (:class:`metareward.rl.replay.Row`).
    """
    config, params, stats = parts.config, state.params, state.obs_stats

    policy_act = sampler(lambda obs: parts.policy.apply(params["policy"], parts.prep(stats, obs)))
    env_state, traj = rollout(parts.venv, state.env_state, policy_act, key, config.num_steps)
    obs_flat = parts.flatten_obs(traj.obs).astype(jnp.float32)
    if config.normalize_obs:
        stats = stats.update_until(obs_flat, state.env_steps, config.normalizer_samples)
    rows = replay.Row.from_rollout(traj, parts.flatten_obs, config.reward_scale)
    return env_state, traj, stats, replay.insert(state.buffer, rows)


def values_and_targets(
    parts: Parts, value_params: Params, obs_n: jax.Array, next_n: jax.Array, data: replay.Row
) -> tuple[jax.Array, jax.Array]:
    """``V(s)`` and the TD(lambda) targets ``R^lambda``
    (:func:`metareward.rl.gae.td_lambda_targets`) of every buffer entry, from normalised
    observations.

    Args:
        parts: The static parts.
        value_params: The value net's parameters.
        obs_n: Normalised ``s`` of the buffer, ``[L, N, obs]``.
        next_n: Normalised ``s'`` of the buffer, ``[L, N, obs]``.
        data: The buffer's rows (rewards and flags ``[L, N]``).

    Returns:
        ``(V(s), R^lambda)``, both ``[L, N]``, in reward units (``value_scale * net``).
    """
    config = parts.config
    v = parts.value_scale * parts.value.apply(value_params, obs_n)
    nv = parts.value_scale * parts.value.apply(value_params, next_n)
    tgt = td_lambda_targets(data.reward, v, nv, data.done, data.truncation,
                            config.gamma, config.td_lambda)
    return v, tgt


def value_targets(
    parts: Parts, params: Params, obs_stats: RunningStats, buffer: ReplayBuffer
) -> tuple[jax.Array, jax.Array]:
    """:func:`values_and_targets` of a whole buffer from raw observations.

    Args:
        parts: The static parts.
        params: ``{"policy": ..., "value": ...}`` (``value`` is read).
        obs_stats: The observation normaliser.
        buffer: The replay buffer.

    Returns:
        ``(V(s), R^lambda)``, both ``[L, N]`` (entries outside
        :func:`metareward.rl.replay.valid_mask` are meaningless).
    """
    d = buffer.data
    return values_and_targets(parts, params["value"], parts.prep(obs_stats, d.obs),
                              parts.prep(obs_stats, d.next_obs), d)


def value_loss(
    parts: Parts, value_params: Params, obs: jax.Array, target: jax.Array
) -> tuple[jax.Array, Metrics]:
    """The value regression loss (AWR, Algorithm 1, line 5), in normalised units as the
    authors' ``val_norm``: ``0.5 E[(net(s) - R^lambda / value_scale)^2]``.

    Args:
        parts: The static parts.
        value_params: The value net's parameters.
        obs: Normalised observations, ``[B, obs]``.
        target: ``R^lambda``, ``[B]``.

    Returns:
        ``(loss, {"value_loss": loss})``.
    """
    out = parts.value.apply(value_params, obs)
    loss = 0.5 * jnp.mean(jnp.square(out - target / parts.value_scale))
    return loss, {"value_loss": loss}


def critic_scale(config: Config) -> float | jax.Array:
    """The critic's output scale: ``config.value_scale``, or ``1 / (1 - gamma)`` when it
    is ``None`` (the authors' value normalisation: the net predicts ``(1 - gamma) V``).

    Args:
        config: The AWR config (``value_scale``, ``gamma``).

    Returns:
        The scale the critic's output is multiplied by (a float, or a JAX value when
        the field is swept).
    """
    return 1.0 / (1.0 - config.gamma) if config.value_scale is None else config.value_scale


def freeze_std(parts: Parts, policy_params: Params) -> Params:
    """The policy parameters with the log-std cut from the gradient (the authors' fixed
    action std), unless the actions are discrete or ``config.learn_std``.

    Args:
        parts: The parts of a learner on AWR's config (AWR's, or AWR-TARE's): reads
            ``parts.spec.discrete`` and ``parts.config.learn_std``.
        policy_params: The Gaussian policy's parameters (``{"params": {..., "log_std"}}``).

    Returns:
        The same parameters, ``log_std`` under ``stop_gradient`` where it is fixed.
    """
    if parts.spec.discrete or parts.config.learn_std:
        return policy_params
    inner = dict(policy_params["params"])
    inner["log_std"] = jax.lax.stop_gradient(inner["log_std"])
    return {**policy_params, "params": inner}


def policy_loss(
    parts: Parts, policy_params: Params, obs: jax.Array, action: jax.Array, weight: jax.Array
) -> tuple[jax.Array, Metrics]:
    """The advantage-weighted regression loss (AWR, Algorithm 1, line 6; TARE eq. 4):
    ``-E[w log pi(a|s)]`` (:func:`metareward.rl.losses.awr_policy_loss`), plus, for
    continuous actions, ``action_bound_coef`` times the authors' action-bound penalty
    (:func:`metareward.rl.losses.action_bound_penalty`).

    Args:
        parts: The static parts.
        policy_params: The policy's parameters.
        obs: Normalised observations, ``[B, obs]``.
        action: Stored (policy-space) actions, ``[B, ...]``.
        weight: ``w = min(exp(A / beta), w_max)``, ``[B]``.

    Returns:
        ``(loss, aux)`` with ``policy_loss``, ``entropy`` and (continuous)
        ``bound_loss``.
    """
    dist = parts.policy.apply(freeze_std(parts, policy_params), obs)
    loss = awr_policy_loss(dist.log_prob(action), weight)
    aux = {"policy_loss": loss, "entropy": jnp.mean(dist.entropy())}
    if not parts.spec.discrete:
        bound = action_bound_penalty(dist.mean, parts.action_low, parts.action_high)
        loss = loss + parts.config.action_bound_coef * bound
        aux["bound_loss"] = bound
    return loss, aux


def sgd_step(
    parts: Parts,
    loss_fn: Callable[..., tuple[jax.Array, Metrics]],
    optimizer: optax.GradientTransformation,
    unravel: Callable[[jax.Array], Params],
    carry: tuple[jax.Array, optax.OptState, jax.Array],
    batch: tuple[jax.Array, ...],
) -> tuple[tuple[jax.Array, optax.OptState, jax.Array], Metrics]:
    """One minibatch step on a flat parameter vector (:func:`metareward.rl.grads.
    clipped_step`): a non-finite loss or gradient keeps the parameters and is counted.

    Args:
        parts: The static parts (``config.max_grad_norm`` is read).
        loss_fn: ``loss_fn(params, *batch) -> (loss, aux)``.
        optimizer: The optimiser of this net.
        unravel: Flat vector -> the net's parameters.
        carry: ``(flat, opt_state, nonfinite)``.
        batch: The minibatch, as ``loss_fn``'s trailing arguments.

    Returns:
        ``((flat, opt_state, nonfinite), aux)``, ``aux`` with ``grad_norm``.
    """
    flat, opt_state, nonfinite = carry
    flat, opt_state, ok, _, aux = clipped_step(
        lambda f: loss_fn(unravel(f), *batch), optimizer, flat, opt_state,
        parts.config.max_grad_norm)
    return (flat, opt_state, nonfinite + (~ok)), aux


def value_regression(
    parts: Parts,
    value_params: Params,
    opt_state: optax.OptState,
    nonfinite: jax.Array,
    buffer: ReplayBuffer,
    obs_n: jax.Array,
    next_n: jax.Array,
    key: jax.Array,
) -> tuple[Params, optax.OptState, jax.Array, Metrics]:
    """AWR, Algorithm 1, line 5: ``V <- argmin_V E_D[||R^lambda - V(s)||^2]``, as
    ``value_steps`` minibatch SGD-momentum steps on :func:`value_loss` towards the
    TD(lambda) targets of the current ``V`` (computed once, before the steps).

    Args:
        parts: The static parts.
        value_params: The value net's parameters.
        opt_state: Its optimiser state.
        nonfinite: Skipped-step counter so far.
        buffer: The replay buffer (after this update's insert).
        obs_n: Normalised ``s`` of the buffer, ``[L, N, obs]``.
        next_n: Normalised ``s'`` of the buffer, ``[L, N, obs]``.
        key: PRNG key of the minibatch draws.

    Returns:
        ``(value_params, opt_state, nonfinite, stats)``, ``stats`` the per-step
        ``value_loss`` and ``grad_norm`` (``[value_steps]``).
    """
    config = parts.config
    v_flat, v_unravel = ravel_pytree(value_params)
    _, tgt = values_and_targets(parts, value_params, obs_n, next_n, buffer.data)
    loss = functools.partial(value_loss, parts)

    def value_batch(k):
        t, e = replay.sample_indices(k, buffer, config.value_batch_size)
        return obs_n[t, e], tgt[t, e]

    (v_flat, v_opt, nonfinite), v_stats = jax.lax.scan(
        lambda c, k: sgd_step(parts, loss, parts.value_opt, v_unravel, c, value_batch(k)),
        (v_flat, opt_state, nonfinite),
        jax.random.split(key, config.value_steps),
    )
    return v_unravel(v_flat), v_opt, nonfinite, v_stats


def advantage_weights(
    parts: Parts,
    value_params: Params,
    obs_n: jax.Array,
    next_n: jax.Array,
    data: replay.Row,
    valid: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """AWR, Algorithm 1, line 6's weights: advantages ``A = R^lambda - V(s)`` under the
    updated ``V``, normalised over the valid buffer entries (``normalize_advantages``,
    the authors' ``_calc_adv``), and ``w = min(exp(A / beta), w_max)``
    (:func:`metareward.rl.losses.awr_weights`; Section 3.3's weight clipping).

    Args:
        parts: The static parts.
        value_params: The updated value net's parameters.
        obs_n: Normalised ``s`` of the buffer, ``[L, N, obs]``.
        next_n: Normalised ``s'`` of the buffer, ``[L, N, obs]``.
        data: The buffer's rows.
        valid: ``[L, N]`` bool, the buffer entries that hold transitions.

    Returns:
        ``(weights, raw_weights, adv_mean, adv_std)``: clipped and unclipped
        ``exp(A / beta)`` (``[L, N]``) and the moments of ``A`` before normalising.
    """
    config = parts.config
    values, tgt = values_and_targets(parts, value_params, obs_n, next_n, data)
    adv = tgt - values
    adv_mean, adv_std = masked_mean_std(adv, valid)
    if config.normalize_advantages:
        adv = (adv - adv_mean) / (adv_std + 1e-5)
    raw_w = jnp.exp(adv / config.temperature)
    weights = awr_weights(adv, config.temperature, config.weight_clip)
    return weights, raw_w, adv_mean, adv_std


def policy_regression(
    parts: Parts,
    policy_params: Params,
    opt_state: optax.OptState,
    nonfinite: jax.Array,
    buffer: ReplayBuffer,
    obs_n: jax.Array,
    weights: jax.Array,
    key: jax.Array,
) -> tuple[Params, optax.OptState, jax.Array, Metrics]:
    """AWR, Algorithm 1, line 6: ``pi <- argmax_pi E_D[log pi(a|s) w]``, as
    ``policy_steps`` minibatch SGD-momentum steps on :func:`policy_loss`.

    Args:
        parts: The static parts.
        policy_params: The policy's parameters.
        opt_state: Its optimiser state.
        nonfinite: Skipped-step counter so far.
        buffer: The replay buffer.
        obs_n: Normalised ``s`` of the buffer, ``[L, N, obs]``.
        weights: :func:`advantage_weights`' ``w``, ``[L, N]``.
        key: PRNG key of the minibatch draws.

    Returns:
        ``(policy_params, opt_state, nonfinite, stats)``, ``stats`` per step
        (``[policy_steps]``).
    """
    config, d = parts.config, buffer.data
    pi_flat, pi_unravel = ravel_pytree(policy_params)
    loss = functools.partial(policy_loss, parts)

    def policy_batch(k):
        t, e = replay.sample_indices(k, buffer, config.policy_batch_size)
        return obs_n[t, e], d.action[t, e], weights[t, e]

    (pi_flat, pi_opt, nonfinite), pi_stats = jax.lax.scan(
        lambda c, k: sgd_step(parts, loss, parts.policy_opt, pi_unravel, c, policy_batch(k)),
        (pi_flat, opt_state, nonfinite),
        jax.random.split(key, config.policy_steps),
    )
    return pi_unravel(pi_flat), pi_opt, nonfinite, pi_stats


def update(parts: Parts, state: AwrState) -> tuple[AwrState, Metrics]:
    """One iteration of AWR, Algorithm 1 (lines 4-6): collect into the buffer
    (:func:`collect`), fit ``V`` to TD(lambda) targets (:func:`value_regression`), then
    the advantage-weighted policy regression (:func:`advantage_weights`,
    :func:`policy_regression`).

    Args:
        parts: The static parts.
        state: The train state.

    Returns:
        ``(state, metrics)``.
    """
    config = parts.config
    key, k_roll, k_v, k_pi = jax.random.split(state.key, 4)
    env_state, traj, stats, buffer = collect(parts, state, k_roll)
    d = buffer.data
    obs_n, next_n = parts.prep(stats, d.obs), parts.prep(stats, d.next_obs)
    valid = jnp.broadcast_to(replay.valid_mask(buffer)[:, None], d.reward.shape)
    new_value, v_opt, nonfinite, v_stats = value_regression(
        parts, state.params["value"], state.opt_state["value"], state.nonfinite, buffer,
        obs_n, next_n, k_v)
    weights, raw_w, adv_mean, adv_std = advantage_weights(
        parts, new_value, obs_n, next_n, d, valid)
    new_policy, pi_opt, nonfinite, pi_stats = policy_regression(
        parts, state.params["policy"], state.opt_state["policy"], nonfinite, buffer, obs_n,
        weights, k_pi)

    vm = valid.astype(jnp.float32)
    n_valid = jnp.maximum(jnp.sum(vm), 1.0)
    env_steps = state.env_steps + config.num_envs * config.num_steps
    v_stats = jax.tree.map(jnp.mean, v_stats)
    pi_stats = jax.tree.map(jnp.mean, pi_stats)
    metrics = {
        "value_loss": v_stats["value_loss"],
        "value_grad_norm": v_stats["grad_norm"],
        **{k: v for k, v in pi_stats.items() if k != "grad_norm"},
        "policy_grad_norm": pi_stats["grad_norm"],
        "adv_mean": adv_mean,
        "adv_std": adv_std,
        "weight_mean": jnp.sum(weights * vm) / n_valid,
        "weight_max": jnp.max(jnp.where(valid, raw_w, 0.0)),
        "weight_clip_frac": jnp.sum((raw_w > config.weight_clip) * vm) / n_valid,
        "buffer_size": buffer.size * config.num_envs,
        **episode_metrics(traj),
        "env_steps": env_steps,
        "nonfinite": nonfinite,
    }
    new_state = common.advance(
        state, env_steps, params={"policy": new_policy, "value": new_value},
        opt_state={"policy": pi_opt, "value": v_opt}, obs_stats=stats, buffer=buffer,
        env_state=env_state, key=key, nonfinite=nonfinite)
    return new_state, metrics


def make_train(config: Config, env: Env) -> Trainer:
    """Binds AWR to a single env (batched here with ``config.num_envs``).

    Args:
        config: AWR hyperparameters.
        env: A single env.

    Returns:
        A :class:`Trainer` with pure ``init(key)``, ``update(state)`` and ``train(key)``
        (``init`` then a ``lax.scan`` of ``update``), so
        ``jax.jit(jax.vmap(trainer.train))(keys)`` runs many seeds as one program. Bad
        configs or env/config mismatches raise here (:func:`make_parts`), before
        anything is compiled.
    """
    parts = make_parts(config, env)
    init_fn = functools.partial(init, parts)
    update_fn = functools.partial(update, parts)
    act_fn = functools.partial(act, parts)
    return Trainer(
        config=config, env=env, spec=parts.spec, policy=parts.policy, value=parts.value,
        num_updates=parts.num_updates, init=init_fn, update=update_fn,
        train=common.scan_train(init_fn, update_fn, parts.num_updates), act=act_fn,
        evaluate=common.episode_evaluator(env, act_fn, parts.spec.episode_length),
    )


__all__ = ["MUJOCO_ACTOR", "PRESETS", "AwrState", "Config", "Parts", "Trainer", "act",
           "advantage_weights", "collect", "critic_scale", "freeze_std", "init", "make_parts",
           "make_train", "policy_loss", "policy_regression", "preset", "sgd_step",
           "td_lambda_targets", "update", "value_loss", "value_regression", "value_targets",
           "values_and_targets"]
