"""Wrappers over brax's ``Env`` protocol.

Every wrapper keeps the keys other wrappers put in ``State.info`` (it copies the dict and
updates it, never rebuilds it), so stacks of wrappers run under ``lax.scan``.

Conventions shared by all metareward envs after :func:`metareward.envs.make`:

- ``State.obs``: the observation to act on (already the reset observation after an
  episode ended).
- ``State.done``: 1.0 when the transition ended the episode, by termination or time limit.
- ``State.info["truncation"]``: 1.0 when it ended on the time limit and not by
  termination; learners bootstrap from ``V(final_obs)`` there.
- ``State.info["final_obs"]``: the observation the transition reached, before any reset.
- ``State.info["episode_return"]`` / ``["episode_length"]``: running sums of the current
  episode; ``State.info["completed_return"]`` / ``["completed_length"]``: the finished
  episode's totals on the step that ended it, else 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State, Wrapper

from metareward.envs.spec import EnvSpec
from metareward.envs.tasks import Task, reset_with_task

_AUTORESET_KEY = "autoreset_rng"


def _where(cond: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    cond = jnp.reshape(cond, cond.shape + (1,) * (a.ndim - cond.ndim))
    return jnp.where(cond, a, b)



def reset_adding_info(env: Env, rng: jax.Array, task: Task | None, **info: jax.Array) -> State:
    """``env``'s reset (:func:`metareward.envs.tasks.reset_with_task`) with ``info``'s
    entries added to the state's ``info``: how a wrapper starts its own counters.

    Args:
        env: The wrapped env.
        rng: The reset's key.
        task: The task, or None.
        **info: The entries to add (their initial values).

    Returns:
        The reset state.
    """
    state = reset_with_task(env, rng, task)
    return state.replace(info={**state.info, **info})

class EpisodeWrapper(Wrapper):
    """Ends episodes after ``episode_length`` steps, flagging ``info["truncation"]``.

    Unlike brax's own EpisodeWrapper, ``truncation`` is 0 on a step that terminates and
    reaches the limit at once (termination wins: no bootstrap there).
    """

    def __init__(self, env: Env, episode_length: int):
        super().__init__(env)
        if episode_length <= 0:
            raise ValueError(f"episode_length must be a positive int, got {episode_length}")
        self.episode_length = int(episode_length)

    def reset(self, rng: jax.Array, task: Task | None = None) -> State:
        """The inner env's reset with the step counter at 0.

        Args:
            rng: The reset's key.
            task: For a randomised env, the task of the episode; None: the env's own reset.

        Returns:
            The first state, with ``info["steps"]`` and ``info["truncation"]`` at 0.
        """
        return reset_adding_info(self.env, rng, task, steps=jnp.zeros((), jnp.int32),
                                 truncation=jnp.zeros((), jnp.float32))

    def step(self, state: State, action: jax.Array) -> State:
        """One step, ending the episode at the step limit.

        Args:
            state: The current state (made by this wrapper's ``reset``).
            action: The action.

        Returns:
            The next state: ``done`` on termination or at ``episode_length`` steps,
            ``info["truncation"]`` 1 only for the limit without termination.
        """
        nxt = self.env.step(state, action)
        steps = state.info["steps"] + 1
        terminated = nxt.done > 0
        truncation = jnp.logical_and(steps >= self.episode_length, ~terminated)
        done = jnp.logical_or(terminated, truncation)
        info = {**nxt.info, "steps": steps, "truncation": truncation.astype(jnp.float32)}
        return nxt.replace(done=done.astype(jnp.float32), info=info)


class AutoResetWrapper(Wrapper):
    """Resets an episode that ended, from a fresh key, keeping ``info["final_obs"]``.

    brax's own AutoResetWrapper returns to the first state it ever saw; this one draws a
    new initial state each time (the reset is computed every step and selected where
    ``done``, as a jitted program must).
    """

    #: info keys that describe the transition, not the episode, or (``task``) outlive
    #: episodes: never reset.
    TRANSITION_KEYS = ("truncation", "final_obs", "task", _AUTORESET_KEY)

    def reset(self, rng: jax.Array, task: Task | None = None) -> State:
        """The inner env's reset, keeping a key for later resets.

        Args:
            rng: The reset's key.
            task: For a randomised env, the task of the episode; None: the env's own reset.

        Returns:
            The first state, with ``info["final_obs"]`` its observation and
            ``info["truncation"]`` 0 unless the inner env set it.
        """
        rng, key = jax.random.split(rng)
        state = reset_with_task(self.env, key, task)
        info = {**state.info, _AUTORESET_KEY: rng, "final_obs": state.obs}
        info.setdefault("truncation", jnp.zeros((), jnp.float32))
        return state.replace(info=info)

    def step(self, state: State, action: jax.Array) -> State:
        """One step; where it ends the episode, a fresh reset (same task) replaces the state.

        Args:
            state: The current state (made by this wrapper's ``reset``).
            action: The action.

        Returns:
            The next state: where ``done``, the fresh episode's ``obs``, pipeline state and
            per-episode ``info`` (``truncation``, ``final_obs`` and ``task`` kept);
            ``info["final_obs"]`` the observation the step reached.
        """
        rng, key = jax.random.split(state.info[_AUTORESET_KEY])
        nxt = self.env.step(state, action)
        fresh = reset_with_task(self.env, key, state.info.get("task"))  # same task
        done = nxt.done > 0
        info = dict(nxt.info)
        for k, v in fresh.info.items():
            if k not in self.TRANSITION_KEYS and k in info:
                info[k] = jax.tree.map(lambda a, b: _where(done, a, b), v, info[k])
        info.update({_AUTORESET_KEY: rng, "final_obs": nxt.obs})
        info.setdefault("truncation", jnp.zeros((), jnp.float32))
        pipeline_state = jax.tree.map(
            lambda a, b: _where(done, a, b), fresh.pipeline_state, nxt.pipeline_state
        )
        obs = _where(done, fresh.obs, nxt.obs)
        return nxt.replace(pipeline_state=pipeline_state, obs=obs, info=info)


class EpisodeStats(Wrapper):
    """Tracks undiscounted episode returns and lengths in ``State.info``."""

    def reset(self, rng: jax.Array, task: Task | None = None) -> State:
        """The inner env's reset with the episode statistics at 0.

        Args:
            rng: The reset's key.
            task: For a randomised env, the task of the episode; None: the env's own reset.

        Returns:
            The first state, with ``info`` entries ``episode_return``, ``episode_length``,
            ``completed_return`` and ``completed_length`` at 0.
        """
        zf, zi = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)
        return reset_adding_info(self.env, rng, task, episode_return=zf, episode_length=zi,
                                 completed_return=zf, completed_length=zi)

    def step(self, state: State, action: jax.Array) -> State:
        """One step, updating the episode statistics.

        Args:
            state: The current state (made by this wrapper's ``reset``).
            action: The action.

        Returns:
            The next state: the running ``episode_return`` / ``episode_length`` (0 after an
            episode ends) and, on the step that ended an episode, its totals in
            ``completed_return`` / ``completed_length`` (else 0).
        """
        nxt = self.env.step(state, action)
        ret = state.info["episode_return"] + nxt.reward
        length = state.info["episode_length"] + 1
        done = nxt.done > 0
        info = {
            **nxt.info,
            "episode_return": jnp.where(done, 0.0, ret),
            "episode_length": jnp.where(done, 0, length),
            "completed_return": jnp.where(done, ret, 0.0),
            "completed_length": jnp.where(done, length, 0),
        }
        return nxt.replace(info=info)


class DelayedReward(Wrapper):
    """Delays the reward: summed and released every ``every`` steps or when the episode
    ends, zero in between (LIRPG's delayed MuJoCo tasks, Zheng et al. 2018, Sec. 4.2,
    the authors' ``reward_freq``). Within an episode the released rewards sum to the
    true ones; a new episode starts with an empty accumulator.

    Wrap an env from :func:`metareward.envs.make` (which does it for ``reward_delay=N``):
    its :class:`EpisodeStats` sit inside, so episode returns in ``info`` (and the
    learners' metrics) stay the true, undelayed ones. ``info["delay_steps"]`` counts the
    steps since the last release, ``info["delay_acc"]`` holds what is withheld.
    """

    def __init__(self, env: Env, every: int):
        super().__init__(env)
        if isinstance(every, bool) or not isinstance(every, int) or every <= 0:
            raise ValueError(f"reward delay `every` must be a positive int, got {every!r}")
        self.every = int(every)

    def reset(self, rng: jax.Array, task: Task | None = None) -> State:
        """The inner env's reset with an empty accumulator.

        Args:
            rng: The reset's key.
            task: For a randomised env, the task of the episode; None: the env's own reset.

        Returns:
            The first state, with ``info["delay_steps"]`` and ``info["delay_acc"]`` at 0.
        """
        return reset_adding_info(self.env, rng, task, delay_steps=jnp.zeros((), jnp.int32),
                                 delay_acc=jnp.zeros((), jnp.float32))

    def step(self, state: State, action: jax.Array) -> State:
        """One step, withholding the reward until a release.

        Args:
            state: The current state (made by this wrapper's ``reset``).
            action: The action.

        Returns:
            The next state: the reward is the accumulated sum on a release (every
            ``every`` steps or at an episode's end), else 0.
        """
        nxt = self.env.step(state, action)
        steps = state.info["delay_steps"] + 1
        acc = state.info["delay_acc"] + nxt.reward
        release = (nxt.done > 0) | (steps >= self.every)
        info = {
            **nxt.info,
            "delay_steps": jnp.where(release, 0, steps),
            "delay_acc": jnp.where(release, 0.0, acc),
        }
        return nxt.replace(reward=jnp.where(release, acc, 0.0), info=info)


class NormalizedReward(Wrapper):
    """The reward divided by a running standard deviation of the discounted return, then
    clipped: the reward half of OpenAI baselines' ``VecNormalize``, which the LIRPG
    authors' ``run_mujoco.py`` and baselines' PPO wrap every MuJoCo env in. Per step::

        ret <- gamma * ret + r;  fold ret into (mean, var, count);
        r'  =  clip(r / sqrt(var + 1e-8), -clip, clip)

    with ``(mean, var, count)`` starting at ``(0, 1, 1e-4)`` (baselines'
    ``RunningMeanStd``; here :class:`metareward.rl.normalize.RunningStats`, the same
    update). As in the authors' copy of baselines, ``ret`` runs on across episode ends;
    later baselines set it to 0 there (``reset_at_episode_end=True``). Under
    :class:`VmapWrapper` every env keeps its own statistics; ``VecNormalize`` pools the
    envs of a step, so the two agree exactly with one env (the authors' setting) and
    otherwise differ only in how fast the statistics settle. ``info["norm_return"]`` and
    ``info["norm_stats"]`` hold the state; episode statistics come from inside and stay
    the env's own.

    Args:
      env: The env whose reward to normalise.
      gamma: The discount of the running return (the learner's).
      clip: The normalised reward's bound (baselines' ``cliprew``).
      reset_at_episode_end: Start the running return at 0 after an episode ends.
    """

    def __init__(self, env: Env, gamma: float | jax.Array, clip: float = 10.0,
                 reset_at_episode_end: bool = False):
        super().__init__(env)
        self.gamma = gamma
        self.clip = float(clip)
        self.reset_at_episode_end = bool(reset_at_episode_end)

    def reset(self, rng: jax.Array, task: Task | None = None) -> State:
        """The inner env's reset with fresh normaliser state.

        Args:
            rng: The reset's key.
            task: For a randomised env, the task of the episode; None: the env's own reset.

        Returns:
            The first state, with ``info["norm_return"]`` 0 and ``info["norm_stats"]`` a fresh
            :class:`~metareward.rl.normalize.RunningStats`.
        """
        from metareward.rl.normalize import RunningStats  # rl imports envs: here, not above

        return reset_adding_info(self.env, rng, task, norm_return=jnp.zeros((), jnp.float32),
                                 norm_stats=RunningStats.create(()))

    def step(self, state: State, action: jax.Array) -> State:
        """One step, normalising its reward (see the class docstring).

        Args:
            state: The current state (made by this wrapper's ``reset``).
            action: The action.

        Returns:
            The next state, with the normalised, clipped reward and the updated
            ``info["norm_return"]`` and ``info["norm_stats"]``.

        Raises:
            KeyError: If ``state`` has no ``info["norm_return"]`` (not made by this wrapper's
                ``reset``).
        """
        if "norm_return" not in state.info:
            raise KeyError("NormalizedReward.step got a state its reset did not make (no "
                           "info['norm_return']); reset a learner's envs with "
                           "metareward.algos.onpolicy.batched_env(config, env).reset")
        nxt = self.env.step(state, action)
        ret = self.gamma * state.info["norm_return"] + nxt.reward
        stats = state.info["norm_stats"].update(ret[None])
        reward = jnp.clip(nxt.reward / jnp.sqrt(stats.var + 1e-8), -self.clip, self.clip)
        if self.reset_at_episode_end:
            ret = jnp.where(nxt.done > 0, 0.0, ret)
        return nxt.replace(reward=reward,
                           info={**nxt.info, "norm_return": ret, "norm_stats": stats})


class ActionRescale(Wrapper):
    """Maps actions in [-1, 1] (clipped) to the env's bounds ``[low, high]``."""

    def __init__(self, env: Env):
        super().__init__(env)
        spec: EnvSpec = env.spec
        if spec.discrete:
            raise ValueError(f"ActionRescale needs continuous actions; {spec.name} is discrete")
        self._low = jnp.asarray(spec.action_low, jnp.float32)
        self._high = jnp.asarray(spec.action_high, jnp.float32)
        self._spec = EnvSpec(
            spec.name,
            spec.obs_shape,
            False,
            spec.action_size,
            (-1.0,) * spec.action_size,
            (1.0,) * spec.action_size,
            spec.episode_length,
        )

    @property
    def spec(self) -> EnvSpec:
        """The inner env's spec with actions bounded by ``[-1, 1]``.

        Returns:
            The :class:`EnvSpec`.
        """
        return self._spec

    def reset(self, rng: jax.Array, task: Task | None = None) -> State:
        """The inner env's reset (unchanged).

        Args:
            rng: The reset's key.
            task: For a randomised env, the task of the episode; None: the env's own reset.

        Returns:
            The inner env's first state.
        """
        return reset_with_task(self.env, rng, task)

    def step(self, state: State, action: jax.Array) -> State:
        """One step with ``action`` clipped to ``[-1, 1]`` and mapped to ``[low, high]``.

        Args:
            state: The current state.
            action: The action in ``[-1, 1]`` (``action_size`` floats; clipped).

        Returns:
            The inner env's next state.
        """
        a = jnp.clip(action, -1.0, 1.0)
        a = self._low + (a + 1.0) * 0.5 * (self._high - self._low)
        return self.env.step(state, a)


class VmapWrapper(Wrapper):
    """Runs ``num_envs`` copies of an env in lock-step with ``jax.vmap``.

    ``reset(rng)`` splits ``rng`` into one key per env; ``step`` takes a batch of actions.
    A randomised env (:mod:`metareward.envs.tasks`) draws a task per copy, or with
    ``reset(rng, task=task)`` runs every copy on that one task (unbatched).
    """

    def __init__(self, env: Env, num_envs: int):
        super().__init__(env)
        if num_envs <= 0:
            raise ValueError(f"num_envs must be a positive int, got {num_envs}")
        self.num_envs = int(num_envs)

    def reset(self, rng: jax.Array, task: Task | None = None) -> State:
        """``num_envs`` resets, one key per env split from ``rng``.

        Args:
            rng: The key to split.
            task: One unbatched task every copy runs on; None: each copy's own reset (a task
                drawn per copy if randomised).

        Returns:
            The states batched over ``[num_envs]`` on every leaf's leading axis.
        """
        keys = jax.random.split(rng, self.num_envs)
        if task is None:
            return jax.vmap(self.env.reset)(keys)
        return jax.vmap(lambda k: self.env.reset(k, task=task))(keys)

    def step(self, state: State, action: jax.Array) -> State:
        """One step of every copy.

        Args:
            state: The ``[num_envs]``-batched state.
            action: ``[num_envs, ...]`` actions, one per copy.

        Returns:
            The ``[num_envs]``-batched next state.
        """
        return jax.vmap(self.env.step)(state, action)


__all__ = ["ActionRescale", "AutoResetWrapper", "DelayedReward", "EpisodeStats", "EpisodeWrapper",
           "NormalizedReward", "VmapWrapper", "reset_adding_info"]
