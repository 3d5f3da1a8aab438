"""EPG on its own task distributions (brax, MJX): one ES epoch on random Hopper end to end.

Random Hopper (``epg_evolved_policy_gradients.md``, section 4; the physics of EPG's code,
``metareward.envs.brax_tasks.HOPPER``) with EPG's termination, ``|torso angle| < 0.5``.
brax compiles slowly on a CPU, so the population, the inner loop and the episodes are tiny:
the test checks the plumbing (the env's tasks reach the members, the fitness is finite,
the outer step moves the loss), not learning."""

import jax
import numpy as np
import pytest

from metareward import envs
from metareward.algos import epg
from metareward.envs.brax_tasks import EPG_HEALTHY_ANGLE

#: 4 members (2 antithetic pairs), 3 updates of 16 steps, a 32-step buffer (the paper's
#: loss sizes need >= 29), 1 evaluation episode of 24 steps; alpha = 0 from the first
#: epoch, so the loss alone trains the agents and the antithetic pairs differ.
HOPPER_TINY = epg.Config(
    num_epochs=2,
    pop_size=4,
    steps_per_update=16,
    inner_updates=3,
    buffer_size=32,
    eval_episodes=1,
    anneal_epochs=0,
    outer_decay_epochs=2,
)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Brax System")
def test_one_es_epoch_on_random_hopper():
    """One ES epoch on random Hopper: finite fitness for every member, a non-zero ES
    direction (the members' fitness differ), a new loss parameter vector, and EPG's 0.5
    termination in the env the trainer runs."""
    env = envs.make("hopper", randomize=True, episode_length=24)
    assert tuple(env.unwrapped._healthy_angle_range) == (-EPG_HEALTHY_ANGLE, EPG_HEALTHY_ANGLE)
    cfg = HOPPER_TINY
    tr = epg.make_train(cfg, env)
    assert tuple(tr.env.unwrapped._healthy_angle_range) == (-0.5, 0.5)
    assert tr.spec.obs_shape == (11,) and tr.spec.action_size == 3
    s0 = tr.init(jax.random.PRNGKey(0))
    s1, m = jax.jit(tr.update)(s0)
    m = jax.device_get(m)
    assert int(s1.update_step) == 1 and int(m["nonfinite"]) == 0
    assert int(m["inner_nonfinite_members"]) == 0
    assert np.isfinite(m["fitness_mean"]) and np.isfinite(m["fitness_max"])
    assert np.isfinite(m["episode_return"]) and float(m["alpha"]) == 0.0
    assert int(m["env_steps"]) == epg.env_steps_per_epoch(cfg, 24) == 4 * (3 * 16 + 24)
    assert float(m["es_grad_norm"]) > 0.0
    flat = lambda p: np.concatenate([np.ravel(x) for x in jax.tree.leaves(p)])
    p0, p1 = flat(s0.params["loss"]), flat(s1.params["loss"])
    assert np.isfinite(p1).all() and np.abs(p1 - p0).max() > 1e-4
    # Adam's first step is ~lr per coordinate: most coordinates move by about 1e-2
    assert np.median(np.abs(p1 - p0)) > 5e-3
