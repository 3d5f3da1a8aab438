"""CLN bilevel intrinsic rewards (Zhang, Stadie & Ba): a Self-Tuning-Network best response.

"Learning Intrinsic Rewards as a Bi-Level Optimization Problem" (2020), Algorithm 1
and eqs. 13-21:

* an intrinsic reward ``r_{phi, eta}(s, a)``: ``phi`` the body (an MLP), ``eta`` its last
  layer (:func:`metareward.nets.cln.reward_head`);
* a PPO policy ``pi_{theta, eta}`` conditioned on ``eta`` through Conditional Layer
  Normalization on its final hidden layer (eqs. 18-20; ``cln_layers`` picks the layers):
  the CLN's affine maps are the best-response function ``w*(eta)`` (eq. 13);
* each iteration collects a rollout with ``pi_{theta, eta}`` (line 2) and adds it to the
  reward buffer ``D_r`` (line 3); then ``N_r = reward_steps`` reward iterations (lines
  4-12) update ``eta`` by Adam on ``lambda g^eta + g_r^eta`` and ``phi`` on ``g_r^phi``,
  where ``g^eta`` is the hypergradient of ``J_ex`` and ``g_r`` the gradient of the
  return-matching regulariser of eq. 21 on ``K``-step segments from ``D_r``; then
  ``N_p`` policy iterations (lines 13-17; here PPO's epochs x minibatches) update
  ``theta`` by Adam on ``J_in(theta, eta + eps')``;
* ``eta`` is perturbed by Gaussian noise ``eps ~ N(0, sigma^2)`` in both loops (lines 5,
  14), as in STN: the policy learns to respond to a neighbourhood of rewards, which is
  what gives ``g^eta`` its signal.

``Config.terms`` picks the hypergradient ``g^eta`` (section 3.2, eqs. 8-15):

* ``"best-response"`` (the paper's default, "CLN"): eq. 15,
  ``d/d eta J_ex(theta, eta + eps)`` through the CLN map only, at the current ``theta``;
* ``"lirpg"``: eq. 11 alone, ``d J_ex(theta') / d eta`` through the intrinsic advantages
  of one look-ahead policy step ``theta' = theta + update(grad_theta J_in)`` with the
  policy's conditioning held fixed (LIRPG, Zheng et al. 2018);
* ``"all"``: eqs. 9/15 + 10 + 11, the total derivative of ``J_ex(theta'(eta), eta)``
  through the look-ahead step (advantages and conditioning) and the outer conditioning.
  Eq. 12 vanishes for one step.

The three terms come out of one reverse pass, by giving each place where ``eta`` enters
its own copy (advantages / inner conditioning / outer conditioning): their gradients are
eq. 11, eq. 10 and eq. 9 respectively, and the mode sums the ones it uses. The norms of
all terms computed are logged (``hypergrad_eq9 / eq10 / eq11``, or ``hypergrad_eq15`` for
the best-response mode).

Choices the paper leaves open (see each field's comment in :class:`Config`):

* one perturbation per env column (a trajectory segment) per iteration, applied both to the
  policy's conditioning and to the reward that scores those transitions, so each
  transition's intrinsic advantage is that of the same perturbed reward the policy is
  conditioned on; the policy phase draws fresh noise for every minibatch step. This is
  cheap because the reward is linear in its last layer and GAE linear in the rewards:
  ``A_in(eta + eps) = GAE(Phi) . (eta + eps) + GAE(td_in)`` (:class:`AdvBasis`), so one
  GAE of the design vectors per rollout gives every perturbed advantage at ``D``
  multiply-adds per transition;
* minibatches are stratified by env column (each holds ``T / num_minibatches`` steps of
  every column, so ``num_steps`` must divide): a uniform sample of the rollout still, and
  the per-column conditioning broadcasts over the minibatch instead of being gathered
  per sample (and its gradient is a sum, not a scatter-add);
* the rollout is collected with the unperturbed ``eta`` (line 2), and that policy's
  log-probs are PPO's old log-probs;
* ``J_ex`` is PPO's clipped surrogate with normalised extrinsic GAE, baselined by an
  extrinsic value ``V_ex``; the intrinsic value ``V_in`` regresses on the unperturbed
  intrinsic lambda-returns; both are heads of one unconditioned MLP trained with the
  policy (one critic's cost per minibatch step);
* each of the ``N_r`` reward iterations takes its hypergradient on one of ``N_r``
  disjoint minibatches of the rollout and one regulariser batch from ``D_r``: the
  hypergradient then costs one pass over the rollout whatever ``N_r``, and ``N_r`` sets
  how fast eq. 21 fits (with ``N_r = 1`` on pendulum the regulariser took ~100k steps
  to catch up and the policy, trained on the unfitted reward meanwhile, fell behind);
* ``sigma`` is absolute, per entry of ``eta`` (whose kernel starts as a unit vector):
  0.01 by default; 0.05 made the perturbed rewards differ by about 0.3 per step on
  pendulum, as large as the reward itself, and the policy did not learn;
* the look-ahead of ``"lirpg"`` / ``"all"`` is one step of the policy's own optimiser
  (Adam with its current state, as LIRPG's code) on the whole rollout, or plain SGD with
  ``lookahead_lr`` (the paper's eq. 4);
* only ``eta`` gets the hypergradient; ``phi`` trains on the regulariser alone
  (Algorithm 1, lines 9-11);
* the reward side's step is not clipped by default (``reward_clip="none"``, Algorithm 1
  as written; no authors' code is public); the pendulum preset clips it jointly over
  ``[phi, eta, rho]`` at ``max_grad_norm`` (``"joint"``), which the two presets measured
  call for differently (lambda = 1, 8 seeds: ``split(PRNGKey(42), 4)`` and
  ``split(PRNGKey(1), 4)``, 2026-12-02):

  - pendulum (preset, 1M steps): ``"joint"`` -190 (-149, -331, -204, -161; -157, -165,
    -181, -169) against -488 for ``"none"`` (-175, -158, -178, -239; -861, -345, -875,
    -1078): without the clip 3 of the second set's 4 seeds collapsed;
  - CartPole (preset, 100k steps): ``"none"`` 427 (155, 495, 488, 492; 332, 497, 462, 498)
    against 354 for ``"joint"`` (281, 239, 364, 183; 437, 481, 500, 347).

  With Adam a joint clip cannot change how the hypergradient weighs against eq. 21's
  gradient, and at ``lambda = 1`` that weight is tiny: on CartPole the hypergradient's
  norm is ~0.006 against ~20 for eq. 21's gradient (~115 with the reward delayed by 20
  steps; on pendulum ~0.07-0.3 against ~10-20), and ``lambda = 1`` did no better than
  ``lambda = 0`` (issue 32; pendulum preset, 28 seeds: -173 against -169). Nor did any
  setting tried beat ``lambda = 0`` robustly: ``lambda`` up to 1e4, ``cln_kernel_std`` up
  to 1, ``noise_std`` 0.05, the ``"lirpg"`` and ``"all"`` terms, rewards delayed past the
  segment length. ``reward_clip="separate"`` clips the hypergradient and the
  regulariser's gradient each on its own, so a large regulariser gradient no longer
  shrinks the hypergradient's share; with ``lambda = 30`` it changes the runs (delayed
  CartPole: 430 against 229 for ``"joint"``, 345 for ``lambda = 0``) but gave no robust
  gain over ``lambda = 0`` (CartPole, 8 seeds: 409 vs 372, one 4-seed set each way). All
  of it is in ``experiments/results/cpu/CLN_SECTION_NOTES.md``;
* the regulariser normalises observations with the running statistics the rollout was
  normalised with (the intrinsic advantages' and ``V`` targets'), not the ones updated
  with that rollout, so eq. 21 fits the reward on the inputs the policy phase scores;
* ``intrinsic_return`` is logged in the env's reward units (divided by ``reward_scale``)
  so that it compares with ``episode_return`` (the paper's Figure 6).

The module reads as Algorithm 1; every stage takes the static :class:`Parts` first
(``trainer.parts``):

* :func:`init` (:func:`init_params`): the initialisation lines;
* :func:`collect`: lines 2-3, the rollout of ``pi_{theta, eta}`` and ``D_r``, with the
  intrinsic advantage basis (:func:`advantage_basis`, :func:`in_advantages`);
* :func:`reward_iterations`: lines 4-12, ``N_r`` :func:`reward_step` s, each the noise
  (line 5), ``J_ex`` (line 6, :func:`ex_objective`), eq. 21 on a batch of ``D_r`` (line 7,
  :func:`sample_segments`, :func:`regularizer`), ``g^eta`` (line 8,
  :func:`hypergradient`, through :func:`lookahead` for ``"lirpg"`` / ``"all"``), ``g_r``
  (line 9; :func:`reward_gradients`) and the Adam step (lines 10-11,
  :func:`clip_reward_gradients`);
* :func:`policy_iterations`: lines 13-17 on the updated reward (:func:`relabel`), epochs
  (:func:`policy_epoch`) of :func:`policy_step` s on ``J_in(theta, eta + eps')``
  (:func:`in_loss`);
* :func:`update`: one iteration, lines 2-17.

``make_train(config, env, reward_body=...)`` takes any flax module ``body(obs, action) ->
[..., F]`` (as :class:`metareward.nets.RewardBody`) for the reward's body ``phi``; the
default is the config's MLP.

Usage::

    env = metareward.envs.make("pendulum")
    trainer = cln.make_train(cln.preset("pendulum"), env)
    state, metrics = jax.jit(jax.vmap(trainer.train))(jax.random.split(key, 4))
"""

from __future__ import annotations

import dataclasses
import functools
import math
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
from metareward.meta import unrolled_hypergrad
from metareward.nets.cln import (
    ConditionalLayerNorm,
    RewardBody,
    ValueHeads,
    cln_layer_indices,
    init_reward_head,
    make_cln_policy,
    reward_design,
    reward_head,
    reward_head_size,
)
from metareward.rl import replay
from metareward.rl.gae import discounted_cumsum, gae, td_errors
from metareward.rl.grads import clip_by_global_norm
from metareward.rl.losses import ppo_loss
from metareward.rl.normalize import RunningStats
from metareward.rl.rollout import episode_metrics, episodic_sum, rollout, sampler
from metareward.rl.shuffle import permutation
from metareward.rl.stats import standardize

#: The hypergradient modes of ``Config.terms`` (the paper's Figure 5 ablation).
TERMS = ("best-response", "lirpg", "all")
#: The reward side's gradient clipping of ``Config.reward_clip``.
REWARD_CLIPS = ("none", "joint", "separate")
#: What the policy phase's advantages come from (``Config.policy_reward``).
POLICY_REWARDS = ("intrinsic", "extrinsic")


@dataclasses.dataclass(frozen=True)
class Config(onpolicy.PPOBase):
    """CLN bilevel intrinsic rewards on PPO.

    PPO defaults are the paper's setup (OpenAI baselines' ppo2 MuJoCo settings, 4 env
    copies x 2048 steps, Adam everywhere, ``VecNormalize``'s reward normalisation: the
    paper's PPO and LIRPG are baselines' and the LIRPG authors' code, which both wrap
    the env in it; each env copy keeps its own statistics here); the paper gives no reward-side
    hyperparameters, so those defaults are ours (see :data:`PRESETS` for tuned ones).
    """

    # --- PPO (PPOBase: the policy theta, the CLN best-response maps, V_in and V_ex) ---
    num_envs: int = 4
    #: Linear decay of the policy's Adam step size to 0, as ppo2's MuJoCo defaults
    #: (``lr=lambda f: 3e-4 * f``); the reward's step size stays constant.
    anneal_lr: bool = True
    #: Hidden layers of the policy that are CLN layers (negative counts from the end).
    cln_layers: tuple[int, ...] = (-1,)
    # --- the intrinsic reward r_{phi, eta} ---
    reward_hidden: tuple[int, ...] = (64, 64)
    reward_activation: str = "tanh"
    reward_learning_rate: float = 1e-4
    #: N_r, reward iterations per rollout (Algorithm 1, line 4): each takes the
    #: hypergradient on one of N_r disjoint minibatches of the rollout (1: the whole
    #: rollout) and one regulariser batch, so N_r sets the regulariser's steps at a fixed
    #: hypergradient cost.
    reward_steps: int = 8
    #: lambda of Algorithm 1, line 10: eta <- Adam(lambda g^eta + g_r^eta).
    hypergrad_coef: float = 1.0
    #: Weight of the regulariser's gradient ``g_r`` in lines 10-11 (Algorithm 1: 1). 0
    #: leaves ``eta`` to the hypergradient alone and freezes the body ``phi``: a
    #: diagnostic (not the paper's method) that isolates what ``g^eta`` does.
    regularizer_coef: float = 1.0
    #: Which terms make g^eta: "best-response" (eq. 15), "lirpg" (eq. 11), "all" (9+10+11).
    terms: str = "best-response"
    #: Look-ahead of "lirpg" / "all": None = one step of the policy's Adam, else SGD lr.
    lookahead_lr: float | None = None
    #: sigma of the perturbation eps ~ N(0, sigma^2) of every entry of eta (initial
    #: value if learned).
    noise_std: float = 0.01
    #: Standard deviation of the initial kernels of the CLN maps ``f_c, h_c`` (eqs. 19-20,
    #: the best-response maps ``w*(eta)``): 0.01, the Self-Tuning Networks' hypernet init
    #: (:class:`metareward.nets.cln.ConditionalLayerNorm`); larger values make the policy
    #: respond more to ``eta`` from the start.
    cln_kernel_std: float = 0.01
    #: Learn sigma = softplus(rho) by the hypergradient minus entropy_coef * entropy (STN).
    learn_noise_std: bool = False
    entropy_coef: float = 1e-3
    #: K, the segment length of the regulariser (eq. 21).
    segment_length: int = 16
    #: Capacity of the reward buffer D_r in transitions (>= one rollout).
    reward_buffer_size: int = 65_536
    #: Segments per regulariser batch.
    reward_batch_size: int = 64
    #: Updates before g^eta is used (STN's warm-up); the regulariser trains throughout.
    warmup_updates: int = 0
    #: Gradient-norm clipping (``max_grad_norm``) of the reward side's step, which the
    #: paper does not specify (Algorithm 1 has no clipping; no authors' code is public):
    #: "joint" clips ``[g_phi, g_eta, g_rho]`` by one global norm, hypergradient and
    #: regulariser together, so a large regulariser gradient also shrinks the
    #: hypergradient; "separate" clips the hypergradient ``lambda [g^eta, g^rho]``
    #: (with the entropy term) and the regulariser's ``[g_r^phi, g_r^eta]`` each by
    #: ``max_grad_norm`` before summing them; "none" (the default) is Algorithm 1 as
    #: written. See :data:`REWARD_CLIPS` and the module docstring for what was measured.
    reward_clip: str = "none"
    #: What the policy phase (lines 13-17) trains on: ``"intrinsic"``, the learned reward
    #: (Algorithm 1); ``"extrinsic"``, a diagnostic control (not the paper's method): the
    #: env's reward through PPO's extrinsic GAE, ``V_in`` regressing on its returns, with
    #: everything else (the conditioned policy, the critic's two heads, the reward
    #: iterations) unchanged. It separates what the learned reward does from what CLN's
    #: policy and critic do: on hopper (3 seeds, 2026-12-04) it kept pace with PPO (1723
    #: at 737k steps against PPO's 1331) where CLN reached 645 (experiments/README.md).
    policy_reward: str = "intrinsic"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("reward_steps", "segment_length", "reward_buffer_size",
                     "reward_batch_size"):
            cfg.positive_int(name, getattr(self, name))
        cfg.check("warmup_updates", self.warmup_updates,
                  isinstance(self.warmup_updates, int) and self.warmup_updates >= 0,
                  "an int >= 0")
        for name in ("reward_learning_rate", "noise_std", "cln_kernel_std"):
            cfg.positive(name, getattr(self, name))
        for name in ("hypergrad_coef", "entropy_coef", "regularizer_coef"):
            cfg.non_negative(name, getattr(self, name))
        if self.lookahead_lr is not None:
            cfg.positive("lookahead_lr", self.lookahead_lr)
        cfg.check("terms", self.terms, self.terms in TERMS, f"one of {list(TERMS)}")
        cfg.check("reward_clip", self.reward_clip, self.reward_clip in REWARD_CLIPS,
                  f"one of {list(REWARD_CLIPS)}")
        cfg.check("policy_reward", self.policy_reward, self.policy_reward in POLICY_REWARDS,
                  f"one of {list(POLICY_REWARDS)}")
        cfg.hidden_sizes("reward_hidden", self.reward_hidden)
        cfg.activation_name("reward_activation", self.reward_activation)
        cfg.check("cln_layers", self.cln_layers, isinstance(self.cln_layers, tuple | list),
                  "a tuple of hidden-layer indices, e.g. (-1,)")
        try:
            cln_layer_indices(tuple(self.cln_layers), len(self.hidden))
        except ValueError as e:
            raise cfg.ConfigError(f"config field cln_layers: {e}") from None
        cfg.check("segment_length", self.segment_length,
                  self.segment_length <= self.num_steps, f"<= num_steps = {self.num_steps}")
        cfg.check("reward_buffer_size", self.reward_buffer_size,
                  self.reward_buffer_size >= self.num_envs * self.num_steps,
                  f">= one rollout, num_envs * num_steps = {self.num_envs * self.num_steps}")
        for name in ("reward_hidden", "cln_layers"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


#: Settings for the small gymnax envs (tests, benchmark, experiments).
PRESETS: dict[str, Config] = {
    # Our PPO pendulum preset's batch, epochs, lr, gamma and reward scale (ppo.TUNED).
    "pendulum": Config(
        **ppo.TUNED["pendulum"],
        vf_clip_eps=None,  # as tuned and measured (ppo.PRESETS)
        # 1e-3 fitted eq. 21 too slowly (reg loss ~5 over the first 100k steps): the
        # policy, trained on the unfitted reward meanwhile, stalled on 1-2 seeds of 4
        # below -500; 3e-3 fits it within ~30k steps and learned on 12 of 12 seeds.
        reward_learning_rate=3e-3,
        reward_buffer_size=16_384,
        # Without these two, 2 of 8 seeds collapsed late (log-std down to -1.8, policy KL
        # per update up to 1.2) or stalled near -470 after an early hypergradient spike.
        # With the policy's lr annealed and g^eta held back for the first 25 of 488
        # updates (the regulariser fits eq. 21 meanwhile), 24 of 24 seeds ended >= -215.
        warmup_updates=25,
        # Tuned (and the lines above measured) with the reward side's step clipped
        # jointly; without the clip (the paper's, Config's default) 3 of 4 seeds of
        # split(PRNGKey(1), 4) collapsed (-861, -345, -875, -1078 against -157, -165,
        # -181, -169 clipped; 8 seeds: -488 against -190; module docstring).
        reward_clip="joint",
    ),
    # Our PPO cartpole preset's batch, epochs and lr (ppo.TUNED).
    "cartpole": Config(
        **ppo.TUNED["cartpole"],
        vf_clip_eps=None,  # as tuned and measured (ppo.PRESETS)
        reward_learning_rate=1e-3,
        reward_buffer_size=8_192,
    ),
}


preset = cfg.preset_function(PRESETS, Config, "cln")


@struct.dataclass
class ClnState(common.LearnerState):
    """What CLN carries between updates (a pytree).

    ``params = {"policy", "value", "reward_body", "eta", "rho"}``: ``theta`` is the CLN
    policy (best-response maps included) with the critic ``[V_in, V_ex]`` (``"value"``,
    two heads); the reward side is ``phi`` (``"reward_body"``), ``eta`` (flat last layer)
    and ``rho`` (``sigma = softplus(rho)``, per entry of ``eta``). ``opt_state`` holds
    the two Adam states, keyed by what they step: ``"agent"`` the flat ``theta`` (policy
    and critic together, :func:`split_params`), ``"reward"`` the flat
    ``psi = [phi, eta, rho]``; ``reward_buffer`` is ``D_r`` (raw observations, actions
    and scaled extrinsic rewards, time-major); ``intrinsic_return`` each env's running
    sum of ``r_in`` over its current episode.
    """

    obs_stats: RunningStats
    reward_buffer: replay.ReplayBuffer
    intrinsic_return: jax.Array


class Batch(NamedTuple):
    """One rollout prepared for learning, time-major ``[T, N, ...]``: normalised
    observations, raw actions, behaviour log-probs, GAE's discounts ``gamma lambda
    (1 - done)``, the TD part of the intrinsic TD error ``gamma (1 - term) V_in(s') -
    V_in(s)`` (the intrinsic TD error is ``r_in + td_in``), ``V_in`` and its
    (unperturbed) lambda-return targets, ``V_ex`` with extrinsic advantages and targets."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    gae_discount: jax.Array
    td_in: jax.Array
    v_in: jax.Array
    ret_in: jax.Array
    v_ex: jax.Array
    adv_ex: jax.Array
    ret_ex: jax.Array


class AdvBasis(NamedTuple):
    """What the intrinsic advantages of any last layer ``eta`` are made of, ``[T, N]``
    time-major: ``phi_gae [T, N, D]``, GAE applied to the reward's design vectors
    ``Phi(s, a)`` (:func:`metareward.nets.cln.reward_design`), and ``td_gae [T, N]``, GAE
    applied to the TD part ``td_in``; ``A_in(eta) = phi_gae . eta + td_gae``."""

    phi_gae: jax.Array
    td_gae: jax.Array


class Minibatch(NamedTuple):
    """Entries of a rollout, ``[..., N, ...]`` with the env column second to last of the
    batch axes (each column's perturbation and conditioning broadcast over it):
    normalised observations, actions, behaviour log-probs, ``V_in`` and its targets,
    extrinsic advantages and targets, and the advantage basis at the entries
    (``phi_gae [..., N, D]``, ``td_gae [..., N]``)."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    v_in: jax.Array
    ret_in: jax.Array
    adv_ex: jax.Array
    ret_ex: jax.Array
    phi_gae: jax.Array
    td_gae: jax.Array


class Segments(NamedTuple):
    """``B`` segments of ``K`` consecutive transitions of one env from ``D_r``: raw
    observations ``[B, K, ...]``, actions ``[B, K, ...]``, scaled extrinsic rewards
    ``[B, K]``."""

    obs: jax.Array
    action: jax.Array
    r_ex: jax.Array


class Parts(NamedTuple):
    """The static parts of a CLN learner, built once by :func:`make_parts`; every stage
    function of this module takes them first.

    ``config`` and the env's ``spec``; ``venv`` the env batched over ``num_envs``; the
    nets: ``policy`` (``pi_{theta, eta}`` with its CLN maps), ``value`` (the critic
    ``[V_in, V_ex]``), ``reward_body`` (``phi``: any flax module ``body(obs, action) ->
    [..., num_features]``); the Adams of ``theta`` (``policy_opt``; ``lookahead_opt`` the
    same with ``eps_root > 0``, differentiable) and of ``psi`` (``reward_opt``); the
    observation preprocessing (``flatten_obs``, ``prep(stats, obs)``); the sizes
    (``head_size`` is ``D``, the length of ``eta``; ``buffer_rows`` the rows of ``D_r``);
    and the unravellers of the flat ``theta`` and ``psi`` (:func:`split_params`).
    """

    config: Config
    spec: EnvSpec
    venv: Env
    policy: nn.Module
    value: nn.Module
    reward_body: nn.Module
    policy_opt: optax.GradientTransformation
    lookahead_opt: optax.GradientTransformation
    reward_opt: optax.GradientTransformation
    flatten_obs: Callable[[jax.Array], jax.Array]
    prep: Callable[[RunningStats, jax.Array], jax.Array]
    num_features: int
    head_size: int
    buffer_rows: int
    batch_size: int
    num_updates: int
    unravel_theta: Callable[[jax.Array], Params] | None = None
    unravel_psi: Callable[[jax.Array], Params] | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer(common.LearnerBase):
    """CLN bound to a config and an env; all functions pure and jittable.

    Beyond the learner contract (``init / update / train / act / evaluate``) it holds the
    nets (``policy``, ``value``, ``reward_body``: the module that gives the reward's
    features, the config's MLP or the one passed to :func:`make_train`) and ``parts``, the
    :class:`Parts` that the module's stage functions take first, e.g.
    ``cln.hypergradient(trainer.parts, theta, opt_state, eta, rho, z, minibatch)`` or
    ``cln.intrinsic_reward(trainer.parts, params, obs_stats, obs, action)``.
    """

    policy: nn.Module
    value: nn.Module
    reward_body: nn.Module
    parts: Parts
    #: Metrics that, like ``episode_return``, describe the episodes that ended in an
    #: update (NaN when none did): the runner treats them alike.
    episode_metric_names: tuple[str, ...] = ("intrinsic_return",)


def segment_return_loss(r_ex: jax.Array, r_in: jax.Array) -> jax.Array:
    """Eq. 21 averaged over segments: ``mean_b (sum_k r_ex[b, k] - sum_k r_in[b, k])^2``
    for ``[B, K]`` extrinsic and intrinsic rewards of the same transitions.

    Args:
        r_ex: Extrinsic rewards ``[B, K]`` of ``B`` segments of ``K`` steps.
        r_in: Intrinsic rewards ``[B, K]`` of the same transitions.

    Returns:
        The scalar loss.
    """
    return jnp.mean(jnp.square(jnp.sum(r_ex, axis=-1) - jnp.sum(r_in, axis=-1)))


def explained_fraction(loss: jax.Array, r_ex: jax.Array) -> jax.Array:
    """How much of the segment returns' variance eq. 21's fit explains:
    ``1 - L_r / Var_b(sum_k r_ex[b, k])`` (1: a perfect fit; 0: no better than the
    batch's mean; negative: worse). A diagnostic, logged as ``reg_explained``.

    Args:
        loss: :func:`segment_return_loss` on the segments.
        r_ex: Their extrinsic rewards ``[B, K]``.

    Returns:
        The fraction (a scalar).
    """
    return 1.0 - loss / (jnp.var(jnp.sum(r_ex, axis=-1)) + 1e-8)


def advantage_correlation(adv_in: jax.Array, adv_ex: jax.Array) -> jax.Array:
    """Pearson correlation of the intrinsic and extrinsic advantages of a rollout: 1 when
    the learned reward ranks the rollout's actions as the env's reward does, 0 when its
    policy gradient is unrelated to ``J_ex``'s. A diagnostic, logged as ``adv_corr``.

    Args:
        adv_in: Intrinsic advantages (any shape).
        adv_ex: Extrinsic advantages of the same transitions.

    Returns:
        The correlation (a scalar).
    """
    return jnp.mean(standardize(adv_in) * standardize(adv_ex))


#: The nets' initial standard deviation of the CLN maps' kernels.
_CLN_KERNEL_STD = ConditionalLayerNorm.kernel_std
#: The entries of ``params`` in the flat policy side ``theta`` and reward side ``psi``.
_THETA_KEYS = ("policy", "value")
_PSI_KEYS = ("reward_body", "eta", "rho")


def _is_cln_kernel(path) -> bool:
    names = [getattr(k, "key", None) for k in path]
    return (names[-1] == "kernel" and names[-2] in ("f_c", "h_c")
            and any(isinstance(n, str) and n.startswith("cln_") for n in names))


def _softplus_inv(x: float) -> float:
    if cfg.is_traced(x):
        return x + jnp.log(-jnp.expm1(-x))
    return x + math.log(-math.expm1(-x))


def _head(parts: Parts, features: jax.Array, eta: jax.Array, action: jax.Array) -> jax.Array:
    return reward_head(features, eta, action, discrete=parts.spec.discrete,
                       action_size=parts.spec.action_size)


def _normalise(config: Config, adv: jax.Array) -> jax.Array:
    return standardize(adv) if config.normalize_advantages else adv


# --- Parameters -----------------------------------------------------------------------------


def split_params(params: Params) -> tuple[jax.Array, jax.Array]:
    """The two sides of the bilevel problem as flat vectors.

    Args:
        params: ``{"policy", "value", "reward_body", "eta", "rho"}`` (:class:`ClnState`).

    Returns:
        ``(theta, psi)``: the policy side (policy and critic) and the reward side
        ``[phi, eta, rho]``, each raveled (``Parts.unravel_theta / unravel_psi`` invert).
    """
    theta = ravel_pytree({k: params[k] for k in _THETA_KEYS})[0]
    psi = ravel_pytree({k: params[k] for k in _PSI_KEYS})[0]
    return theta, psi


def init_params(parts: Parts, k_pi: jax.Array, k_v: jax.Array) -> Params:
    """Algorithm 1's initialisation: the policy ``theta`` (its CLN maps ``w*(eta)``,
    eqs. 18-20, drawn with ``cln_kernel_std``), the critic, and the intrinsic reward
    ``{phi, eta}`` with ``rho = softplus^-1(noise_std)``.

    Args:
        parts: The learner's static parts.
        k_pi: The policy's key (the reward's keys are folded from it).
        k_v: The critic's key.

    Returns:
        ``{"policy", "value", "reward_body", "eta", "rho"}``.
    """
    config, spec, D = parts.config, parts.spec, parts.head_size
    k_body, k_eta = jax.random.split(jax.random.fold_in(k_pi, 1))
    dummy, dummy_a = common.example_inputs(spec)
    policy_params = parts.policy.init(k_pi, dummy, jnp.zeros((1, D), jnp.float32))
    if cfg.maybe(config.cln_kernel_std != _CLN_KERNEL_STD):
        # The CLN maps' kernels are drawn from N(0, 0.01^2) (the nets' default);
        # rescaled, they are draws from N(0, cln_kernel_std^2).
        scale = config.cln_kernel_std / _CLN_KERNEL_STD
        policy_params = jax.tree_util.tree_map_with_path(
            lambda path, a: a * scale if _is_cln_kernel(path) else a, policy_params)
    return {
        "policy": policy_params,
        "value": parts.value.init(k_v, dummy),
        "reward_body": parts.reward_body.init(k_body, dummy, dummy_a),
        "eta": init_reward_head(k_eta, parts.num_features, spec.discrete, spec.action_size),
        "rho": jnp.full((D,), _softplus_inv(config.noise_std), jnp.float32),
    }


def init(parts: Parts, key: jax.Array) -> ClnState:
    """The learner's first state: parameters, both Adams, an empty ``D_r``, reset envs.

    Args:
        parts: The learner's static parts.
        key: The run's key.

    Returns:
        A :class:`ClnState` with ``opt_state = {"agent": Adam(theta), "reward": Adam(psi)}``.
    """
    spec, N = parts.spec, parts.config.num_envs
    k_pi, k_v, k_env, key = jax.random.split(key, 4)
    params = init_params(parts, k_pi, k_v)
    theta, psi = split_params(params)
    _, dummy_a = common.example_inputs(spec)
    row = {"obs": jnp.zeros((N, *spec.obs_shape), jnp.float32),
           "action": jnp.zeros((N, *dummy_a.shape[1:]), dummy_a.dtype),
           "r_ex": jnp.zeros((N,), jnp.float32)}
    return ClnState(
        params=params,
        opt_state={"agent": parts.policy_opt.init(theta), "reward": parts.reward_opt.init(psi)},
        reward_buffer=replay.init(row, parts.buffer_rows),
        **common.run_start(spec, parts.venv, k_env, key),
        intrinsic_return=jnp.zeros((N,), jnp.float32),
    )


# --- Acting and collecting (Algorithm 1, lines 2-3) -----------------------------------------


def act(parts: Parts, state: Any, obs: jax.Array, key: jax.Array,
        deterministic: bool = False) -> jax.Array:
    """Env actions of ``pi_{theta, eta}`` (unperturbed).

    Args:
        parts: The learner's static parts.
        state: A train state or a :class:`~metareward.algos.policy.Policy` (reads
            ``params`` and ``obs_stats``).
        obs: Raw observations ``[..., obs]``.
        key: Sampling key.
        deterministic: Take the distribution's mode.

    Returns:
        Env actions.
    """
    params = state.params
    dist = parts.policy.apply(params["policy"], parts.prep(state.obs_stats, obs),
                              params["eta"][None])
    raw = dist.mode() if deterministic else dist.sample(key)
    return dist.to_env(raw)


def intrinsic_reward(parts: Parts, params: Params, obs_stats: RunningStats, obs: jax.Array,
                     action: jax.Array) -> jax.Array:
    """The intrinsic reward ``r_{phi, eta}(s, a)`` (section 3.3: the body ``phi``, then
    the last layer ``eta``).

    Args:
        parts: The learner's static parts.
        params: The learner's params (reads ``reward_body`` and ``eta``).
        obs_stats: The observation statistics to normalise with.
        obs: Raw observations ``[..., obs]``.
        action: Raw (policy-space) actions.

    Returns:
        Rewards ``[...]``.
    """
    feats = parts.reward_body.apply(params["reward_body"], parts.prep(obs_stats, obs), action)
    return _head(parts, feats, params["eta"], action)


def collect(parts: Parts, state: ClnState
            ) -> tuple[ClnState, Batch, AdvBasis, jax.Array, Metrics]:
    """Algorithm 1, lines 2-3: a rollout of ``pi_{theta, eta}`` (unperturbed) added to
    ``D_r``, with its values, extrinsic GAE and the intrinsic advantage basis.

    Args:
        parts: The learner's static parts.
        state: The learner's state.

    Returns:
        ``(state, batch, basis, key, metrics)``: the state with the envs stepped, ``D_r``
        filled and the observation statistics updated with the rollout (the batch is
        normalised with the old ones); the :class:`Batch` (``ret_in`` the unperturbed
        intrinsic lambda-returns); its :class:`AdvBasis`; the key for the rest of the
        update; the rollout's metrics.
    """
    config, T = parts.config, parts.config.num_steps
    key, k_roll, k_rest = jax.random.split(state.key, 3)
    params, stats, prep = state.params, state.obs_stats, parts.prep
    cond = params["eta"][None]

    policy_act = sampler(lambda obs: parts.policy.apply(params["policy"], prep(stats, obs), cond))
    env_state, traj = rollout(parts.venv, state.env_state, policy_act, k_roll, T)
    obs_n, next_n = prep(stats, traj.obs), prep(stats, traj.next_obs)
    vals = parts.value.apply(params["value"], obs_n)
    next_vals = parts.value.apply(params["value"], next_n)
    v_in, v_ex = vals[..., 0], vals[..., 1]
    next_in, next_ex = next_vals[..., 0], next_vals[..., 1]
    r_ex = traj.reward * config.reward_scale
    adv_ex, ret_ex = gae(r_ex, v_ex, next_ex, traj.done, traj.truncation, config.gamma,
                         config.gae_lambda)
    td_in = td_errors(jnp.zeros_like(r_ex), v_in, next_in, traj.done, traj.truncation,
                      config.gamma)
    discount = config.gamma * config.gae_lambda * (1.0 - traj.done)
    feats = parts.reward_body.apply(params["reward_body"], obs_n, traj.action)
    r_in = _head(parts, feats, params["eta"], traj.action)
    batch = Batch(obs_n, traj.action, traj.log_prob, discount, td_in, v_in, v_in, v_ex,
                  adv_ex, ret_ex)
    basis = advantage_basis(parts, feats, batch)
    batch = batch._replace(ret_in=v_in + in_advantages(params["eta"], basis))
    buffer = replay.insert(state.reward_buffer,
                           {"obs": traj.obs, "action": traj.action, "r_ex": r_ex})

    run_in, intrinsic_return = episodic_sum(state.intrinsic_return,
                                            r_in / config.reward_scale, traj.done)
    metrics = {
        **episode_metrics(traj),
        "intrinsic_return": intrinsic_return,
        "r_in_mean": jnp.mean(r_in),
        "r_in_std": jnp.std(r_in),
        "r_ex_mean": jnp.mean(r_ex),
    }
    new_stats = stats.update(parts.flatten_obs(traj.obs)) if config.normalize_obs else stats
    state = state.replace(obs_stats=new_stats, env_state=env_state, key=key,
                          reward_buffer=buffer, intrinsic_return=run_in)
    return state, batch, basis, k_rest, metrics


# --- Intrinsic advantages of any perturbed reward ---------------------------------------------


def advantage_basis(parts: Parts, feats: jax.Array, b: Batch) -> AdvBasis:
    """GAE of the reward's design vectors and of the intrinsic TD part.

    The reward is linear in its last layer (``r = Phi . eta``, section 3.3) and GAE is
    linear in the rewards, so ``A_in(eta) = GAE(Phi) . eta + GAE(td_in)`` exactly, for
    any (perturbed, Algorithm 1 lines 5 and 14) ``eta``.

    Args:
        parts: The learner's static parts.
        feats: The reward body's features of the rollout ``[T, N, F]``.
        b: The rollout.

    Returns:
        The :class:`AdvBasis`.
    """
    phi = reward_design(feats, b.action, discrete=parts.spec.discrete,
                        action_size=parts.spec.action_size)  # [T, N, D]
    disc = b.gae_discount
    return AdvBasis(discounted_cumsum(phi, jnp.broadcast_to(disc[..., None], phi.shape)),
                    discounted_cumsum(b.td_in, disc))


def in_advantages(eta_cols: jax.Array, basis: AdvBasis) -> jax.Array:
    """Intrinsic GAE of the reward with last layer ``eta_cols`` (the advantages of
    ``J_in``, eq. 3 / Algorithm 1 line 15).

    Args:
        eta_cols: ``[D]``, one last layer for all env columns, or ``[..., N, D]``, one per
            env column.
        basis: The rollout's :class:`AdvBasis` (``phi_gae [T, N, D]``).

    Returns:
        Advantages ``[..., T, N]``.
    """
    if eta_cols.ndim == 1:  # one last layer for all columns: a matrix-vector product
        return basis.phi_gae @ eta_cols + basis.td_gae
    N, D = basis.phi_gae.shape[-2:]
    eta_cols = jnp.broadcast_to(eta_cols, (*eta_cols.shape[:-2], N, D))
    return jnp.einsum("tnd,...nd->...tn", basis.phi_gae, eta_cols) + basis.td_gae


def adv_at(eta_cols: jax.Array, mb: Minibatch) -> jax.Array:
    """:func:`in_advantages` at a minibatch's entries only: ``D`` multiply-adds per entry.

    Args:
        eta_cols: ``[N, D]``, one last layer per env column.
        mb: The minibatch ``[..., N]`` (its ``phi_gae``, ``td_gae``).

    Returns:
        Advantages ``[..., N]``.
    """
    return jnp.sum(mb.phi_gae * eta_cols, axis=-1) + mb.td_gae


def minibatch(b: Batch, basis: AdvBasis, t_idx: jax.Array) -> Minibatch:
    """The entries ``(t_idx[i, n], n)`` of a rollout.

    Args:
        b: The rollout ``[T, N]``.
        basis: Its :class:`AdvBasis`.
        t_idx: Time steps of each env column, ``[..., N]``.

    Returns:
        A :class:`Minibatch` of shape ``[..., N]``.
    """
    cols = jnp.arange(t_idx.shape[-1])

    def g(x):
        return x[t_idx, cols]

    return Minibatch(
        obs=g(b.obs), action=g(b.action), log_prob=g(b.log_prob), v_in=g(b.v_in),
        ret_in=g(b.ret_in), adv_ex=g(b.adv_ex), ret_ex=g(b.ret_ex),
        phi_gae=g(basis.phi_gae), td_gae=g(basis.td_gae))


def split_minibatches(b: Batch, basis: AdvBasis, key: jax.Array, num: int) -> Minibatch:
    """The rollout as ``num`` stratified minibatches (the ``N_r`` reward iterations' and
    the ``N_p`` policy iterations' batches, Algorithm 1 lines 4 and 13).

    Each env column's time steps are permuted on their own and dealt out evenly, so every
    minibatch holds ``T / num`` transitions of every column. The conditioning then
    broadcasts over the column axis (no per-sample gather), and the minibatch is still a
    uniform sample of the rollout, stratified by column.

    Args:
        b: The rollout ``[T, N]``.
        basis: Its :class:`AdvBasis`.
        key: Permutation key.
        num: Minibatches (divides ``T``).

    Returns:
        A :class:`Minibatch` ``[num, T / num, N]``.
    """
    T, N = b.log_prob.shape
    perm = jax.vmap(lambda k: permutation(k, T))(jax.random.split(key, N))
    return minibatch(b, basis, perm.T.reshape(num, T // num, N))


def _rows(mb: Minibatch, *extra: jax.Array) -> tuple[Minibatch, ...]:
    """A minibatch ``[..., N]`` (and per-entry arrays ``extra`` of its batch shape)
    flattened row-major to ``[B]``, so that entry ``j`` belongs to env column ``j % N``:
    the policy then tiles each column's conditioning (``tile=True``) instead of
    broadcasting it over a ``[..., N]`` layout (on a CPU the 2-D batch layout cost
    ~15% of a pendulum iteration, in transposes within the weight gradients)."""
    nb = mb.log_prob.ndim

    def flat(x):
        return None if x is None else x.reshape(-1, *x.shape[nb:])

    return (jax.tree.map(flat, mb), *(flat(x) for x in extra))


# --- The two objectives ---------------------------------------------------------------------


def ex_objective(parts: Parts, theta: jax.Array, cond: jax.Array, mb: Minibatch
                 ) -> tuple[jax.Array, Metrics]:
    """``J_ex`` of ``pi_{theta, cond[n]}`` (Algorithm 1, line 6): PPO's clipped surrogate
    with the rollout's log-probs and normalised extrinsic GAE (the policy-gradient
    objective of eqs. 9 and 15).

    Args:
        parts: The learner's static parts.
        theta: The flat policy side.
        cond: ``[N, D]``, one conditioning vector per env column.
        mb: A minibatch ``[..., N]``.

    Returns:
        ``(J_ex, {"ex_objective": J_ex})``.
    """
    config = parts.config
    p = parts.unravel_theta(theta)
    (mb,) = _rows(mb)
    logp = parts.policy.apply(p["policy"], mb.obs, cond, tile=True).log_prob(mb.action)
    adv = _normalise(config, mb.adv_ex)
    ratio = jnp.exp(logp - mb.log_prob)
    clipped = jnp.clip(ratio, 1.0 - config.clip_eps, 1.0 + config.clip_eps)
    j = jnp.mean(jnp.minimum(ratio * adv, clipped * adv))
    return j, {"ex_objective": j}


def in_loss(parts: Parts, theta: jax.Array, cond: jax.Array, adv: jax.Array, mb: Minibatch
            ) -> tuple[jax.Array, Metrics]:
    """``-J_in(theta, cond)`` (Algorithm 1, line 15) plus the value losses.

    PPO's clipped surrogate of ``pi_{theta, cond[n]}`` on intrinsic advantages, plus
    ``vf_coef`` times the ``V_in`` and ``V_ex`` losses, minus the entropy bonus.

    Args:
        parts: The learner's static parts.
        theta: The flat policy side.
        cond: ``[N, D]``, one conditioning vector per env column.
        adv: Intrinsic advantages, one per entry of ``mb``.
        mb: A minibatch ``[..., N]``.

    Returns:
        ``(loss, aux)`` with PPO's auxiliaries and ``value_ex_loss``.
    """
    config = parts.config
    p = parts.unravel_theta(theta)
    mb, adv = _rows(mb, adv)
    dist = parts.policy.apply(p["policy"], mb.obs, cond, tile=True)
    vals = parts.value.apply(p["value"], mb.obs)
    loss, aux = ppo_loss(
        dist.log_prob(mb.action), mb.log_prob, _normalise(config, adv), vals[..., 0], mb.v_in,
        mb.ret_in, dist.entropy(), clip_eps=config.clip_eps, vf_coef=config.vf_coef,
        ent_coef=config.ent_coef, vf_clip_eps=config.vf_clip_eps)
    v_ex_loss = 0.5 * jnp.mean(jnp.square(vals[..., 1] - mb.ret_ex))
    return loss + config.vf_coef * v_ex_loss, {**aux, "value_ex_loss": v_ex_loss}


# --- The reward iterations (Algorithm 1, lines 4-12) ----------------------------------------


def lookahead(parts: Parts, theta: jax.Array, opt_state: Any, cond: jax.Array,
              adv: jax.Array, mb: Minibatch) -> jax.Array:
    """``theta'``: one policy step on a minibatch (section 3.2.1, eq. 4, the inner update
    that eqs. 10-11 differentiate through), gradient clipped as in the real step.

    Args:
        parts: The learner's static parts.
        theta: The flat policy side.
        opt_state: The policy's Adam state (used unless ``lookahead_lr`` is set).
        cond: ``[N, D]`` conditioning.
        adv: Intrinsic advantages per entry.
        mb: A minibatch ``[..., N]``.

    Returns:
        ``theta'``: the policy's Adam step with its current state, or SGD with
        ``lookahead_lr``.
    """
    config = parts.config
    grads = jax.grad(lambda th: in_loss(parts, th, cond, adv, mb)[0])(theta)
    grads = clip_by_global_norm(grads, config.max_grad_norm)[0]
    if config.lookahead_lr is not None:
        return theta - config.lookahead_lr * grads
    updates, _ = parts.lookahead_opt.update(grads, opt_state, theta)
    return theta + updates


def hypergradient(parts: Parts, theta: jax.Array, opt_state: Any, eta: jax.Array,
                  rho: jax.Array, z: jax.Array, mb: Minibatch
                  ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """``g^eta`` (Algorithm 1, line 8; section 3.2, eqs. 8-15): the gradient of ``-J_ex``
    on a minibatch with the perturbation ``eps = softplus(rho) * z`` (line 5), for the
    terms of ``Config.terms``.

    "best-response" is eq. 15 (through the CLN map at the current ``theta``); "lirpg"
    eq. 11 and "all" eqs. 9 + 10 + 11, through one :func:`lookahead` step, each place
    where ``eta`` enters given its own copy so that one reverse pass yields every term.

    Args:
        parts: The learner's static parts.
        theta: The flat policy side.
        opt_state: The policy's Adam state (the look-ahead's).
        eta: The reward's last layer ``[D]``.
        rho: ``sigma = softplus(rho)`` ``[D]``; gets gradient only with ``learn_noise_std``.
        z: Standard-normal noise ``[N, D]``, one draw per env column.
        mb: A minibatch ``[..., N]``.

    Returns:
        ``(g_eta, g_rho, terms)`` with ``terms`` the per-equation gradients
        (``{"eq15"}`` or ``{"eq9", "eq10", "eq11"}``).
    """
    learn_sigma = parts.config.learn_noise_std

    def sigma(r):
        s = jax.nn.softplus(r)
        return s if learn_sigma else jax.lax.stop_gradient(s)

    if parts.config.terms == "best-response":
        def loss(h):
            cond = h["eta"] + sigma(h["rho"]) * z
            return -ex_objective(parts, theta, cond, mb)[0]

        g = jax.grad(loss)({"eta": eta, "rho": rho})
        return g["eta"], g["rho"], {"eq15": g["eta"]}

    def inner(carry, h, _k):
        th, os = carry
        adv = adv_at(h["adv"] + sigma(h["rho_adv"]) * z, mb)
        cond = h["cin"] + sigma(h["rho_cin"]) * z
        return lookahead(parts, th, os, cond, adv, mb), os

    def outer(carry, h):
        cond = h["cout"] + sigma(h["rho_cout"]) * z
        return -ex_objective(parts, carry[0], cond, mb)[0]

    h3 = {"adv": eta, "cin": eta, "cout": eta, "rho_adv": rho, "rho_cin": rho,
          "rho_cout": rho}
    g = unrolled_hypergrad(inner, outer, (theta, opt_state), h3, 1)
    terms = {"eq9": g["cout"], "eq10": g["cin"], "eq11": g["adv"]}
    if parts.config.terms == "lirpg":
        return g["adv"], g["rho_adv"], terms
    return (g["adv"] + g["cin"] + g["cout"], g["rho_adv"] + g["rho_cin"] + g["rho_cout"],
            terms)


def sample_segments(parts: Parts, buf: replay.ReplayBuffer, key: jax.Array) -> Segments:
    """A batch from ``D_r`` for eq. 21 (Algorithm 1, line 7): ``reward_batch_size``
    segments of ``K`` consecutive rows of one env, uniform over the valid start rows.
    Segments may span an episode boundary: eq. 21 compares sums of per-transition
    rewards, so it stays defined.

    Args:
        parts: The learner's static parts.
        buf: ``D_r``.
        key: Sampling key.

    Returns:
        :class:`Segments` ``[B_r, K]``.
    """
    K, B_r, N = parts.config.segment_length, parts.config.reward_batch_size, buf.num_envs
    k_t, k_e = jax.random.split(key)
    L = buf.num_rows
    n_starts = jnp.maximum(buf.size - K + 1, 1)
    t0 = L - jnp.maximum(buf.size, K) + jax.random.randint(k_t, (B_r,), 0, n_starts)
    e = jax.random.randint(k_e, (B_r,), 0, N)
    t = t0[:, None] + jnp.arange(K)[None, :]
    data = jax.tree.map(lambda x: x[t, e[:, None]], buf.data)
    return Segments(data["obs"], data["action"], data["r_ex"])


def regularizer(parts: Parts, reward_params: Params, obs_stats: RunningStats,
                seg: Segments) -> jax.Array:
    """``L_r`` of eq. 21 on segments (Algorithm 1, line 7):
    ``mean_b (sum_k r_ex - sum_k r_{phi, eta})^2``.

    The reward runs on the segments flattened to ``[B * K]`` (a 2-D batch cost ~5 ms
    more per paper-batch iteration on a CPU, in transposes within the body's weight
    gradients).

    Args:
        parts: The learner's static parts.
        reward_params: ``{"reward_body", "eta"}``.
        obs_stats: The statistics to normalise the observations with (the rollout's).
        seg: :class:`Segments` from ``D_r``.

    Returns:
        The loss (a scalar).
    """
    B, K = seg.r_ex.shape
    obs = seg.obs.reshape(B * K, *seg.obs.shape[2:])
    action = seg.action.reshape(B * K, *seg.action.shape[2:])
    feats = parts.reward_body.apply(reward_params["reward_body"],
                                    parts.prep(obs_stats, obs), action)
    r_in = _head(parts, feats, reward_params["eta"], action).reshape(B, K)
    return segment_return_loss(seg.r_ex, r_in)


def noise_entropy(rho: jax.Array) -> jax.Array:
    """Entropy of the factorised Gaussian perturbation ``N(0, softplus(rho)^2)`` (Self-Tuning
    Networks' entropy term, subtracted from the hyper loss when sigma is learned).

    Args:
        rho: ``[D]``.

    Returns:
        The entropy (a scalar).
    """
    return jnp.sum(jnp.log(jax.nn.softplus(rho) * math.sqrt(2 * math.pi * math.e)))


def reward_gradients(parts: Parts, psi: jax.Array, theta: jax.Array, opt_theta: Any,
                     stats: RunningStats, buf: replay.ReplayBuffer, coef: jax.Array,
                     key: jax.Array, mb: Minibatch
                     ) -> tuple[jax.Array, jax.Array, Metrics]:
    """The two gradients of one reward iteration (Algorithm 1, lines 5-9), kept apart
    until clipped: ``lambda g^eta`` (and ``g^rho`` minus the entropy's) and
    ``g_r^{phi, eta}`` of eq. 21.

    Args:
        parts: The learner's static parts.
        psi: The flat reward side ``[phi, eta, rho]``.
        theta: The flat policy side.
        opt_theta: The policy's Adam state.
        stats: The statistics the rollout was normalised with.
        buf: ``D_r``.
        coef: ``lambda`` (0 during the warm-up).
        key: The iteration's key (noise, segments).
        mb: The iteration's minibatch of the rollout.

    Returns:
        ``(hyper, reg_flat, metrics)``: the two gradients flat over ``psi``, and eq. 21's
        value (``reg_loss``) with the fraction of the segment returns' variance it
        explains (``reg_explained``), the norms of ``g^eta`` (``hypergrad_norm``) and of its
        per-equation terms.
    """
    config = parts.config
    k_z, k_seg = jax.random.split(key)
    rp = parts.unravel_psi(psi)
    z = jax.random.normal(k_z, (config.num_envs, parts.head_size))
    g_eta, g_rho, terms = hypergradient(parts, theta, opt_theta, rp["eta"], rp["rho"], z, mb)
    seg = sample_segments(parts, buf, k_seg)
    reg, g_reg = jax.value_and_grad(functools.partial(regularizer, parts))(
        {"reward_body": rp["reward_body"], "eta": rp["eta"]}, stats, seg)
    g_ent = (jax.grad(noise_entropy)(rp["rho"]) if config.learn_noise_std
             else jnp.zeros_like(g_rho))
    hyper = ravel_pytree({"reward_body": jax.tree.map(jnp.zeros_like, g_reg["reward_body"]),
                          "eta": coef * g_eta,
                          "rho": coef * g_rho - config.entropy_coef * g_ent})[0]
    reg_flat = config.regularizer_coef * ravel_pytree(
        {"reward_body": g_reg["reward_body"], "eta": g_reg["eta"],
         "rho": jnp.zeros_like(rp["rho"])})[0]
    metrics = {
        "reg_loss": reg,
        "reg_explained": explained_fraction(reg, seg.r_ex),
        "hypergrad_norm": jnp.sqrt(jnp.sum(g_eta**2)),
        **{f"hypergrad_{k}": jnp.sqrt(jnp.sum(v**2)) for k, v in terms.items()},
    }
    return hyper, reg_flat, metrics


def clip_reward_gradients(config: Config, hyper: jax.Array, reg_flat: jax.Array
                          ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The reward side's step direction ``lambda g^eta + g_r`` (Algorithm 1, lines 10-11)
    clipped as ``Config.reward_clip`` says (the paper does not clip: ``"none"``).

    Args:
        config: The config (``reward_clip``, ``max_grad_norm``).
        hyper: The hypergradient's part, flat over ``psi``.
        reg_flat: The regulariser's part, flat over ``psi``.

    Returns:
        ``(flat, norm, ok)``: the direction (zero if not finite), the norm logged as
        ``reward_grad_norm`` (of the sum before the clip; for ``"separate"`` of the sum of
        the clipped parts), and whether the direction was finite.
    """
    if config.reward_clip == "joint":
        return clip_by_global_norm(hyper + reg_flat, config.max_grad_norm)
    if config.reward_clip == "separate":
        hyper, _, ok_h = clip_by_global_norm(hyper, config.max_grad_norm)
        reg_flat, _, ok_r = clip_by_global_norm(reg_flat, config.max_grad_norm)
        flat, ok = hyper + reg_flat, ok_h & ok_r
        return flat, jnp.sqrt(jnp.sum(flat**2)), ok
    flat = hyper + reg_flat  # "none"
    norm = jnp.sqrt(jnp.sum(flat**2))
    ok = jnp.isfinite(norm)
    return jnp.where(ok, flat, 0.0), norm, ok


def reward_step(parts: Parts, theta: jax.Array, opt_theta: Any, stats: RunningStats,
                buf: replay.ReplayBuffer, coef: jax.Array, carry: tuple, x: tuple
                ) -> tuple[tuple, Metrics]:
    """One reward iteration (Algorithm 1, lines 5-11) on one of the ``N_r`` disjoint
    minibatches of the rollout: ``psi <- Adam(lambda g^eta + g_r)``, skipped if not
    finite.

    Args:
        parts: The learner's static parts.
        theta: The flat policy side.
        opt_theta: The policy's Adam state.
        stats: The statistics the rollout was normalised with.
        buf: ``D_r``.
        coef: ``lambda`` (0 during the warm-up).
        carry: ``(psi, opt_psi, nonfinite)``.
        x: ``(key, minibatch)``.

    Returns:
        The new carry and the iteration's metrics.
    """
    psi, opt_psi, nonfinite = carry
    key, mb = x
    hyper, reg_flat, grad_metrics = reward_gradients(
        parts, psi, theta, opt_theta, stats, buf, coef, key, mb)
    reg_norm = jnp.sqrt(jnp.sum(reg_flat**2))
    flat, norm, ok = clip_reward_gradients(parts.config, hyper, reg_flat)
    ok = ok & jnp.isfinite(grad_metrics["reg_loss"])
    updates, new_opt = parts.reward_opt.update(flat, opt_psi, psi)
    new_psi = jnp.where(ok, psi + updates, psi)
    metrics = {**grad_metrics, "reward_grad_norm": norm, "reg_grad_norm": reg_norm}
    return (new_psi, new_opt, nonfinite + (~ok)), metrics


def reward_iterations(parts: Parts, carry: tuple, theta: jax.Array, opt_theta: Any,
                      stats: RunningStats, buf: replay.ReplayBuffer, coef: jax.Array,
                      b: Batch, basis: AdvBasis, k_perm: jax.Array, k_reward: jax.Array
                      ) -> tuple[tuple, Metrics]:
    """Algorithm 1, lines 4-12: ``N_r = reward_steps`` :func:`reward_step` s, one
    stratified minibatch of the rollout each, at the current ``theta``.

    Args:
        parts: The learner's static parts.
        carry: ``(psi, opt_psi, nonfinite)``.
        theta: The flat policy side.
        opt_theta: The policy's Adam state.
        stats: The statistics the rollout was normalised with.
        buf: ``D_r``.
        coef: ``lambda`` (0 during the warm-up).
        b: The rollout.
        basis: Its :class:`AdvBasis`.
        k_perm: The minibatches' key.
        k_reward: The iterations' keys' key.

    Returns:
        The final carry and the iterations' metrics stacked.
    """
    n_r = parts.config.reward_steps
    r_mbs = split_minibatches(b, basis, k_perm, n_r)
    step = functools.partial(reward_step, parts, theta, opt_theta, stats, buf, coef)
    return jax.lax.scan(step, carry, (jax.random.split(k_reward, n_r), r_mbs))


# --- The policy iterations (Algorithm 1, lines 13-17) ---------------------------------------


def relabel(parts: Parts, reward_params: Params, b: Batch) -> tuple[Batch, AdvBasis]:
    """The rollout under the updated reward (after lines 4-12): its advantage basis from
    the updated body ``phi`` and ``V_in``'s targets ``v_in + A_in(eta)``.

    Args:
        parts: The learner's static parts.
        reward_params: ``{"reward_body", "eta", ...}``.
        b: The rollout.

    Returns:
        ``(batch, basis)``.
    """
    feats = parts.reward_body.apply(reward_params["reward_body"], b.obs, b.action)
    basis = advantage_basis(parts, feats, b)
    return b._replace(ret_in=b.v_in + in_advantages(reward_params["eta"], basis)), basis


def extrinsic_basis(b: Batch, basis: AdvBasis) -> tuple[Batch, AdvBasis]:
    """The rollout for ``Config.policy_reward="extrinsic"`` (a control): every perturbed
    reward's advantages are the extrinsic GAE and ``V_in``'s targets the extrinsic
    lambda-returns, so the policy phase trains on the env's reward.

    Args:
        b: The rollout.
        basis: Its :class:`AdvBasis` (for the shapes).

    Returns:
        ``(batch, basis)``.
    """
    return (b._replace(ret_in=b.ret_ex),
            AdvBasis(jnp.zeros_like(basis.phi_gae), b.adv_ex))


def policy_step(parts: Parts, carry: tuple, x: tuple) -> tuple[tuple, Metrics]:
    """One policy iteration (Algorithm 1, lines 15-16) on a minibatch:
    ``theta <- Adam(g^theta)``, ``g^theta`` of ``J_in(theta, eta + eps')`` (skipped if
    not finite).

    Args:
        parts: The learner's static parts.
        carry: ``(theta, opt_theta, nonfinite)``.
        x: ``(minibatch, cond, adv)``: the conditioning ``eta + eps'`` ``[N, D]`` and the
            intrinsic advantages of the reward with last layer ``cond``, per entry.

    Returns:
        The new carry and the step's metrics.
    """
    theta, opt_theta, nonfinite = carry
    mb, cond, adv = x
    (loss, aux), grads = jax.value_and_grad(functools.partial(in_loss, parts), has_aux=True)(
        theta, cond, adv, mb)
    grads, norm, ok = clip_by_global_norm(grads, parts.config.max_grad_norm)
    ok = ok & jnp.isfinite(loss)
    updates, new_opt = parts.policy_opt.update(grads, opt_theta, theta)
    theta = jnp.where(ok, theta + updates, theta)
    return (theta, new_opt, nonfinite + (~ok)), {"loss": loss, "grad_norm": norm, **aux}


def policy_epoch(parts: Parts, b: Batch, basis: AdvBasis, eta: jax.Array, sigma: jax.Array,
                 carry: tuple, x: tuple) -> tuple[tuple, Metrics]:
    """One epoch of policy iterations: the rollout in ``num_minibatches`` stratified
    minibatches, each with its own noise ``eps' = sigma z`` (Algorithm 1, line 14).

    Args:
        parts: The learner's static parts.
        b: The rollout (relabelled).
        basis: Its :class:`AdvBasis` under the updated reward.
        eta: The reward's last layer.
        sigma: The perturbation's standard deviation.
        carry: ``(theta, opt_theta, nonfinite)``.
        x: ``(key, z)``: the permutation key and noise ``[M, N, D]``.

    Returns:
        The new carry and the epoch's metrics.
    """
    k, z_e = x
    mbs = split_minibatches(b, basis, k, parts.config.num_minibatches)
    # Every minibatch's perturbed advantages in one vectorised op before the scan
    # (the scan's steps then carry no design vectors).
    cond = eta + sigma * z_e  # [M, N, D]
    adv = jax.vmap(adv_at)(cond, mbs)  # [M, T / M, N]
    mbs = mbs._replace(phi_gae=None, td_gae=None)
    return jax.lax.scan(functools.partial(policy_step, parts), carry, (mbs, cond, adv))


def policy_iterations(parts: Parts, carry: tuple, b: Batch, basis: AdvBasis,
                      eta: jax.Array, sigma: jax.Array, k_perm: jax.Array,
                      k_noise: jax.Array) -> tuple[tuple, Metrics]:
    """Algorithm 1, lines 13-17: ``N_p`` = epochs x minibatches :func:`policy_step` s.

    Args:
        parts: The learner's static parts.
        carry: ``(theta, opt_theta, nonfinite)``.
        b: The rollout, relabelled (:func:`relabel`).
        basis: Its :class:`AdvBasis` under the updated reward.
        eta: The reward's last layer.
        sigma: The perturbation's standard deviation.
        k_perm: The epochs' permutation keys' key.
        k_noise: The perturbations' key.

    Returns:
        The final carry and the steps' metrics stacked ``[E, M]``.
    """
    c = parts.config
    E, M, N = c.num_epochs, c.num_minibatches, c.num_envs
    z = jax.random.normal(k_noise, (E, M, N, parts.head_size))
    epoch = functools.partial(policy_epoch, parts, b, basis, eta, sigma)
    return jax.lax.scan(epoch, carry, (jax.random.split(k_perm, E), z))


# --- One iteration of Algorithm 1 -----------------------------------------------------------


def update(parts: Parts, state: ClnState) -> tuple[ClnState, Metrics]:
    """One iteration of Algorithm 1 (lines 2-17): collect, reward iterations, policy
    iterations.

    Args:
        parts: The learner's static parts.
        state: The learner's state.

    Returns:
        ``(state, metrics)``: the policy side's and reward side's metrics averaged over
        their iterations, the rollout's, ``adv_corr`` (:func:`advantage_correlation` of
        the rollout under the updated reward), ``noise_std``, ``env_steps``,
        ``nonfinite``.
    """
    config = parts.config
    # The statistics the rollout's observations (and so the intrinsic advantages and
    # V targets) are normalised with; collect() folds the rollout into new ones, which
    # the next rollout uses. The regulariser must normalise with the same ones as the
    # advantages, or eq. 21 fits a reward on inputs the policy phase never sees.
    rollout_stats = state.obs_stats
    state, b, basis, key, roll_metrics = collect(parts, state)
    theta, psi = split_params(state.params)
    opt_theta, opt_psi = state.opt_state["agent"], state.opt_state["reward"]
    k_rperm, k_reward, k_perm, k_noise = jax.random.split(key, 4)
    coef = jnp.where(state.update_step >= config.warmup_updates, config.hypergrad_coef, 0.0)

    (psi, opt_psi, nonfinite), r_metrics = reward_iterations(
        parts, (psi, opt_psi, state.nonfinite), theta, opt_theta, rollout_stats,
        state.reward_buffer, coef, b, basis, k_rperm, k_reward)
    rp = parts.unravel_psi(psi)
    eta, sigma = rp["eta"], jax.nn.softplus(rp["rho"])

    # On the updated reward: its advantages for any perturbed last layer come from one
    # basis (the reward's body is fixed now).
    b, basis = relabel(parts, rp, b)
    adv_corr = advantage_correlation(in_advantages(eta, basis), b.adv_ex)
    if config.policy_reward == "extrinsic":
        b, basis = extrinsic_basis(b, basis)
    (theta, opt_theta, nonfinite), p_metrics = policy_iterations(
        parts, (theta, opt_theta, nonfinite), b, basis, eta, sigma, k_perm, k_noise)

    params = {**parts.unravel_theta(theta), **rp}
    env_steps = state.env_steps + parts.batch_size
    metrics = {**jax.tree.map(jnp.mean, p_metrics), **jax.tree.map(jnp.mean, r_metrics),
               **roll_metrics, "adv_corr": adv_corr, "noise_std": jnp.mean(sigma),
               "env_steps": env_steps,
               "nonfinite": nonfinite}
    state = common.advance(state, env_steps, params=params, nonfinite=nonfinite,
                           opt_state={"agent": opt_theta, "reward": opt_psi})
    return state, metrics


# --- Assembly -------------------------------------------------------------------------------


def _feature_size(body: nn.Module, spec: EnvSpec) -> int:
    """``F``, the reward body's feature size, from its output on one dummy transition."""
    dummy, dummy_a = common.example_inputs(spec)
    out = jax.eval_shape(lambda k: body.init_with_output(k, dummy, dummy_a)[0],
                         jax.random.PRNGKey(0))
    if out.ndim != 2 or out.shape[0] != 1:
        raise ValueError("reward_body(obs [1, obs], action [1, ...]) must return features "
                         f"[1, F], got shape {tuple(out.shape)}")
    return int(out.shape[-1])


def make_parts(config: Config, env: Env, reward_body: nn.Module | None = None) -> Parts:
    """Validates ``config`` against ``env`` and builds the learner's static parts.

    Args:
        config: A CLN :class:`Config`.
        env: A single (unbatched) env, batched here with ``config.num_envs``.
        reward_body: The reward's body ``phi``: any flax module ``body(obs, action) ->
            [..., F]`` (the signature of :class:`metareward.nets.RewardBody`) on
            normalised observations and raw (policy-space) actions; ``None`` builds the
            config's MLP (``reward_hidden``, ``reward_activation``).

    Returns:
        The :class:`Parts`.

    Raises:
        TypeError: ``config`` is not a CLN config.
        ValueError: the config does not fit the env or the batch geometry.
    """
    if not isinstance(config, Config):
        raise TypeError(f"expected metareward.algos.cln.Config, got {type(config).__name__}")
    spec = onpolicy.check_env(env)
    T, N, E, M = config.num_steps, config.num_envs, config.num_epochs, config.num_minibatches
    batch_size, num_updates, _ = onpolicy.batch_geometry(config, M)
    for name in ("num_minibatches", "reward_steps"):  # stratified minibatches
        if T % getattr(config, name):
            raise ValueError(f"num_steps = {T} must be divisible by {name} = "
                             f"{getattr(config, name)} (every minibatch holds the same "
                             "number of steps of each env)")
    buffer_rows = config.reward_buffer_size // N
    if buffer_rows < T:
        raise ValueError(f"reward_buffer_size={config.reward_buffer_size} holds fewer than "
                         f"num_steps={T} rows of {N} envs")
    lr = onpolicy.annealed(config.learning_rate, config.anneal_lr, num_updates * E * M)
    if reward_body is None:
        reward_body = RewardBody(spec.discrete, config.reward_hidden, config.reward_activation)
    F = _feature_size(reward_body, spec)
    flatten_obs, prep = onpolicy.obs_preprocessor(spec, config.normalize_obs)
    parts = Parts(
        config=config, spec=spec, venv=onpolicy.batched_env(config, env),
        policy=make_cln_policy(spec.discrete, spec.action_size, config.hidden,
                               config.activation, config.cln_layers, config.squash,
                               config.log_std_init),
        value=ValueHeads(config.value_layers, config.activation, 2),  # [V_in, V_ex]
        reward_body=reward_body,
        policy_opt=optax.adam(lr, eps=config.adam_eps),
        # The same Adam for the differentiable look-ahead, with eps_root > 0 so that the
        # derivative of sqrt(nu) stays finite where a gradient entry is exactly zero.
        lookahead_opt=optax.adam(lr, eps=config.adam_eps, eps_root=1e-16),
        reward_opt=optax.adam(config.reward_learning_rate, eps=config.adam_eps),
        flatten_obs=flatten_obs, prep=prep, num_features=F,
        head_size=reward_head_size(F, spec.discrete, spec.action_size),
        buffer_rows=buffer_rows, batch_size=batch_size, num_updates=num_updates)
    key = jax.random.PRNGKey(0)
    shapes = jax.eval_shape(functools.partial(init_params, parts), key, key)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    return parts._replace(
        unravel_theta=ravel_pytree({k: zeros[k] for k in _THETA_KEYS})[1],
        unravel_psi=ravel_pytree({k: zeros[k] for k in _PSI_KEYS})[1])


def make_train(config: Config, env: Env, reward_body: nn.Module | None = None) -> Trainer:
    """Binds CLN to a single env, batched here with ``config.num_envs``. Bad configs or
    env/config mismatches raise here, before anything is compiled.

    Args:
        config: A CLN :class:`Config`.
        env: A single (unbatched) env.
        reward_body: The reward's body ``phi`` (see :func:`make_parts`); ``None``: the
            config's MLP.

    Returns:
        The :class:`Trainer`.
    """
    parts = make_parts(config, env, reward_body)
    init_fn = functools.partial(init, parts)
    update_fn = functools.partial(update, parts)
    act_fn = functools.partial(act, parts)
    return Trainer(
        config=config, env=env, spec=parts.spec, policy=parts.policy, value=parts.value,
        reward_body=parts.reward_body, parts=parts, num_updates=parts.num_updates,
        init=init_fn, update=update_fn,
        train=common.scan_train(init_fn, update_fn, parts.num_updates),
        act=act_fn, evaluate=common.episode_evaluator(env, act_fn, parts.spec.episode_length))


__all__ = ["PRESETS", "REWARD_CLIPS", "TERMS", "AdvBasis", "Batch", "ClnState", "Config",
           "Minibatch", "Parts", "Segments", "Trainer", "act", "adv_at", "advantage_basis",
           "clip_reward_gradients", "collect", "ex_objective", "hypergradient", "in_advantages",
           "in_loss", "init", "init_params", "intrinsic_reward", "lookahead", "make_parts",
           "make_train", "minibatch", "noise_entropy", "policy_epoch", "policy_iterations",
           "policy_step", "preset", "regularizer", "relabel", "reward_gradients",
           "reward_iterations", "reward_step", "sample_segments", "segment_return_loss",
           "split_minibatches", "split_params", "update"]
