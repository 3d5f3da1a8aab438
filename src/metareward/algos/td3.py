"""TD3 and DDPG: deterministic actor-critic from a replay buffer.

Fujimoto, van Hoof & Meger 2018, "Addressing Function Approximation Error in
Actor-Critic Methods" (TD3, Algorithm 1), and Lillicrap et al. 2016 (DDPG), as MetaGenRL
uses them (``metagenrl_learned_objectives.md``, section 3.1 eq. 5, Appendix B, Tables 3-4;
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
from metareward.nets.policies import DeterministicPolicy, QNetwork
from metareward.rl import replay
from metareward.rl.replay import RingBuffer
from metareward.rl.rollout import episode_metrics, evaluate_episodes, rollout

Params = Any
Metrics = dict[str, jax.Array]


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
    :class:`Config` (the MetaGenRL paper's "DDPG / TD3" baseline shares its settings)."""

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


def preset(env_name: str) -> Config:
    """The tuned config for ``env_name`` if there is one, else the paper defaults (with a
    :class:`~metareward.algos.config.DefaultConfigWarning`); ``ConfigError`` for an env
    name that is not registered (see :func:`metareward.algos.config.preset`)."""
    return cfg.preset(PRESETS, Config(), env_name, "td3")


class Rows(NamedTuple):
    """One env step of every env as the buffer stores it: flattened observations, env
    actions, scaled rewards, the terminal flag (``done and not truncation``), the
    episode-end flag ``done`` and the observation reached (before any auto-reset)."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminal: jax.Array
    done: jax.Array
    next_obs: jax.Array


@struct.dataclass
class TD3State:
    """Everything TD3 carries between updates (a pytree).

    ``params = {"actor": ..., "critic": ...}``; the critic's leaves have a leading axis
    of 2 (twin critics, ``vmap``-ed) or 1 (DDPG). ``target_params`` the same for the
    target networks. The optimiser states are Adam on the flattened actor and critic
    parameter vectors. ``grad_steps`` counts critic steps (the policy delay's clock);
    ``nonfinite`` counts gradient steps skipped because a loss or gradient was not
    finite.
    """

    params: Params
    target_params: Params
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    buffer: RingBuffer
    env_state: State
    key: jax.Array
    update_step: jax.Array
    env_steps: jax.Array
    grad_steps: jax.Array
    nonfinite: jax.Array


class Trainer(NamedTuple):
    """TD3 bound to a config and an env; all functions pure and jittable.

    Beyond ``init / update / train / act / evaluate`` (the
    :class:`~metareward.algos.registry.Learner` protocol):

    * ``q_values(critic_params, obs, action) -> [C, ...]``: every critic's ``Q(s, a)``;
    * ``td_target(target_params, batch, key) -> [B]``: eq. 5's target with TD3's
      clipped double Q and target smoothing (``batch``: a :class:`Rows` of ``[B, ...]``);
    * ``critic_loss(critic_params, batch, target) -> (loss, aux)``: the summed mean
      squared TD errors of the critics;
    * ``actor_loss(actor_params, critic_params, obs) -> loss``: ``-mean Q_1(s, mu(s))``.
    """

    config: Config
    env: Env
    spec: EnvSpec
    actor: nn.Module
    critic: nn.Module
    num_updates: int
    init: Callable[[jax.Array], TD3State]
    update: Callable[[TD3State], tuple[TD3State, Metrics]]
    train: Callable[[jax.Array], tuple[TD3State, Metrics]]
    act: Callable[..., jax.Array]
    evaluate: Callable[..., jax.Array]
    q_values: Callable[..., jax.Array]
    td_target: Callable[..., jax.Array]
    critic_loss: Callable[..., tuple[jax.Array, Metrics]]
    actor_loss: Callable[..., jax.Array]


def polyak(target: Params, online: Params, tau: float) -> Params:
    """``tau * online + (1 - tau) * target``, leaf by leaf (soft target update)."""
    return jax.tree.map(lambda t, o: tau * o + (1.0 - tau) * t, target, online)


def clipped_step(
    loss_fn: Callable[[jax.Array], tuple[jax.Array, Metrics]],
    optimizer: optax.GradientTransformation,
    flat: jax.Array,
    opt_state: optax.OptState,
    max_grad_norm: float | None,
) -> tuple[jax.Array, optax.OptState, jax.Array, jax.Array, Metrics]:
    """One optimiser step on a flat parameter vector: ``(flat, opt_state, ok, loss,
    aux)``. The gradient is clipped to ``max_grad_norm`` (if given); a non-finite loss or
    gradient feeds the optimiser a zero gradient and keeps the parameters (``ok`` False).
    ``aux`` gains ``grad_norm``."""
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(flat)
    norm = jnp.sqrt(jnp.sum(grads**2))
    ok = jnp.isfinite(loss) & jnp.isfinite(norm)
    if max_grad_norm is not None:
        grads = grads * jnp.minimum(1.0, max_grad_norm / (norm + 1e-6))
    grads = jnp.where(ok, grads, 0.0)
    updates, new_state = optimizer.update(grads, opt_state, flat)
    return jnp.where(ok, flat + updates, flat), new_state, ok, loss, {**aux, "grad_norm": norm}


def make_train(config: Config, env: Env) -> Trainer:
    """Binds TD3 (or DDPG, :class:`DDPGConfig`) to a single env with continuous actions,
    batched here with ``config.num_envs``. Bad configs or env/config mismatches raise
    here, before anything is compiled."""
    if not isinstance(config, Config):
        raise TypeError(f"expected metareward.algos.td3.Config, got {type(config).__name__}")
    spec = check_env(env)
    if spec.discrete:
        raise ValueError(f"TD3/DDPG need continuous actions; env {spec.name!r} is discrete "
                         f"({spec.action_size} actions)")
    N, T = config.num_envs, config.num_steps
    rollout_size = N * T
    num_updates = config.total_steps // rollout_size
    if num_updates < 1:
        raise ValueError(f"total_steps={config.total_steps} is less than one update "
                         f"(num_envs * num_steps = {rollout_size})")
    num_rows = config.buffer_size // rollout_size * T  # a multiple of the rows per insert
    if num_rows < T:
        raise ValueError(f"buffer_size={config.buffer_size} holds less than one update's "
                         f"transitions (num_envs * num_steps = {rollout_size})")
    grad_steps = config.gradient_steps or rollout_size
    A = spec.action_size
    low_t = tuple(float(x) for x in (spec.action_low or (-1.0,) * A))
    high_t = tuple(float(x) for x in (spec.action_high or (1.0,) * A))
    low, high = jnp.asarray(low_t, jnp.float32), jnp.asarray(high_t, jnp.float32)
    actor = DeterministicPolicy(A, config.hidden, config.activation, config.layer_norm,
                                low_t, high_t)
    critic = QNetwork(config.hidden, config.activation, config.layer_norm)
    num_critics = 2 if config.twin_critics else 1
    flatten_obs, _ = obs_preprocessor(spec, False)
    obs_dim = spec.obs_size
    venv = VmapWrapper(env, N)
    actor_opt = optax.adam(config.actor_learning_rate)
    critic_opt = optax.adam(config.critic_learning_rate)
    half_range = 0.5 * (high - low)

    def example_rows() -> Rows:
        obs = jnp.zeros((N, obs_dim), jnp.float32)
        f = jnp.zeros((N,), jnp.float32)
        return Rows(obs, jnp.zeros((N, A), jnp.float32), f, f, f, obs)

    def init(key: jax.Array) -> TD3State:
        k_pi, k_q, k_env, key = jax.random.split(key, 4)
        dummy_o = jnp.zeros((1, obs_dim), jnp.float32)
        dummy_a = jnp.zeros((1, A), jnp.float32)
        params = {
            "actor": actor.init(k_pi, dummy_o),
            "critic": jax.vmap(lambda k: critic.init(k, dummy_o, dummy_a))(
                jax.random.split(k_q, num_critics)),
        }
        return TD3State(
            params=params,
            target_params=params,
            actor_opt_state=actor_opt.init(ravel_pytree(params["actor"])[0]),
            critic_opt_state=critic_opt.init(ravel_pytree(params["critic"])[0]),
            buffer=replay.ring_init(example_rows(), num_rows),
            env_state=venv.reset(k_env),
            key=key,
            update_step=jnp.zeros((), jnp.int32),
            env_steps=jnp.zeros((), jnp.int32),
            grad_steps=jnp.zeros((), jnp.int32),
            nonfinite=jnp.zeros((), jnp.int32),
        )

    _shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
    _zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), _shapes.params)
    unravel_actor = ravel_pytree(_zeros["actor"])[1]
    unravel_critic = ravel_pytree(_zeros["critic"])[1]

    def q_values(critic_params: Params, obs: jax.Array, action: jax.Array) -> jax.Array:
        return jax.vmap(lambda p: critic.apply(p, obs, action))(critic_params)

    def act(state: Any, obs: jax.Array, key: jax.Array,
            deterministic: bool = False) -> jax.Array:
        """Env actions for raw observations: ``mu(s)``, plus clipped Gaussian exploration
        noise unless ``deterministic`` (``state``: a train state or a
        :class:`~metareward.algos.policy.Policy`; what is read: ``params``)."""
        params = state.params
        mu = actor.apply(params["actor"], flatten_obs(obs))
        if deterministic:
            return mu
        noise = config.exploration_noise * half_range * jax.random.normal(key, mu.shape)
        return jnp.clip(mu + noise, low, high)

    def td_target(target_params: Params, batch: Rows, key: jax.Array) -> jax.Array:
        a_next = actor.apply(target_params["actor"], batch.next_obs)
        if cfg.maybe(config.target_noise > 0):
            eps = config.target_noise * jax.random.normal(key, a_next.shape)
            eps = jnp.clip(eps, -config.target_noise_clip, config.target_noise_clip)
            a_next = jnp.clip(a_next + eps * half_range, low, high)
        q_next = jnp.min(q_values(target_params["critic"], batch.next_obs, a_next), axis=0)
        return batch.reward + config.gamma * (1.0 - batch.terminal) * q_next

    def critic_loss(critic_params: Params, batch: Rows, target: jax.Array):
        q = q_values(critic_params, batch.obs, batch.action)  # [C, B]
        loss = jnp.sum(jnp.mean(jnp.square(q - target), axis=-1))
        return loss, {"critic_loss": loss, "q_mean": jnp.mean(q[0])}

    def actor_loss(actor_params: Params, critic_params: Params, obs: jax.Array) -> jax.Array:
        first = jax.tree.map(lambda x: x[0], critic_params)
        return -jnp.mean(critic.apply(first, obs, actor.apply(actor_params, obs)))

    def grad_step(carry, key, buf: RingBuffer):
        """One critic step and, every ``policy_delay`` steps, an actor step and the soft
        target update (TD3, Algorithm 1)."""
        (a_flat, c_flat, a_opt, c_opt, target, n, nonfinite) = carry
        k_idx, k_noise = jax.random.split(key)
        t, e = replay.ring_sample_indices(k_idx, buf, config.batch_size)
        batch = Rows(*replay.gather(buf, t, e))
        y = td_target(target, batch, k_noise)
        c_flat, c_opt, ok_c, _, c_aux = clipped_step(
            lambda f: critic_loss(unravel_critic(f), batch, y), critic_opt, c_flat, c_opt,
            config.max_grad_norm)
        new_critic = unravel_critic(c_flat)

        def policy_and_targets(args):
            a_flat, a_opt, target = args
            a_new, a_opt, ok, loss, _ = clipped_step(
                lambda f: (actor_loss(unravel_actor(f), new_critic, batch.obs), {}),
                actor_opt, a_flat, a_opt, config.max_grad_norm)
            online = {"actor": unravel_actor(a_new), "critic": new_critic}
            return a_new, a_opt, polyak(target, online, config.tau), ok, loss

        def skip(args):
            a_flat, a_opt, target = args
            return a_flat, a_opt, target, jnp.bool_(True), jnp.float32(0.0)

        actor_turn = n % config.policy_delay == 0
        a_flat, a_opt, target, ok_a, a_loss = jax.lax.cond(
            actor_turn, policy_and_targets, skip, (a_flat, a_opt, target))
        bad = (~ok_c).astype(jnp.int32) + (~ok_a).astype(jnp.int32)
        metrics = {**c_aux, "actor_loss": a_loss, "actor_steps": actor_turn.astype(jnp.float32)}
        return (a_flat, c_flat, a_opt, c_opt, target, n + 1, nonfinite + bad), metrics

    def update(state: TD3State) -> tuple[TD3State, Metrics]:
        key, k_roll, k_grad = jax.random.split(state.key, 3)
        params = state.params
        random_phase = state.env_steps < config.learning_starts

        def policy_act(obs: jax.Array, k: jax.Array):
            k_a, k_u = jax.random.split(k)
            a = act(state, obs, k_a)
            u = jax.random.uniform(k_u, a.shape, minval=low, maxval=high)
            a = jnp.where(random_phase, u, a)
            return a, a, jnp.zeros(a.shape[:-1], jnp.float32)

        env_state, traj = rollout(venv, state.env_state, policy_act, k_roll, T)
        done = traj.done.astype(jnp.float32)
        rows = Rows(
            obs=flatten_obs(traj.obs).astype(jnp.float32),
            action=traj.action,
            reward=(traj.reward * config.reward_scale).astype(jnp.float32),
            terminal=done * (1.0 - traj.truncation.astype(jnp.float32)),
            done=done,
            next_obs=flatten_obs(traj.next_obs).astype(jnp.float32),
        )
        buffer = replay.ring_insert(state.buffer, rows)
        env_steps = state.env_steps + rollout_size
        learn = env_steps >= max(config.learning_starts, config.batch_size)

        def train_steps(_):
            carry = (ravel_pytree(params["actor"])[0], ravel_pytree(params["critic"])[0],
                     state.actor_opt_state, state.critic_opt_state, state.target_params,
                     state.grad_steps, state.nonfinite)
            carry, m = jax.lax.scan(lambda c, k: grad_step(c, k, buffer), carry,
                                    jax.random.split(k_grad, grad_steps))
            a_flat, c_flat, a_opt, c_opt, target, n, nonfinite = carry
            new = {"actor": unravel_actor(a_flat), "critic": unravel_critic(c_flat)}
            actor_steps = jnp.sum(m.pop("actor_steps"))
            a_loss = jnp.sum(m.pop("actor_loss")) / jnp.maximum(actor_steps, 1.0)
            m = {**{k: jnp.mean(v) for k, v in m.items()}, "actor_loss": a_loss}
            return new, target, a_opt, c_opt, n, nonfinite, m

        def no_steps(_):  # before learning_starts: zeros (the runner reads NaN as an error)
            m = {"critic_loss": jnp.float32(0.0), "q_mean": jnp.float32(0.0),
                 "grad_norm": jnp.float32(0.0), "actor_loss": jnp.float32(0.0)}
            return (params, state.target_params, state.actor_opt_state,
                    state.critic_opt_state, state.grad_steps, state.nonfinite, m)

        new_params, target, a_opt, c_opt, n, nonfinite, m = jax.lax.cond(
            learn, train_steps, no_steps, None)
        metrics = {**m, **episode_metrics(traj), "env_steps": env_steps,
                   "nonfinite": nonfinite, "buffer_size": buffer.size * N}
        new_state = TD3State(
            params=new_params, target_params=target, actor_opt_state=a_opt,
            critic_opt_state=c_opt, buffer=buffer, env_state=env_state, key=key,
            update_step=state.update_step + 1, env_steps=env_steps, grad_steps=n,
            nonfinite=nonfinite)
        return new_state, metrics

    def train(key: jax.Array) -> tuple[TD3State, Metrics]:
        state = init(key)
        return jax.lax.scan(lambda s, _: update(s), state, None, length=num_updates)

    def evaluate(state: TD3State, key: jax.Array, num_episodes: int = 16,
                 deterministic: bool = True) -> jax.Array:
        """Returns of ``num_episodes`` fresh episodes of ``mu``. The policy is
        deterministic (exploration noise is a training device), so ``deterministic`` is
        accepted for the Learner protocol and ignored: evaluation always acts with
        ``mu(s)``, as in the TD3 and MetaGenRL code."""
        check_one_seed(state)
        del deterministic
        fn = lambda obs, k: act(state, obs, k, True)
        return evaluate_episodes(env, fn, key, num_episodes, spec.episode_length)

    return Trainer(
        config=config, env=env, spec=spec, actor=actor, critic=critic,
        num_updates=num_updates, init=init, update=update, train=train, act=act,
        evaluate=evaluate, q_values=q_values, td_target=td_target, critic_loss=critic_loss,
        actor_loss=actor_loss,
    )


__all__ = ["DDPG_PRESETS", "PRESETS", "Config", "DDPGConfig", "Rows", "TD3State", "Trainer",
           "clipped_step", "make_train", "polyak", "preset"]
