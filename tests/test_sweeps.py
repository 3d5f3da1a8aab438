"""Hyperparameters as data: a sweep over float hyperparameters is one jitted program.

``make_train`` called on a config whose float fields are JAX values (tracers inside
``vmap``) builds the same learner as with Python floats, so a sweep over learning rates
and seeds vmaps ``make_train(replace(config, learning_rate=lr), env).train(key)``.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareward import envs
from metareward.algos import ConfigError, ppo, td3

SMALL = ppo.Config(num_envs=2, num_steps=16, total_steps=2 * 16 * 3, num_epochs=2,
                   num_minibatches=2, hidden=(16, 16))
RATES = (3e-4, 1e-3, 3e-3)


def test_vmapped_learning_rate_sweep_equals_separate_runs():
    """3 learning rates x 2 seeds as one program equal the 6 runs made one by one with
    Python floats (to float32 round-off: vmap batches the same operations)."""
    env = envs.make("cartpole")

    def run(lr, key):
        return ppo.make_train(dataclasses.replace(SMALL, learning_rate=lr), env).train(key)

    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    sweep = jax.jit(jax.vmap(jax.vmap(run, (None, 0)), (0, None)))
    states, metrics = sweep(jnp.asarray(RATES, jnp.float32), keys)
    assert metrics["loss"].shape == (3, 2, 3)
    for i, lr in enumerate(RATES):
        trainer = ppo.make_train(dataclasses.replace(SMALL, learning_rate=lr), env)
        single = jax.jit(trainer.train)
        for j, key in enumerate(keys):
            state, m = single(key)
            jax.tree.map(lambda a, b, i=i, j=j: np.testing.assert_allclose(
                a[i, j], b, rtol=2e-4, atol=2e-5), states.params, state.params)
            np.testing.assert_allclose(metrics["loss"][i, j], m["loss"], rtol=2e-4, atol=2e-5)
    # The rates matter: the runs differ.
    p = jax.tree.leaves(states.params)[0]
    assert not np.allclose(p[0, 0], p[2, 0])


def test_structural_branch_takes_the_general_path_when_traced():
    """TD3's target noise is skipped for a Python 0 and applied (times 0) for a traced
    0: the two give the same run."""
    env = envs.make("pendulum")
    cfg = td3.Config(total_steps=48, learning_starts=16, buffer_size=64, batch_size=8,
                     hidden=(8, 8), target_noise=0.0)
    plain = jax.jit(td3.make_train(cfg, env).train)(jax.random.PRNGKey(1))[0]
    traced = jax.jit(lambda v, k: td3.make_train(
        dataclasses.replace(cfg, target_noise=v), env).train(k))(
            jnp.float32(0.0), jax.random.PRNGKey(1))[0]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 plain.params, traced.params)


@pytest.mark.parametrize("value", [jnp.float32(-1e-3), np.float32(0.0)])
def test_concrete_array_hyperparameters_are_still_validated(value):
    with pytest.raises(ConfigError, match="learning_rate="):
        dataclasses.replace(SMALL, learning_rate=value)
    dataclasses.replace(SMALL, learning_rate=-value + 1e-3)  # a valid one passes


def test_concrete_array_hyperparameter_trains_like_its_float():
    env = envs.make("cartpole")
    a = jax.jit(ppo.make_train(SMALL, env).train)(jax.random.PRNGKey(2))[0]
    cfg = dataclasses.replace(SMALL, learning_rate=jnp.float32(SMALL.learning_rate))
    b = jax.jit(ppo.make_train(cfg, env).train)(jax.random.PRNGKey(2))[0]
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7),
                 a.params, b.params)
