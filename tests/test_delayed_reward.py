"""DelayedReward (LIRPG's delayed tasks): released at the right steps, sums conserved per
episode, episode ends flush the accumulator, episode statistics keep the true return."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy_envs import CountEnv, scan_states

from metareward import envs
from metareward.envs import (
    AutoResetWrapper,
    DelayedReward,
    EpisodeStats,
    EpisodeWrapper,
    VmapWrapper,
)


def reference_delay(rewards, dones, every):
    """The delay as a plain loop over one env's true rewards."""
    out, acc, steps = [], 0.0, 0
    for r, d in zip(rewards, dones, strict=True):
        acc, steps = acc + r, steps + 1
        if d or steps == every:
            out.append(acc)
            acc, steps = 0.0, 0
        else:
            out.append(0.0)
    return np.array(out)


@pytest.mark.parametrize("every", [1, 3, 5])
def test_delayed_reward_on_toy_env(every):
    # Episodes end by termination after 7 steps or by the time limit of 6 (env 2's
    # terminate_at is past it), so releases both on the period and on episode ends.
    T, N = 40, 2
    actions = jax.random.uniform(jax.random.PRNGKey(0), (T, N, 1), minval=-1.0, maxval=1.0)
    key = jax.random.PRNGKey(1)
    for terminate_at, limit in ((7, 100), (None, 6)):
        base = EpisodeStats(AutoResetWrapper(EpisodeWrapper(CountEnv(terminate_at), limit)))
        true = scan_states(VmapWrapper(base, N), actions, key)
        delayed = scan_states(VmapWrapper(DelayedReward(base, every), N), actions, key)
        r_true, done = np.asarray(true.reward), np.asarray(true.done)
        r_del = np.asarray(delayed.reward)
        np.testing.assert_array_equal(np.asarray(delayed.done), done)  # dynamics untouched
        period = terminate_at or limit
        for e in range(N):
            ref = reference_delay(r_true[:, e], done[:, e], every)
            np.testing.assert_allclose(r_del[:, e], ref, rtol=1e-6, atol=1e-6)
            # Released exactly at steps k*every within an episode and at its end.
            t_in_episode = np.arange(T) % period + 1
            released = (t_in_episode % every == 0) | (t_in_episode == period)
            assert np.all(r_del[~released, e] == 0.0)
            # Each finished episode's delayed rewards sum to its true return, which the
            # episode statistics report.
            ends = np.flatnonzero(done[:, e])
            starts = np.concatenate([[0], ends[:-1] + 1])
            assert len(ends) >= 4
            for s, t in zip(starts, ends, strict=True):
                assert r_del[s:t + 1, e].sum() == pytest.approx(r_true[s:t + 1, e].sum(), rel=1e-5)
                assert float(delayed.info["completed_return"][t, e]) == pytest.approx(
                    r_true[s:t + 1, e].sum(), rel=1e-5)
            # The episode end flushes: nothing withheld, the step counter restarts.
            assert np.all(np.asarray(delayed.info["delay_acc"])[ends, e] == 0.0)
            assert np.all(np.asarray(delayed.info["delay_steps"])[ends, e] == 0)


def test_make_with_reward_delay_on_cartpole():
    """CartPole pays 1 per step: delayed by 10, the reward is 10 on every 10th step of an
    episode, the remainder at its end, 0 otherwise; the reported return is the true one."""
    env = envs.make("cartpole", reward_delay=10)
    assert env.spec.name == "cartpole" and env.spec.discrete
    venv = VmapWrapper(env, 8)
    T = 300
    actions = jax.random.bernoulli(jax.random.PRNGKey(2), 0.5, (T, 8)).astype(jnp.int32)
    states = scan_states(venv, actions, jax.random.PRNGKey(3))
    r, done = np.asarray(states.reward), np.asarray(states.done)
    completed = np.asarray(states.info["completed_return"])
    assert done.sum() >= 20  # random actions: short episodes
    for e in range(8):
        ends = np.flatnonzero(done[:, e])
        starts = np.concatenate([[0], ends[:-1] + 1])
        for s, t in zip(starts, ends, strict=True):
            length = t - s + 1
            expected = np.zeros(length)
            expected[9::10] = 10.0
            expected[-1] = length - 10 * ((length - 1) // 10)
            np.testing.assert_allclose(r[s:t + 1, e], expected)
            assert completed[t, e] == pytest.approx(length)


def test_bad_reward_delay_fails_clearly():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="reward_delay must be a positive int"):
            envs.make("cartpole", reward_delay=bad)
    with pytest.raises(ValueError, match="`every` must be a positive int, got 0"):
        DelayedReward(envs.make("cartpole"), 0)
