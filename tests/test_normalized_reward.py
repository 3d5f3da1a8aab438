"""NormalizedReward (the reward half of baselines' VecNormalize, which the LIRPG authors'
``run_mujoco.py`` and baselines' PPO wrap MuJoCo envs in): against a float64 loop of
VecNormalize's reward step; episode statistics stay the env's own; the learners that use
it get it by default, the tuned presets do not; and a PPO run with it is blind to the
reward's scale (the property it is there for), without it is not."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.envs.base import Wrapper
from toy_envs import CountEnv, scan_states

from metareward import envs
from metareward.algos import a2c, cln, lirpg, onpolicy, ppo
from metareward.envs import (
    AutoResetWrapper,
    EpisodeStats,
    EpisodeWrapper,
    NormalizedReward,
    VmapWrapper,
)


def vecnormalize_rewards(rewards, dones, gamma, reset, clip=10.0, eps=1e-8):
    """VecNormalize.step_wait's reward half for one env, as a float64 loop."""
    mean, var, count, ret, out = 0.0, 1.0, 1e-4, 0.0, []
    for r, d in zip(rewards, dones, strict=True):
        ret = ret * gamma + r
        tot = count + 1
        delta = ret - mean
        mean, var = mean + delta / tot, (var * count + delta**2 * count / tot) / tot
        count = tot
        out.append(np.clip(r / np.sqrt(var + eps), -clip, clip))
        if reset and d:
            ret = 0.0
    return np.array(out)


@pytest.mark.parametrize("reset", [False, True])
def test_matches_vecnormalize_step_by_step(reset):
    T, N, gamma = 60, 3, 0.9
    actions = jax.random.uniform(jax.random.PRNGKey(0), (T, N, 1), minval=-2.0, maxval=3.0)
    base = EpisodeStats(AutoResetWrapper(EpisodeWrapper(CountEnv(7), 100)))
    raw = scan_states(VmapWrapper(base, N), actions, jax.random.PRNGKey(1))
    normed = scan_states(
        VmapWrapper(NormalizedReward(base, gamma, reset_at_episode_end=reset), N),
        actions, jax.random.PRNGKey(1))
    r, done = np.asarray(raw.reward, np.float64), np.asarray(raw.done)
    np.testing.assert_array_equal(np.asarray(normed.done), done)
    assert done.sum() >= 3 * N
    for e in range(N):  # each env keeps its own statistics
        ref = vecnormalize_rewards(r[:, e], done[:, e], gamma, reset)
        np.testing.assert_allclose(np.asarray(normed.reward)[:, e], ref, rtol=2e-5, atol=1e-6)
    # The reward really changed, and the episode statistics did not.
    assert not np.allclose(np.asarray(normed.reward), r, atol=0.1)
    np.testing.assert_allclose(np.asarray(normed.info["completed_return"]),
                               np.asarray(raw.info["completed_return"]), rtol=1e-6)


def test_the_clip_binds():
    # 399 rewards of 1e-3 keep the return's variance near 1e-4; a last reward of 4 adds
    # about 4^2 / 400 to it, so 4 / sqrt(0.04) = 20 is clipped to 10.
    T = 400
    acts = jnp.full((T, 1, 1), -0.999).at[T - 1].set(3.0)
    base = EpisodeStats(AutoResetWrapper(EpisodeWrapper(CountEnv(None), 1000)))
    normed = scan_states(VmapWrapper(NormalizedReward(base, 0.99), 1), acts, jax.random.PRNGKey(0))
    assert float(normed.reward[-1, 0]) == pytest.approx(10.0)
    assert 0.01 < float(normed.reward[-2, 0]) < 1.0


def test_defaults_follow_the_papers_code():
    assert ppo.Config().normalize_reward and lirpg.Config().normalize_reward
    assert cln.Config().normalize_reward
    assert not a2c.Config().normalize_reward and not lirpg.A2CConfig().normalize_reward
    for env in ("cartpole", "pendulum"):  # tuned with a fixed reward_scale
        assert not ppo.preset(env).normalize_reward
        assert not lirpg.preset(env).normalize_reward
        assert not cln.preset(env).normalize_reward
    env = envs.make("cartpole")
    assert isinstance(onpolicy.batched_env(ppo.Config(), env).env, NormalizedReward)
    assert onpolicy.batched_env(ppo.preset("cartpole"), env).env is env
    with pytest.raises(ValueError, match=r"normalize_reward.*True or False"):
        ppo.Config(normalize_reward=1)


class Scaled(Wrapper):
    """The env's reward times ``k`` (episode statistics from inside, unscaled)."""

    def __init__(self, env, k):
        super().__init__(env)
        self.k = k

    def step(self, state, action):
        nxt = self.env.step(state, action)
        return nxt.replace(reward=nxt.reward * self.k)


@pytest.mark.parametrize("normalize", [True, False])
def test_ppo_with_it_does_not_see_the_rewards_scale(normalize):
    """Pendulum's reward (about -1 to -16 per step) times 1 or times 100: with the
    normaliser, two updates give the same parameters; without it they do not."""
    config = dataclasses.replace(ppo.preset("pendulum"), num_envs=4, num_steps=64,
                                 num_minibatches=4, num_epochs=2, total_steps=512,
                                 reward_scale=1.0, normalize_reward=normalize)
    env = envs.make("pendulum")

    def params_after(k):
        trainer = ppo.make_train(config, Scaled(env, k))
        state = trainer.init(jax.random.PRNGKey(3))
        for _ in range(2):
            state, _ = trainer.update(state)
        return jax.flatten_util.ravel_pytree(state.params)[0]

    start = jax.flatten_util.ravel_pytree(
        ppo.make_train(config, env).init(jax.random.PRNGKey(3)).params)[0]
    p1, p100 = params_after(1.0), params_after(100.0)
    moved = float(jnp.linalg.norm(p1 - start))
    gap = float(jnp.linalg.norm(p1 - p100))
    assert moved > 1e-2
    if normalize:
        assert gap < 1e-3 * moved
    else:
        assert gap > 0.1 * moved
