# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Meta-gradient estimators on a toy bilevel problem
#
# Every method in `metareward` is a bilevel problem, `min_h L(w*(h))` with
# `w*(h) = argmin_w f(w, h)`, and differs mainly in how it estimates `dL/dh`:
#
# * **unrolled** (LIRPG, MetaGenRL): differentiate through `K` steps of the inner
#   optimiser, `meta.unrolled_hypergrad` (LIRPG's Algorithm 1 uses `K = 1`);
# * **implicit** (TARE, eq. 14): the implicit function theorem at `w*`,
#   `dL/dh = -(d2f/dh dw) [d2f/dw2]^-1 dL/dw`, the inverse-Hessian-vector product by
#   conjugate gradients, `meta.implicit_hypergrad(..., maxiter=CG steps)`;
# * **evolution strategies** (EPG, eq. 5): `meta.es_grad`, which needs no derivative at all.
#
# On a quadratic problem the exact hypergradient has a closed form, so we can measure
# each estimator's error against its cost. Inner problem:
# `f(w, h) = 0.5 w'Aw - w'Bh` (A symmetric positive definite), so `w*(h) = A^-1 B h`;
# outer loss `L(w) = 0.5 |w - t|^2`; exact hypergradient `B' A^-1 (w*(h) - t)`.

# %%
import itertools
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import metareward
from metareward import meta

# metareward's XLA:CPU setting, before jax runs anything (`metareward.algos`, the command
# and the runtime apply it themselves; this notebook uses only `meta`).
metareward.configure_xla()

SMOKE = os.environ.get("METAREWARD_SMOKE") == "1"  # tiny budgets (the tests)
FIGURES = Path(os.environ.get("METAREWARD_FIGURES")
               or (Path(__file__).parent / "figures" if "__file__" in globals() else "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)
INTERACTIVE = "ipykernel" in sys.modules
if not INTERACTIVE:  # run as a script (or by the tests): no display needed
    plt.switch_backend("Agg")


def show(fig, name):
    """Saves the figure under FIGURES; shows it in Jupyter."""
    fig.savefig(FIGURES / name, dpi=80)
    plt.show() if INTERACTIVE else plt.close(fig)

# %% [markdown]
# ## The problem and its closed form
#
# `w` has 20 dimensions, `h` 5; the Hessian `A` has eigenvalues from 1 to 50 (condition
# number 50), so plain gradient descent on the inner problem needs many steps.

# %%
n, m, cond = 20, 5, 50.0
rng = np.random.default_rng(0)
q, _ = np.linalg.qr(rng.normal(size=(n, n)))
A = jnp.asarray((q * np.linspace(1.0, cond, n)) @ q.T, jnp.float32)
B = jnp.asarray(rng.normal(size=(n, m)), jnp.float32)
target = jnp.asarray(rng.normal(size=n), jnp.float32)
h0 = jnp.asarray(rng.normal(size=m), jnp.float32)


def inner_loss(w, h):
    return 0.5 * w @ A @ w - w @ B @ h


def outer_loss(w, h):
    return 0.5 * jnp.sum((w - target) ** 2)


def w_star(h):
    return jnp.linalg.solve(A, B @ h)


exact = B.T @ jnp.linalg.solve(A, w_star(h0) - target)


def rel_err(g):
    return float(jnp.linalg.norm(g - exact) / jnp.linalg.norm(exact))


print("|exact hypergradient| =", float(jnp.linalg.norm(exact)))

# %% [markdown]
# ## Unrolled: differentiate through K steps of gradient descent
#
# From `w0 = 0` with step `1 / lambda_max`. Cost of one estimate: `K` inner gradients
# forward and `K` vector-Jacobian products backward, `2K` derivative evaluations.

# %%
lr = 1.0 / cond
w0 = jnp.zeros(n, jnp.float32)


def gd_step(w, h, _k):
    return w - lr * jax.grad(inner_loss)(w, h)


Ks = [1, 3, 10, 30, 100, 300] if not SMOKE else [1, 10, 100]
unrolled = {}
for K in Ks:
    g = jax.jit(lambda h, K=K: meta.unrolled_hypergrad(gd_step, outer_loss, w0, h, K))(h0)
    unrolled[K] = rel_err(g)
    print(f"unrolled K={K:4d}: relative error {unrolled[K]:.2e}")

# %% [markdown]
# ## Implicit: conjugate gradients on Hessian-vector products
#
# At the exact inner solution `w*` (here in closed form; in RL it is the trained policy)
# and, to show what an inexact inner solve costs, at the iterate `w_100` of 100 gradient
# steps. Cost: `s` Hessian-vector products, one gradient of `L` and one mixed product
# (`s + 2`), plus whatever reaching the inner solution cost (not counted here).

# %%
cg_steps = list(range(1, 21))
w_100 = jax.jit(lambda h: jax.lax.fori_loop(0, 100, lambda k, w: gd_step(w, h, k), w0))(h0)


@jax.jit
def implicit_all(w, h):
    # one hypergradient per CG budget; maxiter is static, so unrolled in Python
    return [meta.implicit_hypergrad(inner_loss, outer_loss, w, h, maxiter=s, tol=0.0,
                                    return_info=True) for s in cg_steps]


implicit = {}
for label, w in (("at w*", w_star(h0)), ("at w_100", w_100)):
    implicit[label] = [rel_err(g) for g, _ in implicit_all(w, h0)]
    info = implicit_all(w, h0)[-1][1]
    print(f"implicit {label}: error after 1, 5, 10, 20 CG steps "
          f"{[f'{implicit[label][s - 1]:.1e}' for s in (1, 5, 10, 20)]} "
          f"(CG iterations done: {int(info.iterations)})")

# %% [markdown]
# ## Evolution strategies: a population of perturbed `h`, no derivatives
#
# The fitness is `-L(w*(h))`, one full inner solve per member. Antithetic pairs and no
# rank shaping (`shaping="none"`), so the direction is an unbiased estimate of the gradient
# of the Gaussian-smoothed fitness, which for a quadratic equals the true gradient: the
# error is pure variance, shrinking like `1 / sqrt(population)`. Averaged over 8 noise
# draws. Cost: `population` inner solves.

# %%
pops = [4, 16, 64, 256, 1024] if not SMOKE else [4, 64, 1024]
fitness = lambda h: -outer_loss(w_star(h), h)
es = {}
for pop in pops:
    @jax.jit
    def es_dir(key, pop=pop):
        d, _ = meta.es_grad(fitness, h0, key, pop_size=pop, sigma=0.1, shaping="none")
        return -d  # an ascent direction on -L is a descent direction on L

    errs = [rel_err(es_dir(k)) for k in jax.random.split(jax.random.PRNGKey(1), 8)]
    es[pop] = float(np.mean(errs))
    print(f"ES population {pop:5d}: mean relative error {es[pop]:.2e}")

# %% [markdown]
# ## Error against cost, one figure
#
# Cost in derivative evaluations of the inner loss (gradients, VJPs, HVPs) or, for ES,
# inner solves. Wall time per estimate (after compilation) below the figure.

# %%
fig, ax = plt.subplots(figsize=(6.5, 4.5))
ax.loglog([2 * K for K in Ks], [unrolled[K] for K in Ks], "o-", label="unrolled GD, K steps")
for label, style in (("at w*", "s-"), ("at w_100", "s--")):
    ax.loglog([s + 2 for s in cg_steps], implicit[label], style, ms=3,
              label=f"implicit, 1..20 CG steps, {label}")
ax.loglog(pops, [es[p] for p in pops], "^-", label="ES, population size")
for K in Ks:
    ax.annotate(f"K={K}", (2 * K, unrolled[K]), fontsize=7, xytext=(3, 3),
                textcoords="offset points")
ax.set_xlabel("cost: inner-loss derivative evaluations (ES: inner solves)")
ax.set_ylabel("relative error of dL/dh")
ax.set_title("Meta-gradient estimators against the closed form (cond(A) = 50)")
ax.legend(fontsize=8)
fig.tight_layout()
show(fig, "02_metagradient_estimators.png")

# %%
def wall(fn, *args, repeat=20):
    jax.block_until_ready(fn(*args))  # compile
    t0 = time.perf_counter()
    for _ in range(repeat):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - t0) / repeat * 1e6


t_unrolled = wall(jax.jit(lambda h: meta.unrolled_hypergrad(gd_step, outer_loss, w0, h, 100)),
                  h0)
t_implicit = wall(jax.jit(lambda w, h: meta.implicit_hypergrad(inner_loss, outer_loss, w, h,
                                                               maxiter=20, tol=0.0)),
                  w_star(h0), h0)
t_es = wall(jax.jit(lambda k: meta.es_grad(fitness, h0, k, pop_size=1024, sigma=0.1,
                                           shaping="none")[0]), jax.random.PRNGKey(0))
print(f"wall time per estimate: unrolled K=100 {t_unrolled:.0f} us, implicit 20 CG steps "
      f"{t_implicit:.0f} us, ES population 1024 {t_es:.0f} us")

# %% [markdown]
# ## What the numbers say (checked, so this notebook fails if they stop being true)
#
# * Unrolled differentiation converges to the exact hypergradient only as `K` grows: with
#   condition number 50, `K = 1` (LIRPG's choice) is a crude, biased estimate and even
#   `K = 100` is not exact.
# * Implicit differentiation at the exact solution is near machine precision after about
#   as many CG steps as the Hessian has distinct eigenvalue clusters (at most 20 here),
#   for a fraction of the unrolled cost; at an inexact inner solution it is floored by
#   the inner error (`w_100`) however many CG steps it takes.
# * ES needs no derivatives, but its error only falls like `1 / sqrt(population)`.

# %%
assert unrolled[100] < unrolled[10] < unrolled[1], unrolled
assert unrolled[1] > 0.3, unrolled  # one step is far from the answer on this problem
exact_cg = implicit["at w*"]
assert exact_cg[-1] < 1e-3 * exact_cg[0] and exact_cg[-1] < 1e-4, exact_cg
assert all(b <= a * 1.5 for a, b in itertools.pairwise(exact_cg)), exact_cg  # ~monotone
assert min(implicit["at w_100"]) > 10 * exact_cg[-1], implicit  # floored by the inner error
assert exact_cg[9] < unrolled[100], (exact_cg[9], unrolled[100])  # 12 evals beat 200
assert es[pops[-1]] < es[pops[0]] / 4, es  # 256x the population: ~16x less error
print("all checks passed")
