"""PPO and A2C: config validation, vmap over seeds, non-finite detection, learning."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.envs.base import Wrapper

from metareward import envs
from metareward.algos import ConfigError, a2c, check_finite, ppo
from metareward.algos.config import replace

SMALL = ppo.Config(
    num_envs=2, num_steps=16, total_steps=2 * 16 * 3, num_epochs=2, num_minibatches=2
)


@pytest.mark.parametrize(
    "field,value",
    [
        ("gamma", 1.5),
        ("num_envs", 0),
        ("learning_rate", -1.0),
        ("clip_eps", 0.0),
        ("hidden", (64, -1)),
        ("activation", "sigmoid"),
        ("num_steps", 2.5),
    ],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"{field}="):
        dataclasses.replace(ppo.Config(), **{field: value})


def test_invalid_a2c_config():
    with pytest.raises(ConfigError, match="rms_decay="):
        a2c.Config(rms_decay=0.0)


def test_unknown_field_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown config field.*'lr'.*learning_rate"):
        replace(ppo.Config(), lr=1e-3)


def test_env_config_mismatch_fails_before_compilation():
    env = envs.make("cartpole")
    with pytest.raises(ValueError, match="divisible by num_minibatches = 3"):
        ppo.make_train(dataclasses.replace(SMALL, num_minibatches=3), env)
    with pytest.raises(ValueError, match="less than one rollout"):
        ppo.make_train(dataclasses.replace(SMALL, total_steps=8), env)
    with pytest.raises(ValueError, match="squash=True needs continuous"):
        ppo.make_train(dataclasses.replace(SMALL, squash=True), env)
    with pytest.raises(TypeError, match="single env"):
        ppo.make_train(SMALL, envs.VmapWrapper(env, 2))
    with pytest.raises(TypeError, match=r"ppo\.Config"):
        ppo.make_train(a2c.Config(), env)


@pytest.mark.parametrize("name,squash", [("cartpole", False), ("pendulum", True)])
def test_vmap_over_seeds_equals_separate_runs(name, squash):
    cfg = dataclasses.replace(SMALL, squash=squash)
    trainer = ppo.make_train(cfg, envs.make(name))
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    vstate, vmetrics = jax.jit(jax.vmap(trainer.train))(keys)
    single = jax.jit(trainer.train)
    for i, k in enumerate(keys):
        state, metrics = single(k)
        jax.tree.map(
            lambda a, b, i=i: np.testing.assert_allclose(a[i], b, rtol=2e-4, atol=2e-5),
            vstate.params,
            state.params,
        )
        np.testing.assert_allclose(vmetrics["loss"][i], metrics["loss"], rtol=2e-4, atol=2e-5)
        assert int(state.env_steps) == cfg.total_steps
    # Different seeds give different runs.
    p = jax.tree.leaves(vstate.params)[0]
    assert not np.allclose(p[0], p[1])


def test_update_metrics_and_state():
    trainer = ppo.make_train(SMALL, envs.make("cartpole"))
    state = trainer.init(jax.random.PRNGKey(0))
    state, m = jax.jit(trainer.update)(state)
    assert int(state.update_step) == 1 and int(state.env_steps) == 32
    for k in (
        "loss",
        "policy_loss",
        "value_loss",
        "entropy",
        "approx_kl",
        "clip_frac",
        "grad_norm",
        "episode_return",
        "episodes",
        "env_steps",
        "nonfinite",
    ):
        assert k in m, k
    assert float(m["entropy"]) == pytest.approx(np.log(2), rel=0.05)  # near-uniform init


class NaNReward(Wrapper):
    def step(self, state, action):
        s = self.env.step(state, action)
        return s.replace(reward=s.reward * jnp.nan)


def test_nonfinite_loss_is_detected_and_skipped():
    env = envs.make("cartpole")
    trainer = ppo.make_train(SMALL, NaNReward(env))
    state, metrics = jax.jit(trainer.train)(jax.random.PRNGKey(0))
    assert int(state.nonfinite) == SMALL.num_epochs * SMALL.num_minibatches * 3
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
    with pytest.raises(FloatingPointError, match="update 0"):
        check_finite(metrics)
    # A healthy run passes the check.
    _, ok = jax.jit(ppo.make_train(SMALL, env).train)(jax.random.PRNGKey(0))
    check_finite(ok)


def _learn(module, cfg, name, seeds=4):
    trainer = module.make_train(cfg, envs.make(name))
    keys = jax.random.split(jax.random.PRNGKey(42), seeds)
    state, metrics = jax.jit(jax.vmap(trainer.train))(keys)
    check_finite(metrics)
    ev = jax.jit(jax.vmap(lambda s, k: trainer.evaluate(s, k, 32)))(
        state, jax.random.split(jax.random.PRNGKey(7), seeds)
    )
    return np.asarray(ev).mean(axis=1)  # mean return per seed, stochastic policy


@pytest.mark.slow
@pytest.mark.learning
def test_ppo_learns_cartpole():
    cfg = ppo.preset("cartpole")
    assert cfg.total_steps <= 500_000
    per_seed = _learn(ppo, cfg, "cartpole")
    assert per_seed.mean() >= 475, per_seed


@pytest.mark.slow
@pytest.mark.learning
def test_ppo_learns_pendulum():
    cfg = ppo.preset("pendulum")
    assert cfg.total_steps <= 1_000_000
    per_seed = _learn(ppo, cfg, "pendulum")
    assert per_seed.mean() >= -300, per_seed


@pytest.mark.slow
@pytest.mark.learning
def test_a2c_learns_cartpole():
    cfg = a2c.preset("cartpole")
    assert cfg.total_steps <= 500_000
    per_seed = _learn(a2c, cfg, "cartpole")
    assert per_seed.mean() >= 200, per_seed


@pytest.mark.parametrize(
    "module,cfg,name",
    [
        (ppo, SMALL, "breakout-minatar"),  # image observations, flattened
        (a2c, a2c.Config(num_envs=4, num_steps=5, total_steps=60), "pendulum"),  # continuous
    ],
)
def test_other_observation_and_action_spaces(module, cfg, name):
    trainer = module.make_train(cfg, envs.make(name))
    state, metrics = jax.jit(trainer.train)(jax.random.PRNGKey(0))
    check_finite(metrics)
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    assert int(state.env_steps) == trainer.num_updates * cfg.num_envs * cfg.num_steps
    ret = jax.jit(lambda s, k: trainer.evaluate(s, k, 2))(state, jax.random.PRNGKey(1))
    assert ret.shape == (2,) and np.isfinite(np.asarray(ret)).all()
