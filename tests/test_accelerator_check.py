"""``benchmarks/accelerator_check.py`` (issue 35): the plan lists every step with
well-formed commands (``--dry``, no jax in the process: fast), the step runner records
failures, timeouts and budget skips and goes on (stand-in commands), the numbers are
read from a run directory and pytest's output, and (``slow``) ``--tiny`` runs every
step end to end on the CPU (in four parts) and writes every step's numbers.

The ``--tiny`` run compiles every learner and benchmark once, so its subprocess asks
XLA:CPU for its cheapest compilation (``tests/fast_compile.py``), as the experiments'
smoke tests do.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fast_compile import fast_compile_env

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "accelerator_check.py"
BENCHES = ("ppo_throughput", "hypergrad", "epg_population", "metagenrl_population")
ALGOS = ("ppo", "lirpg", "cln", "tare", "tare-awr", "epg", "metagenrl")
EXPECTED = ["device", *(f"bench-{b}" for b in BENCHES), *(f"train-{a}" for a in ALGOS),
            "pytest-accelerator"]


def load():
    """The script as a module (``benchmarks`` is no package on the tests' path)."""
    spec = importlib.util.spec_from_file_location("accelerator_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["accelerator_check"] = mod
    spec.loader.exec_module(mod)
    return mod


def dry(*args: str) -> tuple[str, dict]:
    p = subprocess.run([sys.executable, str(SCRIPT), "--dry", *args], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout, json.loads(p.stdout.strip().splitlines()[-1])


def arg(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


@pytest.mark.parametrize("tiny", [False, True])
def test_dry_lists_every_step_with_well_formed_commands(tiny, tmp_path):
    out, plan = dry(*(["--tiny"] if tiny else []), "--out", str(tmp_path))
    names = [s["name"] for s in plan["steps"]]
    assert names == EXPECTED
    for name in names:
        assert f"[{name}]" in out
    stem = "accelerator_check" + ("-tiny" if tiny else "")
    assert plan["report"] == str(tmp_path / f"{stem}.json")
    assert plan["mode"] == ("tiny" if tiny else "gpu")
    assert plan["budget_s"] == (0 if tiny else 570)
    json.dumps(plan)  # JSON-ready throughout
    for s in plan["steps"]:
        cmd = s["command"]
        assert all(isinstance(c, str) for c in cmd) and cmd[0] == sys.executable, cmd
        assert s["timeout_s"] > 0 and s["est_s"] > 0
        assert s["command_line"].startswith(sys.executable)
        if s["kind"] == "bench":
            bench = s["name"].removeprefix("bench-")
            assert cmd[1] == str(ROOT / "benchmarks" / f"{bench}.py")
            assert arg(cmd, "--json") == s["outputs"]["json"] == str(
                tmp_path / f"{stem}-{bench}.json")
            assert "--repeat" in cmd and arg(cmd, "--repeat") == "1"
        elif s["kind"] == "train":
            algo = s["name"].removeprefix("train-")
            verb = "meta-train" if algo in ("epg", "metagenrl") else "train"
            assert cmd[1:5] == ["-m", "metareward", verb, algo]
            assert arg(cmd, "--out") == s["outputs"]["run_dir"] == str(
                tmp_path / stem / "runs" / algo)
            assert arg(cmd, "--eval-episodes") == "0" and "--no-progress" in cmd
            assert s["cwd"] == str(tmp_path / stem)  # MuJoCo's MUJOCO_LOG.TXT lands there
            env = arg(cmd, "--env")
            if tiny:
                assert env == "pendulum"
            elif algo == "metagenrl":
                assert env == "halfcheetah,walker2d"
            else:
                assert env == "hopper"
        elif s["kind"] == "pytest":
            assert cmd[1:9] == ["-m", "pytest", "-m", "accelerator", "-p", "no:cacheprovider",
                                "-q", *(["--collect-only"] if tiny else ["-n"])]
    ppo = next(s["command"] for s in plan["steps"] if s["name"] == "bench-ppo_throughput")
    assert "--skip-peer" in ppo


def test_dry_default_places_and_budget():
    """Without ``--out``: the JSON in benchmarks/results (git-ignored *.json), runs under
    runs/; the budget skips the steps that its estimates do not hold, the pytest first."""
    out, plan = dry()
    assert plan["report"] == str(ROOT / "benchmarks" / "results" / "accelerator_check.json")
    run = next(s for s in plan["steps"] if s["kind"] == "train")
    assert run["outputs"]["run_dir"].startswith(str(ROOT / "runs" / "accelerator_check"))
    assert plan["estimated_total_s"] > plan["budget_s"]
    assert "pytest-accelerator" in plan["would_skip"]
    assert "would skip:" in out
    _, alone = dry("--steps", "pytest-accelerator")
    assert [s["name"] for s in alone["steps"]] == ["device", "pytest-accelerator"]
    assert alone["would_skip"] == []


def test_steps_selection():
    mod = load()
    steps = mod.build_steps(False, mod.layout("/tmp/x", False))
    names = [s.name for s in mod.select(steps, ["train-*"])]
    assert names == ["device", *(f"train-{a}" for a in ALGOS)]
    assert [s.name for s in mod.select(steps, ["train-tare", "bench-hyper*"])] == [
        "device", "bench-hypergrad", "train-tare"]
    with pytest.raises(ValueError, match="matches no step"):
        mod.select(steps, ["nope"])
    p = subprocess.run([sys.executable, str(SCRIPT), "--dry", "--steps", "nope"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "matches no step" in p.stderr


def test_runner_records_failures_timeouts_and_budget_skips(tmp_path, monkeypatch, capsys):
    """Stand-in steps: a probe, a failing step, one past its timeout, one the budget
    skips, and one that succeeds after them; the JSON holds each, the exit status is 1."""
    mod = load()
    py = sys.executable
    probe = ('import json; print(json.dumps(dict(device_kind="cpu", platform="cpu", '
             'device_count=1, jax="x", jaxlib="x", python="3")))')

    def fake_steps(tiny, where):
        return [
            mod.Step("device", "probe", [py, "-c", probe], 1, 30),
            mod.Step("bench-broken", "bench", [py, "-c", "import sys; sys.exit('boom')"], 1, 30,
                     outputs={"json": str(where.bench_json("broken"))}),
            mod.Step("slow", "pytest", [py, "-c", "import time; time.sleep(60)"], 1, 1),
            mod.Step("too-big", "pytest", [py, "-c", "pass"], 10_000, 30),
            mod.Step("pytest-accelerator", "pytest",
                     [py, "-c", "print('a::b\\na::c\\n\\n2/9 tests collected (7 deselected)"
                                " in 0.1s')", "--collect-only"], 1, 30),
        ]

    monkeypatch.setattr(mod, "build_steps", fake_steps)
    rc = mod.main(["--out", str(tmp_path), "--budget", "300"])
    printed = capsys.readouterr().out
    assert rc == 1
    report = json.loads((tmp_path / "accelerator_check.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["device", "bench-broken", "slow", "too-big", "pytest-accelerator"]
    assert report["device"]["platform"] == "cpu"
    assert any("the device is a CPU" in w for w in report["warnings"])
    assert steps["device"]["status"] == "ok"
    broken = steps["bench-broken"]
    assert broken["status"] == "failed" and broken["rc"] == 1 and "boom" in broken["stderr_tail"]
    assert steps["slow"]["status"] == "timeout" and steps["slow"]["rc"] is None
    assert steps["slow"]["wall_s"] < 30
    assert steps["too-big"]["status"] == "skipped" and "budget" in steps["too-big"]["reason"]
    last = steps["pytest-accelerator"]
    assert last["status"] == "ok" and last["numbers"]["collected"] == 2
    assert last["numbers"]["tests"] == ["a::b", "a::c"]
    assert last["numbers"]["deselected"] == 7
    for name in ("bench-broken", "too-big", "pytest-accelerator"):
        assert name in printed
    assert "FAILED: bench-broken slow" in printed
    assert "--steps too-big --merge" in printed

    # --merge: a rerun of the skipped step keeps the others' records.
    monkeypatch.setattr(mod, "build_steps", lambda tiny, where: [
        mod.Step("device", "probe", [py, "-c", probe], 1, 30),
        *fake_steps(tiny, where)[1:3],
        mod.Step("too-big", "pytest", [py, "-c", "print('1 passed in 0.1s')"], 1, 30),
        fake_steps(tiny, where)[4]])
    assert mod.main(["--out", str(tmp_path), "--steps", "too-big", "--merge"]) == 0
    merged = {s["name"]: s for s in json.loads(
        (tmp_path / "accelerator_check.json").read_text())["steps"]}
    assert merged["too-big"]["status"] == "ok" and merged["too-big"]["numbers"]["passed"] == 1
    assert merged["bench-broken"]["status"] == "failed"
    assert merged["pytest-accelerator"]["numbers"]["collected"] == 2


def test_train_numbers_from_a_run_directory(tmp_path):
    """Throughput = env steps of all seeds and agents / wall_time; the steady rate over the
    second half of the chunks."""
    mod = load()
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(
        {"status": "finished", "env_steps": 400, "wall_time": 4.0, "compile_time": 30.0,
         "last_return": -1.0}))
    (run / "config.json").write_text(json.dumps(
        {"algo": "metagenrl", "config": {"num_agents": 3}, "run": {"seeds": 2}}))
    recs = [{"seed": s, "chunk": c, "env_steps": 100 * (c + 1), "wall_time": w}
            for c, w in enumerate((1.5, 2.0, 3.0, 4.0)) for s in range(2)]
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, recs)) + "\n")
    step = mod.Step("train-metagenrl", "train", [], 1, 1, outputs={"run_dir": str(run)})
    nums = mod.train_numbers(step, None)
    assert nums["total_env_steps"] == 400 * 2 * 3
    assert nums["env_steps_per_s"] == pytest.approx(2400 / 4.0)
    assert nums["steady_env_steps_per_s"] == pytest.approx(200 * 6 / 2.0)  # chunks 2-3
    assert nums["compile_time"] == 30.0 and nums["chunks"] == 4
    # A run that failed after its chunks (e.g. at its final checkpoint) keeps its numbers.
    (run / "summary.json").write_text(json.dumps(
        {"status": "failed", "env_steps": 400, "wall_time": 4.0, "compile_time": 30.0}))
    assert mod.train_numbers(step, None)["status"] == "failed"
    (run / "summary.json").unlink()
    with pytest.raises(FileNotFoundError):
        mod.train_numbers(step, None)


#: The ``--tiny`` check in four parts of 1.5-2 minutes each on one core of this VM (cold
#: compile cache; 7 minutes in all), so that ``pytest -n 2 -m slow`` spreads them.
TINY_PARTS = (
    ("bench-ppo_throughput", "bench-hypergrad", "bench-epg_population",
     "pytest-accelerator"),
    ("bench-metagenrl_population",),
    ("train-ppo", "train-lirpg", "train-cln", "train-tare"),
    ("train-tare-awr", "train-epg", "train-metagenrl"),
)


def test_tiny_parts_cover_every_step():
    assert sorted(["device", *(n for part in TINY_PARTS for n in part)]) == sorted(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("part", TINY_PARTS, ids=lambda p: p[0])
def test_tiny_check_runs_every_step_end_to_end(part, tmp_path):
    """``--tiny`` on this CPU: every step of ``part`` (and the device probe) succeeds and
    writes its numbers."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(tmp_path),
                           "--steps", *part], env=fast_compile_env(), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "accelerator_check-tiny.json").read_text())
    assert report["mode"] == "tiny" and report["device"]["device_kind"]
    assert report["device"]["jax"] and report["host"] and report["date"]
    assert report["warnings"] == []
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == [n for n in EXPECTED if n == "device" or n in part]
    for name, s in steps.items():
        assert s["status"] == "ok" and s["rc"] == 0 and s["wall_s"] > 0, (name, s)
        assert s["numbers"], name
        assert Path(s["logs"][0]).is_file(), name
        assert f"{name} " in proc.stdout  # a row of the table
    for name in steps.keys() & {f"bench-{b}" for b in BENCHES}:
        nums = steps[name]["numbers"]
        assert Path(nums["json"]).is_file() and nums["headline"], name
        assert nums["device"], name
    for name in steps.keys() & {f"train-{a}" for a in ALGOS}:
        nums = steps[name]["numbers"]
        assert nums["status"] == "finished", name
        assert nums["env_steps_per_s"] > 0 and nums["compile_time"] > 0, name
        assert nums["total_env_steps"] > 0 and nums["steady_env_steps_per_s"] > 0, name
        assert not (Path(nums["run_dir"]) / "checkpoints").exists(), name
    if "pytest-accelerator" in steps:
        tests = steps["pytest-accelerator"]["numbers"]
        assert tests["collected"] >= 2
        assert any("test_metagenrl_learning.py::" in t for t in tests["tests"])
    assert "key numbers" in proc.stdout and "report:" in proc.stdout
