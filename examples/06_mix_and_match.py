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
# # 6. Mix and match: reward nets and meta-gradient estimators across methods
#
# The original code bases fix each method's reward network and outer-gradient estimator
# together: LIRPG (Zheng et al. 2018) an MLP `r_eta(s, a)` and a one-step unrolled
# meta-gradient (Algorithm 1), TARE an LSTM `r_phi(s, a, r, t)` (`lstm-b-mul`, section
# B.3) and an implicit hypergradient (eq. 14). Here both are pieces:
#
# * **A. TARE's implicit estimator with an MLP reward**: a config field,
#   `reward_net="mlp-concat"` (TARE's Appendix F MLP over `[s, a, r, t]`).
# * **B. LIRPG's one-step estimator with TARE's `lstm-b-mul` reward**: TARE's trainer
#   exposes its objectives as functions of `(policy, reward params)`, and
#   `meta.unrolled_hypergrad(..., num_steps=1)` is LIRPG's estimator on any such pair.
#
# * **C. One reward module, three methods**: `make_train(config, env, reward_net=...)`
#   (LIRPG, TARE) and `reward_body=...` (CLN) take any flax module, so a reward written
#   once in the notebook trains under each method without touching library code.
#
# What is not a switch (yet): `tare.Config` has no field choosing the estimator, so B
# computes and compares the two estimates on TARE's objectives (the module functions
# `tare.rollout_segment`, `tare.objectives`, `tare.hypergradient`).

# %%
import dataclasses
import os
import sys
import time
import warnings
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from jax.flatten_util import ravel_pytree

from metareward import envs, meta
from metareward.algos import cln, lirpg, tare
from metareward.nets import PerStep

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


env = envs.make("chain")
SEEDS = 4

# %% [markdown]
# ## A. TARE's implicit hypergradient, an MLP reward
#
# The chain of notebook 3, the same preset, one field changed. The MLP sees each step on
# its own (no recurrence over the episode), so any credit it gives right moves for the goal
# must come from the state and time inputs.

# %%
cfg = dataclasses.replace(tare.preset("chain"), reward_net="mlp-concat")
if SMOKE:
    cfg = dataclasses.replace(cfg, total_steps=2 * cfg.num_envs * cfg.num_steps)
trainer_mlp = tare.make_train(cfg, env)
keys = jax.random.split(jax.random.PRNGKey(42), SEEDS)
t0 = time.perf_counter()
state, metrics = jax.jit(jax.vmap(trainer_mlp.train))(keys)
jax.block_until_ready(state)
evals = jax.jit(jax.vmap(lambda s, k: trainer_mlp.evaluate(s, k, 32)))(
    state, jax.random.split(jax.random.PRNGKey(7), SEEDS))
print(f"TARE + mlp-concat reward: {trainer_mlp.num_updates} updates x {SEEDS} seeds in "
      f"{time.perf_counter() - t0:.0f} s; evaluation return per seed (right path ~11.95, "
      f"left ~5): {np.round(np.asarray(evals).mean(axis=1), 2).tolist()}")
assert int(np.max(metrics["nonfinite"])) == 0
counts = {k: np.asarray(metrics[f"action{k}_count"]) for k in (0, 1)}
gap = ((np.asarray(metrics["r_param_action1"]) * counts[1]).sum(1) / counts[1].sum(1)
       - (np.asarray(metrics["r_param_action0"]) * counts[0]).sum(1) / counts[0].sum(1))
print("mean r_phi(right) - r_phi(left) over training, per seed:", np.round(gap, 2).tolist())

# %% [markdown]
# At the full budget (163,840 env steps per seed, about 2 minutes) 3 of the 4 seeds took
# the right-going path (evaluation returns 12.0, 11.6, 12.0; the fourth, 8.3, dithers), and
# over training the MLP reward paid right moves more than left ones on 3 of the 4 seeds
# (not the same three: the gap was -3.8 on the second seed, which still went right).
# Notebook 3 has the `lstm-b-mul` reward on the same seeds (and one more).

# %% [markdown]
# ## B. LIRPG's one-step meta-gradient, TARE's `lstm-b-mul` reward
#
# One rollout of a fresh PPO-TARE agent (default reward net `lstm-b-mul`), split by env
# column into a training and a validation half as TARE does. `tare.objectives` gives
# `(inner_loss, hessian_loss, outer_loss)` as functions of the flat policy and reward
# parameters: `-J_phi` on the training half, the same on the validation half, and the
# extrinsic `-J_ex` on the validation half.
#
# LIRPG's estimator differentiates `-J_ex(theta')` through one policy step
# `theta' = theta - lr grad_theta(-J_phi(theta))` (here plain SGD; LIRPG steps the policy's
# own Adam, which `unrolled_hypergrad` also differentiates when `params` carries the optax
# state). TARE's replaces the step by the implicit function theorem. For SGD the two differ
# only in the matrix between the same two derivatives: `lr I` for the one-step estimator,
# `(H + damping I)^-1` for the implicit one.

# %%
trainer = tare.make_train(tare.preset("chain"), env)  # reward_net="lstm-b-mul"
parts = trainer.parts
s, seg = jax.jit(lambda st: tare.rollout_segment(parts, st))(trainer.init(jax.random.PRNGKey(0)))
half = trainer.config.num_envs // 2
seg_tr = jax.tree.map(lambda x: x[:, :half], seg)
seg_va = jax.tree.map(lambda x: x[:, half:], seg)
pol = ravel_pytree(s.params["policy"])[0]
phi = ravel_pytree(s.params["reward"])[0]
inner_loss, _, outer_loss = tare.objectives(parts, seg_tr, seg_va)


@jax.jit
def lirpg_estimate(pol, phi, lr=1e-2):
    step = lambda p, h, _k: p - lr * jax.grad(inner_loss)(p, h)
    return meta.unrolled_hypergrad(step, outer_loss, pol, phi, num_steps=1, has_aux=True)[0]


tare_estimate = jax.jit(lambda pol, phi: tare.hypergradient(parts, pol, phi, seg_tr, seg_va)[0])

# %%
def timed(fn, *args, repeat=5):
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = jax.block_until_ready(fn(*args))
    return out, (time.perf_counter() - t0) / repeat * 1e3


g_lirpg, ms_lirpg = timed(lirpg_estimate, pol, phi)
g_tare, ms_tare = timed(tare_estimate, pol, phi)
cosine = float(g_lirpg @ g_tare / (jnp.linalg.norm(g_lirpg) * jnp.linalg.norm(g_tare)))
print(f"lstm-b-mul reward: {phi.size} parameters, policy: {pol.size}")
print(f"one-step (LIRPG): |g| = {float(jnp.linalg.norm(g_lirpg)):.3e}, {ms_lirpg:.1f} ms")
print(f"implicit (TARE, {trainer.config.cg_steps} CG steps): "
      f"|g| = {float(jnp.linalg.norm(g_tare)):.3e}, {ms_tare:.1f} ms")
print(f"cosine between the two estimates: {cosine:+.3f}")
assert np.isfinite(cosine) and float(jnp.linalg.norm(g_lirpg)) > 0

# %% [markdown]
# On this fresh agent's rollout the two estimates had cosine +0.86 and took about the same
# time (3-4 ms each, after compilation); their lengths are not comparable (`lr` against
# an inverse Hessian). The two estimates point in related but different directions: they weigh the
# directions of policy space differently (the identity against the inverse of the
# policy objective's curvature), and they are both only approximations here, because a
# fresh policy is not at a stationary point of its inner objective. With a dozen lines any
# other estimator is as easy to put on these objectives (`meta.es_grad` on the outer loss
# of a trained policy, `implicit_hypergrad(..., solver="neumann")`, `K > 1` unrolled steps).

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
steps = np.asarray(metrics["env_steps"][0])
with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # updates with no episode end: NaN
    ret = np.asarray(metrics["episode_return"], np.float64)
    mean, std = np.nanmean(ret, axis=0), np.nanstd(ret, axis=0)
axes[0].plot(steps, mean, label="PPO-TARE, mlp-concat reward")
axes[0].fill_between(steps, mean - std, mean + std, alpha=0.2)
axes[0].axhline(11.95, color="0.6", ls=":", label="right path (~11.95)")
axes[0].set_xlabel("env steps (per seed)")
axes[0].set_ylabel("training episode return")
axes[0].set_title(f"A. implicit hypergradient, MLP reward ({SEEDS} seeds)")
axes[0].legend(fontsize=8)
a = np.asarray(g_tare) / np.linalg.norm(g_tare)
b = np.asarray(g_lirpg) / np.linalg.norm(g_lirpg)
axes[1].scatter(a, b, s=3, alpha=0.5)
lim = max(np.abs(a).max(), np.abs(b).max())
axes[1].plot([-lim, lim], [-lim, lim], color="0.6", ls=":")
axes[1].set_xlabel("implicit (TARE), normalised component")
axes[1].set_ylabel("one-step (LIRPG), normalised component")
axes[1].set_title(f"B. estimates for the lstm-b-mul reward, cosine {cosine:+.2f}")
fig.tight_layout()
show(fig, "06_mix_and_match.png")

# %% [markdown]
# ## C. One reward module, three methods
#
# A reward written here, not in the library: an MLP on `[s, a]` with `outputs` heads.
# LIRPG takes it as its intrinsic reward `r_eta(s, a)` (a scalar per step), TARE through
# `nets.PerStep` (which calls it with TARE's time-major signature
# `(obs, action, reward, t, done)`, ignoring the last three), and CLN as the body whose
# `outputs` features its learned last layer `eta` (with the noise of eq. 5) weighs. Each
# learner trains a few updates on pendulum with it; the printout is the module's
# parameters after training, which only that method's outer step moved.

# %%
class MyReward(nn.Module):
    """``r(s, a)``: Dense(32) -> tanh -> Dense(outputs) on ``[obs, action]``; one output
    is returned as ``[...]``, more as features ``[..., outputs]``."""

    outputs: int = 1

    @nn.compact
    def __call__(self, obs, action):
        h = jnp.tanh(nn.Dense(32)(jnp.concatenate([obs, action], axis=-1)))
        out = nn.Dense(self.outputs)(h)
        return out[..., 0] if self.outputs == 1 else out


pendulum = envs.make("pendulum")
small = dict(num_envs=4, num_steps=64, total_steps=4 * 64 * 3, num_epochs=2,
             num_minibatches=2, hidden=(32, 32))
learners = {
    "lirpg": lirpg.make_train(lirpg.Config(**small), pendulum, reward_net=MyReward()),
    "tare": tare.make_train(tare.Config(**small), pendulum, reward_net=PerStep(MyReward())),
    "cln": cln.make_train(dataclasses.replace(cln.Config(**small), reward_buffer_size=256,
                                              reward_batch_size=16, segment_length=8),
                          pendulum, reward_body=MyReward(outputs=8)),
}
for name, learner in learners.items():
    state0 = learner.init(jax.random.PRNGKey(0))
    state, metrics = jax.jit(learner.train)(jax.random.PRNGKey(0))
    key = {"lirpg": "reward", "tare": "reward", "cln": "reward_body"}[name]
    moved = [float(jnp.abs(a - b).max()) for a, b in zip(
        jax.tree.leaves(state0.params[key]), jax.tree.leaves(state.params[key]), strict=True)]
    shapes = jax.tree.map(jnp.shape, state.params[key])["params"]
    print(f"{name:>5}: {learner.num_updates} updates, {key} {shapes}, largest change "
          f"{max(moved):.2e}, skipped steps {int(metrics['nonfinite'][-1])}")
    assert max(moved) > 0 and int(metrics["nonfinite"][-1]) == 0
