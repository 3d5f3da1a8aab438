"""CLN bilevel intrinsic rewards: Conditional Layer Normalization against layer norm and its
definition, the three hypergradient modes against finite differences and dense per-equation
references, the eq. 21 regulariser against a numpy evaluation, and the plumbing."""

import dataclasses
import functools
import io
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from brax.envs.base import Wrapper

from metareward import envs
from metareward.algos import check_finite, cln, ppo
from metareward.nets.cln import (
    CLNMLP,
    ConditionalLayerNorm,
    RewardBody,
    make_cln_policy,
    reward_head,
)
from metareward.runtime import driver


def to64(tree):
    return jax.tree.map(
        lambda a: jnp.asarray(a, jnp.float64)
        if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a, tree)


# --- Conditional Layer Normalization (eqs. 18-20) ----------------------------------------


def _cln_params(key, C=5, H=7, std=1.0):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return {"params": {
        "f_c": {"kernel": std * jax.random.normal(k1, (C, H)), "bias": jax.random.normal(k2, (H,))},
        "h_c": {"kernel": std * jax.random.normal(k3, (C, H)), "bias": jax.random.normal(k4, (H,))},
    }}


def test_cln_with_fixed_eta_is_layer_norm_with_that_gain_and_bias():
    C, H = 5, 7
    params = _cln_params(jax.random.PRNGKey(0), C, H, std=0.5)
    x = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (11, H)) + 1.0
    cond = jax.random.normal(jax.random.PRNGKey(2), (C,))
    out = ConditionalLayerNorm().apply(params, x, cond)
    p = params["params"]
    gain = jax.nn.sigmoid(cond @ p["f_c"]["kernel"] + p["f_c"]["bias"])
    bias = cond @ p["h_c"]["kernel"] + p["h_c"]["bias"]
    ln = nn.LayerNorm(epsilon=1e-6).apply({"params": {"scale": gain, "bias": bias}}, x)
    np.testing.assert_allclose(out, ln, rtol=1e-5, atol=1e-5)
    # and the formula of eq. 18 in numpy
    xn = np.asarray(x, np.float64)
    ref = (np.asarray(gain) * (xn - xn.mean(-1, keepdims=True))
           / np.sqrt(xn.var(-1, keepdims=True) + 1e-6) + np.asarray(bias))
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    # with an activation: f applied after the modulation
    out_tanh = ConditionalLayerNorm(activation=jnp.tanh).apply(params, x, cond)
    np.testing.assert_allclose(out_tanh, np.tanh(ref), rtol=1e-4, atol=1e-5)


def test_cln_gain_lies_strictly_between_zero_and_one():
    C, H = 5, 7
    params = _cln_params(jax.random.PRNGKey(3), C, H, std=1.0)
    x = jax.random.normal(jax.random.PRNGKey(4), (200, H))
    cond = jax.random.normal(jax.random.PRNGKey(5), (200, C))
    _, inter = ConditionalLayerNorm().apply(params, x, cond, mutable=["intermediates"])
    gain = np.asarray(inter["intermediates"]["gain"][0])
    p = params["params"]
    np.testing.assert_allclose(
        gain, jax.nn.sigmoid(cond @ p["f_c"]["kernel"] + p["f_c"]["bias"]), rtol=1e-6)
    assert gain.shape == (200, H) and 0.0 < gain.min() and gain.max() < 1.0
    assert gain.min() < 0.05 and gain.max() > 0.95  # the range is actually explored


def test_gradients_reach_the_conditioning_only_through_f_c_and_h_c():
    C, H = 5, 7
    params = _cln_params(jax.random.PRNGKey(6), C, H, std=0.5)
    x = jax.random.normal(jax.random.PRNGKey(7), (H,))
    cond = jax.random.normal(jax.random.PRNGKey(8), (C,))
    w = jax.random.normal(jax.random.PRNGKey(9), (H,))
    f = lambda c, prm: jnp.dot(w, ConditionalLayerNorm().apply(prm, x, c))
    g = jax.grad(f)(cond, params)
    # By hand: d/dc [w . (g(c) xhat + b(c))] = W_f (w xhat g (1 - g)) + W_h w.
    p = params["params"]
    gain = jax.nn.sigmoid(cond @ p["f_c"]["kernel"] + p["f_c"]["bias"])
    xhat = (x - x.mean()) / jnp.sqrt(x.var() + 1e-6)
    ref = p["f_c"]["kernel"] @ (w * xhat * gain * (1 - gain)) + p["h_c"]["kernel"] @ w
    np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-6)
    # With both maps' kernels zero, eta has no path into the output.
    zeroed = jax.tree.map(lambda a: a, params)
    for m in ("f_c", "h_c"):
        zeroed["params"][m]["kernel"] = jnp.zeros_like(p[m]["kernel"])
    assert np.all(np.asarray(jax.grad(f)(cond, zeroed)) == 0.0)
    # The same holds for a whole CLN policy: log pi depends on eta only through the CLNs.
    pol = make_cln_policy(False, 2, (8, 8), "tanh", (0, 1))
    prm = pol.init(jax.random.PRNGKey(10), jnp.zeros((1, 3)), jnp.zeros((1, C)))
    prm = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.zeros_like(a) if "cln_" in jax.tree_util.keystr(path)
        and "kernel" in jax.tree_util.keystr(path) else a, prm)
    obs, act = jnp.ones((4, 3)), jnp.ones((4, 2))
    logp = lambda c: jnp.sum(pol.apply(prm, obs, c).log_prob(act))
    assert np.all(np.asarray(jax.grad(logp)(jnp.ones((C,)))) == 0.0)


def test_cln_index_gathers_per_row_conditioning():
    C, H = 5, 7
    params = _cln_params(jax.random.PRNGKey(11), C, H)
    x = jax.random.normal(jax.random.PRNGKey(12), (9, H))
    conds = jax.random.normal(jax.random.PRNGKey(13), (3, C))
    index = jnp.array([0, 2, 1, 1, 0, 2, 2, 0, 1])
    a = ConditionalLayerNorm().apply(params, x, conds, index)
    b = ConditionalLayerNorm().apply(params, x, conds[index])
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_cln_tile_equals_per_sample_conditioning_and_its_gradient():
    C, H, M, k = 5, 7, 3, 4
    params = _cln_params(jax.random.PRNGKey(14), C, H)
    x = jax.random.normal(jax.random.PRNGKey(15), (k * M, H))
    conds = jax.random.normal(jax.random.PRNGKey(16), (M, C))
    per_sample = jnp.tile(conds, (k, 1))  # sample j uses conds[j % M]
    cln = ConditionalLayerNorm()
    np.testing.assert_allclose(cln.apply(params, x, conds, tile=True),
                               cln.apply(params, x, per_sample), rtol=1e-6, atol=1e-6)
    f = lambda p, c: jnp.sum(jnp.sin(cln.apply(p, x, c, tile=True)))
    g = lambda p, c: jnp.sum(jnp.sin(cln.apply(p, x, jnp.tile(c, (k, 1)))))
    for a, b in zip(jax.tree.leaves(jax.grad(f, (0, 1))(params, conds)),
                    jax.tree.leaves(jax.grad(g, (0, 1))(params, conds)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="tile=True needs"):
        cln.apply(params, x[:-1], conds, tile=True)


def test_cln_layers_are_configurable_and_checked():
    def cln_names(layers):
        prm = CLNMLP((8, 8, 8), "tanh", layers).init(
            jax.random.PRNGKey(0), jnp.zeros((1, 3)), jnp.zeros((1, 4)))
        return sorted(k for k in prm["params"] if k.startswith("cln_"))

    assert cln_names((-1,)) == ["cln_2"]
    assert cln_names((0, 2)) == ["cln_0", "cln_2"]
    with pytest.raises(ValueError, match=r"cln_layers entry 3 is invalid.*\[-3, 2\]"):
        make_cln_policy(False, 1, (8, 8, 8), "tanh", (3,))
    with pytest.raises(ValueError, match="cln_layers"):
        cln.Config(cln_layers=(2,))  # 2 hidden layers: indices -2..1


def test_reward_head_is_the_last_dense_layer():
    F, N, T = 6, 3, 4
    feats = jax.random.normal(jax.random.PRNGKey(0), (T, N, F))
    eta = jax.random.normal(jax.random.PRNGKey(1), (N, F + 1))  # one head per env column
    r = reward_head(feats, eta, jnp.zeros((T, N)), discrete=False, action_size=2)
    ref = np.einsum("tnf,nf->tn", feats, eta[:, :F]) + np.asarray(eta[:, F])[None]
    np.testing.assert_allclose(r, ref, rtol=1e-5, atol=1e-5)
    # discrete: one output per action, the taken action's returned
    A = 3
    eta_d = jax.random.normal(jax.random.PRNGKey(2), ((F + 1) * A,))
    acts = jax.random.randint(jax.random.PRNGKey(3), (T, N), 0, A)
    rd = reward_head(feats, eta_d, acts, discrete=True, action_size=A)
    W, b = np.asarray(eta_d[: F * A]).reshape(F, A), np.asarray(eta_d[F * A:])
    all_out = np.einsum("tnf,fa->tna", feats, W) + b
    np.testing.assert_allclose(rd, np.take_along_axis(all_out, np.asarray(acts)[..., None],
                                                      -1)[..., 0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="needs 7"):
        reward_head(feats, jnp.zeros((5,)), None, discrete=False, action_size=1)


# --- The hypergradient modes on a tiny fixed batch ----------------------------------------

TINY = dict(num_envs=2, num_steps=16, total_steps=10_000, num_epochs=2, num_minibatches=2,
            learning_rate=3e-3, hidden=(8, 8), reward_hidden=(8, 8), reward_learning_rate=3e-3,
            segment_length=4, reward_buffer_size=64, reward_batch_size=8, noise_std=0.3)


def tiny(terms="best-response", **kw):
    """A trainer, a rollout batch, theta moved off the behaviour policy, a warm Adam state
    (three steps on random gradients), eta, rho, noise z, the advantage basis and a
    stratified minibatch: its time indices ``[8, N]`` and env columns ``[1, N]``."""
    config = cln.Config(**{**TINY, "terms": terms, **kw})
    trainer = cln.make_train(config, envs.make("pendulum"))
    state, batch, basis = jax.jit(lambda s: cln.collect(trainer.parts, s)[:3])(
        trainer.init(jax.random.PRNGKey(0)))
    theta, _ = cln.split_params(state.params)
    keys = jax.random.split(jax.random.PRNGKey(4), 4)
    theta = theta + 0.05 * jax.random.normal(keys[0], theta.shape)
    opt = state.opt_state["agent"]
    adam = optax.adam(config.learning_rate, eps=config.adam_eps)
    for k in keys[1:]:
        opt = adam.update(0.1 * jax.random.normal(k, theta.shape), opt, theta)[1]
    D, N = state.params["eta"].shape[0], config.num_envs
    z = jax.random.normal(jax.random.PRNGKey(5), (N, D))
    # 8 random time steps of every env column (a stratified minibatch, [8, N])
    ti = jax.vmap(lambda k: jax.random.permutation(k, config.num_steps)[:8])(
        jax.random.split(jax.random.PRNGKey(6), N)).T
    return (trainer, batch, basis, theta, opt, state.params["eta"], state.params["rho"], z,
            ti, jnp.arange(N)[None])


def _hypergrad(tr):
    """The trainer's :func:`cln.hypergradient`, jitted."""
    return jax.jit(functools.partial(cln.hypergradient, tr.parts))


def _fd_check(f, x, g, rng, n=4, eps=1e-5, rel=2e-3, abs_=1e-7, label=""):
    for i in range(n):
        d = rng.normal(size=x.shape)
        d = jnp.asarray(d / np.linalg.norm(d))
        fd = float((f(x + eps * d) - f(x - eps * d)) / (2 * eps))
        ad = float(jnp.dot(g, d.astype(g.dtype)))
        assert ad == pytest.approx(fd, rel=rel, abs=abs_), (label, i, ad, fd)


def test_best_response_hypergradient_matches_finite_differences():
    """Eq. 15: d/d eta of -J_ex(theta, eta + sigma z) through the CLN map, and (with a
    learned sigma) d/d rho, against central differences in float64."""
    tr, b, basis, theta, opt, eta, rho, z, ti, _ = tiny(learn_noise_std=True)
    mb = cln.minibatch(b, basis, ti)
    g_eta, g_rho, terms = _hypergrad(tr)(theta, opt, eta, rho, z, mb)
    assert set(terms) == {"eq15"} and float(jnp.linalg.norm(g_eta)) > 1e-5
    np.testing.assert_array_equal(terms["eq15"], g_eta)
    with jax.enable_x64(True):
        th, mb64, z64 = to64((theta, mb, z))
        J = lambda e, r: -cln.ex_objective(tr.parts, th, e + jax.nn.softplus(r) * z64, mb64)[0]
        rng = np.random.default_rng(0)
        _fd_check(jax.jit(lambda e: J(e, to64(rho))), to64(eta), g_eta, rng, label="eta")
        _fd_check(jax.jit(lambda r: J(to64(eta), r)), to64(rho), g_rho, rng, label="rho")
    # A fixed sigma gets no gradient.
    tr2 = cln.make_train(dataclasses.replace(tr.config, learn_noise_std=False), tr.env)
    g_rho2 = cln.hypergradient(tr2.parts, theta, opt, eta, rho, z, mb)[1]
    assert np.all(np.asarray(g_rho2) == 0.0)


def test_intrinsic_advantages_equal_a_numpy_gae_of_the_perturbed_reward():
    """A_in(eta + eps) from the linear basis equals GAE, by a numpy loop, of the rewards
    r_{phi, eta + eps_e}(s, a) with V_in's TD part, one perturbation per env column."""
    tr, b, basis, _, _, eta, _, z, _, _ = tiny()
    eta_cols = eta + 0.3 * z
    got = np.asarray(cln.in_advantages(eta_cols, basis))
    state = tr.init(jax.random.PRNGKey(0))  # collect does not change the reward params
    feats = tr.reward_body.apply(state.params["reward_body"], b.obs, b.action)
    r = np.asarray(reward_head(feats, eta_cols[None], b.action, discrete=False,
                               action_size=1), np.float64)
    delta = r + np.asarray(b.td_in, np.float64)
    disc = np.asarray(b.gae_discount, np.float64)
    want = np.zeros_like(delta)
    nxt = np.zeros(delta.shape[1])
    for t in reversed(range(delta.shape[0])):
        nxt = delta[t] + disc[t] * nxt
        want[t] = nxt
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # the batched form ([..., N, D] -> [..., T, N]) and the per-entry form agree
    many = jnp.stack([eta_cols, eta_cols + 0.1])
    np.testing.assert_allclose(cln.in_advantages(many, basis)[0], got, rtol=1e-6, atol=1e-6)


def _dense_terms(tr, b, basis, theta, eta, rho, z, ti, ei, lr):
    """Eqs. 9, 10 and 11 written out for an SGD look-ahead ``theta' = theta - lr grad
    L_in`` on the entries ``(ti, ei)``, with dense Jacobians (float64):
    eq. 9  = d(-J_ex)/d eta_out at theta',
    eq. 10 = lr * grad_theta' J_ex . d^2 L_in / (d theta d eta_cond),
    eq. 11 = lr * grad_theta' J_ex . d^2 L_in / (d theta d eta_adv)."""
    sig = jax.nn.softplus(rho)

    mb = cln.minibatch(b, basis, ti)

    def L_in(th, e_cond, e_adv):
        adv = cln.in_advantages(e_adv + sig * z, basis)[ti, ei]
        return cln.in_loss(tr.parts, th, e_cond + sig * z, adv, mb)[0]

    J_ex = lambda th, e: cln.ex_objective(tr.parts, th, e + sig * z, mb)[0]
    theta1 = theta - lr * jax.grad(L_in)(theta, eta, eta)
    gJ = jax.grad(J_ex)(theta1, eta)
    mixed_cond = jax.jacfwd(jax.grad(L_in), argnums=1)(theta, eta, eta)  # [P, D]
    mixed_adv = jax.jacfwd(jax.grad(L_in), argnums=2)(theta, eta, eta)
    eq9 = -jax.grad(J_ex, argnums=1)(theta1, eta)
    return {"eq9": eq9, "eq10": lr * gJ @ mixed_cond, "eq11": lr * gJ @ mixed_adv}


@pytest.mark.parametrize("terms", ["lirpg", "all"])
def test_lookahead_modes_equal_their_equations(terms):
    """With an SGD look-ahead (and no gradient clipping in reach) each term of the library
    equals its equation computed with dense second derivatives; "lirpg" uses eq. 11 alone,
    "all" the sum of eqs. 9, 10 and 11."""
    lr = 0.05
    tr, b, basis, theta, opt, eta, rho, z, ti, ei = tiny(terms, lookahead_lr=lr,
                                                         max_grad_norm=1e6)
    mb = cln.minibatch(b, basis, ti)
    g_eta, _, terms_out = _hypergrad(tr)(theta, opt, eta, rho, z, mb)
    with jax.enable_x64(True):
        ref = _dense_terms(tr, *to64((b, basis, theta, eta, rho, z)), ti, ei, lr)
    for k in ("eq9", "eq10", "eq11"):
        scale = float(np.linalg.norm(ref[k]))
        assert scale > 0, k
        np.testing.assert_allclose(terms_out[k], ref[k], rtol=2e-3, atol=2e-3 * scale + 1e-9,
                                   err_msg=k)
    want = ref["eq11"] if terms == "lirpg" else ref["eq9"] + ref["eq10"] + ref["eq11"]
    np.testing.assert_allclose(g_eta, want, rtol=2e-3,
                               atol=2e-3 * float(np.linalg.norm(want)))


def test_all_terms_with_the_adam_lookahead_match_finite_differences():
    """"all" with the default look-ahead (one step of the policy's Adam, clipped) is the
    total derivative of -J_ex(theta'(eta), eta)."""
    tr, b, basis, theta, opt, eta, rho, z, ti, ei = tiny("all")
    mb = cln.minibatch(b, basis, ti)
    g_eta, _, terms = _hypergrad(tr)(theta, opt, eta, rho, z, mb)
    np.testing.assert_allclose(g_eta, terms["eq9"] + terms["eq10"] + terms["eq11"], rtol=1e-5,
                               atol=1e-9)
    with jax.enable_x64(True):
        mb64, basis64, th64, opt64, rho64, z64 = to64((mb, basis, theta, opt, rho, z))
        sig = jax.nn.softplus(rho64)
        adam = optax.adam(tr.config.learning_rate, eps=tr.config.adam_eps, eps_root=1e-16)

        def total(e):
            adv = cln.in_advantages(e + sig * z64, basis64)[ti, ei]
            cond = e + sig * z64
            grads = jax.grad(lambda th: cln.in_loss(tr.parts, th, cond, adv, mb64)[0])(th64)
            norm = jnp.sqrt(jnp.sum(grads**2))
            grads = grads * jnp.minimum(1.0, tr.config.max_grad_norm / (norm + 1e-6))
            upd, _ = adam.update(grads, opt64, th64)
            return -cln.ex_objective(tr.parts, th64 + upd, cond, mb64)[0]

        _fd_check(jax.jit(total), to64(eta), g_eta, np.random.default_rng(1), label="all")


# --- The regulariser (eq. 21) and the reward buffer ---------------------------------------


def test_regularizer_equals_eq21_on_a_hand_built_segment():
    config = cln.Config(**{**TINY, "normalize_obs": False})
    tr = cln.make_train(config, envs.make("pendulum"))
    state = tr.init(jax.random.PRNGKey(1))
    rng = np.random.default_rng(2)
    B, K = 3, 4
    seg = cln.Segments(obs=jnp.asarray(rng.normal(size=(B, K, 3)), jnp.float32),
                       action=jnp.asarray(rng.normal(size=(B, K, 1)), jnp.float32),
                       r_ex=jnp.asarray(rng.normal(size=(B, K)), jnp.float32))
    rp = {"reward_body": state.params["reward_body"], "eta": state.params["eta"]}
    got = float(cln.regularizer(tr.parts, rp, state.obs_stats, seg))
    # numpy: the body MLP (tanh), then the last layer eta = [W, b]
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), rp["reward_body"]["params"]["MLP_0"])
    h = np.concatenate([np.asarray(seg.obs), np.asarray(seg.action)], -1).astype(np.float64)
    for i in range(2):
        h = np.tanh(h @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"])
    eta = np.asarray(rp["eta"], np.float64)
    r_in = h @ eta[:8] + eta[8]
    want = np.mean((np.asarray(seg.r_ex, np.float64).sum(1) - r_in.sum(1)) ** 2)
    assert got == pytest.approx(want, rel=1e-5)
    # a reward that matches every segment's return makes it zero
    assert float(cln.segment_return_loss(seg.r_ex, seg.r_ex)) == 0.0


def test_diagnostics_against_numpy():
    """``reg_explained`` is 1 - MSE / Var of the segment returns; ``adv_corr`` is Pearson's
    correlation, 1 for a positive rescaling and -1 for a negative one."""
    rng = np.random.default_rng(3)
    r_ex = rng.normal(size=(6, 4))
    r_in = r_ex + 0.3 * rng.normal(size=(6, 4))
    loss = cln.segment_return_loss(jnp.asarray(r_ex), jnp.asarray(r_in))
    want = 1.0 - np.mean((r_ex.sum(1) - r_in.sum(1)) ** 2) / np.var(r_ex.sum(1))
    assert float(cln.explained_fraction(loss, jnp.asarray(r_ex))) == pytest.approx(want, rel=1e-5)
    assert float(cln.explained_fraction(jnp.float32(0.0), jnp.asarray(r_ex))) == 1.0
    a, b = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    got = float(cln.advantage_correlation(jnp.asarray(a), jnp.asarray(b)))
    assert got == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], rel=1e-4, abs=1e-6)
    assert float(cln.advantage_correlation(jnp.asarray(3 * a + 1), jnp.asarray(a))) == (
        pytest.approx(1.0, abs=1e-5))
    assert float(cln.advantage_correlation(jnp.asarray(-a), jnp.asarray(a))) == (
        pytest.approx(-1.0, abs=1e-5))


def test_extrinsic_control_trains_the_policy_on_the_envs_advantages():
    """``policy_reward="extrinsic"``: whatever the (perturbed) last layer, the policy
    phase's advantages are the extrinsic GAE and V_in's targets the extrinsic returns."""
    rng = np.random.default_rng(4)
    T, N, D = 6, 2, 3
    arr = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    b = cln.Batch(obs=arr(T, N, 3), action=arr(T, N, 1), log_prob=arr(T, N),
                  gae_discount=arr(T, N), td_in=arr(T, N), v_in=arr(T, N), ret_in=arr(T, N),
                  v_ex=arr(T, N), adv_ex=arr(T, N), ret_ex=arr(T, N))
    basis = cln.AdvBasis(arr(T, N, D), arr(T, N))
    b2, basis2 = cln.extrinsic_basis(b, basis)
    for eta in (arr(D), arr(N, D), arr(4, N, D)):
        adv = cln.in_advantages(eta, basis2)
        np.testing.assert_array_equal(adv, jnp.broadcast_to(b.adv_ex, adv.shape))
    np.testing.assert_array_equal(b2.ret_in, b.ret_ex)
    with pytest.raises(ValueError, match="policy_reward"):
        cln.Config(policy_reward="env")


def test_segments_are_consecutive_rows_of_one_env():
    config = cln.Config(**TINY)
    tr = cln.make_train(config, envs.make("pendulum"))
    state = tr.init(jax.random.PRNGKey(0))
    buf = state.reward_buffer
    L, N = buf.num_rows, buf.num_envs
    # Rows numbered by (time, env): obs[t, e] = [t, e, 0]; only the last 20 rows valid.
    marks = jnp.stack(jnp.meshgrid(jnp.arange(L), jnp.arange(N), indexing="ij"), -1)
    buf = buf.replace(data={**buf.data, "obs": jnp.concatenate(
        [marks.astype(jnp.float32), jnp.zeros((L, N, 1))], -1)}, size=jnp.int32(20))
    seg = cln.sample_segments(tr.parts, buf, jax.random.PRNGKey(3))
    t, e = np.asarray(seg.obs[..., 0]), np.asarray(seg.obs[..., 1])
    K = config.segment_length
    assert seg.obs.shape == (config.reward_batch_size, K, 3)
    assert np.all(np.diff(t, axis=1) == 1) and np.all(e == e[:, :1])
    assert t.min() >= L - 20 and t.max() <= L - 1
    assert len(np.unique(t[:, 0])) > 3 and len(np.unique(e[:, 0])) == N


def test_regularizer_normalises_with_the_statistics_of_the_advantages():
    """Eq. 21 fits the reward on observations normalised as in the intrinsic advantages of
    the same update: with the statistics the rollout was normalised with, not those the
    update folds the rollout into. With one env and segments as long as the buffer, the
    regulariser batch is the rollout itself, so the logged ``reg_loss`` (taken before the
    reward step) can be recomputed exactly."""
    T = 32
    config = cln.Config(**{**TINY, "num_envs": 1, "num_steps": T, "num_minibatches": 1,
                           "num_epochs": 1, "reward_steps": 1, "segment_length": T,
                           "reward_buffer_size": T, "reward_batch_size": 4,
                           "total_steps": T, "reward_scale": 1e-3})
    tr = cln.make_train(config, envs.make("pendulum"))
    state = tr.init(jax.random.PRNGKey(0))
    new_state, metrics = jax.jit(tr.update)(state)
    _, batch, _, _, _ = cln.collect(tr.parts, state)
    seg = cln.sample_segments(tr.parts, new_state.reward_buffer, jax.random.PRNGKey(1))
    raw = new_state.reward_buffer.data["obs"][:, 0]
    np.testing.assert_array_equal(seg.obs, jnp.broadcast_to(raw, seg.obs.shape))
    # The rollout (advantages, V targets) was normalised with the old statistics ...
    np.testing.assert_allclose(batch.obs[:, 0], state.obs_stats.normalize(raw), rtol=1e-6)
    rp = {"reward_body": state.params["reward_body"], "eta": state.params["eta"]}
    old = float(cln.regularizer(tr.parts, rp, state.obs_stats, seg))
    new = float(cln.regularizer(tr.parts, rp, new_state.obs_stats, seg))
    assert abs(new - old) > 0.05 * old, (old, new)  # the two normalisations differ here
    # ... and so was eq. 21's batch.
    assert float(metrics["reg_loss"]) == pytest.approx(old, rel=1e-5), (old, new)


# --- Config, plumbing, learning -----------------------------------------------------------


def test_bad_configs_fail_before_compiling():
    with pytest.raises(ValueError, match=r"terms='bogus'.*best-response"):
        cln.Config(terms="bogus")
    with pytest.raises(ValueError, match="segment_length"):
        cln.Config(num_steps=8, segment_length=16)
    with pytest.raises(ValueError, match="reward_buffer_size"):
        cln.Config(num_envs=4, num_steps=128, reward_buffer_size=100)
    with pytest.raises(ValueError, match="noise_std"):
        cln.Config(noise_std=0.0)
    with pytest.raises(TypeError, match=r"expected metareward\.algos\.cln\.Config"):
        cln.make_train(ppo.Config(), envs.make("pendulum"))


def test_cln_kernel_std_scales_only_the_cln_maps_kernels():
    """``cln_kernel_std`` draws the CLN maps' kernels from N(0, std^2) (0.01 by default, the
    nets' STN init); every other parameter is the default init's."""
    small = dict(TINY, total_steps=64)
    inits = {std: cln.make_train(cln.Config(**small, cln_kernel_std=std),
                                 envs.make("pendulum")).init(jax.random.PRNGKey(0)).params
             for std in (0.01, 0.1)}
    flat = {std: dict(jax.tree_util.tree_flatten_with_path(p)[0]) for std, p in inits.items()}
    scaled = 0
    for path, a in flat[0.01].items():
        name = jax.tree_util.keystr(path)
        b = flat[0.1][path]
        if "cln_" in name and ("f_c" in name or "h_c" in name) and "kernel" in name:
            np.testing.assert_allclose(b, 10.0 * np.asarray(a), rtol=1e-6)
            scaled += 1
        else:
            np.testing.assert_array_equal(b, a)
    assert scaled == 2  # f_c and h_c of the one CLN layer
    with pytest.raises(ValueError, match="cln_kernel_std"):
        cln.Config(cln_kernel_std=0.0)


class NaNReward(Wrapper):
    def step(self, state, action):
        s = self.env.step(state, action)
        return s.replace(reward=s.reward * jnp.nan)


def test_nonfinite_steps_are_skipped_and_reported():
    trainer = cln.make_train(cln.Config(**{**TINY, "total_steps": 64}),
                             NaNReward(envs.make("pendulum")))
    state, metrics = jax.jit(trainer.train)(jax.random.PRNGKey(0))
    assert int(state.nonfinite) > 0
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
    with pytest.raises(FloatingPointError, match="update 0"):
        check_finite(metrics)


def test_discrete_actions_train_and_keep_eta_shape():
    trainer = cln.make_train(cln.Config(**{**TINY, "terms": "all", "total_steps": 96}),
                             envs.make("cartpole"))
    state, metrics = jax.jit(trainer.train)(jax.random.PRNGKey(0))
    check_finite(metrics)
    assert state.params["eta"].shape == ((8 + 1) * 2,)
    r = cln.intrinsic_reward(trainer.parts, state.params, state.obs_stats, jnp.zeros((5, 4)),
                                 jnp.array([0, 1, 0, 1, 1]))
    assert r.shape == (5,) and np.all(np.isfinite(np.asarray(r)))


class TinyBody(nn.Module):
    """A user-defined reward body: ``body(obs, action) -> [..., 3]`` features."""

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        return jnp.sin(nn.Dense(3)(jnp.concatenate([obs, action], axis=-1)))


class ScalarBody(nn.Module):
    """Not a reward body: one number per transition, no feature axis."""

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        return nn.Dense(1)(obs)[..., 0]


def test_any_flax_module_can_be_the_reward_body():
    """``make_train(config, env, reward_body=...)``: a user's flax module gives the reward's
    features (eta then has ``(3 + 1)`` entries) and one update trains with finite metrics;
    the default (``None``) is the config's MLP, the same as passing it explicitly."""
    config = cln.Config(**{**TINY, "total_steps": 32})
    env = envs.make("pendulum")
    trainer = cln.make_train(config, env, reward_body=TinyBody())
    assert isinstance(trainer.reward_body, TinyBody) and trainer.parts.num_features == 3
    state = trainer.init(jax.random.PRNGKey(0))
    assert state.params["eta"].shape == (3 + 1,)
    assert set(state.params["reward_body"]["params"]) == {"Dense_0"}
    new_state, metrics = jax.jit(trainer.update)(state)
    check_finite(jax.tree.map(lambda x: x[None], metrics))
    assert int(new_state.nonfinite) == 0
    episodic = {"episode_return", "episode_return_std", "episode_length", "intrinsic_return"}
    for k, v in metrics.items():  # no episode ends in 16 steps: those metrics are NaN
        assert k in episodic or np.all(np.isfinite(np.asarray(v))), k
    assert {"reg_loss", "reg_explained", "adv_corr", "hypergrad_norm", "loss"} <= set(metrics)
    assert not np.array_equal(new_state.params["reward_body"]["params"]["Dense_0"]["kernel"],
                              state.params["reward_body"]["params"]["Dense_0"]["kernel"])
    r = cln.intrinsic_reward(trainer.parts, new_state.params, new_state.obs_stats,
                             jnp.zeros((5, 3)), jnp.zeros((5, 1)))
    assert r.shape == (5,) and np.all(np.isfinite(np.asarray(r)))
    # The default body, and the same module passed explicitly, initialise alike.
    default = cln.make_train(config, env)
    explicit = cln.make_train(config, env, reward_body=RewardBody(False, (8, 8), "tanh"))
    assert default.reward_body == explicit.reward_body
    for a, b in zip(jax.tree.leaves(default.init(jax.random.PRNGKey(0)).params),
                    jax.tree.leaves(explicit.init(jax.random.PRNGKey(0)).params), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="must return features"):
        cln.make_train(config, env, reward_body=ScalarBody())


def test_runs_through_the_driver_with_its_metrics(tmp_path):
    """`metareward train cln --env pendulum` in-process: records carry the intrinsic and
    extrinsic returns (Figure 6) and the per-term hypergradient norms."""
    opts = driver.RunOptions(seeds=2, chunk_updates=2, checkpoint_every=1, eval_episodes=2)
    plan = driver.prepare("cln", "pendulum",
                          overrides={"total_steps": "4096", "num_envs": "4", "num_steps": "256",
                                     "num_minibatches": "4", "num_epochs": "2", "terms": "all",
                                     "reward_buffer_size": "2048", "hidden": "16,16"},
                          options=opts)
    assert plan.config.reward_scale == cln.PRESETS["pendulum"].reward_scale
    res = driver.start(plan, tmp_path / "run", stream=io.StringIO(), progress=False)
    assert res.status == "finished"
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert len(recs) == 2 * 2  # 4 updates in chunks of 2, 2 seeds
    for r in recs:
        for k in ("intrinsic_return", "return_mean", "hypergrad_norm", "hypergrad_eq9",
                  "hypergrad_eq10", "hypergrad_eq11", "reg_loss", "reg_explained", "adv_corr",
                  "noise_std"):
            assert k in r, k
        assert r["hypergrad_eq9"] > 0 and r["reg_loss"] > 0


def _cartpole_returns(keys: jax.Array, total_steps: int = 100_000, **overrides) -> np.ndarray:
    """Final evaluation (32 episodes) of CLN (best-response) on CartPole, ``total_steps``
    steps, the cartpole preset with ``overrides``: per-seed means."""
    config = dataclasses.replace(cln.preset("cartpole"), total_steps=total_steps, **overrides)
    assert config.terms == "best-response"
    trainer = cln.make_train(config, envs.make("cartpole"))
    state, metrics = jax.jit(jax.vmap(trainer.train))(keys)
    check_finite(metrics)
    ev = jax.jit(jax.vmap(lambda s, k: trainer.evaluate(s, k, 32)))(
        state, jax.random.split(jax.random.PRNGKey(7), len(keys)))
    return np.asarray(ev).mean(axis=1)


@pytest.mark.slow
@pytest.mark.learning
def test_cln_learns_cartpole():
    """CLN with the library's defaults (cartpole preset: best-response, lambda = 1, no
    clipping of the reward side's step) learns: every one of 4 seeds >= 120 after 100k
    steps (random play ~20; measured 2026-12-02: 155, 495, 488, 492).

    This tests CLN's machinery (the conditioned policy, eq. 21's regulariser, the policy
    phase), not its hypergradient: with ``hypergrad_coef=0`` it passes too (500, 495, 307,
    219). The measurements of the hypergradient against that control are in
    ``experiments/results/cpu/CLN_SECTION_NOTES.md``."""
    keys = jax.random.split(jax.random.PRNGKey(42), 4)
    per_seed = _cartpole_returns(keys)
    assert np.all(per_seed >= 120.0), per_seed


@pytest.mark.slow
@pytest.mark.learning
def test_cln_hypergradient_alone_trains_the_reward():
    """The best-response hypergradient (eq. 15) carries the extrinsic signal: with eq. 21's
    regulariser switched off (``regularizer_coef=0``, a diagnostic, not the paper's
    method), eta is trained by ``g^eta`` alone and the body phi stays at its random
    initialisation. Against the same runs with ``hypergrad_coef=0`` (the reward frozen at
    its initialisation), CartPole's preset for 250k steps, 8 seeds (``split(PRNGKey(42),
    4)`` and ``split(PRNGKey(1), 4)``): the hypergradient's mean final return must exceed
    the frozen reward's by 80 and win by more than 20 on at least 4 of the 8 seeds.

    Measured 2026-12-02 (this test's run, one vmap of 8): hypergradient 257, 467, 10, 320;
    500, 9, 42, 50 (mean 207); frozen reward 9, 16, 9, 15; 9, 9, 9, 117 (mean 24). With
    ``hypergrad_coef=0`` in both arms the two are the same run and the test fails.

    This is the only setting where CLN's hypergradient was seen to matter. With the
    regulariser on (the method as published), no setting tried beat ``hypergrad_coef=0``
    robustly (``experiments/results/cpu/CLN_SECTION_NOTES.md``): there eta's step is
    set by eq. 21, whose gradient is ~3000 times the hypergradient's on CartPole."""
    keys = jnp.concatenate([jax.random.split(jax.random.PRNGKey(42), 4),
                            jax.random.split(jax.random.PRNGKey(1), 4)])
    hyper = _cartpole_returns(keys, 250_000, regularizer_coef=0.0)
    frozen = _cartpole_returns(keys, 250_000, regularizer_coef=0.0, hypergrad_coef=0.0)
    assert hyper.mean() > frozen.mean() + 80.0, (hyper, frozen)
    assert np.sum(hyper > frozen + 20.0) >= 4, (hyper, frozen)
