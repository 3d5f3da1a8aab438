"""metareward.meta against closed forms: HVPs vs dense Hessians, CG vs a dense solve,
implicit and unrolled hypergradients of a quadratic bilevel problem, ES vs the gradient."""

import itertools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
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


def test_cg_info_and_negative_curvature():
    rng = np.random.default_rng(11)
    n = 10
    A = jnp.asarray(spd(rng, n), jnp.float32)
    b = jnp.asarray(rng.normal(size=n), jnp.float32)
    x, info = cg_solve(lambda v: A @ v, b, maxiter=n, tol=1e-5, return_info=True)
    assert not bool(info.negative_curvature) and 1 <= int(info.iterations) <= n
    assert float(info.residual_norm) <= 1e-5 * float(jnp.linalg.norm(b)) * 1.01
    np.testing.assert_allclose(info.residual_norm, jnp.linalg.norm(b - A @ x), atol=1e-5)
    # An indefinite matrix: CG stops at the first direction of non-positive curvature and
    # returns the (finite) iterate before it, instead of dividing by p'Ap <= 0.
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    M = jnp.asarray((q * np.linspace(-3.0, 5.0, n)) @ q.T, jnp.float32)
    for seed in range(5):
        bb = jnp.asarray(np.random.default_rng(seed).normal(size=n), jnp.float32)
        x, info = cg_solve(lambda v: M @ v, bb, maxiter=50, tol=0.0, return_info=True)
        assert bool(jnp.all(jnp.isfinite(x))) and bool(info.negative_curvature)
        k = int(info.iterations) - 1  # the iterations that updated x
        assert 0 < k < n
        ref = cg_solve(lambda v: M @ v, bb, maxiter=k, tol=0.0)
        np.testing.assert_allclose(x, ref, rtol=1e-6, atol=1e-6)
    b0 = jnp.zeros(n)  # a zero right-hand side: zero iterations, zero answer
    x, info = cg_solve(lambda v: A @ v, b0, maxiter=5, return_info=True)
    assert int(info.iterations) == 0 and float(jnp.abs(x).max()) == 0.0


def test_cg_restarts_raise_the_damping_past_the_negative_curvature():
    """Adaptive damping: on an indefinite matrix (eigenvalues -3 .. 5), CG without restarts
    stops at negative curvature; with restarts it raises the damping until ``A + d I`` is
    positive definite along every direction it searches, and then solves that damped
    system to the tolerance (against a dense solve with the damping it reports)."""
    rng = np.random.default_rng(12)
    n = 10
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    eig = np.linspace(-3.0, 5.0, n)
    M = jnp.asarray((q * eig) @ q.T, jnp.float32)
    for seed in range(5):
        b = jnp.asarray(np.random.default_rng(seed).normal(size=n), jnp.float32)
        _, plain = cg_solve(lambda v: M @ v, b, maxiter=3 * n, tol=1e-6, damping=0.1,
                            return_info=True)
        assert bool(plain.negative_curvature)
        assert float(plain.min_curvature) <= 0.0
        x, info = cg_solve(lambda v: M @ v, b, maxiter=3 * n, tol=1e-6, damping=0.1,
                           restarts=6, return_info=True)
        d = float(info.damping)
        assert not bool(info.negative_curvature) and d > 3.0, d  # past lambda_min = -3
        assert float(info.min_curvature) > 0.0
        ref = np.linalg.solve(np.asarray(M, np.float64) + d * np.eye(n), np.asarray(b))
        np.testing.assert_allclose(x, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    # Without negative curvature the damping is left as given.
    A = jnp.asarray(spd(rng, n), jnp.float32)
    _, info = cg_solve(lambda v: A @ v, b, maxiter=n, damping=0.1, restarts=3, return_info=True)
    assert float(info.damping) == pytest.approx(0.1) and not bool(info.negative_curvature)


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

    def val_loss(lg):  # float64 numpy: the validation loss at the exact ridge solution
        w = np.linalg.solve(2 * X.T @ X / 40 + 2 * np.exp(lg) * np.eye(6), 2 * X.T @ y / 40)
        return np.mean((Xv @ w - yv) ** 2), w

    lg, eps = 0.3, 1e-5
    fd = (val_loss(lg + eps)[0] - val_loss(lg - eps)[0]) / (2 * eps)
    X, Xv, y, yv = (jnp.asarray(a, jnp.float32) for a in (X, Xv, y, yv))
    inner = lambda w, lg: jnp.mean((X @ w - y) ** 2) + jnp.exp(lg) * jnp.sum(w**2)
    outer = lambda w, lg: jnp.mean((Xv @ w - yv) ** 2)
    w_star = jnp.asarray(val_loss(lg)[1], jnp.float32)
    g_imp = implicit_hypergrad(inner, outer, w_star, jnp.float32(lg), maxiter=6)
    sgd = lambda w, lg, k: w - 0.1 * jax.grad(inner)(w, lg)
    g_unr = unrolled_hypergrad(sgd, outer, jnp.zeros(6), jnp.float32(lg), 500)
    assert abs(fd) > 1e-2  # a non-trivial derivative
    assert float(g_imp) == pytest.approx(fd, rel=2e-3)
    assert float(g_unr) == pytest.approx(fd, rel=2e-3)


def mlp_problem(seed):
    """A small non-quadratic bilevel problem: a tanh MLP regressed on targets produced by
    the hyperparameters (a learned "reward" h weighting the inputs), with weight decay so
    the inner minimum is strict."""
    rng = np.random.default_rng(seed)
    X = jnp.asarray(rng.normal(size=(32, 3)), jnp.float32)
    Xv = jnp.asarray(rng.normal(size=(24, 3)), jnp.float32)
    yv = jnp.asarray(rng.normal(size=24), jnp.float32)
    theta = {"w1": jnp.asarray(0.5 * rng.normal(size=(3, 8)), jnp.float32),
             "w2": jnp.asarray(0.5 * rng.normal(size=8), jnp.float32)}
    h = {"v": jnp.asarray(rng.normal(size=3), jnp.float32), "s": jnp.float32(0.7)}

    def net(t, x):
        return jnp.tanh(x @ t["w1"]) @ t["w2"]

    def inner(t, h):
        target = h["s"] * jnp.tanh(X @ h["v"])
        l2 = sum(jnp.sum(a**2) for a in jax.tree.leaves(t))
        return jnp.mean((net(t, X) - target) ** 2) + 0.02 * l2

    def outer(t, h):
        return jnp.mean((net(t, Xv) - yv) ** 2) + 0.01 * jnp.sum(h["v"] ** 2)

    return theta, h, inner, outer


def central_fd(f, h, directions, eps):
    """Central finite differences of scalar f at pytree h along each direction, in
    float64 (f is compiled once for all of them)."""
    with jax.enable_x64(True):
        f64 = jax.jit(f)
        to64 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), t)
        h64, out = to64(h), []
        for d in map(to64, directions):
            plus = f64(jax.tree.map(lambda a, b: a + eps * b, h64, d))
            minus = f64(jax.tree.map(lambda a, b: a - eps * b, h64, d))
            out.append(float((plus - minus) / (2 * eps)))
        return out


def random_directions(tree, n, seed):
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    return [jax.tree.map(lambda a, k=k: jax.random.normal(k, a.shape), tree) for k in keys]


def tree_dot(a, b):
    return float(sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b),
                                                    strict=True)))


def test_unrolled_adam_lookahead_matches_finite_differences():
    """LIRPG's use: params carry (theta, Adam state); one and three differentiable Adam
    steps, the meta-gradient checked along random directions against a float64 central
    finite difference of the same computation."""
    theta, h, inner, outer = mlp_problem(6)
    opt = optax.adam(3e-2)
    state = opt.init(theta)
    for _ in range(3):  # warm up the moments, so the look-ahead is not a sign step
        upd, state = opt.update(jax.grad(inner)(theta, h), state)
        theta = optax.apply_updates(theta, upd)

    def adam_step(carry, h, k):
        t, s = carry
        upd, s = opt.update(jax.grad(inner)(t, h), s)
        return optax.apply_updates(t, upd), s

    outer_of_carry = lambda carry, h: outer(carry[0], h)
    for K in (1, 3):
        g = unrolled_hypergrad(adam_step, outer_of_carry, (theta, state), h, K)
        f = lambda hh, K=K: outer_of_carry(
            jax.lax.fori_loop(0, K, lambda k, c: adam_step(c, hh, k),
                              jax.tree.map(lambda a: jnp.asarray(a, jnp.float64)
                                           if jnp.issubdtype(a.dtype, jnp.floating) else a,
                                           (theta, state))), hh)
        dirs = random_directions(h, 3, seed=K)
        for i, (d, fd) in enumerate(zip(dirs, central_fd(f, h, dirs, 1e-5), strict=True)):
            assert tree_dot(g, d) == pytest.approx(fd, rel=1e-3, abs=1e-6), (K, i)


def test_has_aux_and_remat():
    theta, h, inner, outer = mlp_problem(7)
    sgd = lambda t, h, k: jax.tree.map(lambda a, g: a - 0.1 * g, t, jax.grad(inner)(t, h))
    outer_aux = lambda t, h: (outer(t, h), {"val": outer(t, h)})
    g = unrolled_hypergrad(sgd, outer, theta, h, 20)
    g_aux, aux = unrolled_hypergrad(sgd, outer_aux, theta, h, 20, has_aux=True)
    g_remat = unrolled_hypergrad(sgd, outer, theta, h, 20, remat=True)
    final = jax.lax.fori_loop(0, 20, lambda k, t: sgd(t, h, k), theta)
    np.testing.assert_allclose(aux["val"], outer(final, h), rtol=1e-6)
    for a, b, c in zip(jax.tree.leaves(g), jax.tree.leaves(g_aux), jax.tree.leaves(g_remat),
                       strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7)
    gi = implicit_hypergrad(inner, outer, theta, h, maxiter=5, damping=0.1)
    gi_aux, aux_i, info = implicit_hypergrad(inner, outer_aux, theta, h, maxiter=5,
                                             damping=0.1, has_aux=True, return_info=True)
    np.testing.assert_allclose(aux_i["val"], outer(theta, h), rtol=1e-6)
    assert 0 < int(info.iterations) <= 5
    for a, b in zip(jax.tree.leaves(gi), jax.tree.leaves(gi_aux), strict=True):
        np.testing.assert_array_equal(a, b)


def test_implicit_on_a_nonquadratic_problem_matches_finite_differences():
    """At a (numerically) exact stationary point of a tanh-MLP inner problem, the implicit
    hypergradient equals the finite-difference derivative of outer(p*(h), h), p*(h)
    found by Newton's method in float64 from the same start."""
    theta, h, inner, outer = mlp_problem(8)
    flat0, unravel = jax.flatten_util.ravel_pytree(theta)

    def solve(hh, p0, iters):
        def newton(p, _):
            f = lambda q: inner(unravel(q), hh)
            return p - jnp.linalg.solve(jax.hessian(f)(p) + 1e-9 * jnp.eye(p.size),
                                        jax.grad(f)(p)), None
        return jax.lax.scan(newton, p0, None, length=iters)[0]

    # Reach a minimum by gradient descent, then polish with Newton in float64.
    sgd = lambda t, hh, k: jax.tree.map(lambda a, g: a - 0.2 * g, t, jax.grad(inner)(t, hh))
    theta = jax.lax.fori_loop(0, 3000, lambda k, t: sgd(t, h, k), theta)
    with jax.enable_x64(True):
        h64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), h)
        p64 = solve(h64, jnp.asarray(jax.flatten_util.ravel_pytree(theta)[0], jnp.float64), 20)
        H = jax.hessian(lambda q: inner(unravel(q), h64))(p64)
        assert np.linalg.eigvalsh(np.asarray(H)).min() > 0  # a strict local minimum
    p_star = unravel(jnp.asarray(p64, jnp.float32))
    assert float(jnp.linalg.norm(jax.flatten_util.ravel_pytree(
        jax.grad(inner)(p_star, h))[0])) < 1e-4
    n = flat0.size
    g = implicit_hypergrad(inner, outer, p_star, h, maxiter=4 * n, tol=0.0)
    f = lambda hh: outer(unravel(solve(hh, p64, 8)), hh)
    dirs = random_directions(h, 3, seed=10)
    for i, (d, fd) in enumerate(zip(dirs, central_fd(f, h, dirs, 1e-5), strict=True)):
        assert tree_dot(g, d) == pytest.approx(fd, rel=5e-3, abs=1e-5), i


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
    # Ties share their average rank: an even fitness (equal within each antithetic pair)
    # gives exactly no direction, whatever the order of the members.
    r = centered_ranks(jnp.array([1.0, 2.0, 1.0, 5.0]))
    np.testing.assert_allclose(r, [-1 / 3, 1 / 6, -1 / 3, 0.5], rtol=1e-6)
    d, _ = es_grad(lambda x: -jnp.sum(x**2), p, key, pop_size=16, sigma=0.1)
    np.testing.assert_allclose(d, np.zeros(4), atol=1e-6)  # (by position: O(1))


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


def test_swept_settings_are_traced_under_vmap():
    """damping, the Neumann step and sigma may be vmapped (swept) hyperparameters."""
    A, B, c, h, hv, inner, outer, p_star, _ = quadratic_problem(13)
    dampings = jnp.array([0.0, 0.5, 2.0])
    gs = jax.jit(jax.vmap(lambda d: hv(implicit_hypergrad(inner, outer, p_star, h,
                                                          maxiter=8, damping=d))))(dampings)
    for g, d in zip(gs, dampings, strict=True):
        ref = B.T @ np.linalg.solve(A + float(d) * np.eye(8), join(p_star) - c)
        np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-5)
    alphas = jnp.array([0.1, 0.15])
    gn = jax.vmap(lambda a: hv(implicit_hypergrad(inner, outer, p_star, h, solver="neumann",
                                                  maxiter=300, neumann_alpha=a)))(alphas)
    np.testing.assert_allclose(gn, np.stack([gs[0]] * 2), rtol=1e-3, atol=1e-4)
    f = lambda x: -jnp.sum((x - 1.0) ** 2)
    sig = jnp.array([0.01, 0.1])
    ds, _ = jax.vmap(lambda s: es_grad(f, jnp.zeros(3), jax.random.PRNGKey(0), pop_size=8,
                                       sigma=s))(sig)
    for d, s in zip(ds, sig, strict=True):
        np.testing.assert_allclose(
            d, es_grad(f, jnp.zeros(3), jax.random.PRNGKey(0), pop_size=8, sigma=float(s))[0],
            rtol=1e-5)


def test_nan_fitness_ranks_worst():
    r = centered_ranks(jnp.array([1.0, jnp.nan, -5.0, 2.0]))
    np.testing.assert_allclose(r, [1 / 6, -0.5, -1 / 6, 0.5], rtol=1e-6)
    # A member whose fitness is NaN pulls the ES direction away from itself.
    f = lambda x: jnp.where(x[0] > 0, jnp.nan, -jnp.sum(x**2))
    d, vals = es_grad(f, jnp.zeros(2), jax.random.PRNGKey(3), pop_size=64, sigma=0.1)
    assert bool(jnp.isnan(vals).any()) and bool(jnp.all(jnp.isfinite(d))) and float(d[0]) < 0


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
    with pytest.raises(ValueError, match=r"num_steps must be a Python int >= 1, got 2\.0"):
        unrolled_hypergrad(lambda p, h, k: p, lambda p, h: p, 0.0, 0.0, 2.0)
    with pytest.raises(ValueError, match="damping must be >= 0, got -1"):
        implicit_hypergrad(lambda p, h: p, lambda p, h: p, 0.0, 0.0, damping=-1.0)
    with pytest.raises(ValueError, match="maxiter must be a Python int >= 1"):
        cg_solve(lambda v: v, jnp.ones(2), maxiter=0)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        neumann_solve(lambda v: v, jnp.ones(2), steps=3, alpha=0.0)
    with pytest.raises(ValueError, match="sigma must be > 0, got nan"):
        es_grad(lambda x: x.sum(), jnp.zeros(2), jax.random.PRNGKey(0), pop_size=4,
                sigma=float("nan"))
    with pytest.raises(ValueError, match="pop_size must be a Python int >= 2"):
        es_grad(lambda x: x.sum(), jnp.zeros(2), jax.random.PRNGKey(0), pop_size=1, sigma=0.1)
