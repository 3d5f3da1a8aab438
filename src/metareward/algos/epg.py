"""Evolved Policy Gradients (Houthooft et al. 2018): a learned loss evolved by ES.

"Evolved Policy Gradients" (NeurIPS 2018), Algorithm 1, sections 3.3 and 4.1; facts
the paper leaves out from the authors' code (``openai/EPG``). The original ran every
inner-loop worker as an MPI process; here the whole population is one vmapped, jitted
program.

* **Inner loop** (Algorithm 1, lines 3-13; :func:`inner_loop`): a population member
  gets perturbed loss parameters ``phi + sigma eps_i`` and a task ``M_i ~ p(M)``; a fresh
  agent (Gaussian policy 64x64 tanh, value net, memory unit; :func:`inner_init`) runs
  ``inner_updates = K`` updates (:func:`inner_run`); each (:func:`inner_step`) collects
  ``steps_per_update = M`` steps (:func:`collect`) and takes one gradient step
  (eq. 4; Adam as in the authors' code, or plain SGD) on
  ``(1 - alpha) L_phi + alpha L_PPO`` (eq. 6), where ``L_phi`` (:func:`evolved_loss`,
  :class:`EPGLoss`) reads the last ``buffer_size = N`` steps and scores the newest ``M``
  and ``L_PPO`` (:func:`ppo_guidance`) is PPO's clipped surrogate with GAE on the newest
  ``M`` steps (plus its value loss). The fitness is
  footnote 1's ``R_i = R_{i,K} + (1/K) sum_{t=0}^{K} ((t+1)/K) R_{i,t}``
  (:func:`fitness`).
* **Outer loop** (lines 2-14, eq. 5; :func:`outer_step`): ``es_grad`` over ``phi`` with
  the population vmapped (each member its own noise, task and inner run:
  :func:`sample_members`, :func:`es_step`); the ascent direction is the authors'
  ``ranks . eps / n - l2 phi`` (:func:`es_ascent`, ``l2_form``), applied by Adam
  (``beta1 = 0``, learning rate decayed linearly, as the authors' code); ``alpha``
  (:func:`alpha_at`) anneals linearly from 1 to ``alpha_final`` (0; Figure 7: 0.5) over
  the first ``anneal_epochs`` epochs.
* **Meta-test** (:func:`meta_test`): a fresh agent trained by the frozen loss with
  ``alpha = alpha_final`` (0 by default: it never sees a reward unless the loss was
  configured to read them, ``use_reward``, the forward/backward hopper of section 4.5).
  Per update it reports ``spearman_ppo``, section 4.3's rank correlation between the
  gradients of the loss and of PPO's objective (:func:`spearman`).

Choices the paper leaves open, or where we depart from the authors' code (see
:class:`Config`):

* the loss's inputs per step are the normalised observation and action, the termination
  flag, the memory output, the policy's mean (normalised like the actions) and log-std,
  and with ``use_reward`` the normalised reward; running mean/std per member, updated
  after every ``M`` steps; buffer rows not yet filled are zeros;
* the loss reads the newest ``M`` rows of the buffer, as PPO's guidance does (the code read
  the oldest: a bug in ``openai/EPG``);
* ``R_{i,t}`` (``t < K``) is the mean return of the episodes that ended during update
  ``t``; updates in which none ended are left out of the sum and the other weights scaled
  up to the same total; ``R_{i,K}`` is the mean return of ``eval_episodes`` fresh
  episodes of the trained policy on the member's task (the code's 3);
* antithetic pairs (``antithetic=True``, our default; the code had none) share their task
  and the agent's initialisation (common random numbers);
* one env per member (as one MPI worker had).

Each stage is a module-level function taking the static :class:`Parts`
(:func:`make_parts`) first; :func:`make_train` binds them into the :class:`Trainer`.

Usage::

    env = metareward.envs.make("pendulum", randomize=True)
    trainer = epg.make_train(epg.preset("pendulum"), env)
    state = trainer.init(jax.random.PRNGKey(0))
    state, metrics = jax.jit(trainer.update)(state)     # one ES epoch
    curve = trainer.meta_test(state.params["loss"], task, key)
    agent, per_update = epg.inner_run(trainer.parts, state.params["loss"], task, key, 0.0)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from brax.envs.base import Env, State
from flax import struct
from jax.flatten_util import ravel_pytree

from metareward.algos import common
from metareward.algos import config as cfg
from metareward.algos.policy import check_one_seed
from metareward.aliases import Metrics, Params
from metareward.axes import gather_members, local_members
from metareward.envs.spec import EnvSpec
from metareward.envs.tasks import TaskDistribution
from metareward.meta import es_grad
from metareward.meta.es import SHAPINGS
from metareward.meta.evosax_adapter import EvosaxStrategy, evosax_strategies
from metareward.nets.epg import LOSS_ARCHS, EPGLoss, MemoryUnit, make_loss, min_input_length
from metareward.nets.policies import ValueNet, make_policy
from metareward.rl.gae import gae
from metareward.rl.losses import ppo_loss
from metareward.rl.normalize import RunningStats
from metareward.rl.rollout import ActFn, Transition, evaluate_episodes, rollout
from metareward.rl.stats import standardize


@dataclasses.dataclass(frozen=True)
class Config:
    """EPG. Defaults: the paper's random-Hopper setting where it states one (n = 32
    workers, 128 updates of 128 steps, buffer 128, loss sizes of section 4.1), the
    authors' code elsewhere (outer Adam and its schedule, sigma, L2, inner Adam 1e-3)."""

    # --- outer loop: ES over the loss parameters phi (eq. 5) ---
    num_epochs: int = 3000
    pop_size: int = 32
    sigma: float = 0.01
    antithetic: bool = True
    shaping: str = "centered_ranks"
    #: "es": the paper's ES gradient (``es_grad``, antithetic / rank shaping as set) applied
    #: by Adam; or the name of an evosax strategy (``metareward.meta.evosax_strategies()``,
    #: e.g. "CMA_ES", "SNES", "Open_ES"; needs ``pip install 'metareward[evosax]'``), which
    #: then owns the search with its own update rule, ``sigma`` as its initial step size,
    #: and the outer learning rate, ``outer_b1`` and ``l2_coef`` unused (except by
    #: "Open_ES", given our Adam and schedule).
    outer_strategy: str = "es"
    outer_learning_rate: float = 1e-2
    outer_learning_rate_final: float = 1e-3
    #: Epochs over which the outer learning rate decays linearly (code: 1000).
    outer_decay_epochs: int = 1000
    #: Adam's beta1 for phi (code: 0, i.e. RMSProp-like steps on the ES direction).
    outer_b1: float = 0.0
    #: L2 penalty on phi in the outer step (code: 0.001), in the units of ``l2_form``.
    l2_coef: float = 1e-3
    #: Where the L2 term is added (:func:`es_ascent`). "code" (default, the authors'):
    #: ``ranks . eps / n - l2_coef phi``, the ES sum *not* divided by sigma. "eq5": eq. 5's
    #: direction ``ranks . eps / (n sigma) - l2_coef phi``, whose L2 is 1/sigma (100 at
    #: sigma = 0.01) times weaker against the ES term (the form before issue 33). Adam
    #: ignores the common scale (up to its eps, 1e-8), so only that ratio differs.
    l2_form: str = "code"
    #: alpha of eq. 6 goes linearly 1 -> ``alpha_final`` over this many epochs (None:
    #: num_epochs // 8, the code's; the paper used 500 of 3000). 0: alpha is
    #: ``alpha_final`` from the first epoch (with ``alpha_final = 0``: no PPO guidance).
    anneal_epochs: int | None = None
    #: alpha after the annealing, kept to the end and used by the meta-test. 0 (default;
    #: section 3.3, eq. 6, and 4.2: "by test time, alpha equals 0"). Figure 7 (section 4.5,
    #: "evolved policy gradient + PPO (alpha = 0.5 in Eq. (6))"): 0.5 with
    #: ``anneal_epochs=0``, fixed in training and meta-test. (The authors' ``fix_ppo``
    #: annealed 1 -> 0.5 over num_epochs // 16 epochs: 0.5 with that ``anneal_epochs``.)
    #: Above 0 the meta-test's agents see rewards through L_PPO.
    alpha_final: float = 0.0
    # --- inner loop: a fresh agent per member trained on (1 - alpha) L_phi + alpha L_ppo ---
    #: M, env steps between inner updates (paper 128, code 64).
    steps_per_update: int = 128
    #: K, inner updates per member (paper: 128 for Hopper, 512 for Reacher).
    inner_updates: int = 128
    #: N, steps of experience the loss's temporal convolutions read (paper: 128).
    buffer_size: int = 128
    inner_learning_rate: float = 1e-3
    #: "adam" (the authors' code) or "sgd" (the paper's eq. 4).
    inner_optimizer: str = "adam"
    hidden: tuple[int, ...] = (64, 64)
    memory_size: int = 32
    #: "paper" (section 4.1) or "code" (the authors' sizes), see nets.epg.LOSS_ARCHS.
    loss_arch: str = "paper"
    #: Feed the normalised reward to the loss (section 4.5, forward/backward Hopper).
    use_reward: bool = False
    # --- PPO guidance (eq. 6) on the newest M steps ---
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    vf_coef: float = 0.5
    reward_scale: float = 1.0
    max_grad_norm: float | None = None
    # --- fitness ---
    #: Fresh episodes of the trained policy that give R_{i,K} (code: 3).
    eval_episodes: int = 3
    deterministic_eval: bool = False

    def __post_init__(self) -> None:
        for name in ("num_epochs", "pop_size", "outer_decay_epochs", "steps_per_update",
                     "inner_updates", "buffer_size", "memory_size", "eval_episodes"):
            cfg.positive_int(name, getattr(self, name))
        for name in ("sigma", "outer_learning_rate", "outer_learning_rate_final",
                     "inner_learning_rate", "clip_eps", "reward_scale"):
            cfg.positive(name, getattr(self, name))
        for name in ("l2_coef", "vf_coef"):
            cfg.non_negative(name, getattr(self, name))
        cfg.in_range("outer_b1", self.outer_b1, 0.0, 1.0)
        cfg.in_range("alpha_final", self.alpha_final, 0.0, 1.0)
        cfg.check("l2_form", self.l2_form, self.l2_form in L2_FORMS, f"one of {list(L2_FORMS)}")
        cfg.in_range("gamma", self.gamma, 0.0, 1.0)
        cfg.in_range("gae_lambda", self.gae_lambda, 0.0, 1.0)
        if self.max_grad_norm is not None:
            cfg.positive("max_grad_norm", self.max_grad_norm)
        if self.anneal_epochs is not None:
            cfg.check("anneal_epochs", self.anneal_epochs,
                      isinstance(self.anneal_epochs, int) and self.anneal_epochs >= 0,
                      "an int >= 0 or None")
        cfg.check("shaping", self.shaping, self.shaping in SHAPINGS, f"one of {list(SHAPINGS)}")
        if self.outer_strategy != "es":
            try:
                names = evosax_strategies()
            except ImportError as e:
                raise cfg.ConfigError(f"config field outer_strategy={self.outer_strategy!r} "
                                      f"needs evosax: {e}") from None
            cfg.check("outer_strategy", self.outer_strategy, self.outer_strategy in names,
                      f"'es' or an evosax strategy: {names}")
        cfg.check("loss_arch", self.loss_arch, self.loss_arch in LOSS_ARCHS,
                  f"one of {list(LOSS_ARCHS)}")
        cfg.check("inner_optimizer", self.inner_optimizer,
                  self.inner_optimizer in ("adam", "sgd"), "'adam' or 'sgd'")
        cfg.check("pop_size", self.pop_size,
                  self.pop_size >= 2 and (not self.antithetic or self.pop_size % 2 == 0),
                  "an even int >= 2 with antithetic=True, else an int >= 2")
        # N >= M (the loss scores the newest M rows) and N >= what the convolutions take
        conv_min = min_input_length(LOSS_ARCHS[self.loss_arch]["conv"])
        smallest = max(self.steps_per_update, conv_min)
        cfg.check("buffer_size", self.buffer_size, self.buffer_size >= smallest,
                  f"an int >= {smallest} (at least steps_per_update = "
                  f"{self.steps_per_update}, the rows the loss scores, and {conv_min}: "
                  "fewer steps are too short for the temporal convolutions of "
                  f"loss_arch={self.loss_arch!r})")
        cfg.hidden_sizes("hidden", self.hidden)
        object.__setattr__(self, "hidden", tuple(self.hidden))

    @property
    def alpha_epochs(self) -> int:
        """Epochs over which alpha anneals (``anneal_epochs`` resolved)."""
        return self.num_epochs // 8 if self.anneal_epochs is None else self.anneal_epochs


#: Where the outer step's L2 term is added (:attr:`Config.l2_form`, :func:`es_ascent`).
L2_FORMS = ("code", "eq5")

#: Settings per randomised env: CPU-sized runs on the gymnax task distributions, the
#: paper's where it gives them.
PRESETS: dict[str, Config] = {
    # Random pendulum: 64 updates of 64 steps (4096 steps, ~20 episodes) per member.
    "pendulum": Config(
        num_epochs=200,
        pop_size=32,
        # 0.03 beat the code's 0.01 on both meta-seeds tried (100 epochs, held-out
        # meta-test: +171 / +293 over the initial loss against +141 / +235).
        sigma=0.03,
        steps_per_update=64,
        inner_updates=64,
        buffer_size=128,
        gamma=0.95,
        reward_scale=0.1,
        outer_decay_epochs=200,
        anneal_epochs=50,
    ),
    # Random-goal point mass (envs.pointmass, the goal in the observation): a cheap
    # stand-in for random Reacher, 32 updates of 64 steps (2048 steps, ~41 episodes) per
    # member; the pendulum preset's sigma and buffer otherwise (not tuned, issue 33).
    "pointmass": Config(
        num_epochs=500,
        pop_size=32,
        sigma=0.03,
        steps_per_update=64,
        inner_updates=32,
        buffer_size=128,
        outer_decay_epochs=500,
        anneal_epochs=100,
    ),
    # Random Reacher (section 4.1, Figure 5): K = 512 updates of M = 128 steps (65536
    # steps per member), n = 32 workers, buffer N = 128, 3000 epochs with alpha annealed
    # over the first 500; the rest as Config() (the authors' code).
    "reacher": Config(
        num_epochs=3000,
        pop_size=32,
        steps_per_update=128,
        inner_updates=512,
        buffer_size=128,
        anneal_epochs=500,
    ),
}


preset = cfg.preset_function(PRESETS, Config, "epg")


def fitness(returns: jax.Array) -> jax.Array:
    """Footnote 1 of the paper: ``R = R_K + (1/K) sum_{t=0}^{K} ((t+1)/K) R_t`` for
    ``returns = [R_0, ..., R_K]`` (``K + 1`` entries, ``R_K`` the final return).

    NaN entries (updates in which no episode ended) are left out and the remaining weights
    of the sum scaled up to the same total; a NaN ``R_K`` makes the fitness NaN.

    Args:
      returns: ``[..., K + 1]`` average returns of the inner loop's updates, the final
        return last.

    Returns:
      The fitness ``[...]``.

    Raises:
      ValueError: for fewer than 2 entries (``K < 1``).
    """
    K = returns.shape[-1] - 1
    if K < 1:
        raise ValueError(f"fitness needs K + 1 >= 2 returns, got {returns.shape[-1]}")
    w = jnp.arange(1, K + 2, dtype=jnp.float32) / K
    ok = ~jnp.isnan(returns)
    wv = jnp.where(ok, w, 0.0)
    scale = jnp.sum(w) / jnp.maximum(jnp.sum(wv), 1e-12)
    total = jnp.sum(wv * jnp.where(ok, returns, 0.0), axis=-1) * scale
    return returns[..., K] + total / K


def spearman(x: jax.Array, y: jax.Array) -> jax.Array:
    """Spearman's rank correlation of two vectors (section 4.3's rho between the gradients
    of the learned loss and of PPO's objective): Pearson's correlation of their ranks,
    ties sharing their average rank (as ``scipy.stats.spearmanr``).

    Args:
      x: a vector ``[n]`` (flattened if not).
      y: a vector with as many entries.

    Returns:
      A scalar in [-1, 1]; NaN if either vector is constant (no ranking).
    """
    x, y = jnp.ravel(x), jnp.ravel(y)
    if x.shape != y.shape or x.shape[0] < 2:
        raise ValueError(f"spearman needs two vectors of one length >= 2, got {x.shape}, "
                         f"{y.shape}")
    rx = jax.scipy.stats.rankdata(x, method="average").astype(jnp.float32)
    ry = jax.scipy.stats.rankdata(y, method="average").astype(jnp.float32)
    rx, ry = rx - jnp.mean(rx), ry - jnp.mean(ry)
    return jnp.sum(rx * ry) / jnp.sqrt(jnp.sum(rx * rx) * jnp.sum(ry * ry))


def es_ascent(direction: jax.Array, phi: jax.Array, config: Config) -> jax.Array:
    """The outer loop's ascent direction on flat ``phi`` from eq. 5's ES estimate.

    Args:
      direction: ``es_grad``'s flat direction, eq. 5's ``ranks . eps / (n sigma)`` (the
        sum over the population of the shaped fitness times the noise).
      phi: the flat loss parameters.
      config: ``sigma``, ``l2_coef`` and ``l2_form``.

    Returns:
      ``l2_form="code"`` (the authors' ``theta_grad``, in ``openai/EPG``):
      ``sigma * direction - l2_coef * phi = ranks . eps / n - l2_coef * phi``;
      ``"eq5"``: ``direction - l2_coef * phi``. Adam (``beta1 = 0``) ascends it.
    """
    scale = config.sigma if config.l2_form == "code" else 1.0
    return scale * direction - config.l2_coef * phi


def outer_optimizer(config: Config) -> optax.GradientTransformation:
    """The outer loop's optimiser (the authors' code): Adam with ``beta1 = outer_b1``
    (0), the learning rate going linearly ``outer_learning_rate -> ..._final`` over
    ``outer_decay_epochs`` epochs; it minimises, so it gets ``-es_ascent(...)``.

    Args:
      config: ``outer_learning_rate``, ``outer_learning_rate_final``,
        ``outer_decay_epochs`` and ``outer_b1``.

    Returns:
      The optax optimiser of the loss parameters.
    """
    lr = optax.linear_schedule(config.outer_learning_rate, config.outer_learning_rate_final,
                               config.outer_decay_epochs)
    return optax.adam(lr, b1=config.outer_b1)


class Experience(NamedTuple):
    """The buffer of a member's last ``N`` steps, oldest first: raw observations
    ``[N, O]``, raw (policy-space) actions ``[N, A]``, rewards ``[N]``, termination
    flags ``[N]``, and ``valid [N]`` (1 for rows filled with real steps).

    Not a replay row: the loss's temporal convolutions read it in order as one window
    (section 3.2), refreshed by the newest ``M`` steps every update, never sampled."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    done: jax.Array
    valid: jax.Array


@struct.dataclass
class InnerState:
    """One member's agent: flat parameters ``params`` (``theta``: policy, value, memory;
    :attr:`Parts.unravel_theta` gives the dict), ``opt_state = {"agent": ...}`` (the inner
    optimiser's state over all of ``theta``), running statistics of observations, actions
    and rewards, the experience buffer, the env state and a PRNG key."""

    params: jax.Array
    opt_state: dict[str, optax.OptState]
    obs_stats: RunningStats
    act_stats: RunningStats
    rew_stats: RunningStats
    buffer: Experience
    env_state: State
    key: jax.Array


@struct.dataclass
class EpgState:
    """The outer loop's state: ``params = {"loss": phi}``, ``opt_state = {"loss": ...}``
    (the outer Adam's state, or the evosax strategy's, which steps ``phi``), the epoch
    counter ``update_step``, cumulative env steps, outer steps skipped as non-finite and a
    PRNG key."""

    params: Params
    opt_state: dict[str, Any]
    update_step: jax.Array
    env_steps: jax.Array
    nonfinite: jax.Array
    key: jax.Array


class Parts(NamedTuple):
    """EPG's static parts, built once by :func:`make_parts` from a config and a randomised
    env; every stage below takes them as its first argument.

    ``unravel_theta(theta)``: an inner agent's flat parameters as ``{"policy", "value",
    "memory"}``; ``unravel_phi``: the flat loss parameters as the loss net's;
    ``policy_idx``: the entries of ``theta`` that are the policy's (section 4.3's gradients
    are compared there: ``L_phi`` has none on the value net, ``L_PPO`` none on the
    memory); ``strategy``: the evosax strategy (``None`` for ``outer_strategy="es"``)."""

    config: Config
    env: Env
    spec: EnvSpec
    tasks: TaskDistribution
    policy: nn.Module
    value: ValueNet
    memory: MemoryUnit
    loss_net: EPGLoss
    inner_opt: optax.GradientTransformation
    outer_opt: optax.GradientTransformation
    strategy: EvosaxStrategy | None
    unravel_theta: Callable[[jax.Array], Params]
    unravel_phi: Callable[[jax.Array], Params]
    policy_idx: np.ndarray


def loss_input_size(config: Config, spec: EnvSpec) -> int:
    """``F``, the loss's inputs per step (:func:`loss_inputs`; section 3.2).

    Args:
      config: ``memory_size`` and ``use_reward``.
      spec: the env's observation and action sizes.

    Returns:
      The observation, action, termination-flag, memory, policy-mean and -log-std
      columns, plus one for the reward with ``use_reward``.
    """
    A, O = spec.action_size, spec.obs_size  # noqa: E741
    return O + A + 1 + config.memory_size + 2 * A + (1 if config.use_reward else 0)


def init_agent(parts: Parts, key: jax.Array) -> Params:
    """A fresh inner agent's parameters ``theta`` (Algorithm 1's inner loop starts each
    worker from one).

    Args:
      parts: the static :class:`Parts` (its nets and observation size).
      key: PRNG key.

    Returns:
      ``{"policy", "value", "memory"}``: the Gaussian policy, the value net (PPO's
      guidance, eq. 6) and the memory unit (section 3.2).
    """
    k_pi, k_v, k_m = jax.random.split(key, 3)
    return {**common.actor_critic_params(parts.policy, parts.value, parts.spec, k_pi, k_v),
            "memory": parts.memory.init(k_m)}


def init_loss(parts: Parts, key: jax.Array) -> Params:
    """Fresh loss parameters ``phi`` (the initial ``L_phi`` of Algorithm 1).

    Args:
      parts: the static :class:`Parts` (the loss net, ``N``, ``M`` and ``F``).
      key: PRNG key.

    Returns:
      The loss net's parameters for ``[N, F]`` inputs scored on ``M`` rows.
    """
    c = parts.config
    x = jnp.zeros((c.buffer_size, loss_input_size(c, parts.spec)), jnp.float32)
    return parts.loss_net.init(key, x, c.steps_per_update)


def _unravel_of(fn: Callable[[jax.Array], Params]) -> tuple[Any, Callable[[jax.Array], Params]]:
    """The shapes ``fn(key)`` returns and the function unflattening a flat vector to them."""
    shapes = jax.eval_shape(fn, jax.random.PRNGKey(0))
    return shapes, ravel_pytree(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))[1]


def make_parts(config: Config, env: Env) -> Parts:
    """Validates ``config`` and ``env`` (a randomised env with continuous actions and a
    time limit) and builds the nets, optimisers and flat-vector layouts of EPG.

    Args:
      config: the EPG :class:`Config`.
      env: a randomised env (``metareward.envs.make(name, randomize=True)``).

    Returns:
      The :class:`Parts`. Bad configs, a discrete or non-randomised env raise here.
    """
    if not isinstance(config, Config):
        raise TypeError(f"expected metareward.algos.epg.Config, got {type(config).__name__}")
    spec: EnvSpec = env.spec
    tasks = getattr(env, "tasks", None)
    if tasks is None:
        raise ValueError(f"EPG trains on a task distribution; {spec.name} is not randomised: "
                         f"build it with metareward.envs.make({spec.name!r}, randomize=True)")
    if spec.discrete:
        raise ValueError(f"EPG here has a Gaussian policy; {spec.name} has discrete actions")
    if spec.episode_length is None:
        raise ValueError(f"{spec.name} has no time limit; EPG's final evaluation needs one")
    inner_opt = (optax.adam(config.inner_learning_rate) if config.inner_optimizer == "adam"
                 else optax.sgd(config.inner_learning_rate))
    if config.max_grad_norm is not None:
        inner_opt = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), inner_opt)
    parts = Parts(
        config=config, env=env, spec=spec, tasks=tasks,
        policy=make_policy(False, spec.action_size, config.hidden, "tanh"),
        value=ValueNet(config.hidden, "tanh"), memory=MemoryUnit(config.memory_size),
        loss_net=make_loss(config.loss_arch), inner_opt=inner_opt,
        outer_opt=outer_optimizer(config), strategy=None, unravel_theta=None,
        unravel_phi=None, policy_idx=None)  # the layouts below, once the shapes are known
    agent_shapes, unravel_theta = _unravel_of(functools.partial(init_agent, parts))
    loss_shapes, unravel_phi = _unravel_of(functools.partial(init_loss, parts))
    # (numpy, in ravel_pytree's leaf order, so that a traced config can build this too)
    policy_idx = np.flatnonzero(np.concatenate(jax.tree.leaves(
        {k: jax.tree.map(lambda s, k=k: np.full(math.prod(s.shape), k == "policy"), v)
         for k, v in agent_shapes.items()})))
    strategy = (None if config.outer_strategy == "es"
                else make_evosax_strategy(config, loss_shapes, parts.outer_opt))
    return parts._replace(strategy=strategy, unravel_theta=unravel_theta,
                          unravel_phi=unravel_phi, policy_idx=policy_idx)


def alpha_at(config: Config, epoch: jax.Array) -> jax.Array:
    """Eq. 6's alpha at an outer epoch: 1 -> ``alpha_final`` linearly over
    ``anneal_epochs`` (section 3.3), then ``alpha_final``.

    Args:
      config: ``alpha_epochs`` (``anneal_epochs`` resolved) and ``alpha_final``.
      epoch: the outer epoch (``EpgState.update_step``), an int array.

    Returns:
      A float32 scalar.
    """
    E, end = config.alpha_epochs, config.alpha_final
    if E == 0:
        return jnp.full((), end, jnp.float32)
    frac = jnp.clip(1.0 - epoch.astype(jnp.float32) / E, 0.0, 1.0)
    return end + (1.0 - end) * frac


# --- Inner loop (Algorithm 1, lines 3-13) --------------------------------------------


def inner_init(parts: Parts, task: Any, key: jax.Array) -> InnerState:
    """A worker's fresh agent on its task ``M_i`` (Algorithm 1, lines 3-7: ``theta``
    initialised, the initial state ``s_0`` sampled): empty buffer (zeros, ``valid = 0``),
    fresh running statistics and inner optimiser state.

    Args:
      parts: the static :class:`Parts`.
      task: a task of ``parts.tasks`` (checked).
      key: the agent's PRNG key (its initialisation, env reset and later steps).

    Returns:
      The :class:`InnerState` that :func:`inner_run` starts from.
    """
    task = parts.tasks.check(task)
    N, O, A = parts.config.buffer_size, parts.spec.obs_size, parts.spec.action_size  # noqa: E741
    k_agent, k_env, key = jax.random.split(key, 3)
    theta = ravel_pytree(init_agent(parts, k_agent))[0]
    zeros = Experience(jnp.zeros((N, O)), jnp.zeros((N, A)), jnp.zeros((N,)),
                       jnp.zeros((N,)), jnp.zeros((N,)))
    return InnerState(
        params=theta, opt_state={"agent": parts.inner_opt.init(theta)},
        obs_stats=RunningStats.create((O,)), act_stats=RunningStats.create((A,)),
        rew_stats=RunningStats.create((1,)), buffer=zeros,
        env_state=parts.env.reset(k_env, task=task), key=key)


def policy_init(parts: Parts, key: jax.Array) -> InnerState:
    """A fresh agent on the nominal task (the learner contract's ``policy_init``).

    Args:
      parts: the static :class:`Parts`.
      key: the agent's PRNG key.

    Returns:
      :func:`inner_init` on ``parts.tasks.nominal()``.
    """
    return inner_init(parts, parts.tasks.nominal(), key)


def agent_sampler(parts: Parts, theta: jax.Array, stats: RunningStats) -> ActFn:
    """``pi_theta`` as a rollout's actor (Algorithm 1, line 9: ``a_t ~ pi_theta(a_t|s_t)``).

    Args:
      parts: the static :class:`Parts`.
      theta: the agent's flat parameters.
      stats: the running observation statistics it normalises with.

    Returns:
      ``act(obs, key) -> (raw action, env action, log-prob)`` on raw observations.
    """
    p = parts.unravel_theta(theta)

    def act(obs: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        dist = parts.policy.apply(p["policy"], stats.normalize(obs))
        raw = dist.sample(k)
        return raw, dist.to_env(raw), dist.log_prob(raw)

    return act


def push_buffer(buf: Experience, traj: Transition) -> Experience:
    """Fills the buffer (section 3.2: the loss reads the last ``N`` steps).

    Args:
      buf: the buffer, oldest row first.
      traj: the newest ``M`` transitions.

    Returns:
      ``buf`` with the ``M`` steps appended and the oldest ``M`` dropped; their
      termination flags are ``done`` without time-limit truncations, ``valid`` 1.
    """
    M = traj.reward.shape[0]
    term = traj.done * (1.0 - traj.truncation)

    def push(old: jax.Array, new: jax.Array) -> jax.Array:
        return jnp.concatenate([old[M:], new.astype(old.dtype)], axis=0)

    return Experience(push(buf.obs, traj.obs), push(buf.action, traj.action),
                      push(buf.reward, traj.reward), push(buf.done, term),
                      push(buf.valid, jnp.ones((M,))))


def collect(parts: Parts, s: InnerState) -> tuple[InnerState, Transition]:
    """``M`` env steps of the agent on its task (Algorithm 1, lines 8-11: act, observe
    ``r_t`` and ``s_{t+1}``, reset on termination), then the running statistics
    (section 4.1: all inputs normalised) and the buffer updated with them.

    Args:
      parts: the static :class:`Parts`.
      s: the agent before the steps (``params`` unchanged by this stage).

    Returns:
      ``(s, traj)``: the agent with new statistics, buffer, env state and key, and the
      ``M`` transitions.
    """
    c = parts.config
    key, k_roll = jax.random.split(s.key)
    env_state, traj = rollout(parts.env, s.env_state, agent_sampler(parts, s.params, s.obs_stats),
                              k_roll, c.steps_per_update)
    obs_stats = s.obs_stats.update(traj.obs)
    act_stats = s.act_stats.update(traj.action)
    rew_stats = s.rew_stats.update(traj.reward[:, None] * c.reward_scale)
    return s.replace(obs_stats=obs_stats, act_stats=act_stats, rew_stats=rew_stats,
                     buffer=push_buffer(s.buffer, traj), env_state=env_state, key=key), traj


def loss_inputs(parts: Parts, theta: jax.Array, obs_stats: RunningStats,
                act_stats: RunningStats, rew_stats: RunningStats, buf: Experience) -> jax.Array:
    """What the learned loss reads (section 3.2): per buffer row the normalised
    observation and action, the termination flag, the memory output, the policy's mean
    (normalised like the actions) and log-std, and with ``use_reward`` the normalised
    reward; rows not yet filled are zeros.

    Args:
      parts: the static :class:`Parts`.
      theta: the agent's flat parameters (the policy and memory are functions of it, so
        gradients reach the agent through them).
      obs_stats: running observation statistics.
      act_stats: running action statistics.
      rew_stats: running (scaled) reward statistics.
      buf: the :class:`Experience` buffer.

    Returns:
      ``x [N, F]``; ``parts.loss_net.apply(phi, x, M)`` scores its newest ``M`` rows.
    """
    c, N, A = parts.config, parts.config.buffer_size, parts.spec.action_size
    p = parts.unravel_theta(theta)
    obs_n = obs_stats.normalize(buf.obs)
    dist = parts.policy.apply(p["policy"], obs_n)
    mem = parts.memory.apply(p["memory"])
    cols = [obs_n, act_stats.normalize(buf.action), buf.done[:, None],
            jnp.broadcast_to(mem, (N, c.memory_size)),
            act_stats.normalize(dist.mean), jnp.broadcast_to(dist.log_std, (N, A))]
    if c.use_reward:
        cols.append(rew_stats.normalize(buf.reward[:, None] * c.reward_scale))
    return jnp.concatenate(cols, axis=-1) * buf.valid[:, None]


def evolved_loss(parts: Parts, phi: Params, theta: jax.Array, s: InnerState) -> jax.Array:
    """``L_phi``, the learned loss of eq. 4.

    Args:
      parts: the static :class:`Parts`.
      phi: the loss parameters.
      theta: the agent's flat parameters (differentiated).
      s: the agent's statistics and buffer (after :func:`collect`).

    Returns:
      The mean over the newest ``M`` buffer rows of the loss net on :func:`loss_inputs`.
    """
    x = loss_inputs(parts, theta, s.obs_stats, s.act_stats, s.rew_stats, s.buffer)
    return jnp.mean(parts.loss_net.apply(phi, x, parts.config.steps_per_update))


def ppo_guidance(parts: Parts, theta: jax.Array, traj: Transition, obs_n: jax.Array,
                 next_n: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """``L_PPO`` of eq. 6: PPO's clipped surrogate with GAE (and its value loss) on the
    newest ``M`` steps.

    Args:
      parts: the static :class:`Parts`.
      theta: the agent's flat parameters.
      traj: the ``M`` transitions (behaviour log-probs, rewards, done, truncation).
      obs_n: their normalised observations.
      next_n: their normalised next observations.

    Returns:
      ``(L_PPO, (mean, log_std))``: the loss and, gradient-stopped, the policy's
      distribution on ``obs_n`` before the update (for :func:`policy_kl`).
    """
    c = parts.config
    p = parts.unravel_theta(theta)
    v = parts.value.apply(p["value"], obs_n)
    v_next = jax.lax.stop_gradient(parts.value.apply(p["value"], next_n))
    adv, ret = gae(traj.reward * c.reward_scale, jax.lax.stop_gradient(v), v_next,
                   traj.done, traj.truncation, c.gamma, c.gae_lambda)
    adv = standardize(adv)
    dist = parts.policy.apply(p["policy"], obs_n)
    l_ppo, _ = ppo_loss(dist.log_prob(traj.action), traj.log_prob, adv, v, v, ret,
                        dist.entropy(), clip_eps=c.clip_eps, vf_coef=c.vf_coef, ent_coef=0.0)
    old = (jax.lax.stop_gradient(dist.mean), jax.lax.stop_gradient(dist.log_std))
    return l_ppo, old


def agent_step(parts: Parts, s: InnerState,
               grads: jax.Array) -> tuple[jax.Array, dict[str, optax.OptState], jax.Array]:
    """Eq. 4's parameter update ``theta <- theta - delta grads`` (Algorithm 1, line 12; by
    the inner optimiser, Adam as the authors' code or plain SGD), skipped when ``grads``
    has a non-finite entry.

    Args:
      parts: the static :class:`Parts` (the inner optimiser).
      s: the agent (its ``params`` and ``opt_state["agent"]``).
      grads: eq. 6's gradient on the flat ``theta``.

    Returns:
      ``(theta, opt_state, ok)``: new parameters and ``{"agent": ...}`` optimiser state
      (both unchanged unless ``ok``).
    """
    ok = jnp.all(jnp.isfinite(grads))
    updates, agent_opt = parts.inner_opt.update(grads, s.opt_state["agent"], s.params)
    theta = jnp.where(ok, s.params + updates, s.params)
    opt_state = jax.tree.map(lambda a, b: jnp.where(ok, a, b), {"agent": agent_opt},
                             s.opt_state)
    return theta, opt_state, ok


def policy_kl(parts: Parts, theta: jax.Array, obs_n: jax.Array, old_mean: jax.Array,
              old_log_std: jax.Array) -> jax.Array:
    """The KL between consecutive policies of the inner loop (Figure 6).

    Args:
      parts: the static :class:`Parts`.
      theta: the updated agent (``pi_new``).
      obs_n: the new steps' normalised observations.
      old_mean: ``pi_old``'s mean on them.
      old_log_std: ``pi_old``'s log-std.

    Returns:
      ``KL(pi_old || pi_new)`` averaged over the states.
    """
    new = parts.policy.apply(parts.unravel_theta(theta)["policy"], obs_n)
    return jnp.mean(jnp.sum(new.log_std - old_log_std + (jnp.exp(2 * old_log_std) + (
        old_mean - new.mean) ** 2) / (2 * jnp.exp(2 * new.log_std)) - 0.5, axis=-1))


def inner_step(parts: Parts, phi: Params, alpha: jax.Array, s: InnerState,
               _: Any = None) -> tuple[InnerState, Metrics]:
    """One inner update (Algorithm 1, lines 6-12): :func:`collect` ``M`` steps, then one
    step of the agent's optimiser (:func:`agent_step`, eq. 4) along eq. 6's gradient
    ``(1 - alpha) dL_phi + alpha dL_PPO`` (:func:`evolved_loss`, :func:`ppo_guidance`).

    Args:
      parts: the static :class:`Parts`.
      phi: the (perturbed) loss parameters.
      alpha: eq. 6's weight of PPO's guidance.
      s: the agent.
      _: unused (``lax.scan``'s input).

    Returns:
      ``(s, metrics)``: ``episode_return`` (mean of the episodes that ended, NaN if none),
      ``episodes``, ``loss_phi``, ``loss_ppo``, ``kl`` (:func:`policy_kl`),
      ``spearman_ppo`` (section 4.3, over the policy's entries of the two gradients) and
      ``inner_nonfinite``.
    """
    s, traj = collect(parts, s)
    obs_n, next_n = s.obs_stats.normalize(traj.obs), s.obs_stats.normalize(traj.next_obs)
    l_phi, g_phi = jax.value_and_grad(evolved_loss, argnums=2)(parts, phi, s.params, s)
    (l_ppo, (old_mean, old_log_std)), g_ppo = jax.value_and_grad(
        ppo_guidance, argnums=1, has_aux=True)(parts, s.params, traj, obs_n, next_n)
    grads = (1.0 - alpha) * g_phi + alpha * g_ppo
    theta, opt_state, ok = agent_step(parts, s, grads)
    kl = policy_kl(parts, theta, obs_n, old_mean, old_log_std)
    n_ep = jnp.sum(traj.done)
    ret = jnp.where(n_ep > 0, jnp.sum(traj.completed_return * traj.done)
                    / jnp.maximum(n_ep, 1.0), jnp.nan)
    idx = parts.policy_idx
    return s.replace(params=theta, opt_state=opt_state), {
        "episode_return": ret, "episodes": n_ep.astype(jnp.int32), "loss_phi": l_phi,
        "loss_ppo": l_ppo, "kl": kl, "spearman_ppo": spearman(g_phi[idx], g_ppo[idx]),
        "inner_nonfinite": (~ok).astype(jnp.int32)}


def inner_run(parts: Parts, phi: Params, task: Any, key: jax.Array,
              alpha: jax.Array) -> tuple[InnerState, Metrics]:
    """A fresh agent on ``task`` trained for ``K`` updates by the loss ``phi``
    (Algorithm 1, lines 6-12 for one worker: :func:`inner_init`, then ``K``
    :func:`inner_step`).

    Args:
      parts: the static :class:`Parts`.
      phi: the (perturbed) loss parameters.
      task: a task of ``parts.tasks``.
      key: the agent's PRNG key.
      alpha: eq. 6's alpha.

    Returns:
      ``(s, metrics)``: the final agent and :func:`inner_step`'s metrics stacked ``[K]``.
    """
    s = inner_init(parts, task, key)
    step = functools.partial(inner_step, parts, phi, alpha)
    return jax.lax.scan(step, s, None, length=parts.config.inner_updates)


def final_returns(parts: Parts, s: InnerState, task: Any, key: jax.Array,
                  num: int) -> jax.Array:
    """The final return ``R_i`` of a trained agent (Algorithm 1, line 13).

    Args:
      parts: the static :class:`Parts`.
      s: the trained agent.
      task: its (checked) task.
      key: PRNG key of the episodes.
      num: fresh episodes to run.

    Returns:
      ``[num]`` returns of fresh episodes on ``task`` under :func:`act` (the policy's mode
      if ``deterministic_eval``).
    """
    policy_act = lambda obs, k: act(parts, s, obs, k, parts.config.deterministic_eval)
    return evaluate_episodes(parts.env, policy_act, key, num, int(parts.spec.episode_length),
                             task=task)


def inner_loop(parts: Parts, phi: Params, task: Any, key: jax.Array,
               alpha: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One worker of the inner loop (Algorithm 1, lines 3-13): :func:`inner_run` on its
    task with its loss ``phi + sigma eps_i``, then :func:`final_returns`.

    Args:
      parts: the static :class:`Parts`.
      phi: the member's (perturbed) loss parameters.
      task: its task ``M_i``.
      key: its PRNG key.
      alpha: eq. 6's alpha.

    Returns:
      ``(fitness, aux)``: footnote 1's fitness (:func:`fitness`) and ``aux =
      {"returns": [K + 1], "final_return", "inner_nonfinite"}``.
    """
    k_run, k_eval = jax.random.split(key)
    s, m = inner_run(parts, phi, task, k_run, alpha)
    final = jnp.mean(final_returns(parts, s, parts.tasks.check(task), k_eval,
                                   parts.config.eval_episodes))
    returns = jnp.concatenate([m["episode_return"], final[None]])
    return fitness(returns), {"returns": returns, "final_return": final,
                              "inner_nonfinite": jnp.sum(m["inner_nonfinite"])}


def meta_test(parts: Parts, phi: Params, task: Any, key: jax.Array,
              num_eval: int | None = None) -> Metrics:
    """A fresh agent trained on ``task`` by the frozen loss ``phi`` with ``alpha =
    alpha_final`` (default 0, section 4.2: no PPO guidance, rewards reach it only if the
    loss reads them; Figure 7: 0.5).

    Args:
      parts: the static :class:`Parts`.
      phi: the loss parameters.
      task: a task of ``parts.tasks``.
      key: the agent's PRNG key.
      num_eval: fresh episodes for the final return (default ``eval_episodes``).

    Returns:
      :func:`inner_step`'s metrics ``[K]`` with the agent's cumulative ``env_steps``, and
      ``final_return`` (mean of ``num_eval`` fresh episodes).
    """
    c = parts.config
    k_run, k_eval = jax.random.split(key)
    s, m = inner_run(parts, phi, task, k_run, jnp.full((), c.alpha_final, jnp.float32))
    final = final_returns(parts, s, parts.tasks.check(task), k_eval,
                          num_eval or c.eval_episodes)
    env_steps = jnp.arange(1, c.inner_updates + 1, dtype=jnp.int32) * c.steps_per_update
    return {**m, "env_steps": env_steps, "final_return": jnp.mean(final)}


# --- Outer loop (Algorithm 1, lines 2-14) --------------------------------------------


def outer_init(parts: Parts, key: jax.Array) -> EpgState:
    """The outer loop's first state (before Algorithm 1, line 2).

    Args:
      parts: the static :class:`Parts`.
      key: the run's PRNG key.

    Returns:
      The :class:`EpgState` with fresh ``phi`` (:func:`init_loss`) and ``opt_state =
      {"loss": ...}``, the outer optimiser's (or evosax strategy's) state.
    """
    k_phi, key = jax.random.split(key)
    phi = init_loss(parts, k_phi)
    flat = ravel_pytree(phi)[0]
    if parts.strategy is not None:  # (the state's key as with "es": the same epochs follow)
        outer_state = parts.strategy.init(jax.random.fold_in(key, 1), phi)
    else:
        outer_state = parts.outer_opt.init(flat)
    return EpgState(params={"loss": phi}, opt_state={"loss": outer_state},
                    update_step=jnp.zeros((), jnp.int32), env_steps=jnp.zeros((), jnp.int32),
                    nonfinite=jnp.zeros((), jnp.int32), key=key)


def sample_members(parts: Parts, k_task: jax.Array,
                   k_agent: jax.Array) -> tuple[Any, jax.Array]:
    """Every worker's task ``M_i ~ p(M)`` (Algorithm 1, line 5) and agent key; with
    ``antithetic``, the pairs ``+eps`` / ``-eps`` (members ``i`` and ``i + n/2``) share
    both (common random numbers).

    Args:
      parts: the static :class:`Parts`.
      k_task: PRNG key of the tasks.
      k_agent: PRNG key of the agents' keys.

    Returns:
      ``(tasks, agent_keys)``, each with a leading ``pop_size`` axis.
    """
    c = parts.config
    half = c.pop_size // 2 if c.antithetic else c.pop_size
    task_keys = jax.random.split(k_task, half)
    agent_keys = jax.random.split(k_agent, half)
    member_tasks = jax.vmap(parts.tasks.sample)(task_keys)
    if c.antithetic:
        member_tasks = jax.tree.map(lambda x: jnp.concatenate([x, x]), member_tasks)
        agent_keys = jnp.concatenate([agent_keys, agent_keys])
    return member_tasks, agent_keys


def es_step(parts: Parts, state: EpgState, alpha: jax.Array, member_tasks: Any,
            agent_keys: jax.Array, k_noise: jax.Array) -> tuple[jax.Array, Any, Any, Any, Any]:
    """ES over ``phi`` (Algorithm 1, lines 4 and 14, eq. 5): ``es_grad`` perturbs ``phi``
    by ``sigma eps_i``, runs every member's :func:`inner_loop` (vmapped), shapes the
    fitness; Adam ascends :func:`es_ascent` of its direction.

    Args:
      parts: the static :class:`Parts`.
      state: the outer state (``phi`` and ``opt_state["loss"]``).
      alpha: eq. 6's alpha of the epoch.
      member_tasks: every member's task (:func:`sample_members`).
      agent_keys: every member's agent key.
      k_noise: PRNG key of the perturbations ``eps_i``.

    Returns:
      ``(step, opt_state, fitness, aux, direction)``: the flat step on ``phi``, the new
      outer optimiser state, the members' fitness and aux, the flat ES direction.
    """
    c = parts.config
    flat = ravel_pytree(state.params["loss"])[0]
    direction, fit, aux = es_grad(
        lambda phi, args: inner_loop(parts, phi, args[0], args[1], alpha),
        state.params["loss"], k_noise, pop_size=c.pop_size, sigma=c.sigma,
        antithetic=c.antithetic, shaping=c.shaping, args=(member_tasks, agent_keys),
        has_aux=True)
    d = ravel_pytree(direction)[0]
    # minimised by Adam: ascent on fitness (the authors' units by default)
    step, opt_state = parts.outer_opt.update(-es_ascent(d, flat, c), state.opt_state["loss"],
                                             flat)
    return step, opt_state, fit, aux, d


def evosax_step(parts: Parts, state: EpgState, alpha: jax.Array, member_tasks: Any,
                agent_keys: jax.Array, k_noise: jax.Array) -> tuple[jax.Array, Any, Any, Any, Any]:
    """The outer step by an evosax strategy (``outer_strategy``), which owns the search
    distribution (its mean is ``phi``): ask for the members, run every member's
    :func:`inner_loop` (split over the "members" devices, ``metareward.axes``), tell the
    fitness (Algorithm 1, lines 4, 13-14 with the strategy's own update rule).

    Args:
      parts: the static :class:`Parts` (with ``strategy``).
      state: the outer state (``phi`` and ``opt_state["loss"]``, the strategy's).
      alpha: eq. 6's alpha of the epoch.
      member_tasks: every member's task (:func:`sample_members`).
      agent_keys: every member's agent key.
      k_noise: PRNG key of the ask (as ``es_grad``'s noise) and tell.

    Returns:
      As :func:`es_step`; the direction is the step itself.
    """
    flat = ravel_pytree(state.params["loss"])[0]
    # k_noise as es_grad uses it: "Open_ES" draws the same eps as "es" would.
    k_ask, k_tell = k_noise, jax.random.fold_in(k_noise, 1)
    population, opt_state = parts.strategy.ask(k_ask, state.opt_state["loss"])
    fit, aux = gather_members(jax.vmap(
        lambda phi, t, k: inner_loop(parts, phi, t, k, alpha))(
        *local_members((population, member_tasks, agent_keys))))
    opt_state = parts.strategy.tell(k_tell, population, fit, opt_state)
    step = ravel_pytree(parts.strategy.mean(opt_state))[0] - flat
    return step, opt_state, fit, aux, step


def outer_step(parts: Parts, state: EpgState) -> tuple[EpgState, Metrics]:
    """One ES epoch (Algorithm 1, lines 2-14): members' tasks and agents
    (:func:`sample_members`), eq. 6's alpha of the epoch (:func:`alpha_at`), the
    population's inner loops and the step on ``phi`` (:func:`es_step` or
    :func:`evosax_step`), skipped when non-finite.

    Args:
      parts: the static :class:`Parts`.
      state: the outer state.

    Returns:
      ``(state, metrics)``: ``env_steps``, ``fitness_mean``/``_max``, ``alpha``, the
      members' final returns (``episode_return``, ``_std``, ``episodes``),
      ``es_grad_norm``, ``phi_norm``, ``inner_nonfinite_members`` and ``nonfinite``.
    """
    c = parts.config
    key, k_task, k_agent, k_noise = jax.random.split(state.key, 4)
    member_tasks, agent_keys = sample_members(parts, k_task, k_agent)
    a = alpha_at(c, state.update_step)
    flat, _ = ravel_pytree(state.params["loss"])
    outer = es_step if parts.strategy is None else evosax_step
    step, loss_opt, fit, aux, d = outer(parts, state, a, member_tasks, agent_keys, k_noise)
    ok = jnp.all(jnp.isfinite(step))
    new_flat = jnp.where(ok, flat + step, flat)
    opt_state = jax.tree.map(lambda x, y: jnp.where(ok, x, y), {"loss": loss_opt},
                             state.opt_state)
    env_steps = state.env_steps + env_steps_per_epoch(c, int(parts.spec.episode_length))
    finals = aux["final_return"]
    metrics = {
        "env_steps": env_steps,
        "fitness_mean": jnp.nanmean(fit),
        "fitness_max": jnp.nanmax(fit),
        "alpha": a,
        "episode_return": jnp.nanmean(finals),
        "episode_return_std": jnp.nanstd(finals),
        "episodes": jnp.int32(c.pop_size * c.eval_episodes),
        "es_grad_norm": jnp.linalg.norm(d),
        "phi_norm": jnp.linalg.norm(new_flat),
        "inner_nonfinite_members": jnp.sum(aux["inner_nonfinite"] > 0),
        "nonfinite": state.nonfinite + (~ok),
    }
    state = common.advance(state, env_steps, params={"loss": parts.unravel_phi(new_flat)},
                           opt_state=opt_state, nonfinite=state.nonfinite + (~ok), key=key)
    return state, metrics


def act(parts: Parts, agent: Any, obs: jax.Array, key: jax.Array,
        deterministic: bool = False) -> jax.Array:
    """Env actions of an inner agent for raw observations.

    Args:
      parts: the static :class:`Parts`.
      agent: an :class:`InnerState` or its ``Policy`` (what is read is ``params``, the
        flat ``theta``, and ``obs_stats``); not the train state, which holds a loss.
      obs: raw observations.
      key: PRNG key of the sample.
      deterministic: the policy's mode instead of a sample.

    Returns:
      Env actions.
    """
    if isinstance(agent, EpgState):
        raise TypeError("EPG's train state holds the learned loss, not a policy: act "
                        "with an inner agent (the InnerState of inner_run)")
    dist = parts.policy.apply(parts.unravel_theta(agent.params)["policy"],
                              agent.obs_stats.normalize(obs))
    return dist.to_env(dist.mode() if deterministic else dist.sample(key))


def evaluate(parts: Parts, state: EpgState, key: jax.Array, num_episodes: int = 16,
             deterministic: bool = False) -> jax.Array:
    """Meta-test returns of the current loss: ``num_episodes`` fresh agents, each on its
    own random task, trained by ``phi`` with ``alpha = alpha_final`` (:func:`meta_test`).

    Args:
      parts: the static :class:`Parts`.
      state: one seed's :class:`EpgState`.
      key: PRNG key of the tasks and agents.
      num_episodes: agents (one final return each).
      deterministic: unused (the agents' evaluation follows ``deterministic_eval``).

    Returns:
      ``[num_episodes]`` final returns.
    """
    check_one_seed(state)
    del deterministic
    k_task, k_run = jax.random.split(key)
    ts = jax.vmap(parts.tasks.sample)(jax.random.split(k_task, num_episodes))
    out = jax.vmap(lambda t, k: meta_test(parts, state.params["loss"], t, k))(
        ts, jax.random.split(k_run, num_episodes))
    return out["final_return"]


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer(common.LearnerBase):
    """EPG bound to a config and a randomised env; all functions pure and jittable (the
    module's stages bound to :attr:`parts`).

    * ``init(key) -> EpgState`` (:func:`outer_init`) and ``update(state) -> (state,
      metrics)`` (:func:`outer_step`, one ES epoch): the runner's learner protocol, so
      ``metareward meta-train epg`` is a chunked, checkpointed run; ``train(key)``:
      ``init`` and ``num_updates`` epochs, scanned;
    * ``act(agent, obs, key, deterministic=False)`` (:func:`act`): env actions of an inner
      agent (an ``InnerState``, e.g. :func:`inner_run`'s, or its
      :class:`~metareward.algos.policy.Policy`; EPG's train state holds a loss, not a
      policy); ``policy_init(key)``: a fresh agent on the nominal task;
    * ``inner(phi, task, key, alpha) -> (fitness, aux)`` (:func:`inner_loop`): one
      member's inner loop;
    * ``meta_test(phi, task, key, num_eval=None) -> metrics`` (:func:`meta_test`): a fresh
      agent trained by the frozen loss (what ``metareward meta-test`` runs);
    * ``evaluate(state, key, num_episodes)`` (:func:`evaluate`): meta-test final returns.

    The other stages (:func:`inner_run`, :func:`loss_inputs`, :func:`init_loss`,
    :func:`inner_init`, :func:`alpha_at`, ...) take ``trainer.parts`` as first argument.
    """

    parts: Parts
    loss_net: EPGLoss
    policy: nn.Module
    policy_init: Callable[[jax.Array], InnerState]
    inner: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
    meta_test: Callable[..., Metrics]
    #: The population axis for sharding (``metareward.runtime.sharding``): members live
    #: only inside ``update``, split over the mesh's "members" devices there (es_grad).
    population_sizes: tuple[int, ...] = ()
    population_name: str = "pop_size"


def make_train(config: Config, env: Env) -> Trainer:
    """Binds EPG to a randomised env (``metareward.envs.make(name, randomize=True)``).
    Bad configs, a discrete or non-randomised env raise here, before anything compiles
    (:func:`make_parts`).

    Args:
      config: the EPG :class:`Config`.
      env: a randomised continuous-action env with a time limit.

    Returns:
      The :class:`Trainer`.

    Raises:
      TypeError: if ``config`` is not an EPG :class:`Config`.
      ValueError: for a bad config (:class:`~metareward.algos.config.ConfigError`), a
        non-randomised env, discrete actions or no time limit.
    """
    parts = make_parts(config, env)
    bind = functools.partial
    init, update = bind(outer_init, parts), bind(outer_step, parts)
    return Trainer(
        config=config, env=env, spec=parts.spec, parts=parts, loss_net=parts.loss_net,
        policy=parts.policy, num_updates=config.num_epochs, init=init, update=update,
        train=common.scan_train(init, update, config.num_epochs), act=bind(act, parts),
        policy_init=bind(policy_init, parts), inner=bind(inner_loop, parts),
        meta_test=bind(meta_test, parts), evaluate=bind(evaluate, parts),
        population_sizes=(config.pop_size,),
    )


def make_evosax_strategy(config: Config, template: Params,
                         outer_opt: optax.GradientTransformation) -> EvosaxStrategy:
    """The evosax strategy ``config.outer_strategy`` over loss parameters shaped like
    ``template``: ``sigma`` is its initial step size (``std_init``, or a constant
    ``std_schedule`` for the optax-driven ones such as ``Open_ES``, which also get our
    outer Adam and antithetic setting).

    Args:
      config: ``outer_strategy``, ``pop_size``, ``sigma`` and ``antithetic``.
      template: loss parameters (or ``jax.ShapeDtypeStruct`` leaves) fixing the
        searched pytree's structure, shapes and dtypes.
      outer_opt: the outer optimiser (:func:`outer_optimizer`), for strategies whose
        constructor takes one.

    Returns:
      The :class:`~metareward.meta.evosax_adapter.EvosaxStrategy`.
    """
    probe = EvosaxStrategy(config.outer_strategy, config.pop_size, template)
    kwargs: dict[str, Any] = {}
    if hasattr(probe.default_params, "std_init"):
        kwargs["std_init"] = config.sigma
    ctor = inspect.signature(type(probe.algorithm).__init__).parameters
    if "std_schedule" in ctor:
        kwargs["std_schedule"] = optax.constant_schedule(config.sigma)
    if "optimizer" in ctor:
        kwargs["optimizer"] = outer_opt
    if "use_antithetic_sampling" in ctor:
        kwargs["use_antithetic_sampling"] = config.antithetic
    return EvosaxStrategy(config.outer_strategy, config.pop_size, template, **kwargs)


def env_steps_per_epoch(config: Config, episode_length: int) -> int:
    """Env steps of one ES epoch: every member's inner loop and final evaluation.

    Args:
      config: ``pop_size``, ``inner_updates``, ``steps_per_update`` and
        ``eval_episodes``.
      episode_length: steps of one final-evaluation episode (the env's time limit).

    Returns:
      ``pop_size * (inner_updates * steps_per_update + eval_episodes * episode_length)``.
    """
    return config.pop_size * (config.inner_updates * config.steps_per_update
                              + config.eval_episodes * episode_length)


__all__ = ["L2_FORMS", "PRESETS", "Config", "EpgState", "Experience", "InnerState", "Parts",
           "Trainer", "act", "agent_sampler", "agent_step", "alpha_at", "collect",
           "env_steps_per_epoch", "es_ascent", "es_step", "evaluate", "evolved_loss",
           "evosax_step", "final_returns", "fitness", "init_agent", "init_loss", "inner_init",
           "inner_loop", "inner_run", "inner_step", "loss_input_size", "loss_inputs",
           "make_evosax_strategy", "make_parts", "make_train", "meta_test", "outer_init",
           "outer_optimizer", "outer_step", "policy_init", "policy_kl", "ppo_guidance",
           "preset", "push_buffer", "sample_members", "spearman"]
