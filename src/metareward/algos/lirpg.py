"""LIRPG: learning intrinsic rewards for policy-gradient methods (Zheng, Oh & Singh 2018).

"On Learning Intrinsic Rewards for Policy Gradient Methods", NeurIPS 2018
(``lirpg_slides.md``), with the details of the authors' code (``REFERENCE_NOTES.md``):

* the policy ``pi_theta`` and its value ``V_mix`` (``theta``) are trained by PPO (resp.
  A2C) on the mixed reward ``r = r_ex_coef * r_ex + r_in_coef * r_eta(s, a)``
  (Algorithm 1, lines 5-6: ``theta' = theta + alpha grad J^{ex+in}``);
* the intrinsic reward ``r_eta`` and an extrinsic value ``V_ex`` (``eta``) are trained
  on ``J_ex(theta')``: the meta-gradient ``grad_eta J_ex = grad_theta' J_ex
  grad_eta theta'`` (Algorithm 1, lines 7-10) is taken through one differentiable step
  of the *same* optimiser the policy uses (Adam for PPO, RMSProp for A2C) by
  :func:`metareward.meta.unrolled_hypergrad` with ``num_steps=1``. The mixed advantage
  of a minibatch is rebuilt differentiably from ``r_eta`` on the whole rollout (GAE as a
  fixed linear map of the TD errors, :func:`metareward.rl.discounted_cumsum`; the
  authors build it as a dense ``COEF_MAT``). Outer loss: the clipped PPO surrogate
  (resp. the A2C importance-weighted surrogate) of ``pi_theta'`` with the rollout's
  log-probs and extrinsic advantages, plus ``v_ex_coef`` times the ``V_ex`` loss.
* Policy and intrinsic updates happen in the same minibatch step (as the authors'):
  ``theta <- theta'``, ``eta <- eta + beta * meta-gradient`` (clipped, Adam/RMSProp).

The look-ahead ``theta' = theta + update(eta)`` is the optimiser's own update (the step
the policy then takes). How it is differentiated is ``lookahead``: ``"exact"`` (the true
derivative of ``J_ex(theta'(eta))``) or ``"constant_second_moment"`` (the optimiser's
denominator ``sqrt(nu_hat) + eps`` held constant, as in the authors' hand-written Adam
look-ahead in ``ppo2.py``, ``tf.square(tf.stop_gradient(grad))``). The defaults follow
the authors: constant for PPO, exact for A2C (their ``a2c.py`` RMSProp look-ahead
differentiates through the mean square). The tests check "exact" against finite
differences (both flavours) and "constant_second_moment" against finite differences of
one Adam step written out with its second moment fixed (PPO flavour).

Two flavours, chosen by the config type: :class:`Config` (PPO, the delayed-MuJoCo
experiments; registered as ``lirpg``) and :class:`A2CConfig` (A2C, the Atari
experiments, here MinAtar; ``lirpg-a2c``). Delayed rewards come from the env:
``metareward.envs.make(name, reward_delay=N)``.

Usage::

    env = metareward.envs.make("cartpole", reward_delay=10)
    trainer = lirpg.make_train(lirpg.preset("cartpole"), env)
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
from metareward.algos.onpolicy import (
    A2CBase,
    PPOBase,
    batch_geometry,
    check_env,
    obs_preprocessor,
)
from metareward.algos.policy import check_one_seed
from metareward.envs.spec import EnvSpec
from metareward.envs.wrappers import VmapWrapper
from metareward.meta import unrolled_hypergrad
from metareward.nets.policies import ValueNet, make_policy
from metareward.nets.rewards import IntrinsicReward
from metareward.rl.gae import discounted_cumsum, gae, td_errors
from metareward.rl.grads import clip_by_global_norm
from metareward.rl.losses import a2c_loss, ppo_loss
from metareward.rl.normalize import RunningStats
from metareward.rl.rollout import episode_metrics, episodic_sum, evaluate_episodes, rollout
from metareward.rl.stats import standardize

Params = Any
Metrics = dict[str, jax.Array]


#: ``lookahead`` values: how the one-step look-ahead is differentiated.
LOOKAHEADS = ("exact", "constant_second_moment")


def _check_lirpg_fields(c: Any) -> None:
    """The checks of the fields both flavours add to their on-policy base."""
    cfg.check("lookahead", c.lookahead, c.lookahead in LOOKAHEADS,
              f"one of {', '.join(map(repr, LOOKAHEADS))}")
    cfg.positive("intrinsic_learning_rate", c.intrinsic_learning_rate)
    for name in ("v_ex_coef", "r_ex_coef", "r_in_coef"):
        cfg.non_negative(name, getattr(c, name))
    if not cfg.is_traced(c.r_ex_coef, c.r_in_coef):
        cfg.check("r_ex_coef, r_in_coef", (c.r_ex_coef, c.r_in_coef),
                  c.r_ex_coef > 0 or c.r_in_coef > 0, "at least one of them > 0")
    cfg.hidden_sizes("reward_hidden", c.reward_hidden)
    object.__setattr__(c, "reward_hidden", tuple(c.reward_hidden))


@dataclasses.dataclass(frozen=True)
class Config(PPOBase):
    """LIRPG on PPO. Defaults: the authors' delayed-MuJoCo settings (``ppo2``,
    ``run_mujoco.py``): 1 env x 2048 steps, 10 epochs of 32 minibatches, Adam (eps 1e-5)
    with constant policy lr 3e-4 and intrinsic lr 1e-4, gamma 0.99, lambda 0.95, clip
    0.2 (also on both value losses), entropy 0, value coefficients 0.5, gradient-norm
    clip 0.5, and the policy trained on the intrinsic reward alone (``r_ex_coef=0,
    r_in_coef=1``, the paper's "intrinsic only" curve). Observations normalised;
    advantages normalised per minibatch (mixed and extrinsic).

    ``lookahead``: how the meta-gradient differentiates the one-step look-ahead
    ``theta' = theta + update(eta)`` (Algorithm 1, lines 6-9; Zheng et al. 2018,
    ``lirpg_slides.md``). ``"constant_second_moment"`` (default, the authors' ``ppo2.py``:
    their look-ahead Adam squares ``tf.stop_gradient(grad)``) treats Adam's denominator
    ``sqrt(nu_hat) + eps`` as a constant, so ``d theta'/d eta = -lr * (1 - b1) /
    (1 - b1^t) * d g/d eta / denominator``; ``"exact"`` differentiates through it too
    (the true derivative of ``J_ex(theta'(eta))``). The step taken is the same in both.
    Measured on the cartpole preset, reward delayed by 10, 4 seeds (2026-12-02): the
    cosine between the two meta-gradients (intrinsic-reward part) along a training run
    is 0.95 at policy step 1 (the authors' 200 times longer: Adam's first step is
    ``lr * sign(g)``, flat in ``g``), 0.39 at step 3 and 0.50 at step 6 (one seed -0.998,
    resp. -0.999), 0.99 at step 11, 0.97 at step 21, 0.999 at step 51, 1.000 from step 101 on
    (``benchmarks/lirpg_cost.py --lookahead``). Learning at 500k steps
    (``experiments/lirpg_delayed.py``): authors' 500.0 +- 0.0 on all 4 seeds, exact
    361.1 +- 143.9 (two seeds at 276 and 169); on delayed pendulum (1M steps) authors'
    -809 +- 433, exact -1074 +- 371. So the authors' choice is the default."""

    # (PPOBase's fields, with the authors' constant learning rate and clipped value loss)
    anneal_lr: bool = False
    vf_clip_eps: float | None = 0.2
    intrinsic_learning_rate: float = 1e-4
    v_ex_coef: float = 0.5
    r_ex_coef: float = 0.0
    r_in_coef: float = 1.0
    reward_hidden: tuple[int, ...] = (64, 64)
    lookahead: str = "constant_second_moment"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_lirpg_fields(self)


@dataclasses.dataclass(frozen=True)
class A2CConfig(A2CBase):
    """LIRPG on A2C. Defaults: the authors' Atari settings (``a2c.py``,
    ``run_atari.py``): 16 envs x 5 steps, RMSProp (decay 0.99, eps 1e-5, TensorFlow's
    accumulator start 1) at 7e-4 for both policy and intrinsic reward, linearly
    annealed, n-step returns, entropy 0.01, V_mix coefficient 0.5, V_ex coefficient 0.1,
    gradient-norm clip 0.5, ``r_ex_coef=1, r_in_coef=0.01``; advantages not normalised.
    The authors' CNN torso is an MLP here (MinAtar observations are flattened).

    ``lookahead`` (see :class:`Config`): ``"exact"`` by default, as the authors'
    ``a2c.py``, whose RMSProp look-ahead ``grad / sqrt(ms + eps)`` differentiates through
    the mean square ``ms``; ``"constant_second_moment"`` holds ``sqrt(nu + eps)``
    constant."""

    intrinsic_learning_rate: float = 7e-4
    v_ex_coef: float = 0.1
    r_ex_coef: float = 1.0
    r_in_coef: float = 0.01
    reward_hidden: tuple[int, ...] = (64, 64)
    lookahead: str = "exact"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_lirpg_fields(self)


#: Settings for the small gymnax envs (used by the tests and the benchmark).
PRESETS: dict[str, Config] = {
    # Our PPO cartpole preset's batch, epochs and lr, the authors' intrinsic lr (1e-3
    # learned faster at first, then the intrinsic reward collapsed on 3 of 4 seeds).
    "cartpole": Config(
        num_envs=4,
        num_steps=128,
        total_steps=500_000,
        num_epochs=4,
        num_minibatches=4,
        learning_rate=5e-4,
        intrinsic_learning_rate=1e-4,
        ent_coef=0.01,
        normalize_obs=False,
    ),
    # Our PPO pendulum preset's batch, epochs and lr.
    "pendulum": Config(
        num_envs=16,
        num_steps=128,
        total_steps=1_000_000,
        num_epochs=10,
        num_minibatches=16,
        learning_rate=1e-3,
        intrinsic_learning_rate=1e-4,
        gamma=0.95,
        reward_scale=0.1,
    ),
}
#: Settings for MinAtar (A2C flavour): the authors' Atari settings, a shorter run.
A2C_PRESETS: dict[str, A2CConfig] = {
    "breakout-minatar": A2CConfig(total_steps=500_000),
}


def preset(env_name: str) -> Config:
    """The tuned config for ``env_name`` if there is one, else the paper defaults (with a
    :class:`~metareward.algos.config.DefaultConfigWarning`); ``ConfigError`` for an env
    name that is not registered (see :func:`metareward.algos.config.preset`)."""
    return cfg.preset(PRESETS, Config(), env_name, "lirpg")


@struct.dataclass
class LirpgState:
    """What LIRPG carries between updates (a pytree).

    ``params = {"policy", "value", "reward", "value_ex"}``: ``theta`` is the policy and
    its mixed-reward value ``V_mix`` (``"value"``), ``eta`` the intrinsic reward and the
    extrinsic value ``V_ex``. ``opt_state = (theta's, eta's)`` optimiser states (on the
    flattened parameter vectors). ``intrinsic_return`` is each env's running sum of
    ``r_eta`` over its current episode.
    """

    params: Params
    opt_state: tuple[optax.OptState, optax.OptState]
    obs_stats: RunningStats
    env_state: State
    key: jax.Array
    update_step: jax.Array
    env_steps: jax.Array
    nonfinite: jax.Array
    intrinsic_return: jax.Array


class Batch(NamedTuple):
    """One rollout prepared for learning, time-major ``[T, N, ...]``: normalised
    observations, raw actions, behaviour log-probs, GAE's discounts
    ``gamma lambda (1 - done)``, extrinsic (possibly delayed) rewards, ``V_mix`` values
    and their TD part ``gamma (1 - term) V_mix(s') - V_mix(s)`` (the mixed TD error is
    ``r_mix + td_mix``), ``V_ex`` values, extrinsic advantages and returns."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    gae_discount: jax.Array
    r_ex: jax.Array
    v_mix: jax.Array
    td_mix: jax.Array
    v_ex: jax.Array
    adv_ex: jax.Array
    ret_ex: jax.Array


class Trainer(NamedTuple):
    """LIRPG bound to a config and an env; all functions pure and jittable.

    Beyond the baselines' ``init / update / train / act / evaluate``:
    ``intrinsic_reward(params, obs_stats, obs, action)`` evaluates ``r_eta`` on raw
    observations; ``prepare(state) -> (state, Batch)`` collects a rollout;
    ``lookahead(theta, opt_state, eta, batch, t_idx, e_idx)`` is the differentiable policy
    step on a minibatch (``theta, eta`` flat vectors, see ``split_params``);
    ``outer_loss(theta_new, eta, batch, t_idx, e_idx)`` is ``-J_ex`` of the updated policy
    plus the ``V_ex`` loss; ``meta_gradient(theta, opt_state, eta, batch, t_idx, e_idx)``
    returns ``(grad_eta, (theta', opt_state', stats))`` through
    :func:`metareward.meta.unrolled_hypergrad`.
    """

    config: Any
    env: Env
    spec: EnvSpec
    policy: nn.Module
    value: nn.Module
    reward: nn.Module
    num_updates: int
    init: Callable[[jax.Array], LirpgState]
    update: Callable[[LirpgState], tuple[LirpgState, Metrics]]
    train: Callable[[jax.Array], tuple[LirpgState, Metrics]]
    act: Callable[..., jax.Array]
    evaluate: Callable[..., jax.Array]
    intrinsic_reward: Callable[..., jax.Array]
    prepare: Callable[[LirpgState], tuple[LirpgState, Batch]]
    split_params: Callable[[Params], tuple[jax.Array, jax.Array]]
    lookahead: Callable[..., tuple[jax.Array, Any, Metrics]]
    outer_loss: Callable[..., tuple[jax.Array, Metrics]]
    meta_gradient: Callable[..., tuple[jax.Array, Any]]
    #: Metrics that, like ``episode_return``, describe the episodes that ended in an
    #: update (NaN when none did): the runner treats them alike.
    episode_metric_names: tuple[str, ...] = ("intrinsic_return",)


def _optimizers(config: Any, num_steps: int) -> tuple[optax.GradientTransformation, ...]:
    """``(policy, intrinsic)`` optimisers; ``num_steps`` gradient steps in the run."""

    def lr(value: float):
        return optax.linear_schedule(value, 0.0, num_steps) if config.anneal_lr else value

    if isinstance(config, Config):
        return tuple(optax.adam(lr(v), eps=config.adam_eps)
                     for v in (config.learning_rate, config.intrinsic_learning_rate))
    return tuple(
        optax.rmsprop(lr(v), decay=config.rms_decay, eps=config.rms_eps,
                      initial_scale=config.rms_initial_scale)
        for v in (config.learning_rate, config.intrinsic_learning_rate)
    )


def _denominator(config: Any, opt_state: Any) -> jax.Array:
    """The elementwise denominator of the policy optimiser's step in ``opt_state`` (the
    state *after* the step): Adam's ``sqrt(nu / (1 - b2^t)) + eps`` (optax's default
    ``b2 = 0.999``), RMSProp's ``sqrt(nu + eps)`` (optax's ``eps_in_sqrt``)."""
    cls = optax.ScaleByAdamState if isinstance(config, Config) else optax.ScaleByRmsState
    (st,) = [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, cls))
             if isinstance(x, cls)]
    if isinstance(config, Config):
        nu_hat = st.nu / (1.0 - 0.999 ** st.count.astype(st.nu.dtype))
        return jnp.sqrt(nu_hat) + config.adam_eps
    return jnp.sqrt(st.nu + config.rms_eps)


def make_train(config: Config | A2CConfig, env: Env) -> Trainer:
    """Binds LIRPG (PPO flavour for :class:`Config`, A2C for :class:`A2CConfig`) to a
    single env, batched here with ``config.num_envs``. Bad configs or env/config
    mismatches raise here, before anything is compiled."""
    if not isinstance(config, Config | A2CConfig):
        raise TypeError(
            f"expected metareward.algos.lirpg.Config or A2CConfig, got {type(config).__name__}"
        )
    is_ppo = isinstance(config, Config)
    spec = check_env(env)
    num_epochs = config.num_epochs if is_ppo else 1
    num_minibatches = config.num_minibatches if is_ppo else 1
    T, N = config.num_steps, config.num_envs
    batch_size, num_updates, mb_size = batch_geometry(config, num_minibatches)
    policy_opt, intrinsic_opt = _optimizers(config, num_updates * num_epochs * num_minibatches)
    venv = VmapWrapper(env, N)
    obs_dim = spec.obs_size
    policy = make_policy(spec.discrete, spec.action_size, config.hidden, config.activation,
                         config.squash, config.log_std_init)
    value = ValueNet(config.hidden, config.activation)
    reward = IntrinsicReward(spec.discrete, spec.action_size, config.reward_hidden,
                             config.activation)

    flatten_obs, prep = obs_preprocessor(spec, config.normalize_obs)

    def split_params(params: Params) -> tuple[jax.Array, jax.Array]:
        theta = ravel_pytree({"policy": params["policy"], "value": params["value"]})[0]
        eta = ravel_pytree({"reward": params["reward"], "value_ex": params["value_ex"]})[0]
        return theta, eta

    def init(key: jax.Array) -> LirpgState:
        # The same key use as the baselines for theta and the envs (so that with
        # r_in_coef=0 LIRPG's policy is PPO's), eta from a key folded off.
        k_pi, k_v, k_env, key = jax.random.split(key, 4)
        k_r, k_vx = jax.random.split(jax.random.fold_in(k_pi, 1))
        dummy = jnp.zeros((1, obs_dim), jnp.float32)
        dummy_a = (jnp.zeros((1,), jnp.int32) if spec.discrete
                   else jnp.zeros((1, spec.action_size), jnp.float32))
        params = {
            "policy": policy.init(k_pi, dummy),
            "value": value.init(k_v, dummy),
            "reward": reward.init(k_r, dummy, dummy_a),
            "value_ex": value.init(k_vx, dummy),
        }
        theta, eta = split_params(params)
        return LirpgState(
            params=params,
            opt_state=(policy_opt.init(theta), intrinsic_opt.init(eta)),
            obs_stats=RunningStats.create((obs_dim,)),
            env_state=venv.reset(k_env),
            key=key,
            update_step=jnp.zeros((), jnp.int32),
            env_steps=jnp.zeros((), jnp.int32),
            nonfinite=jnp.zeros((), jnp.int32),
            intrinsic_return=jnp.zeros((N,), jnp.float32),
        )

    # theta / eta <-> parameter dicts, from the shapes alone.
    _shapes = jax.eval_shape(init, jax.random.PRNGKey(0)).params
    _zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), _shapes)
    unravel_theta = ravel_pytree({"policy": _zeros["policy"], "value": _zeros["value"]})[1]
    unravel_eta = ravel_pytree({"reward": _zeros["reward"], "value_ex": _zeros["value_ex"]})[1]
    n_reward = ravel_pytree(_zeros["reward"])[0].size  # eta = [reward..., value_ex...]

    def act(state: Any, obs: jax.Array, key: jax.Array,
            deterministic: bool = False) -> jax.Array:
        """Env actions of the current policy for a batch of raw observations (``state``:
        a train state or a :class:`~metareward.algos.policy.Policy`)."""
        dist = policy.apply(state.params["policy"], prep(state.obs_stats, obs))
        raw = dist.mode() if deterministic else dist.sample(key)
        return dist.to_env(raw)

    def intrinsic_reward(params: Params, obs_stats: RunningStats, obs: jax.Array,
                         action: jax.Array) -> jax.Array:
        """``r_eta(s, a)`` for raw observations and raw (policy-space) actions."""
        return reward.apply(params["reward"], prep(obs_stats, obs), action)

    def prepare(state: LirpgState) -> tuple[LirpgState, Batch, jax.Array, Metrics]:
        key, k_roll, k_sgd = jax.random.split(state.key, 3)
        params, stats = state.params, state.obs_stats

        def policy_act(obs: jax.Array, k: jax.Array):
            dist = policy.apply(params["policy"], prep(stats, obs))
            raw = dist.sample(k)
            return raw, dist.to_env(raw), dist.log_prob(raw)

        env_state, traj = rollout(venv, state.env_state, policy_act, k_roll, T)
        obs_n, next_n = prep(stats, traj.obs), prep(stats, traj.next_obs)
        v_mix = value.apply(params["value"], obs_n)
        v_ex = value.apply(params["value_ex"], obs_n)
        next_mix = value.apply(params["value"], next_n)
        next_ex = value.apply(params["value_ex"], next_n)
        r_ex = traj.reward * config.reward_scale
        adv_ex, ret_ex = gae(r_ex, v_ex, next_ex, traj.done, traj.truncation,
                             config.gamma, config.gae_lambda)
        td_mix = td_errors(jnp.zeros_like(r_ex), v_mix, next_mix, traj.done, traj.truncation,
                           config.gamma)
        discount = config.gamma * config.gae_lambda * (1.0 - traj.done)
        batch = Batch(obs_n, traj.action, traj.log_prob, discount, r_ex, v_mix, td_mix, v_ex,
                      adv_ex, ret_ex)
        # Episode statistics of the intrinsic reward (of eta before this update's steps).
        r_in = reward.apply(params["reward"], obs_n, traj.action)

        run_in, intrinsic_return = episodic_sum(state.intrinsic_return, r_in, traj.done)
        metrics = {
            **episode_metrics(traj),
            "intrinsic_return": intrinsic_return,
            "r_in_mean": jnp.mean(r_in),
            "r_in_std": jnp.std(r_in),
            "r_ex_mean": jnp.mean(r_ex),
        }
        new_stats = stats.update(flatten_obs(traj.obs)) if config.normalize_obs else stats
        state = state.replace(obs_stats=new_stats, env_state=env_state, key=key,
                              intrinsic_return=run_in)
        return state, batch, k_sgd, metrics

    def mixed_advantage(eta: jax.Array, b: Batch, t_idx: jax.Array, e_idx: jax.Array):
        """The minibatch's mixed advantages as a function of eta (through r_eta on the
        whole rollout) and its V_mix targets."""
        r_in = reward.apply(unravel_eta(eta)["reward"], b.obs, b.action)
        delta = config.r_ex_coef * b.r_ex + config.r_in_coef * r_in + b.td_mix
        adv = discounted_cumsum(delta, b.gae_discount)[t_idx, e_idx]
        return adv, adv + b.v_mix[t_idx, e_idx]

    def inner_loss(theta: jax.Array, adv: jax.Array, ret: jax.Array, b: Batch,
                   t_idx: jax.Array, e_idx: jax.Array):
        """The policy's loss on the mixed reward (Algorithm 1, line 5), minibatch."""
        p = unravel_theta(theta)
        obs, action = b.obs[t_idx, e_idx], b.action[t_idx, e_idx]
        dist = policy.apply(p["policy"], obs)
        logp = dist.log_prob(action)
        v = value.apply(p["value"], obs)
        if config.normalize_advantages:
            adv = standardize(adv)
        if is_ppo:
            return ppo_loss(logp, b.log_prob[t_idx, e_idx], adv, v, b.v_mix[t_idx, e_idx], ret,
                            dist.entropy(), clip_eps=config.clip_eps, vf_coef=config.vf_coef,
                            ent_coef=config.ent_coef, vf_clip_eps=config.vf_clip_eps)
        # A2C (the authors' a2c.py): -E[A_mix log pi] with A_mix depending on eta, so no
        # stop-gradient on it; V_mix regresses on the eta-dependent returns.
        return a2c_loss(logp, adv, v, ret, dist.entropy(), vf_coef=config.vf_coef,
                        ent_coef=config.ent_coef, stop_advantage_gradient=False)

    def lookahead(theta: jax.Array, opt_state: Any, eta: jax.Array, b: Batch,
                  t_idx: jax.Array, e_idx: jax.Array):
        """One step of the policy's optimiser on the mixed-reward loss, differentiable in
        eta: ``theta' = theta + update(grad_theta L_mix(theta; eta))`` (Algorithm 1, line
        6), gradient clipped as in the real step. A non-finite loss or gradient leaves
        theta unchanged. With ``lookahead="constant_second_moment"`` the update is
        multiplied by ``denominator / stop_gradient(denominator)`` (exactly 1): the same
        step, differentiated with the denominator held constant. Returns
        ``(theta', opt_state', stats)``."""
        adv, ret = mixed_advantage(eta, b, t_idx, e_idx)
        (loss, aux), grads = jax.value_and_grad(inner_loss, has_aux=True)(
            theta, adv, ret, b, t_idx, e_idx)
        grads, norm, ok = clip_by_global_norm(grads, config.max_grad_norm)
        ok = ok & jnp.isfinite(loss)
        updates, new_opt = policy_opt.update(grads, opt_state, theta)
        if config.lookahead == "constant_second_moment":
            # d(u D / sg(D)) = du + (u / D) dD, and du = -lr dmu / D - (u / D) dD.
            denom = _denominator(config, new_opt)
            updates = updates * (denom / jax.lax.stop_gradient(denom))
        new_theta = jnp.where(ok, theta + updates, theta)
        return new_theta, new_opt, {"loss": loss, "grad_norm": norm, "ok": ok, **aux}

    def outer_loss(theta_new: jax.Array, eta: jax.Array, b: Batch, t_idx: jax.Array,
                   e_idx: jax.Array):
        """``-J_ex(theta')`` plus ``v_ex_coef`` times the ``V_ex`` loss (Algorithm 1,
        line 7): PPO flavour, the clipped surrogate of the updated policy with the
        rollout's log-probs and normalised extrinsic advantages; A2C flavour,
        ``-E[A_ex pi_theta'/pi_theta]`` (the ratio unclipped, advantages as they are)."""
        obs, action = b.obs[t_idx, e_idx], b.action[t_idx, e_idx]
        logp_new = policy.apply(unravel_theta(theta_new)["policy"], obs).log_prob(action)
        v_ex = value.apply(unravel_eta(eta)["value_ex"], obs)
        adv = b.adv_ex[t_idx, e_idx]
        if config.normalize_advantages:
            adv = standardize(adv)
        loss, aux = ppo_loss(
            logp_new, b.log_prob[t_idx, e_idx], adv, v_ex, b.v_ex[t_idx, e_idx],
            b.ret_ex[t_idx, e_idx], jnp.zeros_like(logp_new),
            clip_eps=config.clip_eps if is_ppo else jnp.inf,
            vf_coef=config.v_ex_coef, ent_coef=0.0,
            vf_clip_eps=config.vf_clip_eps if is_ppo else None,
        )
        return loss, {"outer_loss": loss, "ex_policy_loss": aux["policy_loss"],
                      "value_ex_loss": aux["value_loss"]}

    def meta_gradient(theta: jax.Array, opt_state: Any, eta: jax.Array, b: Batch,
                      t_idx: jax.Array, e_idx: jax.Array):
        """``(d outer / d eta, ((theta', opt_state', inner stats), outer stats))``."""
        stats0 = jax.tree.map(
            lambda s: jnp.zeros(s.shape, s.dtype),
            jax.eval_shape(lookahead, theta, opt_state, eta, b, t_idx, e_idx)[2],
        )

        def inner(carry, h, _k):
            return lookahead(carry[0], carry[1], h, b, t_idx, e_idx)

        def outer(carry, h):
            loss, aux = outer_loss(carry[0], h, b, t_idx, e_idx)
            return loss, (carry, aux)

        return unrolled_hypergrad(inner, outer, (theta, opt_state, stats0), eta, 1,
                                  has_aux=True)

    def minibatch_step(carry, idx: jax.Array, b: Batch):
        theta, eta, opt_theta, opt_eta, nonfinite = carry
        t_idx, e_idx = idx // N, idx % N  # time-major flattening
        g_eta, ((new_theta, new_opt_theta, stats), outer_aux) = meta_gradient(
            theta, opt_theta, eta, b, t_idx, e_idx)
        meta_norm = jnp.sqrt(jnp.sum(g_eta[:n_reward] ** 2))
        g_eta, eta_norm, ok_eta = clip_by_global_norm(g_eta, config.max_grad_norm)
        ok_eta = ok_eta & jnp.isfinite(outer_aux["outer_loss"])
        g_eta = jnp.where(ok_eta, g_eta, 0.0)
        upd, new_opt_eta = intrinsic_opt.update(g_eta, opt_eta, eta)
        new_eta = jnp.where(ok_eta, eta + upd, eta)
        ok = stats.pop("ok")
        nonfinite = nonfinite + (~ok) + (~ok_eta)
        metrics = {**stats, **outer_aux, "meta_grad_norm": meta_norm,
                   "intrinsic_grad_norm": eta_norm}
        return (new_theta, new_eta, new_opt_theta, new_opt_eta, nonfinite), metrics

    def update(state: LirpgState) -> tuple[LirpgState, Metrics]:
        state, batch, k_sgd, roll_metrics = prepare(state)
        theta, eta = split_params(state.params)

        def epoch(carry, k):
            perm = jax.random.permutation(k, batch_size).reshape(num_minibatches, mb_size)
            return jax.lax.scan(lambda c, i: minibatch_step(c, i, batch), carry, perm)

        carry = (theta, eta, state.opt_state[0], state.opt_state[1], state.nonfinite)
        (theta, eta, opt_theta, opt_eta, nonfinite), losses = jax.lax.scan(
            epoch, carry, jax.random.split(k_sgd, num_epochs))
        params = {**unravel_theta(theta), **unravel_eta(eta)}
        env_steps = state.env_steps + batch_size
        metrics = {**jax.tree.map(jnp.mean, losses), **roll_metrics,
                   "env_steps": env_steps, "nonfinite": nonfinite}
        state = state.replace(params=params, opt_state=(opt_theta, opt_eta),
                              update_step=state.update_step + 1, env_steps=env_steps,
                              nonfinite=nonfinite)
        return state, metrics

    def train(key: jax.Array) -> tuple[LirpgState, Metrics]:
        state = init(key)
        return jax.lax.scan(lambda s, _: update(s), state, None, length=num_updates)

    def evaluate(state: LirpgState, key: jax.Array, num_episodes: int = 16,
                 deterministic: bool = False) -> jax.Array:
        """Returns (true, undelayed) of ``num_episodes`` fresh episodes of the policy."""
        check_one_seed(state)
        fn = lambda obs, k: act(state, obs, k, deterministic)
        return evaluate_episodes(env, fn, key, num_episodes, spec.episode_length)

    return Trainer(
        config=config, env=env, spec=spec, policy=policy, value=value, reward=reward,
        num_updates=num_updates, init=init, update=update, train=train, act=act,
        evaluate=evaluate, intrinsic_reward=intrinsic_reward,
        prepare=lambda s: prepare(s)[:2], split_params=split_params, lookahead=lookahead,
        outer_loss=outer_loss, meta_gradient=meta_gradient,
    )


__all__ = ["A2C_PRESETS", "LOOKAHEADS", "PRESETS", "A2CConfig", "Batch", "Config", "LirpgState",
           "Trainer", "make_train", "preset"]
