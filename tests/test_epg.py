"""EPG (metareward.algos.epg, nets.epg, envs.tasks): the fitness formula by hand, the
outer step against a numpy version of the authors' (ranks . eps / n - l2 phi, Adam with
beta1 = 0), the vmapped population against members run alone, the loss's inputs and
gradients, the fixed-alpha mode of Figure 7, the Spearman metric of section 4.3, the task
samplers, presets and config errors. (Random Hopper end to end: tests/test_epg_tasks.py;
learning against a zero loss and PPO at equal samples: tests/test_epg_learning.py.)"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareward import envs
from metareward.algos import epg
from metareward.algos.config import ConfigError
from metareward.meta import es_grad
from metareward.nets.epg import LOSS_ARCHS, MemoryUnit, conv_output_length, make_loss

# A tiny config: 4 members, 6 inner updates of 16 steps, a 32-step buffer (the "code"
# loss sizes need >= 6 + 5 * (4 - 1) steps... see conv_output_length).
TINY = epg.Config(num_epochs=3, pop_size=4, steps_per_update=16, inner_updates=6,
                  buffer_size=64, eval_episodes=2, anneal_epochs=2, reward_scale=0.1)


@pytest.fixture(scope="module")
def env():
    return envs.make("pendulum", randomize=True)


@pytest.fixture(scope="module")
def trainer(env):
    return epg.make_train(TINY, env)


@pytest.fixture(scope="module")
def tasks(env):
    return jax.vmap(env.tasks.sample)(jax.random.split(jax.random.PRNGKey(3), 3))


def _numpy_fitness(r):
    r = np.asarray(r, np.float64)
    K = len(r) - 1
    w = np.arange(1, K + 2) / K
    ok = ~np.isnan(r)
    return r[K] + (w[ok] * r[ok]).sum() * (w.sum() / w[ok].sum()) / K


def test_fitness_formula_on_hand_built_returns():
    # Footnote 1: R = R_K + (1/K) sum_{t=0}^{K} ((t+1)/K) R_t, here K = 3:
    # 4 + (1/3) (1/3 * 1 + 2/3 * 2 + 3/3 * 3 + 4/3 * 4) = 4 + 10/3.
    np.testing.assert_allclose(float(epg.fitness(jnp.array([1.0, 2.0, 3.0, 4.0]))),
                               4 + 10 / 3, rtol=1e-6)
    r = [-5.0, 7.0, 0.5, 2.0, -1.0, 3.0]
    np.testing.assert_allclose(float(epg.fitness(jnp.array(r))), _numpy_fitness(r), rtol=1e-6)
    # Updates without an ended episode (NaN) drop out; the other weights keep the total.
    r = [np.nan, 2.0, np.nan, 4.0]
    np.testing.assert_allclose(float(epg.fitness(jnp.array(r))), _numpy_fitness(r), rtol=1e-6)
    assert np.isnan(float(epg.fitness(jnp.array([1.0, 2.0, np.nan]))))  # no final return


def _numpy_relative_ranks(x):
    """The authors' ``relative_ranks`` (epg/utils.py, REFERENCE_NOTES): rank / (n - 1) - 0.5."""
    r = np.empty(len(x))
    r[np.argsort(x)] = np.arange(len(x))
    return r / (len(x) - 1) - 0.5


class _NumpyAdam:
    """The authors' Adam (epg/utils.py, as REFERENCE_NOTES describes it), ascending."""

    def __init__(self, n, b1=0.0, b2=0.999, eps=1e-8):
        self.m, self.v, self.t = np.zeros(n), np.zeros(n), 0
        self.b1, self.b2, self.eps = b1, b2, eps

    def step(self, g, lr):
        self.t += 1
        a = lr * np.sqrt(1 - self.b2**self.t) / (1 - self.b1**self.t)
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        return a * self.m / (np.sqrt(self.v) + self.eps)


@pytest.mark.parametrize("antithetic", [False, True])
def test_outer_step_is_the_authors_formula(antithetic):
    """On a toy fitness (a quadratic, evaluated again in numpy) the outer ascent direction
    is ``relative_ranks(F) . eps / n - l2 * phi`` with the noise read back from the members
    (not from the key), and Adam with beta1 = 0 and the linear learning rate takes the
    authors' steps. The form before issue 33 (L2 added to eq. 5's direction, divided by
    sigma) is 1/sigma = 100 times larger in its ES term and fails the comparison; it is
    kept as l2_form="eq5" and checked here too."""
    P, D, sigma, l2 = 8, 6, 0.01, 0.05  # l2 large enough that its term matters here
    rng = np.random.default_rng(0)
    phi = jnp.asarray(rng.uniform(-1, 1, D), jnp.float32)
    c = rng.normal(size=D)
    cfg = dataclasses.replace(TINY, pop_size=P, sigma=sigma, l2_coef=l2, antithetic=antithetic,
                              outer_learning_rate=1e-2, outer_learning_rate_final=1e-3,
                              outer_decay_epochs=2)
    assert cfg.l2_form == "code" and cfg.outer_b1 == 0.0  # the defaults

    def fit(p, _):  # the member's fitness and, as aux, its perturbed parameters
        return -jnp.sum((p - jnp.asarray(c, jnp.float32)) ** 2), p

    d, _, members = es_grad(fit, phi, jax.random.PRNGKey(1), pop_size=P, sigma=sigma,
                            antithetic=antithetic, shaping=cfg.shaping, args=jnp.zeros(P),
                            has_aux=True)
    members, phi_np = np.asarray(members, np.float64), np.asarray(phi, np.float64)
    eps = (members - phi_np) / sigma  # the known noise
    assert np.abs(eps).max() > 0.1 and (not antithetic or np.allclose(eps[: P // 2],
                                                                      -eps[P // 2:], atol=1e-3))
    ranks = _numpy_relative_ranks(-((members - c) ** 2).sum(1))  # the known fitness
    want = ranks @ eps / P - l2 * phi_np
    np.testing.assert_allclose(epg.es_ascent(d, phi, cfg), want, rtol=1e-4, atol=1e-6)
    old = dataclasses.replace(cfg, l2_form="eq5")
    np.testing.assert_allclose(epg.es_ascent(d, phi, old), ranks @ eps / (P * sigma) - l2 * phi_np,
                               rtol=1e-4, atol=1e-5)
    assert not np.allclose(epg.es_ascent(d, phi, old), want, rtol=0.1)
    # two Adam steps (beta1 = 0; learning rate 1e-2, then halfway to 1e-3)
    opt, adam = epg.outer_optimizer(cfg), _NumpyAdam(D)
    state, p, p_np = opt.init(phi), phi, phi_np
    for lr in (1e-2, 5.5e-3):
        upd, state = opt.update(-epg.es_ascent(d, p, cfg), state, p)
        p = p + upd
        p_np = p_np + adam.step(ranks @ eps / P - l2 * p_np, lr)
        np.testing.assert_allclose(p, p_np, rtol=1e-5, atol=1e-6)


def test_member_under_vmap_equals_member_alone(trainer, tasks):
    phi = epg.init_loss(trainer.parts, jax.random.PRNGKey(0))
    eps = jax.random.normal(jax.random.PRNGKey(1), (3,))
    phis = [jax.tree.map(lambda x, e=e: x + 0.01 * e, phi) for e in eps]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *phis)
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    alpha = jnp.float32(0.5)
    run = jax.jit(trainer.inner)
    fit_v, aux_v = jax.jit(jax.vmap(trainer.inner, in_axes=(0, 0, 0, None)))(
        stacked, tasks, keys, alpha)
    for i in range(3):
        task_i = jax.tree.map(lambda x, i=i: x[i], tasks)
        fit_i, aux_i = run(phis[i], task_i, keys[i], alpha)
        np.testing.assert_allclose(float(fit_v[i]), float(fit_i), rtol=1e-4)
        np.testing.assert_allclose(aux_v["returns"][i], aux_i["returns"], rtol=1e-4)
    assert len(set(np.round(np.asarray(fit_v), 3))) == 3  # the members do differ


def _buffer_and_agent(trainer):
    """A random buffer, default statistics and a fresh agent."""
    from metareward.rl.normalize import RunningStats

    cfg = trainer.config
    N, D, A = cfg.buffer_size, trainer.spec.obs_size, trainer.spec.action_size
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    buf = epg.Experience(jax.random.normal(k[0], (N, D)), jax.random.normal(k[1], (N, A)),
                         jax.random.normal(k[2], (N,)),
                         (jax.random.uniform(k[3], (N,)) < 0.1).astype(jnp.float32),
                         jnp.ones((N,)))
    stats = (RunningStats.create((D,)), RunningStats.create((A,)), RunningStats.create((1,)))
    return buf, stats, epg.inner_init(trainer.parts, trainer.env.tasks.nominal(), k[4]).params


def _loss_of_rewards(trainer, phi, theta, stats, buf):
    M = trainer.config.steps_per_update

    def f(rewards):
        x = epg.loss_inputs(trainer.parts, theta, *stats, buf._replace(reward=rewards))
        return jnp.mean(trainer.loss_net.apply(phi, x, M))

    return f


def test_loss_ignores_rewards_unless_configured(env, trainer):
    buf, stats, theta = _buffer_and_agent(trainer)
    phi = epg.init_loss(trainer.parts, jax.random.PRNGKey(5))
    g = jax.grad(_loss_of_rewards(trainer, phi, theta, stats, buf))(buf.reward)
    assert np.all(np.asarray(g) == 0.0)  # exactly zero: rewards are not an input
    with_r = epg.make_train(dataclasses.replace(TINY, use_reward=True), env)
    phi_r = epg.init_loss(with_r.parts, jax.random.PRNGKey(5))
    g_r = jax.grad(_loss_of_rewards(with_r, phi_r, theta, stats, buf))(buf.reward)
    assert float(jnp.abs(g_r).max()) > 0.0


def test_loss_gradient_reaches_the_policy_through_both_branches(trainer):
    """d L / d pi(.|s_i) is non-zero for a step outside the M scored ones (only the
    temporal-conv context reads it) and for a scored one (context and dense part)."""
    buf, stats, theta = _buffer_and_agent(trainer)
    phi = epg.init_loss(trainer.parts, jax.random.PRNGKey(6))
    M, N = trainer.config.steps_per_update, trainer.config.buffer_size
    x = epg.loss_inputs(trainer.parts, theta, *stats, buf)
    g = jax.grad(lambda x: jnp.mean(trainer.loss_net.apply(phi, x, M)))(x)
    assert x.shape[0] == N and N > M
    assert float(jnp.abs(g[0]).max()) > 0.0 and float(jnp.abs(g[N - 1]).max()) > 0.0
    # And through the agent's parameters: policy and memory both get gradient.
    gt = jax.grad(lambda th: jnp.mean(trainer.loss_net.apply(
        phi, epg.loss_inputs(trainer.parts, th, *stats, buf), M)))(theta)
    assert float(jnp.abs(gt).max()) > 0.0


@pytest.mark.parametrize("arch", sorted(LOSS_ARCHS))
def test_loss_architectures_and_memory_unit(arch):
    net = make_loss(arch)
    x = jax.random.normal(jax.random.PRNGKey(0), (128, 10))
    params = net.init(jax.random.PRNGKey(1), x, 32)
    out = net.apply(params, x, 32)
    assert out.shape == (32,) and bool(jnp.all(jnp.isfinite(out)))
    conv = params["params"]
    assert [conv[f"Conv_{i}"]["kernel"].shape[0] for i in range(2)] == [
        k for k, _, _ in LOSS_ARCHS[arch]["conv"]]
    assert conv_output_length(128, LOSS_ARCHS["paper"]["conv"]) == 8  # 128 -> 18 -> 8
    with pytest.raises(ValueError, match="too short"):
        conv_output_length(7, LOSS_ARCHS["paper"]["conv"])
    with pytest.raises(ValueError, match="unknown EPG loss architecture"):
        make_loss("big")
    mem = MemoryUnit(32)
    p = mem.init(jax.random.PRNGKey(0))
    m = mem.apply(p)
    assert m.shape == (32,) and float(jnp.abs(m).max()) < 1.0


def test_memory_trains_in_the_inner_loop_and_policy_ignores_it(trainer, tasks):
    phi = epg.init_loss(trainer.parts, jax.random.PRNGKey(0))
    task = jax.tree.map(lambda x: x[0], tasks)
    key = jax.random.PRNGKey(4)
    run = jax.jit(functools.partial(epg.inner_run, trainer.parts))
    s, m = run(phi, task, key, jnp.float32(0.0))
    s0 = epg.inner_init(trainer.parts, task, key)  # the agent inner_run starts from
    assert m["loss_phi"].shape == (TINY.inner_updates,)
    p, p1 = trainer.parts.unravel_theta(s.params), trainer.parts.unravel_theta(s0.params)
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                                         p["memory"], p1["memory"]))
    assert max(moved) > 0.0  # the memory trains by L_phi with the policy
    # The policy does not read the memory: its output ignores the memory's parameters.
    obs = jax.random.normal(key, (5, trainer.spec.obs_size))
    bumped = {**p, "memory": jax.tree.map(lambda x: x + 1.0, p["memory"])}
    np.testing.assert_array_equal(trainer.policy.apply(p["policy"], obs).mean,
                                  trainer.policy.apply(bumped["policy"], obs).mean)
    mem = MemoryUnit(TINY.memory_size)
    assert not np.allclose(mem.apply(p["memory"]), mem.apply(bumped["memory"]))


def test_push_buffer_and_state_layout(trainer):
    """The buffer keeps the last N steps, oldest first: M new rows enter at the end, their
    termination flags without time-limit truncations, ``valid`` set; the states keep one
    ``opt_state`` dict each (``{"agent"}`` inner, ``{"loss"}`` outer)."""
    from metareward.rl.rollout import Transition

    N, M, A, D = (TINY.buffer_size, TINY.steps_per_update, trainer.spec.action_size,
                  trainer.spec.obs_size)
    s0 = trainer.policy_init(jax.random.PRNGKey(0))
    assert set(s0.opt_state) == {"agent"} and float(s0.buffer.valid.sum()) == 0.0
    z = jnp.zeros((M,))
    done, trunc = z.at[3].set(1.0).at[7].set(1.0), z.at[7].set(1.0)
    obs = jnp.arange(M * D, dtype=jnp.float32).reshape(M, D)
    traj = Transition(obs, jnp.ones((M, A)), z, z + 2.0, done, trunc, obs, z, z)
    buf = epg.push_buffer(s0.buffer, traj)
    np.testing.assert_array_equal(buf.obs[N - M:], obs)
    np.testing.assert_array_equal(buf.obs[: N - M], 0.0)
    np.testing.assert_array_equal(buf.reward[N - M:], 2.0)
    np.testing.assert_array_equal(buf.valid, np.r_[np.zeros(N - M), np.ones(M)])
    np.testing.assert_array_equal(np.flatnonzero(buf.done), [N - M + 3])  # 7 was a timeout
    again = epg.push_buffer(buf, traj._replace(obs=obs + 1000.0))
    np.testing.assert_array_equal(again.obs[N - 2 * M: N - M], obs)  # shifted back by M
    np.testing.assert_array_equal(again.obs[N - M:], obs + 1000.0)
    assert set(trainer.init(jax.random.PRNGKey(0)).opt_state) == {"loss"}


def test_es_grad_with_per_member_args_and_aux():
    # fitness(p, a) = -|p - a|^2: member i's target is a_i; the direction estimates the
    # gradient of the mean fitness, here sum_i 2 (a_i - p) / P ~ 2 (mean(a) - p).
    P = 20000
    targets = jnp.tile(jnp.array([[1.0, -1.0], [3.0, 1.0]]), (P // 2, 1))
    targets = jnp.concatenate([targets[: P // 2], targets[: P // 2]])  # antithetic pairs
    f = lambda p, a: (-jnp.sum((p - a) ** 2), jnp.sum(a))
    d, vals, aux = es_grad(f, jnp.zeros(2), jax.random.PRNGKey(0), pop_size=P, sigma=0.05,
                           shaping="none", args=targets, has_aux=True)
    np.testing.assert_allclose(d, 2 * np.asarray(targets).mean(0), atol=0.3)  # [4, 0]
    assert vals.shape == (P,) and aux.shape == (P,)
    with pytest.raises(ValueError, match="leading axis of pop_size"):
        es_grad(f, jnp.zeros(2), jax.random.PRNGKey(0), pop_size=4, sigma=0.1,
                args=jnp.zeros((3, 2)), has_aux=True)


def test_outer_epoch_runs_and_reports(trainer):
    state = trainer.init(jax.random.PRNGKey(0))
    state, m = jax.jit(trainer.update)(state)
    assert int(state.update_step) == 1
    assert int(m["env_steps"]) == epg.env_steps_per_epoch(TINY, 200)
    assert epg.env_steps_per_epoch(TINY, 200) == 4 * (6 * 16 + 2 * 200)  # members x (K M + eval)
    assert float(m["alpha"]) == 1.0 and np.isfinite(float(m["fitness_mean"]))
    assert float(m["fitness_max"]) >= float(m["fitness_mean"])
    np.testing.assert_allclose(float(epg.alpha_at(trainer.config, jnp.int32(1))), 0.5)
    np.testing.assert_allclose(float(epg.alpha_at(trainer.config, jnp.int32(5))), 0.0)


def test_spearman_against_scipy():
    """Section 4.3's rank correlation against scipy.stats.spearmanr (numpy ranks if scipy
    is missing), ties included."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    y = 0.5 * x + rng.normal(size=300)
    xt, yt = np.round(x, 1), np.round(y, 0)  # many ties

    def reference(a, b):
        try:
            from scipy.stats import spearmanr
        except ImportError:  # average ranks by hand
            def ranks(v):
                order = np.argsort(v, kind="stable")
                r = np.empty(len(v))
                r[order] = np.arange(1, len(v) + 1)
                for u in np.unique(v):
                    r[v == u] = r[v == u].mean()
                return r

            return np.corrcoef(ranks(a), ranks(b))[0, 1]
        return spearmanr(a, b).statistic

    for a, b in ((x, y), (xt, yt), (x, -x**3), (x, rng.normal(size=300))):
        np.testing.assert_allclose(float(epg.spearman(jnp.asarray(a, jnp.float32),
                                                      jnp.asarray(b, jnp.float32))),
                                   reference(a, b), atol=1e-5)
    np.testing.assert_allclose(float(epg.spearman(jnp.arange(5.0), -jnp.exp(jnp.arange(5.0)))),
                               -1.0, atol=1e-6)
    with pytest.raises(ValueError, match="one length"):
        epg.spearman(jnp.zeros(3), jnp.zeros(4))


def test_fixed_alpha_mode_in_training_and_meta_test(env, tasks):
    """Figure 7's mode: alpha_final = 0.5 with anneal_epochs = 0 keeps alpha at 0.5 in
    every epoch and in the meta-test (whose agent is inner_run's at alpha 0.5, not 0);
    with annealing, alpha goes 1 -> alpha_final. Every update reports section 4.3's
    spearman_ppo, a correlation."""
    fixed = epg.make_train(dataclasses.replace(TINY, alpha_final=0.5, anneal_epochs=0), env)
    for e in (0, 1, 7, 1000):
        assert float(epg.alpha_at(fixed.config, jnp.int32(e))) == 0.5
    annealed = epg.make_train(dataclasses.replace(TINY, alpha_final=0.5, anneal_epochs=4), env)
    np.testing.assert_allclose(
        [float(epg.alpha_at(annealed.config, jnp.int32(e))) for e in (0, 2, 4, 9)],
        [1.0, 0.75, 0.5, 0.5])
    phi = epg.init_loss(fixed.parts, jax.random.PRNGKey(0))
    task = jax.tree.map(lambda x: x[0], tasks)
    key = jax.random.PRNGKey(5)
    run_key = jax.random.split(key)[0]  # what meta_test gives inner_run
    mt = jax.jit(fixed.meta_test)(phi, task, key)
    run = jax.jit(functools.partial(epg.inner_run, fixed.parts))
    at_half = run(phi, task, run_key, jnp.float32(0.5))[1]
    at_zero = run(phi, task, run_key, jnp.float32(0.0))[1]
    np.testing.assert_allclose(mt["loss_ppo"], at_half["loss_ppo"], rtol=1e-4, atol=1e-6)
    assert not np.allclose(mt["loss_ppo"], at_zero["loss_ppo"], rtol=1e-3)
    rho = np.asarray(mt["spearman_ppo"])
    assert rho.shape == (TINY.inner_updates,) and np.isfinite(rho).all()
    assert (np.abs(rho) <= 1.0 + 1e-6).all() and np.unique(np.round(rho, 4)).size > 1


def test_open_es_through_evosax_equals_our_es(env):
    """The evosax adapter in EPG's outer loop: evosax's Open_ES, given our Adam, sigma and
    antithetic noise, takes the same outer step as es_grad + Adam (no L2), and CMA_ES
    runs; evosax minimises, so a sign slip would send Open_ES the other way."""
    pytest.importorskip("evosax")
    # alpha = 0 from the start: the loss decides the fitness (at alpha = 1 every
    # antithetic pair ties, and the step is zero).
    # l2_form="eq5": our direction in eq. 5's units, as Open_ES's (with "code" it is sigma
    # times smaller; Adam ignores the scale except through its eps, ~5e-6 on the smallest
    # coordinates here).
    base = dataclasses.replace(TINY, l2_coef=0.0, l2_form="eq5", anneal_epochs=0)
    flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])
    out = {}
    for name in ("es", "Open_ES", "CMA_ES"):
        tr = epg.make_train(dataclasses.replace(base, outer_strategy=name), env)
        s0 = tr.init(jax.random.PRNGKey(3))
        s1, m = jax.jit(tr.update)(s0)
        assert int(m["nonfinite"]) == 0 and np.isfinite(float(m["fitness_mean"]))
        out[name] = (flat(s0.params["loss"]), flat(s1.params["loss"]),
                     np.asarray(m["fitness_mean"]))
    (p0, p1, f), (q0, q1, g) = out["es"], out["Open_ES"]
    np.testing.assert_array_equal(p0, q0)
    np.testing.assert_allclose(f, g, rtol=1e-6)  # same members, same tasks
    assert np.abs(p1 - p0).max() > 1e-4
    np.testing.assert_allclose(q1 - q0, p1 - p0, atol=1e-6)
    c0, c1, _ = out["CMA_ES"]
    assert np.abs(c1 - c0).max() > 0


def test_task_samplers_pendulum():
    dist = envs.task_distribution("pendulum")
    ts = jax.vmap(dist.sample)(jax.random.split(jax.random.PRNGKey(0), 512))
    for f, (lo, hi) in dist.ranges.items():
        v = np.asarray(ts[f])
        assert v.min() >= lo and v.max() <= hi and v.std() > 0.1 * (hi - lo), f
    a, b = dist.sample(jax.random.PRNGKey(1)), dist.sample(jax.random.PRNGKey(2))
    assert all(float(a[f]) != float(b[f]) for f in dist.factors)
    # A randomised env keeps its task across steps and auto-resets; the task changes the
    # dynamics (heavier, longer pendulum: different trajectory from the same start).
    env = envs.make("pendulum", randomize=True, task_ranges={"m": (0.9, 1.1)})
    assert env.tasks.ranges["m"] == (0.9, 1.1)
    heavy = {**dist.nominal(), "m": jnp.float32(1.1), "l": jnp.float32(1.5)}

    def run(task):
        s = env.reset(jax.random.PRNGKey(0), task=task)

        def body(s, _):
            s = env.step(s, jnp.ones((1,)))
            return s, (s.obs, s.info["task"]["m"], s.done)

        return jax.lax.scan(body, s, None, length=450)[1]

    obs_h, m_h, done_h = jax.jit(run)(heavy)
    obs_n, _, _ = jax.jit(run)(dist.nominal())
    assert float(done_h.sum()) == 2  # two auto-resets (200-step episodes)
    np.testing.assert_allclose(np.asarray(m_h), 1.1)
    assert float(jnp.abs(obs_h - obs_n).max()) > 0.1
    with pytest.raises(ValueError, match="unknown task factor"):
        envs.make("pendulum", randomize=True, task_ranges={"mass": (1, 2)})
    with pytest.raises(ValueError, match="no task distribution"):
        envs.make("cartpole", randomize=True)
    with pytest.raises(ValueError, match="not randomised"):
        envs.make("pendulum").reset(jax.random.PRNGKey(0), task=dist.nominal())


def test_bad_configs_fail_clearly(env):
    with pytest.raises(ConfigError, match="pop_size"):
        epg.Config(pop_size=5)
    with pytest.raises(ConfigError, match="buffer_size"):
        epg.Config(buffer_size=64, steps_per_update=128)
    with pytest.raises(ConfigError, match="too short"):
        epg.Config(buffer_size=8, steps_per_update=8)
    with pytest.raises(ConfigError, match=r"outer_strategy.*CMA_ES"):
        epg.Config(outer_strategy="cma-es")
    with pytest.raises(ConfigError, match="inner_optimizer"):
        epg.Config(inner_optimizer="rmsprop")
    with pytest.raises(ValueError, match="not randomised"):
        epg.make_train(TINY, envs.make("pendulum"))
    # the fields of issue 33: one line naming the value and what is allowed
    for field, bad, allowed in (("alpha_final", 1.5, r"a number in \[0.0, 1.0\]"),
                                ("alpha_final", -0.1, r"a number in \[0.0, 1.0\]"),
                                ("alpha_final", "0.5", r"a number in"),
                                ("l2_form", "paper", r"one of \['code', 'eq5'\]")):
        with pytest.raises(ConfigError, match=rf"^config field {field}={bad!r} is invalid; "
                                              rf"allowed: {allowed}") as e:
            epg.Config(**{field: bad})
        assert "\n" not in str(e.value)


def test_presets():
    """The Reacher preset is the paper's (section 4.1, Figure 5): K = 512 updates of
    M = 128 steps, n = 32, buffer 128, 3000 epochs with alpha annealed over 500."""
    r = epg.preset("reacher")
    assert (r.inner_updates, r.steps_per_update, r.pop_size, r.buffer_size) == (512, 128, 32, 128)
    assert (r.num_epochs, r.alpha_epochs, r.alpha_final) == (3000, 500, 0.0)
    assert r.l2_form == "code" and r.l2_coef == 1e-3 and r.sigma == 0.01
    assert epg.preset("hopper") == epg.Config() and epg.Config().inner_updates == 128
