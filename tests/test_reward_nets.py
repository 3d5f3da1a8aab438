"""TARE's learned-reward architectures (metareward.nets.make_reward_net): shapes, bounds,
time dependence (forward / backward LSTMs), episode resets, forward-over-reverse autodiff."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareward.nets import REWARD_NETS, make_reward_net

T, N, OBS, ACT, HID, LSTM_HID, BOUND = 6, 3, 3, 2, 8, 4, 20.0
LSTMS = ("lstm-f", "lstm-b", "lstm-b-mul")
BACKWARD = ("lstm-b", "lstm-b-mul")


def _by_net(names):
    # One xdist group per architecture: its params and compiled programs stay on one worker.
    return [pytest.param(n, marks=pytest.mark.xdist_group(f"reward-net-{n}")) for n in names]


@functools.cache
def _net(name, discrete=False):
    return make_reward_net(
        name, discrete=discrete, action_size=ACT, hidden=HID, lstm_hidden=LSTM_HID, bound=BOUND
    )


# Inputs, edits and checks stay in numpy: on CPU every eager jax op on a new shape compiles
# its own small program, which would dominate these tests.


@functools.cache
def _jitted(name, discrete):
    return jax.jit(_net(name, discrete).apply)


def _apply(name, discrete=False):
    return lambda *args: np.asarray(_jitted(name, discrete)(*args))


def _inputs(lead=(T, N), discrete=False, seed=0, done=None):
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((*lead, OBS), np.float32)
    if discrete:
        action = rng.integers(0, ACT, lead).astype(np.int32)
    else:
        action = rng.standard_normal((*lead, ACT), np.float32)
    reward = rng.standard_normal(lead, np.float32)
    steps = np.arange(lead[0], dtype=np.float32).reshape(-1, *[1] * (len(lead) - 1))
    t = np.broadcast_to(steps, lead) / np.float32(10)
    done = np.zeros(lead, np.float32) if done is None else np.asarray(done, np.float32)
    return obs, action, reward, t, done


def _with(x, index, value=None, add=None):
    """Numpy copy of x with x[index] set to value or increased by add."""
    x = np.array(x)
    if add is None:
        x[index] = value
    else:
        x[index] += add
    return x


@functools.cache
def _params(name):
    # Discrete nets have the same parameter tree (actions are one-hot encoded inside).
    return _net(name).init(jax.random.PRNGKey(1), *_inputs(lead=(T,)))


@functools.cache
def _jacobian(name):
    return jax.jit(jax.jacrev(_net(name).apply, argnums=(1, 3)))


def _dependency(name, done):
    """D[t, t'] = sum |d out[t] / d (obs[t'], reward[t'])| on one unbatched segment,
    summed over three input draws. (With hidden=8 and ReLU, one draw can leave every unit
    of a step dead, so its own inputs get exactly zero gradient: on this stack that happens
    for mlp-mul at t=0 with the draw seed=3 alone, on some CPUs. A structural zero stays
    zero in the sum.)"""
    total = 0.0
    for seed in (3, 4, 5):
        obs, action, reward, t, _ = _inputs(lead=(T,), seed=seed)
        j_obs, j_rew = _jacobian(name)(_params(name), obs, action, reward, t, done)
        total = total + np.abs(np.asarray(j_obs)).sum(-1) + np.abs(np.asarray(j_rew))
    return total


# --- shapes, bounds, factory ---------------------------------------------------------------


@pytest.mark.parametrize("name", _by_net(REWARD_NETS))
def test_shapes_bounds_and_finite_params(name):
    params = _params(name)
    assert all(np.all(np.isfinite(np.asarray(p))) for p in jax.tree.leaves(params))
    for discrete in (False, True):
        out = _apply(name, discrete)(params, *_inputs(discrete=discrete))
        assert out.shape == (T, N)
        assert np.all(np.isfinite(out)) and np.abs(out).max() < BOUND
        assert out.std() > 0  # not a constant
    single = _apply(name)(params, *_inputs(lead=(T,)))
    assert single.shape == (T,)
    assert np.all(np.isfinite(single)) and np.abs(single).max() < BOUND


@pytest.mark.parametrize("name", _by_net(REWARD_NETS))
def test_discrete_actions_are_one_hot_of_the_continuous_net(name):
    obs, action, reward, t, done = _inputs(discrete=True, seed=5)
    # Initialising with int actions gives the continuous net's parameter tree (abstractly).
    shapes = jax.eval_shape(
        _net(name, True).init, jax.random.PRNGKey(1), obs, action, reward, t, done
    )
    assert jax.tree.map(np.shape, shapes) == jax.tree.map(np.shape, _params(name))
    # An int action k acts as the one-hot vector e_k.
    params = _params(name)
    out_d = _apply(name, True)(params, obs, action, reward, t, done)
    one_hot = jax.nn.one_hot(action, ACT)
    out_c = _apply(name, False)(params, obs, one_hot, reward, t, done)
    np.testing.assert_allclose(out_d, out_c, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", _by_net(REWARD_NETS))
def test_saturated_output_stays_within_bound(name):
    obs, action, _, t, done = _inputs()
    huge = (1e3 * obs, action, np.full((T, N), 1e4, np.float32), 1e4 * (1.0 + t), done)
    params = _params(name)
    # Blow up the output layer too, so that the tanh saturates for sure.
    params = jax.tree_util.tree_map_with_path(
        lambda path, p: np.asarray(p) * 1e4 if "head" in jax.tree_util.keystr(path) else p, params
    )
    out = _apply(name)(params, *huge)
    assert np.all(np.isfinite(out))
    assert np.abs(out).max() <= BOUND
    assert np.abs(out).max() > 0.99 * BOUND  # it did saturate


@pytest.mark.xdist_group("reward-net-lstm-b-mul")
def test_initialisation_orthogonal_with_zero_biases():
    params = _params("lstm-b-mul")["params"]
    k = np.asarray(params["head"]["Dense_0"]["kernel"])
    assert np.linalg.norm(k) == pytest.approx(1.0 / BOUND, rel=1e-5)  # orthogonal(1 / bound)
    w = np.asarray(params["sa_embed"]["layer1_dense"]["kernel"])  # square, orthogonal(sqrt 2)
    np.testing.assert_allclose(w.T @ w, 2.0 * np.eye(HID), atol=1e-5)
    for leaf in (params["head"]["Dense_0"]["bias"], params["rt_embed"]["layer0_dense"]["bias"]):
        assert not np.any(np.asarray(leaf))


def test_factory_rejects_unknown_name_with_allowed_list():
    with pytest.raises(ValueError, match=r"'lstm-x'.*lstm-b-mul"):
        make_reward_net("lstm-x", discrete=False, action_size=2)
    assert REWARD_NETS == ("mlp-concat", "mlp-mul", "lstm-f", "lstm-b", "lstm-b-mul")


@pytest.mark.parametrize(
    ("field", "value"),
    [("action_size", 0), ("hidden", 0), ("lstm_hidden", -1), ("bound", 0.0), ("bound", -1.0)],
)
def test_factory_rejects_bad_sizes(field, value):
    kw = {"discrete": False, "action_size": 2, field: value}
    with pytest.raises(ValueError, match=rf"{field}.*{value}"):
        make_reward_net("lstm-b-mul", **kw)


def test_wrong_input_shapes_raise():
    obs, action, reward, t, done = _inputs()
    with pytest.raises(ValueError, match=r"continuous action"):
        _net("mlp-mul").apply(_params("mlp-mul"), obs, action[..., :1], reward, t, done)
    with pytest.raises(ValueError, match=r"reward"):
        _net("mlp-mul").apply(_params("mlp-mul"), obs, action, reward[:, :1], t, done)


# --- time structure --------------------------------------------------------------------------


@pytest.mark.parametrize("name", _by_net(REWARD_NETS))
def test_time_dependency_structure(name):
    d = _dependency(name, np.zeros(T, np.float32))
    assert np.all(np.diag(d) > 0)
    past, future = np.tril(d, -1), np.triu(d, 1)
    if name in BACKWARD:  # out[t] sees t' >= t only
        assert np.all(past == 0)
        assert all(d[s, s + 1 :].max() > 0 for s in range(T - 1))
    elif name == "lstm-f":  # out[t] sees t' <= t only
        assert np.all(future == 0)
        assert all(d[s, :s].max() > 0 for s in range(1, T))
    else:  # per-step MLPs
        assert np.all(past == 0) and np.all(future == 0)


@pytest.mark.parametrize("name", _by_net(LSTMS))
def test_done_cuts_the_recurrence(name):
    k = 2
    cut = _dependency(name, _with(np.zeros(T, np.float32), k, 1.0))
    full = _dependency(name, np.zeros(T, np.float32))
    if name in BACKWARD:  # outputs at steps <= k ignore inputs at steps > k
        assert np.all(cut[: k + 1, k + 1 :] == 0) and full[: k + 1, k + 1 :].max() > 0
        changed = slice(k + 1, None)
        kept = slice(None, k + 1)
    else:  # outputs at steps > k ignore inputs at steps <= k
        assert np.all(cut[k + 1 :, : k + 1] == 0) and full[k + 1 :, : k + 1].max() > 0
        changed = slice(None, k + 1)
        kept = slice(k + 1, None)
    # The same, by changing the inputs on the other side of the boundary.
    obs, action, reward, t, _ = _inputs()
    obs2, reward2 = _with(obs, changed, add=1.0), _with(reward, changed, add=1.0)
    done = _with(np.zeros((T, N), np.float32), k, 1.0)
    f, p = _apply(name), _params(name)
    np.testing.assert_array_equal(
        f(p, obs, action, reward, t, done)[kept], f(p, obs2, action, reward2, t, done)[kept]
    )
    no_done = np.zeros((T, N), np.float32)
    a, b = f(p, obs, action, reward, t, no_done), f(p, obs2, action, reward2, t, no_done)
    assert np.abs(a[kept] - b[kept]).max() > 1e-6


@pytest.mark.parametrize("name", _by_net(REWARD_NETS))
def test_segment_equals_its_episode_pieces(name):
    k = T // 2 - 1  # two pieces of equal length: one compiled program
    done = _with(np.zeros((T, N), np.float32), [k, T - 1], 1.0)
    inputs = _inputs(seed=7, done=done)
    f, p = _apply(name), _params(name)
    whole = f(p, *inputs)
    first = f(p, *(x[: k + 1] for x in inputs))
    second = f(p, *(x[k + 1 :] for x in inputs))
    np.testing.assert_allclose(whole, np.concatenate([first, second]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", _by_net(LSTMS))
def test_batch_axes_are_independent_envs(name):
    # Different episode boundaries per env; each column equals the unbatched run.
    done = _with(np.zeros((T, N), np.float32), ([1, 3, 4], [0, 1, 2]), 1.0)
    inputs = _inputs(seed=11, done=done)
    f, p = _apply(name), _params(name)
    whole = f(p, *inputs)
    for i in range(N):
        col = f(p, *(x[:, i] for x in inputs))
        np.testing.assert_allclose(whole[:, i], col, rtol=1e-5, atol=1e-6)
    # Two batch axes [T, 1, N] give the same numbers.
    two = f(p, *(x[:, None] for x in inputs))
    np.testing.assert_allclose(two[:, 0], whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", _by_net(["mlp-mul", "lstm-b-mul"]))
def test_mul_variants_respond_to_reward_and_time(name):
    obs, action, reward, t, done = _inputs(seed=2)
    f, p = _apply(name), _params(name)
    base = f(p, obs, action, reward, t, done)
    by_reward = f(p, obs, action, reward + 0.5, t, done)
    by_time = f(p, obs, action, reward, t + 0.5, done)
    # Most steps move (a few may sit where this small net's ReLUs are flat).
    assert np.mean(np.abs(by_reward - base) > 1e-4) > 0.5
    assert np.mean(np.abs(by_time - base) > 1e-4) > 0.5


# --- second-order autodiff -------------------------------------------------------------------


@pytest.mark.xdist_group("reward-net-lstm-b-mul")
def test_forward_over_reverse_matches_finite_difference_of_the_gradient():
    # Hessian-vector product d/dphi (dL/dphi) . v and mixed derivative d/dr (dL/dphi) . u,
    # by jax.jvp of jax.grad, against central differences of the gradient (float64).
    with jax.enable_x64(True):
        net = make_reward_net(discrete=False, action_size=ACT, hidden=HID, lstm_hidden=LSTM_HID)
        done = _with(np.zeros((T, N)), (2, 0), 1.0)
        obs, action, reward, t, done = (
            np.asarray(x, np.float64) for x in _inputs(seed=4, done=done)
        )
        # Host-side casts and draws: eager jax ops would compile one program per shape.
        params = jax.tree.map(lambda x: np.asarray(x, np.float64), _params("lstm-b-mul"))
        rng = np.random.default_rng(10)
        v = jax.tree.map(lambda x: rng.standard_normal(x.shape), params)
        u, w = rng.standard_normal((T, N)), rng.standard_normal((T, N))
        eps = 1e-5

        def loss(p, r):
            return jnp.sum(w * net.apply(p, obs, action, r, t, done))

        grad = jax.jit(jax.grad(loss))
        # One jvp in both arguments gives H_phi,phi v + H_phi,r u: the Hessian-vector product
        # plus the mixed second derivative that TARE's implicit gradient needs.
        exact = jax.jit(lambda p, r: jax.jvp(grad, (p, r), (v, u))[1])(params, reward)
        # Central difference of the gradient (host arithmetic: no eager per-shape compiles).
        plus = grad(jax.tree.map(lambda x, y: x + eps * y, params, v), reward + eps * u)
        minus = grad(jax.tree.map(lambda x, y: x - eps * y, params, v), reward - eps * u)

        def flat(tree):
            return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])

        a, b = flat(exact), (flat(plus) - flat(minus)) / (2 * eps)
        assert a.dtype == np.float64 and np.all(np.isfinite(a))
        assert np.abs(a).max() > 0
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(a).max())
