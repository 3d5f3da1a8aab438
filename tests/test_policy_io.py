"""Policies outside training: one seed of a seed-batched state, and a saved policy that
a fresh process loads and acts with exactly as the train state did."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny

from metareward.algos import get_algorithm
from metareward.algos.policy import Policy, load_policy, policy_of, save_policy, take_seed

OBS_KEY, ACT_KEY = jax.random.PRNGKey(7), jax.random.PRNGKey(8)
# The module-scoped fixture is built once: every test here runs on one xdist worker.
pytestmark = pytest.mark.xdist_group("policy_io")
NAMES = ("ppo", "td3", "epg", "metagenrl")  # obs stats; none; an inner agent; multi-env


def trained(name):
    """``(learner, one seed's acting state)``: seed 1 of 2, vmapped. PPO after its tiny
    run (so its observation statistics are not the initial ones); the others freshly
    initialised, which is as good a test of the file and cheaper to compile (EPG: a
    fresh inner agent, the state its ``act`` takes)."""
    learner = tiny.build(name)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    if name == "ppo":
        states = jax.jit(jax.vmap(learner.train))(keys)[0]
        assert float(jnp.abs(states.obs_stats.mean).max()) > 0
    else:
        states = jax.jit(jax.vmap(getattr(learner, "policy_init", None) or learner.init))(keys)
    return learner, take_seed(states, 1)


def observations(learner):
    spec = learner.env.spec
    return jax.random.normal(OBS_KEY, (5, *spec.obs_shape))


def actions(learner, state):
    """Stochastic and deterministic actions (run op by op: nothing to compile, and the
    same in the fresh process)."""
    obs = observations(learner)
    return np.stack([np.asarray(learner.act(state, obs, ACT_KEY, d)) for d in (False, True)])


@pytest.fixture(scope="session")  # once, even if xdist interleaves other modules
def saved(tmp_path_factory):
    """Each learner's policy saved, with the actions the state gave."""
    out = tmp_path_factory.mktemp("policies")
    expected, made = {}, {}
    for name in NAMES:
        learner, state = made[name] = trained(name)
        save_policy(out / f"{name}.msgpack", learner, state)
        expected[name] = actions(learner, state)
    return out, expected, made


def test_take_seed_takes_one_seed():
    learner = tiny.build("ppo")
    states = jax.vmap(learner.init)(jax.random.split(jax.random.PRNGKey(0), 3))
    one = take_seed(states, 2)
    ref = learner.init(jax.random.split(jax.random.PRNGKey(0), 3)[2])
    jax.tree.map(np.testing.assert_array_equal, one, ref)
    jax.tree.map(np.testing.assert_array_equal, take_seed(states, -1), one)
    with pytest.raises(IndexError, match=r"seed index 3 is out of range; allowed: -3 \.\.\. 2"):
        take_seed(states, 3)
    with pytest.raises(ValueError, match="not a seed-batched state"):
        take_seed(ref, 0)


def test_policy_acts_as_the_state(saved):
    for learner, state in saved[2].values():
        np.testing.assert_array_equal(actions(learner, state), actions(learner, policy_of(state)))


def test_saved_policy_acts_identically_in_a_fresh_process(saved, tmp_path):
    out, expected, _ = saved
    script = textwrap.dedent(f"""
        import sys, jax, numpy as np
        sys.path.insert(0, {str(tiny.__file__.rsplit('/', 1)[0])!r})
        from test_policy_io import NAMES, OBS_KEY, ACT_KEY
        from metareward.algos.policy import load_policy
        got = {{}}
        for name in NAMES:
            p = load_policy({str(out)!r} + f"/{{name}}.msgpack")
            assert p.algorithm == name, p.algorithm
            obs = jax.random.normal(OBS_KEY, (5, *p.learner.env.spec.obs_shape))
            got[name] = np.stack([np.asarray(p.act(obs, ACT_KEY, d)) for d in (False, True)])
        np.savez({str(tmp_path / "got.npz")!r}, **got)
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    got = np.load(tmp_path / "got.npz")
    for name in NAMES:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_loaded_policy_evaluates(saved):
    out = saved[0]
    p = load_policy(out / "ppo.msgpack")
    returns = p.evaluate(jax.random.PRNGKey(0), 2, deterministic=True)
    assert returns.shape == (2,) and np.all(np.isfinite(returns))


def test_save_and_load_errors(saved, tmp_path):
    learner = tiny.build("ppo")
    states = jax.vmap(learner.init)(jax.random.split(jax.random.PRNGKey(0), 2))
    with pytest.raises(ValueError, match="seed-batched state\\? take one seed with take_seed"):
        save_policy(tmp_path / "p.msgpack", learner, states)
    assert not (tmp_path / "p.msgpack").exists()
    with pytest.raises(TypeError, match="train state with params"):
        save_policy(tmp_path / "p.msgpack", learner, {"policy": 1})
    (tmp_path / "junk.msgpack").write_bytes(b"not a policy")
    with pytest.raises(ValueError, match=r"junk\.msgpack.*not a metareward policy file"):
        load_policy(tmp_path / "junk.msgpack")
    with pytest.raises(OSError, match=r"cannot read policy file .*missing\.msgpack"):
        load_policy(tmp_path / "missing.msgpack")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match=r"cannot write policy file .*file/p\.msgpack"):
        save_policy(blocker / "p.msgpack", learner, take_seed(states, 0))
    assert isinstance(policy_of(take_seed(states, 0)), Policy)
    assert get_algorithm("ppo").config is type(learner.config)


@pytest.mark.parametrize("name", ["ppo", "td3", "metagenrl"])
def test_evaluate_on_a_seed_batched_state_says_what_to_do(name):
    learner = tiny.build(name)
    states = jax.eval_shape(jax.vmap(learner.init), jax.random.split(jax.random.PRNGKey(0), 3))
    with pytest.raises(ValueError, match=r"batched over 3 seeds: take one with .*take_seed"):
        learner.evaluate(states, jax.random.PRNGKey(0), 2)
