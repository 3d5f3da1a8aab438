"""The host side of runs, in-process: config resolution, chunk records, non-finite
detection, checkpoints (integrity, fallback), chunked execution against one program."""

import io
import json
import math
import os
import signal

import jax
import numpy as np
import pytest

from metareward.algos import ConfigError, a2c, ppo
from metareward.runtime import configs, driver
from metareward.runtime.checkpoint import MANIFEST, Checkpointer, CheckpointWarning
from metareward.runtime.rundir import METRIC_FIELDS, RunDir

TINY = {
    "num_envs": "2",
    "num_steps": "16",
    "num_epochs": "1",
    "num_minibatches": "1",
    "hidden": "16,16",
}

# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "key,text,expected",
    [
        ("total_steps", "1e6", 1_000_000),
        ("total_steps", "250_000", 250_000),
        ("learning_rate", "3e-4", 3e-4),
        ("learning_rate", "1", 1.0),
        ("anneal_lr", "false", False),
        ("anneal_lr", "True", True),
        ("hidden", "128,128", (128, 128)),
        ("hidden", "(32, 32, 32)", (32, 32, 32)),
        ("hidden", "[8]", (8,)),
        ("hidden", "8", (8,)),
        ("vf_clip_eps", "none", None),
        ("vf_clip_eps", "0.2", 0.2),
        ("activation", "relu", "relu"),
    ],
)
def test_set_values_are_coerced_to_the_field_type(key, text, expected):
    cfg = configs.apply_overrides(ppo.Config(), {key: text}, "--set")
    assert getattr(cfg, key) == expected
    assert type(getattr(cfg, key)) is type(expected)


@pytest.mark.parametrize(
    "key,text,match",
    [
        ("total_steps", "1.5", r"'total_steps' expects an int"),
        ("total_steps", "-5", r"total_steps=-5 is invalid; allowed: an int > 0"),
        ("anneal_lr", "maybe", r"'anneal_lr' expects a bool"),
        ("learning_rate", "fast", r"'learning_rate' expects a number"),
        ("gamma", "1.5", r"gamma=1.5 is invalid; allowed: a number in \[0.0, 1.0\]"),
        ("hidden", "64,x", r"'hidden' expects a list of ints"),
        ("activation", "sigmoid", r"activation='sigmoid' is invalid; allowed: one of"),
        ("lr", "1e-3", r"unknown config key\(s\) \['lr'\].*valid keys.*learning_rate"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(key, text, match):
    with pytest.raises(ConfigError, match=match):
        configs.apply_overrides(ppo.Config(), {key: text}, "--set")


def test_precedence_defaults_file_set(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('learning_rate = 1e-3\nnum_envs = 8\nhidden = [32, 32]\nactivation = "relu"\n')
    cfg = configs.resolve_config(ppo.preset("cartpole"), f, {"num_envs": "2"})
    assert cfg.learning_rate == 1e-3  # file over preset
    assert cfg.num_envs == 2  # --set over file
    assert cfg.hidden == (32, 32) and cfg.activation == "relu"
    assert cfg.num_steps == ppo.preset("cartpole").num_steps  # preset kept


@pytest.mark.parametrize(
    "name,text",
    [
        ("c.json", '{"gamma": 0.9, "hidden": [8, 8]}'),
        ("c.yaml", "gamma: 0.9\nhidden: [8, 8]\n"),
        ("c.toml", "gamma = 0.9\nhidden = [8, 8]\n"),
    ],
)
def test_config_file_formats(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    cfg = configs.resolve_config(a2c.Config(), tmp_path / name)
    assert cfg.gamma == 0.9 and cfg.hidden == (8, 8)


@pytest.mark.parametrize(
    "name,text,match",
    [
        ("c.json", '{"gamma": 0.9,', "is malformed"),
        ("c.toml", "gamma = = 1", "is malformed"),
        ("c.yaml", "gamma: [1, 2", "is malformed"),
        ("c.json", "[1, 2]", "must hold a mapping"),
        ("c.ini", "gamma=1", "unknown format '.ini'"),
        ("c.json", '{"gamma": "high"}', "'gamma' expects a number"),
        ("c.json", '{"gama": 0.9}', r"unknown config key\(s\) \['gama'\] in config file"),
    ],
)
def test_bad_config_files(tmp_path, name, text, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=match):
        configs.resolve_config(ppo.Config(), tmp_path / name)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        configs.resolve_config(ppo.Config(), tmp_path / "nope.json")


def test_run_options_are_validated():
    for kw, match in [
        ({"seeds": 0}, "seeds must be an int > 0"),
        ({"chunk_updates": -1}, "chunk_updates must be"),
        ({"checkpoint_every": 0}, "checkpoint_every must be"),
        ({"wandb": "cloud"}, "wandb must be one of"),
        ({"eval_episodes": -1}, "eval_episodes must be"),
        ({"seed": -3}, "seed must be"),
    ]:
        with pytest.raises(ConfigError, match=match):
            driver.RunOptions(**kw)


def test_prepare_rejects_bad_input_before_compiling():
    valid = (r"\['a2c', 'awr', 'cln', 'ddpg', 'epg', 'lirpg', 'lirpg-a2c', "
             r"'metagenrl', 'ppo', 'reinforce', 'tare', 'tare-awr', 'td3'\]")
    with pytest.raises(ValueError, match=r"unknown algorithm 'ppx'; valid: " + valid):
        driver.prepare("ppx", "cartpole")
    with pytest.raises(ValueError, match="unknown environment 'cartpol'"):
        driver.prepare("ppo", "cartpol")
    with pytest.raises(ValueError, match="divisible by num_minibatches"):
        driver.prepare("ppo", "cartpole", overrides={**TINY, "num_minibatches": "3"})


# ------------------------------------------------------------------- chunk records


def _episode_metrics(rng, n_updates, seeds):
    """Per-update episode metrics made from explicit episode returns, and the returns."""
    counts = rng.integers(0, 4, size=(n_updates, seeds))
    counts[0, 0] = 0
    episodes = [[rng.normal(10, 5, size=counts[u, s]) for s in range(seeds)]
                for u in range(n_updates)]

    def stat(f):
        return np.array(
            [[f(e) if len(e) else np.nan for e in row] for row in episodes], np.float32
        )

    metrics = {
        "episode_return": stat(np.mean),
        "episode_return_std": stat(np.std),
        "episode_length": stat(lambda e: 100.0),
        "episodes": counts.astype(np.int32),
        "env_steps": (np.arange(1, n_updates + 1)[:, None] * 64 * np.ones((1, seeds))).astype(
            np.int32
        ),
        "loss": rng.normal(size=(n_updates, seeds)).astype(np.float32),
        "nonfinite": np.zeros((n_updates, seeds), np.int32),
    }
    return metrics, episodes


def test_chunk_records_pool_episode_statistics():
    rng = np.random.default_rng(0)
    metrics, episodes = _episode_metrics(rng, 6, 3)
    # Iterations past n (skipped in the jitted chunk) hold garbage that must be ignored.
    metrics = {k: np.concatenate([v, np.full_like(v, 7)]) for k, v in metrics.items()}
    recs = driver._chunk_records(metrics, 6, chunk=2, update=18)
    assert [r["seed"] for r in recs] == [0, 1, 2]
    for s, r in enumerate(recs):
        assert set(METRIC_FIELDS) - {"wall_time", "steps_per_sec"} <= set(r)
        allret = np.concatenate([episodes[u][s] for u in range(6)])
        assert r["episodes"] == len(allret)
        assert r["return_mean"] == pytest.approx(allret.mean(), rel=1e-5)
        assert r["return_std"] == pytest.approx(allret.std(), rel=1e-4)
        assert r["loss"] == pytest.approx(metrics["loss"][:6, s].mean(), rel=1e-6)
        assert r["env_steps"] == 6 * 64 and r["update"] == 18 and r["chunk"] == 2


def test_first_nonfinite_ignores_returns_without_episodes():
    rng = np.random.default_rng(1)
    metrics, _ = _episode_metrics(rng, 5, 2)
    ok = np.ones(2, bool)
    assert np.isnan(metrics["episode_return"][0, 0])  # no episode: NaN by design
    assert driver._first_nonfinite(metrics, 5, ok) is None
    metrics["loss"][3, 1] = np.inf
    metrics["loss"][4, 0] = np.nan
    assert driver._first_nonfinite(metrics, 5, ok)[:3] == ("loss", 3, 1)
    assert driver._first_nonfinite(metrics, 3, ok) is None  # past n is not looked at
    metrics["loss"][:] = 0.0
    assert driver._first_nonfinite(metrics, 5, np.array([True, False]))[:3] == (
        "parameters", 4, 1,
    )
    metrics["nonfinite"][2, 0] = 1
    assert driver._first_nonfinite(metrics, 5, ok)[0].startswith("gradient")


def test_declared_episode_metrics_are_weighted_and_exempt_without_episodes():
    """A learner's own per-episode metric (LIRPG's intrinsic_return): NaN where no episode
    ended is no error, and the record averages it weighted by each update's episodes."""
    rng = np.random.default_rng(2)
    metrics, _ = _episode_metrics(rng, 5, 2)
    eps = metrics["episodes"].astype(np.float64)
    metrics["intrinsic_return"] = np.where(eps > 0, rng.normal(size=eps.shape), np.nan)
    ok = np.ones(2, bool)
    assert np.isnan(metrics["intrinsic_return"]).any() and (eps > 0).any()
    assert driver._first_nonfinite(metrics, 5, ok, ("intrinsic_return",)) is None
    assert driver._first_nonfinite(metrics, 5, ok)[0] == "intrinsic_return"  # undeclared
    recs = driver._chunk_records(metrics, 5, chunk=0, update=5, episodic=("intrinsic_return",))
    for s, r in enumerate(recs):
        has = eps[:, s] > 0
        want = (eps[has, s] * metrics["intrinsic_return"][has, s]).sum() / eps[:, s].sum()
        assert r["intrinsic_return"] == pytest.approx(want, rel=1e-6)
    # Where an episode did end, a NaN is still an error.
    u, s = np.argwhere(eps > 0)[0]
    metrics["intrinsic_return"][u, s] = np.nan
    assert driver._first_nonfinite(metrics, 5, ok, ("intrinsic_return",))[:3] == (
        "intrinsic_return", u, s)



def test_episode_metrics_with_their_own_counts():
    """``episode_metric_names`` as a mapping (MetaGenRL's per-env returns): each metric is
    exempt where *its* count is 0 and weighted by its own count, not by ``episodes``."""
    rng = np.random.default_rng(3)
    metrics, _ = _episode_metrics(rng, 6, 2)
    other = rng.integers(0, 3, size=(6, 2)).astype(np.int32)
    other[0, 0], other[1, 0] = 0, 2
    metrics["episodes_b"] = other
    metrics["return_b"] = np.where(other > 0, rng.normal(size=other.shape), np.nan)
    ok = np.ones(2, bool)
    declared = {"return_b": "episodes_b"}
    assert driver._first_nonfinite(metrics, 6, ok, declared) is None
    recs = driver._chunk_records(metrics, 6, chunk=0, update=6, episodic=declared)
    for s, r in enumerate(recs):
        has = other[:, s] > 0
        want = (other[has, s] * metrics["return_b"][has, s]).sum() / other[:, s].sum()
        assert r["return_b"] == pytest.approx(want, rel=1e-6)
    metrics["return_b"][1, 0] = np.nan  # its own count is 2 there: an error
    assert driver._first_nonfinite(metrics, 6, ok, declared)[:3] == ("return_b", 1, 0)


# ------------------------------------------------------------------------ checkpoints


def _tree(i):
    return {
        "w": np.full((3, 4), i, np.float32),
        "key": np.array([[i, 7]], np.uint32),
        "flag": np.array([True, False]),
    }


def test_checkpoint_roundtrip_and_truncated_file_falls_back(tmp_path):
    ck = Checkpointer(tmp_path / "checkpoints", max_to_keep=3)
    for i in (1, 2, 3):
        ck.save(i * 10, _tree(i), {"update": i * 10})
    ck.close()
    assert ck.steps() == [10, 20, 30]
    template = jax.eval_shape(lambda: _tree(0))
    step, state, meta = Checkpointer(tmp_path / "checkpoints").restore_latest(template)
    assert step == 30 and meta == {"update": 30}
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), state, _tree(3))

    # Truncate the biggest file of the newest checkpoint: detected, previous one used.
    newest = tmp_path / "checkpoints" / "30"
    victim = max((p for p in newest.rglob("*") if p.is_file() and p.name != MANIFEST),
                 key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    ck = Checkpointer(tmp_path / "checkpoints")
    with pytest.warns(CheckpointWarning, match=r"30 is damaged \(file .* bytes, expected"):
        step, state, _ = ck.restore_latest(template)
    assert step == 20
    np.testing.assert_array_equal(np.asarray(state["w"]), _tree(2)["w"])
    assert (tmp_path / "corrupt_checkpoints" / "30").is_dir()
    assert ck.steps() == [10, 20]
    # Saving continues past the quarantined step.
    ck.save(30, _tree(5), {"update": 30})
    assert ck.restore_latest(template)[0] == 30
    ck.close()


def test_sigterm_and_sigint_are_caught():
    # What was installed before (the default handler, or SIG_IGN when pytest itself was
    # started in the background by a non-interactive shell).
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in (signal.SIGTERM, signal.SIGINT):
        with driver._Signals(io.StringIO()) as s:
            os.kill(os.getpid(), sig)
        assert s.received == sig
    # Handlers are restored afterwards.
    for sig, handler in before.items():
        assert signal.getsignal(sig) is handler


# --------------------------------------------------------------------- chunked runs


@pytest.fixture(scope="module")
def tiny_plan():
    # 2 seeds x 7 updates, chunks of 3: two full chunks and one of a single update.
    opts = driver.RunOptions(seeds=2, chunk_updates=3, checkpoint_every=1, eval_episodes=2)
    return driver.prepare(
        "ppo", "cartpole", overrides={**TINY, "total_steps": str(2 * 16 * 7)}, options=opts
    )


def test_chunked_run_matches_one_program(tiny_plan, tmp_path):
    """Chunks (with a short last one) do the same updates as ``jit(vmap(train))``."""
    res = driver.start(tiny_plan, tmp_path / "run", stream=io.StringIO(), progress=False)
    assert res.update == tiny_plan.num_updates == 7
    state, metrics = jax.jit(jax.vmap(tiny_plan.learner.train))(tiny_plan.keys())
    np.testing.assert_allclose(
        jax.flatten_util.ravel_pytree(res.state.params)[0],
        jax.flatten_util.ravel_pytree(state.params)[0],
        rtol=1e-5, atol=1e-6,
    )
    np.testing.assert_array_equal(res.state.key, state.key)
    rd = RunDir(tmp_path / "run")
    recs = rd.read_metrics()
    assert [(r["chunk"], r["update"], r["seed"]) for r in recs] == [
        (c, u, s) for c, u in [(0, 3), (1, 6), (2, 7)] for s in (0, 1)
    ]
    for r in recs:
        u = r["update"]
        assert r["env_steps"] == u * 32 == int(metrics["env_steps"][r["seed"], u - 1])
        assert r["loss"] == pytest.approx(
            float(np.mean(metrics["loss"][r["seed"], u - 3 if u < 7 else 6: u])), rel=1e-4
        )
    assert Checkpointer(rd.checkpoints).steps() == [3, 6, 7]
    ev = json.loads(rd.eval_json.read_text())
    assert len(ev["per_seed"]) == 2 and ev["episodes_per_seed"] == 2
    assert json.loads(rd.summary_json.read_text())["status"] == "finished"
    assert rd.curve_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # config.json rebuilds the same plan (what `resume` does).
    again = driver.plan_from_run(tmp_path / "run")
    assert again.config == tiny_plan.config and again.chunk_updates == 3


def test_nonfinite_stops_the_run_and_keeps_last_good_checkpoint(tmp_path):
    # Rewards x 1e38 overflow to -inf on pendulum, so the first update's loss is NaN.
    opts = driver.RunOptions(seeds=2, chunk_updates=2, checkpoint_every=1, eval_episodes=0)
    over = {**TINY, "total_steps": str(2 * 16 * 6), "reward_scale": "1e38"}
    plan = driver.prepare("ppo", "pendulum", overrides=over, options=opts)
    out = tmp_path / "run"
    msg = r"non-finite loss \(nan\) at update 1 \(env step 32\) of seed 0"
    with pytest.raises(driver.NonFiniteError, match=msg):
        driver.start(plan, out, stream=io.StringIO(), progress=False)
    assert json.loads(RunDir(out).summary_json.read_text())["status"] == "nonfinite"
    assert RunDir(out).read_metrics() == []  # nothing of the bad chunk was logged
    # The state before the bad chunk (here the initial one) is checkpointed and finite.
    _, update, state, _ = driver.load(out)
    assert update == 0
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_progress_prints_lines_when_not_a_tty():
    from metareward.runtime.progress import Progress

    buf = io.StringIO()
    p = Progress(stream=buf)
    for done in range(0, 101, 5):
        p.update(done, 100, done * 10, 1000.0, float(done))
    lines = buf.getvalue().splitlines()
    assert 9 <= len(lines) <= 11  # about one per 10%
    assert "100%" in lines[-1] and "1,000 env steps" in lines[-1] and "return 100.0" in lines[-1]
    assert not math.isnan(float(lines[-1].split("return ")[1].split()[0]))


@pytest.mark.slow
def test_mjx_run_checkpoints_and_resumes(tmp_path):
    """A run on a brax MJX env (the default backend of the MuJoCo envs) holds a zero-size
    leaf in its state (hopper's ``pipeline_state.act``, no activations), which orbax
    will not write; the run still checkpoints, and its checkpoint restores with the
    leaf's shape."""
    plan = driver.prepare(
        "ppo", "hopper",
        overrides={"num_envs": 1, "num_steps": 8, "num_minibatches": 1, "num_epochs": 1,
                   "total_steps": 16, "hidden": "(8,)"},
        options=driver.RunOptions(seeds=2, chunk_updates=1, checkpoint_every=1,
                                  eval_episodes=0))
    empty = [x.shape for x in jax.tree.leaves(
        jax.eval_shape(jax.vmap(plan.learner.init), plan.keys())) if math.prod(x.shape) == 0]
    assert empty, "the MJX hopper state no longer has a zero-size leaf: test nothing"
    result = driver.start(plan, out=tmp_path / "run", progress=False, stream=io.StringIO())
    assert result.status == "finished"
    _, update, state, _ = driver.load(tmp_path / "run")
    assert update == 2
    assert sorted(x.shape for x in jax.tree.leaves(state) if x.size == 0) == sorted(empty)
