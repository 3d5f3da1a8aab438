"""TARE's illustrative chain environment (TARE paper, section 2.3, Figure 4, Appendix F).

Eleven states ``s0 .. s10`` in a row; every episode starts in ``s5``. In a non-absorbing
state the agent moves left (action 0) or right (action 1) to the neighbouring state.

* a move left pays 1.0;
* a move right pays a sample of N(0.5, 1.0) (mean 0.5, standard deviation 1.0);
* the move that reaches the goal ``s10`` pays ``10 - 0.01 n`` instead, with ``n`` the
  number of steps taken in the episode (that move included, so ``n >= 5``);
* ``s0`` and ``s10`` are absorbing: entering either ends the episode (termination).

Per step, left looks better (1.0 against 0.5 on average, and right is noisy), yet the
best policy keeps going right: 4 noisy moves and the goal pay about 2 + 9.95 = 11.95,
against 5.0 for walking left to ``s0``.

**Step limit (not given in the paper).** Without one, moving back and forth between two
inner states pays 0.75 per step on average and beats the goal for long enough episodes,
which would contradict the paper's statement that going right is optimal. The default
``episode_length=10`` keeps it true: the best a 10-step episode can collect without
reaching ``s10`` is 8.5 in expectation (4 moves left, then alternating), less than the
11.95 of the right-going path; up to ``episode_length=14`` the right path stays optimal.
The step limit is part of the task here, so it *terminates* the episode (no bootstrap
from the last state): were it a truncation, as the other envs' time limits, a learner
would value the observation as if the episode went on, and endless back-and-forth
(0.75 per step, discounted: about 75 at gamma = 0.99) would look better than the goal.
``step_limit_truncates=True`` gives the usual truncation instead.

Observation: the one-hot position, 11 floats; ``info["final_obs"]`` (the observation the
transition reached, before the auto-reset) tells whether an episode ended in ``s10``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State

from metareward.envs.spec import EnvSpec, SpecMixin

NUM_STATES = 11
START = 5
GOAL = NUM_STATES - 1
LEFT, RIGHT = 0, 1


class ChainEnv(SpecMixin, Env):
    """The chain of TARE's Figure 4 (see the module docstring).

    Args:
      name: registry name.
      episode_length: step limit (default 10, see the module docstring).
      right_mean: the mean of the right move's reward (paper: 0.5).
      right_std: its standard deviation (paper: 1.0).
      left_reward: the left move's reward (paper: 1.0).
      goal_reward: the goal pays ``goal_reward - step_cost * n`` (paper: 10).
      step_cost: see ``goal_reward`` (paper: 0.01).
      step_limit_truncates: end episodes at the limit by truncation (bootstrapped)
        instead of termination (the default, see the module docstring).
    """

    def __init__(
        self,
        name: str = "chain",
        episode_length: int | None = None,
        right_mean: float = 0.5,
        right_std: float = 1.0,
        left_reward: float = 1.0,
        goal_reward: float = 10.0,
        step_cost: float = 0.01,
        step_limit_truncates: bool = False,
    ):
        length = 10 if episode_length is None else int(episode_length)
        if right_std < 0:
            raise ValueError(f"chain: right_std must be >= 0, got {right_std!r}")
        self.right_mean = float(right_mean)
        self.right_std = float(right_std)
        self.left_reward = float(left_reward)
        self.goal_reward = float(goal_reward)
        self.step_cost = float(step_cost)
        self.length = length
        self.step_limit_truncates = bool(step_limit_truncates)
        self._spec = EnvSpec(name, (NUM_STATES,), True, 2, episode_length=length)

    def reset(self, rng: jax.Array) -> State:
        """A new episode in the start state ``s5``.

        Args:
          rng: the key of the episode's reward noise (kept in ``info["rng"]``).

        Returns:
          The first state: the one-hot position (11 floats) as ``obs``, reward and done 0.
        """
        pos = jnp.int32(START)
        zero = jnp.zeros((), jnp.float32)
        info = {"rng": rng, "chain_steps": jnp.zeros((), jnp.int32)}
        return State(pos, jax.nn.one_hot(pos, NUM_STATES), zero, zero, {}, info)

    def step(self, state: State, action: jax.Array) -> State:
        """One move left or right (see the module docstring for the rewards).

        Args:
          state: the current state.
          action: the discrete action, ``0`` (left) or ``1`` (right), any shape of one element.

        Returns:
          The next state; ``done`` is 1 on entering ``s0`` or ``s10`` and, unless
          ``step_limit_truncates``, at the step limit.
        """
        rng, key = jax.random.split(state.info["rng"])
        pos = state.pipeline_state
        right = jnp.reshape(action, ()).astype(jnp.int32) == RIGHT
        new_pos = jnp.clip(pos + jnp.where(right, 1, -1), 0, GOAL)
        n = state.info["chain_steps"] + 1
        noisy = self.right_mean + self.right_std * jax.random.normal(key, ())
        reward = jnp.where(right, noisy, self.left_reward)
        reward = jnp.where(new_pos == GOAL, self.goal_reward - self.step_cost * n, reward)
        done = (new_pos == 0) | (new_pos == GOAL)
        if not self.step_limit_truncates:  # the limit terminates (the EpisodeWrapper's
            done = done | (n >= self.length)  # truncation defers to a termination)
        info = {**state.info, "rng": rng, "chain_steps": n}
        return state.replace(
            pipeline_state=new_pos,
            obs=jax.nn.one_hot(new_pos, NUM_STATES),
            reward=reward.astype(jnp.float32),
            done=done.astype(jnp.float32),
            info=info,
        )

    @property
    def observation_size(self) -> int:
        """The observation size: 11 (the one-hot position).

        Returns:
          11.
        """
        return NUM_STATES

    @property
    def action_size(self) -> int:
        """The number of discrete actions: 2 (left, right).

        Returns:
          2.
        """
        return 2

    @property
    def backend(self) -> str:
        """The backend's name.

        Returns:
          ``"chain"``.
        """
        return "chain"


__all__ = ["GOAL", "LEFT", "NUM_STATES", "RIGHT", "START", "ChainEnv"]
