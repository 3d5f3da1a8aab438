"""The small shared pieces of collecting experience: the stochastic policy's ``act``
(:func:`metareward.rl.rollout.sampler`), the example inputs nets are initialised with
(:func:`metareward.algos.common.example_inputs`), the example replay row buffers are sized
with (:meth:`metareward.rl.replay.Row.example`) and the run length
(:func:`metareward.algos.common.run_length`)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareward.algos.common import example_inputs, run_length
from metareward.algos.ppo import Config
from metareward.envs.spec import EnvSpec
from metareward.nets.distributions import DiagGaussian, TanhGaussian
from metareward.rl import replay
from metareward.rl.rollout import sampler


def test_sampler_returns_the_sample_its_env_action_and_log_prob():
    """A tanh-squashed Gaussian: the raw sample is ``mean + std * eps`` with the key's
    normal draw, the env action its tanh, the log-prob the Gaussian's minus the tanh's
    log-Jacobian, all computed here in numpy."""
    mean = np.array([[0.3, -1.2], [0.0, 0.5]], np.float32)
    log_std = np.array([-0.5, 0.2], np.float32)
    obs = jnp.arange(4.0).reshape(2, 2)
    key = jax.random.PRNGKey(3)
    seen = []

    def dist_fn(o):
        seen.append(o)
        return TanhGaussian(jnp.asarray(mean), jnp.asarray(log_std))

    raw, env_action, log_prob = sampler(dist_fn)(obs, key)
    assert seen[0] is obs
    eps = np.asarray(jax.random.normal(key, mean.shape, jnp.float32))
    expect_raw = mean + np.exp(log_std) * eps
    np.testing.assert_allclose(raw, expect_raw, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(env_action, np.tanh(expect_raw), rtol=1e-6, atol=1e-6)
    z = (expect_raw - mean) / np.exp(log_std)
    gauss = np.sum(-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi), axis=-1)
    np.testing.assert_allclose(log_prob, gauss - np.sum(np.log(1 - np.tanh(expect_raw) ** 2),
                                                         axis=-1), rtol=1e-4, atol=1e-4)


def test_sampler_of_an_unsquashed_gaussian_acts_with_its_sample():
    dist = DiagGaussian(jnp.zeros((3, 1)), jnp.zeros((1,)))
    raw, env_action, log_prob = sampler(lambda o: dist)(jnp.zeros((3, 4)), jax.random.PRNGKey(0))
    np.testing.assert_array_equal(raw, env_action)
    np.testing.assert_allclose(log_prob, -0.5 * np.asarray(raw)[:, 0] ** 2
                               - 0.5 * math.log(2 * math.pi), rtol=1e-6)


@pytest.mark.parametrize(
    ("spec", "action_shape", "action_dtype"),
    [
        (EnvSpec("d", (10, 10, 4), discrete=True, action_size=6), (1,), jnp.int32),
        (EnvSpec("c", (3,), discrete=False, action_size=2), (1, 2), jnp.float32),
    ],
)
def test_example_inputs(spec, action_shape, action_dtype):
    obs, action = example_inputs(spec)
    assert obs.shape == (1, spec.obs_size) and obs.dtype == jnp.float32
    assert action.shape == action_shape and action.dtype == action_dtype
    assert not np.any(np.asarray(obs)) and not np.any(np.asarray(action))


@pytest.mark.parametrize("with_time", [False, True])
def test_example_row_sizes_a_buffer(with_time):
    discrete = EnvSpec("d", (10, 10, 4), discrete=True, action_size=6)
    continuous = EnvSpec("c", (3,), discrete=False, action_size=2)
    for spec, action in ((discrete, ((5, 7), jnp.int32)), (continuous, ((5, 7, 2), jnp.float32))):
        buf = replay.init(replay.Row.example(spec, 7, with_time=with_time), num_rows=5)
        d = buf.data
        assert (d.obs.shape, d.obs.dtype) == ((5, 7, spec.obs_size), jnp.float32)
        assert d.next_obs.shape == d.obs.shape
        assert (d.action.shape, d.action.dtype) == action
        for leaf in (d.reward, d.done, d.truncation):
            assert (leaf.shape, leaf.dtype) == ((5, 7), jnp.float32)
        assert (d.time is not None) == with_time
        assert int(buf.size) == 0


def test_run_length():
    assert run_length(Config(num_envs=4, num_steps=8, total_steps=100)) == (32, 3)
    with pytest.raises(ValueError, match=r"total_steps=31 is less than one rollout "
                                         r"\(num_envs \* num_steps = 32\)"):
        run_length(Config(num_envs=4, num_steps=8, total_steps=31))
