"""The ``metareward`` console script, end to end, in subprocesses: train, eval, plot,
damaged checkpoints, bad input, wandb offline without a network. (Interrupt + resume,
bitwise, at chosen moments: tests/test_faults.py.)"""

import json
import os
import shutil
import subprocess

import jax
import pytest
from cli_runs import SCRIPT, TINY, ok, run

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
