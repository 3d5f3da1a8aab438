"""Evolved Policy Gradients (Houthooft et al. 2018): a learned loss evolved by ES.

``epg_evolved_policy_gradients.md``, Algorithm 1, sections 3.3 and 4.1; facts from the
authors' code in ``REFERENCE_NOTES.md``. The original ran every inner-loop worker as an
MPI process; here the whole population is one vmapped, jitted program.

* **Inner loop** (Algorithm 1, lines 3-13; :func:`Trainer.inner`): a population member
  gets perturbed loss parameters ``phi + sigma eps_i`` and a task ``M_i ~ p(M)``; a fresh
  agent (Gaussian policy 64x64 tanh, value net, memory unit) runs ``inner_updates = K``
  updates; each collects ``steps_per_update = M`` steps and takes one gradient step
  (eq. 4; Adam as in the authors' code, or plain SGD) on
  ``(1 - alpha) L_phi + alpha L_PPO`` (eq. 6), where ``L_phi`` (:class:`EPGLoss`) reads the
  last ``buffer_size = N`` steps and scores the newest ``M`` and ``L_PPO`` is PPO's clipped
  surrogate with GAE on the newest ``M`` steps (plus its value loss). The fitness is
  footnote 1's ``R_i = R_{i,K} + (1/K) sum_{t=0}^{K} ((t+1)/K) R_{i,t}``
  (:func:`fitness`).
* **Outer loop** (line 14, eq. 5; :func:`Trainer.update`): ``es_grad`` over ``phi`` with
  the population vmapped (each member its own noise, task and inner run); the ascent
  direction is the authors' ``ranks . eps / n - l2 phi`` (:func:`es_ascent`, ``l2_form``),
  applied by Adam (``beta1 = 0``, learning rate decayed linearly, as the authors' code);
  ``alpha`` anneals linearly from 1 to ``alpha_final`` (0; Figure 7: 0.5) over the first
  ``anneal_epochs`` epochs.
* **Meta-test** (:func:`Trainer.meta_test`): a fresh agent trained by the frozen loss with
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
  the oldest: a bug, REFERENCE_NOTES);
* ``R_{i,t}`` (``t < K``) is the mean return of the episodes that ended during update
  ``t``; updates in which none ended are left out of the sum and the other weights scaled
  up to the same total; ``R_{i,K}`` is the mean return of ``eval_episodes`` fresh
  episodes of the trained policy on the member's task (the code's 3);
* antithetic pairs (``antithetic=True``, our default; the code had none) share their task
  and the agent's initialisation (common random numbers);
* one env per member (as one MPI worker had).

Usage::

    env = metareward.envs.make("pendulum", randomize=True)
    trainer = epg.make_train(epg.preset("pendulum"), env)
    state = trainer.init(jax.random.PRNGKey(0))
    state, metrics = jax.jit(trainer.update)(state)     # one ES epoch
    curve = trainer.meta_test(state.params["loss"], task, key)
"""

from __future__ import annotations

import dataclasses
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

from metareward.algos import config as cfg
from metareward.algos.policy import check_one_seed
from metareward.axes import gather_members, local_members
from metareward.envs.spec import EnvSpec
from metareward.meta import es_grad
from metareward.meta.es import SHAPINGS
from metareward.meta.evosax_adapter import EvosaxStrategy, evosax_strategies
from metareward.nets.epg import LOSS_ARCHS, EPGLoss, MemoryUnit, make_loss, min_input_length
from metareward.nets.policies import ValueNet, make_policy
from metareward.rl.gae import gae
from metareward.rl.losses import ppo_loss
from metareward.rl.normalize import RunningStats
from metareward.rl.rollout import evaluate_episodes, rollout
from metareward.rl.stats import standardize

Params = Any
Metrics = dict[str, jax.Array]


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


def preset(env_name: str) -> Config:
    """The tuned config for ``env_name`` if there is one, else the paper defaults (with a
    :class:`~metareward.algos.config.DefaultConfigWarning`); ``ConfigError`` for an env
    name that is not registered (see :func:`metareward.algos.config.preset`)."""
    return cfg.preset(PRESETS, Config(), env_name, "epg")


def fitness(returns: jax.Array) -> jax.Array:
    """Footnote 1 of the paper: ``R = R_K + (1/K) sum_{t=0}^{K} ((t+1)/K) R_t`` for
    ``returns = [R_0, ..., R_K]`` (``K + 1`` entries, ``R_K`` the final return).

    NaN entries (updates in which no episode ended) are left out and the remaining weights
    of the sum scaled up to the same total; a NaN ``R_K`` makes the fitness NaN."""
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
      ``l2_form="code"`` (the authors' ``theta_grad``, REFERENCE_NOTES "EPG"):
      ``sigma * direction - l2_coef * phi = ranks . eps / n - l2_coef * phi``;
      ``"eq5"``: ``direction - l2_coef * phi``. Adam (``beta1 = 0``) ascends it.
    """
    scale = config.sigma if config.l2_form == "code" else 1.0
    return scale * direction - config.l2_coef * phi


def outer_optimizer(config: Config) -> optax.GradientTransformation:
    """The outer loop's optimiser (the authors' code): Adam with ``beta1 = outer_b1``
    (0), the learning rate going linearly ``outer_learning_rate -> ..._final`` over
    ``outer_decay_epochs`` epochs; it minimises, so it gets ``-es_ascent(...)``."""
    lr = optax.linear_schedule(config.outer_learning_rate, config.outer_learning_rate_final,
                               config.outer_decay_epochs)
    return optax.adam(lr, b1=config.outer_b1)


class Experience(NamedTuple):
    """The buffer of a member's last ``N`` steps, oldest first: raw observations
    ``[N, O]``, raw (policy-space) actions ``[N, A]``, rewards ``[N]``, termination
    flags ``[N]``, and ``valid [N]`` (1 for rows filled with real steps)."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    done: jax.Array
    valid: jax.Array


@struct.dataclass
class InnerState:
    """One member's agent: flat parameters ``params`` (``theta``: policy, value, memory), its
    optimiser state, running statistics of observations, actions and rewards, the
    experience buffer, the env state and a PRNG key."""

    params: jax.Array
    opt_state: optax.OptState
    obs_stats: RunningStats
    act_stats: RunningStats
    rew_stats: RunningStats
    buffer: Experience
    env_state: State
    key: jax.Array


@struct.dataclass
class EpgState:
    """The outer loop's state: ``params = {"loss": phi}``, the outer Adam state, the
    epoch counter ``update_step``, cumulative env steps and a PRNG key."""

    params: Params
    opt_state: optax.OptState
    update_step: jax.Array
    env_steps: jax.Array
    nonfinite: jax.Array
    key: jax.Array


class Trainer(NamedTuple):
    """EPG bound to a config and a randomised env; all functions pure and jittable.

    * ``init(key) -> EpgState`` and ``update(state) -> (state, metrics)`` (one ES epoch):
      the runner's learner protocol, so ``metareward meta-train epg`` is a chunked,
      checkpointed run; ``train(key)``: ``init`` and ``num_updates`` epochs, scanned;
    * ``act(agent, obs, key, deterministic=False)``: env actions of an inner agent
      (an ``InnerState``, e.g. ``inner_run``'s, or its
      :class:`~metareward.algos.policy.Policy`; EPG's train state holds a loss, not a
      policy); ``policy_init(key)``: a fresh agent on the nominal task;
    * ``inner(phi, task, key, alpha) -> (fitness, aux)``: one member's inner loop
      (``aux``: ``returns [K + 1]`` and ``inner_nonfinite``);
    * ``inner_run(phi, task, key, alpha) -> (InnerState, metrics)``: the inner loop's final
      agent and per-update metrics ``[K]`` (``episode_return`` NaN where no episode
      ended, ``loss_phi``, ``loss_ppo``, ``kl`` between consecutive policies on the new
      steps: the paper's Figure 6; ``spearman_ppo``: section 4.3's Spearman correlation
      of ``d L_phi / d theta`` and ``d L_PPO / d theta`` over the policy's parameters,
      before the update);
    * ``meta_test(phi, task, key) -> metrics``: ``inner_run`` with ``alpha = alpha_final``
      (0 unless Figure 7's mode) plus the final return (``final_return``): a fresh agent
      trained by the frozen loss;
    * ``loss_inputs(theta, obs_stats, act_stats, rew_stats, buffer) -> [N, F]``: what the
      loss reads, so that ``loss_net.apply(phi, x, M)`` scores it (sensitivity analyses,
      the paper's Figure 9);
    * ``init_loss(key)``: fresh loss parameters ``phi``; ``inner_init(task, key)``: the
      fresh agent ``inner_run`` starts from; ``agent_params(theta)``: an inner agent's
      flat parameters as ``{"policy", "value", "memory"}``.
    """

    config: Config
    env: Env
    spec: EnvSpec
    loss_net: EPGLoss
    policy: nn.Module
    num_updates: int
    init: Callable[[jax.Array], EpgState]
    update: Callable[[EpgState], tuple[EpgState, Metrics]]
    train: Callable[[jax.Array], tuple[EpgState, Metrics]]
    act: Callable[..., jax.Array]
    policy_init: Callable[[jax.Array], InnerState]
    inner: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
    inner_run: Callable[..., tuple[InnerState, Metrics]]
    meta_test: Callable[..., Metrics]
    evaluate: Callable[..., jax.Array]
    loss_inputs: Callable[..., jax.Array]
    alpha: Callable[[jax.Array], jax.Array]
    init_loss: Callable[[jax.Array], Params]
    agent_params: Callable[[jax.Array], Params]
    inner_init: Callable[..., InnerState]
    #: The population axis for sharding (``metareward.runtime.sharding``): members live
    #: only inside ``update``, split over the mesh's "members" devices there (es_grad).
    population_sizes: tuple[int, ...] = ()
    population_name: str = "pop_size"


def make_train(config: Config, env: Env) -> Trainer:
    """Binds EPG to a randomised env (``metareward.envs.make(name, randomize=True)``).
    Bad configs, a discrete or non-randomised env raise here, before anything compiles."""
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
    M, K, N = config.steps_per_update, config.inner_updates, config.buffer_size
    P, A, O = config.pop_size, spec.action_size, spec.obs_size  # noqa: E741
    F = O + A + 1 + config.memory_size + 2 * A + (1 if config.use_reward else 0)
    ep_len = int(spec.episode_length)

    policy = make_policy(False, A, config.hidden, "tanh")
    value = ValueNet(config.hidden, "tanh")
    memory = MemoryUnit(config.memory_size)
    loss_net = make_loss(config.loss_arch)
    inner_opt = (optax.adam(config.inner_learning_rate) if config.inner_optimizer == "adam"
                 else optax.sgd(config.inner_learning_rate))
    if config.max_grad_norm is not None:
        inner_opt = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), inner_opt)
    outer_opt = outer_optimizer(config)
    strategy: EvosaxStrategy | None = None  # built below, once phi's shapes are known

    def init_agent(key: jax.Array) -> Params:
        k_pi, k_v, k_m = jax.random.split(key, 3)
        dummy = jnp.zeros((1, O), jnp.float32)
        return {"policy": policy.init(k_pi, dummy), "value": value.init(k_v, dummy),
                "memory": memory.init(k_m)}

    _agent_shapes = jax.eval_shape(init_agent, jax.random.PRNGKey(0))
    unravel_theta = ravel_pytree(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                              _agent_shapes))[1]
    # theta's entries that are the policy's (section 4.3's gradients are compared there:
    # L_phi has none on the value net, L_PPO none on the memory)
    # (numpy, in ravel_pytree's leaf order, so that a traced config can build this too)
    policy_idx = np.flatnonzero(np.concatenate(jax.tree.leaves(
        {k: jax.tree.map(lambda s, k=k: np.full(math.prod(s.shape), k == "policy"), v)
         for k, v in _agent_shapes.items()})))

    def init_loss(key: jax.Array) -> Params:
        return loss_net.init(key, jnp.zeros((N, F), jnp.float32), M)

    _loss_shapes = jax.eval_shape(init_loss, jax.random.PRNGKey(0))
    unravel_phi = ravel_pytree(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                            _loss_shapes))[1]
    if config.outer_strategy != "es":
        strategy = make_evosax_strategy(config, _loss_shapes, outer_opt)

    def loss_inputs(theta: jax.Array, obs_stats: RunningStats, act_stats: RunningStats,
                    rew_stats: RunningStats, buf: Experience) -> jax.Array:
        """The loss's per-step inputs ``[N, F]`` from the buffer and the current agent: the
        policy's distribution and the memory are functions of ``theta`` (gradients reach
        the agent through them)."""
        p = unravel_theta(theta)
        obs_n = obs_stats.normalize(buf.obs)
        dist = policy.apply(p["policy"], obs_n)
        mem = memory.apply(p["memory"])
        cols = [obs_n, act_stats.normalize(buf.action), buf.done[:, None],
                jnp.broadcast_to(mem, (N, config.memory_size)),
                act_stats.normalize(dist.mean), jnp.broadcast_to(dist.log_std, (N, A))]
        if config.use_reward:
            cols.append(rew_stats.normalize(buf.reward[:, None] * config.reward_scale))
        return jnp.concatenate(cols, axis=-1) * buf.valid[:, None]

    def alpha(epoch: jax.Array) -> jax.Array:
        """Eq. 6's alpha at an epoch: 1 -> ``alpha_final`` linearly over
        ``anneal_epochs``, then ``alpha_final``."""
        E, end = config.alpha_epochs, config.alpha_final
        if E == 0:
            return jnp.full((), end, jnp.float32)
        frac = jnp.clip(1.0 - epoch.astype(jnp.float32) / E, 0.0, 1.0)
        return end + (1.0 - end) * frac

    def act_fn(theta: jax.Array, stats: RunningStats):
        p = unravel_theta(theta)

        def act(obs: jax.Array, k: jax.Array):
            dist = policy.apply(p["policy"], stats.normalize(obs))
            raw = dist.sample(k)
            return raw, dist.to_env(raw), dist.log_prob(raw)

        return act

    def inner_init(task: Any, key: jax.Array) -> InnerState:
        k_agent, k_env, key = jax.random.split(key, 3)
        theta = ravel_pytree(init_agent(k_agent))[0]
        zeros = Experience(jnp.zeros((N, O)), jnp.zeros((N, A)), jnp.zeros((N,)),
                           jnp.zeros((N,)), jnp.zeros((N,)))
        return InnerState(
            params=theta, opt_state=inner_opt.init(theta),
            obs_stats=RunningStats.create((O,)), act_stats=RunningStats.create((A,)),
            rew_stats=RunningStats.create((1,)), buffer=zeros,
            env_state=env.reset(k_env, task=task), key=key)

    def inner_step(phi: Params, alpha_: jax.Array, s: InnerState, _):
        """One inner update (Algorithm 1, lines 6-12): ``M`` env steps, then one step of
        the agent's optimiser on ``(1 - alpha) L_phi + alpha L_ppo`` (eqs. 4, 6)."""
        key, k_roll = jax.random.split(s.key)
        env_state, traj = rollout(env, s.env_state, act_fn(s.params, s.obs_stats), k_roll, M)
        obs_stats = s.obs_stats.update(traj.obs)
        act_stats = s.act_stats.update(traj.action)
        rew_stats = s.rew_stats.update(traj.reward[:, None] * config.reward_scale)
        term = traj.done * (1.0 - traj.truncation)

        def push(old, new):
            return jnp.concatenate([old[M:], new.astype(old.dtype)], axis=0)

        buf = Experience(push(s.buffer.obs, traj.obs), push(s.buffer.action, traj.action),
                         push(s.buffer.reward, traj.reward), push(s.buffer.done, term),
                         push(s.buffer.valid, jnp.ones((M,))))
        obs_n, next_n = obs_stats.normalize(traj.obs), obs_stats.normalize(traj.next_obs)

        def loss_phi(theta):
            x = loss_inputs(theta, obs_stats, act_stats, rew_stats, buf)
            return jnp.mean(loss_net.apply(phi, x, M))

        def loss_ppo(theta):
            p = unravel_theta(theta)
            v = value.apply(p["value"], obs_n)
            v_next = jax.lax.stop_gradient(value.apply(p["value"], next_n))
            adv, ret = gae(traj.reward * config.reward_scale, jax.lax.stop_gradient(v), v_next,
                           traj.done, traj.truncation, config.gamma, config.gae_lambda)
            adv = standardize(adv)
            dist = policy.apply(p["policy"], obs_n)
            l_ppo, _ = ppo_loss(dist.log_prob(traj.action), traj.log_prob, adv, v, v, ret,
                                dist.entropy(), clip_eps=config.clip_eps,
                                vf_coef=config.vf_coef, ent_coef=0.0)
            old = (jax.lax.stop_gradient(dist.mean), jax.lax.stop_gradient(dist.log_std))
            return l_ppo, old

        # the gradient of eq. 6, (1 - alpha) dL_phi + alpha dL_ppo, from its two terms
        l_phi, g_phi = jax.value_and_grad(loss_phi)(s.params)
        (l_ppo, (old_mean, old_log_std)), g_ppo = jax.value_and_grad(
            loss_ppo, has_aux=True)(s.params)
        grads = (1.0 - alpha_) * g_phi + alpha_ * g_ppo
        ok = jnp.all(jnp.isfinite(grads))
        updates, opt_state = inner_opt.update(grads, s.opt_state, s.params)
        theta = jnp.where(ok, s.params + updates, s.params)
        opt_state = jax.tree.map(lambda a, b: jnp.where(ok, a, b), opt_state, s.opt_state)
        # KL(pi_old || pi_new) on the new steps (Figure 6); pi_old as the loss saw it.
        new = policy.apply(unravel_theta(theta)["policy"], obs_n)
        kl = jnp.mean(jnp.sum(new.log_std - old_log_std + (jnp.exp(2 * old_log_std) + (
            old_mean - new.mean) ** 2) / (2 * jnp.exp(2 * new.log_std)) - 0.5, axis=-1))
        n_ep = jnp.sum(traj.done)
        ret = jnp.where(n_ep > 0, jnp.sum(traj.completed_return * traj.done)
                        / jnp.maximum(n_ep, 1.0), jnp.nan)
        s = InnerState(theta, opt_state, obs_stats, act_stats, rew_stats, buf, env_state, key)
        return s, {"episode_return": ret, "episodes": n_ep.astype(jnp.int32),
                   "loss_phi": l_phi, "loss_ppo": l_ppo, "kl": kl,
                   "spearman_ppo": spearman(g_phi[policy_idx], g_ppo[policy_idx]),
                   "inner_nonfinite": (~ok).astype(jnp.int32)}

    def inner_run(phi: Params, task: Any, key: jax.Array, alpha_: jax.Array):
        """A fresh agent on ``task`` trained for ``K`` updates by the loss ``phi``."""
        task = tasks.check(task)
        s = inner_init(task, key)
        return jax.lax.scan(lambda c, x: inner_step(phi, alpha_, c, x), s, None, length=K)

    def final_returns(s: InnerState, task: Any, key: jax.Array, num: int) -> jax.Array:
        act = act_fn(s.params, s.obs_stats)

        def policy_act(obs, k):
            if config.deterministic_eval:
                p = unravel_theta(s.params)
                dist = policy.apply(p["policy"], s.obs_stats.normalize(obs))
                return dist.to_env(dist.mode())
            return act(obs, k)[1]

        return evaluate_episodes(env, policy_act, key, num, ep_len, task=task)

    def inner(phi: Params, task: Any, key: jax.Array, alpha_: jax.Array):
        """One member (Algorithm 1, lines 3-13): ``(fitness, aux)`` with ``aux =
        {"returns": [K + 1], "final_return", "inner_nonfinite"}``."""
        k_run, k_eval = jax.random.split(key)
        s, m = inner_run(phi, task, k_run, alpha_)
        final = jnp.mean(final_returns(s, tasks.check(task), k_eval, config.eval_episodes))
        returns = jnp.concatenate([m["episode_return"], final[None]])
        return fitness(returns), {"returns": returns, "final_return": final,
                                  "inner_nonfinite": jnp.sum(m["inner_nonfinite"])}

    def meta_test(phi: Params, task: Any, key: jax.Array, num_eval: int | None = None):
        """A fresh agent trained on ``task`` by the frozen loss ``phi`` with ``alpha =
        alpha_final`` (default 0: no PPO guidance, rewards reach it only if the loss reads
        them; Figure 7: 0.5): per-update metrics ``[K]`` (with the agent's cumulative
        ``env_steps`` and section 4.3's ``spearman_ppo``) and ``final_return`` (mean of
        ``num_eval`` fresh episodes)."""
        k_run, k_eval = jax.random.split(key)
        s, m = inner_run(phi, task, k_run, jnp.full((), config.alpha_final, jnp.float32))
        final = final_returns(s, tasks.check(task), k_eval, num_eval or config.eval_episodes)
        env_steps = jnp.arange(1, K + 1, dtype=jnp.int32) * M
        return {**m, "env_steps": env_steps, "final_return": jnp.mean(final)}

    def init(key: jax.Array) -> EpgState:
        k_phi, key = jax.random.split(key)
        phi = init_loss(k_phi)
        flat = ravel_pytree(phi)[0]
        if strategy is not None:  # (the state's key as with "es": the same epochs follow)
            outer_state = strategy.init(jax.random.fold_in(key, 1), phi)
        else:
            outer_state = outer_opt.init(flat)
        return EpgState(params={"loss": phi}, opt_state=outer_state,
                        update_step=jnp.zeros((), jnp.int32), env_steps=jnp.zeros((), jnp.int32),
                        nonfinite=jnp.zeros((), jnp.int32), key=key)

    steps_per_epoch = env_steps_per_epoch(config, ep_len)

    def update(state: EpgState) -> tuple[EpgState, Metrics]:
        """One ES epoch (Algorithm 1, lines 2-14)."""
        key, k_task, k_agent, k_noise = jax.random.split(state.key, 4)
        half = P // 2 if config.antithetic else P
        task_keys = jax.random.split(k_task, half)
        agent_keys = jax.random.split(k_agent, half)
        member_tasks = jax.vmap(tasks.sample)(task_keys)
        if config.antithetic:  # pairs +eps / -eps share task and agent (common random numbers)
            member_tasks = jax.tree.map(lambda x: jnp.concatenate([x, x]), member_tasks)
            agent_keys = jnp.concatenate([agent_keys, agent_keys])
        a = alpha(state.update_step)
        flat, _ = ravel_pytree(state.params["loss"])
        if strategy is None:
            direction, fit, aux = es_grad(
                lambda phi, args: inner(phi, args[0], args[1], a),
                state.params["loss"], k_noise, pop_size=P, sigma=config.sigma,
                antithetic=config.antithetic, shaping=config.shaping,
                args=(member_tasks, agent_keys), has_aux=True)
            d = ravel_pytree(direction)[0]
            # minimised by Adam: ascent on fitness (the authors' units by default)
            upd, opt_state = outer_opt.update(-es_ascent(d, flat, config), state.opt_state,
                                              flat)
            step = upd
        else:  # evosax owns the search distribution; its mean is phi
            # k_noise as es_grad uses it: "Open_ES" draws the same eps as "es" would.
            k_ask, k_tell = k_noise, jax.random.fold_in(k_noise, 1)
            population, opt_state = strategy.ask(k_ask, state.opt_state)
            # Split over devices, each runs its block of members (metareward.axes).
            fit, aux = gather_members(jax.vmap(lambda phi, t, k: inner(phi, t, k, a))(
                *local_members((population, member_tasks, agent_keys))))
            opt_state = strategy.tell(k_tell, population, fit, opt_state)
            step = ravel_pytree(strategy.mean(opt_state))[0] - flat
            d = step
        ok = jnp.all(jnp.isfinite(step))
        new_flat = jnp.where(ok, flat + step, flat)
        opt_state = jax.tree.map(lambda x, y: jnp.where(ok, x, y), opt_state, state.opt_state)
        env_steps = state.env_steps + steps_per_epoch
        finals = aux["final_return"]
        metrics = {
            "env_steps": env_steps,
            "fitness_mean": jnp.nanmean(fit),
            "fitness_max": jnp.nanmax(fit),
            "alpha": a,
            "episode_return": jnp.nanmean(finals),
            "episode_return_std": jnp.nanstd(finals),
            "episodes": jnp.int32(P * config.eval_episodes),
            "es_grad_norm": jnp.linalg.norm(d),
            "phi_norm": jnp.linalg.norm(new_flat),
            "inner_nonfinite_members": jnp.sum(aux["inner_nonfinite"] > 0),
            "nonfinite": state.nonfinite + (~ok),
        }
        state = EpgState(params={"loss": unravel_phi(new_flat)}, opt_state=opt_state,
                         update_step=state.update_step + 1, env_steps=env_steps,
                         nonfinite=state.nonfinite + (~ok), key=key)
        return state, metrics

    def train(key: jax.Array) -> tuple[EpgState, Metrics]:
        state = init(key)
        return jax.lax.scan(lambda s, _: update(s), state, None, length=config.num_epochs)

    def act(agent: Any, obs: jax.Array, key: jax.Array,
            deterministic: bool = False) -> jax.Array:
        """Env actions of an inner agent (``InnerState`` or its ``Policy``: what is read
        is ``params``, the flat ``theta``, and ``obs_stats``) for raw observations."""
        if isinstance(agent, EpgState):
            raise TypeError("EPG's train state holds the learned loss, not a policy: act "
                            "with an inner agent (the InnerState of inner_run)")
        dist = policy.apply(unravel_theta(agent.params)["policy"],
                            agent.obs_stats.normalize(obs))
        return dist.to_env(dist.mode() if deterministic else dist.sample(key))

    def evaluate(state: EpgState, key: jax.Array, num_episodes: int = 16,
                 deterministic: bool = False) -> jax.Array:
        """Meta-test returns: ``num_episodes`` fresh agents, each on its own random task,
        trained by the current loss with ``alpha = alpha_final`` (``meta_test``); the
        final return of each."""
        check_one_seed(state)
        del deterministic  # the agents' evaluation follows config.deterministic_eval
        k_task, k_run = jax.random.split(key)
        ts = jax.vmap(tasks.sample)(jax.random.split(k_task, num_episodes))
        out = jax.vmap(lambda t, k: meta_test(state.params["loss"], t, k))(
            ts, jax.random.split(k_run, num_episodes))
        return out["final_return"]

    return Trainer(
        config=config, env=env, spec=spec, loss_net=loss_net, policy=policy,
        num_updates=config.num_epochs, init=init, update=update, train=train, act=act,
        policy_init=lambda key: inner_init(tasks.nominal(), key), inner=inner,
        inner_run=inner_run, meta_test=meta_test, evaluate=evaluate, loss_inputs=loss_inputs,
        alpha=alpha, init_loss=init_loss, agent_params=unravel_theta,
        inner_init=lambda task, key: inner_init(tasks.check(task), key),
        population_sizes=(P,),
    )


def make_evosax_strategy(config: Config, template: Params,
                         outer_opt: optax.GradientTransformation) -> EvosaxStrategy:
    """The evosax strategy ``config.outer_strategy`` over loss parameters shaped like
    ``template``: ``sigma`` is its initial step size (``std_init``, or a constant
    ``std_schedule`` for the optax-driven ones such as ``Open_ES``, which also get our
    outer Adam and antithetic setting)."""
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
    """Env steps of one ES epoch: every member's inner loop and final evaluation."""
    return config.pop_size * (config.inner_updates * config.steps_per_update
                              + config.eval_episodes * episode_length)


__all__ = ["L2_FORMS", "PRESETS", "Config", "EpgState", "Experience", "InnerState", "Trainer",
           "env_steps_per_epoch", "es_ascent", "fitness", "make_train", "outer_optimizer",
           "preset", "spearman"]
