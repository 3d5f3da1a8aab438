"""TARE: learned rewards by implicit differentiation, on PPO or AWR.

"Taming Reward: learning parameterised rewards for policy gradient by implicit
differentiation" (``tare_implicit_reward_learning.md``; no public code, the paper is the
source). Algorithm 1, with eqs. 11-14 of Appendix B and the details of Appendix F:

1. Collect experience with the current policy and split it at random into a training
   and a validation set. The unit of the split is an env's column of the batch (its
   ``num_steps``-step segment of one or more episodes; for AWR, its column of the replay
   buffer): a random half of the ``num_envs`` columns trains, the other half validates.
2. Train the policy ``theta`` on the training set with the parameterised advantage, the
   learned reward ``phi`` under ``stop_gradient`` (the advantages are computed once, as
   arrays): PPO (eq. 11) with ``A_phi`` = discounted sum of parameterised rewards minus
   ``V`` (GAE with ``param_gae_lambda``, 1 by default = the paper's "sum of
   parameterised rewards minus the value function"); AWR (eq. 12) with the TD(lambda)
   advantage of the parameterised reward. ``V`` regresses on the parameterised returns.
3. Update ``phi`` by the hypergradient of the extrinsic objective of the trained policy
   on the validation set (eq. 13), eq. 14 by
   :func:`metareward.meta.implicit_hypergrad`: the Hessian of the parameterised
   objective, the cross term ``d2 J_phi / d theta d phi`` on the *training* batch, the
   inverse-Hessian-vector product by ``cg_steps`` steps of conjugate gradients (Table 1:
   10) with ``cg_damping`` added to the Hessian. The two objectives are recomputed with
   ``phi`` live (Appendix F's implementation note).

   **Which Hessian (``hessian``).** The paper contradicts itself: eq. 14 as printed
   evaluates the Hessian on the *validation* batch, but Theorem 1 and its proof
   (Appendix E) differentiate the stationarity condition of the objective the policy was
   trained on, ``d J_phi(theta; train) / d theta = 0``, whose Hessian is the *training*
   batch's. Only the latter is the implicit-function-theorem derivative: on a chain with a
   linear softmax policy converged by Newton's method, the training-batch form matches
   finite differences through the re-solved inner problem to 5-6 digits, while the
   validation-batch form is off by 5-14x its size (``tests/test_tare.py``). ``hessian="train"``
   (default) is the derivative; ``hessian="validation"`` is eq. 14 as printed.

   **Curvature (``curvature``, ``cg_restarts``).** The Hessian of a policy objective is
   indefinite, and CG stops at the first direction of negative curvature (the
   ``cg_negative_curvature`` metric). With a fixed damping of 0.1 that happened in 100% of
   the solves of a chain run, after 1.9 CG steps on average (``python -m
   benchmarks.tare_curvature``, 2026-12-02, one CPU core). The paper solves with the
   Hessian and names no damping, so the default keeps the Hessian and adapts the damping:
   ``cg_restarts=3`` raises it to twice the most negative curvature met and starts CG again
   (:func:`metareward.meta.cg_solve`); negative curvature then ended 1% of the solves,
   CG ran 8.3 steps, at 2.2x the chain run's wall time. ``curvature="fisher"`` (an option,
   not the paper's matrix) replaces the Hessian by the positive semi-definite Gauss-Newton /
   Fisher matrix of the objective's likelihood term (PPO: ``kl_coef`` times the Fisher of
   eq. 11's KL penalty; AWR: the Fisher weighted by the advantage weights): 0% negative
   curvature, 5.9 CG steps, 0.77x the wall time, the same final return on the chain.
   ``cg_restarts=0`` is the fixed damping. The
   implicit derivative is taken with respect to the policy's parameters only: the value
   networks' parameters do not enter the policy objectives, so their blocks of the
   Hessian and of the extrinsic gradient are zero and drop out exactly.
   ``phi`` takes ``reward_updates`` steps of Adam (lr 1e-3, gradient-norm clip 0.5,
   Table 1).
4. With ``swap=True`` (default) the two sets swap roles and steps 2-3 run again on the
   same data (Appendix F: "we swap training trajectories and validation trajectories").

The extrinsic objective ``J(theta'; val)`` is the inner learner's own surrogate with
extrinsic advantages: PPO's clipped surrogate (eq. 3) with GAE of the extrinsic reward
and an extrinsic value ``V_ex``; AWR's weighted log-likelihood (eq. 4) with the TD(lambda)
advantage of the extrinsic reward under ``V_ex``. ``V_ex`` is trained alongside ``V``
(the paper does not say how it baselines ``J``; a learned value is the inner learner's
own choice).

The learned reward (``metareward.nets.make_reward_net``, ``reward_net`` = ``lstm-b-mul``
by default) sees ``(s_t, a_t, r_t, t)``: normalised observations, the policy's raw
actions, the extrinsic reward normalised by running statistics, and the step within the
episode divided by the env's time limit; the LSTMs run over each column with resets at
episode boundaries. The policy is trained on ``r_in_coef * r_phi + r_ex_coef * r_ex``
(default ``1, 0``: the parameterised reward alone, as the paper).

The policy's own update (``policy_objective``): PPO's clipped surrogate (``"clipped"``,
default; the paper's Algorithm 1 trains with "PPO") or eq. 11 itself (``"eq11"``: the
KL-penalised objective the hypergradient assumes the policy is stationary for, so that
TARE trains what it differentiates). Measured 2026-12-02 (4 seeds, one CPU core, eval of
32 episodes per seed): on ``chain-truncating`` the clipped default reaches the goal on
4 of 4 seeds (eval 11.5-12.5), eq. 11 on 2 of 4 (11.5, 6.4, 12.5, 8.0); on pendulum
(300k steps) eq. 11 is better (-181, -288, -251, -182 against -441, -553, -835, -199).
A mixed result, so the default stays the clipped surrogate, the paper's "PPO".
``hypergrad_coef`` scales the hypergradient; 0 freezes the reward at its initialisation
(the control for the learned reward's effect).

Usage::

    env = metareward.envs.make("chain")
    trainer = tare.make_train(tare.preset("chain"), env)
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
from metareward.meta import implicit_hypergrad
from metareward.nets.distributions import kl_divergence
from metareward.nets.policies import ValueNet, make_policy
from metareward.nets.rewards import REWARD_NETS, make_reward_net
from metareward.rl import replay
from metareward.rl.gae import discounted_cumsum, gae, td_errors
from metareward.rl.grads import clip_by_global_norm
from metareward.rl.losses import awr_policy_loss, awr_weights, ppo_loss
from metareward.rl.normalize import RunningStats
from metareward.rl.rollout import episode_metrics, evaluate_episodes, rollout
from metareward.rl.stats import masked_mean_std, standardize

Params = Any
Metrics = dict[str, jax.Array]
INNERS = ("ppo", "awr")
HESSIANS = ("train", "validation")
CURVATURES = ("hessian", "fisher")
POLICY_OBJECTIVES = ("clipped", "eq11")


@dataclasses.dataclass(frozen=True)
class Config:
    """TARE's settings. ``inner`` picks the policy learner; the fields of the other one
    are ignored.

    Shared: ``num_envs`` columns (split in halves: must be even) of ``num_steps`` steps
    per iteration; the reward net (``reward_net`` one of
    :data:`metareward.nets.REWARD_NETS`, embedding width ``reward_hidden``, LSTM width
    ``reward_lstm_hidden`` = 32 and output bound ``reward_bound`` = 20 as Table 1); Adam
    on ``phi`` with ``reward_learning_rate`` 1e-3 and gradient-norm clip
    ``reward_max_grad_norm`` 0.5 (Table 1), ``reward_updates`` steps per round;
    ``cg_steps`` 10 (Table 1); ``swap``. ``hessian`` (``"train"``, the implicit
    derivative, or ``"validation"``, eq. 14 as printed), ``curvature`` (``"hessian"`` or
    ``"fisher"``), ``cg_restarts`` (adaptive damping), ``policy_objective``
    (``"clipped"`` or ``"eq11"``) and ``hypergrad_coef`` (0: the reward frozen): see the
    module docstring.

    PPO (defaults: the PPO baseline's MuJoCo settings, Adam 3e-4, 10 epochs, tanh 64x64):
    ``num_epochs, num_minibatches`` (per round, over the training half), ``learning_rate,
    anneal_lr, adam_eps, clip_eps, ent_coef, vf_coef, max_grad_norm,
    normalize_advantages``.

    AWR (defaults: Peng et al.'s code, ReLU 64x64 nets as TARE Table 1): ``buffer_size``
    transitions, ``td_lambda``, ``temperature`` beta, ``weight_clip``, ``value_steps`` and
    ``policy_steps`` of SGD with ``momentum`` at ``value_lr`` / ``policy_lr`` on
    minibatches of ``value_batch`` / ``policy_batch`` drawn from the training half,
    ``action_std`` (a fixed Gaussian std), ``hypergrad_batch`` transitions drawn from each
    half for the hypergradient.
    """

    inner: str = "ppo"
    num_envs: int = 8
    num_steps: int = 256
    total_steps: int = 1_000_000
    gamma: float = 0.99
    gae_lambda: float = 0.95
    param_gae_lambda: float = 1.0
    reward_scale: float = 1.0
    normalize_obs: bool = True
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    # the learned reward and its optimiser
    reward_net: str = "lstm-b-mul"
    reward_hidden: int = 64
    reward_lstm_hidden: int = 32
    reward_bound: float = 20.0
    reward_learning_rate: float = 1e-3
    reward_max_grad_norm: float = 0.5
    reward_updates: int = 1
    r_in_coef: float = 1.0
    r_ex_coef: float = 0.0
    cg_steps: int = 10
    cg_damping: float = 0.1
    kl_coef: float = 1.0
    swap: bool = True
    hessian: str = "train"
    curvature: str = "hessian"
    cg_restarts: int = 3
    policy_objective: str = "clipped"
    hypergrad_coef: float = 1.0
    # PPO
    num_epochs: int = 10
    num_minibatches: int = 16
    learning_rate: float = 3e-4
    anneal_lr: bool = False
    adam_eps: float = 1e-5
    clip_eps: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    normalize_advantages: bool = True
    log_std_init: float = 0.0
    # AWR
    buffer_size: int = 50_000
    td_lambda: float = 0.95
    temperature: float = 1.0
    weight_clip: float = 20.0
    value_steps: int = 200
    policy_steps: int = 1000
    value_batch: int = 256
    policy_batch: int = 256
    value_lr: float = 1e-2
    policy_lr: float = 5e-5
    momentum: float = 0.9
    action_std: float = 0.2
    action_bound_coef: float = 10.0
    hypergrad_batch: int = 4096

    def __post_init__(self) -> None:
        cfg.check("inner", self.inner, self.inner in INNERS, f"one of {list(INNERS)}")
        for name, allowed in (("hessian", HESSIANS), ("curvature", CURVATURES),
                              ("policy_objective", POLICY_OBJECTIVES)):
            cfg.check(name, getattr(self, name), getattr(self, name) in allowed,
                      f"one of {list(allowed)}")
        cfg.check("cg_restarts", self.cg_restarts, isinstance(self.cg_restarts, int)
                  and not isinstance(self.cg_restarts, bool) and self.cg_restarts >= 0,
                  "an int >= 0")
        for name in ("num_envs", "num_steps", "total_steps", "reward_hidden",
                     "reward_lstm_hidden", "reward_updates", "cg_steps", "num_epochs",
                     "num_minibatches", "buffer_size", "value_steps", "policy_steps",
                     "value_batch", "policy_batch", "hypergrad_batch"):
            cfg.positive_int(name, getattr(self, name))
        cfg.check("num_envs", self.num_envs, self.num_envs >= 2 and self.num_envs % 2 == 0,
                  "an even int >= 2 (the env columns split into training and validation "
                  "halves)")
        cfg.check("reward_net", self.reward_net, self.reward_net in REWARD_NETS,
                  f"one of {list(REWARD_NETS)}")
        for name in ("gamma", "gae_lambda", "param_gae_lambda", "td_lambda"):
            cfg.in_range(name, getattr(self, name), 0.0, 1.0)
        for name in ("reward_scale", "reward_bound", "reward_learning_rate",
                     "reward_max_grad_norm", "learning_rate", "adam_eps", "clip_eps",
                     "max_grad_norm", "temperature", "weight_clip", "value_lr", "policy_lr",
                     "action_std"):
            cfg.positive(name, getattr(self, name))
        if self.inner == "awr":
            cfg.check("gamma", self.gamma, self.gamma < 1.0,
                      "a number in [0, 1) for AWR (values are scaled by 1 / (1 - gamma))")
        for name in ("r_in_coef", "r_ex_coef", "cg_damping", "kl_coef", "ent_coef", "vf_coef",
                     "action_bound_coef", "hypergrad_coef"):
            cfg.non_negative(name, getattr(self, name))
        cfg.check("r_in_coef", self.r_in_coef, self.r_in_coef > 0,
                  "a number > 0 (with 0 the learned reward has no effect on the policy)")
        cfg.in_range("momentum", self.momentum, 0.0, 1.0)
        cfg.hidden_sizes("hidden", self.hidden)
        cfg.activation_name("activation", self.activation)
        object.__setattr__(self, "hidden", tuple(self.hidden))


@dataclasses.dataclass(frozen=True)
class AWRConfig(Config):
    """AWR-TARE (registered as ``tare-awr``): the same fields, with AWR's defaults (ReLU nets)."""

    inner: str = "awr"
    num_envs: int = 8
    num_steps: int = 256
    activation: str = "relu"


#: Settings for the small envs (tests, benchmark, experiments).
PRESETS: dict[str, Config] = {
    # Chain (tests/test_tare_learning.py): the policy learns slower than the reward
    # (Adam 1e-4 against the reward's 3e-3 with 5 steps per round), else it commits to
    # whatever the untrained reward favours; advantages not normalised, so that the
    # reward's scale and offset matter to the policy (normalised, they are directions the
    # hypergradient cannot see, and they drift: r_phi saturated at +-20 and some seeds
    # dithered). 320 updates of 16 x 32 steps (163,840 env steps).
    "chain": Config(
        num_envs=16, num_steps=32, total_steps=163_840, num_epochs=4, num_minibatches=4,
        learning_rate=1e-4, gamma=0.99, gae_lambda=0.95, ent_coef=0.01, normalize_obs=False,
        normalize_advantages=False, hidden=(32, 32), reward_hidden=32, reward_lstm_hidden=32,
        reward_learning_rate=3e-3, reward_updates=5,
    ),
    "pendulum": Config(
        num_envs=16, num_steps=128, total_steps=1_000_000, num_epochs=10, num_minibatches=8,
        learning_rate=1e-3, gamma=0.95, reward_scale=0.1,
    ),
}
PRESETS["chain-truncating"] = PRESETS["chain"]
#: AWR-TARE: the AWR presets' batch and learning rates, half the steps per round (two
#: rounds per iteration), a smaller buffer (the reward net runs over all of it).
AWR_PRESETS: dict[str, AWRConfig] = {
    "pendulum": AWRConfig(
        num_envs=16, num_steps=128, total_steps=200_000, buffer_size=16_384, value_steps=100,
        policy_steps=200, policy_lr=1e-3, hypergrad_batch=2048,
    ),
    "chain": AWRConfig(
        num_envs=16, num_steps=32, total_steps=81_920, buffer_size=8192, value_steps=25,
        policy_steps=50, policy_lr=1e-3, hypergrad_batch=1024, normalize_obs=False,
        hidden=(32, 32), reward_hidden=32, reward_learning_rate=1e-2, reward_updates=5,
    ),
}
AWR_PRESETS["chain-truncating"] = AWR_PRESETS["chain"]


def preset(env_name: str) -> Config:
    """The tuned config for ``env_name`` if there is one, else the paper defaults (with a
    :class:`~metareward.algos.config.DefaultConfigWarning`); ``ConfigError`` for an env
    name that is not registered (see :func:`metareward.algos.config.preset`)."""
    return cfg.preset(PRESETS, Config(), env_name, "tare")


@struct.dataclass
class TareState:
    """What TARE carries between updates (a pytree).

    ``params = {"policy", "value", "value_ex", "reward"}``: ``theta`` is the policy (the
    parameters the implicit derivative is taken for) with ``V`` (parameterised returns)
    and ``V_ex`` (extrinsic returns); ``phi`` the learned reward. ``opt_state =
    (theta's, phi's)``: PPO, one Adam state of the flat ``{policy, value, value_ex}``;
    AWR, a pair of SGD-momentum states ``(policy, {value, value_ex})``. ``reward_stats``
    normalise the extrinsic reward fed to ``r_phi``; ``episode_step`` is each env's step
    within its episode; ``param_return`` its running sum of ``r_phi``. ``buffer`` is
    AWR's replay buffer (``None`` for PPO).
    """

    params: Params
    opt_state: Any
    obs_stats: RunningStats
    reward_stats: RunningStats
    env_state: State
    key: jax.Array
    update_step: jax.Array
    env_steps: jax.Array
    nonfinite: jax.Array
    episode_step: jax.Array
    param_return: jax.Array
    buffer: Any = None


class Segment(NamedTuple):
    """Experience laid out time-major ``[T, N]`` (a rollout, or AWR's buffer): what the
    reward net, the advantages and the objectives need. ``obs`` normalised; ``r_in``
    the reward net's extrinsic-reward input (normalised); ``t_in`` its time input;
    ``td_v`` and ``td_ex`` the TD errors of ``V`` and ``V_ex`` without the reward
    (``gamma (1 - term) V(s') - V(s)``), ``v`` / ``v_ex`` the values; ``adv_ex`` /
    ``ret_ex`` the extrinsic advantages and targets; ``lam_disc`` =
    ``gamma lambda_param (1 - done)`` (PPO) or ``gamma lambda_td (1 - done)`` (AWR)."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    r_ex: jax.Array
    r_in: jax.Array
    t_in: jax.Array
    done: jax.Array
    td_v: jax.Array
    v: jax.Array
    v_ex: jax.Array
    adv_ex: jax.Array
    ret_ex: jax.Array
    lam_disc: jax.Array


class Trainer(NamedTuple):
    """TARE bound to a config and an env; all functions pure and jittable.

    Beyond ``init / update / train / act / evaluate``: ``reward(params, segment)`` the
    learned reward on a :class:`Segment`; ``param_advantage(phi, segment)`` the
    parameterised advantages and value targets as a function of the flat reward
    parameters; ``objectives(segment_train, segment_val)`` returns ``(inner_loss,
    hessian_loss, outer_loss)`` as functions of ``(policy_flat, phi_flat)`` — what
    :func:`hypergradient` differentiates; ``hypergradient(policy_flat, phi_flat,
    segment_train, segment_val)`` returns ``(d outer / d phi, aux, CGInfo)``;
    ``unravel_policy`` / ``unravel_reward`` map flat vectors back to parameter trees;
    ``collect_segment(state) -> (state, Segment)`` collects one rollout as a segment.
    """

    config: Config
    env: Env
    spec: EnvSpec
    policy: nn.Module
    value: nn.Module
    reward_net: nn.Module
    num_updates: int
    init: Callable[[jax.Array], TareState]
    update: Callable[[TareState], tuple[TareState, Metrics]]
    train: Callable[[jax.Array], tuple[TareState, Metrics]]
    act: Callable[..., jax.Array]
    evaluate: Callable[..., jax.Array]
    reward: Callable[..., jax.Array]
    param_advantage: Callable[..., tuple[jax.Array, jax.Array]]
    objectives: Callable[..., tuple[Callable, Callable, Callable]]
    hypergradient: Callable[..., Any]
    unravel_policy: Callable[[jax.Array], Params]
    unravel_reward: Callable[[jax.Array], Params]
    collect_segment: Callable[[TareState], tuple[TareState, Segment]]
    episode_metric_names: tuple[str, ...] = ("param_return",)


def eq11_loss(log_prob: jax.Array, old_log_prob: jax.Array, adv: jax.Array,
              entropy: jax.Array, kl_coef: float, ent_coef: float
              ) -> tuple[jax.Array, Metrics]:
    """TARE eq. 11 (Appendix B), minimised: ``-E[rho A] + kl_coef E[KL(pi_old || pi)] -
    ent_coef E[H]``, ``rho = pi(a|s) / pi_old(a|s)``, the KL estimated on the taken
    actions (``E[log pi_old(a|s) - log pi(a|s)]``). Smooth, unlike PPO's clipped
    surrogate; its KL term puts the Fisher information into its Hessian.

    Args:
      log_prob, old_log_prob: ``log pi(a|s)`` and ``log pi_old(a|s)`` per sample.
      adv: advantages per sample (used as given).
      entropy: ``H(pi(.|s))`` per sample.
      kl_coef, ent_coef: the penalty and bonus weights.

    Returns:
      ``(loss, {"surrogate": E[rho A], "kl": the KL estimate})``.
    """
    log_ratio = log_prob - old_log_prob
    surrogate = jnp.mean(jnp.exp(log_ratio) * adv)
    kl = -jnp.mean(log_ratio)
    loss = -surrogate + kl_coef * kl - ent_coef * jnp.mean(entropy)
    return loss, {"surrogate": surrogate, "kl": kl}


def _valid_mean_std(x: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and std of ``x [L, n]`` over the rows where ``valid [L]``."""
    return masked_mean_std(x, jnp.broadcast_to(valid[:, None], x.shape))


def _flat(x: jax.Array) -> jax.Array:
    return x.reshape((-1, *x.shape[2:]))


def make_train(config: Config, env: Env) -> Trainer:
    """Binds TARE to a single env (batched here with ``config.num_envs``). Bad configs
    and env/config mismatches raise here, before anything is compiled."""
    if not isinstance(config, Config):
        raise TypeError(f"expected metareward.algos.tare.Config, got {type(config).__name__}")
    spec = check_env(env)
    c = config
    is_ppo = c.inner == "ppo"
    T, N = c.num_steps, c.num_envs
    half = N // 2
    rounds = 2 if c.swap else 1
    batch_size = T * N
    num_updates = c.total_steps // batch_size
    if num_updates < 1:
        raise ValueError(f"total_steps={c.total_steps} is less than one rollout "
                         f"(num_envs * num_steps = {batch_size})")
    if is_ppo and (T * half) % c.num_minibatches:
        raise ValueError(f"num_steps * num_envs / 2 = {T * half} (one half's batch) must be "
                         f"divisible by num_minibatches = {c.num_minibatches}")
    rows_ = c.buffer_size // N
    if not is_ppo and rows_ < T:
        raise ValueError(f"buffer_size={c.buffer_size} holds fewer than one rollout "
                         f"(num_envs * num_steps = {batch_size})")
    venv = VmapWrapper(env, N)
    obs_dim = spec.obs_size
    if is_ppo:
        log_std = c.log_std_init
    elif cfg.is_traced(c.action_std):
        log_std = jnp.log(c.action_std)
    else:
        with jax.ensure_compile_time_eval():  # (also when make_train is itself traced)
            log_std = float(jnp.log(c.action_std))
    policy = make_policy(spec.discrete, spec.action_size, c.hidden, c.activation, False, log_std)
    value = ValueNet(c.hidden, c.activation)
    reward_net = make_reward_net(c.reward_net, discrete=spec.discrete,
                                 action_size=spec.action_size, hidden=c.reward_hidden,
                                 lstm_hidden=c.reward_lstm_hidden, bound=c.reward_bound)
    flatten_obs, prep = obs_preprocessor(spec, c.normalize_obs)
    episode_length = float(spec.episode_length)
    value_scale = 1.0 if is_ppo else 1.0 / (1.0 - c.gamma)
    if not spec.discrete:  # the env's action bounds ([-1, 1] after make's rescaling)
        a_low = jnp.asarray(spec.action_low or (-1.0,) * spec.action_size, jnp.float32)
        a_high = jnp.asarray(spec.action_high or (1.0,) * spec.action_size, jnp.float32)

    if is_ppo:
        steps = num_updates * rounds * c.num_epochs * c.num_minibatches
        lr = optax.linear_schedule(c.learning_rate, 0.0, steps) if c.anneal_lr else c.learning_rate
        theta_opt = optax.adam(lr, eps=c.adam_eps)
    else:
        policy_opt = optax.sgd(c.policy_lr, momentum=c.momentum)
        value_opt = optax.sgd(c.value_lr, momentum=c.momentum)
    reward_opt = optax.adam(c.reward_learning_rate)

    def init(key: jax.Array) -> TareState:
        k_pi, k_v, k_vx, k_r, k_env, key = jax.random.split(key, 6)
        dummy = jnp.zeros((1, obs_dim), jnp.float32)
        dummy_a = (jnp.zeros((1,), jnp.int32) if spec.discrete
                   else jnp.zeros((1, spec.action_size), jnp.float32))
        z1 = jnp.zeros((1,), jnp.float32)
        params = {
            "policy": policy.init(k_pi, dummy),
            "value": value.init(k_v, dummy),
            "value_ex": value.init(k_vx, dummy),
            "reward": reward_net.init(k_r, dummy, dummy_a, z1, z1, z1),
        }
        if is_ppo:
            theta = ravel_pytree({k: params[k] for k in ("policy", "value", "value_ex")})[0]
            theta_state = theta_opt.init(theta)
            buffer = None
        else:
            theta_state = (policy_opt.init(ravel_pytree(params["policy"])[0]),
                           value_opt.init(ravel_pytree({"value": params["value"],
                                                        "value_ex": params["value_ex"]})[0]))
            example = _row_example()
            buffer = replay.init(example, rows_)
        env_state = venv.reset(k_env)
        return TareState(
            params=params,
            opt_state=(theta_state, reward_opt.init(ravel_pytree(params["reward"])[0])),
            obs_stats=RunningStats.create((obs_dim,)),
            reward_stats=RunningStats.create(()),
            env_state=env_state,
            key=key,
            update_step=jnp.zeros((), jnp.int32),
            env_steps=jnp.zeros((), jnp.int32),
            nonfinite=jnp.zeros((), jnp.int32),
            episode_step=jnp.zeros((N,), jnp.int32),
            param_return=jnp.zeros((N,), jnp.float32),
            buffer=buffer,
        )

    def _row_example() -> dict[str, jax.ShapeDtypeStruct]:
        """One buffer row (AWR): raw observations, so that they are normalised with the
        current statistics when used."""
        a_shape = (N,) if spec.discrete else (N, spec.action_size)
        f32 = jnp.float32
        return {
            "obs": jax.ShapeDtypeStruct((N, obs_dim), f32),
            "next_obs": jax.ShapeDtypeStruct((N, obs_dim), f32),
            "action": jax.ShapeDtypeStruct(a_shape, jnp.int32 if spec.discrete else f32),
            "log_prob": jax.ShapeDtypeStruct((N,), f32),
            "reward": jax.ShapeDtypeStruct((N,), f32),
            "done": jax.ShapeDtypeStruct((N,), f32),
            "truncation": jax.ShapeDtypeStruct((N,), f32),
            "t": jax.ShapeDtypeStruct((N,), f32),
        }

    # Flat vectors <-> parameter trees, from shapes alone.
    _zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                          jax.eval_shape(init, jax.random.PRNGKey(0)).params)
    unravel_policy = ravel_pytree(_zeros["policy"])[1]
    unravel_reward = ravel_pytree(_zeros["reward"])[1]
    unravel_theta = ravel_pytree({k: _zeros[k] for k in ("policy", "value", "value_ex")})[1]
    unravel_values = ravel_pytree({"value": _zeros["value"], "value_ex": _zeros["value_ex"]})[1]

    def act(state: Any, obs: jax.Array, key: jax.Array,
            deterministic: bool = False) -> jax.Array:
        """Env actions of the current policy for a batch of raw observations (``state``:
        a train state or a :class:`~metareward.algos.policy.Policy`)."""
        dist = policy.apply(state.params["policy"], prep(state.obs_stats, obs))
        raw = dist.mode() if deterministic else dist.sample(key)
        return dist.to_env(raw)

    # ----------------------------------------------------------------- the reward
    def reward(reward_params: Params, seg: Segment) -> jax.Array:
        """``r_phi`` on a time-major segment ``[T, n]``."""
        return reward_net.apply(reward_params, seg.obs, seg.action, seg.r_in, seg.t_in, seg.done)

    def param_advantage(phi: jax.Array, seg: Segment) -> tuple[jax.Array, jax.Array]:
        """Parameterised advantages and ``V`` targets ``[T, n]``, differentiable in the
        flat reward parameters ``phi``: GAE / TD(lambda) of ``r_in_coef r_phi + r_ex_coef
        r_ex`` under ``V`` (a linear map of the reward, :func:`discounted_cumsum`)."""
        r = c.r_in_coef * reward(unravel_reward(phi), seg) + c.r_ex_coef * seg.r_ex
        adv = discounted_cumsum(r + seg.td_v, seg.lam_disc)
        return adv, adv + seg.v

    # ------------------------------------------------------------ the objectives
    def ppo_objective(pol: jax.Array, seg: Segment, adv: jax.Array, kl_coef: float,
                      ent_coef: float):
        """Eq. 11 (eq. 3 with extrinsic advantages) on a segment, minimised
        (:func:`eq11_loss`); advantages normalised over the set if
        ``normalize_advantages``."""
        dist = policy.apply(unravel_policy(pol), _flat(seg.obs))
        adv = _flat(adv)
        if c.normalize_advantages:
            adv = standardize(adv)
        logp = dist.log_prob(_flat(seg.action))
        return eq11_loss(logp, _flat(seg.log_prob), adv, dist.entropy(), kl_coef, ent_coef)

    def fisher_objective(pol: jax.Array, seg: Segment, weight: jax.Array | float,
                         idx=None) -> jax.Array:
        """``E_s[weight KL(pi_sg(.|s) || pi(.|s))]`` with ``pi_sg`` the same policy under
        ``stop_gradient``: its Hessian at ``pol`` is the (weighted) Fisher information,
        the Gauss-Newton matrix of the policy's log-likelihood (positive semi-definite)."""
        obs = _flat(seg.obs) if idx is None else seg.obs[idx]
        dist = policy_dist(unravel_policy(pol), obs)
        fixed = jax.tree.map(jax.lax.stop_gradient, dist)
        return jnp.mean(weight * kl_divergence(fixed, dist))

    def policy_dist(pol_params: Params, obs: jax.Array):
        """The policy's distribution; AWR's Gaussian std is fixed (no gradient)."""
        if not is_ppo and not spec.discrete:
            inner = dict(pol_params["params"])
            inner["log_std"] = jax.lax.stop_gradient(inner["log_std"])
            pol_params = {**pol_params, "params": inner}
        return policy.apply(pol_params, obs)

    def awr_objective(pol: jax.Array, seg: Segment, adv: jax.Array, idx, valid: jax.Array):
        """AWR's weighted log-likelihood (eqs. 4, 12) of the policy ``pol`` on the entries
        ``idx = (t, e)`` of ``seg``, minimised; the advantages ``adv [T, n]`` are first
        normalised over the valid rows (as the AWR code) and exponentiated, clipped."""
        if c.normalize_advantages:
            mean, std = _valid_mean_std(adv, valid)
            adv = (adv - mean) / (std + 1e-5)
        t, e = idx
        w = awr_weights(adv[t, e], c.temperature, c.weight_clip)
        dist = policy_dist(unravel_policy(pol), seg.obs[t, e])
        return awr_policy_loss(dist.log_prob(seg.action[t, e]), w), w

    def objectives(seg_tr: Segment, seg_va: Segment, idx_tr=None, idx_va=None,
                   valid: jax.Array | None = None, phi: jax.Array | None = None):
        """``(inner_loss, hessian_loss, outer_loss)``, functions of ``(pol, phi)`` (flat):
        ``-J_phi`` on the training set, the curvature CG uses, and ``-J_ex`` on the
        validation set (with aux metrics) — eq. 14's three terms. PPO: the whole segments.
        AWR: the entries ``idx_tr`` / ``idx_va`` (``(t, e)`` index pairs) of the segments,
        advantages normalised over the ``valid`` rows.

        The curvature is ``-J_phi``'s Hessian on the training set (``hessian="train"``)
        or on the validation set (``"validation"``), or with ``curvature="fisher"`` the
        Fisher of that set (:func:`fisher_objective`: ``kl_coef`` times it for PPO, the
        advantage weights for AWR). With ``phi`` given, its advantages are computed once
        at ``phi`` (the curvature is in the policy's parameters only, so this is exact)
        and its ``phi`` argument is ignored: CG's matrix-vector products then do not
        rerun the reward net."""
        if is_ppo:
            def obj(pol, seg, adv, idx):
                return ppo_objective(pol, seg, adv, c.kl_coef, c.ent_coef)[0]

            def fisher(pol, seg, adv, idx):
                return c.kl_coef * fisher_objective(pol, seg, 1.0)

            def outer(pol, phi):
                _, aux = ppo_objective(pol, seg_va, seg_va.adv_ex, 0.0, 0.0)
                return -aux["surrogate"], {"ex_objective": aux["surrogate"],
                                           "val_kl": aux["kl"]}
        else:
            def obj(pol, seg, adv, idx):
                return awr_objective(pol, seg, adv, idx, valid)[0]

            def fisher(pol, seg, adv, idx):
                w = jax.lax.stop_gradient(awr_objective(pol, seg, adv, idx, valid)[1])
                return fisher_objective(pol, seg, w, idx)

            def outer(pol, phi):
                loss, w = awr_objective(pol, seg_va, seg_va.adv_ex, idx_va, valid)
                return loss, {"ex_objective": -loss, "ex_weight_mean": jnp.mean(w)}

        def param_obj(pol, h, seg, idx):
            return obj(pol, seg, param_advantage(h, seg)[0], idx)

        seg_h, idx_h = (seg_tr, idx_tr) if c.hessian == "train" else (seg_va, idx_va)
        curv = fisher if c.curvature == "fisher" else obj
        if phi is None:
            hess = lambda p, h: curv(p, seg_h, param_advantage(h, seg_h)[0], idx_h)
        else:
            adv_h = jax.lax.stop_gradient(param_advantage(phi, seg_h)[0])
            hess = lambda p, h: curv(p, seg_h, adv_h, idx_h)
        return lambda p, h: param_obj(p, h, seg_tr, idx_tr), hess, outer

    def hypergradient(pol: jax.Array, phi: jax.Array, seg_tr: Segment, seg_va: Segment,
                      idx_tr=None, idx_va=None, valid=None):
        """Eq. 14: ``(d (-J_ex(theta'; val)) / d phi, aux, CGInfo)`` by
        :func:`metareward.meta.implicit_hypergrad` (the curvature of :func:`objectives`,
        cross term on the training set, ``cg_steps`` of CG with ``cg_damping`` and
        ``cg_restarts``)."""
        inner, hess, outer = objectives(seg_tr, seg_va, idx_tr, idx_va, valid, phi)
        return implicit_hypergrad(inner, outer, pol, phi, hessian_loss=hess,
                                  maxiter=c.cg_steps, damping=c.cg_damping,
                                  restarts=c.cg_restarts, has_aux=True, return_info=True)

    def reward_step(pol: jax.Array, phi: jax.Array, opt_phi: Any, seg_tr: Segment,
                    seg_va: Segment, *idx):
        """One Adam step of ``phi`` on the clipped hypergradient; a non-finite one is
        skipped. Returns ``(phi, opt_phi, ok, metrics)``."""
        g, aux, info = hypergradient(pol, phi, seg_tr, seg_va, *idx)
        g, norm, ok = clip_by_global_norm(c.hypergrad_coef * g, c.reward_max_grad_norm)
        ok = ok & jnp.isfinite(aux["ex_objective"])
        upd, new_opt = reward_opt.update(g, opt_phi, phi)
        phi = jnp.where(ok, phi + upd, phi)
        metrics = {**aux, "hypergrad_norm": norm, "cg_residual": info.residual_norm,
                   "cg_iterations": info.iterations.astype(jnp.float32),
                   "cg_negative_curvature": info.negative_curvature.astype(jnp.float32),
                   "cg_min_curvature": info.min_curvature, "cg_damping": info.damping}
        return phi, new_opt, ok, metrics

    def reward_steps(pol, phi, opt_phi, seg_tr, seg_va, *idx):
        def body(carry, _):
            phi, opt_phi, bad = carry
            phi, opt_phi, ok, m = reward_step(pol, phi, opt_phi, seg_tr, seg_va, *idx)
            return (phi, opt_phi, bad + (~ok)), m

        (phi, opt_phi, bad), m = jax.lax.scan(body, (phi, opt_phi, jnp.int32(0)), None,
                                              length=c.reward_updates)
        return phi, opt_phi, bad, jax.tree.map(jnp.mean, m)

    # ------------------------------------------------------------- experience
    def collect(state: TareState):
        """A rollout, the reward net's inputs for it, and the updated statistics."""
        key, k_roll, k_learn = jax.random.split(state.key, 3)
        params, stats = state.params, state.obs_stats

        def policy_act(obs: jax.Array, k: jax.Array):
            dist = policy.apply(params["policy"], prep(stats, obs))
            raw = dist.sample(k)
            return raw, dist.to_env(raw), dist.log_prob(raw)

        env_state, traj = rollout(venv, state.env_state, policy_act, k_roll, T)

        def count(step, done):
            return jnp.where(done > 0, 0, step + 1), step

        ep_step, t_idx = jax.lax.scan(count, state.episode_step, traj.done)
        new_stats = stats.update(flatten_obs(traj.obs)) if c.normalize_obs else stats
        reward_stats = state.reward_stats.update(traj.reward)
        state = state.replace(env_state=env_state, key=key, obs_stats=new_stats,
                              reward_stats=reward_stats, episode_step=ep_step)
        return state, traj, t_idx.astype(jnp.float32), k_learn

    def values(p: Params, obs_n: jax.Array) -> jax.Array:
        """``V(s)`` in return units (AWR: the net's output times ``1 / (1 - gamma)``, as
        the AWR code's value normalisation)."""
        return value_scale * value.apply(p, obs_n)

    def make_segment(params: Params, stats: RunningStats, reward_stats: RunningStats,
                     obs, next_obs, action, log_prob, r, done, trunc, t) -> Segment:
        """A :class:`Segment` from raw time-major experience, with the current values."""
        obs_n, next_n = prep(stats, obs), prep(stats, next_obs)
        v = values(params["value"], obs_n)
        v_ex = values(params["value_ex"], obs_n)
        next_v = values(params["value"], next_n)
        next_ex = values(params["value_ex"], next_n)
        r_ex = r * c.reward_scale
        lam = c.gae_lambda if is_ppo else c.td_lambda
        adv_ex, ret_ex = gae(r_ex, v_ex, next_ex, done, trunc, c.gamma, lam)
        td_v = td_errors(jnp.zeros_like(r_ex), v, next_v, done, trunc, c.gamma)
        p_lam = c.param_gae_lambda if is_ppo else c.td_lambda
        return Segment(
            obs=obs_n, action=action, log_prob=log_prob, r_ex=r_ex,
            r_in=reward_stats.normalize(r), t_in=t / episode_length, done=done, td_v=td_v,
            v=v, v_ex=v_ex, adv_ex=adv_ex, ret_ex=ret_ex,
            lam_disc=c.gamma * p_lam * (1.0 - done),
        )

    def split(key: jax.Array) -> jax.Array:
        """``[rounds, 2, N/2]`` env columns: (training, validation) per round; the
        second round swaps them."""
        perm = jax.random.permutation(key, N)
        a, b = perm[:half], perm[half:]
        return jnp.stack([jnp.stack([a, b]), jnp.stack([b, a])])[:rounds]

    def take(seg: Segment, cols: jax.Array) -> Segment:
        return jax.tree.map(lambda x: x[:, cols], seg)

    def take_rows(seg: Segment, start: int) -> Segment:
        return jax.tree.map(lambda x: x[start:], seg)

    def reward_by_action(r_phi: jax.Array, action: jax.Array) -> Metrics:
        """Discrete envs with at most 8 actions: the mean learned reward of each action
        ``r_param_action{k}`` (0 if the action was not taken: no NaN, which the runner
        would take for a diverged run) and how often it was taken, ``action{k}_count``;
        the paper's Figure 4 compares the chain's left and right moves."""
        if not spec.discrete or spec.action_size > 8:
            return {}
        out = {}
        for k in range(spec.action_size):
            m = (action == k).astype(jnp.float32)
            n = jnp.sum(m)
            out[f"r_param_action{k}"] = jnp.sum(r_phi * m) / jnp.maximum(n, 1.0)
            out[f"action{k}_count"] = n
        return out

    def episode_param_return(state: TareState, r_phi: jax.Array, done: jax.Array):
        """Running per-episode sums of ``r_phi`` and the mean over episodes that ended."""

        def accumulate(run, x):
            r, d = x
            total = run + r
            return jnp.where(d > 0, 0.0, total), jnp.where(d > 0, total, 0.0)

        run, ended = jax.lax.scan(accumulate, state.param_return, (r_phi, done))
        n = jnp.sum(done)
        mean = jnp.where(n > 0, jnp.sum(ended) / jnp.maximum(n, 1), jnp.nan)
        return run, mean

    def collect_segment(state: TareState) -> tuple[TareState, Segment]:
        state, traj, t_in, _ = collect(state)
        return state, make_segment(state.params, state.obs_stats, state.reward_stats,
                                   traj.obs, traj.next_obs, traj.action, traj.log_prob,
                                   traj.reward, traj.done, traj.truncation, t_in)

    # ------------------------------------------------------------- PPO-TARE
    def ppo_update(state: TareState) -> tuple[TareState, Metrics]:
        state, traj, t_in, key = collect(state)
        seg = make_segment(state.params, state.obs_stats, state.reward_stats, traj.obs,
                           traj.next_obs, traj.action, traj.log_prob, traj.reward, traj.done,
                           traj.truncation, t_in)
        r_phi = reward(state.params["reward"], seg)
        param_run, param_ret = episode_param_return(state, r_phi, traj.done)
        k_split, k_rounds = jax.random.split(key)
        theta = ravel_pytree({k: state.params[k] for k in ("policy", "value", "value_ex")})[0]
        phi = ravel_pytree(state.params["reward"])[0]
        mb = T * half // c.num_minibatches

        def sgd_step(carry, batch):
            theta, opt, bad = carry

            def loss_fn(th):
                p = unravel_theta(th)
                dist = policy.apply(p["policy"], batch["obs"])
                logp = dist.log_prob(batch["action"])
                v = value.apply(p["value"], batch["obs"])
                v_ex = value.apply(p["value_ex"], batch["obs"])
                adv = batch["adv"]
                if c.normalize_advantages:
                    adv = standardize(adv)
                if c.policy_objective == "clipped":
                    loss, aux = ppo_loss(logp, batch["log_prob"], adv, v, batch["v"],
                                         batch["target"], dist.entropy(), clip_eps=c.clip_eps,
                                         vf_coef=c.vf_coef, ent_coef=c.ent_coef)
                else:  # eq. 11, what the hypergradient differentiates
                    pl, aux = eq11_loss(logp, batch["log_prob"], adv, dist.entropy(),
                                        c.kl_coef, c.ent_coef)
                    value_loss = 0.5 * jnp.mean((v - batch["target"]) ** 2)
                    loss = pl + c.vf_coef * value_loss
                    aux = {**aux, "policy_loss": pl, "value_loss": value_loss,
                           "entropy": jnp.mean(dist.entropy())}
                v_ex_loss = 0.5 * jnp.mean((v_ex - batch["ret_ex"]) ** 2)
                return loss + c.vf_coef * v_ex_loss, {**aux, "value_ex_loss": v_ex_loss}

            (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(theta)
            g, norm, ok = clip_by_global_norm(g, c.max_grad_norm)
            ok = ok & jnp.isfinite(loss)
            upd, opt = theta_opt.update(g, opt, theta)
            theta = jnp.where(ok, theta + upd, theta)
            return (theta, opt, bad + (~ok)), {"loss": loss, "grad_norm": norm, **aux}

        def one_round(carry, xs):
            theta, opt_theta, phi, opt_phi, bad = carry
            cols, k = xs
            seg_tr, seg_va = take(seg, cols[0]), take(seg, cols[1])
            adv, target = param_advantage(phi, seg_tr)  # phi fixed: arrays from here on
            data = {"obs": seg_tr.obs, "action": seg_tr.action, "log_prob": seg_tr.log_prob,
                    "adv": adv, "target": target, "v": seg_tr.v, "ret_ex": seg_tr.ret_ex}
            data = jax.tree.map(_flat, data)

            def epoch(carry, k):
                perm = jax.random.permutation(k, T * half)
                mbs = jax.tree.map(lambda x: x[perm].reshape((c.num_minibatches, mb,
                                                              *x.shape[1:])), data)
                return jax.lax.scan(sgd_step, carry, mbs)

            (theta, opt_theta, bad), losses = jax.lax.scan(
                epoch, (theta, opt_theta, bad), jax.random.split(k, c.num_epochs))
            pol = ravel_pytree(unravel_theta(theta)["policy"])[0]
            phi, opt_phi, bad_r, rmetrics = reward_steps(pol, phi, opt_phi, seg_tr, seg_va)
            metrics = {**jax.tree.map(jnp.mean, losses), **rmetrics}
            return (theta, opt_theta, phi, opt_phi, bad + bad_r), metrics

        carry = (theta, state.opt_state[0], phi, state.opt_state[1], state.nonfinite)
        (theta, opt_theta, phi, opt_phi, nonfinite), metrics = jax.lax.scan(
            one_round, carry, (split(k_split), jax.random.split(k_rounds, rounds)))
        params = {**unravel_theta(theta), "reward": unravel_reward(phi)}
        env_steps = state.env_steps + batch_size
        metrics = {**jax.tree.map(jnp.mean, metrics), **episode_metrics(traj),
                   "param_return": param_ret, "r_param_mean": jnp.mean(r_phi),
                   "r_param_std": jnp.std(r_phi), **reward_by_action(r_phi, traj.action),
                   "env_steps": env_steps,
                   "nonfinite": nonfinite}
        state = state.replace(params=params, opt_state=(opt_theta, opt_phi),
                              update_step=state.update_step + 1, env_steps=env_steps,
                              nonfinite=nonfinite, param_return=param_run)
        return state, metrics

    # ------------------------------------------------------------- AWR-TARE
    def sgd_steps(loss_fn, optimizer, flat, opt_state, bad, sample, key, num_steps):
        """``num_steps`` minibatch steps of ``optimizer`` on ``loss_fn(flat, batch)``,
        ``batch = sample(key)``; a non-finite loss or gradient is skipped and counted."""

        def step(carry, k):
            flat, opt_state, bad = carry
            (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(flat, sample(k))
            norm = jnp.sqrt(jnp.sum(g**2))
            ok = jnp.isfinite(loss) & jnp.isfinite(norm)
            upd, opt_state = optimizer.update(jnp.where(ok, g, 0.0), opt_state, flat)
            flat = jnp.where(ok, flat + upd, flat)
            return (flat, opt_state, bad + (~ok)), {**aux, "grad_norm": norm}

        (flat, opt_state, bad), m = jax.lax.scan(step, (flat, opt_state, bad),
                                                 jax.random.split(key, num_steps))
        return flat, opt_state, bad, jax.tree.map(jnp.mean, m)

    def awr_update(state: TareState) -> tuple[TareState, Metrics]:
        state, traj, t_in, key = collect(state)
        rows = {"obs": flatten_obs(traj.obs), "next_obs": flatten_obs(traj.next_obs),
                "action": traj.action, "log_prob": traj.log_prob, "reward": traj.reward,
                "done": traj.done, "truncation": traj.truncation, "t": t_in}
        buf = replay.insert(state.buffer, rows)
        d = buf.data
        valid = replay.valid_mask(buf)
        # The last invalid row ends an "episode", so that no recurrence (forward LSTM)
        # carries from the empty rows into the first valid one.
        done = jnp.where((jnp.arange(rows_) == rows_ - buf.size - 1)[:, None], 1.0, d["done"])
        params = state.params

        def segment(p: Params) -> Segment:
            return make_segment(p, state.obs_stats, state.reward_stats, d["obs"],
                                d["next_obs"], d["action"], d["log_prob"], d["reward"], done,
                                d["truncation"], d["t"])

        seg = segment(params)
        r_phi_new = reward(params["reward"], take_rows(seg, rows_ - T))
        param_run, param_ret = episode_param_return(state, r_phi_new, traj.done)
        k_split, k_rounds = jax.random.split(key)
        pol = ravel_pytree(params["policy"])[0]
        vals = ravel_pytree({"value": params["value"], "value_ex": params["value_ex"]})[0]
        phi = ravel_pytree(params["reward"])[0]

        def sample(k, n):
            t = rows_ - jnp.maximum(buf.size, 1) + jax.random.randint(
                k, (n,), 0, jnp.maximum(buf.size, 1))
            e = jax.random.randint(jax.random.fold_in(k, 1), (n,), 0, half)
            return t, e

        def one_round(carry, xs):
            pol, vals, opt_pol, opt_vals, phi, opt_phi, bad = carry
            cols, k = xs
            k_v, k_pi, k_tr, k_va = jax.random.split(k, 4)
            p = {**params, **unravel_values(vals)}
            seg_tr = take(segment(p), cols[0])
            target = param_advantage(phi, seg_tr)[1]  # phi fixed: arrays from here on
            obs_tr = seg_tr.obs

            # Value step (AWR Algorithm 1): V on the parameterised TD(lambda) targets,
            # V_ex on the extrinsic ones, in the net's normalised units.
            def value_loss(flat, batch):
                q = unravel_values(flat)
                obs, tgt, tgt_ex = batch
                lv = 0.5 * jnp.mean(jnp.square(value.apply(q["value"], obs)
                                               - tgt / value_scale))
                lx = 0.5 * jnp.mean(jnp.square(value.apply(q["value_ex"], obs)
                                               - tgt_ex / value_scale))
                return lv + lx, {"value_loss": lv, "value_ex_loss": lx}

            def value_batch(k):
                t, e = sample(k, c.value_batch)
                return obs_tr[t, e], target[t, e], seg_tr.ret_ex[t, e]

            vals, opt_vals, bad, vm = sgd_steps(value_loss, value_opt, vals, opt_vals, bad,
                                                value_batch, k_v, c.value_steps)

            # Policy step: advantages under the updated values (phi still fixed).
            p = {**params, **unravel_values(vals)}
            seg_all = segment(p)
            seg_tr, seg_va = take(seg_all, cols[0]), take(seg_all, cols[1])
            adv = param_advantage(phi, seg_tr)[0]
            mean, std = _valid_mean_std(adv, valid)
            adv_n = (adv - mean) / (std + 1e-5) if c.normalize_advantages else adv
            weights = awr_weights(adv_n, c.temperature, c.weight_clip)

            def policy_loss(flat, batch):
                obs, action, w = batch
                dist = policy_dist(unravel_policy(flat), obs)
                loss = awr_policy_loss(dist.log_prob(action), w)
                aux = {"policy_loss": loss, "entropy": jnp.mean(dist.entropy()),
                       "weight_mean": jnp.mean(w)}
                if not spec.discrete:  # the AWR code's action-bound penalty
                    mu = dist.mean
                    viol = jnp.sum(jnp.square(jnp.minimum(mu - a_low, 0.0))
                                   + jnp.square(jnp.maximum(mu - a_high, 0.0)), axis=-1)
                    loss = loss + c.action_bound_coef * 0.5 * jnp.mean(viol)
                return loss, aux

            def policy_batch(k):
                t, e = sample(k, c.policy_batch)
                return seg_tr.obs[t, e], seg_tr.action[t, e], weights[t, e]

            pol, opt_pol, bad, pm = sgd_steps(policy_loss, policy_opt, pol, opt_pol, bad,
                                              policy_batch, k_pi, c.policy_steps)
            idx_tr, idx_va = sample(k_tr, c.hypergrad_batch), sample(k_va, c.hypergrad_batch)
            phi, opt_phi, bad_r, rm = reward_steps(pol, phi, opt_phi, seg_tr, seg_va, idx_tr,
                                                   idx_va, valid)
            return (pol, vals, opt_pol, opt_vals, phi, opt_phi, bad + bad_r), {**vm, **pm, **rm}

        (opt_pol, opt_vals), opt_phi = state.opt_state
        carry = (pol, vals, opt_pol, opt_vals, phi, opt_phi, state.nonfinite)
        (pol, vals, opt_pol, opt_vals, phi, opt_phi, nonfinite), metrics = jax.lax.scan(
            one_round, carry, (split(k_split), jax.random.split(k_rounds, rounds)))
        params = {"policy": unravel_policy(pol), **unravel_values(vals),
                  "reward": unravel_reward(phi)}
        env_steps = state.env_steps + batch_size
        metrics = {**jax.tree.map(jnp.mean, metrics), **episode_metrics(traj),
                   "param_return": param_ret, "r_param_mean": jnp.mean(r_phi_new),
                   "r_param_std": jnp.std(r_phi_new),
                   **reward_by_action(r_phi_new, traj.action), "buffer_size": buf.size * N,
                   "env_steps": env_steps, "nonfinite": nonfinite}
        state = state.replace(params=params, opt_state=((opt_pol, opt_vals), opt_phi),
                              buffer=buf, update_step=state.update_step + 1,
                              env_steps=env_steps, nonfinite=nonfinite, param_return=param_run)
        return state, metrics

    update = ppo_update if is_ppo else awr_update

    def train(key: jax.Array) -> tuple[TareState, Metrics]:
        state = init(key)
        return jax.lax.scan(lambda s, _: update(s), state, None, length=num_updates)

    def evaluate(state: TareState, key: jax.Array, num_episodes: int = 16,
                 deterministic: bool = False) -> jax.Array:
        """Extrinsic returns of ``num_episodes`` fresh episodes of the policy."""
        check_one_seed(state)
        fn = lambda obs, k: act(state, obs, k, deterministic)
        return evaluate_episodes(env, fn, key, num_episodes, spec.episode_length)

    return Trainer(
        config=c, env=env, spec=spec, policy=policy, value=value, reward_net=reward_net,
        num_updates=num_updates, init=init, update=update, train=train, act=act,
        evaluate=evaluate, reward=reward, param_advantage=param_advantage,
        objectives=objectives, hypergradient=hypergradient, unravel_policy=unravel_policy,
        unravel_reward=unravel_reward, collect_segment=collect_segment,
    )


__all__ = ["AWR_PRESETS", "CURVATURES", "HESSIANS", "INNERS", "POLICY_OBJECTIVES", "PRESETS",
           "AWRConfig", "Config", "Segment", "TareState", "Trainer", "eq11_loss", "make_train",
           "preset"]
