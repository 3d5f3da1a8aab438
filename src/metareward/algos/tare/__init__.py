"""TARE: learned rewards by implicit differentiation, on PPO or AWR.

"Taming Reward: learning parameterised rewards for policy gradient by implicit
differentiation" (no public code: the paper is the source). Algorithm 1, with eqs.
11-14 of Appendix B and the details of Appendix F:

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
(default ``1, 0``: the parameterised reward alone, as the paper's method section, eqs.
11-12, "advantage computed under parameterised reward"). The paper contradicts itself
here: its introduction describes "updating policy to maximise the sum of parameterised
rewards and extrinsic rewards"; ``r_ex_coef=1`` is that reading.

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

The config's class picks the inner learner: :class:`Config` (PPO-TARE, registered as
``tare``) or :class:`AWRConfig` (AWR-TARE, ``tare-awr``): the inner learner's config
(PPO's :class:`~metareward.algos.onpolicy.PPOBase` or AWR's
:class:`~metareward.algos.awr.Config`) plus
:class:`RewardFields` (the reward net, its optimiser, the hypergradient).
``make_train(config, env, reward_net=None)`` takes any flax module with TARE's reward
signature ``net(obs, action, reward, t, done) -> [T, *B]`` (:mod:`metareward.nets.rewards`;
``metareward.nets.PerStep(m)`` adapts a per-step ``m(obs, action)``), by default the one
the config's ``reward_net`` names.

The stages, module-level pure functions of the static :class:`Parts` (``make_parts``):

* :mod:`.core`: :func:`init`, :func:`collect` (line 2), :func:`make_segment` /
  :func:`rollout_segment` (experience as the reward net and the objectives read it),
  :func:`split_columns` (line 2 and the swap), :func:`finish_update`;
* :mod:`.reward`: :func:`learned_reward`, :func:`param_advantage` (eqs. 11-12),
  :func:`objectives` and :func:`hypergradient` (eqs. 13-14), :func:`reward_step` /
  :func:`reward_update` (lines 8-10);
* :mod:`.ppo`: the inner step of PPO (lines 4-6, ``inner_step``: epochs of minibatch steps on
  ``A_phi``), a round (inner step, reward step), ``update``;
* :mod:`.awr`: the buffer, AWR's ``value_step`` and ``policy_step``, a round, ``update``.

Usage::

    env = metareward.envs.make("chain")
    trainer = tare.make_train(tare.preset("chain"), env)
    state, metrics = jax.jit(jax.vmap(trainer.train))(jax.random.split(key, 4))
"""


from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from brax.envs.base import Env
from jax.flatten_util import ravel_pytree

from metareward.algos import awr as awr_learner
from metareward.algos import common, onpolicy
from metareward.algos import config as cfg
from metareward.algos.tare import awr, ppo
from metareward.algos.tare.config import (
    AWR_PRESETS,
    CURVATURES,
    HESSIANS,
    POLICY_OBJECTIVES,
    PRESETS,
    AWRConfig,
    Config,
    RewardFields,
    preset,
)
from metareward.algos.tare.core import (
    PARAM_GROUPS,
    Parts,
    Segment,
    TareState,
    act,
    collect,
    init,
    init_params,
    make_segment,
    rollout_segment,
    split_columns,
)
from metareward.algos.tare.reward import (
    eq11_loss,
    hypergradient,
    learned_reward,
    objectives,
    param_advantage,
    reward_step,
    reward_update,
)
from metareward.envs.wrappers import VmapWrapper
from metareward.nets.policies import ValueNet, make_policy
from metareward.nets.rewards import make_reward_net


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer(common.LearnerBase):
    """TARE bound to a config and an env; all functions pure and jittable.

    The learner contract (``init / update / train / act / evaluate``), the nets
    (``policy``, ``value``, ``reward_net``: the module used, the config's or the one
    passed to :func:`make_train`) and ``parts`` (what the module-level stages take).
    Bound stages used by the examples and benchmarks: ``reward(reward_params, segment)``
    (:func:`learned_reward`), ``collect_segment(state) -> (state, Segment)``
    (:func:`rollout_segment`), ``objectives(segment_train, segment_val, ...)``
    (:func:`objectives`) and ``hypergradient(policy_flat, phi_flat, segment_train,
    segment_val, ...)`` (:func:`hypergradient`).
    """

    policy: nn.Module
    value: nn.Module
    reward_net: nn.Module
    parts: Parts
    reward: Callable[..., jax.Array]
    collect_segment: Callable[[TareState], tuple[TareState, Segment]]
    objectives: Callable[..., tuple[Callable, Callable, Callable]]
    hypergradient: Callable[..., Any]
    episode_metric_names: tuple[str, ...] = ("param_return",)


def _run_sizes(c: Config | AWRConfig) -> tuple[int, int]:
    """``(num_updates, buffer rows)``; a geometry that does not fit raises."""
    T, N = c.num_steps, c.num_envs
    batch_size, num_updates = common.run_length(c)
    if isinstance(c, Config):
        if (T * (N // 2)) % c.num_minibatches:
            raise ValueError(f"num_steps * num_envs / 2 = {T * (N // 2)} (one half's batch) "
                             f"must be divisible by num_minibatches = {c.num_minibatches}")
        return num_updates, 0
    rows = c.buffer_size // N
    if rows < T:
        raise ValueError(f"buffer_size={c.buffer_size} holds fewer than one rollout "
                         f"(num_envs * num_steps = {batch_size})")
    return num_updates, rows


def _optimizers(c: Config | AWRConfig, num_updates: int
                ) -> dict[str, optax.GradientTransformation]:
    """The optimisers, keyed like ``TareState.opt_state``: PPO's Adam on the agent
    (``"agent"``) or AWR's SGD-momentum on ``"policy"`` and ``"value"``; Adam on
    ``"reward"`` (Table 1)."""
    if isinstance(c, Config):
        rounds = 2 if c.swap else 1
        steps = num_updates * rounds * c.num_epochs * c.num_minibatches
        inner = {"agent": optax.adam(onpolicy.annealed(c.learning_rate, c.anneal_lr, steps),
                                     eps=c.adam_eps)}
    else:
        inner = {"policy": optax.sgd(c.policy_learning_rate, momentum=c.momentum),
                 "value": optax.sgd(c.value_learning_rate, momentum=c.momentum)}
    return {**inner, "reward": optax.adam(c.reward_learning_rate)}


def _log_std(c: Config | AWRConfig) -> Any:
    """The policy's initial log-std: PPO's ``log_std_init``, AWR's fixed ``log(action_std)``."""
    if isinstance(c, Config):
        return c.log_std_init
    if cfg.is_traced(c.action_std):
        return jnp.log(c.action_std)
    with jax.ensure_compile_time_eval():  # (also when make_train is itself traced)
        return float(jnp.log(c.action_std))


def make_parts(config: Config | AWRConfig, env: Env, reward_net: nn.Module | None = None
               ) -> Parts:
    """Validates ``config`` against ``env`` and builds TARE's static parts.

    Args:
      config: A :class:`Config` (PPO-TARE) or :class:`AWRConfig` (AWR-TARE).
      env: A single env (batched here with ``config.num_envs``).
      reward_net: A flax module with TARE's reward signature ``net(obs, action, reward,
        t, done) -> [T, *B]``; None builds the config's ``reward_net``
        (:func:`metareward.nets.make_reward_net`).

    Returns:
      The :class:`Parts` every stage takes.

    Raises:
      TypeError: ``config`` is not a TARE config.
      ValueError: the batch geometry does not fit (before anything is compiled).
    """
    if not isinstance(config, Config | AWRConfig):
        raise TypeError("expected metareward.algos.tare.Config or AWRConfig, got "
                        f"{type(config).__name__}")
    spec = onpolicy.check_env(env)
    c = config
    num_updates, buffer_rows = _run_sizes(c)
    squash = c.squash if isinstance(c, Config) else False
    policy = make_policy(spec.discrete, spec.action_size, c.hidden, c.activation, squash,
                         _log_std(c))
    value = ValueNet(c.value_layers, c.activation)
    if reward_net is None:
        reward_net = make_reward_net(c.reward_net, discrete=spec.discrete,
                                     action_size=spec.action_size, hidden=c.reward_hidden,
                                     lstm_hidden=c.reward_lstm_hidden, bound=c.reward_bound)
    flatten_obs, prep = onpolicy.obs_preprocessor(spec, c.normalize_obs)
    low = high = None
    if not spec.discrete:  # the env's action bounds ([-1, 1] after make's rescaling)
        low = jnp.asarray(spec.action_low or (-1.0,) * spec.action_size, jnp.float32)
        high = jnp.asarray(spec.action_high or (1.0,) * spec.action_size, jnp.float32)
    # Flat vectors <-> parameter groups, from shapes alone.
    shapes = jax.eval_shape(lambda k: init_params(policy, value, reward_net, spec, tuple(
        jax.random.split(k, 4))), jax.random.PRNGKey(0))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    unravel = {g: ravel_pytree({k: zeros[k] for k in names})[1]
               for g, names in PARAM_GROUPS.items()}
    return Parts(
        config=c, spec=spec, venv=VmapWrapper(env, c.num_envs), policy=policy, value=value,
        reward_net=reward_net, optimizers=_optimizers(c, num_updates), unravel=unravel,
        flatten_obs=flatten_obs, prep=prep, num_updates=num_updates,
        rounds=2 if c.swap else 1, buffer_rows=buffer_rows,
        value_scale=1.0 if isinstance(c, Config) else awr_learner.critic_scale(c),
        action_low=low, action_high=high)


def make_train(config: Config | AWRConfig, env: Env, reward_net: nn.Module | None = None
               ) -> Trainer:
    """Binds TARE to a single env (batched here with ``config.num_envs``). Bad configs
    and env/config mismatches raise here, before anything is compiled.

    Args:
      config: A :class:`Config` (TARE on PPO) or :class:`AWRConfig` (TARE on AWR).
      env: A single env.
      reward_net: Any flax module with TARE's reward signature ``net(obs, action,
        reward, t, done) -> [T, *B]`` (``metareward.nets.PerStep(m)`` adapts a per-step
        ``m(obs, action)``); None (default) builds the config's ``reward_net``.

    Returns:
      The :class:`Trainer`.
    """
    parts = make_parts(config, env, reward_net)
    init_fn = partial(init, parts)
    update = partial(ppo.update if parts.is_ppo else awr.update, parts)
    act_fn = partial(act, parts)
    return Trainer(
        config=config, env=env, spec=parts.spec, policy=parts.policy, value=parts.value,
        reward_net=parts.reward_net, parts=parts, num_updates=parts.num_updates,
        init=init_fn, update=update, train=common.scan_train(init_fn, update, parts.num_updates),
        act=act_fn, evaluate=common.episode_evaluator(env, act_fn, parts.spec.episode_length),
        reward=partial(learned_reward, parts), collect_segment=partial(rollout_segment, parts),
        objectives=partial(objectives, parts), hypergradient=partial(hypergradient, parts),
    )


__all__ = ["AWR_PRESETS", "CURVATURES", "HESSIANS", "PARAM_GROUPS", "POLICY_OBJECTIVES", "PRESETS",
           "AWRConfig", "Config", "Parts", "RewardFields", "Segment", "TareState",
           "Trainer", "act", "awr", "collect", "eq11_loss", "hypergradient", "init",
           "learned_reward", "make_parts", "make_segment", "make_train", "objectives",
           "param_advantage", "ppo", "preset", "reward_step", "reward_update", "rollout_segment",
           "split_columns"]
