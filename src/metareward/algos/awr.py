"""AWR: advantage-weighted regression (Peng, Kumar, Zhang & Levine 2019).

"Advantage-Weighted Regression: Simple and Scalable Off-Policy Reinforcement Learning",
arXiv:1910.00177, Algorithm 1, as the TARE paper uses it
(``tare_implicit_reward_learning.md``, eq. 4 and Appendix F: policy and value nets
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
  ``td_lambda=0.95``, ``discount=0.99``; critic SGD lr 0.01, actor lr 5e-5, momentum 0.9
  (TensorFlow's ``MomentumOptimizer`` = ``optax.sgd(lr, momentum)``), minibatches of 256;
  the action-bound penalty ``10 * 0.5 E[sum_i (min(mu_i - lo_i, 0)^2 +
  max(mu_i - hi_i, 0)^2)]`` on the Gaussian mean (``actor_bound_loss_weight``,
  ``action_bound_coef``); the critic's output in normalised units, ``V = net(s) / (1 -
  gamma)`` and its loss ``0.5 E[(net(s) - R^lambda (1 - gamma))^2]`` (``val_norm``,
  ``value_scale``).
* ``learning/rl_agent.py``: a *fixed* action std (``action_std``, 0.2 or 0.4 in
  ``awr_configs.py``; the log-std is a non-trainable variable); here ``log_std`` starts at
  ``log(action_std)`` and gets no gradient unless ``learn_std``. The observation
  normaliser is updated only during the first ``normalizer_samples`` samples, then
  frozen.
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
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from brax.envs.base import Env, State
from flax import struct
from jax.flatten_util import ravel_pytree

from metareward.algos import config as cfg
from metareward.algos.onpolicy import check_env, obs_preprocessor
from metareward.algos.policy import check_one_seed
from metareward.envs.spec import EnvSpec
from metareward.envs.wrappers import VmapWrapper
from metareward.nets.policies import ValueNet, make_policy
from metareward.rl import replay
from metareward.rl.gae import gae
from metareward.rl.losses import awr_policy_loss, awr_weights
from metareward.rl.normalize import RunningStats
from metareward.rl.replay import ReplayBuffer
from metareward.rl.rollout import episode_metrics, evaluate_episodes, rollout
from metareward.rl.stats import masked_mean_std

Params = Any
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Config:
    """AWR hyperparameters. Defaults: the authors' MuJoCo settings (``awr_configs.py``,
    ``awr_agent.py``) with TARE's 64x64 ReLU nets; see the module docstring for where
    each comes from and :data:`PRESETS` for tuned small-env settings.

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
        rollout_size = self.num_envs * self.num_steps
        cfg.check("buffer_size", self.buffer_size, self.buffer_size >= rollout_size,
                  f"an int >= num_envs * num_steps = {rollout_size} (one rollout)")


#: Settings tuned for the small gymnax envs (used by the tests and the quick start).
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
}


def preset(env_name: str) -> Config:
    """The tuned config for ``env_name`` if there is one, else the paper defaults (with a
    :class:`~metareward.algos.config.DefaultConfigWarning`); ``ConfigError`` for an env
    name that is not registered (see :func:`metareward.algos.config.preset`)."""
    return cfg.preset(PRESETS, Config(), env_name, "awr")


class Rows(NamedTuple):
    """What the buffer stores per env step (time-major ``[L, N, ...]`` in the buffer):
    raw flattened observations, raw (policy-space) actions, scaled rewards, the episode
    flags and the observation each transition reached (before any auto-reset)."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    done: jax.Array
    truncation: jax.Array
    next_obs: jax.Array


@struct.dataclass
class AwrState:
    """Everything AWR carries between updates (a pytree).

    ``params = {"policy": ..., "value": ...}``; ``policy_opt_state`` and
    ``value_opt_state`` are SGD-momentum states on the flattened parameter vectors;
    ``buffer`` the replay buffer of :class:`Rows`; ``obs_stats`` the observation
    normaliser; ``nonfinite`` counts gradient steps skipped because the loss or gradient
    was not finite.
    """

    params: Params
    policy_opt_state: optax.OptState
    value_opt_state: optax.OptState
    obs_stats: RunningStats
    buffer: ReplayBuffer
    env_state: State
    key: jax.Array
    update_step: jax.Array
    env_steps: jax.Array
    nonfinite: jax.Array


class Trainer(NamedTuple):
    """AWR bound to a config and an env; all functions pure and jittable.

    Beyond ``init / update / train / act / evaluate`` (the
    :class:`~metareward.algos.registry.Learner` protocol):
    ``value_targets(params, obs_stats, buffer) -> (values, targets)``, both ``[L, N]``:
    ``V(s)`` and the TD(lambda) targets of every buffer entry under the given parameters
    (entries outside :func:`metareward.rl.replay.valid_mask` are meaningless).
    """

    config: Config
    env: Env
    spec: EnvSpec
    policy: nn.Module
    value: nn.Module
    num_updates: int
    init: Callable[[jax.Array], AwrState]
    update: Callable[[AwrState], tuple[AwrState, Metrics]]
    train: Callable[[jax.Array], tuple[AwrState, Metrics]]
    act: Callable[..., jax.Array]
    evaluate: Callable[..., jax.Array]
    value_targets: Callable[..., tuple[jax.Array, jax.Array]]


def td_lambda_targets(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    dones: jax.Array,
    truncations: jax.Array,
    gamma: float | jax.Array,
    td_lambda: float | jax.Array,
) -> jax.Array:
    """TD(lambda) returns over time-major ``[T, ...]`` arrays:
    ``R_t = r_t + gamma [(1 - lambda) V(s'_t) + lambda R_{t+1}]`` within an episode,
    ``R_t = r_t + gamma V(s'_t)`` on its last step if truncated (or at the end of the
    data) and ``R_t = r_t`` if terminated (``awr_agent.py``'s ``_compute_return``).
    Computed as GAE's ``adv + V`` (:func:`metareward.rl.gae.gae`)."""
    return gae(rewards, values, next_values, dones, truncations, gamma, td_lambda)[1]


def make_train(config: Config, env: Env) -> Trainer:
    """Binds AWR to a single env (batched here with ``config.num_envs``).

    Returns a :class:`Trainer` with pure ``init(key)``, ``update(state)`` and
    ``train(key)`` (``init`` then a ``lax.scan`` of ``update``), so
    ``jax.jit(jax.vmap(trainer.train))(keys)`` runs many seeds as one program. Bad
    configs or env/config mismatches raise here, before anything is compiled.
    """
    if not isinstance(config, Config):
        raise TypeError(f"expected metareward.algos.awr.Config, got {type(config).__name__}")
    spec = check_env(env)
    N, T = config.num_envs, config.num_steps
    rollout_size = N * T
    num_updates = config.total_steps // rollout_size
    if num_updates < 1:
        raise ValueError(
            f"total_steps={config.total_steps} is less than one rollout "
            f"(num_envs * num_steps = {rollout_size})"
        )
    num_rows = config.buffer_size // N
    venv = VmapWrapper(env, N)
    obs_dim = spec.obs_size
    discrete = spec.discrete
    policy = make_policy(discrete, spec.action_size, config.hidden, config.activation,
                         False, cfg.log(config.action_std))
    value = ValueNet(config.hidden, config.activation)
    value_scale = (1.0 / (1.0 - config.gamma) if config.value_scale is None
                   else config.value_scale)
    flatten_obs, prep = obs_preprocessor(spec, config.normalize_obs)
    policy_opt = optax.sgd(config.policy_learning_rate, momentum=config.momentum)
    value_opt = optax.sgd(config.value_learning_rate, momentum=config.momentum)
    if not discrete:
        a_low = jnp.asarray(spec.action_low or (-1.0,) * spec.action_size, jnp.float32)
        a_high = jnp.asarray(spec.action_high or (1.0,) * spec.action_size, jnp.float32)

    def example_rows() -> Rows:
        obs = jnp.zeros((N, obs_dim), jnp.float32)
        action = (jnp.zeros((N,), jnp.int32) if discrete
                  else jnp.zeros((N, spec.action_size), jnp.float32))
        f = jnp.zeros((N,), jnp.float32)
        return Rows(obs, action, f, f, f, obs)

    def init(key: jax.Array) -> AwrState:
        k_pi, k_v, k_env, key = jax.random.split(key, 4)
        dummy = jnp.zeros((1, obs_dim), jnp.float32)
        params = {"policy": policy.init(k_pi, dummy), "value": value.init(k_v, dummy)}
        return AwrState(
            params=params,
            policy_opt_state=policy_opt.init(ravel_pytree(params["policy"])[0]),
            value_opt_state=value_opt.init(ravel_pytree(params["value"])[0]),
            obs_stats=RunningStats.create((obs_dim,)),
            buffer=replay.init(example_rows(), num_rows),
            env_state=venv.reset(k_env),
            key=key,
            update_step=jnp.zeros((), jnp.int32),
            env_steps=jnp.zeros((), jnp.int32),
            nonfinite=jnp.zeros((), jnp.int32),
        )

    def act(state: Any, obs: jax.Array, key: jax.Array,
            deterministic: bool = False) -> jax.Array:
        """Env actions of the current policy for a batch of raw observations (``state``:
        a train state or a :class:`~metareward.algos.policy.Policy`)."""
        dist = policy.apply(state.params["policy"], prep(state.obs_stats, obs))
        raw = dist.mode() if deterministic else dist.sample(key)
        return dist.to_env(raw)

    def freeze_std(p: Params) -> Params:
        """The policy parameters with the log-std cut from the gradient (fixed std)."""
        if discrete or config.learn_std:
            return p
        inner = dict(p["params"])
        inner["log_std"] = jax.lax.stop_gradient(inner["log_std"])
        return {**p, "params": inner}

    def targets_normalized(
        value_params: Params, obs_n: jax.Array, next_n: jax.Array, data: Rows
    ) -> tuple[jax.Array, jax.Array]:
        """``(V(s), R^lambda)`` over the buffer, from normalised observations."""
        v = value_scale * value.apply(value_params, obs_n)
        nv = value_scale * value.apply(value_params, next_n)
        tgt = td_lambda_targets(data.reward, v, nv, data.done, data.truncation,
                                config.gamma, config.td_lambda)
        return v, tgt

    def value_targets(
        params: Params, obs_stats: RunningStats, buffer: ReplayBuffer
    ) -> tuple[jax.Array, jax.Array]:
        """``(V(s), R^lambda)``, both ``[L, N]``, for every entry of ``buffer``."""
        d = buffer.data
        return targets_normalized(params["value"], prep(obs_stats, d.obs),
                                  prep(obs_stats, d.next_obs), d)

    def sgd_step(loss_fn, optimizer, unravel):
        """A minibatch step on a flat parameter vector; a non-finite loss or gradient
        feeds the optimiser a zero gradient, keeps the parameters and is counted."""

        def step(carry, batch):
            flat, opt_state, nonfinite = carry
            (loss, aux), grads = jax.value_and_grad(
                lambda f: loss_fn(unravel(f), *batch), has_aux=True)(flat)
            grad_norm = jnp.sqrt(jnp.sum(grads**2))
            ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            if config.max_grad_norm is not None:
                grads = grads * jnp.minimum(1.0, config.max_grad_norm / (grad_norm + 1e-6))
            grads = jnp.where(ok, grads, 0.0)
            updates, opt_state = optimizer.update(grads, opt_state, flat)
            flat = jnp.where(ok, flat + updates, flat)
            return (flat, opt_state, nonfinite + (~ok)), {**aux, "grad_norm": grad_norm}

        return step

    def value_loss(vp: Params, obs: jax.Array, target: jax.Array):
        # In normalised units, as the authors' val_norm: 0.5 E[(net(s) - R / scale)^2].
        loss = 0.5 * jnp.mean(jnp.square(value.apply(vp, obs) - target / value_scale))
        return loss, {"value_loss": loss}

    def policy_loss(pp: Params, obs: jax.Array, action: jax.Array, weight: jax.Array):
        dist = policy.apply(freeze_std(pp), obs)
        loss = awr_policy_loss(dist.log_prob(action), weight)
        aux = {"policy_loss": loss, "entropy": jnp.mean(dist.entropy())}
        if not discrete:
            mu = dist.mean
            violation = jnp.sum(jnp.square(jnp.minimum(mu - a_low, 0.0))
                                + jnp.square(jnp.maximum(mu - a_high, 0.0)), axis=-1)
            bound = 0.5 * jnp.mean(violation)
            loss = loss + config.action_bound_coef * bound
            aux["bound_loss"] = bound
        return loss, aux

    def update(state: AwrState) -> tuple[AwrState, Metrics]:
        key, k_roll, k_v, k_pi = jax.random.split(state.key, 4)
        params, stats = state.params, state.obs_stats

        def policy_act(obs: jax.Array, k: jax.Array):
            dist = policy.apply(params["policy"], prep(stats, obs))
            raw = dist.sample(k)
            return raw, dist.to_env(raw), dist.log_prob(raw)

        env_state, traj = rollout(venv, state.env_state, policy_act, k_roll, T)
        obs_flat = flatten_obs(traj.obs).astype(jnp.float32)
        if config.normalize_obs:
            updated = stats.update(obs_flat)
            if config.normalizer_samples is not None:
                # The authors' normaliser records only the first normalizer_samples.
                keep = state.env_steps < config.normalizer_samples
                updated = jax.tree.map(lambda a, b: jnp.where(keep, a, b), updated, stats)
            stats = updated
        rows = Rows(
            obs=obs_flat,
            action=traj.action,
            reward=(traj.reward * config.reward_scale).astype(jnp.float32),
            done=traj.done.astype(jnp.float32),
            truncation=traj.truncation.astype(jnp.float32),
            next_obs=flatten_obs(traj.next_obs).astype(jnp.float32),
        )
        buffer = replay.insert(state.buffer, rows)
        d = buffer.data
        obs_n, next_n = prep(stats, d.obs), prep(stats, d.next_obs)
        valid = jnp.broadcast_to(replay.valid_mask(buffer)[:, None], d.reward.shape)

        # Value step (Algorithm 1): regress V on TD(lambda) targets of the current V.
        v_flat, v_unravel = ravel_pytree(params["value"])
        _, tgt = targets_normalized(params["value"], obs_n, next_n, d)

        def value_batch(k):
            t, e = replay.sample_indices(k, buffer, config.value_batch_size)
            return obs_n[t, e], tgt[t, e]

        (v_flat, v_opt, nonfinite), v_stats = jax.lax.scan(
            lambda c, k: sgd_step(value_loss, value_opt, v_unravel)(c, value_batch(k)),
            (v_flat, state.value_opt_state, state.nonfinite),
            jax.random.split(k_v, config.value_steps),
        )
        new_value = v_unravel(v_flat)

        # Policy step: advantages under the updated V, exponentiated and clipped.
        values, tgt = targets_normalized(new_value, obs_n, next_n, d)
        adv = tgt - values
        adv_mean, adv_std = masked_mean_std(adv, valid)
        if config.normalize_advantages:
            adv = (adv - adv_mean) / (adv_std + 1e-5)
        raw_w = jnp.exp(adv / config.temperature)
        weights = awr_weights(adv, config.temperature, config.weight_clip)
        pi_flat, pi_unravel = ravel_pytree(params["policy"])

        def policy_batch(k):
            t, e = replay.sample_indices(k, buffer, config.policy_batch_size)
            return obs_n[t, e], d.action[t, e], weights[t, e]

        (pi_flat, pi_opt, nonfinite), pi_stats = jax.lax.scan(
            lambda c, k: sgd_step(policy_loss, policy_opt, pi_unravel)(c, policy_batch(k)),
            (pi_flat, state.policy_opt_state, nonfinite),
            jax.random.split(k_pi, config.policy_steps),
        )

        vm = valid.astype(jnp.float32)
        n_valid = jnp.maximum(jnp.sum(vm), 1.0)
        env_steps = state.env_steps + rollout_size
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
            "buffer_size": buffer.size * N,
            **episode_metrics(traj),
            "env_steps": env_steps,
            "nonfinite": nonfinite,
        }
        new_state = AwrState(
            params={"policy": pi_unravel(pi_flat), "value": new_value},
            policy_opt_state=pi_opt,
            value_opt_state=v_opt,
            obs_stats=stats,
            buffer=buffer,
            env_state=env_state,
            key=key,
            update_step=state.update_step + 1,
            env_steps=env_steps,
            nonfinite=nonfinite,
        )
        return new_state, metrics

    def train(key: jax.Array) -> tuple[AwrState, Metrics]:
        state = init(key)
        return jax.lax.scan(lambda s, _: update(s), state, None, length=num_updates)

    def evaluate(
        state: AwrState,
        key: jax.Array,
        num_episodes: int = 16,
        deterministic: bool = False,
    ) -> jax.Array:
        """Returns of ``num_episodes`` fresh episodes of the current policy."""
        check_one_seed(state)
        fn = lambda obs, k: act(state, obs, k, deterministic)
        return evaluate_episodes(env, fn, key, num_episodes, spec.episode_length)

    return Trainer(
        config=config, env=env, spec=spec, policy=policy, value=value,
        num_updates=num_updates, init=init, update=update, train=train, act=act,
        evaluate=evaluate, value_targets=value_targets,
    )


__all__ = ["PRESETS", "AwrState", "Config", "Rows", "Trainer", "make_train", "preset",
           "td_lambda_targets"]
