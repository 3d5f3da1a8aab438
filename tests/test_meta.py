"""metareward.meta against closed forms: HVPs vs dense Hessians, CG vs a dense solve,
implicit and unrolled hypergradients of a quadratic bilevel problem, ES vs the gradient."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareward.meta import (
    centered_ranks,
    cg_solve,
    es_grad,
    hvp,
    implicit_hypergrad,
    neumann_solve,
    unrolled_hypergrad,
)

jax.config.update("jax_enable_x64", False)


def spd(rng, n, cond=10.0):
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (q * np.linspace(1.0, cond, n)) @ q.T


def split(v):  # a pytree view of a vector: params as {"a": [3], "b": [n-3]}
    return {"a": v[:3], "b": v[3:]}


def join(t):
    return jnp.concatenate([t["a"], t["b"]])


def test_hvp_matches_dense_hessian():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=7), jnp.float32)

    def f(t):
        x = join(t)
        return jnp.sum(jnp.sin(x) * x**2) + jnp.sum(x) ** 2 * jnp.dot(w, x)

    p = split(jnp.asarray(rng.normal(size=7), jnp.float32))
    v = split(jnp.asarray(rng.normal(size=7), jnp.float32))
    dense = jax.hessian(lambda x: f(split(x)))(join(p))
    np.testing.assert_allclose(join(hvp(f, p, v)), dense @ join(v), rtol=1e-4, atol=1e-4)


def test_cg_matches_dense_solve_with_and_without_damping():
    rng = np.random.default_rng(1)
    n = 12
    A = jnp.asarray(spd(rng, n), jnp.float32)
    b = split(jnp.asarray(rng.normal(size=n), jnp.float32))
    mv = lambda v: split(A @ join(v))
    x = cg_solve(mv, b, maxiter=n, tol=1e-8)
    np.testing.assert_allclose(join(x), np.linalg.solve(A, join(b)), rtol=1e-4, atol=1e-5)
    xd = cg_solve(mv, b, maxiter=n, tol=1e-8, damping=0.5)
    np.testing.assert_allclose(
        join(xd), np.linalg.solve(A + 0.5 * np.eye(n), join(b)), rtol=1e-4, atol=1e-5
    )
    errs = [
        np.linalg.norm(join(cg_solve(mv, b, maxiter=k, tol=0.0)) - np.linalg.solve(A, join(b)))
        for k in (1, 3, 6, 12)
    ]
    assert all(e2 < e1 for e1, e2 in itertools.pairwise(errs)), errs


def test_neumann_converges_for_a_well_scaled_matrix():
    rng = np.random.default_rng(2)
    A = jnp.asarray(spd(rng, 6, cond=4.0), jnp.float32)  # eigenvalues in [1, 4]
    b = jnp.asarray(rng.normal(size=6), jnp.float32)
    exact = np.linalg.solve(A, b)
    errs = [np.linalg.norm(neumann_solve(lambda v: A @ v, b, steps=k, alpha=0.4) - exact)
            for k in (5, 20, 80)]
    assert errs[2] < 1e-4 * np.linalg.norm(exact) and errs[0] > errs[1] > errs[2]


def quadratic_problem(seed, n=8, m=5):
    rng = np.random.default_rng(seed)
    A = jnp.asarray(spd(rng, n), jnp.float32)
    B = jnp.asarray(rng.normal(size=(n, m)), jnp.float32)
    c = jnp.asarray(rng.normal(size=n), jnp.float32)
    h = {"x": jnp.asarray(rng.normal(size=2), jnp.float32),
         "y": jnp.asarray(rng.normal(size=m - 2), jnp.float32)}
    hv = lambda h: jnp.concatenate([h["x"], h["y"]])
    inner = lambda p, h: 0.5 * join(p) @ A @ join(p) - join(p) @ B @ hv(h)
    outer = lambda p, h: 0.5 * jnp.sum((join(p) - c) ** 2)
    p_star = np.linalg.solve(A, B @ hv(h))
    closed = B.T @ np.linalg.solve(A, p_star - c)
    return A, B, c, h, hv, inner, outer, split(jnp.asarray(p_star, jnp.float32)), closed


def test_implicit_hypergrad_matches_closed_form_and_improves_with_maxiter():
    A, B, c, h, hv, inner, outer, p_star, closed = quadratic_problem(3)
    g = implicit_hypergrad(inner, outer, p_star, h, maxiter=8)
    np.testing.assert_allclose(hv(g), closed, rtol=1e-4, atol=1e-5)
    errs = [np.linalg.norm(hv(implicit_hypergrad(inner, outer, p_star, h, maxiter=k,
                                                 tol=0.0)) - closed) for k in (1, 2, 4, 8)]
    assert errs[0] > errs[1] > errs[2] > errs[3], errs
    # Damping solves with A + d I instead of A.
    gd = implicit_hypergrad(inner, outer, p_star, h, maxiter=8, damping=2.0)
    damped = B.T @ np.linalg.solve(A + 2.0 * np.eye(8), join(p_star) - c)
    np.testing.assert_allclose(hv(gd), damped, rtol=1e-4, atol=1e-5)
    gn = implicit_hypergrad(inner, outer, p_star, h, solver="neumann", maxiter=300,
                            neumann_alpha=0.15)
    np.testing.assert_allclose(hv(gn), closed, rtol=1e-3, atol=1e-4)


def test_unrolled_hypergrad_matches_closed_form_and_approaches_implicit():
    A, B, c, h, hv, inner, outer, _p_star, closed = quadratic_problem(4)
    lr = 0.08
    p0 = split(jnp.zeros(8, jnp.float32))

    def sgd(p, h, k):
        return jax.tree.map(lambda a, g: a - lr * g, p, jax.grad(inner)(p, h))

    M = np.eye(8) - lr * np.asarray(A)
    for K in (1, 5):
        MK = np.linalg.matrix_power(M, K)
        pK = (np.eye(8) - MK) @ np.linalg.solve(A, B @ hv(h))
        expected = np.asarray(B).T @ np.linalg.solve(A, (np.eye(8) - MK).T @ (pK - c))
        g = unrolled_hypergrad(sgd, outer, p0, h, K)
        np.testing.assert_allclose(hv(g), expected, rtol=1e-4, atol=1e-5)
    errs = [np.linalg.norm(hv(unrolled_hypergrad(sgd, outer, p0, h, K)) - closed)
            for K in (5, 50, 400)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-3 * np.linalg.norm(closed), errs


def test_ridge_hyperparameter_implicit_and_unrolled_agree_with_finite_differences():
    rng = np.random.default_rng(5)
    X, Xv = rng.normal(size=(40, 6)), rng.normal(size=(30, 6))
    w_true = rng.normal(size=6)
    y, yv = X @ w_true + 0.5 * rng.normal(size=40), Xv @ w_true + 0.5 * rng.normal(size=30)
    X, Xv, y, yv = (jnp.asarray(a, jnp.float32) for a in (X, Xv, y, yv))
    inner = lambda w, lg: jnp.mean((X @ w - y) ** 2) + jnp.exp(lg) * jnp.sum(w**2)
    outer = lambda w, lg: jnp.mean((Xv @ w - yv) ** 2)

    def w_star(lg):
        return jnp.linalg.solve(2 * X.T @ X / 40 + 2 * jnp.exp(lg) * jnp.eye(6), 2 * X.T @ y / 40)

    lg = jnp.float32(0.3)
    eps = 1e-2
    fd = (outer(w_star(lg + eps), 0) - outer(w_star(lg - eps), 0)) / (2 * eps)
    g_imp = implicit_hypergrad(inner, outer, w_star(lg), lg, maxiter=6)
    sgd = lambda w, lg, k: w - 0.1 * jax.grad(inner)(w, lg)
    g_unr = unrolled_hypergrad(sgd, outer, jnp.zeros(6), lg, 500)
    assert float(g_imp) == pytest.approx(float(fd), rel=2e-2)
    assert float(g_unr) == pytest.approx(float(fd), rel=2e-2)


def test_es_grad_points_along_the_gradient():
    w = jnp.linspace(-1.0, 1.0, 10)
    f = lambda t: -jnp.sum((join(t) - w) ** 2) + jnp.sum(jnp.sin(join(t)))
    p = split(jnp.zeros(10))
    true = join(jax.grad(f)(p))
    for seed in range(3):
        d, vals = es_grad(f, p, jax.random.PRNGKey(seed), pop_size=4000, sigma=0.01,
                          shaping="none")
        cos = jnp.dot(join(d), true) / (jnp.linalg.norm(join(d)) * jnp.linalg.norm(true))
        assert cos >= 0.95 and vals.shape == (4000,)


def test_antithetic_sampling_lowers_variance():
    f = lambda x: -jnp.sum((x - 1.0) ** 2) + 10.0
    p = jnp.zeros(5)

    def spread(anti):
        ds = jax.vmap(lambda k: es_grad(f, p, k, pop_size=20, sigma=0.1, antithetic=anti,
                                        shaping="none")[0])(
            jax.random.split(jax.random.PRNGKey(0), 200))
        return float(jnp.mean(jnp.var(ds, axis=0)))

    assert spread(True) < 0.1 * spread(False)


def test_centered_ranks_invariant_to_monotone_transforms():
    f = lambda x: -jnp.sum((x - 0.3) ** 2)
    g = lambda x: jnp.exp(3 * f(x)) - 7.0
    p, key = jnp.zeros(4), jax.random.PRNGKey(1)
    d1, _ = es_grad(f, p, key, pop_size=64, sigma=0.1)
    d2, _ = es_grad(g, p, key, pop_size=64, sigma=0.1)
    np.testing.assert_allclose(d1, d2, rtol=1e-6, atol=1e-7)
    r = centered_ranks(jnp.array([3.0, -1.0, 10.0, 0.0]))
    np.testing.assert_allclose(r, [1 / 6, -0.5, 0.5, -1 / 6], rtol=1e-6)


def test_everything_under_jit_and_vmap():
    probs = [quadratic_problem(s) for s in (10, 11, 12)]
    A = jnp.stack([q[0] for q in probs])
    B = jnp.stack([q[1] for q in probs])
    c = jnp.stack([q[2] for q in probs])

    def one(A, B, c):
        inner = lambda p, h: 0.5 * p @ A @ p - p @ B @ h
        outer = lambda p, h: 0.5 * jnp.sum((p - c) ** 2)
        h = jnp.ones(B.shape[1])
        p_star = jnp.linalg.solve(A, B @ h)
        imp = implicit_hypergrad(inner, outer, p_star, h, maxiter=8)
        sgd = lambda p, h, k: p - 0.05 * jax.grad(inner)(p, h)
        unr = unrolled_hypergrad(sgd, outer, jnp.zeros_like(p_star), h, 3)
        es, _ = es_grad(lambda hh: -outer(jnp.linalg.solve(A, B @ hh), hh), h,
                        jax.random.PRNGKey(0), pop_size=8, sigma=0.1)
        return imp, unr, es, B.T @ jnp.linalg.solve(A, p_star - c)

    imp, unr, es, closed = jax.jit(jax.vmap(one))(A, B, c)
    np.testing.assert_allclose(imp, closed, rtol=1e-3, atol=1e-4)
    for i in range(3):
        single = one(A[i], B[i], c[i])
        np.testing.assert_allclose(unr[i], single[1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(es[i], single[2], rtol=1e-4, atol=1e-5)


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="solver must be one of"):
        implicit_hypergrad(lambda p, h: p, lambda p, h: p, 0.0, 0.0, solver="lu")
    with pytest.raises(ValueError, match="even pop_size"):
        es_grad(lambda x: x.sum(), jnp.zeros(2), jax.random.PRNGKey(0), pop_size=5, sigma=0.1)
    with pytest.raises(ValueError, match="shaping must be one of"):
        es_grad(lambda x: x.sum(), jnp.zeros(2), jax.random.PRNGKey(0), pop_size=4,
                sigma=0.1, shaping="rank")
    with pytest.raises(ValueError, match="num_steps must be"):
        unrolled_hypergrad(lambda p, h, k: p, lambda p, h: p, 0.0, 0.0, 0)
