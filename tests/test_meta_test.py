"""``metareward meta-test``: a frozen learned loss trains fresh agents on held-out tasks.

A tiny EPG run is meta-trained in-process; the command (a subprocess) meta-tests it, and
its figures are checked against the trainer's own ``meta_test`` called directly."""

import io
import json
import subprocess

import jax
import numpy as np
import pytest
from test_cli import PNG, SCRIPT

from metareward import envs
from metareward.algos import epg
from metareward.runtime import driver, meta_test

TINY = {"num_epochs": 2, "pop_size": 4, "steps_per_update": 16, "inner_updates": 4,
        "buffer_size": 64, "eval_episodes": 2, "anneal_epochs": 1}


def cli(*args, cwd):
    return subprocess.run([str(SCRIPT), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="session")  # once, even if xdist interleaves other modules
def epg_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("epg")
    plan = driver.prepare("epg", "pendulum", overrides=TINY,
                          options=driver.RunOptions(seeds=2, eval_episodes=1))
    driver.start(plan, root / "run", stream=io.StringIO(), progress=False)
    return root / "run"


@pytest.mark.xdist_group("epg_meta_test")
def test_meta_test_command_matches_the_trainer(epg_run, tmp_path):
    p = cli("meta-test", "epg", "--loss", epg_run, "--tasks", 2, "--agents", 2, "--seed", 3,
            "--eval-episodes", 3, "--set", "inner_updates=6", "--compare-init",
            "--out", "mt", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "| meta-learned |" in p.stdout and "| initial |" in p.stdout
    out = tmp_path / "mt"
    rec = json.loads((out / "meta_test.json").read_text())
    assert (out / "meta_test.png").read_bytes()[:8] == PNG
    assert (out / "meta_test.md").read_text().startswith("| loss |")
    assert [r["loss"] for r in rec["summary"]] == ["meta-learned", "initial"]
    assert rec["config"]["inner_updates"] == 6 and rec["config"]["pop_size"] == 4
    final = np.array(rec["final_return"]["meta-learned"])
    assert final.shape == (2, 2, 2)  # meta-seeds x tasks x agents
    assert len(rec["curves_per_update"]["initial"][0][0][0]) == 6

    # Independent reference: the trainer's meta_test on the checkpoint's loss, one run at
    # a time (no vmap), with the tasks and keys the command documents.
    learned, plan = meta_test.load_learned(epg_run)
    env = envs.make("pendulum", randomize=True)
    tr = epg.make_train(epg.Config(**{**TINY, "inner_updates": 6}), env)
    k_task, k_agent = jax.random.split(jax.random.PRNGKey(3))
    tasks = jax.vmap(env.tasks.sample)(jax.random.split(k_task, 2))
    agent = jax.random.split(k_agent, 2)
    task1 = jax.tree.map(lambda x: x[1], tasks)
    for s in range(2):
        phi = jax.tree.map(lambda x, s=s: x[s], learned)
        ref = jax.jit(tr.meta_test, static_argnums=3)(phi, task1, agent[0], 3)
        np.testing.assert_allclose(final[s, 1, 0], float(ref["final_return"]), rtol=1e-3)
        phi0 = tr.init(plan.keys()[s]).params["loss"]
        ref0 = jax.jit(tr.meta_test, static_argnums=3)(phi0, task1, agent[0], 3)
        np.testing.assert_allclose(np.array(rec["final_return"]["initial"])[s, 1, 0],
                                   float(ref0["final_return"]), rtol=1e-3)
    # the meta-learned loss is not the initial one
    flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])
    assert not np.allclose(flat(jax.tree.map(lambda x: x[0], learned)),
                           flat(tr.init(plan.keys()[0]).params["loss"]))


@pytest.mark.xdist_group("epg_meta_test")
@pytest.mark.parametrize("args,message", [
    (["meta-test", "ppo", "--loss", "RUN"], "made by `metareward meta-train epg`, not ppo"),
    (["meta-test", "epg", "--loss", "RUN", "--set", "memory_size=16"],
     "do not fit 'pendulum' with this config"),
    (["meta-test", "epg", "--loss", "RUN", "--env", "pendulum", "--tasks", "0"],
     "tasks must be an int > 0"),
    (["meta-test", "epg", "--loss", "nowhere"], "nowhere is not a run directory"),
])
def test_meta_test_bad_input_exits_2(epg_run, tmp_path, args, message):
    p = cli(*[str(epg_run) if a == "RUN" else a for a in args], cwd=tmp_path)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert message in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
