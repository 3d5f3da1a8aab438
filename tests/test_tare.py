"""TARE (``tare_implicit_reward_learning.md``): the hypergradient of eq. 14 against a dense
Hessian solve, config validation, and a smoke run of both inner learners."""

from __future__ import annotations

import dataclasses
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from metareward import envs, nets
from metareward.algos import ConfigError, awr, onpolicy, ppo, tare
from metareward.rl.replay import Row
from metareward.runtime import configs

SMALL = dict(num_envs=4, num_steps=8, total_steps=64, hidden=(4,), reward_hidden=4,
             reward_lstm_hidden=4)
SMALL_PPO = dict(num_epochs=1, num_minibatches=2)
SMALL_AWR = dict(buffer_size=64, value_steps=2, policy_steps=2, value_batch_size=8,
                 policy_batch_size=8, hypergrad_batch=16)


def _small(inner: str, **kw) -> tare.Config | tare.AWRConfig:
    """A small config of either flavour (the config's class picks the inner learner)."""
    if inner == "ppo":
        return tare.Config(**{**SMALL, **SMALL_PPO, **kw})
    return tare.AWRConfig(**{**SMALL, **SMALL_AWR, **kw})


def _dense_hypergrad(parts, pol, phi, seg_tr, seg_va, damping, idx=()):
    """Eq. 14 with explicit matrices: g_phi - M (H + d I)^-1 g_theta, M the mixed
    second derivative of the training objective, H the validation objective's Hessian."""
    inner, hess, outer = tare.objectives(parts, seg_tr, seg_va, *idx)
    H = jax.hessian(hess)(pol, phi)
    M = jax.jacfwd(jax.grad(inner, argnums=1), argnums=0)(pol, phi)
    (g_p, g_h), _ = jax.grad(outer, argnums=(0, 1), has_aux=True)(pol, phi)
    x = jnp.linalg.solve(H + damping * jnp.eye(H.shape[0]), g_p)
    return g_h - M @ x, H


@pytest.mark.parametrize("inner", ["ppo", "awr"])
def test_hypergradient_with_full_cg_equals_dense_solve(inner):
    """On a small policy and a fixed batch, CG run to the problem's dimension gives the
    dense-solve answer. The damping makes H + d I positive definite (CG's assumption)."""
    env = envs.make("chain")
    base = _small(inner, activation="tanh")
    parts = tare.make_parts(base, env)
    state = tare.init(parts, jax.random.PRNGKey(0))
    state, seg = jax.jit(partial(tare.rollout_segment, parts))(state)
    pol = ravel_pytree(state.params["policy"])[0]
    phi = ravel_pytree(state.params["reward"])[0]
    seg_tr = jax.tree.map(lambda x: x[:, :2], seg)
    seg_va = jax.tree.map(lambda x: x[:, 2:], seg)
    idx = ()
    if inner == "awr":  # every entry once, all rows valid
        t, e = jnp.meshgrid(jnp.arange(8), jnp.arange(2), indexing="ij")
        all_idx = (t.reshape(-1), e.reshape(-1))
        idx = (all_idx, all_idx, jnp.ones((8,), bool))
    dense = jax.jit(lambda d: _dense_hypergrad(parts, pol, phi, seg_tr, seg_va, d, idx))
    _, H = dense(0.0)
    lam_min = float(jnp.linalg.eigvalsh(0.5 * (H + H.T))[0])
    damping = max(0.0, -lam_min) + 0.05
    expected, _ = dense(damping)
    cfg = dataclasses.replace(base, cg_steps=int(pol.size), cg_damping=damping)
    full = tare.make_parts(cfg, env)
    got, _, info = jax.jit(partial(tare.hypergradient, full))(pol, phi, seg_tr, seg_va, *idx)
    assert not bool(info.negative_curvature)
    assert float(jnp.linalg.norm(expected)) > 1e-4  # a non-trivial answer
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3 * float(
        jnp.abs(expected).max()))
    # Two CG steps are not enough on this problem: the test can tell the difference.
    short = tare.make_parts(dataclasses.replace(cfg, cg_steps=2), env)
    rough = jax.jit(partial(tare.hypergradient, short))(pol, phi, seg_tr, seg_va, *idx)[0]
    assert float(jnp.linalg.norm(rough - expected)) > 10 * float(
        jnp.linalg.norm(got - expected))


@pytest.mark.parametrize("cls", [tare.Config, tare.AWRConfig])
@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("num_envs", 3, "even"),
        ("reward_net", "transformer", "lstm-b-mul"),
        ("cg_steps", 0, "int > 0"),
        ("normalizer_samples", 0, "int > 0"),
        ("cg_damping", -1.0, ">= 0"),
        ("r_in_coef", 0.0, "> 0"),
        ("gamma", 1.5, "[0.0, 1.0]"),
        ("hessian", "both", "'train', 'validation'"),
        ("curvature", "newton", "'hessian', 'fisher'"),
        ("cg_restarts", -1, "int >= 0"),
        ("hypergrad_coef", -1.0, ">= 0"),
    ],
)
def test_bad_config_names_field_and_allowed(cls, field, value, allowed):
    """The shared fields (:class:`tare.RewardFields`) are checked in both flavours."""
    with pytest.raises(ConfigError, match=field) as err:
        cls(**{field: value})
    assert allowed in str(err.value)


@pytest.mark.parametrize(
    ("cls", "field", "value", "allowed"),
    [
        (tare.Config, "policy_objective", "a2c", "'clipped', 'eq11'"),
        (tare.Config, "num_minibatches", 0, "int > 0"),
        (tare.Config, "kl_coef", -1.0, ">= 0"),
        (tare.AWRConfig, "gamma", 1.0, "[0, 1) when value_scale is None"),
        (tare.AWRConfig, "value_steps", 0, "int > 0"),
        (tare.AWRConfig, "momentum", 1.5, "[0.0, 1.0)"),
    ],
)
def test_bad_flavour_config_names_field_and_allowed(cls, field, value, allowed):
    with pytest.raises(ConfigError, match=field) as err:
        cls(**{field: value})
    assert allowed in str(err.value)


def test_ppo_tare_composes_ppos_config():
    """PPO-TARE's config is PPO's (:class:`onpolicy.PPOBase`) plus TARE's fields: every
    PPO field is there, with TARE's overrides; options it cannot honour are refused."""
    assert issubclass(tare.Config, onpolicy.PPOBase)
    ppo_fields = {f.name for f in dataclasses.fields(onpolicy.PPOBase)}
    assert ppo_fields <= {f.name for f in dataclasses.fields(tare.Config)}
    c = tare.Config()
    assert (c.num_envs, c.num_steps, c.num_minibatches, c.anneal_lr, c.normalize_reward,
            c.vf_clip_eps) == (8, 256, 16, False, False, None)
    with pytest.raises(ConfigError, match=r"normalize_reward=True.*False for TARE"):
        tare.Config(normalize_reward=True)
    with pytest.raises(ConfigError, match=r"vf_clip_eps=0\.2.*eq11"):
        tare.Config(policy_objective="eq11", vf_clip_eps=0.2)


def test_ppo_tare_value_clip_is_ppo2s():
    """``vf_clip_eps`` adds ppo2's clipped value loss to PPO-TARE's inner loss: the loss
    with it minus the loss without is ``vf_coef`` times the difference of the two value
    losses, computed here in numpy from the values the net predicts."""
    env = envs.make("pendulum")
    cfg = _small("ppo", vf_coef=0.7)
    parts = tare.make_parts(cfg, env)
    clipped = tare.make_parts(dataclasses.replace(cfg, vf_clip_eps=0.1), env)
    state = tare.init(parts, jax.random.PRNGKey(3))
    theta = tare.core.flat_params(state.params, "agent")
    k = jax.random.split(jax.random.PRNGKey(4), 4)
    n = 16
    batch = {"obs": jax.random.normal(k[0], (n, 3)),
             "action": jax.random.uniform(k[1], (n, 1), minval=-2.0, maxval=2.0),
             "log_prob": jnp.zeros(n), "adv": jax.random.normal(k[2], (n,)),
             "target": 2.0 * jax.random.normal(k[3], (n,)), "v": jnp.linspace(-1.0, 1.0, n),
             "ret_ex": jnp.zeros(n)}
    plain, _ = tare.ppo.inner_loss(parts, theta, batch)
    with_clip, _ = tare.ppo.inner_loss(clipped, theta, batch)
    v = np.asarray(parts.value.apply(parts.unravel["agent"](theta)["value"], batch["obs"]),
                   np.float64)
    t, old = np.asarray(batch["target"], np.float64), np.asarray(batch["v"], np.float64)
    v_clip = old + np.clip(v - old, -0.1, 0.1)
    unclipped_vl = 0.5 * np.mean((v - t) ** 2)
    clipped_vl = 0.5 * np.mean(np.maximum((v - t) ** 2, (v_clip - t) ** 2))
    assert clipped_vl > unclipped_vl + 1e-3  # the clip is active on this batch
    np.testing.assert_allclose(float(with_clip - plain), 0.7 * (clipped_vl - unclipped_vl),
                               rtol=1e-4)


def test_ppo_tare_squashed_policy_stays_in_bounds():
    """``squash=True`` (PPO's tanh-squashed Gaussian) reaches PPO-TARE's policy: its
    samples lie inside the action box without clipping, and it trains to finite numbers."""
    env = envs.make("pendulum")
    trainer = tare.make_train(_small("ppo", squash=True), env)
    state, _ = jax.jit(trainer.train)(jax.random.PRNGKey(0))
    assert int(state.nonfinite) == 0
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
    obs = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (256, 3))
    a = np.asarray(trainer.act(state, obs, jax.random.PRNGKey(2)))
    raw = trainer.parts.policy.apply(state.params["policy"], obs).sample(jax.random.PRNGKey(2))
    assert np.abs(np.asarray(raw)).max() > 1.0  # the Gaussian's samples leave the box ...
    assert np.abs(a).max() < 1.0  # ... and the env gets their tanh


def test_awr_tare_composes_awrs_config():
    """AWR-TARE's config is AWR's (:class:`awr.Config`, the same field names) plus TARE's
    fields; the names it had before (``value_lr``, ...) still load from a config file or
    a run directory's ``config.json``."""
    assert issubclass(tare.AWRConfig, awr.Config)
    awr_fields = {f.name for f in dataclasses.fields(awr.Config)}
    assert awr_fields <= {f.name for f in dataclasses.fields(tare.AWRConfig)}
    old = {"value_lr": 0.5, "policy_lr": 1e-3, "value_batch": 32, "policy_batch": 16}
    c = configs.apply_overrides(tare.AWRConfig(), old, "an old config.json")
    assert (c.value_learning_rate, c.policy_learning_rate, c.value_batch_size,
            c.policy_batch_size) == (0.5, 1e-3, 32, 16)


def _trained_policy(**kw) -> tuple[tare.Parts, dict, tare.TareState]:
    """AWR-TARE's parts, initial policy and state after one update (a small config)."""
    env = envs.make("pendulum")
    trainer = tare.make_train(_small("awr", total_steps=32, policy_learning_rate=1e-3, **kw),
                              env)
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    return trainer.parts, state.params["policy"], jax.jit(trainer.update)(state)[0]


def test_awr_tare_honours_awrs_options():
    """``learn_std`` trains the log-std (fixed otherwise, the authors'), ``max_grad_norm``
    clips the SGD steps (none by default, the authors'), ``value_scale`` sets the
    critic's scale (``1 / (1 - gamma)`` by default)."""
    _, before, fixed = _trained_policy()
    _, _, learned = _trained_policy(learn_std=True)
    log_std = lambda p: np.asarray(p["params"]["log_std"])
    np.testing.assert_array_equal(log_std(fixed.params["policy"]), log_std(before))
    assert np.abs(log_std(learned.params["policy"]) - log_std(before)).max() > 1e-4
    # One SGD step (lr 1) of |x - 10|^2 / 2 from 0: the gradient's norm is 10 * sqrt(3),
    # so the clipped step has norm max_grad_norm, the unclipped one 10 * sqrt(3).
    loss = lambda x, _: (0.5 * jnp.sum((x - 10.0) ** 2), {})
    for clip, norm in ((0.5, 0.5), (None, 10.0 * np.sqrt(3.0))):
        x, *_ = tare.awr.sgd_steps(loss, optax.sgd(1.0), jnp.zeros(3), optax.sgd(1.0).init(
            jnp.zeros(3)), jnp.zeros((), jnp.int32), lambda k: None, jax.random.PRNGKey(0), 1,
            clip)
        np.testing.assert_allclose(float(jnp.linalg.norm(x)), norm, rtol=1e-5)
    env = envs.make("pendulum")
    assert tare.make_parts(_small("awr", value_scale=3.0), env).value_scale == 3.0
    assert tare.make_parts(_small("awr", gamma=0.9), env).value_scale == 1 / (1 - 0.9)


def test_the_config_class_picks_the_inner_learner():
    """No ``inner`` string: ``Config`` is PPO-TARE (one Adam over the agent, no buffer),
    ``AWRConfig`` AWR-TARE (SGD on policy and values, a replay buffer of ``Row``); each
    has only its flavour's fields."""
    env = envs.make("pendulum")
    fields = {c: {f.name for f in dataclasses.fields(c)} for c in (tare.Config, tare.AWRConfig)}
    assert "inner" not in fields[tare.Config] | fields[tare.AWRConfig]
    assert {"num_epochs", "clip_eps"} <= fields[tare.Config] - fields[tare.AWRConfig]
    assert {"buffer_size", "value_learning_rate"} <= fields[tare.AWRConfig] - fields[tare.Config]
    with pytest.raises(TypeError):
        tare.Config(inner="awr")
    ppo_state = jax.eval_shape(tare.make_train(_small("ppo"), env).init, jax.random.PRNGKey(0))
    awr_state = jax.eval_shape(tare.make_train(_small("awr"), env).init, jax.random.PRNGKey(0))
    assert set(ppo_state.opt_state) == {"agent", "reward"} and ppo_state.buffer is None
    assert set(awr_state.opt_state) == {"policy", "value", "reward"}
    assert isinstance(awr_state.buffer.data, Row)


def test_bad_geometry_fails_before_compiling():
    env = envs.make("chain")
    with pytest.raises(ValueError, match="num_minibatches"):
        tare.make_train(tare.Config(num_envs=4, num_steps=5, num_minibatches=4), env)
    with pytest.raises(ValueError, match="less than one rollout"):
        tare.make_train(tare.Config(num_envs=4, num_steps=8, total_steps=16), env)
    with pytest.raises(ValueError, match="buffer_size"):
        tare.make_train(tare.AWRConfig(num_envs=4, num_steps=8, buffer_size=16), env)
    with pytest.raises(TypeError, match=r"tare\.Config"):
        tare.make_train(object(), env)
    with pytest.raises(TypeError, match=r"tare\.Config"):  # an inner learner's alone
        tare.make_train(awr.Config(), env)
    with pytest.raises(TypeError, match=r"tare\.Config"):
        tare.make_train(ppo.Config(), env)


@pytest.mark.parametrize("inner", ["ppo", "awr"])
def test_smoke_train_metrics(inner):
    env = envs.make("pendulum")
    net = "lstm-b-mul" if inner == "ppo" else "mlp-mul"
    cfg = _small(inner, reward_net=net, total_steps=96)
    trainer = tare.make_train(cfg, env)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    state, m = jax.jit(jax.vmap(trainer.train))(keys)
    assert m["env_steps"].shape == (2, 3)
    np.testing.assert_array_equal(m["env_steps"][0], [32, 64, 96])
    for k in ("hypergrad_norm", "cg_residual", "cg_iterations", "ex_objective",
              "r_param_mean", "r_param_std"):
        assert np.all(np.isfinite(m[k])), k
    assert "param_return" in m and "episode_return" in m
    assert int(np.max(m["nonfinite"])) == 0
    # phi moved (the hypergradient was applied), the policy moved.
    init = jax.vmap(trainer.init)(keys)
    for part in ("reward", "policy"):
        before = ravel_pytree(init.params[part])[0]
        after = ravel_pytree(state.params[part])[0]
        assert float(jnp.abs(after - before).max()) > 0, part
    returns = jax.jit(jax.vmap(lambda s, k: trainer.evaluate(s, k, 4)))(state, keys)
    assert returns.shape == (2, 4)


@pytest.mark.parametrize(("limit", "updates_kept"), [(None, 3), (32, 1), (33, 2)])
def test_observation_normaliser_freezes_after_normalizer_samples(limit, updates_kept):
    """``normalizer_samples`` (AWR-TARE's default 300,000, as the AWR code): the running
    observation statistics take in the rollouts that start below it, then stop (their
    sample count says how many)."""
    env = envs.make("pendulum")
    cfg = _small("awr", total_steps=96, normalizer_samples=limit)
    assert cfg.num_envs * cfg.num_steps == 32
    trainer = tare.make_train(cfg, env)
    state, _ = jax.jit(trainer.train)(jax.random.PRNGKey(3))
    np.testing.assert_allclose(float(state.obs_stats.count), 32 * updates_kept + 1e-4,
                               rtol=1e-6)
    assert tare.AWRConfig().normalizer_samples == 300_000
    assert tare.Config().normalizer_samples is None


class _TinyReward(nn.Module):
    """A user's per-step reward ``m(obs, action) -> [...]``: one dense layer."""

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        return nn.Dense(1)(jnp.concatenate([obs, action], axis=-1))[..., 0]


@pytest.mark.parametrize("inner", ["ppo", "awr"])
def test_user_reward_net_trains(inner):
    """``make_train(config, env, reward_net=PerStep(m))``: any module with TARE's reward
    signature replaces the config's net; one update runs with finite metrics and the
    hypergradient moves the user's parameters."""
    env = envs.make("pendulum")
    net = nets.PerStep(_TinyReward())
    trainer = tare.make_train(_small(inner, total_steps=32), env, reward_net=net)
    assert trainer.reward_net is net and trainer.parts.reward_net is net
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    assert set(state.params["reward"]["params"]) == {"net"}
    new, m = jax.jit(trainer.update)(state)
    for k, v in m.items():
        if k not in ("episode_return", "episode_return_std", "episode_length",
                     "param_return"):  # NaN: no episode ended in 8 steps
            assert np.all(np.isfinite(v)), k
    assert int(m["nonfinite"]) == 0
    before = ravel_pytree(state.params["reward"])[0]
    after = ravel_pytree(new.params["reward"])[0]
    assert float(jnp.abs(after - before).max()) > 0
    # The default (None) is the config's own net.
    default = tare.make_train(_small(inner, total_steps=32), env)
    assert default.reward_net == nets.make_reward_net(
        "lstm-b-mul", discrete=False, action_size=1, hidden=4, lstm_hidden=4)


def test_cli_trains_tare_on_chain(tmp_path):
    """Registered as ``tare``: the command runs it end to end and logs TARE's metrics."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("metareward")
    if not script.exists():
        script = Path(shutil.which("metareward") or "metareward")
    small = ["--set", "num_envs=4", "--set", "num_steps=8", "--set", "num_minibatches=2",
             "--set", "num_epochs=1", "--set", "hidden=8", "--set", "reward_hidden=8",
             "--set", "reward_lstm_hidden=8"]
    p = subprocess.run([str(script), "train", "tare", "--env", "chain", "--seeds", "2",
                        "--total-steps", "128", *small, "--eval-episodes", "2",
                        "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert {r["seed"] for r in recs} == {0, 1}
    for key in ("hypergrad_norm", "cg_residual", "ex_objective", "param_return",
                "r_param_action0", "action1_count"):
        assert key in recs[-1], key
    assert recs[-1]["env_steps"] == 128


# ------------------------------------------- the hypergradient is the implicit derivative

RIDGE = 1e-2


def _chain_problem(reward_net: str, hessian: str, seed: int = 0):
    """A converged inner problem (float64): a linear softmax policy on the chain, trained
    to stationarity of ``-J_phi(theta; train) + RIDGE/2 |theta|^2`` by Newton's method.

    Returns ``(parts, solve, ridged, outer, phi, seg_tr, seg_va)``: ``solve(phi)`` re-solves
    the inner problem from the behaviour policy; the config's damping is the ridge, so
    its curvature is that of the ridged objective."""
    env = envs.make("chain")
    cfg = tare.Config(num_envs=8, num_steps=16, total_steps=128, num_minibatches=2,
                      hidden=(), reward_net=reward_net, reward_hidden=8, reward_lstm_hidden=8,
                      ent_coef=0.01, normalize_obs=False, cg_steps=60, cg_damping=RIDGE,
                      hessian=hessian)
    parts = tare.make_parts(cfg, env)
    state = tare.init(parts, jax.random.PRNGKey(seed))
    state, seg = jax.jit(partial(tare.rollout_segment, parts))(state)
    to64 = lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x
    seg = jax.tree.map(to64, seg)
    pol0 = ravel_pytree(jax.tree.map(to64, state.params["policy"]))[0]
    phi = ravel_pytree(jax.tree.map(to64, state.params["reward"]))[0]
    seg_tr = jax.tree.map(lambda x: x[:, :4], seg)
    seg_va = jax.tree.map(lambda x: x[:, 4:], seg)
    inner, _, outer = tare.objectives(parts, seg_tr, seg_va)
    ridged = lambda p, h: inner(p, h) + 0.5 * RIDGE * jnp.sum(p**2)

    @jax.jit
    def newton_step(p, h):
        g = jax.grad(ridged)(p, h)
        step = jnp.linalg.solve(jax.hessian(ridged)(p, h), g)

        def shrink(t):  # backtracking: the ridged objective must not go up
            return (t > 1e-4) & (ridged(p - t * step, h) > ridged(p, h))

        t = jax.lax.while_loop(shrink, lambda t: 0.5 * t, 1.0)
        return p - t * step, jnp.linalg.norm(g)

    def solve(h):
        p = pol0
        for _ in range(40):  # quadratic convergence: ~10 steps; 2 more past 1e-13
            p, gnorm = newton_step(p, h)
            if float(gnorm) < 1e-13:
                p = newton_step(p, h)[0]
                break
        return p

    return parts, solve, ridged, outer, phi, seg_tr, seg_va


@pytest.mark.parametrize("reward_net", ["lstm-f", "lstm-b"])
@pytest.mark.parametrize("hessian", ["train", "validation"])
def test_hypergradient_is_the_implicit_derivative(reward_net, hessian):
    """The trainer's hypergradient at a converged inner problem against central finite
    differences of ``-J_ex(theta*(phi); val)`` through the re-solved inner problem, along
    3 random directions of ``phi`` (TARE Theorem 1 / Appendix E). The default
    (``hessian="train"``) agrees to 1e-4 (measured: 1e-5 and better, the finite
    difference's own error); eq. 14 as printed (the validation batch's
    Hessian), which the library used before, is far off: the test tells them apart.
    The LSTM reward nets are smooth; the nets with ReLU and LayerNorm have kinks that
    finite differences at this precision cross."""
    with jax.enable_x64(True):
        parts, solve, ridged, outer, phi, seg_tr, seg_va = _chain_problem(reward_net, hessian)
        theta = solve(phi)
        grad_norm = float(jnp.linalg.norm(jax.grad(ridged)(theta, phi)))
        assert grad_norm < 1e-11, grad_norm  # stationary: the theorem's premise
        H = jax.hessian(ridged)(theta, phi)
        assert float(jnp.linalg.eigvalsh(H)[0]) > 0  # a strict local minimum
        got, _, info = jax.jit(partial(tare.hypergradient, parts))(theta, phi, seg_tr, seg_va)
        assert got.dtype == jnp.float64
        G = lambda h: outer(solve(h), h)[0]
        eps = 1e-4
        errors, fds = [], []
        for k in jax.random.split(jax.random.PRNGKey(1), 3):
            u = jax.random.normal(k, phi.shape, jnp.float64)
            u = u / jnp.linalg.norm(u)
            fd = (G(phi + eps * u) - G(phi - eps * u)) / (2 * eps)
            fds.append(float(fd))
            errors.append(float(jnp.dot(got, u) - fd))
        scale = max(abs(f) for f in fds)
        assert scale > 1e-3, fds  # the reward moves the trained policy's outcome
        rel = max(abs(e) for e in errors) / scale
        if hessian == "train":
            assert not bool(info.negative_curvature)
            assert rel < 1e-4, (errors, fds)
        else:
            assert rel > 0.1, (errors, fds)
        print(f"{reward_net} hessian={hessian}: max relative error {rel:.2e}")
