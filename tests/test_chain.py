"""TARE's chain environment (Appendix F) against hand-computed episodes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareward import envs
from metareward.envs.chain import GOAL, LEFT, NUM_STATES, RIGHT, START
from metareward.envs.wrappers import VmapWrapper


def _run(actions, key=0, **kw):
    """Steps a single chain env through ``actions``; returns per-step records."""
    env = envs.make("chain", **kw)
    state = jax.jit(env.reset)(jax.random.PRNGKey(key))
    step = jax.jit(env.step)
    out = []
    for a in actions:
        state = step(state, jnp.int32(a))
        out.append(
            (
                int(jnp.argmax(state.info["final_obs"])),
                float(state.reward),
                float(state.done),
                float(state.info["truncation"]),
                int(jnp.argmax(state.obs)),
            )
        )
    return out


def test_registered_and_spec():
    assert "chain" in envs.names()
    assert "chain" in envs.names("ours")
    spec = envs.make("chain").spec
    assert spec.discrete and spec.action_size == 2
    assert spec.obs_shape == (NUM_STATES,)
    assert spec.episode_length == 10
    assert envs.make("chain", episode_length=14).spec.episode_length == 14


def test_reset_starts_in_s5():
    env = envs.make("chain")
    state = env.reset(jax.random.PRNGKey(3))
    np.testing.assert_array_equal(state.obs, np.eye(NUM_STATES)[START])


def test_left_path_pays_one_per_step_and_ends_in_s0():
    steps = _run([LEFT] * 5)
    positions = [s[0] for s in steps]
    assert positions == [4, 3, 2, 1, 0]
    assert [s[1] for s in steps] == [1.0] * 5
    assert [s[2] for s in steps] == [0.0] * 4 + [1.0]
    assert steps[-1][3] == 0.0  # termination, not truncation
    assert steps[-1][4] == START  # auto-reset to s5


def test_right_path_reaches_goal_with_its_reward():
    steps = _run([RIGHT] * 5, key=1)
    assert [s[0] for s in steps] == [6, 7, 8, 9, GOAL]
    assert steps[-1][1] == pytest.approx(10.0 - 0.01 * 5)
    assert steps[-1][2] == 1.0 and steps[-1][3] == 0.0
    # The goal reward counts the steps taken: a detour costs 0.01 per step.
    detour = _run([RIGHT, LEFT, RIGHT, RIGHT, RIGHT, RIGHT, RIGHT], key=2)
    assert detour[-1][0] == GOAL
    assert detour[-1][1] == pytest.approx(10.0 - 0.01 * 7)


def test_step_limit_terminates_by_default():
    steps = _run([LEFT, RIGHT] * 5)
    assert [s[2] for s in steps] == [0.0] * 9 + [1.0]
    assert steps[-1][3] == 0.0  # part of the task: termination, no bootstrap
    assert steps[-1][0] == START
    steps = _run([LEFT, RIGHT] * 5, step_limit_truncates=True)
    assert [s[2] for s in steps] == [0.0] * 9 + [1.0]
    assert steps[-1][3] == 1.0  # the usual time limit: truncation


def test_right_reward_is_normal_mean_half_std_one():
    env = VmapWrapper(envs.make("chain"), 20000)
    state = env.reset(jax.random.PRNGKey(0))
    nxt = jax.jit(env.step)(state, jnp.full((20000,), RIGHT, jnp.int32))
    r = np.asarray(nxt.reward)
    assert abs(r.mean() - 0.5) < 0.03
    assert abs(r.std() - 1.0) < 0.03
    assert len(np.unique(r)) > 19000  # noisy, one draw per env


def _policy_return(action, n=4000, key=0):
    env = VmapWrapper(envs.make("chain"), n)
    state = env.reset(jax.random.PRNGKey(key))
    ret, alive = np.zeros(n), np.ones(n)
    step = jax.jit(env.step)
    for t in range(10):
        a = jnp.full((n,), action(t), jnp.int32)
        state = step(state, a)
        ret += alive * np.asarray(state.reward)
        alive *= 1.0 - np.asarray(state.done)
    return ret.mean()


def test_right_going_is_best_under_the_step_limit():
    """The module docstring's arithmetic: always right ~ 4 x 0.5 + 9.95 = 11.95, always
    left = 5, and the best dithering policy (4 left, then alternate) ~ 8.5."""
    right = _policy_return(lambda t: RIGHT)
    left = _policy_return(lambda t: LEFT)
    dither = _policy_return(lambda t: LEFT if t < 4 or t % 2 == 1 else RIGHT)
    assert right == pytest.approx(11.95, abs=0.1)
    assert left == pytest.approx(5.0)
    assert dither == pytest.approx(8.5, abs=0.1)
    assert right > dither > left


def test_bad_option_fails():
    with pytest.raises(ValueError, match="right_std"):
        envs.make("chain", right_std=-1.0)
    with pytest.raises(ValueError, match=r"wind.*allowed"):
        envs.make("chain", wind=3)
