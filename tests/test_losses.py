"""PPO and A2C losses against values computed by hand on a tiny batch."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareward.rl import a2c_loss, ppo_loss

# Two samples. Sample 0: ratio e^0.5 = 1.6487 > 1.2, A = +2 -> clipped term 1.2 * 2 = 2.4.
# Sample 1: ratio e^-0.1 = 0.9048, A = -1 -> min(-0.9048, -0.9048 (no clip)) = -0.9048.
LOGP = jnp.array([0.0, -1.1])
OLD = jnp.array([-0.5, -1.0])
ADV = jnp.array([2.0, -1.0])
V = jnp.array([1.0, 0.0])
OLD_V = jnp.array([0.5, 0.5])
TGT = jnp.array([2.0, -1.0])
ENT = jnp.array([0.7, 0.9])


def test_ppo_loss_hand_computed():
    loss, aux = ppo_loss(
        LOGP, OLD, ADV, V, OLD_V, TGT, ENT, clip_eps=0.2, vf_coef=0.5, ent_coef=0.01
    )
    r1 = math.exp(-0.1)
    policy = -(2.4 + (-1.0 * r1)) / 2
    value = 0.5 * ((1 - 2) ** 2 + (0 + 1) ** 2) / 2  # 0.5
    entropy = 0.8
    assert aux["policy_loss"] == pytest.approx(policy, rel=1e-6)
    assert aux["value_loss"] == pytest.approx(value, rel=1e-6)
    assert aux["entropy"] == pytest.approx(entropy, rel=1e-6)
    assert loss == pytest.approx(policy + 0.5 * value - 0.01 * entropy, rel=1e-6)
    assert aux["clip_frac"] == pytest.approx(0.5)
    kl = ((math.exp(0.5) - 1 - 0.5) + (r1 - 1 + 0.1)) / 2
    assert aux["approx_kl"] == pytest.approx(kl, rel=1e-5)


def test_ppo_value_clipping_hand_computed():
    # V moves from 0.5 to 1.0 (sample 0) and to 0.0 (sample 1); clip 0.1 keeps 0.6 / 0.4.
    _, aux = ppo_loss(
        LOGP, OLD, ADV, V, OLD_V, TGT, ENT, clip_eps=0.2, vf_coef=0.5, ent_coef=0.0, vf_clip_eps=0.1
    )
    s0 = max((1.0 - 2.0) ** 2, (0.6 - 2.0) ** 2)  # 1.96
    s1 = max((0.0 + 1.0) ** 2, (0.4 + 1.0) ** 2)  # 1.96
    assert aux["value_loss"] == pytest.approx(0.5 * (s0 + s1) / 2, rel=1e-6)


def test_ppo_gradient_is_zero_outside_clip_region():
    # Sample 0 is clipped with A > 0, so it gives no policy gradient.
    g = jax.grad(
        lambda lp: ppo_loss(
            lp, OLD, ADV, V, OLD_V, TGT, ENT, clip_eps=0.2, vf_coef=0.0, ent_coef=0.0
        )[0]
    )(LOGP)
    assert g[0] == 0.0
    # d/dlp of -(rho * A)/2 with rho = exp(lp - old): -(A * rho)/2 = exp(-0.1)/2.
    assert g[1] == pytest.approx(math.exp(-0.1) / 2, rel=1e-5)


def test_a2c_loss_hand_computed():
    loss, aux = a2c_loss(LOGP, ADV, V, TGT, ENT, vf_coef=0.25, ent_coef=0.1)
    policy = -(0.0 * 2.0 + (-1.1) * (-1.0)) / 2  # -0.55
    value = 0.5
    assert aux["policy_loss"] == pytest.approx(policy, rel=1e-6)
    assert loss == pytest.approx(policy + 0.25 * value - 0.1 * 0.8, rel=1e-6)
    # The advantage is a constant for the policy gradient.
    g = jax.grad(lambda a: a2c_loss(LOGP, a, V, TGT, ENT, vf_coef=0.0, ent_coef=0.0)[0])(ADV)
    np.testing.assert_array_equal(g, jnp.zeros(2))


def test_a2c_loss_can_pass_gradients_to_the_advantages():
    """``stop_advantage_gradient=False``: ``d L / d A_i = -log pi_i / n`` (here
    ``log pi = (0, -1.1)``, ``n = 2``)."""
    g = jax.grad(lambda a: a2c_loss(LOGP, a, V, TGT, ENT, vf_coef=0.0, ent_coef=0.0,
                                    stop_advantage_gradient=False)[0])(ADV)
    np.testing.assert_allclose(g, [0.0, 0.55], rtol=1e-6)


def test_action_bound_penalty_matches_a_loop_over_actions():
    from metareward.rl.losses import action_bound_penalty

    rng = np.random.default_rng(0)
    mean = rng.normal(0.0, 2.0, (5, 3)).astype(np.float32)
    low = np.array([-1.0, -0.5, -2.0], np.float32)
    high = np.array([1.0, 0.5, 2.0], np.float32)
    per_row = []
    for b in range(5):
        s = 0.0
        for i in range(3):
            if mean[b, i] < low[i]:
                s += (mean[b, i] - low[i]) ** 2
            elif mean[b, i] > high[i]:
                s += (mean[b, i] - high[i]) ** 2
        per_row.append(s)
    want = 0.5 * np.mean(per_row)
    assert want > 0
    got = action_bound_penalty(jnp.asarray(mean), jnp.asarray(low), jnp.asarray(high))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    inside = np.clip(mean, low, high)
    assert float(action_bound_penalty(jnp.asarray(inside), low, high)) == 0.0
