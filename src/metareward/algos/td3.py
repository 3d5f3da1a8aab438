"""TD3 and DDPG: deterministic actor-critic from a replay buffer.

Fujimoto, van Hoof & Meger 2018, "Addressing Function Approximation Error in
Actor-Critic Methods" (TD3, Algorithm 1), and Lillicrap et al. 2016 (DDPG), as MetaGenRL
uses them ("Improving Generalization in Meta Reinforcement Learning using Learned
Objectives", section 3.1 eq. 5, Appendix B, Tables 3-4;
the critic half of MetaGenRL is exactly this critic update). One ``update``:

1. ``num_envs x num_steps`` env steps with ``mu(s) + N(0, exploration_noise^2)``,
   clipped to the action box (uniform random actions during the first
   ``learning_starts`` env steps); the transitions go into a ring replay buffer held in
   the train state (:class:`metareward.rl.replay.RingBuffer`: an insert writes its rows
   in place, it does not copy the buffer);
2. ``gradient_steps`` minibatch steps (default: one per env step collected, as in the
   TD3 and MetaGenRL code). Each step updates the critics on the TD target of eq. 5 with
   TD3's three changes:

   * clipped double Q: ``y = r + gamma (1 - terminal) min_i Q'_i(s', a')`` over twin
     critics (``twin_critics``; DDPG: one critic);
   * target policy smoothing: ``a' = clip(mu'(s') + clip(N(0, target_noise^2),
     -target_noise_clip, target_noise_clip), low, high)`` (DDPG: no noise);
   * delayed policy updates: every ``policy_delay``-th step the actor follows
     ``grad_phi mean Q_1(s, mu_phi(s))`` and the targets move by Polyak averaging,
     ``target <- tau * online + (1 - tau) * target`` (DDPG: every step).

A time-limit truncation is not terminal: its target bootstraps from the observation the
transition reached (``info["final_obs"]``), so ``terminal = done and not truncation``.
(The MetaGenRL code adds +1 to the target on terminal steps; not copied.)

Defaults are the MetaGenRL paper's (Tables 3-4, the authors' code): 2 hidden layers of
350 ReLU units with LayerNorm for the actor and the critics, Adam 1e-3 for both,
``tau = 0.005``, target noise 0.2 clipped at 0.5, exploration noise 0.1, 10k random
steps, batch 100, ``gamma = 0.99``, a buffer of 1e6 transitions. ``DDPGConfig``: the same
with one critic, no target smoothing and no delay (``metareward train ddpg``).

Usage::

    env = metareward.envs.make("pendulum")
    trainer = td3.make_train(td3.preset("pendulum"), env)
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
from brax.envs.base import Env, State
from flax import struct
from jax.flatten_util import ravel_pytree

from metareward.algos import common, onpolicy
from metareward.algos import config as cfg
from metareward.aliases import Metrics, Params
from metareward.envs.spec import EnvSpec
from metareward.envs.wrappers import VmapWrapper
from metareward.nets.policies import DeterministicPolicy, QNetwork
from metareward.rl import replay
from metareward.rl.grads import clipped_step
from metareward.rl.replay import RingBuffer
from metareward.rl.rollout import episode_metrics, rollout


@dataclasses.dataclass(frozen=True)
class Config:
    """TD3 hyperparameters (defaults: MetaGenRL's Tables 3-4 and the authors' code)."""

    num_envs: int = 1
    #: Env steps per env in one ``update`` (then ``gradient_steps`` gradient steps).
    num_steps: int = 1
    total_steps: int = 1_000_000
    #: Env steps (all envs together) of uniform random actions before the policy acts
    #: and before any gradient step.
    learning_starts: int = 10_000
    #: Replay capacity in transitions (``buffer_size // num_envs`` rows of all envs).
    buffer_size: int = 1_000_000
    batch_size: int = 100
    #: Gradient steps per ``update``; ``None``: one per env step collected
    #: (``num_envs * num_steps``).
    gradient_steps: int | None = None
    actor_learning_rate: float = 1e-3
    critic_learning_rate: float = 1e-3
    gamma: float = 0.99
    #: Polyak step of the target networks (``1 - 0.995`` in the MetaGenRL code).
    tau: float = 0.005
    #: Actor and target updates every ``policy_delay`` critic updates.
    policy_delay: int = 2
    target_noise: float = 0.2
    target_noise_clip: float = 0.5
    exploration_noise: float = 0.1
    #: Clipped double Q with two critics (TD3); ``False``: one critic (DDPG).
    twin_critics: bool = True
    hidden: tuple[int, ...] = (350, 350)
    activation: str = "relu"
    layer_norm: bool = True
    #: Global-norm clip of the actor's and the critics' gradients (``None``: none).
    max_grad_norm: float | None = None
    reward_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("num_envs", "num_steps", "total_steps", "buffer_size", "batch_size",
                     "policy_delay"):
            cfg.positive_int(name, getattr(self, name))
        cfg.check("learning_starts", self.learning_starts,
                  isinstance(self.learning_starts, int) and self.learning_starts >= 0,
                  "an int >= 0")
        if self.gradient_steps is not None:
            cfg.positive_int("gradient_steps", self.gradient_steps)
        for name in ("actor_learning_rate", "critic_learning_rate", "reward_scale"):
            cfg.positive(name, getattr(self, name))
        for name in ("target_noise", "target_noise_clip", "exploration_noise"):
            cfg.non_negative(name, getattr(self, name))
        cfg.in_range("gamma", self.gamma, 0.0, 1.0)
        cfg.in_range("tau", self.tau, 0.0, 1.0, lo_open=True)
        if self.max_grad_norm is not None:
            cfg.positive("max_grad_norm", self.max_grad_norm)
        cfg.hidden_sizes("hidden", self.hidden)
        cfg.activation_name("activation", self.activation)
        cfg.check("buffer_size", self.buffer_size, self.buffer_size >= self.num_envs,
                  f">= num_envs = {self.num_envs}")
        object.__setattr__(self, "hidden", tuple(self.hidden))


@dataclasses.dataclass(frozen=True)
class DDPGConfig(Config):
    """DDPG (Lillicrap et al. 2016) as a TD3 config: one critic, no target-policy
    smoothing, actor and targets updated at every critic step; the rest as
    :class:`Config` (the MetaGenRL paper's "DDPG / TD3" baseline shares its settings).

    This is the library's one way to express a variant: a :class:`Config` subclass with
    the variant's defaults, registered under its own name (``ddpg`` in
    :mod:`metareward.algos`, with :data:`DDPG_PRESETS`) and run by the same
    :func:`make_train`; no flag or separate module."""

    policy_delay: int = 1
    target_noise: float = 0.0
    twin_critics: bool = False


#: Tuned settings for the small gymnax envs (tests, experiments).
PRESETS: dict[str, Config] = {
    # Pendulum is solved in ~20k steps by TD3 (e.g. the rl-zoo settings); a smaller net
    # and 5k random steps keep a 4-seed CPU run short.
    "pendulum": Config(
        total_steps=50_000,
        learning_starts=5_000,
        buffer_size=50_000,
        batch_size=100,
        hidden=(64, 64),
    ),
    "mountaincar-continuous": Config(
        total_steps=100_000,
        learning_starts=10_000,
        buffer_size=100_000,
        hidden=(64, 64),
        # The sparse goal needs wide exploration before the first success.
        exploration_noise=0.5,
    ),
}

DDPG_PRESETS: dict[str, Config] = {
    name: DDPGConfig(**{f.name: getattr(c, f.name) for f in dataclasses.fields(Config)
                        if f.name not in ("policy_delay", "target_noise", "twin_critics")})
    for name, c in PRESETS.items()
}


preset = cfg.preset_function(PRESETS, Config, "td3")


class Parts(NamedTuple):
    """The static parts of TD3 bound to a config and an env, built once by
    :func:`make_parts` and passed to every stage (nothing here is traced state).

    ``venv`` is the env batched with ``config.num_envs``; ``actor_opt``/``critic_opt``
    Adam on the flattened parameter vectors; ``low``/``high``/``half_range`` the action
    box; ``num_critics`` 2 (twin critics) or 1 (DDPG); ``num_rows`` the ring buffer's
    rows; ``grad_steps`` the gradient steps per update; ``unravel_actor`` and
    ``unravel_critic`` flat vector -> each net's parameters.
    """

    config: Config
    spec: EnvSpec
    venv: Env
    actor: nn.Module
    critic: nn.Module
    actor_opt: optax.GradientTransformation
    critic_opt: optax.GradientTransformation
    flatten_obs: Callable[[jax.Array], jax.Array]
    low: jax.Array
    high: jax.Array
    half_range: jax.Array
    num_critics: int
    num_rows: int
    num_updates: int
    grad_steps: int
    unravel_actor: Callable[[jax.Array], Params] | None = None
    unravel_critic: Callable[[jax.Array], Params] | None = None


@struct.dataclass
class TD3State(common.LearnerState):
    """Everything TD3 carries between updates (a pytree).

    ``params = {"actor": ..., "critic": ...}``; the critic's leaves have a leading axis
    of 2 (twin critics, ``vmap``-ed) or 1 (DDPG). ``target_params`` the same for the
    target networks. ``opt_state = {"actor": ..., "critic": ...}``: Adam on each net's
    flattened parameter vector (keyed as ``params``). ``buffer`` the ring buffer of
    :class:`metareward.rl.replay.Row` (``time`` unset). ``grad_steps`` counts critic
    steps (the policy delay's clock); ``nonfinite`` counts gradient steps skipped
    because a loss or gradient was not finite.
    """

    target_params: Params
    buffer: RingBuffer
    grad_steps: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer(common.LearnerBase):
    """TD3 bound to a config and an env; all functions pure and jittable.

    Beyond ``init / update / train / act / evaluate`` (the
    :class:`~metareward.algos.registry.Learner` protocol) and the nets, the critic
    pieces bound to this config (:mod:`metareward.algos.metagenrl` builds its agents
    from them): ``q_values(critic_params, obs, action)`` (:func:`q_values`),
    ``td_target(target_params, batch, key)`` (:func:`td_target`),
    ``critic_loss(critic_params, batch, target)`` (:func:`critic_loss`) and
    ``actor_loss(actor_params, critic_params, obs)`` (:func:`actor_loss`).
    """

    actor: nn.Module
    critic: nn.Module
    q_values: Callable[..., jax.Array]
    td_target: Callable[..., jax.Array]
    critic_loss: Callable[..., tuple[jax.Array, Metrics]]
    actor_loss: Callable[..., jax.Array]


def polyak(target: Params, online: Params, tau: float) -> Params:
    """``tau * online + (1 - tau) * target``, leaf by leaf (TD3, Algorithm 1, the
    target-network update ``theta' <- tau theta + (1 - tau) theta'``).

    Args:
        target: The target networks' parameters ``theta'``.
        online: The online networks' parameters ``theta``, of the same structure.
        tau: The update's weight of ``online``.

    Returns:
        The new target parameters.
    """
    return jax.tree.map(lambda t, o: tau * o + (1.0 - tau) * t, target, online)


def init_params(parts: Parts, k_pi: jax.Array, k_q: jax.Array) -> Params:
    """TD3, Algorithm 1, first line: random actor ``phi`` and critics ``theta_i``.

    Args:
        parts: The static parts.
        k_pi: PRNG key of the actor.
        k_q: PRNG key of the critics (split ``num_critics`` ways).

    Returns:
        ``{"actor": ..., "critic": ...}``, the critics stacked on a leading axis.
    """
    dummy_o = jnp.zeros((1, parts.spec.obs_size), jnp.float32)
    dummy_a = jnp.zeros((1, parts.spec.action_size), jnp.float32)
    return {
        "actor": parts.actor.init(k_pi, dummy_o),
        "critic": jax.vmap(lambda k: parts.critic.init(k, dummy_o, dummy_a))(
            jax.random.split(k_q, parts.num_critics)),
    }


def make_parts(config: Config, env: Env) -> Parts:
    """Validates ``config`` against ``env`` and builds TD3's static parts.

    Args:
        config: TD3 (or DDPG, :class:`DDPGConfig`) hyperparameters.
        env: A single env with continuous actions; batched here with
            ``config.num_envs``.

    Returns:
        The :class:`Parts` every stage takes.

    Raises:
        TypeError: ``config`` is not a TD3 :class:`Config`, or ``env`` not a single env.
        ValueError: Discrete actions, or a budget or buffer below one update.
    """
    if not isinstance(config, Config):
        raise TypeError(f"expected metareward.algos.td3.Config, got {type(config).__name__}")
    spec = onpolicy.check_env(env)
    if spec.discrete:
        raise ValueError(f"TD3/DDPG need continuous actions; env {spec.name!r} is discrete "
                         f"({spec.action_size} actions)")
    N, T = config.num_envs, config.num_steps
    rollout_size, num_updates = common.run_length(config)
    num_rows = config.buffer_size // rollout_size * T  # a multiple of the rows per insert
    if num_rows < T:
        raise ValueError(f"buffer_size={config.buffer_size} holds less than one update's "
                         f"transitions (num_envs * num_steps = {rollout_size})")
    A = spec.action_size
    low_t = tuple(float(x) for x in (spec.action_low or (-1.0,) * A))
    high_t = tuple(float(x) for x in (spec.action_high or (1.0,) * A))
    low, high = jnp.asarray(low_t, jnp.float32), jnp.asarray(high_t, jnp.float32)
    parts = Parts(
        config=config, spec=spec, venv=VmapWrapper(env, N),
        actor=DeterministicPolicy(A, config.hidden, config.activation, config.layer_norm,
                                  low_t, high_t),
        critic=QNetwork(config.hidden, config.activation, config.layer_norm),
        actor_opt=optax.adam(config.actor_learning_rate),
        critic_opt=optax.adam(config.critic_learning_rate),
        flatten_obs=onpolicy.obs_preprocessor(spec, False)[0], low=low, high=high,
        half_range=0.5 * (high - low), num_critics=2 if config.twin_critics else 1,
        num_rows=num_rows, num_updates=num_updates,
        grad_steps=config.gradient_steps or rollout_size,
    )
    k = jax.random.PRNGKey(0)
    shapes = jax.eval_shape(lambda k: init_params(parts, k, k), k)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    return parts._replace(unravel_actor=ravel_pytree(zeros["actor"])[1],
                          unravel_critic=ravel_pytree(zeros["critic"])[1])


def init(parts: Parts, key: jax.Array) -> TD3State:
    """TD3, Algorithm 1, initialisation: actor and critics (:func:`init_params`), the
    targets as copies, an empty replay buffer ``B`` (a ring of
    :class:`metareward.rl.replay.Row`), the envs reset.

    Args:
        parts: The static parts.
        key: PRNG key.

    Returns:
        The initial :class:`TD3State`.
    """
    k_pi, k_q, k_env, key = jax.random.split(key, 4)
    params = init_params(parts, k_pi, k_q)
    row = replay.Row.example(parts.spec, parts.config.num_envs)
    return TD3State(
        params=params,
        target_params=params,
        opt_state={"actor": parts.actor_opt.init(ravel_pytree(params["actor"])[0]),
                   "critic": parts.critic_opt.init(ravel_pytree(params["critic"])[0])},
        buffer=replay.ring_init(row, parts.num_rows),
        env_state=parts.venv.reset(k_env),
        key=key,
        grad_steps=jnp.zeros((), jnp.int32),
        **common.zero_counters(),
    )


def act(parts: Parts, state: Any, obs: jax.Array, key: jax.Array,
        deterministic: bool = False) -> jax.Array:
    """TD3, Algorithm 1, "select action with exploration noise": ``mu(s) + eps``,
    ``eps ~ N(0, (exploration_noise * half_range)^2)``, clipped to the action box.

    Args:
        parts: The static parts.
        state: A train state or a :class:`~metareward.algos.policy.Policy` (what is
            read: ``params["actor"]``).
        obs: Raw observations, ``[B, ...]``.
        key: PRNG key of the noise.
        deterministic: ``mu(s)`` without noise.

    Returns:
        Env actions, ``[B, action_size]``.
    """
    mu = parts.actor.apply(state.params["actor"], parts.flatten_obs(obs))
    if deterministic:
        return mu
    noise = parts.config.exploration_noise * parts.half_range * jax.random.normal(key, mu.shape)
    return jnp.clip(mu + noise, parts.low, parts.high)


def act_mean(parts: Parts, state: Any, obs: jax.Array, key: jax.Array,
             deterministic: bool = True) -> jax.Array:
    """:func:`act` without noise whatever ``deterministic`` says: evaluation acts with
    ``mu(s)`` (exploration noise is a training device), as in the TD3 and MetaGenRL
    code.

    Args:
        parts: The static parts.
        state: A train state or a :class:`~metareward.algos.policy.Policy` (what is
            read: ``params["actor"]``).
        obs: Raw observations, ``[B, ...]``.
        key: Unused (no noise).
        deterministic: Accepted for the Learner protocol and ignored.

    Returns:
        Env actions ``mu(s)``, ``[B, action_size]``.
    """
    del deterministic
    return act(parts, state, obs, key, True)


def collect(parts: Parts, state: TD3State, key: jax.Array) -> tuple[State, Any, RingBuffer]:
    """TD3, Algorithm 1, "select action with exploration noise ... store transition
    tuple in B": ``num_envs x num_steps`` env steps with :func:`act` (uniform random
    actions while ``env_steps < learning_starts``), written into the ring buffer.

    Args:
        parts: The static parts.
        state: The train state.
        key: PRNG key of the rollout.

    Returns:
        ``(env_state, traj, buffer)``; the rows stored are
        :class:`metareward.rl.replay.Row` (``terminal`` derived from ``done`` and
        ``truncation``: a time limit bootstraps).
    """
    config, low, high = parts.config, parts.low, parts.high
    random_phase = state.env_steps < config.learning_starts

    def policy_act(obs: jax.Array, k: jax.Array):
        k_a, k_u = jax.random.split(k)
        a = act(parts, state, obs, k_a)
        u = jax.random.uniform(k_u, a.shape, minval=low, maxval=high)
        a = jnp.where(random_phase, u, a)
        return a, a, jnp.zeros(a.shape[:-1], jnp.float32)

    env_state, traj = rollout(parts.venv, state.env_state, policy_act, key, config.num_steps)
    rows = replay.Row.from_rollout(traj, parts.flatten_obs, config.reward_scale)
    return env_state, traj, replay.ring_insert(state.buffer, rows)


def q_values(parts: Parts, critic_params: Params, obs: jax.Array, action: jax.Array) -> jax.Array:
    """Every critic's ``Q_theta_i(s, a)``: ``[num_critics, ...]``.

    Args:
        parts: The static parts.
        critic_params: The critics' parameters, stacked on a leading ``[num_critics]``
            axis.
        obs: Flattened observations ``[..., obs_size]`` (as the replay buffer stores
            them).
        action: Actions ``[..., action_size]``.

    Returns:
        The Q-values ``[num_critics, ...]``.
    """
    return jax.vmap(lambda p: parts.critic.apply(p, obs, action))(critic_params)


def td_target(parts: Parts, target_params: Params, batch: Any, key: jax.Array) -> jax.Array:
    """The critics' target (TD3, Algorithm 1; MetaGenRL eq. 5) with clipped double Q
    (TD3 Section 4.2) and target policy smoothing (Section 5.3):
    ``a~ = clip(mu'(s') + clip(N(0, target_noise^2), -c, c) * half_range, low, high)``,
    ``y = r + gamma (1 - terminal) min_i Q'_i(s', a~)`` (DDPG: no noise, one critic).

    Args:
        parts: The static parts.
        target_params: The target networks' ``{"actor": ..., "critic": ...}``.
        batch: Transitions with ``reward``, ``next_obs`` and ``terminal``, ``[B, ...]``
            (a :class:`metareward.rl.replay.Row`).
        key: PRNG key of the smoothing noise.

    Returns:
        ``y``, ``[B]``.
    """
    config = parts.config
    a_next = parts.actor.apply(target_params["actor"], batch.next_obs)
    if cfg.maybe(config.target_noise > 0):
        eps = config.target_noise * jax.random.normal(key, a_next.shape)
        eps = jnp.clip(eps, -config.target_noise_clip, config.target_noise_clip)
        a_next = jnp.clip(a_next + eps * parts.half_range, parts.low, parts.high)
    q_next = jnp.min(q_values(parts, target_params["critic"], batch.next_obs, a_next), axis=0)
    return batch.reward + config.gamma * (1.0 - batch.terminal) * q_next


def critic_loss(
    parts: Parts, critic_params: Params, batch: Any, target: jax.Array
) -> tuple[jax.Array, Metrics]:
    """TD3, Algorithm 1, "update critics": ``sum_i mean_B (y - Q_theta_i(s, a))^2``.

    Args:
        parts: The static parts.
        critic_params: The critics' parameters (stacked).
        batch: Transitions with ``obs`` and ``action``, ``[B, ...]``.
        target: :func:`td_target`'s ``y``, ``[B]``.

    Returns:
        ``(loss, {"critic_loss": loss, "q_mean": mean Q_1(s, a)})``.
    """
    q = q_values(parts, critic_params, batch.obs, batch.action)  # [C, B]
    loss = jnp.sum(jnp.mean(jnp.square(q - target), axis=-1))
    return loss, {"critic_loss": loss, "q_mean": jnp.mean(q[0])}


def actor_loss(
    parts: Parts, actor_params: Params, critic_params: Params, obs: jax.Array
) -> jax.Array:
    """TD3, Algorithm 1, the deterministic policy gradient's loss: ``-mean_B Q_theta_1(s,
    mu_phi(s))``.

    Args:
        parts: The static parts.
        actor_params: The actor's parameters.
        critic_params: The critics' parameters (the first is used).
        obs: Flattened observations, ``[B, obs]``.

    Returns:
        The scalar loss.
    """
    first = jax.tree.map(lambda x: x[0], critic_params)
    return -jnp.mean(parts.critic.apply(first, obs, parts.actor.apply(actor_params, obs)))


def actor_and_targets(
    parts: Parts, critic_params: Params, obs: jax.Array,
    args: tuple[jax.Array, optax.OptState, Params],
) -> tuple[jax.Array, optax.OptState, Params, jax.Array, jax.Array]:
    """TD3, Algorithm 1, "if t mod d then": the actor's deterministic policy gradient
    step (:func:`actor_loss`) and the soft target update (:func:`polyak`).

    Args:
        parts: The static parts.
        critic_params: The critics just updated.
        obs: The minibatch's observations, ``[B, obs]``.
        args: ``(actor_flat, actor_opt_state, target_params)``.

    Returns:
        ``(actor_flat, actor_opt_state, target_params, ok, actor_loss)``.
    """
    a_flat, a_opt, target = args
    a_new, a_opt, ok, loss, _ = clipped_step(
        lambda f: (actor_loss(parts, parts.unravel_actor(f), critic_params, obs), {}),
        parts.actor_opt, a_flat, a_opt, parts.config.max_grad_norm)
    online = {"actor": parts.unravel_actor(a_new), "critic": critic_params}
    return a_new, a_opt, polyak(target, online, parts.config.tau), ok, loss


def grad_step(parts: Parts, buf: RingBuffer, carry: tuple, key: jax.Array) -> tuple[tuple, Metrics]:
    """One pass of TD3, Algorithm 1's learning lines: sample a minibatch from ``B``,
    update the critics on :func:`td_target`, and every ``policy_delay``-th step
    :func:`actor_and_targets` (DDPG: every step).

    Args:
        parts: The static parts.
        buf: The replay buffer.
        carry: ``(actor_flat, critic_flat, actor_opt, critic_opt, target_params,
            grad_steps, nonfinite)``.
        key: PRNG key of the minibatch and the smoothing noise.

    Returns:
        ``(carry, metrics)`` of this step.
    """
    config = parts.config
    (a_flat, c_flat, a_opt, c_opt, target, n, nonfinite) = carry
    k_idx, k_noise = jax.random.split(key)
    t, e = replay.ring_sample_indices(k_idx, buf, config.batch_size)
    batch = replay.gather(buf, t, e)
    y = td_target(parts, target, batch, k_noise)
    c_flat, c_opt, ok_c, _, c_aux = clipped_step(
        lambda f: critic_loss(parts, parts.unravel_critic(f), batch, y), parts.critic_opt,
        c_flat, c_opt, config.max_grad_norm)
    new_critic = parts.unravel_critic(c_flat)

    def skip(args):
        a_flat, a_opt, target = args
        return a_flat, a_opt, target, jnp.bool_(True), jnp.float32(0.0)

    actor_turn = n % config.policy_delay == 0
    a_flat, a_opt, target, ok_a, a_loss = jax.lax.cond(
        actor_turn, functools.partial(actor_and_targets, parts, new_critic, batch.obs), skip,
        (a_flat, a_opt, target))
    bad = (~ok_c).astype(jnp.int32) + (~ok_a).astype(jnp.int32)
    metrics = {**c_aux, "actor_loss": a_loss, "actor_steps": actor_turn.astype(jnp.float32)}
    return (a_flat, c_flat, a_opt, c_opt, target, n + 1, nonfinite + bad), metrics


def learn(
    parts: Parts, state: TD3State, buffer: RingBuffer, key: jax.Array, start: jax.Array
) -> tuple[Params, Params, dict[str, optax.OptState], jax.Array, jax.Array, Metrics]:
    """``gradient_steps`` :func:`grad_step` s once ``start`` (enough transitions
    stored), else nothing (zero losses: the runner reads NaN as an error).

    Args:
        parts: The static parts.
        state: The train state before the steps (params, targets, opt states, clocks).
        buffer: The replay buffer after this update's insert.
        key: PRNG key of the steps.
        start: Bool scalar, whether to learn.

    Returns:
        ``(params, target_params, opt_state, grad_steps, nonfinite, metrics)``; the
        metrics average over the steps (``actor_loss`` over the actor's steps).
    """
    params = state.params

    def train_steps(_):
        carry = (ravel_pytree(params["actor"])[0], ravel_pytree(params["critic"])[0],
                 state.opt_state["actor"], state.opt_state["critic"], state.target_params,
                 state.grad_steps, state.nonfinite)
        carry, m = jax.lax.scan(functools.partial(grad_step, parts, buffer), carry,
                                jax.random.split(key, parts.grad_steps))
        a_flat, c_flat, a_opt, c_opt, target, n, nonfinite = carry
        new = {"actor": parts.unravel_actor(a_flat), "critic": parts.unravel_critic(c_flat)}
        actor_steps = jnp.sum(m.pop("actor_steps"))
        a_loss = jnp.sum(m.pop("actor_loss")) / jnp.maximum(actor_steps, 1.0)
        m = {**{k: jnp.mean(v) for k, v in m.items()}, "actor_loss": a_loss}
        return new, target, {"actor": a_opt, "critic": c_opt}, n, nonfinite, m

    def no_steps(_):
        m = {"critic_loss": jnp.float32(0.0), "q_mean": jnp.float32(0.0),
             "grad_norm": jnp.float32(0.0), "actor_loss": jnp.float32(0.0)}
        return (params, state.target_params, state.opt_state, state.grad_steps,
                state.nonfinite, m)

    return jax.lax.cond(start, train_steps, no_steps, None)


def update(parts: Parts, state: TD3State) -> tuple[TD3State, Metrics]:
    """One update: TD3, Algorithm 1's loop body for ``num_envs x num_steps`` env steps
    (:func:`collect`) and then ``gradient_steps`` learning steps (:func:`learn`), once
    ``max(learning_starts, batch_size)`` transitions were collected.

    Args:
        parts: The static parts.
        state: The train state.

    Returns:
        ``(state, metrics)``.
    """
    config = parts.config
    key, k_roll, k_grad = jax.random.split(state.key, 3)
    env_state, traj, buffer = collect(parts, state, k_roll)
    env_steps = state.env_steps + config.num_envs * config.num_steps
    start = env_steps >= max(config.learning_starts, config.batch_size)
    params, target, opt_state, n, nonfinite, m = learn(parts, state, buffer, k_grad, start)
    metrics = {**m, **episode_metrics(traj), "env_steps": env_steps,
               "nonfinite": nonfinite, "buffer_size": buffer.size * config.num_envs}
    new_state = common.advance(
        state, env_steps, params=params, target_params=target, opt_state=opt_state,
        buffer=buffer, env_state=env_state, key=key, grad_steps=n, nonfinite=nonfinite)
    return new_state, metrics


def make_train(config: Config, env: Env) -> Trainer:
    """Binds TD3 (or DDPG, :class:`DDPGConfig`) to a single env with continuous actions,
    batched here with ``config.num_envs``.

    Args:
        config: TD3 or DDPG hyperparameters.
        env: A single env.

    Returns:
        A :class:`Trainer`. Bad configs or env/config mismatches raise here
        (:func:`make_parts`), before anything is compiled. ``evaluate`` always acts with
        ``mu(s)`` (:func:`act_mean`).
    """
    parts = make_parts(config, env)
    init_fn = functools.partial(init, parts)
    update_fn = functools.partial(update, parts)
    return Trainer(
        config=config, env=env, spec=parts.spec, actor=parts.actor, critic=parts.critic,
        num_updates=parts.num_updates, init=init_fn, update=update_fn,
        train=common.scan_train(init_fn, update_fn, parts.num_updates),
        act=functools.partial(act, parts),
        evaluate=common.episode_evaluator(env, functools.partial(act_mean, parts),
                                          parts.spec.episode_length),
        q_values=functools.partial(q_values, parts),
        td_target=functools.partial(td_target, parts),
        critic_loss=functools.partial(critic_loss, parts),
        actor_loss=functools.partial(actor_loss, parts),
    )


__all__ = ["DDPG_PRESETS", "PRESETS", "Config", "DDPGConfig", "Parts", "TD3State", "Trainer",
           "act", "act_mean", "actor_and_targets", "actor_loss", "clipped_step", "collect",
           "critic_loss", "grad_step", "init", "init_params", "learn", "make_parts",
           "make_train", "polyak", "preset", "q_values", "td_target", "update"]
