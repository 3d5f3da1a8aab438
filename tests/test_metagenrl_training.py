"""MetaGenRL's training details from the authors' code (issue 33; ``REFERENCE_NOTES.md``,
"MetaGenRL"): the annealing schedule and when updates start, the episode-uniform window
sampler against an independent reference, the policy-gradient clipping, the critic on the
window batch, the 2 x 100 meta-batch, the time input, and the config fields' validation.
Each test runs against both values of its field, the authors' default and the first
version's (:data:`metareward.algos.metagenrl.LEGACY_TRAINING`)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from metareward import envs
from metareward.algos import metagenrl as mg
from metareward.algos.config import ConfigError
from metareward.rl import replay

LEGACY = mg.LEGACY_TRAINING
TINY = mg.Config(
    num_agents=1,
    total_steps=400,
    learning_starts=100,
    buffer_size=64,
    batch_size=8,
    window=5,
    hidden=(16, 16),
    anneal_steps=50,
    inner_windows=8,
    meta_learn=False,
)


# ---- config ----------------------------------------------------------------------------


def test_defaults_are_the_authors_and_legacy_is_the_first_version():
    c = mg.Config()
    assert (
        c.annealing,
        c.policy_grad_clip,
        c.window_sampler,
        c.critic_batch,
        c.meta_batch,
        c.time_input,
    ) == ("from_start", 1.0, "episode", "windows", "per_part", "window")
    assert set(LEGACY) == {
        "annealing",
        "policy_grad_clip",
        "window_sampler",
        "critic_batch",
        "meta_batch",
        "time_input",
    }
    legacy = dataclasses.replace(c, **LEGACY)
    for name, allowed in (
        ("annealing", mg.ANNEALING),
        ("window_sampler", mg.WINDOW_SAMPLERS),
        ("critic_batch", mg.CRITIC_BATCHES),
        ("meta_batch", mg.META_BATCHES),
        ("time_input", mg.TIME_INPUTS),
    ):
        assert getattr(c, name) == allowed[0] and getattr(legacy, name) == allowed[1]


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("annealing", "linear", "one of ['from_start', 'after_learning_starts']"),
        ("window_sampler", "uniform", "one of ['episode', 'transition']"),
        ("critic_batch", "window", "one of ['windows', 'transitions']"),
        ("meta_batch", 2, "one of ['per_part', 'split']"),
        ("time_input", "t/T", "one of ['window', 'episode']"),
        ("policy_grad_clip", 0.0, "a number > 0, or None (no clipping)"),
        ("policy_grad_clip", True, "a number > 0, or None (no clipping)"),
    ],
)
def test_bad_values_fail_in_one_line_naming_value_and_allowed(field, value, allowed):
    with pytest.raises(ConfigError) as e:
        mg.Config(**{field: value})
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == f"config field {field}={value!r} is invalid; allowed: {allowed}"


def test_batch_size_must_divide_into_parts_only_when_split():
    mg.Config(batch_size=7, inner_steps=1)  # per_part: two parts of 7 windows each
    mg.Config(batch_size=7, inner_steps=1, policy_grad_clip=None)
    with pytest.raises(ConfigError, match=r"batch_size=7 .* meta_batch='split'"):
        mg.Config(batch_size=7, inner_steps=1, meta_batch="split")


# ---- (a) annealing ---------------------------------------------------------------------

T_STEPS = [0, 1, 2_500, 5_000, 9_999, 10_000, 12_500, 15_000, 20_000, 30_000]
# Config(): learning_starts = anneal_steps = 10k. The authors' code:
# progress = min(1, t / obj_func_anneal_steps) with t the env steps so far.
P_FROM_START = [0.0, 1e-4, 0.25, 0.5, 0.9999, 1.0, 1.0, 1.0, 1.0, 1.0]
P_AFTER = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.25, 0.5, 1.0, 1.0]


@pytest.mark.parametrize(
    ("annealing", "expected"), [("from_start", P_FROM_START), ("after_learning_starts", P_AFTER)]
)
def test_anneal_schedule_values(annealing, expected):
    c = mg.Config(annealing=annealing)
    got = np.asarray(jax.jit(lambda t: mg.anneal_p(c, t))(jnp.asarray(T_STEPS)))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    # anneal_steps = 0 (meta-test): the objective alone from the start
    one = mg.anneal_p(dataclasses.replace(c, anneal_steps=0), jnp.asarray(T_STEPS))
    np.testing.assert_array_equal(one, 1.0)


def test_updates_start_before_learning_starts_only_with_the_authors_schedule():
    t = jnp.asarray([1, 99, 100, 5_000, 9_999, 10_000])
    np.testing.assert_array_equal(mg.updates_allowed(mg.Config(), t), True)
    after = mg.Config(annealing="after_learning_starts")
    np.testing.assert_array_equal(
        mg.updates_allowed(after, t), [False, False, False, False, False, True]
    )
    # (learning_starts below the batch: the first version waited for batch_size steps)
    small = dataclasses.replace(after, learning_starts=10)
    np.testing.assert_array_equal(mg.updates_allowed(small, t), [False] * 2 + [True] * 4)


@pytest.mark.slow
def test_agents_update_during_random_exploration_from_their_first_episode():
    """A run shorter than ``learning_starts`` (all actions random): with the authors'
    schedule every agent updates from the update that completes its first episode (6
    steps) on, with ``p = t / anneal_steps``; with the first version's nothing moves."""
    env = envs.make("pendulum", episode_length=6)
    base = dataclasses.replace(
        TINY, num_agents=2, total_steps=24, buffer_size=24, learning_starts=1_000, anneal_steps=100
    )
    for annealing in mg.ANNEALING:
        tr = mg.make_train(dataclasses.replace(base, annealing=annealing), env)
        s0 = tr.init(jax.random.PRNGKey(0))
        s, m = jax.jit(tr.train)(jax.random.PRNGKey(0))
        moved = [
            not np.allclose(
                ravel_pytree(s.params["agents"][0][k])[0],
                ravel_pytree(s0.params["agents"][0][k])[0],
            )
            for k in ("actor", "critic")
        ]
        if annealing == "from_start":
            np.testing.assert_array_equal(m["agent_ready"], [0.0] * 5 + [1.0] * 19)
            np.testing.assert_allclose(m["anneal_p"], np.arange(1, 25) / 100, rtol=1e-6)
            assert np.all(np.asarray(m["critic_loss"])[5:] > 0)
            assert moved == [True, True]
        else:
            np.testing.assert_array_equal(m["anneal_p"], 0.0)
            np.testing.assert_array_equal(m["critic_loss"], 0.0)
            assert moved == [False, False]


# ---- (b) the window sampler --------------------------------------------------------------


def _history(lengths_per_column: list[list[int]], rows: int) -> dict[str, np.ndarray]:
    """``rows`` steps of each column made of episodes of the given lengths, cycled, with
    a global episode id and the step's index in its episode per row: ``[rows, N]``."""
    N = len(lengths_per_column)
    ep = np.zeros((rows, N), np.int32)
    k = np.zeros((rows, N), np.int32)
    done = np.zeros((rows, N), np.float32)
    next_id = 0
    for c, lengths in enumerate(lengths_per_column):
        t, i = 0, 0
        while t < rows:
            n = lengths[i % len(lengths)]
            for j in range(n):
                if t + j < rows:
                    ep[t + j, c], k[t + j, c] = next_id, j
                    done[t + j, c] = float(j == n - 1)
            t, i, next_id = t + n, i + 1, next_id + 1
    return {"ep": ep, "k": k, "done": done}


def _reference_episodes(hist: dict[str, np.ndarray], inserted: int, L: int):
    """The completed episodes wholly inside the last ``min(inserted, L)`` rows, per column:
    a list of (column, episode id, length), found from the raw rows (no index)."""
    lo = max(0, inserted - L)
    out = []
    for c in range(hist["ep"].shape[1]):
        for e in np.unique(hist["ep"][:inserted, c]):
            rows = np.nonzero(hist["ep"][:inserted, c] == e)[0]
            if rows[0] >= lo and hist["done"][rows[-1], c] > 0:
                out.append((c, int(e), len(rows)))
    return out


def _fill(hist, L, T, upto):
    buf = replay.ring_init({k: jnp.asarray(v[0]) for k, v in hist.items()}, L)
    idx = replay.episode_index_init(buf)
    insert = jax.jit(
        lambda b, i, rows: (
            replay.ring_insert(b, rows),
            replay.episode_insert(i, b.head, rows["done"]),
        )
    )
    for t in range(0, upto, T):
        buf, idx = insert(buf, idx, {k: jnp.asarray(v[t : t + T]) for k, v in hist.items()})
    return buf, idx


def test_episode_index_tracks_the_completed_episodes_through_wrap_around():
    L, T = 24, 3
    hist = _history([[2, 7, 1, 5, 11, 3], [4, 30, 1, 6]], 150)  # col 1: one episode > L
    buf = replay.ring_init({k: jnp.asarray(v[0]) for k, v in hist.items()}, L)
    idx = replay.episode_index_init(buf)
    insert = jax.jit(
        lambda b, i, rows: (
            replay.ring_insert(b, rows),
            replay.episode_insert(i, b.head, rows["done"]),
        )
    )
    for t in range(0, 150, T):
        buf, idx = insert(buf, idx, {k: jnp.asarray(v[t : t + T]) for k, v in hist.items()})
        ref = _reference_episodes(hist, t + T, L)
        for c in range(2):
            n = int(idx.count[c])
            slots = (int(idx.head[c]) - n + np.arange(n)) % L
            starts, lens = np.asarray(idx.start)[slots, c], np.asarray(idx.length)[slots, c]
            got = [
                (c, int(np.asarray(buf.data["ep"])[s, c]), int(n_))
                for s, n_ in zip(starts, lens, strict=True)
            ]
            assert got == [r for r in ref if r[0] == c], (t, c)
            # the recorded first row is the episode's step 0
            assert np.all(np.asarray(buf.data["k"])[starts, c] == 0)


def _draw(buf, idx, B, W, draws):
    fn = jax.jit(lambda k: replay.ring_episode_windows(k, buf, idx, B, W))
    eps, masks, ks = [], [], []
    for i in range(draws):
        win, mask = fn(jax.random.PRNGKey(i))
        eps.append(np.asarray(win["ep"]))
        ks.append(np.asarray(win["k"]))
        masks.append(np.asarray(mask))
    return np.concatenate(eps), np.concatenate(ks), np.concatenate(masks)


def test_episode_windows_are_episode_uniform_and_inside_one_episode():
    """Mixed episode lengths (1 to 40 steps, windows of 5) in two columns with different
    episode counts, after wrap-around: the episodes' frequencies over 131k windows against
    ``1 / #episodes`` each, the offsets inside each episode against uniform over
    ``max(len - W, 0) + 1``, and every window's valid steps are consecutive steps of one
    episode. The first version's sampler (start uniform over transitions) draws the short
    episodes in proportion to their length and fails the first check."""
    L, T, W, B = 96, 2, 5, 4096
    hist = _history([[1, 40, 2, 3, 17], [6, 9, 2]], 300)
    buf, idx = _fill(hist, L, T, 300)
    ref = _reference_episodes(hist, 300, L)
    lengths = {e: n for _, e, n in ref}
    assert int(jnp.sum(idx.count)) == len(ref) and min(lengths.values()) == 1
    eps, ks, masks = _draw(buf, idx, B, W, 32)
    first_ep, first_k = eps[:, 0], ks[:, 0]
    # (1) episode frequencies: uniform over the held episodes (binomial 5-sigma bounds),
    # and no window from an episode not (wholly) held
    n = len(first_ep)
    p = 1.0 / len(ref)
    counts = np.array([np.sum(first_ep == e) for _, e, _ in ref])
    np.testing.assert_array_less(np.abs(counts / n - p), 5 * np.sqrt(p * (1 - p) / n))
    assert counts.sum() == n
    # (2) every window inside one episode: valid steps = min(len, W), consecutive steps
    n_valid = masks.sum(1).astype(int)
    np.testing.assert_array_equal(n_valid, [min(lengths[e], W) for e in first_ep])
    for j in range(W):
        v = masks[:, j] > 0
        np.testing.assert_array_equal(eps[v, j], first_ep[v])
        np.testing.assert_array_equal(ks[v, j], first_k[v] + j)
    # (3) offsets uniform over the fits inside each episode
    for _, e, length in ref:
        offs = first_k[first_ep == e]
        m = max(length - W, 0) + 1
        assert offs.min() >= 0 and offs.max() <= m - 1
        if m > 1:
            freq = np.bincount(offs, minlength=m) / len(offs)
            np.testing.assert_array_less(
                np.abs(freq - 1 / m), 5 * np.sqrt((1 / m) * (1 - 1 / m) / len(offs))
            )
    # (4) the first version's sampler: start uniform over transitions
    k_old = jax.random.PRNGKey(0)
    win, _ = jax.jit(lambda k: replay.ring_windows(k, buf, B * 8, W, lambda d: d["done"]))(k_old)
    old_first = np.asarray(win["ep"])[:, 0]
    one_step = [e for _, e, n_ in ref if n_ == 1]
    p_old = np.mean(np.isin(old_first, one_step))
    p_new = np.mean(np.isin(first_ep, one_step))
    assert p_new == pytest.approx(len(one_step) / len(ref), abs=0.01)
    assert p_old < 0.5 * p_new


def test_episode_windows_without_a_completed_episode_are_all_masked():
    hist = _history([[50]], 20)
    buf, idx = _fill(hist, 32, 2, 20)
    assert int(idx.count[0]) == 0
    _, mask = replay.ring_episode_windows(jax.random.PRNGKey(0), buf, idx, 8, 5)
    np.testing.assert_array_equal(mask, 0.0)


# ---- a small population with a filled buffer ------------------------------------------------


@pytest.fixture(scope="module")
def env():
    return envs.make("pendulum")


def _filled_state(parts):
    """The initial population of ``parts`` (:func:`metagenrl.make_parts`), every agent's
    buffer holding 64 random rows in episodes of 9 steps (and its episode index to
    match)."""
    s = jax.jit(functools.partial(mg.init, parts))(jax.random.PRNGKey(0))
    k = jax.random.split(jax.random.PRNGKey(1), 6)
    L = 64
    done = (jnp.arange(L) % 9 == 8).astype(jnp.float32)[:, None]
    rows = replay.Row(  # every other episode ends by the time limit: terminal = done * (1 - trunc)
        obs=jax.random.normal(k[0], (L, 1, 3)),
        action=jax.random.uniform(k[1], (L, 1, 1), minval=-1, maxval=1),
        reward=jax.random.normal(k[2], (L, 1)),
        done=done,
        truncation=done * (jnp.arange(L) % 18 != 8)[:, None],
        next_obs=jax.random.normal(k[3], (L, 1, 3)),
        time=((jnp.arange(L) % 9) / 200.0)[:, None],
    )
    n = parts.groups[0].num_agents
    rows_n = jax.tree.map(lambda x: jnp.stack([x] * n), rows)
    g = s.groups[0]
    buf = jax.vmap(replay.ring_insert)(g.buffer, rows_n)
    eps = jax.vmap(replay.episode_insert)(g.episodes, g.buffer.head, rows_n.done)
    return s.replace(groups=(g.replace(buffer=buf, episodes=eps),))


def _agent(state, i=0):
    return (
        jax.tree.map(lambda x: x[i], state.params["agents"][0]),
        jax.tree.map(lambda x: x[i], state.groups[0]),
    )


# ---- (c) policy-gradient clipping ------------------------------------------------------------


def _adam_first_moment(opt_state) -> jnp.ndarray:
    """Adam's ``mu`` after its first step from zeros: ``(1 - b1) * g`` with ``g`` the
    gradient it was fed (the flat actor vector's)."""
    states = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: hasattr(x, "mu"))
        if hasattr(s, "mu")
    ]
    assert len(states) == 1
    return states[0].mu


@pytest.fixture(scope="module")
def stepper(env):
    """``stepper(clip) -> (parts, state, step)``: the parts of ``TINY`` with windows of
    12 steps (episodes of 9 in the filled buffer: 3 steps of each window masked), its
    filled state and its jitted agent step ``step(params, agents, key, policy_turn, p)``,
    compiled once per ``clip``."""
    cache = {}

    def get(clip):
        if clip not in cache:
            parts = mg.make_parts(dataclasses.replace(TINY, window=12, policy_grad_clip=clip), env)
            s = _filled_state(parts)
            alpha = s.params["objective"]
            group = parts.groups[0]
            step = jax.jit(
                lambda pa, ag, k, turn, p: mg.agent_step(parts, group, pa, ag, alpha, k, turn, p)
            )
            cache[clip] = (parts, s, step)
        return cache[clip]

    return get


@pytest.mark.parametrize("clip", [1.0, None])
def test_policy_gradient_is_clipped_to_global_norm_one(stepper, clip):
    """DDPG's gradient (``p = 0``) through a critic scaled up so that its norm is well
    above 1: Adam is fed that gradient rescaled to norm 1.0 with ``policy_grad_clip=1.0``
    and unchanged with ``None`` (the first version)."""
    parts, s, step = stepper(clip)
    params, agents = _agent(s)
    params = {**params, "critic": jax.tree.map(lambda x: 30.0 * x, params["critic"])}
    key = jax.random.PRNGKey(3)
    out = step(params, agents, key, jnp.bool_(True), jnp.float32(0.0))
    raw = float(out[4]["policy_grad_norm"])
    assert raw > 2.0, raw  # the precondition: a gradient clipping would change
    fed = np.asarray(_adam_first_moment(out[1].opt_state["actor"])) / 0.1  # (1 - b1) = 0.1
    expected = 1.0 if clip is not None else raw
    np.testing.assert_allclose(np.linalg.norm(fed), expected, rtol=1e-4)
    # and the DDPG gradient itself, recomputed: -grad mean Q_1(s, pi(s)) on the policy batch
    win, mask = jax.jit(functools.partial(mg.sample_batches, parts.config))(agents, key).policy
    q1 = jax.tree.map(lambda x: x[0], out[0]["critic"])
    flat, unravel = ravel_pytree(params["actor"])
    td3_ = parts.groups[0].td3

    def minus_q(f):
        q = td3_.critic.apply(q1, win.obs, td3_.actor.apply(unravel(f), win.obs))
        return -jnp.sum(q * mask) / jnp.sum(mask)

    g = np.asarray(jax.jit(jax.grad(minus_q))(flat))
    np.testing.assert_allclose(np.linalg.norm(g), raw, rtol=1e-4)
    np.testing.assert_allclose(fed, g * expected / raw, rtol=1e-3, atol=1e-6)


# ---- (d) the critic's batch and the meta-batch -----------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_batch_shapes(env, legacy):
    """Table 4's batch of 100 and windows of 20 with one inner step: the critic on 100
    windows x 20 steps (masked) and the meta-gradient on 2 x 100 windows (default), or the
    first version's 100 transitions and 100 windows split 50/50."""
    c = mg.Config(
        num_agents=1, total_steps=400, buffer_size=400, hidden=(8, 8), **(LEGACY if legacy else {})
    )
    parts = mg.make_parts(c, envs.make("pendulum", episode_length=30))
    s = jax.jit(functools.partial(mg.init, parts))(jax.random.PRNGKey(0))
    # 400 steps of 30-step episodes: 13 completed ones (by the time limit)
    done = (jnp.arange(400) % 30 == 29).astype(jnp.float32)[:, None]
    rows = replay.Row(
        obs=jnp.zeros((400, 1, 3)),
        action=jnp.zeros((400, 1, 1)),
        reward=jnp.zeros((400, 1)),
        done=done,
        truncation=done,
        next_obs=jnp.zeros((400, 1, 3)),
        time=jnp.zeros((400, 1)),
    )
    _, agents = _agent(s)
    agents = agents.replace(
        buffer=replay.ring_insert(agents.buffer, rows),
        episodes=replay.episode_insert(agents.episodes, agents.buffer.head, rows.done),
    )
    b = jax.jit(functools.partial(mg.sample_batches, c))(agents, jax.random.PRNGKey(1))
    (cr, cm), (pr, pm), (mr, mm) = b
    assert pr.obs.shape == (100, 20, 3) and pm.shape == (100, 20)
    if legacy:
        assert cr.obs.shape == (100, 3) and cr.reward.shape == (100,) and cm.shape == (100,)
        # the policy batch itself, which objective_gradient splits 50/50
        np.testing.assert_array_equal(mr.done, pr.done)
        np.testing.assert_array_equal(mm, pm)
    else:
        assert cr.obs.shape == (100, 20, 3) and cm.shape == (100, 20)
        assert mr.obs.shape == (200, 20, 3) and mm.shape == (200, 20)


def test_critic_trains_on_the_masked_window_batch(stepper):
    """The critic loss the step reports is the sum over the twin critics of the mean
    squared TD error over the valid steps of the window batch (numpy, from the batch the
    step drew; windows of 12 steps over episodes of 9, so 3 steps of each are masked)."""
    parts, s, step = stepper(1.0)
    params, agents = _agent(s)
    key = jax.random.PRNGKey(4)
    out = step(params, agents, key, jnp.bool_(False), jnp.float32(0.0))
    rows, mask = jax.jit(functools.partial(mg.sample_batches, parts.config))(agents, key).critic
    assert mask.shape == (TINY.batch_size, 12) and float(mask.sum()) == TINY.batch_size * 9
    td3_ = parts.groups[0].td3
    y = np.asarray(jax.jit(td3_.td_target)(agents.target_params, rows, jax.random.split(key, 3)[1]))
    q = np.asarray(jax.jit(td3_.q_values)(params["critic"], rows.obs, rows.action))
    m = np.asarray(mask)
    ref = sum(float(np.sum((q[i] - y) ** 2 * m) / m.sum()) for i in range(q.shape[0]))
    np.testing.assert_allclose(float(out[4]["critic_loss"]), ref, rtol=1e-5)


# ---- (e) the time input ------------------------------------------------------------------------


@pytest.mark.parametrize("time_input", mg.TIME_INPUTS)
def test_time_input(env, time_input):
    """``"window"``: ``j / W`` at window position ``j`` whatever the stored time (the
    authors' code); ``"episode"``: the stored ``t / T``. The objective reads it."""
    c = dataclasses.replace(TINY, window=20, batch_size=2, time_input=time_input)
    parts = mg.make_parts(c, env)
    s = jax.jit(functools.partial(mg.init, parts))(jax.random.PRNGKey(0))
    B, W = 3, 20
    k = jax.random.split(jax.random.PRNGKey(2), 5)
    stored = jax.random.uniform(k[0], (B, W))
    win = replay.Row(
        obs=jax.random.normal(k[1], (B, W, 3)),
        action=jax.random.uniform(k[2], (B, W, 1), minval=-1, maxval=1),
        reward=jax.random.normal(k[3], (B, W)),
        done=jnp.zeros((B, W)),
        truncation=jnp.zeros((B, W)),
        next_obs=jax.random.normal(k[4], (B, W, 3)),
        time=stored,
    )
    got = np.asarray(mg.objective_time(c, win))
    if time_input == "window":
        np.testing.assert_allclose(got, np.tile(np.arange(20) / 20.0, (B, 1)), rtol=1e-7)
        assert got[0, 1] == pytest.approx(0.05) and got[0, 19] == pytest.approx(0.95)
    else:
        np.testing.assert_array_equal(got, stored)
    actor = jax.tree.map(lambda x: x[0], s.params["agents"][0]["actor"])
    alpha = jax.tree.map(lambda x: x + 0.1, s.params["objective"])  # (biases 0 at init)
    mask, vals = jnp.ones((B, W)), (jnp.zeros((B, W)), jnp.ones((B, W)))
    group = parts.groups[0]
    f = jax.jit(lambda w: mg.per_step_objective(parts, group, alpha, actor, w, mask, vals))
    changed = np.max(np.abs(np.asarray(f(win)) - np.asarray(f(win._replace(time=stored[::-1])))))
    assert (changed == 0.0) if time_input == "window" else (changed > 1e-6)
