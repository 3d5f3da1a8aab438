"""MetaGenRL: a learned objective ``L_alpha`` trained through critics, shared by a
population of TD3-style agents in one or several environments.

Kirsch, van Steenkiste & Schmidhuber, "Improving Generalization in Meta Reinforcement
Learning using Learned Objectives" (``metagenrl_learned_objectives.md``), section 3
(Algorithm 1, eq. 6; eq. 8 for several inner steps) and Appendix B (Tables 3-4); details
from the authors' code in ``REFERENCE_NOTES.md``. The original ran 20 agents as ray
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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from brax.envs.base import Env, State
from flax import struct
from jax.flatten_util import ravel_pytree

from metareward.algos import config as cfg
from metareward.algos import td3
from metareward.algos.onpolicy import check_env, obs_preprocessor
from metareward.algos.policy import Policy, check_one_seed
from metareward.axes import local_members, mean_members, sum_members
from metareward.envs.spec import EnvSpec
from metareward.envs.wrappers import VmapWrapper
from metareward.meta import unrolled_hypergrad
from metareward.nets.metagenrl import ObjectiveLSTM
from metareward.rl import replay
from metareward.rl.gae import discounted_cumsum
from metareward.rl.replay import RingBuffer
from metareward.rl.rollout import evaluate_episodes
from metareward.rl.stats import masked_mean

Params = Any
Metrics = dict[str, jax.Array]

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
    code (``REFERENCE_NOTES.md``)."""

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


def preset(env_name: str) -> Config:
    """The tuned config for ``env_name`` if there is one, else the paper defaults (with a
    :class:`~metareward.algos.config.DefaultConfigWarning`); ``ConfigError`` for an env
    name that is not registered (see :func:`metareward.algos.config.preset`)."""
    return cfg.preset(PRESETS, Config(), env_name, "metagenrl")


def anneal_p(config: Config, env_steps: jax.Array | int) -> jax.Array:
    """The weight ``p`` of the objective in the policy loss ``p * L_alpha - (1 - p) * Q``
    after ``env_steps`` env steps per agent (Appendix B.2, "Annealing with DDPG").

    ``annealing="from_start"`` (the authors' code: ``min(1, t / obj_func_anneal_steps)``
    with ``t`` the agent's env steps so far): ``min(1, t / anneal_steps)``;
    ``"after_learning_starts"``: ``clip((t - learning_starts) / anneal_steps, 0, 1)``.
    ``anneal_steps = 0``: 1 (the objective alone, as at meta-test)."""
    t = jnp.asarray(env_steps, jnp.float32)
    if config.anneal_steps == 0:
        return jnp.ones_like(t)
    if config.annealing == "from_start":
        return jnp.clip(t / config.anneal_steps, 0.0, 1.0)
    return jnp.clip((t - config.learning_starts) / config.anneal_steps, 0.0, 1.0)


def updates_allowed(config: Config, env_steps: jax.Array | int) -> jax.Array:
    """Whether the population takes gradient steps after ``env_steps`` env steps per agent.

    ``annealing="from_start"``: always (each agent then waits for its first completed
    episode, as the authors' workers simulate whole episodes before their first update);
    ``"after_learning_starts"``: from ``max(learning_starts, batch_size)`` env steps on."""
    t = jnp.asarray(env_steps)
    if config.annealing == "from_start":
        return jnp.ones(t.shape, bool)
    return t >= max(config.learning_starts, config.batch_size)


class Rows(NamedTuple):
    """One env step of one agent as the buffer stores it (:class:`td3.Rows` plus the
    step's time ``t / T`` in its episode)."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminal: jax.Array
    done: jax.Array
    next_obs: jax.Array
    time: jax.Array


@struct.dataclass
class Agents:
    """The agents of one env group, every leaf with a leading agent axis: actor and
    critic parameters live in ``MetaGenRLState.params``; this holds the rest."""

    target_params: Params
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    buffer: RingBuffer
    #: The completed episodes in ``buffer`` (for ``window_sampler="episode"``).
    episodes: replay.EpisodeIndex
    env_state: State


@struct.dataclass
class MetaGenRLState:
    """Everything MetaGenRL carries between updates (a pytree).

    ``params = {"objective": alpha, "agents": (group_0, group_1, ...)}`` with
    ``group_g = {"actor": ..., "critic": ...}`` batched over that group's agents;
    ``groups`` the rest of each group's agent state (:class:`Agents`);
    ``objective_opt_state`` Adam's state for ``alpha``. ``env_steps`` counts one agent's
    env steps; ``grad_steps`` population steps (the policy delay's clock)."""

    params: Params
    groups: tuple[Agents, ...]
    objective_opt_state: optax.OptState
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

    critic: tuple[Rows, jax.Array]
    policy: tuple[Rows, jax.Array]
    meta: tuple[Rows, jax.Array]


class Group(NamedTuple):
    """What MetaGenRL knows about one env group (static)."""

    env: Env
    spec: EnvSpec
    num_agents: int
    td3: td3.Trainer


class Trainer(NamedTuple):
    """MetaGenRL bound to a config and its envs; all functions pure and jittable.

    Beyond the :class:`~metareward.algos.registry.Learner` protocol (``env``: the first
    of ``envs``; ``act`` and ``evaluate``: agent 0 of the first env, or ``agent`` of
    ``group``):

    * ``objective``: the :class:`~metareward.nets.ObjectiveLSTM` module;
    * ``per_step_objective(alpha, actor_params, batch, mask, values, group) -> [B, W]``;
    * ``objective_gradient(alpha, actor_params, critic_params, batch, mask, group)``:
      one agent's eq.-6 gradient (unclipped) on a window batch;
    * ``agent_step(...)``: one agent's population step (see :func:`make_train`);
    * ``sample_batches(agents, key) -> Batches``: the critic's, the policy step's and the
      meta-gradient's batches (``(rows, mask)`` each) of one agent's population step,
      as ``agent_step`` draws them with that key;
    * ``objective_time(batch) -> [B, W]``: the objective's time input for a window
      batch (``time_input``);
    * ``meta_test(alpha, task, key, num_eval) -> metrics``: Algorithm 2, a fresh agent on
      the first env trained for ``total_steps`` by the frozen objective ``alpha`` (no
      annealing; ``task`` is unused): per-update ``episode_return`` and ``env_steps``
      (``[num_updates]``) and ``final_return`` (mean of ``num_eval`` episodes).
    """

    config: Config
    env: Env
    envs: tuple[Env, ...]
    groups: tuple[Group, ...]
    objective: ObjectiveLSTM
    num_updates: int
    init: Callable[[jax.Array], MetaGenRLState]
    update: Callable[[MetaGenRLState], tuple[MetaGenRLState, Metrics]]
    train: Callable[[jax.Array], tuple[MetaGenRLState, Metrics]]
    act: Callable[..., jax.Array]
    evaluate: Callable[..., jax.Array]
    per_step_objective: Callable[..., jax.Array]
    objective_gradient: Callable[..., Any]
    window_values: Callable[..., tuple[jax.Array, jax.Array]]
    agent_step: Callable[..., Any]
    sample_batches: Callable[..., Batches]
    objective_time: Callable[[Rows], jax.Array]
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


def make_train(config: Config, env: Env | Sequence[Env]) -> Trainer:
    """Binds MetaGenRL to one env or a sequence of envs (continuous actions; any
    observation and action sizes). ``config.num_agents`` agents are dealt round-robin
    over the envs (agent ``i`` to env ``i % len(envs)``). Bad configs or env/config
    mismatches raise here, before anything is compiled."""
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
        spec = check_env(e)
        if spec.discrete:
            raise ValueError(f"MetaGenRL needs continuous actions; env {spec.name!r} is discrete")
        n = len(range(g, config.num_agents, len(env_list)))
        groups.append(Group(e, spec, n, td3.make_train(tcfg, e)))
    groups = tuple(groups)
    T = config.num_steps
    num_updates = config.total_steps // T
    if num_updates < 1:
        raise ValueError(
            f"total_steps={config.total_steps} is less than one update (num_steps = {T})"
        )
    num_rows = config.buffer_size // T * T
    grad_steps = config.gradient_steps or T
    B, W, K = config.batch_size, config.window, config.inner_steps
    objective = ObjectiveLSTM(
        use_time=config.use_time,
        use_value=config.use_value,
        use_next_value=config.use_next_value,
        bound=config.objective_bound,
    )
    learned = config.objective == "learned"
    meta_learn = learned and config.meta_learn
    actor_opt = optax.adam(config.policy_learning_rate)
    critic_opt = optax.adam(config.critic_learning_rate)
    objective_opt = optax.adam(config.objective_learning_rate)
    # An agent waits for its first completed episode (see agent_step).
    wait_for_episode = config.window_sampler == "episode" or config.annealing == "from_start"

    def box(group: Group) -> tuple[jax.Array, jax.Array]:
        s = group.spec
        low = jnp.asarray(s.action_low or (-1.0,) * s.action_size, jnp.float32)
        high = jnp.asarray(s.action_high or (1.0,) * s.action_size, jnp.float32)
        return low, high

    # ---- init ---------------------------------------------------------------------

    def init_agent(group: Group, key: jax.Array) -> tuple[Params, Agents]:
        st = group.td3.init(key)
        obs_dim, A = group.spec.obs_size, group.spec.action_size
        z = jnp.zeros((1,), jnp.float32)
        row = Rows(jnp.zeros((1, obs_dim)), jnp.zeros((1, A)), z, z, z, jnp.zeros((1, obs_dim)), z)
        buffer = replay.ring_init(row, num_rows)
        agents = Agents(
            target_params=st.target_params,
            actor_opt_state=st.actor_opt_state,
            critic_opt_state=st.critic_opt_state,
            buffer=buffer,
            episodes=replay.episode_index_init(buffer),
            env_state=st.env_state,
        )
        return st.params, agents

    def init_objective(key: jax.Array) -> Params:
        z = jnp.zeros((1, W), jnp.float32)
        a = jnp.zeros((1, W, 1), jnp.float32)
        return objective.init(key, z, z, z, z, a, a, jnp.ones((1, W), jnp.float32))

    def init(key: jax.Array) -> MetaGenRLState:
        k_obj, k_agents, key = jax.random.split(key, 3)
        alpha = init_objective(k_obj) if learned else {}
        agent_params, agent_states = [], []
        for g, group in enumerate(groups):
            keys = local_members(  # split over devices: this device's block of agents
                jax.random.split(jax.random.fold_in(k_agents, g), group.num_agents)
            )
            p, a = jax.vmap(lambda k, group=group: init_agent(group, k))(keys)
            agent_params.append(p)
            agent_states.append(a)
        return MetaGenRLState(
            params={"objective": alpha, "agents": tuple(agent_params)},
            groups=tuple(agent_states),
            objective_opt_state=objective_opt.init(alpha),
            key=key,
            update_step=jnp.zeros((), jnp.int32),
            env_steps=jnp.zeros((), jnp.int32),
            grad_steps=jnp.zeros((), jnp.int32),
            nonfinite=jnp.zeros((), jnp.int32),
        )

    # ---- the objective ---------------------------------------------------------------

    def window_values(
        actor_params: Params, critic_params: Params, batch: Rows, group: Group
    ) -> tuple[jax.Array, jax.Array]:
        """``(V_t, V_{t+1} (1 - terminal_t))`` of a window batch, ``[B, W]`` each, with
        ``V(s) = Q_1(s, pi(s))``, as constants (``stop_gradient``)."""
        tr = group.td3
        q1 = jax.tree.map(lambda x: x[0], critic_params)
        v = tr.critic.apply(q1, batch.obs, tr.actor.apply(actor_params, batch.obs))
        vn = tr.critic.apply(q1, batch.next_obs, tr.actor.apply(actor_params, batch.next_obs))
        return jax.lax.stop_gradient(v), jax.lax.stop_gradient(vn * (1.0 - batch.terminal))

    def objective_time(batch: Rows) -> jax.Array:
        """The objective's time input, ``[B, W]``: ``j / W`` at window position ``j``
        (``time_input="window"``; the authors' code divides by the window length 20) or
        the stored ``t / T`` (``"episode"``)."""
        if config.time_input == "episode":
            return batch.time
        w = batch.reward.shape[-1]
        return jnp.broadcast_to(jnp.arange(w, dtype=jnp.float32) / w, batch.reward.shape)

    def per_step_objective(
        alpha: Params,
        actor_params: Params,
        batch: Rows,
        mask: jax.Array,
        values: tuple[jax.Array, jax.Array],
        group: Group,
    ) -> jax.Array:
        """``l_t`` of every window step, ``[B, W]`` (0 at masked steps); gradients reach
        ``actor_params`` only through ``pi_phi(s_t)``."""
        pi = group.td3.actor.apply(actor_params, batch.obs)
        v, vn = values
        if learned:
            return objective.apply(
                alpha, batch.reward, v, vn, objective_time(batch), batch.action, pi, mask
            )
        # REINFORCE with GAE (eq. 3) on the windows: the fixed objective.
        low, high = box(group)
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
        actor_params: Params, critic_params: Params, obs: jax.Array, mask: jax.Array, group: Group
    ) -> jax.Array:
        """``mean Q_1(s, pi_phi(s))`` over the valid steps of a window batch."""
        tr = group.td3
        q1 = jax.tree.map(lambda x: x[0], critic_params)
        return masked_mean(tr.critic.apply(q1, obs, tr.actor.apply(actor_params, obs)), mask)

    def objective_gradient(
        alpha: Params,
        actor_params: Params,
        critic_params: Params,
        batch: Rows,
        mask: jax.Array,
        group: Group,
        values: tuple[jax.Array, jax.Array] | None = None,
    ):
        """One agent's eq.-6 (eq.-8 for ``inner_steps > 1``) gradient of
        ``-mean Q_1(s, pi_{phi'}(s))`` in ``alpha``; ``phi'`` after ``inner_steps`` SGD
        steps of ``inner_learning_rate`` on the summed objective of disjoint parts of
        the windows (each part's sum rescaled to ``config.inner_windows`` windows: the
        step is ``inner_learning_rate * inner_windows / part_size * grad sum``); the
        outer mean over all windows. Unclipped. ``values``: the batch's
        :func:`window_values` if already computed."""
        return objective_gradient_and_value(
            alpha, actor_params, critic_params, batch, mask, group, values
        )[0]

    def objective_gradient_and_value(
        alpha: Params,
        actor_params: Params,
        critic_params: Params,
        batch: Rows,
        mask: jax.Array,
        group: Group,
        values: tuple[jax.Array, jax.Array] | None = None,
    ):
        """:func:`objective_gradient` and the outer value ``mean Q_1(s, pi_{phi'}(s))``
        it differentiates (the look-ahead policy's value, for the ``objective_q_gain``
        metric)."""
        if values is None:
            values = window_values(actor_params, critic_params, batch, group)
        parts = K + 1
        n = batch.reward.shape[0]
        if n % parts:
            raise ValueError(
                f"the window batch has {n} windows, not a multiple of inner_steps + 1 = {parts}"
            )
        # the summed objective of n / parts windows, rescaled to inner_windows windows
        inner_lr = config.inner_learning_rate * config.inner_windows / (n // parts)
        split = lambda x: x.reshape(parts, n // parts, *x.shape[1:])
        b_parts = jax.tree.map(split, batch)
        m_parts = split(mask)
        v_parts = jax.tree.map(split, values)

        def inner(phi, a, k):
            bk = jax.tree.map(lambda x: x[k], b_parts)
            vk = jax.tree.map(lambda x: x[k], v_parts)
            g = jax.grad(lambda p: jnp.sum(per_step_objective(a, p, bk, m_parts[k], vk, group)))(
                phi
            )
            return jax.tree.map(lambda p_, g_: p_ - inner_lr * g_, phi, g)

        def outer(phi, a):
            q = q_objective(phi, critic_params, batch.obs, mask, group)
            return -q, q

        return unrolled_hypergrad(inner, outer, actor_params, alpha, K, has_aux=True)

    # ---- one agent's population step -------------------------------------------------

    def sample_windows(key: jax.Array, agents: Agents, n: int) -> tuple[Rows, jax.Array]:
        if config.window_sampler == "episode":
            win, mask = replay.ring_episode_windows(key, agents.buffer, agents.episodes, n, W)
        else:
            win, mask = replay.ring_windows(key, agents.buffer, n, W, lambda d: d.done)
        return Rows(*win), mask

    def sample_batches(agents: Agents, key: jax.Array) -> Batches:
        """The batches of one agent's population step drawn with ``key`` (see
        :class:`Batches`)."""
        k_c, _, k_w = jax.random.split(key, 3)
        if config.critic_batch == "windows":
            critic = sample_windows(k_c, agents, B)
        else:
            t, e = replay.ring_sample_indices(k_c, agents.buffer, B)
            critic = (Rows(*replay.gather(agents.buffer, t, e)), jnp.ones((B,), jnp.float32))
        policy = sample_windows(k_w, agents, B)
        if config.meta_batch == "per_part":
            meta = sample_windows(jax.random.fold_in(k_w, 1), agents, (K + 1) * B)
        else:
            meta = policy
        return Batches(critic=critic, policy=policy, meta=meta)

    def agent_step(
        group: Group,
        params: Params,
        agents: Agents,
        alpha: Params,
        key: jax.Array,
        policy_turn: jax.Array,
        p: jax.Array,
    ):
        """One agent's critic step and, on a policy turn, its objective gradient (clipped
        to ``objective_clip``), policy step (gradient clipped to ``policy_grad_clip``) and
        soft target update. Returns ``(params, agents, g_alpha, bad, metrics)``;
        ``metrics["agent_ready"]`` is 0 where the agent had to wait for its first
        completed episode (``window_sampler="episode"`` or ``annealing="from_start"``):
        then nothing changed and ``g_alpha`` is zero."""
        tr = group.td3
        _, k_n, _ = jax.random.split(key, 3)
        batches = sample_batches(agents, key)
        batch, c_mask = batches.critic
        y = tr.td_target(agents.target_params, batch, k_n)
        c_flat, c_unravel = ravel_pytree(params["critic"])

        def critic_loss(f):
            if config.critic_batch == "transitions":
                return tr.critic_loss(c_unravel(f), batch, y)
            q = tr.q_values(c_unravel(f), batch.obs, batch.action)  # [C, B, W]
            loss = sum(masked_mean(jnp.square(q[i] - y), c_mask) for i in range(q.shape[0]))
            return loss, {"critic_loss": loss, "q_mean": masked_mean(q[0], c_mask)}

        c_flat, c_opt, ok_c, _, c_aux = td3.clipped_step(
            critic_loss, critic_opt, c_flat, agents.critic_opt_state, None
        )
        critic_params = c_unravel(c_flat)

        def policy(_):
            win, mask = batches.policy
            values = window_values(params["actor"], critic_params, win, group)
            if meta_learn:
                m_win, m_mask = batches.meta
                m_values = values if config.meta_batch == "split" else None
                g, q_ahead = objective_gradient_and_value(
                    alpha, params["actor"], critic_params, m_win, m_mask, group, m_values
                )
                g_flat, g_unravel = ravel_pytree(g)
                g_norm = jnp.sqrt(jnp.sum(g_flat**2))
                g_flat = g_flat * jnp.minimum(1.0, config.objective_clip / (g_norm + 1e-6))
                g = g_unravel(g_flat)
                ok_g = jnp.isfinite(g_norm)
                # Q_1(s, pi_phi(s)) on the meta-gradient's windows ("split": the policy
                # step's loss computes it below)
                q_now = (
                    None
                    if config.meta_batch == "split"
                    else q_objective(params["actor"], critic_params, m_win.obs, m_mask, group)
                )
            else:
                g, g_norm = jax.tree.map(jnp.zeros_like, alpha), jnp.float32(0.0)
                ok_g = jnp.bool_(True)
                q_ahead = q_now = None
            a_flat, a_unravel = ravel_pytree(params["actor"])

            def loss(f):
                ap = a_unravel(f)
                l_mean = masked_mean(per_step_objective(alpha, ap, win, mask, values, group), mask)
                q = q_objective(ap, critic_params, win.obs, mask, group)
                return p * l_mean - (1.0 - p) * q, {"objective_value": l_mean, "q_pi": q}

            a_flat, a_opt, ok_a, _, a_aux = td3.clipped_step(
                loss, actor_opt, a_flat, agents.actor_opt_state, config.policy_grad_clip
            )
            actor = a_unravel(a_flat)
            target = td3.polyak(
                agents.target_params, {"actor": actor, "critic": critic_params}, config.tau
            )
            ok = ok_a & ok_g
            # Diagnostics: how much the look-ahead step phi' raised Q on the meta-gradient's
            # windows (the meta-objective's gain, 0 without meta-learning) and how close
            # pi(s) is to the action bounds (mean |pi| on a [-1, 1] scale; 1 = saturated,
            # where the tanh stops passing gradients to phi).
            low, high = box(group)
            pi = group.td3.actor.apply(params["actor"], win.obs)
            sat = jnp.mean(jnp.abs((2.0 * pi - (high + low)) / (high - low)), axis=-1)
            if q_ahead is None:
                gain = jnp.float32(0.0)
            else:
                gain = q_ahead - (a_aux["q_pi"] if q_now is None else q_now)
            return (
                actor,
                a_opt,
                target,
                g,
                ok,
                {
                    "objective_value": a_aux["objective_value"],
                    "q_pi": a_aux["q_pi"],
                    "objective_grad_norm": g_norm,
                    "objective_q_gain": gain,
                    "action_saturation": masked_mean(sat, mask),
                    "policy_grad_norm": a_aux["grad_norm"],
                },
            )

        def no_policy(_):
            zero = jnp.float32(0.0)
            return (
                params["actor"],
                agents.actor_opt_state,
                agents.target_params,
                jax.tree.map(jnp.zeros_like, alpha),
                jnp.bool_(True),
                {k_: zero for k_ in POLICY_METRICS},
            )

        actor, a_opt, target, g, ok_p, p_aux = jax.lax.cond(policy_turn, policy, no_policy, None)
        new_params = {"actor": actor, "critic": critic_params}
        new_agents = agents.replace(
            target_params=target, actor_opt_state=a_opt, critic_opt_state=c_opt
        )
        bad = (~ok_c).astype(jnp.int32) + (~ok_p).astype(jnp.int32)
        if wait_for_episode:
            ready = jnp.sum(agents.episodes.count) > 0
            keep = lambda new, old: jax.tree.map(lambda x, y: jnp.where(ready, x, y), new, old)
            new_params, new_agents = keep(new_params, params), keep(new_agents, agents)
            g = jax.tree.map(lambda x: jnp.where(ready, x, 0.0), g)
            bad = jnp.where(ready, bad, 0)
        else:
            ready = jnp.bool_(True)
        metrics = {**c_aux, **p_aux, "agent_ready": ready.astype(jnp.float32)}
        return new_params, new_agents, g, bad, metrics

    # ---- acting ----------------------------------------------------------------------

    def act_rollout(
        group: Group, params: Params, agents: Agents, key: jax.Array, random_phase: jax.Array
    ) -> tuple[Agents, Rows, jax.Array]:
        """``num_steps`` env steps of one agent (its env batched as 1); the rows and the
        returns of episodes that ended (``[T]``, NaN where none ended)."""
        tr, spec = group.td3, group.spec
        low, high = box(group)
        env1 = VmapWrapper(group.env, 1)
        flatten_obs, _ = obs_preprocessor(spec, False)

        def step(state: State, k: jax.Array):
            k_a, k_u = jax.random.split(k)
            a = tr.act(Policy(params), state.obs, k_a)
            u = jax.random.uniform(k_u, a.shape, minval=low, maxval=high)
            a = jnp.where(random_phase, u, a)
            nxt = env1.step(state, a)
            done = nxt.done.astype(jnp.float32)
            row = Rows(
                obs=flatten_obs(state.obs).astype(jnp.float32),
                action=a,
                reward=(nxt.reward * config.reward_scale).astype(jnp.float32),
                terminal=done * (1.0 - nxt.info["truncation"].astype(jnp.float32)),
                done=done,
                next_obs=flatten_obs(nxt.info["final_obs"]).astype(jnp.float32),
                time=(state.info["episode_length"].astype(jnp.float32) / spec.episode_length),
            )
            ret = jnp.where(done > 0, nxt.info["completed_return"], jnp.nan)
            return nxt, (row, ret)

        env_state, (rows, rets) = jax.lax.scan(step, agents.env_state, jax.random.split(key, T))
        buffer = replay.ring_insert(agents.buffer, rows)
        episodes = replay.episode_insert(agents.episodes, agents.buffer.head, rows.done)
        return (
            agents.replace(env_state=env_state, buffer=buffer, episodes=episodes),
            rows,
            rets[:, 0],
        )

    # ---- the population update ------------------------------------------------------

    def update(state: MetaGenRLState) -> tuple[MetaGenRLState, Metrics]:
        key, k_roll, k_grad = jax.random.split(state.key, 3)
        random_phase = state.env_steps < config.learning_starts
        groups_state, returns = [], []
        for g, group in enumerate(groups):
            # Split over devices (the driver's shard_map), the state holds this device's
            # block of each group's agents, and the keys are cut to match
            # (metareward.axes); the sums over agents below are all-reduces.
            keys = local_members(jax.random.split(jax.random.fold_in(k_roll, g), group.num_agents))
            a, _, rets = jax.vmap(
                lambda p, ag, k, group=group: act_rollout(group, p, ag, k, random_phase)
            )(state.params["agents"][g], state.groups[g], keys)
            groups_state.append(a)
            returns.append(rets)
        env_steps = state.env_steps + T
        learn = updates_allowed(config, env_steps)
        p = anneal_p(config, env_steps)

        def pop_step(carry, k):
            agent_params, agents_all, alpha, opt_alpha, n, nonfinite = carry
            policy_turn = n % config.policy_delay == 0
            new_params, new_agents, grads, metrics = [], [], [], []
            ready = jnp.float32(0.0)
            for g, group in enumerate(groups):
                keys = local_members(jax.random.split(jax.random.fold_in(k, g), group.num_agents))
                out = jax.vmap(
                    lambda pp, ag, kk, group=group: agent_step(
                        group, pp, ag, alpha, kk, policy_turn, p
                    )
                )(agent_params[g], agents_all[g], keys)
                new_params.append(out[0])
                new_agents.append(out[1])
                grads.append(out[2])
                nonfinite = nonfinite + sum_members(jnp.sum(out[3]))
                metrics.append(out[4])
                ready = ready + sum_members(jnp.sum(out[4]["agent_ready"]))
            if meta_learn:
                # The mean over all agents of all envs of the clipped per-agent gradients
                # (agents still waiting for their first episode contribute nothing).
                total = sum_members(
                    jax.tree.map(lambda *xs: sum(jnp.sum(x, axis=0) for x in xs), *grads)
                )
                if wait_for_episode:
                    mean_g = jax.tree.map(lambda x: x / jnp.maximum(ready, 1.0), total)
                    turn = policy_turn & (ready > 0)
                else:
                    mean_g = jax.tree.map(lambda x: x / config.num_agents, total)
                    turn = policy_turn
                ok = jnp.all(jnp.isfinite(ravel_pytree(mean_g)[0]))
                upd, new_opt = objective_opt.update(
                    jax.tree.map(lambda x: jnp.where(ok, x, 0.0), mean_g), opt_alpha, alpha
                )
                step_alpha = turn & ok
                alpha = jax.tree.map(lambda a, u: jnp.where(step_alpha, a + u, a), alpha, upd)
                opt_alpha = jax.tree.map(lambda a, b: jnp.where(turn, a, b), new_opt, opt_alpha)
                nonfinite = nonfinite + (turn & ~ok).astype(jnp.int32)
            # (every device holds the same number of agents: the mean of the means)
            m = mean_members(
                {
                    k_: jnp.mean(jnp.concatenate([jnp.atleast_1d(x[k_]) for x in metrics]))
                    for k_ in metrics[0]
                }
            )
            m["policy_turn"] = policy_turn.astype(jnp.float32)
            carry = (tuple(new_params), tuple(new_agents), alpha, opt_alpha, n + 1, nonfinite)
            return carry, m

        def train_steps(_):
            carry = (
                state.params["agents"],
                tuple(groups_state),
                state.params["objective"],
                state.objective_opt_state,
                state.grad_steps,
                state.nonfinite,
            )
            carry, m = jax.lax.scan(pop_step, carry, jax.random.split(k_grad, grad_steps))
            turns = jnp.sum(m.pop("policy_turn"))
            out = {
                k_: (jnp.sum(v) / jnp.maximum(turns, 1.0) if k_ in POLICY_METRICS else jnp.mean(v))
                for k_, v in m.items()
            }
            return carry, out

        def no_steps(_):
            zero = jnp.float32(0.0)
            carry = (
                state.params["agents"],
                tuple(groups_state),
                state.params["objective"],
                state.objective_opt_state,
                state.grad_steps,
                state.nonfinite,
            )
            return carry, {
                k_: zero
                for k_ in ("critic_loss", "q_mean", "grad_norm", *POLICY_METRICS, "agent_ready")
            }

        carry, m = jax.lax.cond(learn, train_steps, no_steps, None)
        agent_params, agents_all, alpha, opt_alpha, n, nonfinite = carry
        metrics = {**m, "anneal_p": p, "env_steps": env_steps, "nonfinite": nonfinite}
        # Episode statistics: the first env's agents as the run's ``episode_*`` (what the
        # runner and progress bar show), and every env's mean return by name.
        for g, group in enumerate(groups):
            r = returns[g]  # this device's agents: sums and counts are all-reduced
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
        new_state = MetaGenRLState(
            params={"objective": alpha, "agents": agent_params},
            groups=agents_all,
            objective_opt_state=opt_alpha,
            key=key,
            update_step=state.update_step + 1,
            env_steps=env_steps,
            grad_steps=n,
            nonfinite=nonfinite,
        )
        return new_state, metrics

    def train(key: jax.Array) -> tuple[MetaGenRLState, Metrics]:
        state = init(key)
        return jax.lax.scan(lambda s, _: update(s), state, None, length=num_updates)

    def act(state: Any, obs: jax.Array, key: jax.Array, deterministic: bool = False,
            group: int = 0, agent: int = 0) -> jax.Array:
        """Env actions of agent ``agent`` of env ``group`` for raw observations of that
        env: ``pi_phi(s)``, plus TD3's exploration noise unless ``deterministic``
        (``state``: a train state or its :class:`~metareward.algos.policy.Policy`)."""
        params = jax.tree.map(lambda x: x[agent], state.params["agents"][group])
        return groups[group].td3.act(Policy(params), obs, key, deterministic)

    def evaluate(
        state: MetaGenRLState,
        key: jax.Array,
        num_episodes: int = 16,
        deterministic: bool = True,
        group: int = 0,
        agent: int = 0,
    ) -> jax.Array:
        """Returns of ``num_episodes`` episodes of agent ``agent`` of env ``group``'s
        deterministic policy ``pi_phi(s)``."""
        check_one_seed(state)
        del deterministic
        grp = groups[group]
        pol = Policy(jax.tree.map(lambda x: x[agent], state.params["agents"][group]))
        fn = lambda obs, k: grp.td3.act(pol, obs, k, True)
        return evaluate_episodes(grp.env, fn, key, num_episodes, grp.spec.episode_length)

    def meta_test(alpha: Params, task: Any, key: jax.Array, num_eval: int | None = None) -> Metrics:
        """Algorithm 2: one fresh agent on the first env, trained by the frozen ``alpha``
        with ``p = 1`` from the start of learning (no DDPG annealing; with
        ``annealing="from_start"`` updates start at the first completed episode, during
        the random exploration, as in the authors' test config)."""
        del task
        test = make_train(
            dataclasses.replace(config, num_agents=1, meta_learn=False, anneal_steps=0),
            groups[0].env,
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

    return Trainer(
        config=config,
        env=groups[0].env,
        envs=tuple(g.env for g in groups),
        groups=groups,
        objective=objective,
        num_updates=num_updates,
        init=init,
        update=update,
        train=train,
        act=act,
        evaluate=evaluate,
        per_step_objective=per_step_objective,
        objective_gradient=objective_gradient,
        window_values=window_values,
        agent_step=agent_step,
        sample_batches=sample_batches,
        objective_time=objective_time,
        meta_test=meta_test,
        episode_metric_names={f"return_{g.spec.name}": f"episodes_{g.spec.name}" for g in groups},
        population_sizes=tuple(g.num_agents for g in groups),
        population_leaves=population_leaves,
    )


def population_leaves(state: MetaGenRLState) -> MetaGenRLState:
    """``state`` with every leaf replaced by whether it has a leading agent axis: the
    agents' parameters and ``groups`` do, the objective, its optimiser and the counters
    do not."""
    flag = lambda tree, value: jax.tree.map(lambda _: value, tree)
    out = flag(state, False)
    return out.replace(
        params={
            "objective": flag(state.params["objective"], False),
            "agents": flag(state.params["agents"], True),
        },
        groups=flag(state.groups, True),
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
    "MetaGenRLState",
    "Rows",
    "Trainer",
    "anneal_p",
    "make_train",
    "preset",
    "updates_allowed",
]
