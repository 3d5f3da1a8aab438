"""The learner contract (:class:`metareward.algos.registry.Learner`), checked on every
registered algorithm: the same fields, the same state conventions, ``train`` as ``init``
plus ``num_updates`` updates, ``act`` on a train state or its ``Policy``, and float
hyperparameters that can be traced (a sweep is one program; one test per algorithm, so
that each learner is traced once).

Shapes only (``jax.eval_shape``): what each learner computes is tested in its own file.
"""

import dataclasses

import jax
import jax.numpy as jnp
import pytest
import tiny

from metareward.algos import algorithm_names, get_algorithm
from metareward.algos.policy import policy_of
from metareward.envs.spec import EnvSpec

FIELDS = ("config", "env", "num_updates", "init", "update", "train", "act", "evaluate")
STATE_FIELDS = ("params", "key", "update_step", "env_steps", "nonfinite")
KEY = jax.random.PRNGKey(0)


def shapes(tree):
    return jax.tree.map(lambda x: (x.shape, x.dtype), tree)


def test_every_registered_algorithm_has_a_tiny_case():
    assert set(tiny.CASES) == set(algorithm_names())


@pytest.mark.parametrize("name", sorted(tiny.CASES))
def test_learner_contract(name):
    config, env = tiny.config_and_env(name)
    learner = get_algorithm(name).make_train(config, env)
    missing = [f for f in FIELDS if not hasattr(learner, f)]
    assert not missing, f"{name} lacks {missing}"
    assert learner.config is config
    assert isinstance(learner.env.spec, EnvSpec)
    assert isinstance(learner.num_updates, int) and learner.num_updates >= 1

    state = jax.eval_shape(learner.init, KEY)
    missing = [f for f in STATE_FIELDS if not hasattr(state, f)]
    assert not missing, f"{name}'s state lacks {missing}"
    assert isinstance(state.params, dict)
    for f in ("update_step", "env_steps", "nonfinite"):
        assert getattr(state, f).shape == () and getattr(state, f).dtype == jnp.int32, f

    after, metrics = jax.eval_shape(learner.update, state)
    assert shapes(after) == shapes(state)
    assert metrics["env_steps"].shape == ()

    final, stacked = jax.eval_shape(learner.train, KEY)
    assert shapes(final) == shapes(state)
    assert stacked["env_steps"].shape == (learner.num_updates,)

    # Hyperparameters as data: every float field at once as a JAX value, make_train
    # builds and train traces (validation skips tracers; nothing converts them).
    floats = {f.name: jnp.float32(getattr(config, f.name)) for f in dataclasses.fields(config)
              if type(getattr(config, f.name)) is float}
    assert floats, name
    make_train = get_algorithm(name).make_train
    traced = jax.eval_shape(
        lambda values, key: make_train(dataclasses.replace(config, **values), env).train(key),
        floats, KEY)
    assert shapes(traced) == shapes((final, stacked))

    # act: on the state that acts (EPG: an inner agent) and on its Policy alike
    agent = jax.eval_shape(getattr(learner, "policy_init", None) or learner.init, KEY)
    spec = learner.env.spec
    obs = jnp.zeros((3, *spec.obs_shape), jnp.float32)
    expected = (3,) if spec.discrete else (3, spec.action_size)
    for det in (False, True):
        a = jax.eval_shape(lambda s, d=det: learner.act(s, obs, KEY, d), agent)
        b = jax.eval_shape(lambda s, d=det: learner.act(policy_of(s), obs, KEY, d), agent)
        assert a.shape == expected and shapes(a) == shapes(b)

    returns = jax.eval_shape(lambda s: learner.evaluate(s, KEY, 2, True), state)
    assert returns.shape == (2,)


