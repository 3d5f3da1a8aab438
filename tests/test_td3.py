"""TD3 / DDPG (metareward.algos.td3) and the ring replay buffer they use: the TD target
against a numpy computation, target smoothing, the policy delay and Polyak averaging,
DDPG as a config, truncation vs termination in the stored rows, config errors, and
(slow) learning on pendulum."""

import dataclasses

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from metareward import envs
from metareward.algos import td3
from metareward.algos.config import ConfigError
from metareward.rl import replay

TINY = td3.Config(total_steps=64, learning_starts=16, buffer_size=64, batch_size=8,
                  hidden=(16, 16), policy_delay=2)


@pytest.fixture(scope="module")
def env():
    return envs.make("pendulum")


@pytest.fixture(scope="module")
def trainer(env):
    return td3.make_train(TINY, env)


@pytest.fixture(scope="module")
def learning_state(trainer):
    """A state just past ``learning_starts`` (buffer holds 16 transitions)."""
    state = trainer.init(jax.random.PRNGKey(0))
    run = jax.jit(lambda s: jax.lax.scan(lambda s, _: trainer.update(s), s, None, length=15)[0])
    return run(state)


def _batch(key, obs_dim=3, n=8):
    k = jax.random.split(key, 5)
    # terminal = done * (1 - truncation) = [0, 1, 0, 0, 1, 0, 0, 0]; row 2 is truncated.
    return replay.Row(
        obs=jax.random.normal(k[0], (n, obs_dim)),
        action=jax.random.uniform(k[1], (n, 1), minval=-1, maxval=1),
        reward=jax.random.normal(k[2], (n,)),
        done=jnp.array([0, 1, 1, 0, 1, 0, 0, 0], jnp.float32)[:n],
        truncation=jnp.array([0, 0, 1, 0, 0, 0, 0, 0], jnp.float32)[:n],
        next_obs=jax.random.normal(k[3], (n, obs_dim)),
    )


def test_td_target_is_clipped_double_q_with_bootstrap_on_truncation(trainer, learning_state):
    """Without target noise, y = r + gamma (1 - terminal) min_i Q'_i(s', mu'(s')): a
    truncated row (done, not terminal) bootstraps, a terminal row does not."""
    cfg = dataclasses.replace(TINY, target_noise=0.0)
    tr, parts = td3.make_train(cfg, trainer.env), td3.make_parts(cfg, trainer.env)
    tp = learning_state.target_params
    b = _batch(jax.random.PRNGKey(1))
    np.testing.assert_array_equal(b.terminal, [0, 1, 0, 0, 1, 0, 0, 0])
    y = np.asarray(td3.td_target(parts, tp, b, jax.random.PRNGKey(2)))
    a_next = tr.actor.apply(tp["actor"], b.next_obs)
    q = np.asarray(jax.vmap(lambda p: tr.critic.apply(p, b.next_obs, a_next))(tp["critic"]))
    assert not np.allclose(q[0], q[1])  # two distinct critics, so min matters
    expected = np.asarray(b.reward) + 0.99 * (1 - np.asarray(b.terminal)) * q.min(0)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert y[2] != pytest.approx(float(b.reward[2]))  # truncated: bootstraps
    assert y[1] == pytest.approx(float(b.reward[1]))  # terminal: no bootstrap


def test_target_smoothing_noise_is_clipped(trainer, learning_state):
    """With huge target noise clipped at 0.3, a' stays within mu'(s') +- 0.3 (and the
    box): the target equals one computed at some a' in that interval. Checked with a
    one-critic config by bracketing y between the min and max of Q' over the interval."""
    cfg = dataclasses.replace(TINY, target_noise=100.0, target_noise_clip=0.3,
                              twin_critics=False)
    tr, parts = td3.make_train(cfg, trainer.env), td3.make_parts(cfg, trainer.env)
    st = tr.init(jax.random.PRNGKey(3))
    b = _batch(jax.random.PRNGKey(4))._replace(done=jnp.zeros(8))  # no terminal row
    y = np.asarray(td3.td_target(parts, st.target_params, b, jax.random.PRNGKey(5)))
    mu = tr.actor.apply(st.target_params["actor"], b.next_obs)
    grid = jnp.clip(mu[None] + jnp.linspace(-0.3, 0.3, 601)[:, None, None], -1, 1)
    crit = jax.tree.map(lambda x: x[0], st.target_params["critic"])
    q = np.asarray(jax.vmap(lambda a: tr.critic.apply(crit, b.next_obs, a))(grid))
    lo = np.asarray(b.reward) + 0.99 * q.min(0)
    hi = np.asarray(b.reward) + 0.99 * q.max(0)
    assert np.all(y >= lo - 1e-4) and np.all(y <= hi + 1e-4)
    # ... and the noise was used: not the noiseless target for every row.
    y0 = np.asarray(b.reward) + 0.99 * np.asarray(tr.critic.apply(crit, b.next_obs, mu))
    assert not np.allclose(y, y0, atol=1e-4)


def test_policy_delay_and_polyak_targets(env):
    """policy_delay=3, one gradient step per update: the critic moves every step; the
    actor and the targets only on steps 0, 3, 6, ... and then the targets are exactly
    tau * online + (1 - tau) * old target."""
    cfg = dataclasses.replace(TINY, policy_delay=3, tau=0.1, learning_starts=8)
    tr = td3.make_train(cfg, env)
    upd = jax.jit(tr.update)
    s = tr.init(jax.random.PRNGKey(0))
    for _ in range(7):  # 8 env steps -> learning starts at the 8th update
        s, _ = upd(s)
    assert int(s.grad_steps) == 0
    flat = lambda p: jax.flatten_util.ravel_pytree(p)[0]
    for step in range(7):
        new, _ = upd(s)
        assert int(new.grad_steps) == step + 1
        assert not np.allclose(flat(new.params["critic"]), flat(s.params["critic"]))
        moved = not np.allclose(flat(new.params["actor"]), flat(s.params["actor"]))
        assert moved == (step % 3 == 0), step
        if step % 3 == 0:
            expected = 0.1 * flat(new.params) + 0.9 * flat(s.target_params)
            np.testing.assert_allclose(flat(new.target_params), expected, rtol=1e-5,
                                       atol=1e-6)
        else:
            np.testing.assert_array_equal(flat(new.target_params), flat(s.target_params))
        s = new


def test_ddpg_is_a_config(env):
    """DDPG: one critic, no target noise, the actor steps every critic step."""
    cfg = td3.DDPGConfig(total_steps=64, learning_starts=8, buffer_size=64, batch_size=8,
                         hidden=(16, 16))
    assert (cfg.policy_delay, cfg.target_noise, cfg.twin_critics) == (1, 0.0, False)
    tr, parts = td3.make_train(cfg, env), td3.make_parts(cfg, env)
    s = tr.init(jax.random.PRNGKey(0))
    assert jax.tree.leaves(s.params["critic"])[0].shape[0] == 1
    upd = jax.jit(tr.update)
    for _ in range(8):
        s, _ = upd(s)
    flat = lambda p: jax.flatten_util.ravel_pytree(p)[0]
    for _ in range(2):
        new, _ = upd(s)
        assert not np.allclose(flat(new.params["actor"]), flat(s.params["actor"]))
        s = new
    # The target is deterministic without noise.
    b = _batch(jax.random.PRNGKey(1))
    np.testing.assert_array_equal(td3.td_target(parts, s.target_params, b, jax.random.PRNGKey(1)),
                                  td3.td_target(parts, s.target_params, b, jax.random.PRNGKey(2)))


def test_stored_rows_and_random_phase(env):
    """Before learning_starts actions are uniform in the box and no gradient step is
    taken; the row at pendulum's 200-step time limit is done but not terminal."""
    cfg = dataclasses.replace(TINY, total_steps=256, learning_starts=1000, buffer_size=256)
    tr = td3.make_train(cfg, env)
    s0 = tr.init(jax.random.PRNGKey(0))
    s, _ = jax.jit(tr.train)(jax.random.PRNGKey(0))
    d = s.buffer.data
    assert int(s.buffer.size) == 256 and int(s.grad_steps) == 0
    np.testing.assert_array_equal(jax.flatten_util.ravel_pytree(s.params)[0],
                                  jax.flatten_util.ravel_pytree(s0.params)[0])
    a = np.asarray(d.action)
    assert a.min() >= -1 and a.max() <= 1 and a.std() > 0.4  # uniform on [-1, 1]: 0.58
    done, term = np.asarray(d.done[:, 0]), np.asarray(d.terminal[:, 0])
    assert done.sum() == 1 and done[199] == 1 and term.sum() == 0
    # next_obs of the time-limit row is the final observation, not the reset one.
    np.testing.assert_allclose(d.next_obs[198, 0], d.obs[199, 0], rtol=1e-6)
    assert not np.allclose(d.next_obs[199, 0], d.obs[200, 0])


def test_ring_buffer_insert_sample_and_windows():
    """Inserts wrap around in place; samples come from valid rows only; windows are
    consecutive steps of one env, masked after the first episode end and past the
    newest row."""
    row = {"x": jnp.zeros((2,)), "done": jnp.zeros((2,))}
    buf = replay.ring_init(row, 6)
    for t in range(4):  # rows 0..3 hold steps 0..3; env 1 holds -step
        buf = replay.ring_insert(buf, {"x": jnp.array([[t, -t]], jnp.float32),
                                       "done": jnp.array([[t == 1, 0]], jnp.float32)})
    assert int(buf.size) == 4 and int(buf.head) == 4
    t, e = replay.ring_sample_indices(jax.random.PRNGKey(0), buf, 500)
    assert set(np.asarray(t).tolist()) == {0, 1, 2, 3} and set(np.asarray(e).tolist()) == {0, 1}
    w, mask = replay.ring_windows(jax.random.PRNGKey(1), buf, 200, 3, lambda d: d["done"])
    x, m = np.asarray(w["x"]), np.asarray(mask)
    for i in range(200):
        start = x[i, 0]
        sign = 1 if start > 0 or (start == 0 and x[i, 1] >= 0) else -1
        steps = abs(start) + np.arange(3)
        valid = steps <= 3  # past the newest row: masked
        if sign > 0:  # env 0 ends its episode at step 1
            valid &= ~((steps > 1) & (abs(start) <= 1))
        np.testing.assert_array_equal(m[i], valid.astype(np.float32), err_msg=str(x[i]))
        np.testing.assert_array_equal(x[i][m[i] > 0], (sign * steps)[m[i] > 0])
    for t in range(4, 9):  # wraps: 9 steps in 6 rows, the newest 6 (3..8) kept
        buf = replay.ring_insert(buf, {"x": jnp.array([[t, -t]], jnp.float32),
                                       "done": jnp.zeros((1, 2))})
    assert int(buf.size) == 6 and int(buf.head) == 3
    w, mask = replay.ring_windows(jax.random.PRNGKey(2), buf, 300, 4, lambda d: d["done"])
    x, m = np.abs(np.asarray(w["x"])), np.asarray(mask)
    assert x[:, 0].min() == 3 and x[:, 0].max() == 8
    for i in range(300):
        np.testing.assert_array_equal(m[i], (x[i, 0] + np.arange(4) <= 8).astype(np.float32))
        np.testing.assert_array_equal(x[i][m[i] > 0], x[i, 0] + np.arange(4)[m[i] > 0])
    with pytest.raises(ValueError, match="divisor"):
        replay.ring_insert(buf, {"x": jnp.zeros((4, 2)), "done": jnp.zeros((4, 2))})


def test_bad_inputs(env):
    with pytest.raises(ValueError, match="continuous"):
        td3.make_train(TINY, envs.make("cartpole"))
    with pytest.raises(ConfigError, match="tau"):
        td3.Config(tau=0.0)
    with pytest.raises(ConfigError, match="policy_delay"):
        td3.Config(policy_delay=0)
    with pytest.raises(ConfigError, match="exploration_noise"):
        td3.Config(exploration_noise=-0.1)
    with pytest.raises(ValueError, match="less than one rollout"):
        td3.make_train(dataclasses.replace(TINY, total_steps=0 + 1, num_steps=2), env)
    with pytest.raises(TypeError, match=r"td3\.Config"):
        td3.make_train(object(), env)


def test_nonfinite_reward_is_skipped_and_counted(trainer, learning_state):
    """NaN rewards in the buffer make the critic's loss NaN: the step is skipped (the
    critic kept) and counted in ``nonfinite``."""
    s = learning_state
    d = s.buffer.data
    s = s.replace(buffer=s.buffer.replace(data=d._replace(reward=d.reward * jnp.nan)))
    new, _ = jax.jit(trainer.update)(s)
    assert int(new.nonfinite) >= 1
    flat = lambda p: jax.flatten_util.ravel_pytree(p)[0]
    np.testing.assert_array_equal(flat(new.params["critic"]), flat(s.params["critic"]))


@pytest.mark.slow
@pytest.mark.learning
def test_td3_learns_pendulum():
    """Budget: the pendulum preset, 50k env steps per seed (the issue allows 100k), 4
    seeds at once; mean over 16 episodes of each seed's deterministic policy >= -250 on
    average, and every seed >= -400."""
    env = envs.make("pendulum")
    tr = td3.make_train(td3.preset("pendulum"), env)
    s, _ = jax.jit(jax.vmap(tr.train))(jax.random.split(jax.random.PRNGKey(0), 4))
    ev = jax.jit(jax.vmap(lambda s, k: tr.evaluate(s, k, 16)))(
        s, jax.random.split(jax.random.PRNGKey(1), 4))
    per_seed = np.asarray(ev).mean(1)
    assert per_seed.mean() >= -250, per_seed
    assert per_seed.min() >= -400, per_seed


def test_td3_runs_through_the_driver(tmp_path):
    """``metareward train td3``: the chunked runner (checkpoints, metrics records,
    final evaluation) equals ``jit(vmap(train))``; the random phase's zero losses are no
    non-finite error."""
    import io

    from metareward.runtime import driver

    over = {"total_steps": "48", "learning_starts": "16", "buffer_size": "48",
            "batch_size": "8", "hidden": "(16, 16)"}
    opts = driver.RunOptions(seeds=2, chunk_updates=16, checkpoint_every=1, eval_episodes=2)
    for algo in ("td3",):
        plan = driver.prepare(algo, "pendulum", overrides=over, options=opts)
        res = driver.start(plan, tmp_path / algo, stream=io.StringIO(), progress=False)
        assert res.update == 48
        state, _ = jax.jit(jax.vmap(plan.learner.train))(plan.keys())
        np.testing.assert_allclose(jax.flatten_util.ravel_pytree(res.state.params)[0],
                                   jax.flatten_util.ravel_pytree(state.params)[0],
                                   rtol=1e-5, atol=1e-6)
