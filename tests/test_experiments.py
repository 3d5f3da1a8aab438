"""Issue 11: every experiment entry point in ``experiments/`` runs end to end at
``--scale smoke`` and writes its JSON, PNG figure(s) and markdown table.

Each entry point runs as users run it, ``python experiments/X.py --scale smoke``, in a
subprocess. Compiling every learner dominates its time, so the subprocess asks XLA:CPU
for its cheapest compilation (``tests/fast_compile.py``: about 2x less compile time; the
programs are the same, only less optimised). Even so an entry point takes 15-90 s of CPU
on a 2-core machine, so these tests are ``slow``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from fast_compile import fast_compile_env

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
ENTRY_POINTS = sorted(p.stem for p in EXPERIMENTS.glob("[a-z]*.py")
                      if p.stem not in ("common", "claims") and not p.stem.endswith("_common"))


def load(name: str):
    if str(EXPERIMENTS) not in sys.path:
        sys.path.insert(0, str(EXPERIMENTS))
    return importlib.import_module(name)


def finite(x) -> bool:
    return x is not None and math.isfinite(x)


def test_every_entry_point_has_the_three_scales():
    assert ENTRY_POINTS, EXPERIMENTS
    for name in ENTRY_POINTS:
        mod = load(name)
        assert {"smoke", "cpu", "paper"} <= set(mod.SCALES), name
        assert set(mod.SCALES) - {"smoke", "cpu", "paper"} <= {"mujoco-cpu"}, name
        assert callable(mod.main), name


def test_bad_input_fails_with_the_allowed_values(capsys):
    mod = load("tare_curves")
    with pytest.raises(SystemExit, match=r"unknown env.*'nope'.*cartpole"):
        mod.main(["--scale", "smoke", "--envs", "nope"])
    with pytest.raises(SystemExit, match="--seeds must be >= 1"):
        mod.main(["--scale", "smoke", "--seeds", "0"])
    with pytest.raises(SystemExit):  # argparse: invalid choice
        mod.main(["--scale", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err


@pytest.mark.parametrize("name", [n for n in ENTRY_POINTS if n.startswith("epg_")])
def test_epg_bad_input_fails_before_compiling(name, tmp_path):
    """The EPG scripts need a randomisable env, one of them, and no --steps; all checked
    (with the allowed values) before anything is built or compiled."""
    mod = load(name)
    smoke = ["--scale", "smoke", "--out", str(tmp_path)]
    with pytest.raises(SystemExit, match=r"unknown env.*'nope'"):
        mod.main([*smoke, "--envs", "nope"])
    with pytest.raises(SystemExit, match=r"'cartpole' has no task distribution.*pendulum"):
        mod.main([*smoke, "--envs", "cartpole"])
    with pytest.raises(SystemExit, match="--seeds must be >= 1"):
        mod.main([*smoke, "--seeds", "0"])
    with pytest.raises(SystemExit, match="--tasks must be >= 1"):
        mod.main([*smoke, "--tasks", "0"])
    with pytest.raises(SystemExit, match="--steps does not apply"):
        mod.main([*smoke, "--steps", "100"])
    assert not any(tmp_path.iterdir())  # nothing written


def check_epg_report(name: str, mod, out: dict) -> None:
    """An EPG script's JSON: the run counts of the smoke scale, finite meta-training
    curves, and per script its numbers for every (meta-seed, task, agent)."""
    import numpy as np

    scale = mod.SCALES["smoke"]
    s = out["settings"]
    S, T, G = s["seeds"], s["tasks"], s["agents"]
    assert (S, T, G) == (scale.seeds, scale.extra["tasks"], scale.extra["agents"]), s
    cfg = s["config"]
    K, M, N = cfg["inner_updates"], cfg["steps_per_update"], cfg["buffer_size"]
    mt = out["meta_train"]
    fm = np.array(mt["fitness_mean"], float)
    assert fm.shape == (S, cfg["num_epochs"]) and np.isfinite(fm).all(), fm
    assert len(next(iter(out["held_out_tasks"].values()))) == T
    methods = out["methods"]
    assert set(methods) == set(mod.METHODS), set(methods)
    if name == "epg_vs_ppo":
        for m, r in methods.items():
            f = np.array(r["final_return"], float)
            er = np.array(r["episode_return"], float)  # None (no episode ended) -> nan
            runs = (S, T, G) if m in ("evolved", "initial", "zero") else (T, G)
            assert f.shape == runs and np.isfinite(f).all(), (m, f)
            assert er.shape == (*runs, len(r["env_steps"])), (m, er.shape)
            assert np.isfinite(er).any(), m  # a curve: some episode ended
        assert methods["evolved"]["env_steps"][-1] == K * M
        assert methods["ppo"]["env_steps"][-1] == K * M  # equal samples
        assert methods["ppo-large"]["env_steps"][-1] > K * M
    elif name == "epg_kl":
        for m, r in methods.items():
            kl = np.array(r["kl"], float)
            assert kl.shape == (S, T, G, K) and np.isfinite(kl).all(), m
            assert (kl >= 0).all() and kl.max() > 0, m
    elif name == "epg_sensitivity":
        kinds = out["kinds"]
        assert [k for k, _ in kinds][:6] == ["observation", "action", "termination",
                                             "memory", "policy mean", "policy log-std"]
        assert 0 <= s["t_star"] - (N - M) < M
        for m, r in methods.items():
            g = np.array(r["norms"], float)
            assert g.shape == (S, T, G, N, len(kinds)) and np.isfinite(g).all(), m
            assert (g >= 0).all() and (g[..., s["t_star"], :] > 0).all(), m
            assert len(r["at_scored_step"]) == len(kinds)
    else:
        raise AssertionError(f"no JSON checks for {name}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_point_runs_at_smoke_scale(name, tmp_path):
    mod = load(name)
    env = fast_compile_env()
    proc = subprocess.run([sys.executable, str(EXPERIMENTS / f"{name}.py"), "--scale", "smoke",
                           "--out", str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / f"{mod.NAME}.json").read_text())
    if name.startswith("epg_"):  # one report: settings, meta-training, runs per method
        check_epg_report(name, mod, out)
    elif name.startswith("metagenrl_"):  # one report: meta-test results per method
        finals = {m: r["final_return"] for m, r in out["meta_test"].items()}
        expected = (set(mod.METHODS) if name == "metagenrl_heldout"  # ablations: smoke's
                    else {*mod.SCALES["smoke"].extra["variants"], "initial"})
        assert set(finals) == expected, finals
        for m, f in finals.items():
            assert len(f) == mod.SCALES["smoke"].seeds and all(map(finite, f)), m
    else:  # runs: one record per (env, learner)
        runs = out if isinstance(out, list) else [out]
        assert runs
        for r in runs:
            ev = r["eval_return_per_seed"]
            assert len(ev) == mod.SCALES["smoke"].seeds and all(map(finite, ev)), r["learner"]
            assert len(r["env_steps"]) >= 1 and r["env_steps"][-1] > 0
            assert len(r["episode_return"]) == len(ev)
    pngs = sorted(tmp_path.glob(f"{mod.NAME}*.png"))
    assert pngs and all(p.stat().st_size > 5_000 for p in pngs), pngs
    md = (tmp_path / f"{mod.NAME}.md").read_text()
    assert "|---" in md and md.count("\n") >= 3


def test_paper_scale_configs_are_valid():
    """``--scale paper`` is for accelerators and never runs here; its configs (validated
    when built) must at least be accepted for every (env, learner) it would run."""
    cln = load("cln_curves")
    for env in cln.SCALES["paper"].envs:
        for learner in cln.LEARNERS:
            cfg = cln._config(learner, env)[1]
            cfg = dataclasses.replace(cfg, total_steps=cln.SCALES["paper"].steps[env])
            assert cfg.num_envs * cfg.num_steps == 4 * 2048, (learner, env)
    tare, archs = load("tare_curves"), load("tare_reward_archs")
    for env in tare.SCALES["paper"].envs + archs.SCALES["paper"].envs:
        for learner in tare.LEARNERS:
            dataclasses.replace(tare.base_config(learner, env)[1], total_steps=1_000_000)
        for net in archs.LEARNERS[1:]:
            dataclasses.replace(tare.base_config("ppo-tare", env)[1], reward_net=net)
    # On MuJoCo AWR and AWR-TARE share the env geometry and AWR's settings: they differ
    # in the reward only.
    for env in tare.MUJOCO:
        a, t = tare.base_config("awr", env)[1], tare.base_config("awr-tare", env)[1]
        assert (a.num_envs, a.num_steps, a.policy_learning_rate, a.action_std, a.buffer_size,
                a.value_learning_rate, a.policy_steps, a.value_steps, a.hidden, a.activation,
                a.normalizer_samples
                ) == (t.num_envs, t.num_steps, t.policy_learning_rate, t.action_std, t.buffer_size,
                      t.value_learning_rate, t.policy_steps, t.value_steps, t.hidden, t.activation,
                      t.normalizer_samples), env
    # EPG: the paper's config (epg.Config()) on random hopper, bound to the env (~5 s:
    # building the MJX hopper), and the PPO configs it is compared with.
    from metareward.algos import epg

    epg_common, vs_ppo = load("epg_common"), load("epg_vs_ppo")
    paper = epg_common.SCALES["paper"]
    (env_name,) = paper.envs
    cfg = dataclasses.replace(epg.preset(env_name), **paper.extra["config"])
    assert cfg == epg.Config()
    setup = epg_common.Setup(scale="paper", env_name=env_name, config=cfg,
                             seeds=paper.seeds, tasks=paper.extra["tasks"],
                             agents=paper.extra["agents"], num_eval=paper.extra["num_eval"],
                             out=Path("unused"), retrain=False)
    tr = epg_common.trainer(setup)
    assert tr.spec.name == "hopper" and tr.env.tasks.ranges
    equal, large = vs_ppo.ppo_configs(setup, 25)
    assert equal.num_envs * equal.num_steps == cfg.steps_per_update
    assert equal.total_steps == cfg.inner_updates * cfg.steps_per_update
    assert large.total_steps >= 25 * equal.total_steps - large.num_envs * large.num_steps


@pytest.mark.slow
def test_run_directory_mode_resumes_a_killed_grid_exactly(tmp_path):
    """``--runs`` (what ``--scale mujoco-cpu`` uses): a grid killed in the middle of a run
    (SIGKILL after chunk 6 of 8, one checkpoint at update 5) and started again with the
    same command resumes that run and ends with the records of an uninterrupted grid;
    the same directory with other settings is refused, naming it."""
    import signal
    import time

    def cmd(name: str, *extra: str) -> list[str]:
        return [sys.executable, str(EXPERIMENTS / "lirpg_delayed.py"), "--scale", "smoke",
                "--learners", "ppo", "--steps", "4096", "--runs", str(tmp_path / name / "runs"),
                "--out", str(tmp_path / name / "out"), *extra]

    env = fast_compile_env()
    whole = subprocess.run(cmd("whole"), env=env, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed = subprocess.Popen(cmd("killed"), env={**env, "METAREWARD_FAULT": "after-chunk:6"},
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        line = killed.stderr.readline()
        if not line or "metareward fault point" in line:
            break
    assert killed.poll() is None, "the grid ended before the fault point"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    run_dir = tmp_path / "killed" / "runs" / "lirpg_delayed" / "cartpole-10-ppo"
    assert (run_dir / "config.json").is_file() and not (run_dir / "eval.json").exists()

    # --finished-only reads a finished grid back as it was and leaves the killed run
    # alone: named, not resumed.
    results = tmp_path / "whole" / "out" / "lirpg_delayed.json"
    before = json.loads(results.read_text())
    results.unlink()
    reread = subprocess.run(cmd("whole", "--finished-only"), env=env, capture_output=True,
                            text=True, timeout=600)
    assert reread.returncode == 0, reread.stderr[-3000:]
    assert json.loads(results.read_text()) == before
    skipped = subprocess.run(cmd("killed", "--finished-only"), env=env, capture_output=True,
                             text=True, timeout=600)
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "leaving out cartpole-10-ppo (unfinished" in skipped.stderr
    assert not (run_dir / "eval.json").exists()

    again = subprocess.run(cmd("killed"), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming {run_dir}" in again.stderr
    a, b = (json.loads((tmp_path / n / "out" / "lirpg_delayed.json").read_text())[0]
            for n in ("whole", "killed"))
    for k in ("env_steps", "episode_return", "eval_return_per_seed", "config"):
        assert a[k] == b[k], k
    assert len(a["env_steps"]) == 8 and a["env_steps"][-1] == 4096

    other = subprocess.run(cmd("killed", "--seeds", "3"), env=env, capture_output=True,
                           text=True, timeout=600)
    assert other.returncode != 0 and f"{run_dir} holds a different run" in other.stderr


def _run(env: str, learner: str, evals: list[float], train: float, **labels) -> dict:
    seeds = len(evals)
    return {"env": env, "learner": learner, **labels, "env_steps": [500, 1000],
            "eval_return_per_seed": evals,
            "episode_return": [[None, train + i] for i in range(seeds)]}


def test_claims_verdicts_follow_welch_tests_per_env(tmp_path):
    """``experiments/claims.py``: ahead on every env is reproduced, on some is partly,
    tied or behind everywhere is not; the numbers in the table are the runs' own."""
    claims = load("claims")
    high, low = [100.0, 104, 98, 102, 101], [50.0, 53, 49, 52, 47]
    noisy = [40.0, 120, 60, 90, 45]
    cln = [_run("hopper", "cln", high, 900), _run("hopper", "ppo", low, 400),
           _run("walker2d", "cln", high, 900), _run("walker2d", "ppo", noisy, 400),
           _run("hopper", "lirpg", high, 1), _run("hopper", "cln-nohyper", low, 1),
           _run("walker2d", "lirpg", high, 1), _run("walker2d", "cln-nohyper", low, 1)]
    lirpg = [_run("hopper", "lirpg", low, 0, delay=20), _run("hopper", "ppo", high, 0, delay=20),
             _run("hopper", "lirpg-mix", high, 0, delay=10)]
    (tmp_path / "cln_curves.json").write_text(json.dumps(cln))
    (tmp_path / "lirpg_delayed.json").write_text(json.dumps(lirpg))
    out = {(c["method"], c["baseline"]): c for c in claims.main(["--results", str(tmp_path)])}
    assert [r["outcome"] for r in out[("cln", "ppo")]["rows"]] == ["ahead", "tied"]
    assert out[("cln", "ppo")]["verdict"] == "partly"
    assert out[("cln", "cln-nohyper")]["verdict"] == "reproduced"
    assert out[("cln", "lirpg")]["verdict"] == "not reproduced"  # tied on both
    assert out[("lirpg", "ppo")]["rows"][0]["outcome"] == "behind"
    assert out[("lirpg", "ppo")]["verdict"] == "not reproduced"
    assert out[("lirpg-mix", "ppo")]["verdict"] == "not run"  # only at delay 10
    assert out[("ppo-tare", "ppo")]["verdict"] == "not run"  # no tare_curves.json
    row = out[("cln", "ppo")]["rows"][0]
    assert row["diff"] == pytest.approx(sum(high) / 5 - sum(low) / 5)
    assert row["method_last"] == pytest.approx([900.0, 901, 902, 903, 904])
    md = (tmp_path / "claims.md").read_text()
    assert "| CLN | cln > ppo (Fig. 4) | hopper | 1,000 | 101 +- 2; [100, 104, 98, 102, 101]" in md
    assert "**partly**" in md and "| TARE | ppo-tare > ppo (Fig. 6) | - |" in md


def test_merge_keeps_other_runs_and_refuses_stale_ones(tmp_path):
    """``--merge`` (``common.kept_runs``): the runs of an earlier results file that this
    call does not run are kept when this code would run them with the same config, env
    options and seed count; one that differs fails, naming the run."""
    common, delayed = load("common"), load("lirpg_delayed")
    from metareward.runtime import configs

    def record(learner: str, env: str, **cfg) -> dict:
        run = delayed.build(learner, env, 20, 4096, {"backend": "generalized"})
        config = {**configs.config_to_dict(run.config), **cfg}
        return {"env": env, "delay": 20, "learner": learner, "seeds": 5, "config": config,
                "env_kwargs": run.env_kwargs, "run_dir": f"runs/{env}-{learner}"}

    path = tmp_path / "lirpg_delayed.json"
    keys = ("env", "delay", "learner")
    jobs = [({"env": "walker2d", "delay": 20, "learner": "ppo"}, None)]

    def kept(seeds: int = 5) -> list[dict]:
        return common.kept_runs(path, keys, jobs, seeds, lambda r: delayed.build(
            r["learner"], r["env"], r["delay"], r["config"]["total_steps"],
            {"backend": "generalized"}))

    assert kept() == []  # no earlier results
    old = [record("ppo", "hopper"), record("lirpg", "hopper"), record("ppo", "walker2d")]
    path.write_text(json.dumps(old))
    assert [(r["env"], r["learner"]) for r in kept()] == [("hopper", "ppo"), ("hopper", "lirpg")]
    with pytest.raises(SystemExit, match="hopper-20-ppo with another config"):
        kept(seeds=3)
    stale = record("lirpg", "hopper", intrinsic_learning_rate=1.0)
    path.write_text(json.dumps([record("ppo", "hopper"), stale]))
    with pytest.raises(SystemExit, match="hopper-20-lirpg with another config"):
        kept()

    # A record written before a config field existed lacks it: kept if this code runs
    # the field at its default (what the record's run did, and what resume assumes),
    # refused if this code sets it otherwise.
    older = record("lirpg", "hopper")
    del older["config"]["intrinsic_learning_rate"]
    path.write_text(json.dumps([record("ppo", "hopper"), older]))
    assert [r["learner"] for r in kept()] == ["ppo", "lirpg"]

    def rebuild_changed(r: dict):
        run = delayed.build(r["learner"], r["env"], r["delay"], r["config"]["total_steps"],
                            {"backend": "generalized"})
        if r["learner"] == "ppo":
            return run
        return dataclasses.replace(run, config=dataclasses.replace(
            run.config, intrinsic_learning_rate=1.0))

    with pytest.raises(SystemExit, match="hopper-20-lirpg with another config"):
        common.kept_runs(path, keys, jobs, 5, rebuild_changed)


def test_committed_tare_records_still_merge():
    """The committed MuJoCo TARE results were written before PPO-TARE took PPO's config
    and AWR-TARE AWR's (``value_lr`` is now ``value_learning_rate``, ...): ``--merge``
    still keeps every record, comparing renamed fields under their new names and the
    fields added since at their defaults, so the programs that made them are this
    code's. (The ``cpu`` scale's file is older still: its TARE configs carry the
    ``inner`` mode string that issue 34 replaced by the config's class.)"""
    common, curves = load("common"), load("tare_curves")
    path = EXPERIMENTS / "results" / "mujoco-cpu" / "tare_curves.json"
    records = json.loads(path.read_text())
    assert any("value_lr" in r["config"] for r in records)  # written before the rename
    kept = common.kept_runs(path, ("env", "learner"), [], records[0]["seeds"],
                            lambda r: curves.build(r["learner"], r["env"],
                                                   r["config"]["total_steps"],
                                                   r.get("env_kwargs")))
    assert [(r["env"], r["learner"]) for r in kept] == [
        (r["env"], r["learner"]) for r in records]


def test_a_run_directory_in_use_fails_in_one_line(tmp_path):
    """A grid that reaches a run directory another process holds stops with the CLI's
    one-line message naming the directory and its holder, not a traceback."""
    common = load("common")
    from metareward.algos import ppo
    from metareward.runtime import configs, driver
    from metareward.runtime.lock import RunLock
    from metareward.runtime.rundir import RunDir

    run = common.Run("ppo", "cartpole", dataclasses.replace(ppo.preset("cartpole"),
                                                            total_steps=4096))
    plan = driver.prepare(run.algo, run.env, overrides=configs.config_to_dict(run.config),
                          env_kwargs=run.env_kwargs, options=driver.RunOptions(seeds=2))
    path = tmp_path / "cartpole-ppo"
    RunDir(path).create({**plan.record(), "run_id": "x", "wandb_id": "x",
                         "processes": 1}).release()
    with RunLock(path), pytest.raises(SystemExit) as e:
        common.train_in_run_dir(run, path, 2)
    msg = str(e.value)
    assert msg.startswith("error: ") and str(path) in msg and "in use by" in msg, msg
    assert "\n" not in msg

    # A run made before a config field existed: its config.json lacks the field. It is
    # this run if the code runs the field at its default (resume takes it so), and
    # another run if not.
    default = ppo.Config()
    at_default = next(f.name for f in dataclasses.fields(run.config)
                      if f.name != "total_steps"
                      and getattr(run.config, f.name) == getattr(default, f.name))
    changed = next(f.name for f in dataclasses.fields(run.config)
                   if getattr(run.config, f.name) != getattr(default, f.name)
                   and f.name != "total_steps")
    record = json.loads((path / "config.json").read_text())
    for name, same in ((at_default, True), (changed, False)):
        older = {**record, "config": {k: v for k, v in record["config"].items() if k != name}}
        (path / "config.json").write_text(json.dumps(older))
        with RunLock(path), pytest.raises(SystemExit) as e:
            common.train_in_run_dir(run, path, 2)
        assert ("in use by" if same else "holds a different run") in str(e.value), name


def test_finished_only_reads_finished_runs_and_trains_nothing(tmp_path, capsys):
    """``--finished-only`` (``common.finished_jobs``): a grid rebuilds its outputs from
    the run directories that have finished; an unfinished or missing run is named and
    left out, not trained, and with ``--merge`` the results file's record of it stays."""
    common, delayed = load("common"), load("lirpg_delayed")
    runs = tmp_path / "runs"
    jobs = [({"env": "cartpole", "delay": 10, "learner": ln}, None)
            for ln in ("ppo", "lirpg", "ppo-bonus")]
    done, partial = runs / "cartpole-10-ppo", runs / "cartpole-10-lirpg"
    for d in (done, partial):
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
    (done / "summary.json").write_text(json.dumps({"status": "finished"}))
    (done / "eval.json").write_text("{}")
    (partial / "summary.json").write_text(json.dumps({"status": "running"}))
    assert [j[0]["learner"] for j in common.finished_jobs(jobs, runs)] == ["ppo"]
    err = capsys.readouterr().err
    assert "leaving out cartpole-10-lirpg (unfinished" in err
    assert "leaving out cartpole-10-ppo-bonus (not started" in err

    out = tmp_path / "out"
    out.mkdir()
    earlier = [{"env": "cartpole", "delay": 10, "learner": "ppo", "seeds": 2,
                "config": common.config_dict(delayed.build("ppo", "cartpole", 10, 4096).config),
                "env_steps": [4096], "eval_return_per_seed": [1.0, 2.0]}]
    (out / "lirpg_delayed.json").write_text(json.dumps(earlier))
    args = ["--scale", "smoke", "--learners", "ppo", "--steps", "4096", "--seeds", "2",
            "--delays", "10", "--runs", str(tmp_path / "none"), "--out", str(out),
            "--finished-only"]
    assert delayed.main([*args, "--merge"]) == earlier
    assert not (tmp_path / "none").exists()
    assert json.loads((out / "lirpg_delayed.json").read_text()) == earlier
    with pytest.raises(SystemExit, match="--finished-only reads run directories"):
        delayed.main(["--scale", "smoke", "--finished-only", "--out", str(out)])
