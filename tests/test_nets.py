"""Networks and distributions: closed-form densities, initial scales, shapes."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareward.nets import (
    Categorical,
    DiagGaussian,
    TanhGaussian,
    ValueNet,
    make_policy,
)
from metareward.rl import RunningStats


def test_diag_gaussian_log_prob_and_entropy_closed_form():
    mean, log_std = jnp.array([0.5, -1.0]), jnp.array([0.0, math.log(2.0)])
    x = jnp.array([1.0, 1.0])
    d = DiagGaussian(mean, log_std)
    ref = sum(
        -0.5 * ((xi - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
        for xi, m, s in [(1.0, 0.5, 1.0), (1.0, -1.0, 2.0)]
    )
    assert float(d.log_prob(x)) == pytest.approx(ref, rel=1e-6)
    ent = sum(0.5 * math.log(2 * math.pi * math.e * s**2) for s in (1.0, 2.0))
    assert float(d.entropy()) == pytest.approx(ent, rel=1e-6)


def test_tanh_gaussian_is_a_change_of_variables():
    # Density of y = tanh(u) integrates to 1 over (-1, 1) (numerical quadrature, 1-d).
    d = TanhGaussian(jnp.array([0.3]), jnp.array([-0.5]))
    u = jnp.linspace(-6, 6, 200001)[:, None]
    y = np.tanh(np.asarray(u[:, 0]))
    p_y = np.exp(np.asarray(d.log_prob(u)))
    assert np.trapezoid(p_y, y) == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(d.to_env(jnp.array([0.2])), np.tanh(0.2), rtol=1e-6)
    # Stable for large |u|: no inf/nan.
    assert np.isfinite(np.asarray(d.log_prob(jnp.array([[30.0]])))).all()


def test_categorical():
    logits = jnp.log(jnp.array([0.2, 0.3, 0.5]))
    d = Categorical(logits)
    assert float(d.log_prob(jnp.array(2))) == pytest.approx(math.log(0.5), rel=1e-6)
    ent = -sum(p * math.log(p) for p in (0.2, 0.3, 0.5))
    assert float(d.entropy()) == pytest.approx(ent, rel=1e-6)
    samples = jax.vmap(d.sample)(jax.random.split(jax.random.PRNGKey(0), 20000))
    freq = np.bincount(np.asarray(samples), minlength=3) / 20000
    np.testing.assert_allclose(freq, [0.2, 0.3, 0.5], atol=0.015)


@pytest.mark.parametrize("discrete,squash", [(True, False), (False, False), (False, True)])
def test_policy_shapes_and_initial_scale(discrete, squash):
    pi = make_policy(discrete, 3, (64, 64), "tanh", squash)
    obs = jax.random.normal(jax.random.PRNGKey(0), (5, 7))
    params = pi.init(jax.random.PRNGKey(1), obs)
    dist = pi.apply(params, obs)
    if discrete:
        chex.assert_shape(dist.logits, (5, 3))
        assert np.abs(np.asarray(dist.logits)).max() < 0.1  # head gain 0.01
    else:
        chex.assert_shape(dist.mean, (5, 3))
        chex.assert_shape(dist.log_std, (5, 3))
        assert np.abs(np.asarray(dist.mean)).max() < 0.1
        np.testing.assert_array_equal(dist.log_std, 0.0)
    chex.assert_shape(dist.log_prob(dist.sample(jax.random.PRNGKey(2))), (5,))
    hidden = params["params"]["MLP_0"]["Dense_0"]["kernel"]
    # Orthogonal with gain sqrt(2): the kernel is 7 x 64, so its 7 rows are orthogonal
    # with norm sqrt(2).
    np.testing.assert_allclose(np.linalg.norm(hidden, axis=1), math.sqrt(2), rtol=1e-4)


def test_value_net_shape_and_head_gain():
    v = ValueNet((16,))
    params = v.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    out = v.apply(params, jnp.ones((2, 3, 4)))
    chex.assert_shape(out, (2, 3))
    head = params["params"]["Dense_0"]["kernel"]
    assert np.linalg.norm(head) == pytest.approx(1.0, rel=1e-4)


def test_squash_with_discrete_actions_is_refused():
    with pytest.raises(ValueError, match="squash"):
        make_policy(True, 2, squash=True)


def test_running_stats_match_numpy():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 4)) for n in (7, 50, 1, 13)]
    stats = RunningStats.create((4,))
    for b in batches:
        stats = stats.update(jnp.asarray(b, jnp.float32))
    allx = np.concatenate(batches)
    np.testing.assert_allclose(stats.mean, allx.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats.var, allx.var(0), rtol=1e-3)
    z = stats.normalize(jnp.asarray(allx, jnp.float32))
    np.testing.assert_allclose(np.asarray(z).mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(np.asarray(z).std(0), 1.0, rtol=1e-3)


@pytest.mark.parametrize("shape,gain,column_axis",
                         [((64, 64), math.sqrt(2.0), -1), ((4, 64), 1.0, -1),
                          ((64, 2), 0.01, -1), ((3, 5, 7), 1.0, 0)])
def test_orthogonal_is_flax_bit_for_bit_under_vmap(shape, gain, column_axis):
    import flax.linen as nn

    from metareward.nets import orthogonal

    keys = jax.random.split(jax.random.PRNGKey(3), 6)
    flax_init = nn.initializers.orthogonal(gain, column_axis=column_axis)
    ref = np.stack([np.asarray(flax_init(k, shape)) for k in keys])  # one at a time
    ours = orthogonal(gain, column_axis)
    np.testing.assert_array_equal(jax.jit(jax.vmap(lambda k: ours(k, shape)))(keys), ref)
    nested = jax.vmap(jax.vmap(lambda k: ours(k, shape)))(keys.reshape(2, 3, -1))
    np.testing.assert_array_equal(nested.reshape(ref.shape), ref)
    np.testing.assert_array_equal(ours(keys[4], shape), ref[4])


def test_vmapped_initialisation_finishes_under_xla_default_scheduler():
    # A batched LAPACK QR (flax's orthogonal under vmap) deadlocked XLA:CPU's default
    # scheduler on 2 cores (issue 37); metareward.nets.orthogonal draws one matrix at a
    # time. 16 seeds of PPO's policy and value nets and MetaGenRL's LSTM objective, in
    # one jitted program, 20 times, in a process without metareward's flag.
    import os
    import subprocess
    import sys

    code = (
        "import jax, jax.numpy as jnp\n"
        "from metareward import envs\n"
        "from metareward.algos import ppo\n"
        "from metareward.nets import ObjectiveLSTM\n"
        "tr = ppo.make_train(ppo.Config(num_envs=4, num_steps=8, total_steps=64,"
        " num_minibatches=2, num_epochs=1), envs.make('cartpole'))\n"
        "obj = ObjectiveLSTM()\n"
        "z, a = jnp.zeros((2, 5)), jnp.zeros((2, 5, 3))\n"
        "def init(k):\n"
        "    return tr.init(k).params, obj.init(k, z, z, z, z, a, a, z + 1)\n"
        "f = jax.jit(jax.vmap(init))\n"
        "keys = jax.random.split(jax.random.PRNGKey(0), 16)\n"
        "for _ in range(20):\n"
        "    jax.block_until_ready(f(keys))\n"
        "print('done')\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "METAREWARD_XLA_SEQUENTIAL_SCHEDULER")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("done")
