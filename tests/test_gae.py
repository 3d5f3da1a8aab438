"""GAE and returns against plain numpy loops."""

import jax.numpy as jnp
import numpy as np
import pytest

from metareward.rl import discounted_returns, gae


def gae_numpy(rewards, values, next_values, dones, truncs, gamma, lam):
    """Reference: one env at a time, a plain backward loop."""
    T, N = rewards.shape
    adv = np.zeros((T, N))
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            terminal = dones[t, n] and not truncs[t, n]
            bootstrap = 0.0 if terminal else next_values[t, n]
            delta = rewards[t, n] + gamma * bootstrap - values[t, n]
            if dones[t, n]:
                running = delta  # the next step belongs to another episode
            else:
                running = delta + gamma * lam * running
            adv[t, n] = running
    return adv, adv + values


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 1.0), (0.5, 0.0)])
def test_gae_matches_numpy_loop(gamma, lam):
    rng = np.random.default_rng(0)
    T, N = 13, 4
    rewards = rng.normal(size=(T, N))
    values = rng.normal(size=(T, N))
    next_values = rng.normal(size=(T, N))
    dones = np.zeros((T, N), bool)
    truncs = np.zeros((T, N), bool)
    dones[3, 0] = True  # termination mid-batch
    dones[7, 0] = truncs[7, 0] = True  # truncation mid-batch, same env
    dones[5, 1] = truncs[5, 1] = True
    dones[T - 1, 2] = True  # termination on the last step
    dones[T - 1, 3] = truncs[T - 1, 3] = True  # truncation on the last step
    args = [rewards, values, next_values, dones, truncs]
    adv, tgt = gae(*[jnp.asarray(a, jnp.float32) for a in args], gamma, lam)
    ref_adv, ref_tgt = gae_numpy(*args, gamma, lam)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tgt, ref_tgt, rtol=1e-5, atol=1e-5)
    # Truncation bootstraps, termination does not: the two differ by gamma * V(s').
    assert not np.isclose(adv[3, 0], ref_adv[3, 0] + gamma * next_values[3, 0])


def test_gae_truncation_bootstraps_termination_does_not():
    # One step, V = 0 except next value 10.
    z = jnp.zeros((1, 1))
    one = jnp.ones((1, 1))
    adv_trunc, _ = gae(one, z, 10 * one, one, one, 0.9, 0.95)
    adv_term, _ = gae(one, z, 10 * one, one, z, 0.9, 0.95)
    np.testing.assert_allclose(adv_trunc, [[1.0 + 0.9 * 10]], rtol=1e-6)
    np.testing.assert_allclose(adv_term, [[1.0]], rtol=1e-6)


def test_discounted_returns_numpy():
    rng = np.random.default_rng(1)
    r = rng.normal(size=(9, 3))
    d = rng.random((9, 3)) < 0.2
    boot = rng.normal(size=3)
    out = discounted_returns(jnp.asarray(r), jnp.asarray(d), 0.97, jnp.asarray(boot))
    ref = np.zeros_like(r)
    g = boot.copy()
    for t in reversed(range(9)):
        g = r[t] + 0.97 * (1 - d[t]) * g
        ref[t] = g
    np.testing.assert_allclose(out, ref, rtol=1e-5)


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 1.0), (0.5, 0.0)])
def test_discounted_cumsum_of_td_errors_is_the_numpy_gae(gamma, lam):
    """GAE as a parallel scan of the TD errors equals the loop's advantages, with
    terminations and truncations mid-batch, a one-step episode, and a long batch."""
    from metareward.rl import discounted_cumsum, td_errors

    rng = np.random.default_rng(1)
    for T, N in ((11, 3), (300, 2)):
        rewards, values, next_values = (rng.normal(size=(T, N)) for _ in range(3))
        dones = np.zeros((T, N), bool)
        truncs = np.zeros((T, N), bool)
        dones[2, 0] = dones[3, 0] = True  # a one-step episode in between
        dones[6, 1] = truncs[6, 1] = True
        dones[T - 1, 2 % N] = True
        ref_adv, _ = gae_numpy(rewards, values, next_values, dones, truncs, gamma, lam)
        f32 = [jnp.asarray(a, jnp.float32) for a in (rewards, values, next_values)]
        delta = td_errors(*f32, jnp.asarray(dones), jnp.asarray(truncs), gamma)
        disc = gamma * lam * (1.0 - jnp.asarray(dones, jnp.float32))
        adv = discounted_cumsum(delta, disc)
        np.testing.assert_allclose(adv, ref_adv, rtol=1e-4, atol=1e-4)
        # The sequential scan gives the same numbers.
        np.testing.assert_allclose(adv, gae(*f32, jnp.asarray(dones), jnp.asarray(truncs),
                                            gamma, lam)[0], rtol=1e-4, atol=1e-4)
