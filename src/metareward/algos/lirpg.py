"""LIRPG: learning intrinsic rewards for policy-gradient methods (Zheng, Oh & Singh 2018).

"On Learning Intrinsic Rewards for Policy Gradient Methods", NeurIPS 2018, with the
details of the authors' code (``Hwhitetooth/lirpg``, on OpenAI baselines):

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

The module reads as Algorithm 1: :func:`init_state` (line 2), :func:`collect` (line 4,
with :func:`prepare_batch`: the advantages of ``r_ex`` and the ``eta``-free part of the
mixed ones), :func:`mixed_advantage` and :func:`inner_loss` (line 5), :func:`lookahead`
(line 6), :func:`outer_loss` (line 7), :func:`meta_gradient` (lines 8-9),
:func:`reward_step` (line 10), :func:`minibatch_step` / :func:`optimise` /
:func:`update` (the loop). The stages are pure functions of :func:`make_parts`'s static
:class:`Parts`; :func:`lookahead`, :func:`outer_loss`, :func:`meta_gradient` and
:func:`reward_step` take parameter pytrees (``{"policy", "value"}`` and ``{"reward",
"value_ex"}``) or, as the learner passes them, their flat vectors.

The intrinsic reward is any flax module ``net(obs, action) -> [...]``
(``make_train(config, env, reward_net=net)``); by default the config's
:class:`metareward.nets.IntrinsicReward`.

Usage::

    env = metareward.envs.make("cartpole", reward_delay=10)
    trainer = lirpg.make_train(lirpg.preset("cartpole"), env)
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
from brax.envs.base import Env
from flax import struct
from jax.flatten_util import ravel_pytree

from metareward.algos import common, onpolicy, ppo
from metareward.algos import config as cfg
from metareward.aliases import Metrics, Params
from metareward.envs.spec import EnvSpec
from metareward.envs.wrappers import VmapWrapper
from metareward.meta import unrolled_hypergrad
from metareward.nets.policies import ValueNet, make_policy
from metareward.nets.rewards import IntrinsicReward
from metareward.rl.gae import discounted_cumsum, gae, td_errors
from metareward.rl.grads import clip_by_global_norm
from metareward.rl.losses import a2c_loss, ppo_loss
from metareward.rl.normalize import RunningStats
from metareward.rl.rollout import episode_metrics, episodic_sum, rollout
from metareward.rl.shuffle import permutation
from metareward.rl.stats import standardize

#: ``lookahead`` values: how the one-step look-ahead is differentiated.
LOOKAHEADS = ("exact", "constant_second_moment")


@dataclasses.dataclass(frozen=True)
class IntrinsicFields:
    """The fields LIRPG adds to its on-policy base (:class:`Config` on PPO,
    :class:`A2CConfig` on A2C), with the PPO flavour's defaults, and their checks (run
    after the base's).

    Attributes:
      intrinsic_learning_rate: Step size of ``eta`` (the intrinsic reward and ``V_ex``).
      v_ex_coef: Weight of ``V_ex``'s regression in the meta-objective.
      r_ex_coef: Weight of the extrinsic reward in the policy's reward ``r_ex_coef r_ex +
        r_in_coef r_in`` (the paper's ``G^{ex+in}``: its ``lambda`` is
        ``r_in_coef``).
      r_in_coef: Weight of the intrinsic reward there.
      reward_hidden: Hidden sizes of the default intrinsic reward net.
      lookahead: One of :data:`LOOKAHEADS` (see :class:`Config`).
    """

    intrinsic_learning_rate: float = 1e-4
    v_ex_coef: float = 0.5
    r_ex_coef: float = 0.0
    r_in_coef: float = 1.0
    reward_hidden: tuple[int, ...] = (64, 64)
    lookahead: str = "constant_second_moment"

    def __post_init__(self) -> None:
        super().__post_init__()  # the on-policy base's checks
        cfg.check("lookahead", self.lookahead, self.lookahead in LOOKAHEADS,
                  f"one of {', '.join(map(repr, LOOKAHEADS))}")
        cfg.positive("intrinsic_learning_rate", self.intrinsic_learning_rate)
        for name in ("v_ex_coef", "r_ex_coef", "r_in_coef"):
            cfg.non_negative(name, getattr(self, name))
        if not cfg.is_traced(self.r_ex_coef, self.r_in_coef):
            cfg.check("r_ex_coef, r_in_coef", (self.r_ex_coef, self.r_in_coef),
                      self.r_ex_coef > 0 or self.r_in_coef > 0, "at least one of them > 0")
        cfg.hidden_sizes("reward_hidden", self.reward_hidden)
        object.__setattr__(self, "reward_hidden", tuple(self.reward_hidden))


@dataclasses.dataclass(frozen=True)
class Config(IntrinsicFields, onpolicy.PPOBase):
    """LIRPG on PPO. Defaults: the authors' delayed-MuJoCo settings (``ppo2``,
    ``run_mujoco.py``): 1 env x 2048 steps, 10 epochs of 32 minibatches, Adam (eps 1e-5)
    with constant policy lr 3e-4 and intrinsic lr 1e-4, gamma 0.99, lambda 0.95, clip
    0.2 (also on both value losses), entropy 0, value coefficients 0.5, gradient-norm
    clip 0.5, and the policy trained on the intrinsic reward alone (``r_ex_coef=0,
    r_in_coef=1``, the paper's "intrinsic only" curve). Observations normalised;
    advantages normalised per minibatch (mixed and extrinsic); the extrinsic reward
    normalised as ``VecNormalize`` does in ``run_mujoco.py`` (``normalize_reward``;
    here after the delay, the authors' runner delays the normalised reward: the same
    scale, since the statistics are those of the discounted return either way). It
    matters: on brax ``hopper`` (generalized), reward delayed by 20, 5 seeds, training
    return after 100 updates (205k steps) without it 134, 7, 200, 84, 32, the mean
    intrinsic reward negative on every seed (a hopper paid -1 per step falls at once);
    with it 1087, 865, 559, 847, 775, the mean intrinsic reward +0.2 to +0.3
    (``metareward train lirpg --env hopper --seeds 5 --total-steps 204800 --env-arg
    reward_delay=20 --env-arg backend=generalized``, one core, 2026-12-04).

    ``lookahead``: how the meta-gradient differentiates the one-step look-ahead
    ``theta' = theta + update(eta)`` (Algorithm 1, lines 6-9; Zheng et al. 2018).
    ``"constant_second_moment"`` (default, the authors' ``ppo2.py``: their look-ahead Adam
    squares ``tf.stop_gradient(grad)``) treats Adam's denominator
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

    # (PPOBase's fields, with the authors' constant learning rate)
    anneal_lr: bool = False


@dataclasses.dataclass(frozen=True)
class A2CConfig(IntrinsicFields, onpolicy.A2CBase):
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
    lookahead: str = "exact"


#: Settings for the small gymnax envs (used by the tests and the benchmark).
PRESETS: dict[str, Config] = {
    # Our PPO presets' batch, epochs and lr (ppo.TUNED), the authors' intrinsic lr (1e-3
    # learned faster at first on cartpole, then the intrinsic reward collapsed on 3 of 4
    # seeds).
    env: Config(**ppo.TUNED[env], intrinsic_learning_rate=1e-4) for env in ("cartpole", "pendulum")
}
#: Settings for MinAtar (A2C flavour): the authors' Atari settings, a shorter run.
A2C_PRESETS: dict[str, A2CConfig] = {
    "breakout-minatar": A2CConfig(total_steps=500_000),
}


preset = cfg.preset_function(PRESETS, Config, "lirpg")


@struct.dataclass
class LirpgState(common.LearnerState):
    """What LIRPG carries between updates (a pytree).

    ``params = {"policy", "value", "reward", "value_ex"}``: ``theta`` is the policy and
    its mixed-reward value ``V_mix`` (``"value"``), ``eta`` the intrinsic reward and the
    extrinsic value ``V_ex``. ``opt_state = {"agent": ..., "reward": ...}``: the
    optimiser state of ``theta`` (policy and ``V_mix`` together, on their flattened
    vector) and of ``eta`` (intrinsic reward and ``V_ex``, flattened).
    ``intrinsic_return`` is each env's running sum of ``r_eta`` over its current episode.
    """

    obs_stats: RunningStats
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


class Minibatch(NamedTuple):
    """A minibatch of a :class:`Batch`: its rows (a :class:`Batch` of ``[M, ...]``
    arrays) and where they sit in the rollout (``batch.obs[t_idx, e_idx]`` is
    ``rows.obs``). The mixed advantage, a function of ``r_eta`` on the whole rollout,
    is read at ``(t_idx, e_idx)``; everything else uses ``rows``."""

    rows: Batch
    t_idx: jax.Array
    e_idx: jax.Array


class Parts(NamedTuple):
    """LIRPG's static parts, built once by :func:`make_parts`: the stages below are pure
    functions of these and of arrays. ``agent_opt`` steps ``theta`` (policy and
    ``V_mix``), ``reward_opt`` steps ``eta`` (intrinsic reward and ``V_ex``);
    ``unravel_theta`` / ``unravel_eta`` map the learner's flat vectors back to
    ``{"policy", "value"}`` / ``{"reward", "value_ex"}``, ``n_reward`` is the length of
    the intrinsic reward's part at the front of ``eta``."""

    config: Any
    env: Env
    venv: VmapWrapper
    spec: EnvSpec
    policy: nn.Module
    value: nn.Module
    reward_net: nn.Module
    agent_opt: optax.GradientTransformation
    reward_opt: optax.GradientTransformation
    flatten_obs: Callable[[jax.Array], jax.Array]
    prep: Callable[[RunningStats, jax.Array], jax.Array]
    num_epochs: int
    num_minibatches: int
    batch_size: int
    mb_size: int
    num_updates: int
    unravel_theta: Callable[[jax.Array], Params] | None = None
    unravel_eta: Callable[[jax.Array], Params] | None = None
    n_reward: int = 0


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer(common.LearnerBase):
    """LIRPG bound to a config and an env; all functions pure and jittable.

    Beyond the baselines' ``init / update / train / act / evaluate``:
    ``intrinsic_reward(params, obs_stats, obs, action)`` evaluates ``r_eta`` on raw
    observations (:func:`intrinsic_reward`); ``reward_net`` is the intrinsic-reward module
    in use. The algorithm's stages are the module's functions (:func:`collect`,
    :func:`lookahead`, :func:`outer_loss`, :func:`meta_gradient`, ...) of
    :func:`make_parts`'s :class:`Parts`.
    """

    policy: nn.Module
    value: nn.Module
    reward_net: nn.Module
    intrinsic_reward: Callable[..., jax.Array]
    #: Metrics that, like ``episode_return``, describe the episodes that ended in an
    #: update (NaN when none did): the runner treats them alike.
    episode_metric_names: tuple[str, ...] = ("intrinsic_return",)


# --- helpers ----------------------------------------------------------------------------


def _optimizers(config: Any, num_steps: int) -> tuple[optax.GradientTransformation, ...]:
    """``(policy, intrinsic)`` optimisers; ``num_steps`` gradient steps in the run."""

    def lr(value: float) -> optax.ScalarOrSchedule:
        return onpolicy.annealed(value, config.anneal_lr, num_steps)

    if isinstance(config, Config):
        return tuple(optax.adam(lr(v), eps=config.adam_eps)
                     for v in (config.learning_rate, config.intrinsic_learning_rate))
    return tuple(
        optax.rmsprop(lr(v), decay=config.rms_decay, eps=config.rms_eps,
                      initial_scale=config.rms_initial_scale)
        for v in (config.learning_rate, config.intrinsic_learning_rate)
    )


def _denominator(config: Any, opt_state: Any) -> Params:
    """The elementwise denominator of the policy optimiser's step in ``opt_state`` (the
    state *after* the step), a pytree like the parameters: Adam's
    ``sqrt(nu / (1 - b2^t)) + eps`` (optax's default ``b2 = 0.999``), RMSProp's
    ``sqrt(nu + eps)`` (optax's ``eps_in_sqrt``)."""
    cls = optax.ScaleByAdamState if isinstance(config, Config) else optax.ScaleByRmsState
    (st,) = [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, cls))
             if isinstance(x, cls)]
    if isinstance(config, Config):
        return jax.tree.map(
            lambda nu: jnp.sqrt(nu / (1.0 - 0.999 ** st.count.astype(nu.dtype)))
            + config.adam_eps, st.nu)
    return jax.tree.map(lambda nu: jnp.sqrt(nu + config.rms_eps), st.nu)


def _as_tree(params: Params, unravel: Callable[[jax.Array], Params]) -> Params:
    """A parameter dict: ``params`` itself, or ``unravel(params)`` if it is one flat
    vector (the learner's representation)."""
    leaf = jax.tree_util.treedef_is_leaf(jax.tree.structure(params))
    return unravel(params) if leaf else params


def _clip(grads: Params, max_norm: float) -> tuple[Params, jax.Array, jax.Array]:
    """:func:`metareward.rl.grads.clip_by_global_norm` on a gradient pytree (the global
    norm over all its leaves); a flat vector is clipped as it is."""
    flat, unravel = ravel_pytree(grads)
    clipped, norm, ok = clip_by_global_norm(flat, max_norm)
    return unravel(clipped), norm, ok


def split_params(params: Params) -> tuple[jax.Array, jax.Array]:
    """``(theta, eta)`` as flat vectors.

    Args:
        params: ``{"policy", "value", "reward", "value_ex"}``.

    Returns:
        ``theta`` (policy then ``V_mix``) and ``eta`` (intrinsic reward then ``V_ex``),
        each ``jax.flatten_util.ravel_pytree`` of its two nets.
    """
    theta = ravel_pytree({"policy": params["policy"], "value": params["value"]})[0]
    eta = ravel_pytree({"reward": params["reward"], "value_ex": params["value_ex"]})[0]
    return theta, eta


# --- Algorithm 1, line 2: initialise theta and eta ------------------------------------


def init_params(parts: Parts, k_pi: jax.Array, k_v: jax.Array) -> Params:
    """Random ``theta`` and ``eta`` (Zheng, Oh & Singh 2018, "On Learning Intrinsic
    Rewards for Policy Gradient Methods", Algorithm 1, line 2).

    Args:
        parts: The learner's static parts.
        k_pi: Key of the policy (``eta``'s keys are folded off it).
        k_v: Key of ``V_mix``.

    Returns:
        ``{"policy", "value", "reward", "value_ex"}``: the same policy and ``V_mix`` as
        PPO's from the same keys (so with ``r_in_coef=0`` LIRPG's policy is PPO's).
    """
    k_r, k_vx = jax.random.split(jax.random.fold_in(k_pi, 1))
    dummy, dummy_a = common.example_inputs(parts.spec)
    return {
        **common.actor_critic_params(parts.policy, parts.value, parts.spec, k_pi, k_v),
        "reward": parts.reward_net.init(k_r, dummy, dummy_a),
        "value_ex": parts.value.init(k_vx, dummy),
    }


def init_state(parts: Parts, key: jax.Array) -> LirpgState:
    """The initial state (Algorithm 1, line 2): parameters, optimiser states, reset envs.

    Args:
        parts: The learner's static parts.
        key: PRNG key (split as the baselines split theirs).

    Returns:
        A fresh :class:`LirpgState`.
    """
    k_pi, k_v, k_env, key = jax.random.split(key, 4)
    params = init_params(parts, k_pi, k_v)
    theta, eta = split_params(params)
    return LirpgState(
        params=params,
        opt_state={"agent": parts.agent_opt.init(theta), "reward": parts.reward_opt.init(eta)},
        **common.run_start(parts.spec, parts.venv, k_env, key),
        intrinsic_return=jnp.zeros((parts.config.num_envs,), jnp.float32),
    )


#: Env actions of the current policy (:func:`metareward.algos.common.act_with_policy`).
act = common.act_with_policy


def intrinsic_reward(parts: Parts, params: Params, obs_stats: RunningStats, obs: jax.Array,
                     action: jax.Array) -> jax.Array:
    """The intrinsic reward ``r_eta^in(s, a)`` (Zheng, Oh & Singh 2018, section 3).

    Args:
        parts: The learner's static parts.
        params: The learner's parameters (``params["reward"]`` is read).
        obs_stats: The observation normaliser's statistics.
        obs: Raw observations ``[..., *obs_shape]``.
        action: Raw (policy-space) actions.

    Returns:
        ``r_eta(s, a)``, ``[...]``.
    """
    return parts.reward_net.apply(params["reward"], parts.prep(obs_stats, obs), action)


# --- Algorithm 1, line 4: sample a trajectory with pi_theta ---------------------------


def prepare_batch(parts: Parts, params: Params, obs_stats: RunningStats, traj: Any) -> Batch:
    """The rollout prepared for learning: the advantages of ``r_ex`` (GAE with ``V_ex``,
    the outer objective's ``G^ex``, Algorithm 1, line 7 and eq. 11) and the part of the
    mixed advantages (``G^{ex+in}``, line 5 and eq. 4) that does not depend on ``eta``:
    the ``V_mix`` TD part and GAE's discounts (see :func:`mixed_advantage`).

    Args:
        parts: The learner's static parts.
        params: The parameters the rollout was collected with.
        obs_stats: The observation statistics before the rollout.
        traj: The time-major transitions of :func:`metareward.rl.rollout.rollout`.

    Returns:
        The :class:`Batch` ``[T, N, ...]``.
    """
    c = parts.config
    obs_n, next_n = parts.prep(obs_stats, traj.obs), parts.prep(obs_stats, traj.next_obs)
    v_mix = parts.value.apply(params["value"], obs_n)
    v_ex = parts.value.apply(params["value_ex"], obs_n)
    next_mix = parts.value.apply(params["value"], next_n)
    next_ex = parts.value.apply(params["value_ex"], next_n)
    r_ex = traj.reward * c.reward_scale
    adv_ex, ret_ex = gae(r_ex, v_ex, next_ex, traj.done, traj.truncation, c.gamma,
                         c.gae_lambda)
    td_mix = td_errors(jnp.zeros_like(r_ex), v_mix, next_mix, traj.done, traj.truncation,
                       c.gamma)
    discount = c.gamma * c.gae_lambda * (1.0 - traj.done)
    return Batch(obs_n, traj.action, traj.log_prob, discount, r_ex, v_mix, td_mix, v_ex,
                 adv_ex, ret_ex)


def _sample(parts: Parts, params: Params, obs_stats: RunningStats, obs: jax.Array,
            key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(raw action, env action, log-prob)`` of ``pi_theta`` on raw observations."""
    dist = parts.policy.apply(params["policy"], parts.prep(obs_stats, obs))
    raw = dist.sample(key)
    return raw, dist.to_env(raw), dist.log_prob(raw)


def collect(parts: Parts, state: LirpgState,
            key: jax.Array) -> tuple[LirpgState, Batch, Metrics]:
    """Sample ``num_steps`` steps of every env with ``pi_theta`` (Algorithm 1, line 4)
    and prepare them (:func:`prepare_batch`).

    Args:
        parts: The learner's static parts.
        state: The current state.
        key: PRNG key of the rollout.

    Returns:
        ``(state, batch, metrics)``: the state with the envs, observation statistics and
        running intrinsic returns advanced; the :class:`Batch` (observations normalised
        with the statistics before the rollout); episode metrics and the statistics of
        ``r_eta`` (of ``eta`` before this update's steps).
    """
    c, params, stats = parts.config, state.params, state.obs_stats
    policy_act = functools.partial(_sample, parts, params, stats)
    env_state, traj = rollout(parts.venv, state.env_state, policy_act, key, c.num_steps)
    batch = prepare_batch(parts, params, stats, traj)
    r_in = parts.reward_net.apply(params["reward"], batch.obs, traj.action)
    run_in, intrinsic_return = episodic_sum(state.intrinsic_return, r_in, traj.done)
    metrics = {
        **episode_metrics(traj),
        "intrinsic_return": intrinsic_return,
        "r_in_mean": jnp.mean(r_in),
        "r_in_std": jnp.std(r_in),
        "r_ex_mean": jnp.mean(batch.r_ex),
    }
    new_stats = stats.update(parts.flatten_obs(traj.obs)) if c.normalize_obs else stats
    state = state.replace(obs_stats=new_stats, env_state=env_state, intrinsic_return=run_in)
    return state, batch, metrics


def minibatch(batch: Batch, idx: jax.Array) -> Minibatch:
    """The rows ``idx`` of the time-major flattening of ``batch``.

    Args:
        batch: A rollout ``[T, N, ...]``.
        idx: Indices into ``T * N`` (``t * N + e``).

    Returns:
        The :class:`Minibatch`.
    """
    n = batch.obs.shape[1]
    t_idx, e_idx = idx // n, idx % n
    return Minibatch(jax.tree.map(lambda x: x[t_idx, e_idx], batch), t_idx, e_idx)


# --- Algorithm 1, lines 5-6: the inner step on J^{ex+in} --------------------------------


def mixed_advantage(parts: Parts, reward_params: Params, batch: Batch,
                    mb: Minibatch) -> tuple[jax.Array, jax.Array]:
    """The minibatch's advantages of the mixed reward ``r_ex_coef r_ex + r_in_coef
    r_eta`` (``G^{ex+in}`` of eq. 4, Algorithm 1, line 5) as a function of ``eta``:
    ``r_eta`` on the whole rollout, then GAE as a fixed linear map of the TD errors
    (:func:`metareward.rl.discounted_cumsum`; the authors' ``COEF_MAT``).

    Args:
        parts: The learner's static parts.
        reward_params: The intrinsic reward's parameters.
        batch: The rollout.
        mb: The minibatch.

    Returns:
        ``(advantages, V_mix targets)``, ``[M]`` each.
    """
    c = parts.config
    r_in = parts.reward_net.apply(reward_params, batch.obs, batch.action)
    delta = c.r_ex_coef * batch.r_ex + c.r_in_coef * r_in + batch.td_mix
    adv = discounted_cumsum(delta, batch.gae_discount)[mb.t_idx, mb.e_idx]
    return adv, adv + mb.rows.v_mix


def inner_loss(parts: Parts, agent_params: Params, adv: jax.Array, ret: jax.Array,
               rows: Batch) -> tuple[jax.Array, Metrics]:
    """``-J^{ex+in}(theta)`` on a minibatch plus the ``V_mix`` loss (Algorithm 1, line 5,
    eq. 4): PPO's clipped surrogate, or A2C's ``-E[A_mix log pi]`` with ``A_mix`` not
    stopped (it depends on ``eta``; the authors' ``a2c.py``).

    Args:
        parts: The learner's static parts.
        agent_params: ``{"policy", "value"}``.
        adv: Mixed advantages ``[M]`` (standardised here if the config says so).
        ret: ``V_mix`` targets ``[M]``.
        rows: The minibatch's rows.

    Returns:
        ``(loss, aux)``.
    """
    c = parts.config
    dist = parts.policy.apply(agent_params["policy"], rows.obs)
    logp = dist.log_prob(rows.action)
    v = parts.value.apply(agent_params["value"], rows.obs)
    if c.normalize_advantages:
        adv = standardize(adv)
    if isinstance(c, Config):
        return ppo_loss(logp, rows.log_prob, adv, v, rows.v_mix, ret, dist.entropy(),
                        clip_eps=c.clip_eps, vf_coef=c.vf_coef, ent_coef=c.ent_coef,
                        vf_clip_eps=c.vf_clip_eps)
    return a2c_loss(logp, adv, v, ret, dist.entropy(), vf_coef=c.vf_coef,
                    ent_coef=c.ent_coef, stop_advantage_gradient=False)


def lookahead(parts: Parts, theta: Params, opt_state: optax.OptState, eta: Params,
              batch: Batch, mb: Minibatch) -> tuple[Params, optax.OptState, Metrics]:
    """The look-ahead step ``theta' = theta + alpha grad_theta J^{ex+in}(theta; eta)``
    (Algorithm 1, lines 5-6), differentiable in ``eta``: one step of the policy's own
    optimiser on :func:`inner_loss`, gradient clipped as in the real step. A non-finite
    loss or gradient leaves ``theta`` unchanged. With ``lookahead=
    "constant_second_moment"`` the update is multiplied by ``D / stop_gradient(D)``
    (exactly 1, ``D`` the optimiser's denominator): the same step, differentiated with
    ``D`` held constant (the authors' ``ppo2.py``).

    Args:
        parts: The learner's static parts.
        theta: ``{"policy", "value"}`` parameters, or the learner's flat vector of them.
        opt_state: ``parts.agent_opt``'s state, of ``theta``'s structure.
        eta: ``{"reward", "value_ex"}`` parameters, or the learner's flat vector.
        batch: The rollout.
        mb: The minibatch.

    Returns:
        ``(theta', opt_state', stats)``: ``theta'`` of ``theta``'s structure; ``stats``
        the inner loss's, its gradient norm and ``ok`` (the step was finite).
    """
    c = parts.config
    adv, ret = mixed_advantage(parts, _as_tree(eta, parts.unravel_eta)["reward"], batch, mb)
    loss_fn = lambda th: inner_loss(parts, _as_tree(th, parts.unravel_theta), adv, ret,
                                    mb.rows)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(theta)
    grads, norm, ok = _clip(grads, c.max_grad_norm)
    ok = ok & jnp.isfinite(loss)
    updates, new_opt = parts.agent_opt.update(grads, opt_state, theta)
    if c.lookahead == "constant_second_moment":
        # d(u D / sg(D)) = du + (u / D) dD, and du = -lr dmu / D - (u / D) dD.
        updates = jax.tree.map(lambda u, d: u * (d / jax.lax.stop_gradient(d)), updates,
                               _denominator(c, new_opt))
    new_theta = jax.tree.map(lambda t, u: jnp.where(ok, t + u, t), theta, updates)
    return new_theta, new_opt, {"loss": loss, "grad_norm": norm, "ok": ok, **aux}


# --- Algorithm 1, lines 7-10: the outer step on J^ex(theta') ---------------------------


def outer_loss(parts: Parts, theta_new: Params, eta: Params,
               rows: Batch) -> tuple[jax.Array, Metrics]:
    """``-J^ex(theta')`` plus ``v_ex_coef`` times the ``V_ex`` loss (Algorithm 1, line
    7, eq. 11): PPO flavour, the clipped surrogate of the updated policy with the
    rollout's log-probs and normalised extrinsic advantages; A2C flavour,
    ``-E[A_ex pi_theta'/pi_theta]`` (the ratio unclipped, advantages as they are).

    Args:
        parts: The learner's static parts.
        theta_new: ``theta'`` (``{"policy", "value"}`` or the flat vector).
        eta: ``{"reward", "value_ex"}`` or the flat vector (``V_ex`` is read).
        rows: The minibatch's rows.

    Returns:
        ``(loss, aux)``: ``aux`` has ``outer_loss``, ``ex_policy_loss``,
        ``value_ex_loss``.
    """
    c = parts.config
    is_ppo = isinstance(c, Config)
    policy_params = _as_tree(theta_new, parts.unravel_theta)["policy"]
    logp_new = parts.policy.apply(policy_params, rows.obs).log_prob(rows.action)
    v_ex = parts.value.apply(_as_tree(eta, parts.unravel_eta)["value_ex"], rows.obs)
    adv = standardize(rows.adv_ex) if c.normalize_advantages else rows.adv_ex
    loss, aux = ppo_loss(
        logp_new, rows.log_prob, adv, v_ex, rows.v_ex, rows.ret_ex, jnp.zeros_like(logp_new),
        clip_eps=c.clip_eps if is_ppo else jnp.inf, vf_coef=c.v_ex_coef, ent_coef=0.0,
        vf_clip_eps=c.vf_clip_eps if is_ppo else None,
    )
    return loss, {"outer_loss": loss, "ex_policy_loss": aux["policy_loss"],
                  "value_ex_loss": aux["value_loss"]}


def meta_gradient(parts: Parts, theta: Params, opt_state: optax.OptState, eta: Params,
                  batch: Batch, mb: Minibatch) -> tuple[Params, Any]:
    """The meta-gradient ``grad_eta J^ex = grad_theta' J^ex(theta') grad_eta theta'``
    (Algorithm 1, lines 7-9, eqs. 10-11), as the gradient of :func:`outer_loss` through
    one :func:`lookahead` (:func:`metareward.meta.unrolled_hypergrad`, ``num_steps=1``).

    Args:
        parts: The learner's static parts.
        theta: ``theta`` as for :func:`lookahead`.
        opt_state: The policy optimiser's state, as for :func:`lookahead`.
        eta: ``eta`` as for :func:`lookahead`.
        batch: The rollout.
        mb: The minibatch.

    Returns:
        ``(d outer_loss / d eta, ((theta', opt_state', inner stats), outer stats))``,
        the gradient of ``eta``'s structure (a descent direction of ``-J^ex``).
    """
    step = functools.partial(lookahead, parts)
    stats0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                          jax.eval_shape(step, theta, opt_state, eta, batch, mb)[2])

    def inner(carry, h, _k):
        return step(carry[0], carry[1], h, batch, mb)

    def outer(carry, h):
        loss, aux = outer_loss(parts, carry[0], h, mb.rows)
        return loss, (carry, aux)

    return unrolled_hypergrad(inner, outer, (theta, opt_state, stats0), eta, 1, has_aux=True)


def reward_step(parts: Parts, eta: Params, opt_state: optax.OptState, grad: Params,
                loss: jax.Array) -> tuple[Params, optax.OptState, jax.Array, jax.Array]:
    """``eta' = eta + beta grad_eta J^ex`` (Algorithm 1, line 10) by ``parts.reward_opt``
    on the clipped meta-gradient; skipped (zero gradient to the optimiser, ``eta``
    unchanged) when it or the outer loss is not finite.

    Args:
        parts: The learner's static parts.
        eta: ``{"reward", "value_ex"}`` parameters or the flat vector.
        opt_state: ``parts.reward_opt``'s state.
        grad: :func:`meta_gradient`'s gradient.
        loss: The outer loss.

    Returns:
        ``(eta', opt_state', norm, ok)``: ``norm`` before clipping.
    """
    g, norm, ok = _clip(grad, parts.config.max_grad_norm)
    ok = ok & jnp.isfinite(loss)
    g = jax.tree.map(lambda x: jnp.where(ok, x, 0.0), g)
    upd, new_opt = parts.reward_opt.update(g, opt_state, eta)
    new_eta = jax.tree.map(lambda e, u: jnp.where(ok, e + u, e), eta, upd)
    return new_eta, new_opt, norm, ok


# --- Algorithm 1, lines 3-11: the loop ---------------------------------------------------

Carry = tuple[jax.Array, jax.Array, optax.OptState, optax.OptState, jax.Array]


def minibatch_step(parts: Parts, batch: Batch, carry: Carry,
                   idx: jax.Array) -> tuple[Carry, Metrics]:
    """Lines 5-10 of Algorithm 1 on one minibatch: ``theta <- theta'`` (the look-ahead is
    the step taken) and ``eta <- eta'``, in the same step (as the authors').

    Args:
        parts: The learner's static parts.
        batch: The rollout.
        carry: ``(theta, eta, theta's opt state, eta's opt state, nonfinite)``, flat.
        idx: The minibatch's indices into the flattened rollout.

    Returns:
        The new carry and the step's metrics.
    """
    theta, eta, opt_theta, opt_eta, nonfinite = carry
    g_eta, ((new_theta, new_opt_theta, stats), outer_aux) = meta_gradient(
        parts, theta, opt_theta, eta, batch, minibatch(batch, idx))
    meta_norm = jnp.sqrt(jnp.sum(g_eta[:parts.n_reward] ** 2))
    new_eta, new_opt_eta, eta_norm, ok_eta = reward_step(parts, eta, opt_eta, g_eta,
                                                         outer_aux["outer_loss"])
    ok = stats.pop("ok")
    nonfinite = nonfinite + (~ok) + (~ok_eta)
    metrics = {**stats, **outer_aux, "meta_grad_norm": meta_norm,
               "intrinsic_grad_norm": eta_norm}
    return (new_theta, new_eta, new_opt_theta, new_opt_eta, nonfinite), metrics


def optimise(parts: Parts, batch: Batch, carry: Carry,
             key: jax.Array) -> tuple[Carry, Metrics]:
    """``num_epochs`` passes of shuffled :func:`minibatch_step` over the rollout.

    Args:
        parts: The learner's static parts.
        batch: The rollout.
        carry: :func:`minibatch_step`'s carry.
        key: PRNG key of the shuffles.

    Returns:
        The final carry and the steps' metrics ``[num_epochs, num_minibatches]``.
    """

    def epoch(c, k):
        perm = permutation(k, parts.batch_size).reshape(parts.num_minibatches, parts.mb_size)
        return jax.lax.scan(functools.partial(minibatch_step, parts, batch), c, perm)

    return jax.lax.scan(epoch, carry, jax.random.split(key, parts.num_epochs))


def update(parts: Parts, state: LirpgState) -> tuple[LirpgState, Metrics]:
    """One iteration of Algorithm 1 (lines 4-10): :func:`collect`, then
    :func:`optimise` on the flat ``theta`` and ``eta``.

    Args:
        parts: The learner's static parts.
        state: The current state.

    Returns:
        ``(state, metrics)``, the step metrics averaged over the update.
    """
    key, k_roll, k_sgd = jax.random.split(state.key, 3)
    state, batch, roll_metrics = collect(parts, state, k_roll)
    theta, eta = split_params(state.params)
    carry = (theta, eta, state.opt_state["agent"], state.opt_state["reward"], state.nonfinite)
    (theta, eta, opt_theta, opt_eta, nonfinite), losses = optimise(parts, batch, carry, k_sgd)
    params = {**parts.unravel_theta(theta), **parts.unravel_eta(eta)}
    env_steps = state.env_steps + parts.batch_size
    metrics = {**jax.tree.map(jnp.mean, losses), **roll_metrics,
               "env_steps": env_steps, "nonfinite": nonfinite}
    state = common.advance(state, env_steps, params=params, key=key, nonfinite=nonfinite,
                           opt_state={"agent": opt_theta, "reward": opt_eta})
    return state, metrics


# --- assembly -----------------------------------------------------------------------------


def make_parts(config: Config | A2CConfig, env: Env,
               reward_net: nn.Module | None = None) -> Parts:
    """Validates ``config`` against ``env`` and builds LIRPG's static parts.

    Args:
        config: :class:`Config` (PPO flavour) or :class:`A2CConfig` (A2C flavour).
        env: A single env (batched here with ``config.num_envs``).
        reward_net: The intrinsic reward, any flax module ``net(obs, action) -> [...]``
            (normalised observations ``[..., obs_dim]``, raw actions: integer indices
            ``[...]`` if discrete, ``[..., action_size]`` otherwise), as
            :class:`metareward.nets.IntrinsicReward`; ``None`` builds that from the config.

    Returns:
        The :class:`Parts`.
    """
    if not isinstance(config, Config | A2CConfig):
        raise TypeError(
            f"expected metareward.algos.lirpg.Config or A2CConfig, got {type(config).__name__}"
        )
    is_ppo = isinstance(config, Config)
    spec = onpolicy.check_env(env)
    num_epochs = config.num_epochs if is_ppo else 1
    num_minibatches = config.num_minibatches if is_ppo else 1
    batch_size, num_updates, mb_size = onpolicy.batch_geometry(config, num_minibatches)
    agent_opt, reward_opt = _optimizers(config, num_updates * num_epochs * num_minibatches)
    if reward_net is None:
        reward_net = IntrinsicReward(spec.discrete, spec.action_size, config.reward_hidden,
                                     config.activation)
    parts = Parts(
        config, env, onpolicy.batched_env(config, env), spec,
        make_policy(spec.discrete, spec.action_size, config.hidden, config.activation,
                    config.squash, config.log_std_init),
        ValueNet(config.value_layers, config.activation), reward_net, agent_opt, reward_opt,
        *onpolicy.obs_preprocessor(spec, config.normalize_obs), num_epochs, num_minibatches,
        batch_size, mb_size, num_updates,
    )
    # theta / eta <-> parameter dicts, from the shapes alone.
    shapes = jax.eval_shape(lambda k: init_params(parts, k, k), jax.random.PRNGKey(0))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    return parts._replace(
        unravel_theta=ravel_pytree({"policy": zeros["policy"], "value": zeros["value"]})[1],
        unravel_eta=ravel_pytree({"reward": zeros["reward"], "value_ex": zeros["value_ex"]})[1],
        n_reward=ravel_pytree(zeros["reward"])[0].size,  # eta = [reward..., value_ex...]
    )


def make_train(config: Config | A2CConfig, env: Env,
               reward_net: nn.Module | None = None) -> Trainer:
    """Binds LIRPG (PPO flavour for :class:`Config`, A2C for :class:`A2CConfig`) to a
    single env, batched here with ``config.num_envs``. Bad configs or env/config
    mismatches raise here, before anything is compiled.

    Args:
        config: The config; its type chooses the flavour.
        env: A single env.
        reward_net: The intrinsic-reward module (see :func:`make_parts`); ``None``: the
            config's :class:`metareward.nets.IntrinsicReward`.

    Returns:
        The learner (:class:`Trainer`).
    """
    parts = make_parts(config, env, reward_net)
    init = functools.partial(init_state, parts)
    step = functools.partial(update, parts)
    act_fn = functools.partial(act, parts)
    return Trainer(
        config=config, env=env, spec=parts.spec, policy=parts.policy, value=parts.value,
        reward_net=parts.reward_net, num_updates=parts.num_updates, init=init, update=step,
        train=common.scan_train(init, step, parts.num_updates), act=act_fn,
        evaluate=common.episode_evaluator(env, act_fn, parts.spec.episode_length),
        intrinsic_reward=functools.partial(intrinsic_reward, parts),
    )


__all__ = [
    "A2C_PRESETS",
    "LOOKAHEADS",
    "PRESETS",
    "A2CConfig",
    "Batch",
    "Config",
    "IntrinsicFields",
    "LirpgState",
    "Minibatch",
    "Parts",
    "Trainer",
    "act",
    "collect",
    "init_params",
    "init_state",
    "inner_loss",
    "intrinsic_reward",
    "lookahead",
    "make_parts",
    "make_train",
    "meta_gradient",
    "minibatch",
    "minibatch_step",
    "mixed_advantage",
    "optimise",
    "outer_loss",
    "prepare_batch",
    "preset",
    "reward_step",
    "split_params",
    "update",
]
