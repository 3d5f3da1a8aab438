"""The random-goal point mass (``metareward.envs.pointmass``), checked against a numpy loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareward import envs


def _numpy_episode(pos, goal, actions, dt=0.1, force=2.0, damping=0.9, bound=1.5):
    """The module docstring's dynamics, step by step in numpy."""
    p, v = np.array(pos, np.float64), np.zeros(2)
    rewards = []
    for a in actions:
        v = damping * v + dt * force * np.clip(a, -1, 1)
        p = np.clip(p + dt * v, -bound, bound)
        rewards.append(-np.linalg.norm(p - goal))
    return np.array(rewards)


def test_dynamics_and_reward_match_a_numpy_loop():
    env = envs.make("pointmass", randomize=True, rescale_actions=False)
    state = env.reset(jax.random.PRNGKey(3))
    goal = np.asarray(state.info["task"]["goal"])
    actions = np.asarray(jax.random.uniform(jax.random.PRNGKey(4), (30, 2), minval=-1.5,
                                            maxval=1.5))
    expected = _numpy_episode(np.asarray(state.obs[:2]), goal, actions)

    def body(s, a):
        s = env.step(s, a)
        return s, s.reward

    _, rewards = jax.lax.scan(body, state, jnp.asarray(actions))
    np.testing.assert_allclose(np.asarray(rewards), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(state.obs[4:]), goal)  # the goal is observed


def test_the_task_survives_auto_resets_and_the_limit_truncates():
    env = envs.make("pointmass", randomize=True, episode_length=5)
    goal = {"goal": jnp.array([0.3, -0.7])}
    state = env.reset(jax.random.PRNGKey(0), task=goal)

    def body(s, _):
        s = env.step(s, jnp.ones(2))
        return s, (s.done, s.info["truncation"], s.obs[4:])

    _, (done, trunc, goals) = jax.lax.scan(body, state, None, 12)
    assert np.asarray(done).tolist() == [0, 0, 0, 0, 1] * 2 + [0, 0]
    np.testing.assert_array_equal(np.asarray(trunc), np.asarray(done))  # never terminates
    np.testing.assert_allclose(np.asarray(goals), np.tile([0.3, -0.7], (12, 1)), rtol=1e-6)


def test_random_goals_cover_the_square_and_the_plain_env_has_one_goal():
    env = envs.make("pointmass", randomize=True)
    goals = jax.vmap(env.tasks.sample)(jax.random.split(jax.random.PRNGKey(0), 2000))["goal"]
    g = np.asarray(goals)
    assert g.shape == (2000, 2) and g.min() >= -1 and g.max() <= 1
    assert abs(g.mean()) < 0.05 and abs(g.std() - 3 ** -0.5) < 0.02  # uniform on [-1, 1]
    plain = envs.make("pointmass", goal=(0.2, 0.1))
    np.testing.assert_allclose(np.asarray(plain.reset(jax.random.PRNGKey(1)).obs[4:]),
                               [0.2, 0.1], rtol=1e-6)


@pytest.mark.parametrize("options, message", [
    (dict(damping=1.5), "damping must be in [0, 1]"),
    (dict(dt=0.0), "dt must be > 0"),
    (dict(goal=(1.0, 2.0, 3.0)), "goal"),
    (dict(speed=1.0), "unknown env parameter(s) ['speed']"),
])
def test_bad_options_fail_naming_the_value(options, message):
    with pytest.raises(ValueError) as err:
        envs.make("pointmass", **options)
    assert message in str(err.value)
