"""A tiny deterministic env for testing wrappers and learners against known answers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State

from metareward.envs.spec import EnvSpec


class CountEnv(Env):
    """obs = [start + t, action_sum]; reward = 1 + action; terminates when
    ``t == terminate_at`` (never if None). ``start ~ U(0, 1)`` from the reset key, so
    two resets are told apart. Continuous 1-d action in [-2, 3]."""

    def __init__(self, terminate_at: int | None = None, episode_length: int = 1000):
        self.terminate_at = terminate_at
        self._spec = EnvSpec("count", (2,), False, 1, (-2.0,), (3.0,), episode_length)

    @property
    def spec(self) -> EnvSpec:
        return self._spec

    @property
    def auto_resets(self) -> bool:
        return False

    def reset(self, rng: jax.Array) -> State:
        start = jax.random.uniform(rng, ())
        obs = jnp.stack([start, jnp.float32(0.0)])
        zero = jnp.zeros((), jnp.float32)
        return State(None, obs, zero, zero, {"t": jnp.zeros((), jnp.int32)}, {"t": jnp.int32(0)})

    def step(self, state: State, action: jax.Array) -> State:
        a = jnp.reshape(action, ())
        t = state.info["t"] + 1
        obs = jnp.stack([state.obs[0] + 1.0, state.obs[1] + a])
        done = jnp.float32(0.0) if self.terminate_at is None else (t >= self.terminate_at)
        return state.replace(
            obs=obs,
            reward=1.0 + a,
            done=jnp.asarray(done, jnp.float32),
            info={**state.info, "t": t},
        )

    @property
    def observation_size(self) -> int:
        return 2

    @property
    def action_size(self) -> int:
        return 1

    @property
    def backend(self) -> str:
        return "toy"


def scan_states(env: Env, actions: jax.Array, key: jax.Array) -> State:
    """Steps a (vmapped) env from ``env.reset(key)`` through ``actions [T, ...]``.

    Returns:
        The states after each step, stacked along a leading time axis.
    """
    def step(s, a):
        s = env.step(s, a)
        return s, s

    return jax.lax.scan(step, env.reset(key), actions)[1]
