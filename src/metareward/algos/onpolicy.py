"""Machinery shared by the on-policy learners (PPO, A2C): one rollout of a vmapped env,
GAE, then epochs of minibatch gradient steps, all inside one jitted ``update``.

``make_onpolicy`` returns a :class:`Trainer` whose functions are pure:
``init(key) -> TrainState``, ``update(state) -> (state, metrics)`` and
``train(key) -> (state, metrics)`` (``init`` then a ``lax.scan`` of ``update``), so
``jax.jit(jax.vmap(trainer.train))(keys)`` runs many seeds as one program.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from brax.envs.base import Env, State, Wrapper
from flax import struct
from jax.flatten_util import ravel_pytree

from metareward.algos import common
from metareward.algos import config as cfg
from metareward.aliases import Metrics, Params
from metareward.envs.spec import EnvSpec
from metareward.envs.wrappers import NormalizedReward, VmapWrapper
from metareward.nets.policies import ValueNet, make_policy
from metareward.rl.gae import gae
from metareward.rl.grads import clipped_step
from metareward.rl.normalize import RunningStats
from metareward.rl.rollout import episode_metrics, rollout, sampler
from metareward.rl.shuffle import permutation
from metareward.rl.stats import standardize


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    """The fields every on-policy learner shares (PPO, A2C, REINFORCE, LIRPG, CLN), with
    PPO's defaults (Schulman et al. 2017, Table 3, and OpenAI baselines' ppo2); each
    learner's ``Config`` derives from it (or from :class:`PPOBase` / :class:`A2CBase`)
    and overrides the defaults its paper uses.

    Validation runs in ``__post_init__``: a subclass adds its own checks after calling
    ``super().__post_init__()``. Float fields may be JAX values (a sweep,
    :mod:`metareward.algos.config`).
    """

    #: Envs stepped in parallel.
    num_envs: int = 1
    #: Steps of each env per rollout (the batch is ``num_envs * num_steps``).
    num_steps: int = 2048
    #: Env steps of the whole run.
    total_steps: int = 1_000_000
    learning_rate: float = 3e-4
    #: Linear decay of the learning rate to 0 over the run.
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    #: Global-norm gradient clipping.
    max_grad_norm: float | None = 0.5
    normalize_obs: bool = True
    #: Standardise the advantages of each minibatch (:func:`metareward.rl.stats.normalize`).
    normalize_advantages: bool = True
    #: The reward the learner trains on is ``reward_scale`` times the env's.
    reward_scale: float = 1.0
    #: Divide the env's reward (after any delay or live bonus, before ``reward_scale``)
    #: by a running standard deviation of its discounted return, clipped to +-10
    #: (:class:`metareward.envs.NormalizedReward`, baselines' ``VecNormalize``).
    normalize_reward: bool = False
    hidden: tuple[int, ...] = (64, 64)
    #: The value network's hidden layers; ``None``: the same as ``hidden`` (the papers'
    #: and baselines' choice). brax's PPO defaults to a wider value net (5 x 256 against
    #: a 4 x 32 policy), which this maps.
    value_hidden: tuple[int, ...] | None = None
    activation: str = "tanh"
    #: Continuous actions: a tanh-squashed Gaussian instead of a clipped one.
    squash: bool = False
    log_std_init: float = 0.0

    #: Whether ``max_grad_norm=None`` (no clipping) is allowed.
    optional_grad_clip: ClassVar[bool] = False

    def __post_init__(self) -> None:
        for name in ("num_envs", "num_steps", "total_steps"):
            cfg.positive_int(name, getattr(self, name))
        cfg.positive("learning_rate", self.learning_rate)
        cfg.in_range("gamma", self.gamma, 0.0, 1.0)
        cfg.in_range("gae_lambda", self.gae_lambda, 0.0, 1.0)
        cfg.non_negative("ent_coef", self.ent_coef)
        cfg.non_negative("vf_coef", self.vf_coef)
        if self.max_grad_norm is not None or not self.optional_grad_clip:
            cfg.positive("max_grad_norm", self.max_grad_norm)
        cfg.positive("reward_scale", self.reward_scale)
        cfg.check("normalize_reward", self.normalize_reward,
                  isinstance(self.normalize_reward, bool), "True or False")
        cfg.hidden_sizes("hidden", self.hidden)
        cfg.activation_name("activation", self.activation)
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if self.value_hidden is not None:
            cfg.hidden_sizes("value_hidden", self.value_hidden)
            object.__setattr__(self, "value_hidden", tuple(self.value_hidden))

    @property
    def value_layers(self) -> tuple[int, ...]:
        """The value network's hidden layer sizes: ``value_hidden``, else ``hidden``."""
        return self.hidden if self.value_hidden is None else self.value_hidden


@dataclasses.dataclass(frozen=True)
class PPOBase(BaseConfig):
    """:class:`BaseConfig` plus PPO's optimisation: ``num_epochs`` of ``num_minibatches``
    Adam steps per rollout on the clipped surrogate (Schulman et al. 2017, eq. 7).

    ``normalize_reward`` is on and the value loss is clipped (``vf_clip_eps=0.2``), as
    in baselines' ``ppo2`` on MuJoCo (the PPO paper's code, and LIRPG's and CLN's
    baselines and codebase): it wraps the env in ``VecNormalize``, whose reward half this
    is, and clips the value prediction to within ``cliprange`` of the rollout's. The tuned
    small-env presets (``ppo.PRESETS``, ``cln.PRESETS``) turn both off: they were tuned
    and measured without them."""

    normalize_reward: bool = True
    num_epochs: int = 10
    num_minibatches: int = 32
    adam_eps: float = 1e-5
    clip_eps: float = 0.2
    #: Clip of the value loss around the rollout's values (ppo2's); ``None``: unclipped.
    vf_clip_eps: float | None = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        cfg.positive_int("num_epochs", self.num_epochs)
        cfg.positive_int("num_minibatches", self.num_minibatches)
        cfg.positive("adam_eps", self.adam_eps)
        cfg.positive("clip_eps", self.clip_eps)
        if self.vf_clip_eps is not None:
            cfg.positive("vf_clip_eps", self.vf_clip_eps)


@dataclasses.dataclass(frozen=True)
class A2CBase(BaseConfig):
    """:class:`BaseConfig` plus A2C's optimisation, with OpenAI baselines' a2c defaults
    (Atari): 16 envs x 5 steps, RMSProp lr 7e-4 (decay 0.99, eps 1e-5) linearly annealed,
    entropy 0.01, n-step returns (``gae_lambda=1``), advantages not normalised.
    ``rms_initial_scale=1`` starts RMSProp's second-moment accumulator at 1 as
    TensorFlow's RMSProp (used by baselines) does; PyTorch starts at 0, which makes the
    first steps very large."""

    num_envs: int = 16
    num_steps: int = 5
    learning_rate: float = 7e-4
    gae_lambda: float = 1.0
    ent_coef: float = 0.01
    normalize_advantages: bool = False
    rms_decay: float = 0.99
    rms_eps: float = 1e-5
    rms_initial_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        cfg.in_range("rms_decay", self.rms_decay, 0.0, 1.0, lo_open=True)
        cfg.positive("rms_eps", self.rms_eps)
        cfg.non_negative("rms_initial_scale", self.rms_initial_scale)


@struct.dataclass
class TrainState(common.LearnerState):
    """Everything a learner carries between updates (a pytree).

    ``params = {"policy": ..., "value": ...}``; ``opt_state = {"agent": ...}``, the state
    of the one optimiser over both (flattened); ``obs_stats`` is the running observation
    normaliser (learner state, not env state); ``update_step`` counts updates and
    ``env_steps`` transitions collected; ``nonfinite`` counts gradient steps skipped
    because the loss or gradient was not finite.
    """

    obs_stats: RunningStats


class Batch(NamedTuple):
    """What a loss sees: flattened, normalised observations and rollout statistics."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    advantage: jax.Array
    target: jax.Array


#: ``loss(params, batch) -> (loss, aux)``, built from the policy and value modules.
LossFn = Callable[[Params, Batch], tuple[jax.Array, Metrics]]


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer(common.LearnerBase):
    """A learner bound to a config and an env. All functions are pure and jittable."""

    policy: nn.Module
    value: nn.Module


def check_env(env: Env) -> EnvSpec:
    """The env's spec; fails clearly for objects that are not metareward envs.

    Args:
        env: What the learner was given: must be a single env from
            :func:`metareward.envs.make`.

    Returns:
        ``env.spec``.

    Raises:
        TypeError: If ``env`` has no :class:`~metareward.envs.spec.EnvSpec`, or is
            already batched (a ``VmapWrapper``, or wraps one directly).
    """
    spec = getattr(env, "spec", None)
    if not isinstance(spec, EnvSpec):
        raise TypeError(
            f"expected a single env from metareward.envs.make(...), got {type(env).__name__}"
        )
    if isinstance(env, VmapWrapper) or type(getattr(env, "env", None)) is VmapWrapper:
        raise TypeError("pass a single env; the learner batches it with config.num_envs")
    return spec


def batch_geometry(config: Any, num_minibatches: int) -> tuple[int, int, int]:
    """``(batch_size, num_updates, minibatch_size)`` of an on-policy config
    (``num_envs, num_steps, total_steps``); a batch that does not split into
    ``num_minibatches`` or a run shorter than one rollout fails here, before compiling.

    Args:
        config: A :class:`BaseConfig` (``num_envs``, ``num_steps``, ``total_steps``).
        num_minibatches: Minibatches per pass over a rollout.

    Returns:
        ``(num_envs * num_steps, num_updates, batch_size // num_minibatches)``, with
        ``num_updates`` from :func:`metareward.algos.common.run_length`.

    Raises:
        ValueError: If the batch does not split into ``num_minibatches`` or
            ``total_steps`` is less than one rollout.
    """
    batch_size = config.num_envs * config.num_steps
    if batch_size % num_minibatches:
        raise ValueError(
            f"num_envs * num_steps = {batch_size} must be divisible by "
            f"num_minibatches = {num_minibatches}"
        )
    _, num_updates = common.run_length(config)
    return batch_size, num_updates, batch_size // num_minibatches


def batched_env(config: Any, env: Env) -> VmapWrapper:
    """``config.num_envs`` copies of ``env`` as the learner steps them: with
    ``config.normalize_reward``, each one's reward normalised by
    :class:`metareward.envs.NormalizedReward` (discount ``config.gamma``).

    Args:
        config: A :class:`BaseConfig`.
        env: A single env.

    Returns:
        The batched env.
    """
    if config.normalize_reward:
        env = NormalizedReward(env, config.gamma)
    return VmapWrapper(env, config.num_envs)


def obs_preprocessor(
    spec: EnvSpec, normalize: bool
) -> tuple[Callable[[jax.Array], jax.Array], Callable[[RunningStats, jax.Array], jax.Array]]:
    """``(flatten_obs, prep)``: observations flattened to ``[..., obs_size]`` (MinAtar
    grids included), and ``prep(stats, obs)`` = flattened and, if ``normalize``,
    normalised with the learner's running statistics.

    Args:
        spec: The env's spec (``obs_shape``, ``obs_size``).
        normalize: Whether ``prep`` normalises (the config's ``normalize_obs``).

    Returns:
        ``(flatten_obs, prep)`` as above.
    """

    def flatten_obs(obs: jax.Array) -> jax.Array:
        return obs.reshape((*obs.shape[: obs.ndim - len(spec.obs_shape)], spec.obs_size))

    def prep(stats: RunningStats, obs: jax.Array) -> jax.Array:
        obs = flatten_obs(obs)
        return stats.normalize(obs) if normalize else obs

    return flatten_obs, prep


class Parts(NamedTuple):
    """The static parts of an on-policy learner, built once by :func:`make_onpolicy`; the
    stages below are pure functions of these and a :class:`TrainState`."""

    config: Any
    env: Env
    venv: VmapWrapper
    spec: EnvSpec
    policy: nn.Module
    value: nn.Module
    loss_fn: LossFn
    optimizer: optax.GradientTransformation
    max_grad_norm: float
    num_epochs: int
    num_minibatches: int
    batch_size: int
    mb_size: int
    flatten_obs: Callable[[jax.Array], jax.Array]
    prep: Callable[[RunningStats, jax.Array], jax.Array]


def init_state(parts: Parts, key: jax.Array) -> TrainState:
    """Fresh parameters, optimiser and normaliser states, and reset envs.

    Args:
        parts: The learner's static parts.
        key: PRNG key.

    Returns:
        The initial :class:`TrainState` (``opt_state = {"agent": ...}``: one optimiser
        over the flattened policy and value parameters).
    """
    k_pi, k_v, k_env, key = jax.random.split(key, 4)
    params = common.actor_critic_params(parts.policy, parts.value, parts.spec, k_pi, k_v)
    return TrainState(
        params=params,
        opt_state={"agent": parts.optimizer.init(ravel_pytree(params)[0])},
        **common.run_start(parts.spec, parts.venv, k_env, key),
    )


#: Env actions of the current policy (:func:`metareward.algos.common.act_with_policy`).
act = common.act_with_policy


def collect(
    parts: Parts, state: TrainState, key: jax.Array
) -> tuple[State, Any, Batch, RunningStats]:
    """Rollout of ``num_steps`` steps of every env under the current policy, then GAE
    (Schulman et al. 2016) on the scaled rewards.

    Args:
        parts: The learner's static parts.
        state: The current train state.
        key: PRNG key of the rollout.

    Returns:
        ``(env_state, traj, data, obs_stats)``: the envs after the rollout, the
        time-major transitions, the flattened :class:`Batch` ``[batch_size, ...]``
        (observations normalised with the statistics *before* this rollout) and the
        statistics updated with the rollout's observations.
    """
    c, params, stats = parts.config, state.params, state.obs_stats

    policy_act = sampler(lambda obs: parts.policy.apply(params["policy"], parts.prep(stats, obs)))
    env_state, traj = rollout(parts.venv, state.env_state, policy_act, key, c.num_steps)
    obs_n = parts.prep(stats, traj.obs)
    values = parts.value.apply(params["value"], obs_n)
    next_values = parts.value.apply(params["value"], parts.prep(stats, traj.next_obs))
    adv, targets = gae(traj.reward * c.reward_scale, values, next_values, traj.done,
                       traj.truncation, c.gamma, c.gae_lambda)
    new_stats = stats.update(parts.flatten_obs(traj.obs)) if c.normalize_obs else stats
    data = Batch(obs_n, traj.action, traj.log_prob, values, adv, targets)
    data = jax.tree.map(lambda x: x.reshape((parts.batch_size, *x.shape[2:])), data)
    return env_state, traj, data, new_stats


SgdCarry = tuple[jax.Array, optax.OptState, jax.Array]


def sgd_step(
    parts: Parts, unravel: Callable[[jax.Array], Params], carry: SgdCarry, mb: Batch
) -> tuple[SgdCarry, Metrics]:
    """One clipped gradient step on a minibatch (:func:`metareward.rl.grads.clipped_step`):
    a step whose loss or gradient is not finite feeds the optimiser a zero gradient and
    leaves the parameters unchanged.

    Args:
        parts: The learner's static parts.
        unravel: Flat vector to parameter dict.
        carry: ``(flat_params, opt_state, nonfinite)``.
        mb: A minibatch.

    Returns:
        The new carry and the step's metrics (``loss``, ``grad_norm`` and the loss's aux).
    """
    flat, opt_state, nonfinite = carry
    # Gradient-norm clipping is done there (not by optax) so that the norm is computed
    # once and also serves the finiteness check.
    flat, opt_state, ok, loss, aux = clipped_step(
        lambda f: parts.loss_fn(unravel(f), mb), parts.optimizer, flat, opt_state,
        parts.max_grad_norm)
    return (flat, opt_state, nonfinite + (~ok)), {"loss": loss, **aux}


def optimise(
    parts: Parts, params: Params, carry: tuple[optax.OptState, jax.Array], data: Batch,
    key: jax.Array,
) -> tuple[Params, optax.OptState, jax.Array, Metrics]:
    """``num_epochs`` passes of ``num_minibatches`` shuffled minibatch steps.

    The optimiser works on one flat vector of all parameters: on a CPU the cost of a small
    network's update is the number of kernels, one per leaf otherwise.

    Args:
        parts: The learner's static parts.
        params: Parameter dict before the update.
        carry: ``(opt_state, nonfinite)`` before the update.
        data: The rollout's :class:`Batch`, ``[batch_size, ...]``.
        key: PRNG key of the shuffles.

    Returns:
        ``(params, opt_state, nonfinite, metrics)``, metrics averaged over the steps.
    """
    bs, n_mb = parts.batch_size, parts.num_minibatches

    def epoch(c, k):
        perm = permutation(k, bs)
        mbs = jax.tree.map(lambda x: x[perm].reshape((n_mb, parts.mb_size, *x.shape[1:])), data)
        return jax.lax.scan(step, c, mbs)

    flat, unravel = ravel_pytree(params)
    step = functools.partial(sgd_step, parts, unravel)
    (flat, opt_state, nonfinite), losses = jax.lax.scan(
        epoch, (flat, *carry), jax.random.split(key, parts.num_epochs))
    return unravel(flat), opt_state, nonfinite, jax.tree.map(jnp.mean, losses)


def update(parts: Parts, state: TrainState) -> tuple[TrainState, Metrics]:
    """One update: :func:`collect` then :func:`optimise`.

    Args:
        parts: The learner's static parts.
        state: The current train state.

    Returns:
        ``(state, metrics)``.
    """
    key, k_roll, k_sgd = jax.random.split(state.key, 3)
    env_state, traj, data, new_stats = collect(parts, state, k_roll)
    params, opt_state, nonfinite, metrics = optimise(
        parts, state.params, (state.opt_state["agent"], state.nonfinite), data, k_sgd)
    metrics.update(episode_metrics(traj))
    env_steps = state.env_steps + parts.batch_size
    metrics.update(env_steps=env_steps, nonfinite=nonfinite)
    new_state = common.advance(state, env_steps, params=params, opt_state={"agent": opt_state},
                               obs_stats=new_stats, env_state=env_state, key=key,
                               nonfinite=nonfinite)
    return new_state, metrics


#: ``objective(dist, values, advantages, batch) -> (loss, aux)``: an on-policy loss given
#: the policy's distribution and the value predictions on a minibatch, and its
#: advantages (standardised where the config says so).
Objective = Callable[[Any, jax.Array, jax.Array, Batch], tuple[jax.Array, Metrics]]


def make_loss(config: Any, objective: Objective) -> Callable[[nn.Module, nn.Module], LossFn]:
    """The minibatch loss of an on-policy learner as a function of its modules.

    Args:
        config: Has ``normalize_advantages``.
        objective: The learner's loss given distribution, values and advantages.

    Returns:
        ``factory(policy, value) -> loss(params, batch)``, as :func:`make_onpolicy` takes.
    """

    def factory(policy: nn.Module, value: nn.Module) -> LossFn:
        def loss(params: Params, b: Batch) -> tuple[jax.Array, Metrics]:
            dist = policy.apply(params["policy"], b.obs)
            adv = standardize(b.advantage) if config.normalize_advantages else b.advantage
            return objective(dist, value.apply(params["value"], b.obs), adv, b)

        return loss

    return factory


def make_onpolicy(
    config: Any,
    env: Env,
    *,
    make_loss: Callable[[nn.Module, nn.Module], LossFn],
    optimizer: optax.GradientTransformation,
    max_grad_norm: float,
    num_epochs: int,
    num_minibatches: int,
) -> Trainer:
    """Builds the jittable functions of an on-policy learner.

    ``config`` must have the fields of :class:`BaseConfig`.

    ``optimizer`` works on the flattened parameter vector
    (``jax.flatten_util.ravel_pytree``) and gets gradients already clipped to global norm
    ``max_grad_norm`` (``clip_by_global_norm`` semantics). A step whose loss or gradient
    is not finite is skipped: parameters unchanged, a zero gradient fed to the optimizer,
    and ``TrainState.nonfinite`` incremented.

    Args:
        config: The learner's config.
        env: A single env (batched here with ``config.num_envs``).
        make_loss: ``make_loss(policy, value) -> loss(params, batch)``.
        optimizer: The optimiser of the flat parameter vector.
        max_grad_norm: Global-norm clip of each step's gradient.
        num_epochs: Passes over each rollout.
        num_minibatches: Minibatches per pass.

    Returns:
        The learner (:class:`Trainer`).
    """
    spec = check_env(env)
    batch_size, num_updates, mb_size = batch_geometry(config, num_minibatches)
    policy = make_policy(spec.discrete, spec.action_size, config.hidden, config.activation,
                         getattr(config, "squash", False), getattr(config, "log_std_init", 0.0))
    value = ValueNet(config.value_layers, config.activation)
    flatten_obs, prep = obs_preprocessor(spec, config.normalize_obs)
    parts = Parts(config, env, batched_env(config, env), spec, policy, value,
                  make_loss(policy, value), optimizer, max_grad_norm, num_epochs,
                  num_minibatches, batch_size, mb_size, flatten_obs, prep)
    init = functools.partial(init_state, parts)
    step = functools.partial(update, parts)
    act_fn = functools.partial(act, parts)
    return Trainer(
        config=config,
        env=env,
        spec=spec,
        policy=policy,
        value=value,
        num_updates=num_updates,
        init=init,
        update=step,
        train=common.scan_train(init, step, num_updates),
        act=act_fn,
        evaluate=common.episode_evaluator(env, act_fn, spec.episode_length),
    )


class LiveBonus(Wrapper):
    """Adds ``bonus`` to every step's reward (after the inner env's reward delay; episode
    statistics in ``info`` come from inside and stay the env's own)."""

    def __init__(self, env: Env, bonus: float):
        super().__init__(env)
        self.bonus = bonus if cfg.is_traced(bonus) else float(bonus)

    def step(self, state: State, action: jax.Array) -> State:
        """Steps the inner env and adds ``bonus`` to the step's reward.

        Args:
            state: The current env state.
            action: The env action (a batched env's ``[N, action_size]``).

        Returns:
            The inner env's next state with ``reward + bonus`` (its ``info`` unchanged).
        """
        nxt = self.env.step(state, action)
        return nxt.replace(reward=nxt.reward + self.bonus)


def with_live_bonus(build: Callable[[Env], Trainer], config: Any, env: Env) -> Trainer:
    """A learner trained on ``env`` plus ``config.live_bonus`` per step (LIRPG's
    "PPO-bonus"/"A2C-bonus" baselines, Zheng et al. 2018, section 3), with ``env``'s own
    reward (no bonus) for ``env`` and ``evaluate``.

    Args:
        build: ``build(env) -> Trainer`` (a :func:`make_onpolicy` learner).
        config: Has ``live_bonus`` (a constant; ``0``: none).
        env: The env without the bonus.

    Returns:
        The learner.
    """
    if not cfg.is_traced(config.live_bonus) and not config.live_bonus:
        return build(env)
    trainer = build(LiveBonus(env, config.live_bonus))
    evaluate = common.episode_evaluator(env, trainer.act, trainer.spec.episode_length)
    return trainer._replace(env=env, evaluate=evaluate)


def make_learner(
    config: Any,
    env: Env,
    make_loss: Callable[[nn.Module, nn.Module], LossFn],
    optimizer: optax.GradientTransformation,
    num_epochs: int,
    num_minibatches: int,
) -> Trainer:
    """:func:`make_onpolicy` with the config's gradient clip and its ``live_bonus``
    (:func:`with_live_bonus`): how PPO and A2C build their learners.

    Args:
        config: A :class:`BaseConfig` with ``live_bonus``.
        env: The env without the bonus.
        make_loss: ``make_loss(policy, value) -> loss(params, batch)``.
        optimizer: The optimiser of the flat parameter vector.
        num_epochs: Passes over each rollout.
        num_minibatches: Minibatches per pass.

    Returns:
        The learner.
    """

    def build(e: Env) -> Trainer:
        return make_onpolicy(config, e, make_loss=make_loss, optimizer=optimizer,
                             max_grad_norm=config.max_grad_norm, num_epochs=num_epochs,
                             num_minibatches=num_minibatches)

    return with_live_bonus(build, config, env)


def annealed(learning_rate: float | jax.Array, anneal: bool, steps: int) -> optax.ScalarOrSchedule:
    """``learning_rate`` decayed linearly to 0 over ``steps`` optimiser steps if
    ``anneal`` (the ``anneal_lr`` of PPO, A2C, REINFORCE, LIRPG, CLN and TARE), else the
    constant ``learning_rate``.

    Args:
        learning_rate: The initial (or constant) learning rate.
        anneal: Whether to decay it.
        steps: Optimiser steps of the decay.

    Returns:
        An optax schedule, or ``learning_rate`` itself.
    """
    return optax.linear_schedule(learning_rate, 0.0, steps) if anneal else learning_rate


def check_finite(metrics: Metrics) -> None:
    """Raises ``FloatingPointError`` naming the first update whose loss was not finite.

    Updates with a non-finite loss or gradient were skipped inside the jitted program.

    Args:
        metrics: Metrics as returned by ``train`` (stacked over updates, optionally over
            seeds), with ``nonfinite``: the skipped gradient steps of each update.

    Raises:
        FloatingPointError: If any update skipped a step.
    """
    import numpy as np

    counts = np.asarray(metrics["nonfinite"])
    if counts.size and counts.max() > 0:
        first = np.argmax(counts.reshape(-1, counts.shape[-1]).max(0) > 0)
        raise FloatingPointError(
            f"non-finite loss or gradient first seen at update {int(first)} "
            f"({int(counts.max())} gradient step(s) skipped); lower the learning rate "
            "or check the reward scale"
        )


__all__ = ["A2CBase", "BaseConfig", "Batch", "LiveBonus", "LossFn", "Objective", "PPOBase",
           "Parts", "TrainState", "Trainer", "act", "annealed", "batch_geometry",
           "check_env", "check_finite", "collect", "init_state", "make_learner",
           "make_loss", "make_onpolicy", "obs_preprocessor", "optimise", "sgd_step",
           "update", "with_live_bonus"]
