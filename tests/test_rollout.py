"""The small shared pieces of collecting experience: the stochastic policy's ``act``
(:func:`metareward.rl.rollout.sampler`), the example inputs nets are initialised with
(:func:`metareward.algos.common.example_inputs`), the example replay row buffers are sized
with (:meth:`metareward.rl.replay.Row.example`), the run length
(:func:`metareward.algos.common.run_length`), and the fields a run starts with and an
update advances (:func:`metareward.algos.common.run_start`,
:func:`metareward.algos.common.advance`)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareward import envs
from metareward.algos.common import (
    actor_critic_params,
    advance,
    example_inputs,
    run_length,
    run_start,
)
from metareward.algos.ppo import Config
from metareward.envs.spec import EnvSpec
from metareward.envs.wrappers import VmapWrapper
from metareward.nets.distributions import DiagGaussian, TanhGaussian
from metareward.nets.policies import ValueNet, make_policy
from metareward.rl import replay
from metareward.rl.normalize import RunningStats
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


def test_run_start_and_advance_keep_the_contract_counters():
    env = envs.make("pendulum")
    venv = VmapWrapper(env, 3)
    k_env, key = jax.random.split(jax.random.PRNGKey(1))
    fields = run_start(env.spec, venv, k_env, key)
    fresh = RunningStats.create((env.spec.obs_size,))
    for a, b in zip(jax.tree.leaves(fields["obs_stats"]), jax.tree.leaves(fresh), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fields["env_state"].obs, venv.reset(k_env).obs)
    assert fields["key"] is key
    for name in ("update_step", "env_steps", "nonfinite"):
        assert fields[name].dtype == jnp.int32 and int(fields[name]) == 0

    class State:  # any learner state: advance only needs ``replace``
        def __init__(self, **f):
            self.__dict__.update(f)

        def replace(self, **changes):
            return State(**{**self.__dict__, **changes})

    state = State(**fields)
    nxt = advance(state, jnp.int32(96), nonfinite=jnp.int32(2))
    assert (int(nxt.update_step), int(nxt.env_steps), int(nxt.nonfinite)) == (1, 96, 2)
    assert int(advance(nxt, jnp.int32(192)).update_step) == 2
    assert nxt.obs_stats is fields["obs_stats"] and int(state.update_step) == 0


@pytest.mark.parametrize("discrete", [False, True])
def test_actor_critic_params_are_each_nets_init_on_a_zero_observation(discrete):
    spec = EnvSpec("c", (3,), discrete=discrete, action_size=2)
    policy, value = make_policy(discrete, 2, hidden=(4,)), ValueNet(hidden=(4,))
    k_pi, k_v = jax.random.split(jax.random.PRNGKey(2))
    params = actor_critic_params(policy, value, spec, k_pi, k_v)
    obs = jnp.zeros((1, 3), jnp.float32)
    expected = {"policy": policy.init(k_pi, obs), "value": value.init(k_v, obs)}
    assert jax.tree.structure(params) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(a, b)


def test_running_stats_update_until_freezes_at_the_limit():
    """``update_until``: batches that start below ``limit`` fold in (mean and variance as
    numpy's over them, up to the tiny prior), later ones leave the statistics as they
    are; ``limit=None`` folds in every batch."""
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(5, 8, 3)).astype(np.float32)
    for limit, kept in ((None, 5), (16, 2), (17, 3), (1, 1)):
        stats = RunningStats.create((3,))
        for i, batch in enumerate(x):
            stats = stats.update_until(jnp.asarray(batch), jnp.int32(8 * i), limit)
        seen = x[:kept].reshape(-1, 3)
        np.testing.assert_allclose(float(stats.count), 8 * kept + 1e-4, rtol=1e-6)
        np.testing.assert_allclose(stats.mean, seen.mean(0), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(stats.var, seen.var(0), rtol=1e-3, atol=1e-3)
