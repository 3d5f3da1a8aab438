"""The ``metareward`` console script, end to end, in subprocesses: train, eval, plot,
interrupt + resume (bitwise), damaged checkpoints, bad input, wandb offline without a
network."""

import json
import os
import shutil
import signal
import subprocess
import time

import jax
import pytest
from cli_runs import SCRIPT, TINY, metrics_without_timing, ok, run, tree_bytes

from metareward.runtime.checkpoint import MANIFEST
from metareward.runtime.rundir import METRIC_FIELDS

PNG = b"\x89PNG\r\n\x1a\n"


# Tests using this fixture share one xdist worker (``--dist loadgroup``), so it runs once.
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished tiny run (chunks of 3 updates, a checkpoint after each)."""
    cwd = tmp_path_factory.mktemp("train")
    p = ok(run("train", "ppo", "--env", "cartpole", *TINY, "--total-steps", 2 * 16 * 12,
               "--chunk-updates", 3, "--checkpoint-every", 1, "--eval-episodes", 2, cwd=cwd))
    (run_dir,) = (cwd / "runs").iterdir()
    return run_dir, p


@pytest.mark.xdist_group("trained_run")
def test_train_writes_a_complete_run_directory(trained):
    run_dir, p = trained
    assert run_dir.name.startswith("ppo-cartpole-")
    assert f"run directory: runs/{run_dir.name}" in p.stdout
    assert f"plot: runs/{run_dir.name}/curve.png" in p.stdout

    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["algo"] == "ppo" and cfg["env"] == "cartpole"
    assert cfg["config"]["num_envs"] == 2 and cfg["config"]["hidden"] == [16, 16]
    assert cfg["config"]["learning_rate"] == 5e-4  # the cartpole preset underneath
    assert cfg["run"]["seeds"] == 2 and cfg["run"]["seed"] == 0
    assert cfg["run"]["num_updates"] == 12 and cfg["run"]["chunk_updates"] == 3
    assert cfg["versions"]["jax"] == jax.__version__
    assert "git" in cfg and "created" in cfg

    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(recs) == 4 * 2  # 4 chunks x 2 seeds
    for r in recs:
        assert set(METRIC_FIELDS) <= set(r), set(METRIC_FIELDS) - set(r)
        assert {"loss", "policy_loss", "value_loss", "entropy", "approx_kl"} <= set(r)
        assert r["env_steps"] == r["update"] * 32
        assert r["steps_per_sec"] > 0 and r["wall_time"] > 0
    assert [r["update"] for r in recs[::2]] == [3, 6, 9, 12]

    steps = sorted(int(d.name) for d in (run_dir / "checkpoints").iterdir() if d.name.isdigit())
    assert steps == [6, 9, 12]  # the newest 3 are kept
    assert (run_dir / "checkpoints" / "12" / MANIFEST).is_file()
    png = (run_dir / "curve.png").read_bytes()
    assert png[:8] == PNG and len(png) > 5000
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"


@pytest.mark.xdist_group("trained_run")
def test_eval_and_plot(trained, tmp_path):
    run_dir, _ = trained
    p = ok(run("eval", run_dir, "--episodes", 3, "--deterministic", cwd=tmp_path))
    assert "checkpoint of update 12" in p.stdout
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["episodes_per_seed"] == 3 and ev["deterministic"] and len(ev["per_seed"]) == 2
    # Several runs on one figure (the same run twice is enough to draw two curves).
    other = tmp_path / "copy"
    shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns("checkpoints"))
    out = tmp_path / "both.png"
    ok(run("plot", run_dir, other, "-o", out, cwd=tmp_path))
    assert out.read_bytes()[:8] == PNG


@pytest.mark.xdist_group("trained_run")
def test_damaged_checkpoint_falls_back_to_the_previous_one(trained, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained[0], run_dir)
    newest = run_dir / "checkpoints" / "12"
    victim = max((f for f in newest.rglob("*") if f.is_file() and f.name != MANIFEST),
                 key=lambda f: f.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:-7])  # truncated
    p = ok(run("eval", run_dir, "--episodes", 2, cwd=tmp_path))
    assert "warning: checkpoint" in p.stderr and "is damaged" in p.stderr
    assert "checkpoint of update 9" in p.stdout
    # eval is a reader: it skips the damaged checkpoint and leaves it where it is (a
    # writer, `resume`, quarantines it: tests/test_runtime.py).
    assert newest.is_dir() and not (run_dir / "corrupt_checkpoints").exists()


def test_sigint_then_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    args = ["train", "ppo", "--env", "cartpole", *TINY, "--total-steps", 2 * 16 * 150,
            "--chunk-updates", 1, "--checkpoint-every", 1000, "--eval-episodes", 0]
    full = ok(run(*args, "--out", "full", cwd=tmp_path))
    assert "done: 150 updates" in full.stdout

    proc = subprocess.Popen(
        [str(SCRIPT), *map(str, args), "--out", "cut", "--no-progress"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.is_file() and metrics.stat().st_size > 0):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGINT, (out, err)
    assert "Traceback" not in err
    assert "SIGINT: stopped after update" in err and "metareward resume cut" in err
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    stopped_at = summary["update"]
    assert 0 < stopped_at < 150, "the run ended before SIGINT arrived; make it longer"
    # checkpoint-every 1000 chunks: the only checkpoint is the one SIGINT wrote.
    assert tree_bytes(tmp_path / "cut")[0] == stopped_at

    resumed = ok(run("resume", "cut", cwd=tmp_path))
    assert f"resuming from the checkpoint of update {stopped_at}" in resumed.stdout
    assert "done: 150 updates" in resumed.stdout

    u_full, full_state = tree_bytes(tmp_path / "full")
    u_cut, cut_state = tree_bytes(tmp_path / "cut")
    assert u_full == u_cut == 150
    assert len(full_state) == len(cut_state)
    assert all(a == b for a, b in zip(full_state, cut_state, strict=True)), "state differs"
    assert metrics_without_timing(tmp_path / "full") == metrics_without_timing(
        tmp_path / "cut"
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["train", "ppx", "--env", "cartpole"],
            "unknown algorithm 'ppx'; valid: ['a2c', 'awr', 'cln', 'ddpg', 'epg', 'lirpg', "
            "'lirpg-a2c', 'metagenrl', 'ppo', 'reinforce', 'tare', 'tare-awr', 'td3']",
        ),
        (["train", "epg", "--env", "pendulum"], "epg is a meta-learner: use `metareward "
                                                "meta-train epg --env pendulum`"),
        (["meta-train", "ppo", "--env", "pendulum"], "ppo is not a meta-learner"),
        (["meta-train", "epg", "--env", "cartpole"], "has no task distribution"),
        (["train", "ppo", "--env", "cartpol"], "unknown environment 'cartpol'; valid names"),
        (["train", "ppo", "--env", "cartpole", "--set", "lr=1e-3"],
         "unknown config key(s) ['lr']"),
        (["train", "ppo", "--env", "cartpole", "--total-steps", "-100"],
         "total_steps=-100 is invalid; allowed: an int > 0"),
        (["train", "ppo", "--env", "cartpole", "--config", "bad.json"],
         "config file 'bad.json' is malformed"),
        (["train", "ppo", "--env", "cartpole", "--seeds", "0"], "seeds must be an int > 0"),
        (["resume", "nowhere"], "nowhere is not a run directory"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, args, message):
    (tmp_path / "bad.json").write_text('{"learning_rate": 1e-3,')
    p = run(*args, "--out", "myrun", cwd=tmp_path) if args[0] == "train" else run(
        *args, cwd=tmp_path
    )
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert message in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.json"]  # no run directory, nothing


def _offline_prefix():
    """Run without a network: a new network namespace if we may make one."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn"]
    return []


def test_wandb_offline_without_network(tmp_path):
    prefix = _offline_prefix()
    # Without a namespace, point every network route at a closed port instead.
    dead = "http://127.0.0.1:9"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_BASE_URL=dead, HTTP_PROXY=dead, HTTPS_PROXY=dead, NO_PROXY="")
    args = ["train", "ppo", "--env", "cartpole", *TINY, "--total-steps", 2 * 16 * 6,
            "--eval-episodes", 0, "--wandb", "offline", "--out", "wb"]
    ok(subprocess.run([*prefix, str(SCRIPT), *map(str, args)], cwd=tmp_path, env=env,
                      capture_output=True, text=True, timeout=300))
    (offline,) = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    assert list(offline.glob("run-*.wandb")), sorted(offline.rglob("*"))
    assert (tmp_path / "wb" / "metrics.jsonl").is_file()  # JSONL is always written
