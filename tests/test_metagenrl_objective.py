"""MetaGenRL's neural objective (metareward.nets.metagenrl.ObjectiveLSTM): any action
dimension with one set of parameters, permutation invariance over action dimensions,
masking, backward-in-time causality, gradients only through the policy action, the output
bound, z-scoring, the ablation flags and shape errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from metareward.nets import ObjectiveLSTM, masked_zscore, relu_square

B, W = 3, 6
LENGTHS = (6, 4, 2)  # valid steps per window: masked steps are a suffix
MODEL = ObjectiveLSTM()
APPLY = jax.jit(MODEL.apply)
SUM = jax.jit(lambda p, *x: MODEL.apply(p, *x, method="objective_sum"))


def _inputs(seed: int = 0, a_dim: int = 3) -> dict[str, jnp.ndarray]:
    ks = jax.random.split(jax.random.PRNGKey(seed), 6)
    mask = (jnp.arange(W)[None, :] < jnp.array(LENGTHS)[:, None]).astype(jnp.float32)
    return {
        "reward": jax.random.normal(ks[0], (B, W)) * 2.0 + 1.0,
        "value": jax.random.normal(ks[1], (B, W)) * 5.0 + 10.0,
        "next_value": jax.random.normal(ks[2], (B, W)) * 5.0 + 10.0,
        "time": jnp.broadcast_to(jnp.arange(W, dtype=jnp.float32) / 20.0, (B, W)),
        "action": jax.random.uniform(ks[3], (B, W, a_dim), minval=-1.0, maxval=1.0),
        "policy_action": jax.random.uniform(ks[4], (B, W, a_dim), minval=-1.0, maxval=1.0),
        "mask": mask,
    }


ORDER = ("reward", "value", "next_value", "time", "action", "policy_action", "mask")


def _args(x: dict) -> tuple:
    return tuple(x[k] for k in ORDER)


def _init(model: ObjectiveLSTM = MODEL, a_dim: int = 1, seed: int = 1):
    return jax.jit(model.init)(jax.random.PRNGKey(seed), *_args(_inputs(0, a_dim)))


@jax.jit
def _perturbed(p, seed: int = 2, scale: float = 0.2):
    """``p`` plus Gaussian noise on every parameter: at init all biases are 0 and a zero
    input maps to a zero output, which would hide what happens at masked (zeroed) steps."""
    flat, unravel = ravel_pytree(p)
    return unravel(flat + scale * jax.random.normal(jax.random.PRNGKey(seed), flat.shape))


@pytest.fixture(scope="module")
def params():
    return _perturbed(_init())


def _max_diff(a, b) -> float:
    return float(jnp.max(jnp.abs(a - b)))


def test_parameter_count_is_the_documented_15k(params):
    assert sum(x.size for x in jax.tree.leaves(params)) == 15_497


def test_helpers():
    x = jnp.array([[-2.0, -1.0, 3.0, -4.0]])
    np.testing.assert_array_equal(relu_square(x), [[0.0, 0.0, 9.0, 16.0]])
    v = jnp.array([[1.0, 3.0, 100.0], [5.0, 7.0, -50.0]])
    m = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    z = masked_zscore(v, m)
    ref = (np.array([1.0, 3.0, 5.0, 7.0]) - 4.0) / np.sqrt(5.0 + 1e-8)
    np.testing.assert_allclose(z[:, :2].ravel(), ref, rtol=1e-6)
    np.testing.assert_array_equal(z[:, 2], 0.0)


def test_same_params_for_any_action_dim(params):
    for a_dim in (1, 3):
        out = APPLY(params, *_args(_inputs(0, a_dim)))
        chex.assert_shape(out, (B, W))
        chex.assert_tree_all_finite(out)
        assert _max_diff(out, 0.0) > 0.0
    s = SUM(params, *_args(_inputs(0, 3)))
    chex.assert_shape(s, (B,))
    np.testing.assert_allclose(s, APPLY(params, *_args(_inputs(0, 3))).sum(1), rtol=1e-6)


def test_invariant_to_permuting_action_dims(params):
    x = _inputs(2, 3)
    out = APPLY(params, *_args(x))
    perm = jnp.array([2, 0, 1])
    both = dict(x, action=x["action"][..., perm], policy_action=x["policy_action"][..., perm])
    np.testing.assert_allclose(APPLY(params, *_args(both)), out, atol=1e-5)
    only_pi = dict(x, policy_action=x["policy_action"][..., perm])
    assert _max_diff(APPLY(params, *_args(only_pi)), out) > 1e-4


def test_masked_steps_are_zero_and_ignored(params):
    x = _inputs(3, 3)
    out = APPLY(params, *_args(x))
    masked = x["mask"] == 0
    assert bool(jnp.all(jnp.where(masked, out, 0.0) == 0.0))
    assert bool(jnp.all(jnp.where(masked, 1.0, out) != 0.0))  # valid steps are scored
    # Garbage (huge values, NaN) at masked steps changes no valid output.
    junk = {}
    for i, k in enumerate(ORDER[:-1]):
        noise = 1e4 * jax.random.normal(jax.random.PRNGKey(10 + i), x[k].shape)
        keep = masked if x[k].ndim == 2 else masked[..., None]
        junk[k] = jnp.where(keep, noise, x[k])
    junk["reward"] = jnp.where(masked, jnp.nan, junk["reward"])
    out2 = APPLY(params, *_args(dict(x, **junk)))
    np.testing.assert_allclose(out2, out, atol=1e-6)
    assert bool(jnp.all(jnp.where(masked, out2, 0.0) == 0.0))


def test_masked_window_equals_window_cut_to_its_valid_steps(params):
    # The carry stays at its initial zeros over the masked suffix: window 1 (4 valid steps
    # of 6) alone gives the same valid outputs as its first 4 steps as a window of W = 4
    # (a batch of one window, so the masked z-score statistics agree too).
    x = _inputs(9, 3)
    n = LENGTHS[1]
    one = {k: v[1:2] for k, v in x.items()}
    cut = {k: v[:, :n] for k, v in one.items()}
    out = APPLY(params, *_args(one))
    np.testing.assert_allclose(out[:, :n], APPLY(params, *_args(cut)), atol=1e-6)
    np.testing.assert_array_equal(out[:, n:], 0.0)


@pytest.mark.parametrize("k", [1, 3])
def test_backward_in_time_causality(params, k):
    x = _inputs(4, 3)
    out = APPLY(params, *_args(x))
    # Window 0 (all valid): new action, policy action and time at step k.
    y = dict(x)
    y["action"] = x["action"].at[0, k].set(jnp.array([0.9, -0.8, 0.7]))
    y["policy_action"] = x["policy_action"].at[0, k].set(jnp.array([-0.5, 0.6, 0.1]))
    y["time"] = x["time"].at[0, k].set(0.95)
    out2 = APPLY(params, *_args(y))
    np.testing.assert_allclose(out2[0, k + 1 :], out[0, k + 1 :], atol=1e-6)
    np.testing.assert_allclose(out2[1:], out[1:], atol=1e-6)  # other windows untouched
    assert _max_diff(out2[0, k], out[0, k]) > 1e-5
    assert _max_diff(out2[0, 0], out[0, 0]) > 0.0  # flows back to earlier steps
    # Reward: swap r[0, k] with r[1, 0] (keeps the batch statistics): window 0 changes at
    # steps <= k only, window 1 at step 0 only.
    r = x["reward"]
    r2 = r.at[0, k].set(r[1, 0]).at[1, 0].set(r[0, k])
    out3 = APPLY(params, *_args(dict(x, reward=r2)))
    np.testing.assert_allclose(out3[0, k + 1 :], out[0, k + 1 :], atol=1e-5)
    np.testing.assert_allclose(out3[1, 1:], out[1, 1:], atol=1e-5)
    assert _max_diff(out3[0, k], out[0, k]) > 1e-5
    assert _max_diff(out3[1, 0], out[1, 0]) > 1e-5


def test_gradients_reach_only_the_policy_action(params):
    x = _inputs(5, 3)

    def loss(p, value, next_value, policy_action):
        y = dict(x, value=value, next_value=next_value, policy_action=policy_action)
        return MODEL.apply(p, *_args(y), method="objective_sum").sum()

    g = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(
        params, x["value"], x["next_value"], x["policy_action"]
    )
    g_params, g_v, g_nv, g_pi = g
    np.testing.assert_array_equal(g_v, 0.0)
    np.testing.assert_array_equal(g_nv, 0.0)
    chex.assert_tree_all_finite((g_params, g_pi))
    assert _max_diff(g_pi, 0.0) > 1e-6
    masked = (x["mask"] == 0)[..., None]
    np.testing.assert_array_equal(jnp.where(masked, g_pi, 0.0), 0.0)
    assert all(float(jnp.max(jnp.abs(leaf))) > 0 for leaf in jax.tree.leaves(g_params))


def test_outputs_are_bounded():
    model = ObjectiveLSTM(bound=0.5)
    p = _init(model, 3)
    p = jax.tree.map(lambda w: 50.0 * w, p)
    x = _inputs(6, 3)
    big = {k: 100.0 * x[k] for k in ("reward", "value", "next_value", "action", "policy_action")}
    out = jax.jit(model.apply)(p, *_args(dict(x, **big)))
    chex.assert_tree_all_finite(out)
    assert float(jnp.max(jnp.abs(out))) <= 0.5
    assert float(jnp.max(jnp.abs(out))) > 0.49  # saturated, so the bound was exercised


def test_z_scored_inputs_are_affine_invariant(params):
    x = _inputs(7, 3)
    out = APPLY(params, *_args(x))
    y = dict(
        x,
        reward=3.0 * x["reward"] + 5.0,
        value=2.0 * x["value"] - 1.0,
        next_value=0.5 * x["next_value"] + 3.0,
    )
    np.testing.assert_allclose(APPLY(params, *_args(y)), out, atol=1e-4)
    # ... but the reward does matter (a sign flip is not affine-positive).
    assert _max_diff(APPLY(params, *_args(dict(x, reward=-x["reward"]))), out) > 1e-4


def _changed(p, apply, x, **new) -> float:
    return _max_diff(apply(p, *_args(dict(x, **new))), apply(p, *_args(x)))


def test_ablation_flags(params):
    x = _inputs(8, 3)
    ks = jax.random.split(jax.random.PRNGKey(99), 3)
    new_time = jax.random.uniform(ks[0], (B, W))
    new_v = jax.random.normal(ks[1], (B, W)) * 3.0
    new_nv = jax.random.normal(ks[2], (B, W)) * 3.0
    # The full model reads all three.
    assert _changed(params, APPLY, x, time=new_time) > 1e-5
    assert _changed(params, APPLY, x, value=new_v) > 1e-5
    assert _changed(params, APPLY, x, next_value=new_nv) > 1e-5
    # Dropped inputs are zero columns: the same parameters serve every flag setting.
    no_t = jax.jit(ObjectiveLSTM(use_time=False).apply)
    assert _changed(params, no_t, x, time=new_time) == 0.0
    assert _changed(params, no_t, x, value=new_v) > 1e-5
    no_v = jax.jit(ObjectiveLSTM(use_value=False).apply)
    assert _changed(params, no_v, x, value=new_v, next_value=new_nv) == 0.0
    assert _changed(params, no_v, x, time=new_time) > 1e-5
    no_nv = jax.jit(ObjectiveLSTM(use_next_value=False).apply)
    assert _changed(params, no_nv, x, next_value=new_nv) == 0.0
    assert _changed(params, no_nv, x, value=new_v) > 1e-5


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"reward": jnp.zeros((B * W,))}, r"reward must be \[B, W\]"),
        ({"reward": jnp.zeros((0, W))}, r"B, W >= 1"),
        ({"value": jnp.zeros((B, W + 1))}, r"value must have reward's shape"),
        ({"next_value": jnp.zeros((B, W, 1))}, r"next_value must have"),
        ({"time": jnp.zeros((B + 1, W))}, r"time must have"),
        ({"mask": jnp.zeros((W,))}, r"mask must have"),
        ({"action": jnp.zeros((B, W))}, r"action must be \[B, W, A\]"),
        ({"action": jnp.zeros((B, W + 1, 3))}, r"action must be \[B, W, A\]"),
        ({"action": jnp.zeros((B, W, 0)), "policy_action": jnp.zeros((B, W, 0))}, r"A >= 1"),
        ({"policy_action": jnp.zeros((B, W, 2))}, r"policy_action must have action's shape"),
    ],
)
def test_bad_shapes_raise(params, change, match):
    x = dict(_inputs(0, 3), **change)
    with pytest.raises(ValueError, match=match):
        MODEL.apply(params, *_args(x))


@pytest.mark.parametrize(
    ("field", "match"),
    [
        ({"bound": 0.0}, "bound"),
        ({"lstm_size": 0}, "lstm_size"),
        ({"action_embed": ()}, "action_embed"),
        ({"head_hidden": (32, -1)}, "head_hidden"),
    ],
)
def test_bad_fields_raise(field, match):
    with pytest.raises(ValueError, match=match):
        _init(ObjectiveLSTM(**field))
