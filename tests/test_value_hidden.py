"""``value_hidden``: a value network of its own width (brax PPO's default is a 5 x 256
value net against a 4 x 32 policy), and PPO without a gradient clip
(``max_grad_norm=None``, brax's default and the PPO paper's)."""

import dataclasses

import jax
import numpy as np
import pytest
import tiny

from metareward.algos import ConfigError, awr, ppo

#: every learner whose config has ``hidden`` and a learned value function
LEARNERS = ["ppo", "a2c", "reinforce", "awr", "lirpg", "lirpg-a2c", "cln", "tare", "tare-awr"]


def _kernel_shapes(learner) -> list[tuple[int, ...]]:
    state = jax.eval_shape(learner.init, jax.random.PRNGKey(0))
    return [tuple(x.shape[-2:]) for x in jax.tree.leaves(state) if x.ndim >= 2]


@pytest.mark.parametrize("name", LEARNERS)
def test_value_net_gets_its_own_hidden_sizes(name):
    config, _ = tiny.config_and_env(name)
    assert config.value_hidden is None and config.value_layers == config.hidden
    shapes = _kernel_shapes(tiny.build(name, value_hidden=(7, 5)))
    assert (7, 5) in shapes, shapes
    assert any(s[-1] == 7 for s in shapes)
    assert (5, 1) in shapes or (5, 2) in shapes  # the value head (CLN's has two)
    # the policy keeps ``hidden``: its last hidden layer still feeds the action head
    h = config.hidden
    assert any(s[0] == h[-1] for s in shapes), (h, shapes)
    assert (7, 5) not in _kernel_shapes(tiny.build(name))


@pytest.mark.parametrize("value", [(0, 4), (4.5,), "wide", (True,)])
def test_bad_value_hidden_fails_naming_it(value):
    with pytest.raises(ConfigError, match="value_hidden"):
        ppo.Config(value_hidden=value)
    with pytest.raises(ConfigError, match="value_hidden"):
        awr.Config(value_hidden=value)


def test_value_hidden_list_is_stored_as_a_tuple():
    assert ppo.Config(value_hidden=[256, 256]).value_hidden == (256, 256)
    assert awr.Config(value_hidden=[32]).value_layers == (32,)


def _one_update(**changes):
    learner = tiny.build("ppo", **changes)
    state, _ = jax.jit(learner.update)(learner.init(jax.random.PRNGKey(3)))
    return jax.tree.leaves(state.params)


def test_ppo_without_a_gradient_clip():
    # with a large learning rate the gradients are far above 0.5: the default clip bites,
    # None does not, and a clip no gradient reaches gives None's parameters exactly
    unclipped = _one_update(max_grad_norm=None, learning_rate=0.1)
    huge = _one_update(max_grad_norm=1e30, learning_rate=0.1)
    clipped = _one_update(learning_rate=0.1)
    for a, b in zip(unclipped, huge, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, b) for a, b in zip(unclipped, clipped, strict=True))


def test_learners_that_need_a_clip_still_refuse_none():
    from metareward.algos import cln, lirpg

    for module in (lirpg, cln):
        with pytest.raises(ConfigError, match="max_grad_norm"):
            dataclasses.replace(module.Config(), max_grad_norm=None)
