"""MetaGenRL: a learned objective ``L_alpha`` trained through critics, shared by a
population of TD3-style agents in one or several environments.

Kirsch, van Steenkiste & Schmidhuber, "Improving Generalization in Meta Reinforcement
Learning using Learned Objectives" (ICLR 2020), section 3 (Algorithm 1, eq. 6; eq. 8
for several inner steps) and Appendix B (Tables 3-4); details the paper leaves out from
the authors' code (``louiskirsch/metagenrl``). The original ran 20 agents as ray
workers; here the agents of one env are ``vmap``-ed and the agents of all envs update in
one jitted program (a static loop over the env groups; agents in different envs have
different observation and action sizes but share ``alpha``).

Every agent ``i`` has a deterministic policy ``pi_phi``, twin critics ``Q_theta``, target
networks, a ring replay buffer (:class:`metareward.rl.replay.RingBuffer`) and an index of
the completed episodes it holds (:class:`metareward.rl.replay.EpisodeIndex`). One
``update`` of the population:

1. every agent takes ``num_steps`` env steps (uniform random actions for the first
   ``learning_starts``, then ``pi_phi(s) + N(0, exploration_noise^2)``);
2. ``gradient_steps`` population steps (default one per env step). Each:

   * critic: TD3's update (eq. 5 with clipped double Q and target smoothing,
     :mod:`metareward.algos.td3`), by default on ``batch_size`` windows of ``window``
     steps, the squared TD errors averaged over the valid steps (the authors' code;
     ``critic_batch``);
   * every ``policy_delay``-th step, each agent computes

     - the objective gradient of eq. 6: ``g_i = d/d alpha [-mean Q_1(s, pi_{phi'}(s))]``
       with ``phi' = phi - inner_learning_rate * grad_phi sum L_alpha`` on the first of
       ``inner_steps + 1`` disjoint parts of a window batch (eq. 8: one part per step;
       the sum rescaled to ``inner_windows`` windows, the authors' 100), the outer mean
       over all windows' valid steps; clipped to norm ``objective_clip``. By default
       every part holds ``batch_size`` windows, drawn apart from the policy step's (the
       authors' 2 x 100; ``meta_batch``);
     - its policy step: Adam on ``p * mean L_alpha - (1 - p) * mean Q_1(s, pi_phi(s))``
       over ``batch_size`` windows, the gradient clipped to global norm
       ``policy_grad_clip`` (Table 4: 1.0). ``p`` anneals from DDPG to the objective
       (Appendix B.2, "Annealing with DDPG"; ``annealing``): by default
       ``p = min(1, t / anneal_steps)`` from env step 0, with updates from the first
       completed episode on, during the random exploration too (the authors' code: their
       DDPG help ends when the 10k exploration steps do);
     - the soft target update;

     and ``alpha`` takes one Adam step on the mean of the ``g_i`` over all agents.

Windows (Table 4's "truncated episode length" 20) are drawn by default as the authors'
code draws them (:func:`metareward.rl.replay.ring_episode_windows`): a completed episode
uniformly, then ``window`` steps inside it (masked where the episode is shorter).
``window_sampler="transition"`` draws the first step uniformly over transitions
instead (:func:`metareward.rl.replay.ring_windows`): an episode is then drawn in
proportion to its length and windows are cut at its end, which is *not* the same
distribution (e.g. in a buffer mixing short and long episodes the short ones are drawn
far less often).

The objective's inputs per step are ``r_t``, ``V_t = Q_1(s_t, pi(s_t))`` and
``V_{t+1} (1 - terminal_t)`` under ``stop_gradient`` (footnote 3: no gradient reaches
the critic through ``L_alpha``), a time input (by default the step's position in its
window over the window length, as the authors' code; ``time_input="episode"``: its index
in its episode over the env's time limit), the buffer's action and ``pi_phi(s_t)``
(:class:`metareward.nets.ObjectiveLSTM`).

Each of the six choices above on which the authors' code and this module's first
version differ is a :class:`Config` field whose default is the authors' choice;
:data:`LEGACY_TRAINING` holds the first version's values (issue 33).

``objective="reinforce"`` fixes ``L`` to REINFORCE with a GAE baseline on the same
windows and critic (``l_t = -log N(a_t; pi_phi(s_t), sigma^2) A_t`` with ``sigma`` the
exploration noise): the paper's "off-policy REINFORCE (GAE)" baseline, nothing
meta-learned.

The module reads as Algorithm 1 (meta-training); each stage is a pure function of the
static :class:`Parts` (config, env groups, nets, optimisers) that :func:`make_parts` builds:

* :func:`init` ("Randomly initialize population of agents" / "objective function
  L_alpha": :func:`init_agent`, :func:`init_objective`);
* :func:`extend_buffer` ("Extend B using pi_phi in e"; :func:`extend_buffers` for all);
* :func:`sample_batches` ("Sample trajectories from B"; :func:`sample_windows`);
* :func:`update_critic` ("Update critic Q_theta using TD", eq. 5 with TD3's targets);
* :func:`objective_gradient` ("Compute objective function gradient Delta_i for agent i
  according to Equation 6"; :func:`clipped_objective_gradient` clips it), through
  :func:`per_step_objective` (``L_alpha``, section 3.2), :func:`window_values` and
  :func:`objective_time` (its inputs) and :func:`q_objective`;
* :func:`update_policy` ("Update policy pi_phi using grad_phi L_alpha", annealed with
  DDPG) and the soft target update, together :func:`policy_turn`;
* :func:`agent_step`: the loop body for one agent; :func:`population_step`: every agent,
  then :func:`update_objective` ("Sum gradients Delta_i to update L_alpha");
* :func:`update`: one update (buffers extended, then :func:`population_steps`), with
  :func:`episode_statistics`; :func:`meta_test`: Algorithm 2.

:func:`make_train` binds them into the :class:`Trainer`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from brax.envs.base import Env, State
from flax import struct
from jax.flatten_util import ravel_pytree

from metareward.algos import common, onpolicy, td3
from metareward.algos import config as cfg
from metareward.algos.policy import Policy
from metareward.aliases import Metrics, Params
from metareward.axes import local_members, mean_members, sum_members
from metareward.envs.spec import EnvSpec
from metareward.envs.wrappers import VmapWrapper
from metareward.meta import unrolled_hypergrad
from metareward.nets.metagenrl import ObjectiveLSTM
from metareward.rl import replay
from metareward.rl.gae import discounted_cumsum
from metareward.rl.grads import clipped_step
from metareward.rl.replay import RingBuffer, Row
from metareward.rl.stats import masked_mean

OBJECTIVES = ("learned", "reinforce")
#: ``Config.annealing``: "from_start": ``p = min(1, t / anneal_steps)`` from env step 0,
#: each agent updating from its first completed episode on (the authors' code);
#: "after_learning_starts": ``p`` 0 -> 1 over the ``anneal_steps`` env steps after
#: ``learning_starts``, no update before ``learning_starts``.
ANNEALING = ("from_start", "after_learning_starts")
#: ``Config.window_sampler``: "episode": a completed episode uniformly, the window inside
#: it (the authors' code); "transition": the first step uniformly over transitions, the
#: window cut at its episode's end.
WINDOW_SAMPLERS = ("episode", "transition")
#: ``Config.critic_batch``: "windows": the critic trains on ``batch_size`` windows,
#: masked (the authors' code); "transitions": on ``batch_size`` independent transitions.
CRITIC_BATCHES = ("windows", "transitions")
#: ``Config.meta_batch``: "per_part": each of the ``inner_steps + 1`` parts of the
#: meta-gradient's batch holds ``batch_size`` windows, drawn apart from the policy
#: step's (the authors' 2 x 100); "split": the policy step's ``batch_size`` windows,
#: split into ``inner_steps + 1`` parts.
META_BATCHES = ("per_part", "split")
#: ``Config.time_input``: "window": the step's position in its window over ``window``
#: (the authors' code); "episode": its index in its episode over the env's time limit.
TIME_INPUTS = ("window", "episode")
#: The values of this module's first version for the six fields above (issue 33): set
#: them with ``dataclasses.replace(config, **LEGACY_TRAINING)`` to reproduce its runs.
LEGACY_TRAINING: dict[str, Any] = {
    "annealing": "after_learning_starts",
    "policy_grad_clip": None,
    "window_sampler": "transition",
    "critic_batch": "transitions",
    "meta_batch": "split",
    "time_input": "episode",
}
#: Metrics of the policy turns (averaged over those turns only): the objective's mean
#: value, ``mean Q_1(s, pi(s))``, the objective gradient's norm, the look-ahead gain
#: ``Q_1(s, pi_{phi'}(s)) - Q_1(s, pi_phi(s))`` of eq. 6 and the policy's mean ``|pi(s)|``
#: on a [-1, 1] scale, and the policy gradient's norm before clipping.
POLICY_METRICS = (
    "objective_value",
    "q_pi",
    "objective_grad_norm",
    "objective_q_gain",
    "action_saturation",
    "policy_grad_norm",
)


@dataclasses.dataclass(frozen=True)
class Config:
    """MetaGenRL hyperparameters; defaults from the paper's Tables 3-4 and the authors'
    code (``louiskirsch/metagenrl``)."""

    #: Agents in the population, dealt round-robin over the envs (20 in the paper).
    num_agents: int = 20
    #: Env steps per agent in one ``update``.
    num_steps: int = 1
    #: Env steps per agent over the whole run (600k in the paper).
    total_steps: int = 600_000
    #: Env steps of uniform random actions (Table 4: 10k). With
    #: ``annealing="after_learning_starts"`` also the first step of any update.
    learning_starts: int = 10_000
    #: Replay capacity per agent, in transitions.
    buffer_size: int = 1_000_000
    #: Windows per critic and policy batch and per part of the meta-gradient's batch
    #: (Table 4: 100; see ``critic_batch`` and ``meta_batch``).
    batch_size: int = 100
    #: Window length (Table 4's "truncated episode length").
    window: int = 20
    #: Population steps per ``update``; ``None``: ``num_steps`` (one per env step).
    gradient_steps: int | None = None
    critic_learning_rate: float = 1e-3
    policy_learning_rate: float = 1e-3
    #: lambda_3: the plain SGD step of ``phi' = phi - lr grad_phi L_alpha`` (eq. 6), on
    #: the objective summed over ``inner_windows`` windows (see below).
    inner_learning_rate: float = 1e-3
    #: The look-ahead step of eq. 6 sums ``L_alpha`` over windows, so its size grows with
    #: the number of windows summed. The authors' code sums 100 windows (its
    #: ``buffer_sample_size``); here the step's sum over the windows of its part
    #: (``batch_size`` with ``meta_batch="per_part"``, ``batch_size / (inner_steps + 1)``
    #: with ``"split"``) is rescaled to ``inner_windows`` windows, so
    #: ``phi'`` moves as far as in the authors' code whatever ``batch_size`` a run can
    #: afford. (Without it a 20-window CPU batch takes a 10x smaller look-ahead step; the
    #: meta-gradient then barely sees the objective's effect and the agents collapse once
    #: the DDPG term is annealed out.)
    inner_windows: int = 100
    objective_learning_rate: float = 1e-3
    #: Policy steps inside the meta-gradient (1: eq. 6; more: eq. 8).
    inner_steps: int = 1
    #: Each agent's objective gradient is clipped to this global norm before averaging.
    objective_clip: float = 1.0
    #: The policy step's gradient (of the annealed DDPG + objective loss) is clipped to
    #: this global norm before Adam (Table 4's "global norm gradient clipping" 1.0; the
    #: authors' code clips both the DDPG and the objective policy gradients). ``None``:
    #: no clipping.
    policy_grad_clip: float | None = 1.0
    gamma: float = 0.99
    tau: float = 0.005
    policy_delay: int = 2
    target_noise: float = 0.2
    target_noise_clip: float = 0.5
    exploration_noise: float = 0.1
    #: Env steps over which ``p`` goes 0 -> 1 (0: no DDPG; Appendix B.2: 10k).
    anneal_steps: int = 10_000
    #: When ``p`` anneals and updates start: one of :data:`ANNEALING` ("from_start":
    #: ``p = min(1, t / anneal_steps)`` from step 0, updates from each agent's first
    #: completed episode on, as the authors' code; "after_learning_starts": ``p`` 0 -> 1
    #: from ``learning_starts`` to ``learning_starts + anneal_steps``, no update before
    #: ``learning_starts``).
    annealing: str = "from_start"
    #: How windows are drawn: one of :data:`WINDOW_SAMPLERS` ("episode": a completed
    #: episode uniformly, the window placed uniformly inside it, as the authors' code;
    #: "transition": the first step uniformly over transitions, cut at the episode end).
    window_sampler: str = "episode"
    #: What the critic trains on: one of :data:`CRITIC_BATCHES` ("windows": ``batch_size``
    #: windows, the mean over their valid steps, as the authors' code; "transitions":
    #: ``batch_size`` independent transitions).
    critic_batch: str = "windows"
    #: The meta-gradient's batch: one of :data:`META_BATCHES` ("per_part":
    #: ``(inner_steps + 1) x batch_size`` windows of its own, the authors' 2 x 100;
    #: "split": the policy step's ``batch_size`` windows, split into ``inner_steps + 1``
    #: parts).
    meta_batch: str = "per_part"
    #: The objective's time input: one of :data:`TIME_INPUTS` ("window": position in the
    #: window over ``window``, as the authors' code; "episode": index in the episode over
    #: the env's time limit).
    time_input: str = "window"
    hidden: tuple[int, ...] = (350, 350)
    activation: str = "relu"
    layer_norm: bool = True
    reward_scale: float = 1.0
    #: "learned" (MetaGenRL) or "reinforce" (off-policy REINFORCE with GAE, fixed).
    objective: str = "learned"
    #: Train ``alpha`` (False: the objective is frozen, as at meta-test, Algorithm 2).
    meta_learn: bool = True
    # --- the objective L_alpha (nets.ObjectiveLSTM); ablations of section 5.2.2 ---
    use_time: bool = True
    use_value: bool = True
    use_next_value: bool = True
    objective_bound: float = 1000.0
    #: GAE lambda of ``objective="reinforce"``.
    gae_lambda: float = 0.95

    def __post_init__(self) -> None:
        for name in (
            "num_agents",
            "num_steps",
            "total_steps",
            "buffer_size",
            "batch_size",
            "window",
            "inner_steps",
            "inner_windows",
            "policy_delay",
        ):
            cfg.positive_int(name, getattr(self, name))
        for name in ("learning_starts", "anneal_steps"):
            v = getattr(self, name)
            cfg.check(
                name, v, isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an int >= 0"
            )
        if self.gradient_steps is not None:
            cfg.positive_int("gradient_steps", self.gradient_steps)
        for name in (
            "critic_learning_rate",
            "policy_learning_rate",
            "inner_learning_rate",
            "objective_learning_rate",
            "objective_clip",
            "reward_scale",
            "objective_bound",
        ):
            cfg.positive(name, getattr(self, name))
        for name in ("target_noise", "target_noise_clip", "exploration_noise"):
            cfg.non_negative(name, getattr(self, name))
        cfg.in_range("gamma", self.gamma, 0.0, 1.0)
        cfg.in_range("gae_lambda", self.gae_lambda, 0.0, 1.0)
        cfg.in_range("tau", self.tau, 0.0, 1.0, lo_open=True)
        cfg.hidden_sizes("hidden", self.hidden)
        cfg.activation_name("activation", self.activation)
        for name, allowed in (
            ("objective", OBJECTIVES),
            ("annealing", ANNEALING),
            ("window_sampler", WINDOW_SAMPLERS),
            ("critic_batch", CRITIC_BATCHES),
            ("meta_batch", META_BATCHES),
            ("time_input", TIME_INPUTS),
        ):
            v = getattr(self, name)
            cfg.check(name, v, isinstance(v, str) and v in allowed, f"one of {list(allowed)}")
        if self.policy_grad_clip is not None:
            v = self.policy_grad_clip
            cfg.check(
                "policy_grad_clip",
                v,
                cfg.is_traced(v) or (isinstance(cfg.number(v), int | float)
                                     and not isinstance(v, bool) and cfg.number(v) > 0),
                "a number > 0, or None (no clipping)",
            )
        if self.meta_batch == "split":
            cfg.check(
                "batch_size",
                self.batch_size,
                self.batch_size % (self.inner_steps + 1) == 0,
                f"a multiple of inner_steps + 1 = {self.inner_steps + 1} with "
                "meta_batch='split' (the windows are split into disjoint parts, one per "
                "inner step, eq. 8)",
            )
        cfg.check(
            "buffer_size",
            self.buffer_size,
            self.buffer_size >= self.num_steps,
            f">= num_steps = {self.num_steps}",
        )
        object.__setattr__(self, "hidden", tuple(self.hidden))


#: Small settings for the gymnax envs (tests, CPU experiments).
PRESETS: dict[str, Config] = {
    "pendulum": Config(
        num_agents=4,
        total_steps=50_000,
        learning_starts=5_000,
        buffer_size=50_000,
        anneal_steps=5_000,
        hidden=(64, 64),
    ),
}


preset = cfg.preset_function(PRESETS, Config, "metagenrl")


def anneal_p(config: Config, env_steps: jax.Array | int) -> jax.Array:
    """The weight ``p`` of the objective in the policy loss ``p * L_alpha - (1 - p) * Q``
    (Appendix B.2, "Annealing with DDPG").

    Args:
        config: The hyperparameters (``annealing``, ``anneal_steps``, ``learning_starts``).
        env_steps: Env steps per agent so far.

    Returns:
        ``annealing="from_start"`` (the authors' code: ``min(1, t / obj_func_anneal_steps)``
        with ``t`` the agent's env steps so far): ``min(1, t / anneal_steps)``;
        ``"after_learning_starts"``: ``clip((t - learning_starts) / anneal_steps, 0, 1)``.
        ``anneal_steps = 0``: 1 (the objective alone, as at meta-test).
    """
    t = jnp.asarray(env_steps, jnp.float32)
    if config.anneal_steps == 0:
        return jnp.ones_like(t)
    if config.annealing == "from_start":
        return jnp.clip(t / config.anneal_steps, 0.0, 1.0)
    return jnp.clip((t - config.learning_starts) / config.anneal_steps, 0.0, 1.0)


def updates_allowed(config: Config, env_steps: jax.Array | int) -> jax.Array:
    """Whether the population takes gradient steps after ``env_steps`` env steps per agent.

    Args:
        config: The hyperparameters (``annealing``, ``learning_starts``, ``batch_size``).
        env_steps: Env steps per agent so far.

    Returns:
        ``annealing="from_start"``: always (each agent then waits for its first completed
        episode, as the authors' workers simulate whole episodes before their first
        update); ``"after_learning_starts"``: from ``max(learning_starts, batch_size)``
        env steps on.
    """
    t = jnp.asarray(env_steps)
    if config.annealing == "from_start":
        return jnp.ones(t.shape, bool)
    return t >= max(config.learning_starts, config.batch_size)


# ---- state and static parts ------------------------------------------------------------


@struct.dataclass
class Agents:
    """The agents of one env group, every leaf with a leading agent axis: actor and
    critic parameters live in ``MetaGenRLState.params``; this holds the rest.

    Attributes:
        target_params: The target networks ``{"actor": ..., "critic": ...}`` (TD3).
        opt_state: Adam's states keyed by the net each steps, as ``params``:
            ``{"actor": ..., "critic": ...}`` (on the flattened parameter vectors).
        buffer: The agent's replay buffer of :class:`~metareward.rl.replay.Row` s.
        episodes: The completed episodes in ``buffer`` (for ``window_sampler="episode"``).
        env_state: The agent's env (batched as 1).
    """

    target_params: Params
    opt_state: dict[str, optax.OptState]
    buffer: RingBuffer
    episodes: replay.EpisodeIndex
    env_state: State


@struct.dataclass
class MetaGenRLState:
    """Everything MetaGenRL carries between updates (a pytree).

    Attributes:
        params: ``{"objective": alpha, "agents": (group_0, group_1, ...)}`` with
            ``group_g = {"actor": ..., "critic": ...}`` batched over that group's agents.
        groups: The rest of each group's agent state (:class:`Agents`, whose
            ``opt_state`` holds the agents' ``"actor"`` and ``"critic"`` Adam states).
        opt_state: ``{"objective": Adam's state for alpha}`` (the same keys convention as
            :attr:`Agents.opt_state`: the ``params`` key of the net it steps).
        key: The PRNG key of the next update.
        update_step: Updates so far.
        env_steps: One agent's env steps so far.
        grad_steps: Population steps so far (the policy delay's clock).
        nonfinite: Steps skipped because a loss or gradient was not finite.
    """

    params: Params
    groups: tuple[Agents, ...]
    opt_state: dict[str, optax.OptState]
    key: jax.Array
    update_step: jax.Array
    env_steps: jax.Array
    grad_steps: jax.Array
    nonfinite: jax.Array


class Batches(NamedTuple):
    """One agent's batches of a population step, each ``(rows, mask)``: ``critic``
    (``[B, W]`` windows with ``critic_batch="windows"``, ``[B]`` transitions and a mask of
    ones with ``"transitions"``), ``policy`` (``[B, W]``) and ``meta`` (``[(K + 1) B, W]``
    with ``meta_batch="per_part"``, the ``policy`` batch itself with ``"split"``)."""

    critic: tuple[Row, jax.Array]
    policy: tuple[Row, jax.Array]
    meta: tuple[Row, jax.Array]


class Group(NamedTuple):
    """What MetaGenRL knows about one env group (static): its env, spec, number of agents
    and the TD3 learner whose nets, targets and critic loss its agents use."""

    env: Env
    spec: EnvSpec
    num_agents: int
    td3: td3.Trainer


class Parts(NamedTuple):
    """The static parts of a MetaGenRL learner, built once by :func:`make_parts`.

    Attributes:
        config: The hyperparameters.
        groups: One :class:`Group` per env.
        objective: The learned objective ``L_alpha`` (:class:`~metareward.nets.ObjectiveLSTM`).
        optimizers: Adam for each net, keyed as the ``opt_state`` dicts: ``"actor"``,
            ``"critic"`` (per agent) and ``"objective"``.
        num_rows: Replay capacity per agent in rows (a multiple of ``num_steps``).
        grad_steps: Population steps per update.
    """

    config: Config
    groups: tuple[Group, ...]
    objective: ObjectiveLSTM
    optimizers: dict[str, optax.GradientTransformation]
    num_rows: int
    grad_steps: int

    @property
    def learned(self) -> bool:
        """Whether ``L_alpha`` is the learned LSTM (else the fixed REINFORCE objective)."""
        return self.config.objective == "learned"

    @property
    def meta_learn(self) -> bool:
        """Whether ``alpha`` is trained (Algorithm 1) rather than frozen (Algorithm 2)."""
        return self.learned and self.config.meta_learn

    @property
    def wait_for_episode(self) -> bool:
        """Whether an agent waits for its first completed episode before updating."""
        c = self.config
        return c.window_sampler == "episode" or c.annealing == "from_start"


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer(common.LearnerBase):
    """MetaGenRL bound to a config and its envs; all functions pure and jittable.

    Beyond the :class:`~metareward.algos.registry.Learner` protocol
    (:class:`~metareward.algos.common.LearnerBase`; ``env`` and ``spec``: the first of
    ``envs``; ``act`` and ``evaluate``: agent 0 of the first env, or ``agent`` of
    ``group``):

    * ``groups``: the static :class:`Group` s; ``objective``: the
      :class:`~metareward.nets.ObjectiveLSTM` module;
    * ``meta_test(alpha, task, key, num_eval) -> metrics``: Algorithm 2, a fresh agent on
      the first env trained for ``total_steps`` by the frozen objective ``alpha`` (no
      annealing; ``task`` is unused): per-update ``episode_return`` and ``env_steps``
      (``[num_updates]``) and ``final_return`` (mean of ``num_eval`` episodes).

    The stages (:func:`agent_step`, :func:`objective_gradient`, ...) are module-level
    functions of the :class:`Parts` that :func:`make_parts` builds.
    """

    envs: tuple[Env, ...]
    groups: tuple[Group, ...]
    objective: ObjectiveLSTM
    meta_test: Callable[..., Metrics]
    #: Per-env returns and their episode counts, for the runner (NaN where none ended).
    episode_metric_names: dict[str, str]
    #: Sharding (``metareward.runtime.sharding``): each env group's agent count, which
    #: the "members" devices must divide, and ``population_leaves(state)``, true on the
    #: leaves with a leading agent axis (the agents' parameters and ``groups``).
    population_sizes: tuple[int, ...]
    population_leaves: Callable[[MetaGenRLState], Any]
    population_name: str = "agents per env"


def _td3_config(config: Config) -> td3.Config:
    return td3.Config(
        num_envs=1,
        num_steps=config.num_steps,
        total_steps=config.total_steps,
        learning_starts=config.learning_starts,
        buffer_size=config.buffer_size,
        batch_size=config.batch_size,
        actor_learning_rate=config.policy_learning_rate,
        critic_learning_rate=config.critic_learning_rate,
        gamma=config.gamma,
        tau=config.tau,
        policy_delay=config.policy_delay,
        target_noise=config.target_noise,
        target_noise_clip=config.target_noise_clip,
        exploration_noise=config.exploration_noise,
        hidden=config.hidden,
        activation=config.activation,
        layer_norm=config.layer_norm,
        reward_scale=config.reward_scale,
    )


def action_box(spec: EnvSpec) -> tuple[jax.Array, jax.Array]:
    """The env's action bounds ``(low, high)``, ``[A]`` each (``[-1, 1]`` where unset).

    Args:
        spec: The env's spec (``action_low``, ``action_high``, ``action_size``).

    Returns:
        ``(low, high)``, float32 ``[A]`` each.
    """
    low = jnp.asarray(spec.action_low or (-1.0,) * spec.action_size, jnp.float32)
    high = jnp.asarray(spec.action_high or (1.0,) * spec.action_size, jnp.float32)
    return low, high


# ---- Algorithm 1, "Randomly initialize population of agents" and L_alpha --------------


def init_agent(parts: Parts, group: Group, key: jax.Array) -> tuple[Params, Agents]:
    """One agent of ``group`` with an empty buffer (Algorithm 1: ``(e_i, phi_i, theta_i,
    B_i <- {})``).

    Args:
        parts: The learner's static parts.
        group: The agent's env group.
        key: The agent's key (TD3's initialisation of nets and env).

    Returns:
        ``(params, agents)``: ``{"actor": ..., "critic": ...}`` and the rest
        (:class:`Agents`, unbatched).
    """
    st = group.td3.init(key)
    buffer = replay.ring_init(Row.example(group.spec, 1, with_time=True), parts.num_rows)
    agents = Agents(
        target_params=st.target_params,
        opt_state={"actor": st.opt_state["actor"], "critic": st.opt_state["critic"]},
        buffer=buffer,
        episodes=replay.episode_index_init(buffer),
        env_state=st.env_state,
    )
    return st.params, agents


def init_objective(parts: Parts, key: jax.Array) -> Params:
    """Algorithm 1, "Randomly initialize objective function L_alpha" (section 3.2).

    Args:
        parts: The learner's static parts (the objective net and ``config.window``).
        key: PRNG key of the initialisation.

    Returns:
        The objective's parameters ``alpha``.
    """
    W = parts.config.window
    z = jnp.zeros((1, W), jnp.float32)
    a = jnp.zeros((1, W, 1), jnp.float32)
    return parts.objective.init(key, z, z, z, z, a, a, jnp.ones((1, W), jnp.float32))


def init(parts: Parts, key: jax.Array) -> MetaGenRLState:
    """The initial population and objective (Algorithm 1, first two lines).

    Args:
        parts: The learner's static parts.
        key: The run's key.

    Returns:
        The initial :class:`MetaGenRLState` (``alpha = {}`` for the fixed objective).
    """
    k_obj, k_agents, key = jax.random.split(key, 3)
    alpha = init_objective(parts, k_obj) if parts.learned else {}
    agent_params, agent_states = [], []
    for g, group in enumerate(parts.groups):
        keys = local_members(  # split over devices: this device's block of agents
            jax.random.split(jax.random.fold_in(k_agents, g), group.num_agents)
        )
        p, a = jax.vmap(lambda k, group=group: init_agent(parts, group, k))(keys)
        agent_params.append(p)
        agent_states.append(a)
    return MetaGenRLState(
        params={"objective": alpha, "agents": tuple(agent_params)},
        groups=tuple(agent_states),
        opt_state={"objective": parts.optimizers["objective"].init(alpha)},
        key=key,
        update_step=jnp.zeros((), jnp.int32),
        env_steps=jnp.zeros((), jnp.int32),
        grad_steps=jnp.zeros((), jnp.int32),
        nonfinite=jnp.zeros((), jnp.int32),
    )


# ---- Algorithm 1, "Extend B using pi_phi in e" -----------------------------------------


def extend_buffer(
    parts: Parts,
    group: Group,
    params: Params,
    agents: Agents,
    key: jax.Array,
    random_phase: jax.Array,
) -> tuple[Agents, Row, jax.Array]:
    """``num_steps`` env steps of one agent (its env batched as 1), stored in its buffer
    (Algorithm 1, "Extend B using pi_phi in e"; Table 4: uniform random actions while
    ``random_phase``, else ``pi_phi(s) + N(0, exploration_noise^2)``).

    Args:
        parts: The learner's static parts.
        group: The agent's env group.
        params: The agent's ``{"actor": ..., "critic": ...}``.
        agents: The agent's :class:`Agents` (unbatched).
        key: The rollout's key.
        random_phase: Whether to act uniformly at random (``env_steps < learning_starts``).

    Returns:
        ``(agents, rows, returns)``: the agent with its env, buffer and episode index
        moved on, the rows stored (``[T, 1]``) and the returns of the episodes that ended
        (``[T]``, NaN where none ended).
    """
    config, tr, spec = parts.config, group.td3, group.spec
    low, high = action_box(spec)
    env1 = VmapWrapper(group.env, 1)
    flatten_obs, _ = onpolicy.obs_preprocessor(spec, False)

    def step(state: State, k: jax.Array) -> tuple[State, tuple[Row, jax.Array]]:
        k_a, k_u = jax.random.split(k)
        a = tr.act(Policy(params), state.obs, k_a)
        u = jax.random.uniform(k_u, a.shape, minval=low, maxval=high)
        a = jnp.where(random_phase, u, a)
        nxt = env1.step(state, a)
        row = Row(
            obs=flatten_obs(state.obs).astype(jnp.float32),
            action=a,
            reward=(nxt.reward * config.reward_scale).astype(jnp.float32),
            done=nxt.done.astype(jnp.float32),
            truncation=nxt.info["truncation"].astype(jnp.float32),
            next_obs=flatten_obs(nxt.info["final_obs"]).astype(jnp.float32),
            time=(state.info["episode_length"].astype(jnp.float32) / spec.episode_length),
        )
        ret = jnp.where(row.done > 0, nxt.info["completed_return"], jnp.nan)
        return nxt, (row, ret)

    keys = jax.random.split(key, config.num_steps)
    env_state, (rows, rets) = jax.lax.scan(step, agents.env_state, keys)
    buffer = replay.ring_insert(agents.buffer, rows)
    episodes = replay.episode_insert(agents.episodes, agents.buffer.head, rows.done)
    return (
        agents.replace(env_state=env_state, buffer=buffer, episodes=episodes),
        rows,
        rets[:, 0],
    )


def extend_buffers(
    parts: Parts, state: MetaGenRLState, key: jax.Array, random_phase: jax.Array
) -> tuple[tuple[Agents, ...], list[jax.Array]]:
    """:func:`extend_buffer` for every agent of every env group ("for each agent i in
    parallel": ``vmap`` over a group's agents).

    Split over devices (the driver's ``shard_map``), the state holds this device's block
    of each group's agents, and the keys are cut to match (:mod:`metareward.axes`).

    Args:
        parts: The learner's static parts.
        state: The population.
        key: The rollouts' key.
        random_phase: Whether to act uniformly at random.

    Returns:
        ``(groups, returns)``: each group's :class:`Agents` and its agents' episode
        returns (``[agents, T]``, NaN where none ended).
    """
    groups, returns = [], []
    for g, group in enumerate(parts.groups):
        keys = local_members(jax.random.split(jax.random.fold_in(key, g), group.num_agents))
        a, _, rets = jax.vmap(
            lambda p, ag, k, group=group: extend_buffer(parts, group, p, ag, k, random_phase)
        )(state.params["agents"][g], state.groups[g], keys)
        groups.append(a)
        returns.append(rets)
    return tuple(groups), returns


# ---- Algorithm 1, "Sample trajectories from B" -----------------------------------------


def sample_windows(
    config: Config, agents: Agents, key: jax.Array, n: int
) -> tuple[Row, jax.Array]:
    """``n`` windows of ``config.window`` steps from one agent's buffer (Table 4's
    truncated episodes; ``window_sampler``).

    Args:
        config: The hyperparameters.
        agents: The agent's :class:`Agents` (unbatched).
        key: The sampling key.
        n: Windows to draw.

    Returns:
        ``(rows, mask)``: :class:`~metareward.rl.replay.Row` of ``[n, W, ...]`` and the
        valid steps ``[n, W]``.
    """
    W = config.window
    if config.window_sampler == "episode":
        return replay.ring_episode_windows(key, agents.buffer, agents.episodes, n, W)
    return replay.ring_windows(key, agents.buffer, n, W, lambda d: d.done)


def sample_batches(config: Config, agents: Agents, key: jax.Array) -> Batches:
    """The batches of one agent's population step drawn with ``key`` (Algorithm 1,
    "Sample trajectories from B"; see :class:`Batches`), as :func:`agent_step` draws them.

    Args:
        config: The hyperparameters.
        agents: The agent's :class:`Agents` (unbatched).
        key: The population step's key for this agent.

    Returns:
        The critic's, the policy step's and the meta-gradient's ``(rows, mask)``.
    """
    B, K = config.batch_size, config.inner_steps
    k_c, _, k_w = jax.random.split(key, 3)
    if config.critic_batch == "windows":
        critic = sample_windows(config, agents, k_c, B)
    else:
        t, e = replay.ring_sample_indices(k_c, agents.buffer, B)
        critic = (replay.gather(agents.buffer, t, e), jnp.ones((B,), jnp.float32))
    policy = sample_windows(config, agents, k_w, B)
    if config.meta_batch == "per_part":
        meta = sample_windows(config, agents, jax.random.fold_in(k_w, 1), (K + 1) * B)
    else:
        meta = policy
    return Batches(critic=critic, policy=policy, meta=meta)


# ---- Algorithm 1, "Update critic Q_theta using TD" -------------------------------------


def update_critic(
    parts: Parts,
    group: Group,
    critic_params: Params,
    opt_state: optax.OptState,
    target_params: Params,
    batch: Row,
    mask: jax.Array,
    key: jax.Array,
) -> tuple[Params, optax.OptState, jax.Array, Metrics]:
    """One Adam step of the twin critics on TD3's targets (section 3.1, eq. 5 with
    clipped double Q and target smoothing, :mod:`metareward.algos.td3`).

    With ``critic_batch="windows"`` the loss is the sum over the critics of the squared TD
    errors averaged over the valid window steps (the authors' code); with
    ``"transitions"``, TD3's loss on independent transitions.

    Args:
        parts: The learner's static parts.
        group: The agent's env group.
        critic_params: The agent's critics.
        opt_state: Their Adam state.
        target_params: The agent's target networks.
        batch: The critic batch (``[B, W]`` or ``[B]`` rows).
        mask: Its valid steps.
        key: The target-smoothing noise's key.

    Returns:
        ``(critic_params, opt_state, ok, metrics)``: ``ok`` False where the loss or
        gradient was not finite (then nothing moved); ``critic_loss``, ``q_mean``,
        ``grad_norm``.
    """
    tr = group.td3
    y = tr.td_target(target_params, batch, key)
    c_flat, c_unravel = ravel_pytree(critic_params)

    def critic_loss(f: jax.Array) -> tuple[jax.Array, Metrics]:
        if parts.config.critic_batch == "transitions":
            return tr.critic_loss(c_unravel(f), batch, y)
        q = tr.q_values(c_unravel(f), batch.obs, batch.action)  # [C, B, W]
        loss = sum(masked_mean(jnp.square(q[i] - y), mask) for i in range(q.shape[0]))
        return loss, {"critic_loss": loss, "q_mean": masked_mean(q[0], mask)}

    c_flat, opt_state, ok, _, aux = clipped_step(
        critic_loss, parts.optimizers["critic"], c_flat, opt_state, None
    )
    return c_unravel(c_flat), opt_state, ok, aux


# ---- the objective L_alpha (section 3.2) -----------------------------------------------


def objective_time(config: Config, batch: Row) -> jax.Array:
    """The objective's time input ``t`` (section 3.2), ``[B, W]``.

    Args:
        config: The hyperparameters (``time_input``).
        batch: A window batch.

    Returns:
        ``j / W`` at window position ``j`` (``time_input="window"``; the authors' code
        divides by the window length 20) or the stored ``t / T`` (``"episode"``).
    """
    if config.time_input == "episode":
        return batch.time
    w = batch.reward.shape[-1]
    return jnp.broadcast_to(jnp.arange(w, dtype=jnp.float32) / w, batch.reward.shape)


def window_values(
    group: Group, actor_params: Params, critic_params: Params, batch: Row
) -> tuple[jax.Array, jax.Array]:
    """The objective's value inputs, constants (section 3.2, footnote 3).

    Args:
        group: The agent's env group.
        actor_params: The policy ``phi``.
        critic_params: The critics (``Q_1`` is read).
        batch: A window batch.

    Returns:
        ``(V_t, V_{t+1} (1 - terminal_t))``, ``[B, W]`` each, with
        ``V(s) = Q_1(s, pi_phi(s))``, under ``stop_gradient``.
    """
    tr = group.td3
    q1 = jax.tree.map(lambda x: x[0], critic_params)
    v = tr.critic.apply(q1, batch.obs, tr.actor.apply(actor_params, batch.obs))
    vn = tr.critic.apply(q1, batch.next_obs, tr.actor.apply(actor_params, batch.next_obs))
    return jax.lax.stop_gradient(v), jax.lax.stop_gradient(vn * (1.0 - batch.terminal))


def per_step_objective(
    parts: Parts,
    group: Group,
    alpha: Params,
    actor_params: Params,
    batch: Row,
    mask: jax.Array,
    values: tuple[jax.Array, jax.Array],
) -> jax.Array:
    """``L_alpha(tau, x(phi), V)`` per step (section 3.2, Figure 2), or with
    ``objective="reinforce"`` the fixed off-policy REINFORCE with GAE (section 2, eq. 3:
    ``l_t = -log N(a_t; pi_phi(s_t), sigma^2) A_t``, ``sigma`` the exploration noise).

    Args:
        parts: The learner's static parts.
        group: The agent's env group.
        alpha: The objective's parameters (``{}`` for REINFORCE).
        actor_params: The policy ``phi``; gradients reach it only through ``pi_phi(s_t)``.
        batch: A window batch ``[B, W]``.
        mask: Its valid steps.
        values: :func:`window_values` of the batch.

    Returns:
        ``l_t`` of every window step, ``[B, W]`` (0 at masked steps).
    """
    config = parts.config
    pi = group.td3.actor.apply(actor_params, batch.obs)
    v, vn = values
    if parts.learned:
        t = objective_time(config, batch)
        return parts.objective.apply(alpha, batch.reward, v, vn, t, batch.action, pi, mask)
    low, high = action_box(group.spec)
    sigma = config.exploration_noise * 0.5 * (high - low)
    logp = jnp.sum(-0.5 * jnp.square((batch.action - pi) / sigma), axis=-1)
    delta = batch.reward + config.gamma * vn - v
    disc = config.gamma * config.gae_lambda * (1.0 - batch.done) * mask
    adv = discounted_cumsum((delta * mask).T, disc.T).T  # backward over each window
    mu = masked_mean(adv, mask)
    sd = jnp.sqrt(masked_mean(jnp.square(adv - mu), mask))
    adv = jax.lax.stop_gradient((adv - mu) / (sd + 1e-8))
    return -logp * adv * mask


def q_objective(
    group: Group, actor_params: Params, critic_params: Params, obs: jax.Array, mask: jax.Array
) -> jax.Array:
    """DDPG's objective ``mean Q_1(s, pi_phi(s))`` over the valid steps of a window batch
    (section 3.1).

    Args:
        group: The agent's env group.
        actor_params: The policy ``phi``.
        critic_params: The critics (``Q_1`` is read).
        obs: Observations ``[B, W, obs]``.
        mask: Valid steps ``[B, W]``.

    Returns:
        The masked mean, a scalar.
    """
    tr = group.td3
    q1 = jax.tree.map(lambda x: x[0], critic_params)
    return masked_mean(tr.critic.apply(q1, obs, tr.actor.apply(actor_params, obs)), mask)


# ---- Algorithm 1, "Compute objective function gradient Delta_i according to eq. 6" -----


def objective_gradient(
    parts: Parts,
    group: Group,
    alpha: Params,
    actor_params: Params,
    critic_params: Params,
    batch: Row,
    mask: jax.Array,
    values: tuple[jax.Array, jax.Array] | None = None,
) -> tuple[Params, jax.Array]:
    """One agent's eq.-6 gradient (eq. 8 for ``inner_steps > 1``), unclipped: the
    gradient in ``alpha`` of ``-mean Q_1(s, pi_{phi'}(s))``.

    ``phi'`` comes from ``inner_steps`` SGD steps of ``inner_learning_rate`` on the summed
    objective of disjoint parts of the windows (one part per step, eq. 8; each part's sum
    rescaled to ``config.inner_windows`` windows: the step is
    ``inner_learning_rate * inner_windows / part_size * grad sum``); the outer mean runs
    over all windows.

    Args:
        parts: The learner's static parts.
        group: The agent's env group.
        alpha: The objective's parameters.
        actor_params: The policy ``phi``.
        critic_params: The critics.
        batch: Windows ``[n, W]``, ``n`` a multiple of ``inner_steps + 1``.
        mask: Their valid steps.
        values: The batch's :func:`window_values` if already computed.

    Returns:
        ``(g, q_ahead)``: the gradient (a pytree like ``alpha``) and the outer value
        ``mean Q_1(s, pi_{phi'}(s))`` it differentiates (the look-ahead policy's value).
    """
    config = parts.config
    if values is None:
        values = window_values(group, actor_params, critic_params, batch)
    n_parts = config.inner_steps + 1
    n = batch.reward.shape[0]
    if n % n_parts:
        raise ValueError(
            f"the window batch has {n} windows, not a multiple of inner_steps + 1 = {n_parts}"
        )
    # the summed objective of n / n_parts windows, rescaled to inner_windows windows
    inner_lr = config.inner_learning_rate * config.inner_windows / (n // n_parts)
    split = lambda x: x.reshape(n_parts, n // n_parts, *x.shape[1:])
    b_parts = jax.tree.map(split, batch)
    m_parts = split(mask)
    v_parts = jax.tree.map(split, values)

    def inner(phi: Params, a: Params, k: int) -> Params:
        bk = jax.tree.map(lambda x: x[k], b_parts)
        vk = jax.tree.map(lambda x: x[k], v_parts)
        objective = lambda p: jnp.sum(per_step_objective(parts, group, a, p, bk, m_parts[k], vk))
        g = jax.grad(objective)(phi)
        return jax.tree.map(lambda p_, g_: p_ - inner_lr * g_, phi, g)

    def outer(phi: Params, a: Params) -> tuple[jax.Array, jax.Array]:
        q = q_objective(group, phi, critic_params, batch.obs, mask)
        return -q, q

    return unrolled_hypergrad(inner, outer, actor_params, alpha, config.inner_steps, has_aux=True)


def clipped_objective_gradient(
    parts: Parts,
    group: Group,
    alpha: Params,
    actor_params: Params,
    critic_params: Params,
    batches: Batches,
    values: tuple[jax.Array, jax.Array],
) -> tuple[Params, jax.Array, jax.Array, jax.Array | None, jax.Array | None]:
    """``Delta_i`` of Algorithm 1: :func:`objective_gradient` on the meta batch, clipped
    to global norm ``objective_clip`` (the authors' code); zeros without meta-learning.

    Args:
        parts: The learner's static parts.
        group: The agent's env group.
        alpha: The objective's parameters.
        actor_params: The policy ``phi`` before its step.
        critic_params: The critics after their step.
        batches: The agent's :class:`Batches`.
        values: :func:`window_values` of the policy batch (reused with
            ``meta_batch="split"``, where the meta batch is the policy batch).

    Returns:
        ``(g, norm, ok, q_ahead, q_now)``: the clipped gradient, its norm before clipping,
        whether that is finite, and ``mean Q_1`` of the look-ahead and of the current
        policy on the meta batch (``q_now`` None with ``"split"``: the policy step's
        ``q_pi`` is that value; both None without meta-learning).
    """
    if not parts.meta_learn:
        return jax.tree.map(jnp.zeros_like, alpha), jnp.float32(0.0), jnp.bool_(True), None, None
    config = parts.config
    split = config.meta_batch == "split"
    m_win, m_mask = batches.meta
    g, q_ahead = objective_gradient(
        parts, group, alpha, actor_params, critic_params, m_win, m_mask, values if split else None
    )
    g_flat, g_unravel = ravel_pytree(g)
    g_norm = jnp.sqrt(jnp.sum(g_flat**2))
    g_flat = g_flat * jnp.minimum(1.0, config.objective_clip / (g_norm + 1e-6))
    q_now = None if split else q_objective(group, actor_params, critic_params, m_win.obs, m_mask)
    return g_unravel(g_flat), g_norm, jnp.isfinite(g_norm), q_ahead, q_now


# ---- Algorithm 1, "Update policy pi_phi using grad_phi L_alpha" ------------------------


def update_policy(
    parts: Parts,
    group: Group,
    alpha: Params,
    actor_params: Params,
    critic_params: Params,
    opt_state: optax.OptState,
    batch: tuple[Row, jax.Array],
    values: tuple[jax.Array, jax.Array],
    p: jax.Array,
) -> tuple[Params, optax.OptState, jax.Array, Metrics]:
    """One Adam step of the policy on ``p * mean L_alpha - (1 - p) * mean Q_1(s, pi(s))``
    (section 3.1; Appendix B.2, "Annealing with DDPG"), the gradient clipped to global
    norm ``policy_grad_clip`` (Table 4).

    Args:
        parts: The learner's static parts.
        group: The agent's env group.
        alpha: The objective's parameters.
        actor_params: The policy ``phi``.
        critic_params: The critics after their step.
        opt_state: The policy's Adam state.
        batch: The policy batch ``(rows, mask)``.
        values: Its :func:`window_values`.
        p: The objective's weight (:func:`anneal_p`).

    Returns:
        ``(actor_params, opt_state, ok, metrics)``: ``ok`` False where the loss or
        gradient was not finite (then nothing moved); ``objective_value``, ``q_pi``,
        ``grad_norm`` (before clipping).
    """
    win, mask = batch
    a_flat, a_unravel = ravel_pytree(actor_params)

    def loss(f: jax.Array) -> tuple[jax.Array, Metrics]:
        ap = a_unravel(f)
        l_mean = masked_mean(per_step_objective(parts, group, alpha, ap, win, mask, values), mask)
        q = q_objective(group, ap, critic_params, win.obs, mask)
        return p * l_mean - (1.0 - p) * q, {"objective_value": l_mean, "q_pi": q}

    a_flat, opt_state, ok, _, aux = clipped_step(
        loss, parts.optimizers["actor"], a_flat, opt_state, parts.config.policy_grad_clip
    )
    return a_unravel(a_flat), opt_state, ok, aux


def policy_metrics(
    group: Group,
    actor_params: Params,
    batch: tuple[Row, jax.Array],
    g_norm: jax.Array,
    q_ahead: jax.Array | None,
    q_now: jax.Array | None,
    aux: Metrics,
) -> Metrics:
    """The :data:`POLICY_METRICS` of one agent's policy turn.

    Besides the policy step's ``objective_value``, ``q_pi`` and gradient norm: the
    objective gradient's norm, how much the look-ahead step ``phi'`` raised ``Q_1`` on the
    meta batch (eq. 6's gain; 0 without meta-learning) and how close ``pi(s)`` is to the
    action bounds (mean ``|pi|`` on a [-1, 1] scale; 1 = saturated, where the tanh stops
    passing gradients to ``phi``).

    Args:
        group: The agent's env group.
        actor_params: The policy before its step.
        batch: The policy batch ``(rows, mask)``.
        g_norm: The objective gradient's norm before clipping.
        q_ahead: ``mean Q_1(s, pi_{phi'}(s))`` on the meta batch, or None.
        q_now: ``mean Q_1(s, pi_phi(s))`` there, or None (then ``aux["q_pi"]``).
        aux: :func:`update_policy` 's metrics.

    Returns:
        The metrics named in :data:`POLICY_METRICS`.
    """
    win, mask = batch
    low, high = action_box(group.spec)
    pi = group.td3.actor.apply(actor_params, win.obs)
    sat = jnp.mean(jnp.abs((2.0 * pi - (high + low)) / (high - low)), axis=-1)
    if q_ahead is None:
        gain = jnp.float32(0.0)
    else:
        gain = q_ahead - (aux["q_pi"] if q_now is None else q_now)
    return {
        "objective_value": aux["objective_value"],
        "q_pi": aux["q_pi"],
        "objective_grad_norm": g_norm,
        "objective_q_gain": gain,
        "action_saturation": masked_mean(sat, mask),
        "policy_grad_norm": aux["grad_norm"],
    }


def policy_turn(
    parts: Parts,
    group: Group,
    alpha: Params,
    actor_params: Params,
    critic_params: Params,
    agents: Agents,
    batches: Batches,
    p: jax.Array,
) -> tuple[Params, optax.OptState, Params, Params, jax.Array, Metrics]:
    """Every ``policy_delay``-th step of one agent (TD3's delay, Appendix B.2 "Standard
    training"): ``Delta_i`` (eq. 6), the policy step and the soft target update.

    Args:
        parts: The learner's static parts.
        group: The agent's env group.
        alpha: The objective's parameters.
        actor_params: The policy ``phi``.
        critic_params: The critics after their step.
        agents: The agent's :class:`Agents` (unbatched).
        batches: The agent's :class:`Batches`.
        p: The objective's weight (:func:`anneal_p`).

    Returns:
        ``(actor_params, actor_opt_state, target_params, g_alpha, ok, metrics)``.
    """
    values = window_values(group, actor_params, critic_params, batches.policy[0])
    g, g_norm, ok_g, q_ahead, q_now = clipped_objective_gradient(
        parts, group, alpha, actor_params, critic_params, batches, values
    )
    actor, a_opt, ok_a, aux = update_policy(
        parts, group, alpha, actor_params, critic_params, agents.opt_state["actor"],
        batches.policy, values, p,
    )
    online = {"actor": actor, "critic": critic_params}
    target = td3.polyak(agents.target_params, online, parts.config.tau)
    metrics = policy_metrics(group, actor_params, batches.policy, g_norm, q_ahead, q_now, aux)
    return actor, a_opt, target, g, ok_a & ok_g, metrics


def skip_policy_turn(
    alpha: Params, actor_params: Params, agents: Agents
) -> tuple[Params, optax.OptState, Params, Params, jax.Array, Metrics]:
    """:func:`policy_turn` 's outputs off a policy turn: nothing moves, ``g_alpha`` and
    the metrics are zeros.

    Args:
        alpha: The objective's parameters (the shapes of the zero ``g_alpha``).
        actor_params: The policy ``phi``, returned unchanged.
        agents: The agent's :class:`Agents` (unbatched), whose actor optimiser state and
            target networks are returned unchanged.

    Returns:
        ``(actor_params, actor_opt_state, target_params, g_alpha, ok, metrics)`` as
        :func:`policy_turn` returns them, with ``g_alpha`` zeros, ``ok`` ``True`` and
        every metric ``0.0``.
    """
    zero = jnp.float32(0.0)
    return (
        actor_params,
        agents.opt_state["actor"],
        agents.target_params,
        jax.tree.map(jnp.zeros_like, alpha),
        jnp.bool_(True),
        {k: zero for k in POLICY_METRICS},
    )


# ---- one agent's population step (Algorithm 1's inner loop body) ----------------------


def agent_step(
    parts: Parts,
    group: Group,
    params: Params,
    agents: Agents,
    alpha: Params,
    key: jax.Array,
    is_policy_turn: jax.Array,
    p: jax.Array,
) -> tuple[Params, Agents, Params, jax.Array, Metrics]:
    """One agent's population step (Algorithm 1, "for each agent i in parallel"): sample
    its batches, its critic step and, on a policy turn, :func:`policy_turn`.

    An agent waits for its first completed episode (``window_sampler="episode"`` or
    ``annealing="from_start"``): until then nothing changes, ``g_alpha`` is zero and
    ``metrics["agent_ready"]`` is 0.

    Args:
        parts: The learner's static parts.
        group: The agent's env group.
        params: The agent's ``{"actor": ..., "critic": ...}``.
        agents: The agent's :class:`Agents` (unbatched).
        alpha: The objective's parameters.
        key: The agent's key for this step.
        is_policy_turn: Whether this is a policy turn (``grad_steps % policy_delay == 0``).
        p: The objective's weight (:func:`anneal_p`).

    Returns:
        ``(params, agents, g_alpha, bad, metrics)``: ``bad`` counts the non-finite steps
        skipped (0-2), ``g_alpha`` is ``Delta_i`` clipped to ``objective_clip``.
    """
    _, k_n, _ = jax.random.split(key, 3)
    batches = sample_batches(parts.config, agents, key)
    batch, c_mask = batches.critic
    critic, c_opt, ok_c, c_aux = update_critic(
        parts, group, params["critic"], agents.opt_state["critic"], agents.target_params,
        batch, c_mask, k_n,
    )
    actor, a_opt, target, g, ok_p, p_aux = jax.lax.cond(
        is_policy_turn,
        lambda _: policy_turn(parts, group, alpha, params["actor"], critic, agents, batches, p),
        lambda _: skip_policy_turn(alpha, params["actor"], agents),
        None,
    )
    new_params = {"actor": actor, "critic": critic}
    new_agents = agents.replace(target_params=target, opt_state={"actor": a_opt, "critic": c_opt})
    bad = (~ok_c).astype(jnp.int32) + (~ok_p).astype(jnp.int32)
    if parts.wait_for_episode:
        ready = jnp.sum(agents.episodes.count) > 0
        keep = lambda new, old: jax.tree.map(lambda x, y: jnp.where(ready, x, y), new, old)
        new_params, new_agents = keep(new_params, params), keep(new_agents, agents)
        g = jax.tree.map(lambda x: jnp.where(ready, x, 0.0), g)
        bad = jnp.where(ready, bad, 0)
    else:
        ready = jnp.bool_(True)
    metrics = {**c_aux, **p_aux, "agent_ready": ready.astype(jnp.float32)}
    return new_params, new_agents, g, bad, metrics


# ---- Algorithm 1, "Sum gradients Delta_i to update L_alpha" ----------------------------


def update_objective(
    parts: Parts,
    alpha: Params,
    opt_state: optax.OptState,
    grads: Sequence[Params],
    ready: jax.Array,
    is_policy_turn: jax.Array,
) -> tuple[Params, optax.OptState, jax.Array]:
    """One Adam step of ``alpha`` on the mean of the agents' clipped ``Delta_i``
    (Algorithm 1, last line; section 3.3 "Population-Based").

    The mean runs over all agents of all envs (an all-reduce when the agents are split
    over devices); agents still waiting for their first episode contribute nothing. A
    non-finite mean is not applied (``alpha`` kept, counted as ``bad``).

    Args:
        parts: The learner's static parts.
        alpha: The objective's parameters.
        opt_state: Their Adam state.
        grads: Each group's per-agent gradients (leading agent axis).
        ready: The number of agents that have updated (all devices).
        is_policy_turn: Whether this is a policy turn (else nothing moves).

    Returns:
        ``(alpha, opt_state, bad)``.
    """
    total = sum_members(jax.tree.map(lambda *xs: sum(jnp.sum(x, axis=0) for x in xs), *grads))
    if parts.wait_for_episode:
        mean_g = jax.tree.map(lambda x: x / jnp.maximum(ready, 1.0), total)
        turn = is_policy_turn & (ready > 0)
    else:
        mean_g = jax.tree.map(lambda x: x / parts.config.num_agents, total)
        turn = is_policy_turn
    ok = jnp.all(jnp.isfinite(ravel_pytree(mean_g)[0]))
    upd, new_opt = parts.optimizers["objective"].update(
        jax.tree.map(lambda x: jnp.where(ok, x, 0.0), mean_g), opt_state, alpha
    )
    step_alpha = turn & ok
    alpha = jax.tree.map(lambda a, u: jnp.where(step_alpha, a + u, a), alpha, upd)
    opt_state = jax.tree.map(lambda a, b: jnp.where(turn, a, b), new_opt, opt_state)
    return alpha, opt_state, (turn & ~ok).astype(jnp.int32)


# ---- the population: Algorithm 1's loop body for every agent, then L_alpha ------------


def population_step(
    parts: Parts, p: jax.Array, state: MetaGenRLState, key: jax.Array
) -> tuple[MetaGenRLState, Metrics]:
    """One step of every agent (:func:`agent_step`, ``vmap``-ed over each group's agents)
    and then of ``alpha`` (:func:`update_objective`; with meta-learning only).

    Args:
        parts: The learner's static parts.
        p: The objective's weight (:func:`anneal_p`).
        state: The population (its ``grad_steps`` is the policy delay's clock).
        key: This step's key.

    Returns:
        ``(state, metrics)``: metrics averaged over all agents, plus ``policy_turn``.
    """
    turn = state.grad_steps % parts.config.policy_delay == 0
    alpha = state.params["objective"]
    nonfinite, ready = state.nonfinite, jnp.float32(0.0)
    new_params, new_agents, grads, metrics = [], [], [], []
    for g, group in enumerate(parts.groups):
        keys = local_members(jax.random.split(jax.random.fold_in(key, g), group.num_agents))
        out = jax.vmap(
            lambda pp, ag, kk, group=group: agent_step(parts, group, pp, ag, alpha, kk, turn, p)
        )(state.params["agents"][g], state.groups[g], keys)
        new_params.append(out[0])
        new_agents.append(out[1])
        grads.append(out[2])
        nonfinite = nonfinite + sum_members(jnp.sum(out[3]))
        metrics.append(out[4])
        ready = ready + sum_members(jnp.sum(out[4]["agent_ready"]))
    opt_state = state.opt_state
    if parts.meta_learn:
        alpha, opt_alpha, bad = update_objective(
            parts, alpha, opt_state["objective"], grads, ready, turn
        )
        opt_state = {**opt_state, "objective": opt_alpha}
        nonfinite = nonfinite + bad
    # (every device holds the same number of agents: the mean of the means)
    m = mean_members(
        {k: jnp.mean(jnp.concatenate([jnp.atleast_1d(x[k]) for x in metrics])) for k in metrics[0]}
    )
    m["policy_turn"] = turn.astype(jnp.float32)
    new_state = state.replace(
        params={"objective": alpha, "agents": tuple(new_params)},
        groups=tuple(new_agents),
        opt_state=opt_state,
        grad_steps=state.grad_steps + 1,
        nonfinite=nonfinite,
    )
    return new_state, m


def population_steps(
    parts: Parts, p: jax.Array, state: MetaGenRLState, key: jax.Array
) -> tuple[MetaGenRLState, Metrics]:
    """``grad_steps`` :func:`population_step` s (Appendix B.2: one per env step).

    Args:
        parts: The learner's static parts.
        p: The objective's weight (:func:`anneal_p`).
        state: The population.
        key: The steps' key.

    Returns:
        ``(state, metrics)``: the :data:`POLICY_METRICS` averaged over the policy turns,
        the others over all steps.
    """
    keys = jax.random.split(key, parts.grad_steps)
    state, m = jax.lax.scan(functools.partial(population_step, parts, p), state, keys)
    turns = jnp.sum(m.pop("policy_turn"))
    return state, {
        k: (jnp.sum(v) / jnp.maximum(turns, 1.0) if k in POLICY_METRICS else jnp.mean(v))
        for k, v in m.items()
    }


def no_population_steps(state: MetaGenRLState) -> tuple[MetaGenRLState, Metrics]:
    """:func:`population_steps` 's outputs before updates are allowed: the state
    unchanged and zero metrics (the runner reads NaN as an error).

    Args:
        state: The meta-training state.

    Returns:
        ``(state, metrics)``: ``state`` unchanged and ``0.0`` for each metric
        :func:`population_steps` reports.
    """
    zero = jnp.float32(0.0)
    names = ("critic_loss", "q_mean", "grad_norm", *POLICY_METRICS, "agent_ready")
    return state, {k: zero for k in names}


def episode_statistics(parts: Parts, returns: Sequence[jax.Array]) -> Metrics:
    """Episode statistics of an update: the first env's agents as the run's
    ``episode_return``, ``episode_return_std`` and ``episodes`` (what the runner and
    progress bar show), and every env's mean return and episode count by name.

    Args:
        parts: The learner's static parts.
        returns: Each group's returns (this device's agents; sums and counts are
            all-reduced), NaN where no episode ended.

    Returns:
        The metrics (NaN returns where no episode ended).
    """
    metrics: Metrics = {}
    for g, group in enumerate(parts.groups):
        r = returns[g]
        ended = ~jnp.isnan(r)
        cnt = sum_members(jnp.sum(ended))
        mean = sum_members(jnp.sum(jnp.where(ended, r, 0.0))) / jnp.maximum(cnt, 1)
        mean = jnp.where(cnt > 0, mean, jnp.nan)
        if g == 0:
            var = sum_members(jnp.sum(jnp.where(ended, jnp.square(r - mean), 0.0)))
            var = var / jnp.maximum(cnt, 1)
            metrics.update(
                episode_return=mean,
                episode_return_std=jnp.where(cnt > 0, jnp.sqrt(var), jnp.nan),
                episodes=cnt.astype(jnp.int32),
            )
        metrics[f"return_{group.spec.name}"] = mean
        metrics[f"episodes_{group.spec.name}"] = cnt.astype(jnp.int32)
    return metrics


def update(parts: Parts, state: MetaGenRLState) -> tuple[MetaGenRLState, Metrics]:
    """One update of the population (Algorithm 1's ``while`` body): every agent extends
    its buffer by ``num_steps`` env steps, then (where :func:`updates_allowed`)
    ``grad_steps`` population steps.

    Args:
        parts: The learner's static parts.
        state: The population.

    Returns:
        ``(state, metrics)``.
    """
    config = parts.config
    key, k_roll, k_grad = jax.random.split(state.key, 3)
    random_phase = state.env_steps < config.learning_starts
    groups, returns = extend_buffers(parts, state, k_roll, random_phase)
    env_steps = state.env_steps + config.num_steps
    learn = updates_allowed(config, env_steps)
    p = anneal_p(config, env_steps)
    new, m = jax.lax.cond(
        learn,
        lambda s: population_steps(parts, p, s, k_grad),
        no_population_steps,
        state.replace(groups=groups),
    )
    metrics = {**m, "anneal_p": p, "env_steps": env_steps, "nonfinite": new.nonfinite}
    metrics.update(episode_statistics(parts, returns))
    new = common.advance(new, env_steps, key=key)
    return new, metrics


# ---- acting, evaluation, meta-test -------------------------------------------------------


def act(
    parts: Parts,
    state: Any,
    obs: jax.Array,
    key: jax.Array,
    deterministic: bool = False,
    group: int = 0,
    agent: int = 0,
) -> jax.Array:
    """Env actions of agent ``agent`` of env ``group`` for raw observations of that env.

    Args:
        parts: The learner's static parts.
        state: A train state or its :class:`~metareward.algos.policy.Policy`.
        obs: Raw observations of env ``group``.
        key: The exploration noise's key.
        deterministic: ``pi_phi(s)`` alone, else plus TD3's exploration noise.
        group: The env group.
        agent: The agent in that group.

    Returns:
        The actions.
    """
    params = jax.tree.map(lambda x: x[agent], state.params["agents"][group])
    return parts.groups[group].td3.act(Policy(params), obs, key, deterministic)


def evaluate(
    parts: Parts,
    state: MetaGenRLState,
    key: jax.Array,
    num_episodes: int = 16,
    deterministic: bool = True,
    group: int = 0,
    agent: int = 0,
) -> jax.Array:
    """Returns of ``num_episodes`` fresh episodes of agent ``agent`` of env ``group``.

    Args:
        parts: The learner's static parts.
        state: One seed's state.
        key: The episodes' key.
        num_episodes: Episodes to run.
        deterministic: Ignored: evaluation acts with ``pi_phi(s)`` (the policy is
            deterministic; its noise is a training device), as in the authors' code.
        group: The env group.
        agent: The agent in that group.

    Returns:
        ``[num_episodes]`` returns.
    """
    del deterministic
    grp = parts.groups[group]
    fn = lambda s, obs, k, _: act(parts, s, obs, k, True, group, agent)
    return common.episode_evaluator(grp.env, fn, grp.spec.episode_length)(state, key, num_episodes)


def meta_test(
    parts: Parts, alpha: Params, task: Any, key: jax.Array, num_eval: int | None = None
) -> Metrics:
    """Algorithm 2 (meta-test): one fresh agent on the first env, trained by the frozen
    ``alpha`` with ``p = 1`` from the start of learning (no DDPG annealing; with
    ``annealing="from_start"`` updates start at the first completed episode, during the
    random exploration, as in the authors' test config).

    Args:
        parts: The meta-trained learner's static parts.
        alpha: The objective's parameters.
        task: Unused.
        key: The agent's key.
        num_eval: Final evaluation episodes (default 10).

    Returns:
        Per-update ``episode_return`` and ``env_steps`` and the ``final_return``.
    """
    del task
    test = make_train(
        dataclasses.replace(parts.config, num_agents=1, meta_learn=False, anneal_steps=0),
        parts.groups[0].env,
    )
    k_init, k_eval = jax.random.split(key)
    s = test.init(k_init)
    s = s.replace(params={**s.params, "objective": alpha})
    s, m = jax.lax.scan(lambda c, _: test.update(c), s, None, length=test.num_updates)
    final = jnp.mean(test.evaluate(s, k_eval, num_eval or 10))
    return {
        "episode_return": m["episode_return"],
        "env_steps": m["env_steps"],
        "final_return": final,
    }


def population_leaves(state: MetaGenRLState) -> MetaGenRLState:
    """``state`` with every leaf replaced by whether it has a leading agent axis: the
    agents' parameters and ``groups`` do, the objective, its optimiser and the counters
    do not.

    Args:
        state: A meta-training state (or one of the same structure).

    Returns:
        A :class:`MetaGenRLState` of Python bools, ``True`` at the leaves with a leading
        agent axis.
    """
    flag = lambda tree, value: jax.tree.map(lambda _: value, tree)
    out = flag(state, False)
    return out.replace(
        params={
            "objective": flag(state.params["objective"], False),
            "agents": flag(state.params["agents"], True),
        },
        groups=flag(state.groups, True),
    )


# ---- assembly ----------------------------------------------------------------------------


def make_parts(config: Config, env: Env | Sequence[Env]) -> Parts:
    """Validates ``config`` against the envs and builds the static parts.

    Args:
        config: The hyperparameters.
        env: One env or a sequence of envs (continuous actions; any observation and
            action sizes). ``config.num_agents`` agents are dealt round-robin over them
            (agent ``i`` to env ``i % len(envs)``).

    Returns:
        The :class:`Parts`. Bad configs or env/config mismatches raise here, before
        anything is compiled.
    """
    if not isinstance(config, Config):
        raise TypeError(f"expected metareward.algos.metagenrl.Config, got {type(config).__name__}")
    env_list = [env] if not isinstance(env, list | tuple) else list(env)
    if not env_list:
        raise ValueError("MetaGenRL needs at least one env")
    if config.num_agents < len(env_list):
        raise ValueError(
            f"num_agents={config.num_agents} is fewer than the {len(env_list)} "
            "envs; every env needs at least one agent"
        )
    tcfg = _td3_config(config)
    groups = []
    for g, e in enumerate(env_list):
        spec = onpolicy.check_env(e)
        if spec.discrete:
            raise ValueError(f"MetaGenRL needs continuous actions; env {spec.name!r} is discrete")
        n = len(range(g, config.num_agents, len(env_list)))
        groups.append(Group(e, spec, n, td3.make_train(tcfg, e)))
    T = config.num_steps
    if config.total_steps // T < 1:
        raise ValueError(
            f"total_steps={config.total_steps} is less than one update (num_steps = {T})"
        )
    objective = ObjectiveLSTM(
        use_time=config.use_time,
        use_value=config.use_value,
        use_next_value=config.use_next_value,
        bound=config.objective_bound,
    )
    optimizers = {
        "actor": optax.adam(config.policy_learning_rate),
        "critic": optax.adam(config.critic_learning_rate),
        "objective": optax.adam(config.objective_learning_rate),
    }
    return Parts(
        config=config,
        groups=tuple(groups),
        objective=objective,
        optimizers=optimizers,
        num_rows=config.buffer_size // T * T,
        grad_steps=config.gradient_steps or T,
    )


def make_train(config: Config, env: Env | Sequence[Env]) -> Trainer:
    """Binds MetaGenRL to one env or a sequence of envs (see :func:`make_parts`).

    Args:
        config: The hyperparameters.
        env: One env or a sequence of envs with continuous actions.

    Returns:
        The :class:`Trainer`: the stages of this module bound to :func:`make_parts`'s
        parts.
    """
    parts = make_parts(config, env)
    num_updates = config.total_steps // config.num_steps
    init_ = functools.partial(init, parts)
    update_ = functools.partial(update, parts)
    return Trainer(
        config=config,
        env=parts.groups[0].env,
        spec=parts.groups[0].spec,
        envs=tuple(g.env for g in parts.groups),
        groups=parts.groups,
        objective=parts.objective,
        num_updates=num_updates,
        init=init_,
        update=update_,
        train=common.scan_train(init_, update_, num_updates),
        act=functools.partial(act, parts),
        evaluate=functools.partial(evaluate, parts),
        meta_test=functools.partial(meta_test, parts),
        episode_metric_names={
            f"return_{g.spec.name}": f"episodes_{g.spec.name}" for g in parts.groups
        },
        population_sizes=tuple(g.num_agents for g in parts.groups),
        population_leaves=population_leaves,
    )


__all__ = [
    "ANNEALING",
    "CRITIC_BATCHES",
    "LEGACY_TRAINING",
    "META_BATCHES",
    "OBJECTIVES",
    "POLICY_METRICS",
    "PRESETS",
    "TIME_INPUTS",
    "WINDOW_SAMPLERS",
    "Agents",
    "Batches",
    "Config",
    "Group",
    "MetaGenRLState",
    "Parts",
    "Trainer",
    "act",
    "action_box",
    "agent_step",
    "anneal_p",
    "clipped_objective_gradient",
    "episode_statistics",
    "evaluate",
    "extend_buffer",
    "extend_buffers",
    "init",
    "init_agent",
    "init_objective",
    "make_parts",
    "make_train",
    "meta_test",
    "no_population_steps",
    "objective_gradient",
    "objective_time",
    "per_step_objective",
    "policy_metrics",
    "policy_turn",
    "population_leaves",
    "population_step",
    "population_steps",
    "preset",
    "q_objective",
    "sample_batches",
    "sample_windows",
    "skip_policy_turn",
    "update",
    "update_critic",
    "update_objective",
    "update_policy",
    "updates_allowed",
    "window_values",
]
