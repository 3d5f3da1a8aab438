"""The accelerator check: on one GPU, the learning test sized for it, the GPU rows of the
benchmarks and a short paper-setting run of every method, each step timed, in one JSON.

Usage::

    python benchmarks/accelerator_check.py                    # GPU: everything a 570 s budget holds
    python benchmarks/accelerator_check.py --out "$OUT"       # all outputs under $OUT
    python benchmarks/accelerator_check.py --steps 'train-*' pytest-accelerator --merge
    python benchmarks/accelerator_check.py --tiny --out /tmp/ac   # CPU smoke, a few minutes
    python benchmarks/accelerator_check.py --dry              # the plan and commands only
    bash benchmarks/accelerator_check.sh ARGS...              # the same

Steps (in this order; ``--steps NAME_OR_GLOB...`` selects some, the device probe always
runs):

* ``device``: ``jax.devices()[0].device_kind``, platform, jax version (a subprocess, so
  this process never takes the GPU);
* ``bench-ppo_throughput``, ``bench-hypergrad``, ``bench-epg_population``,
  ``bench-metagenrl_population``: the benchmark scripts with the settings of
  :data:`BENCHMARKS`, each writing its JSON (``--json``) next to this check's;
* ``train-ppo``, ``train-lirpg``, ``train-cln``, ``train-tare``, ``train-tare-awr``,
  ``train-epg``, ``train-metagenrl``: ``metareward train`` (``meta-train`` for EPG and
  MetaGenRL) at the paper's settings on brax MuJoCo envs (:data:`RUNS`), a few updates
  each; throughput = env steps / ``wall_time`` of the run's ``summary.json`` (compilation
  excluded; ``compile_time`` reported beside it), and the same over the second half of the
  run's chunks (``metrics.jsonl``), which leaves out the first chunks' warm-up;
* ``pytest-accelerator``: ``pytest -m accelerator -p no:cacheprovider -q`` (today
  ``tests/test_metagenrl_learning.py``, two meta-seeds, run side by side with ``-n 2``),
  with ``JAX_PLATFORMS`` set to the probed platform: ``tests/conftest.py`` would otherwise
  put the tests on the CPU.

Every step is a subprocess with its own timeout (its process group is killed at the
timeout); a failed or timed-out step is recorded (rc, the tail of its stderr) and the
check goes on. **Budget**: the whole check does not fit in 10 minutes of one GPU (the
estimates of :data:`BENCHMARKS`, :data:`RUNS` and :data:`PYTEST_EST_S`, none measured on
a GPU yet, add up to about 35 minutes, most of it compilation), so a run has a budget
(``--budget``, default 570 s on a GPU, none with ``--tiny``): a step whose estimate
exceeds what is left is skipped, and a step's timeout never runs past the budget. The
table at the end names the skipped steps and the command that runs them (``--steps ...
--merge`` adds their records to the same JSON). By the estimates a full check is five
calls of the default budget: the device and the benchmarks (and ``train-ppo``), the train
runs in three calls, then ``pytest-accelerator`` alone.

Output (``--out DIR``, default ``benchmarks/results``): ``DIR/accelerator_check.json``
(the device, jax version, date, host, and per step: name, command, rc, status, wall
seconds, and its numbers: benchmark JSON paths and headline figures, env-steps/s and
compile time of each run, pytest's counts), rewritten after every step so that a check
killed from outside keeps what it finished; the benchmarks' JSON
``DIR/accelerator_check-BENCH.json``; run directories (checkpoints deleted unless
``--keep-checkpoints``) and every step's stdout/stderr under ``runs/accelerator_check/``
(with ``--out``: ``DIR/accelerator_check/``). ``--tiny`` names everything
``accelerator_check-tiny``.

``--tiny`` runs the same steps on a CPU at toy sizes (gymnax envs, a few updates, the
smallest populations, ``--repeat 1``, and ``pytest --collect-only`` for the accelerator
tests, which take hours on a CPU), so that every step's code path is exercised
(``tests/test_accelerator_check.py``). ``--dry`` prints the plan (commands, estimates,
what the budget would skip) and, on its last line, the plan as JSON; it runs nothing.

Exit status: 0 every step ran and succeeded; 1 a step failed or timed out; 3 none
failed but the budget skipped some; 130/143 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
STEM = "accelerator_check"

# ---------------------------------------------------------------------------------------
# Settings. ``est_s``: the estimated seconds of a step on one H100/H200 (process start,
# compilation, the timed work); the budget skips by them. NONE WAS MEASURED ON A GPU
# (no device was lent while this was written); they are built from
#   - the H100 figures in benchmarks/RESULTS.md (2026-11-23): EPG and MetaGenRL
#     population processes compile in 25-32 s (52 s on one core of this 2-core VM: GPU
#     compiles are taken as 0.6x of this VM's), a pendulum EPG member epoch 0.145 s, 32
#     sequential members 4.6 s per epoch, MetaGenRL 2-6 ms per population update;
#   - this VM's compile of the train commands below (one core, 2026-12-03): ppo on
#     hopper 112 s with 1 seed, ~160 s with 8; lirpg and cln ~210 s, tare ~255 s (8 seeds);
#   - the --tiny run on this VM (jax start ~7 s per process).
# The first GPU run's accelerator_check.json holds the real wall times: put them here.
# ---------------------------------------------------------------------------------------

#: The default budget on a GPU: under the device tool's 600 s per command, with 30 s for
#: the machine's process start and this script's own writing.
GPU_BUDGET_S = 570
#: The device probe: a python start and ``import jax``.
PROBE_EST_S = 10


@dataclasses.dataclass(frozen=True)
class Bench:
    """A benchmark script's arguments (besides ``--json``) on a GPU and with ``--tiny``,
    the GPU estimate and the GPU timeout, in seconds."""

    gpu: tuple[str, ...]
    tiny: tuple[str, ...]
    est_s: int
    timeout_s: int


#: The benchmarks, in run order. One round each (``--repeat 1``): the GPU rows are for a
#: first look, not for ratios between close variants.
BENCHMARKS: dict[str, Bench] = {
    # In-process: both envs, one timed run of 200k steps each (~100 updates of 2048 steps,
    # a few seconds on a GPU) after ~15 s of compiling each, plus the 128-episode eval.
    # --skip-peer: brax's PPO needs its own venv built from the network.
    "ppo_throughput": Bench(
        ("--skip-peer", "--repeat", "1", "--total-steps", "200000"),
        ("--skip-peer", "--repeat", "1", "--envs", "pendulum", "--total-steps", "4096"),
        60, 240),
    # 5 worker processes (implicit; unrolled K = 1, 10, 100; remat K = 100), each a jax
    # start (~7 s), a compile of a few seconds and >= 1 s of timed calls.
    "hypergrad": Bench(
        ("--ks", "1", "10", "100", "--remat-ks", "100", "--repeat", "1", "--min-time", "1"),
        ("--ks", "1", "--remat-ks", "1", "--repeat", "1", "--min-time", "0"),
        70, 240),
    # Population 32 (the H100's 28x row): vmap (~30 s with compile) and sequential (~30 s
    # + 4 epochs x 4.6 s). Population 128 would add ~2 x 75 s of sequential epochs.
    "epg_population": Bench(
        ("--pops", "32", "--repeat", "1", "--min-time", "1"),
        ("--pops", "2", "--repeat", "1", "--min-time", "0"),
        85, 240),
    # 16 agents, vmap and sequential, plus the paper-size cost row: 3 processes of
    # ~10 s start + 25-32 s compile, a few seconds timed each.
    "metagenrl_population": Bench(
        ("--pops", "16", "--repeat", "1", "--min-time", "1"),
        ("--pops", "1", "--windows", "2", "--repeat", "1", "--min-time", "0"),
        130, 300),
}


@dataclasses.dataclass(frozen=True)
class Run:
    """A short run of a method: ``metareward COMMAND ALGO --env ENV --seeds SEEDS
    --total-steps STEPS [--set KEY=VALUE ...] [--chunk-updates N]`` on a GPU, its
    ``--tiny`` stand-in (gymnax env, steps, sets, chunk size), the GPU estimate and
    timeout."""

    algo: str
    command: str
    env: str
    seeds: int
    total_steps: int | None
    sets: tuple[str, ...]
    tiny_env: str
    tiny_steps: int | None
    tiny_sets: tuple[str, ...]
    est_s: int
    timeout_s: int
    chunk_updates: int | None = None
    tiny_chunk_updates: int | None = None


#: Tiny EPG: 2 epochs of 2 members, 2 inner updates of 16 steps (the experiments' smoke).
_EPG_TINY = ("num_epochs=2", "pop_size=2", "inner_updates=2", "steps_per_update=16",
             "buffer_size=32", "eval_episodes=1")
#: Tiny MetaGenRL: 2 pendulum agents (its preset's 64x64 nets), 2-window batches; 256
#: steps, so that the first 200-step episodes end and the agents update.
_MG_TINY = ("num_agents=2", "learning_starts=64", "buffer_size=256", "batch_size=2",
            "anneal_steps=64")

#: The runs, in run order: each method's paper defaults (``metareward config ALGO --env
#: hopper`` prints them: no preset for hopper, except AWR-TARE's, the AWR authors' hopper
#: actor step size and action std) on brax ``hopper`` (MJX), 4 seeds vmapped
#: (the CLI's default; more cost compile time, see above); EPG and MetaGenRL at their
#: paper scale, one seed (the population is the batch). ~10 updates each, seconds to tens
#: of seconds on a GPU: compilation (MJX and the learner) is most of each estimate, so a
#: longer run would cost little more. Tiny: gymnax ``pendulum`` presets, 2 updates of 2048
#: steps, 2 seeds.
RUNS: tuple[Run, ...] = (
    # 1 env x 2048 steps per update (then 10 epochs x 32 minibatches): 10 updates.
    Run("ppo", "train", "hopper", 4, 10 * 2048, (), "pendulum", 4096, (), 110, 300),
    # PPO's batch plus the intrinsic reward's meta-gradient: 10 updates.
    Run("lirpg", "train", "hopper", 4, 10 * 2048, (), "pendulum", 4096, (), 140, 360),
    # 4 envs x 2048 (the paper's batch): 5 updates.
    Run("cln", "train", "hopper", 4, 5 * 4 * 2048, (), "pendulum", 4096, (), 150, 360),
    # 8 envs x 256 per update plus 10 CG steps of the implicit hypergradient: 10 updates.
    Run("tare", "train", "hopper", 4, 10 * 8 * 256, (), "pendulum", 4096, (), 170, 400),
    # 8 x 256 per update, 200 value + 1000 policy steps of 256 and the hypergradient.
    Run("tare-awr", "train", "hopper", 4, 10 * 8 * 256, (), "pendulum", 4096, (), 170, 400),
    # Random hopper, the paper's ES epoch: 32 members x (128 updates x 128 steps + 3
    # episodes of 1000) = 620k env steps, ~19k steps in sequence: ~15-20 s. 2 epochs.
    Run("epg", "meta-train", "hopper", 1, None, ("num_epochs=2",), "pendulum", None,
        _EPG_TINY, 200, 480),
    # 20 agents (10 per env), 350x350 nets + LayerNorm, 2 x 100 windows per objective
    # step: 4000 updates at ~6-8 ms (updates start once an agent's first 1000-step
    # episode ends), 16 chunks; two MJX models to compile. buffer_size = the run's
    # length: the same computation as the paper's 1M-row buffer until that fills,
    # without its 4 GB checkpoint.
    Run("metagenrl", "meta-train", "halfcheetah,walker2d", 1, 4000, ("buffer_size=4000",),
        "pendulum", 256, _MG_TINY, 240, 540, chunk_updates=250, tiny_chunk_updates=128),
)

#: ``pytest -m accelerator``: two meta-seeds of 4 agents x 120k MetaGenRL updates (~2-3
#: ms each: ~5 min; one meta-training of 16 agents took 460 s on an H100, 2026-11-23), a
#: 20k-step meta-test and TD3 control on brax inverted-pendulum and their compiles
#: (~2 min), side by side (``-n 2``) on the one GPU. More than the budget leaves after
#: any other step: run it alone (``--steps pytest-accelerator``).
PYTEST_EST_S = 540
PYTEST_TIMEOUT_S = 900
#: Per-step timeout with ``--tiny`` (a CPU; the budget is off).
TINY_TIMEOUT_S = 600

# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Step:
    """One step of the check: a subprocess and how to read its numbers.

    Attributes:
      name: the step's name (``device``, ``bench-NAME``, ``train-ALGO``,
        ``pytest-accelerator``).
      kind: ``probe``, ``bench``, ``train`` or ``pytest``.
      command: the argv (``sys.executable`` first).
      est_s: estimated seconds (on a GPU; ``--tiny``: a guess for a CPU core).
      timeout_s: the step's own timeout.
      env: variables set for it on top of this process's environment.
      outputs: paths it writes (a benchmark's JSON, a run directory).
      cwd: its working directory (``None``: the repository root).
    """

    name: str
    kind: str
    command: list[str]
    est_s: float
    timeout_s: float
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)
    cwd: str | None = None

    def plan(self) -> dict[str, Any]:
        """The step as JSON-ready data (what ``--dry`` prints and the report starts from).

        Returns:
          ``name, kind, command, command_line, est_s, timeout_s, env, outputs, cwd``.
        """
        return {"name": self.name, "kind": self.kind, "command": self.command,
                "command_line": shlex.join(self.command), "est_s": self.est_s,
                "timeout_s": self.timeout_s, "env": self.env, "outputs": self.outputs,
                "cwd": self.cwd or str(ROOT)}


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a check writes: its JSON, the benchmarks' JSON, run dirs and step logs."""

    out: Path
    work: Path
    stem: str

    @property
    def report(self) -> Path:
        """The check's JSON."""
        return self.out / f"{self.stem}.json"

    def bench_json(self, bench: str) -> Path:
        """A benchmark's JSON."""
        return self.out / f"{self.stem}-{bench}.json"

    def run_dir(self, algo: str) -> Path:
        """A train step's run directory."""
        return self.work / "runs" / algo

    def log(self, step: str, stream: str) -> Path:
        """A step's captured ``stdout`` or ``stderr``."""
        return self.work / "logs" / f"{step}.{stream}"


def layout(out: str | None, tiny: bool) -> Layout:
    """The output places.

    Args:
      out: ``--out``; ``None``: JSON in ``benchmarks/results`` (git-ignored), run
        directories and logs in ``runs/`` (git-ignored).
      tiny: name everything ``accelerator_check-tiny``.

    Returns:
      The :class:`Layout`.
    """
    stem = STEM + ("-tiny" if tiny else "")
    if out is None:
        return Layout(RESULTS, ROOT / "runs" / stem, stem)
    base = Path(out).resolve()
    return Layout(base, base / stem, stem)


def build_steps(tiny: bool, where: Layout) -> list[Step]:
    """Every step of the check, in run order.

    Args:
      tiny: the CPU smoke sizes instead of the GPU settings.
      where: the output places.

    Returns:
      The steps: the device probe, the benchmarks, the runs, the accelerator tests.
    """
    py = sys.executable
    steps = [Step("device", "probe", [py, "-c", PROBE], PROBE_EST_S,
                  60 if not tiny else TINY_TIMEOUT_S)]
    for name, b in BENCHMARKS.items():
        path = where.bench_json(name)
        steps.append(Step(
            f"bench-{name}", "bench",
            [py, str(ROOT / "benchmarks" / f"{name}.py"), *(b.tiny if tiny else b.gpu),
             "--json", str(path)],
            b.est_s, TINY_TIMEOUT_S if tiny else b.timeout_s, outputs={"json": str(path)}))
    for r in RUNS:
        run_dir = where.run_dir(r.algo)
        env, steps_, sets = (r.tiny_env, r.tiny_steps, r.tiny_sets) if tiny else (
            r.env, r.total_steps, r.sets)
        seeds = 2 if tiny and r.command == "train" else r.seeds
        cmd = [py, "-m", "metareward", r.command, r.algo, "--env", env, "--seeds", str(seeds)]
        if steps_ is not None:
            cmd += ["--total-steps", str(steps_)]
        for s in sets:
            cmd += ["--set", s]
        chunk = r.tiny_chunk_updates if tiny else r.chunk_updates
        if chunk is not None:
            cmd += ["--chunk-updates", str(chunk)]
        # One checkpoint, at the end (after the timed chunks): none inside the timing.
        cmd += ["--out", str(run_dir), "--checkpoint-every", "100000", "--no-progress",
                "--eval-episodes", "0", "--wandb", "off"]
        # cwd: MuJoCo writes its warnings to ./MUJOCO_LOG.TXT.
        steps.append(Step(f"train-{r.algo}", "train", cmd, r.est_s,
                          TINY_TIMEOUT_S if tiny else r.timeout_s,
                          outputs={"run_dir": str(run_dir)}, cwd=str(where.work)))
    cmd = [py, "-m", "pytest", "-m", "accelerator", "-p", "no:cacheprovider", "-q"]
    if tiny:
        cmd += ["--collect-only"]
    else:  # the meta-seeds side by side; the step's timeout, not pytest-timeout's 900 s
        cmd += ["-n", "2", "-rA", "-o", "timeout=0"]
    steps.append(Step("pytest-accelerator", "pytest", cmd, PYTEST_EST_S,
                      TINY_TIMEOUT_S if tiny else PYTEST_TIMEOUT_S,
                      env={} if tiny else {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.45"}))
    return steps


#: The device probe's program: one JSON line.
PROBE = ("import json, platform, jax, jaxlib; d = jax.devices()[0]; print(json.dumps(dict("
         "device_kind=d.device_kind, platform=d.platform, device_count=jax.device_count(), "
         "jax=jax.__version__, jaxlib=jaxlib.__version__, python=platform.python_version())))")


def select(steps: list[Step], patterns: Sequence[str] | None) -> list[Step]:
    """The steps whose names match one of ``patterns`` (``fnmatch`` globs), in run order;
    the device probe always.

    Args:
      steps: all steps.
      patterns: ``--steps``; ``None``: every step.

    Returns:
      The selected steps.

    Raises:
      ValueError: a pattern that matches no step.
    """
    if not patterns:
        return list(steps)
    for p in patterns:
        if not any(fnmatch.fnmatchcase(s.name, p) for s in steps):
            raise ValueError(f"--steps {p!r} matches no step; steps: "
                             + ", ".join(s.name for s in steps))
    return [s for s in steps if s.kind == "probe"
            or any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]


def child_env(step: Step, platform_name: str | None) -> dict[str, str]:
    """The environment of a step's subprocess: this one's, the working tree's ``src`` and
    root first on ``PYTHONPATH`` (the code under test, installed or not), unbuffered
    output, the step's own variables, and for the accelerator tests ``JAX_PLATFORMS``
    (``tests/conftest.py`` defaults it to ``cpu``).

    Args:
      step: the step.
      platform_name: the probed platform (``gpu``, ``tpu``, ``cpu``), or ``None``.

    Returns:
      The environment.
    """
    env = dict(os.environ)
    paths = [str(ROOT / "src"), str(ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"  # a step killed at its timeout keeps its output
    env.update(step.env)
    if step.kind == "pytest" and platform_name and "--collect-only" not in step.command:
        env["JAX_PLATFORMS"] = platform_name
    return env


@dataclasses.dataclass
class Outcome:
    """How a subprocess ended: exit code (``None``: killed at its timeout), seconds, the
    tails of its output."""

    rc: int | None
    wall_s: float
    stdout: str
    stderr: str


def run_process(cmd: list[str], env: dict[str, str], timeout_s: float, out_log: Path,
                err_log: Path, cwd: str | None = None) -> Outcome:
    """Runs ``cmd`` in its own process group, its output to ``out_log`` and ``err_log``;
    at ``timeout_s`` the whole group (benchmark workers, pytest-xdist workers) gets
    SIGTERM, then SIGKILL 15 s later.

    Args:
      cmd: the argv.
      env: its environment.
      timeout_s: seconds before it is stopped.
      out_log: its stdout file.
      err_log: its stderr file.
      cwd: its working directory (``None``: the repository root).

    Returns:
      The :class:`Outcome` (``rc=None`` at the timeout).
    """
    out_log.parent.mkdir(parents=True, exist_ok=True)
    if cwd is not None:
        Path(cwd).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with out_log.open("w") as fo, err_log.open("w") as fe:
        proc = subprocess.Popen(cmd, cwd=cwd or ROOT, env=env, stdout=fo, stderr=fe,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=max(timeout_s, 1.0))
        except subprocess.TimeoutExpired:
            rc = None
            _kill_group(proc)
        except BaseException:  # interrupted: take the step's processes down with us
            _kill_group(proc)
            raise
    wall = time.perf_counter() - t0
    return Outcome(rc, wall, out_log.read_text(errors="replace"),
                   err_log.read_text(errors="replace"))


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM to ``proc``'s process group, SIGKILL if it is still there after 15 s."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(text: str, n: int = 3000) -> str:
    """The last ``n`` characters of ``text``."""
    return text[-n:]


# ----- the numbers of each kind of step ---------------------------------------------------


def probe_numbers(step: Step, out: Outcome) -> dict[str, Any]:
    """The device probe's JSON line.

    Args:
      step: the probe step.
      out: its outcome.

    Returns:
      ``device_kind, platform, device_count, jax, jaxlib, python``.
    """
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_numbers(step: Step, out: Outcome) -> dict[str, Any]:
    """A benchmark's JSON path and headline figures.

    Args:
      step: a ``bench-*`` step.
      out: its outcome.

    Returns:
      ``json`` (the path), ``device`` (as the benchmark saw it) and ``headline``: per
      row the throughput and compile seconds.

    Raises:
      FileNotFoundError: the benchmark wrote no JSON.
    """
    path = Path(step.outputs["json"])
    data = json.loads(path.read_text())
    head: dict[str, Any] = {}
    device = None
    if data.get("benchmark") == "ppo_throughput":
        device = data.get("machine", {}).get("device")
        for r in data["results"]:
            head[r["env"]] = {"env_steps_per_s": r["ours"]["steps_per_s"],
                              "compile_s": r["ours"]["compile_s"],
                              "final_return": r["ours"]["final_return"]}
    elif data.get("benchmark") == "hypergrad":
        for r in data["rows"]:
            head[f"{r['variant']} K={r['K']}"] = {
                "ms": r["seconds"] * 1e3, "compile_s": r["compile_s"],
                "xla_temp_mb": r["xla_temp_mb"]}
            device = r.get("device")
        head["crossover"] = data.get("crossover")
    else:  # the population benchmarks
        for r in data["rows"]:
            row = {"env_steps_per_s": r["env_steps_per_s"], "compile_s": r["compile_s"],
                   "seconds_per_update": r["seconds_per_update"]}
            if "x_sequential" in r:
                row["x_sequential"] = r["x_sequential"]
            head[f"pop {r['pop_size']} {r['learner']}"] = row
            device = r.get("device")
        if "cost" in data:
            head["objective_vs_td3_policy_update"] = data["cost"].get("x_td3_policy")
    return {"json": str(path), "device": device, "headline": head}


def train_numbers(step: Step, out: Outcome) -> dict[str, Any]:
    """A run's throughput from its ``summary.json``, ``config.json`` and
    ``metrics.jsonl``.

    ``env_steps_per_s`` = env steps of all seeds (and of all agents: MetaGenRL's
    ``env_steps`` counts one agent's; EPG's already counts the population's) / the run's
    ``wall_time`` (its chunks, compilation excluded). ``steady_env_steps_per_s``: the
    same over the second half of the chunks.

    Args:
      step: a ``train-*`` step.
      out: its outcome.

    Returns:
      ``run_dir, status`` (the summary's: ``finished``, or ``failed`` for a run that
      failed after its chunks, e.g. at its final checkpoint, whose numbers still
      stand), ``seeds, agents, env_steps`` (per seed, as the summary counts),
      ``total_env_steps, wall_time, compile_time, env_steps_per_s,
      env_steps_per_s_per_seed`` (of one seed, of one agent), ``steady_env_steps_per_s,
      chunks, last_return``.

    Raises:
      FileNotFoundError: the run wrote no summary or no metrics.
    """
    run_dir = Path(step.outputs["run_dir"])
    summary = json.loads((run_dir / "summary.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    seeds = int(config["run"]["seeds"])
    agents = int(config["config"].get("num_agents", 1)) if config["algo"] == "metagenrl" else 1
    per_chunk: dict[int, tuple[int, float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        per_chunk[int(rec["chunk"])] = (int(rec["env_steps"]), float(rec["wall_time"]))
    chunks = [per_chunk[c] for c in sorted(per_chunk)]
    scale = seeds * agents
    steady = None
    if len(chunks) >= 2:
        (s0, w0), (s1, w1) = chunks[len(chunks) // 2 - 1], chunks[-1]
        if w1 > w0:
            steady = (s1 - s0) * scale / (w1 - w0)
    wall = float(summary["wall_time"])
    total = int(summary["env_steps"]) * scale
    return {"run_dir": str(run_dir), "status": summary["status"], "seeds": seeds,
            "agents": agents, "env_steps": int(summary["env_steps"]),
            "total_env_steps": total, "wall_time": wall,
            "compile_time": float(summary["compile_time"]),
            "env_steps_per_s": total / wall if wall > 0 else None,
            "env_steps_per_s_per_seed": total / scale / wall if wall > 0 else None,
            "steady_env_steps_per_s": steady, "chunks": len(chunks),
            "last_return": summary.get("last_return")}


_COUNTS = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)")
_COLLECTED = re.compile(r"(\d+)(?:/\d+)? tests? collected")


def pytest_numbers(step: Step, out: Outcome) -> dict[str, Any]:
    """pytest's counts (``passed``, ``failed``, ...; with ``--collect-only``
    ``collected`` and the test ids) and the tail of its output (the tests print their
    returns).

    Args:
      step: the pytest step.
      out: its outcome.

    Returns:
      The counts, ``tests`` (collected ids) and ``output_tail``.

    Raises:
      RuntimeError: no accelerator test was collected.
    """
    text = out.stdout
    counts = {k.rstrip("s") if k.startswith("error") else k: int(n)
              for n, k in _COUNTS.findall(text.strip().splitlines()[-1] if text.strip() else "")}
    nums: dict[str, Any] = dict(counts)
    if "--collect-only" in step.command:
        m = _COLLECTED.search(text)
        nums["collected"] = int(m.group(1)) if m else 0
        nums["tests"] = [ln.strip() for ln in text.splitlines() if "::" in ln]
        if not nums["collected"]:
            raise RuntimeError("no accelerator test collected")
    nums["output_tail"] = tail(text, 4000)
    return nums


NUMBERS: dict[str, Callable[[Step, Outcome], dict[str, Any]]] = {
    "probe": probe_numbers, "bench": bench_numbers, "train": train_numbers,
    "pytest": pytest_numbers}


# ----- the check --------------------------------------------------------------------------


class Interrupted(Exception):
    """SIGTERM (or SIGINT) reached the check."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


def write_report(report: dict[str, Any], path: Path) -> None:
    """Writes the report atomically (a temporary file, then a rename).

    Args:
      report: the JSON-ready report.
      path: where.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)


def run_step(step: Step, where: Layout, platform_name: str | None, timeout_s: float,
             keep_checkpoints: bool) -> dict[str, Any]:
    """Runs one step and reads its numbers.

    Args:
      step: the step.
      where: the output places.
      platform_name: the probed platform (for the accelerator tests).
      timeout_s: the step's timeout (its own, or less where the budget ends sooner).
      keep_checkpoints: keep a run's ``checkpoints/`` (deleted by default: large, and
        unused here).

    Returns:
      The step's record: its plan plus ``status`` (``ok``, ``failed``, ``timeout``),
      ``rc``, ``wall_s``, ``timeout_s`` and ``numbers`` (or ``error`` and
      ``stderr_tail``).
    """
    rec = step.plan()
    rec["timeout_s"] = round(timeout_s, 1)
    rec["started"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if step.kind == "train":
        shutil.rmtree(step.outputs["run_dir"], ignore_errors=True)
    out = run_process(step.command, child_env(step, platform_name), timeout_s,
                      where.log(step.name, "stdout"), where.log(step.name, "stderr"), step.cwd)
    rec.update(rc=out.rc, wall_s=round(out.wall_s, 2),
               logs=[str(where.log(step.name, s)) for s in ("stdout", "stderr")])
    status = "ok" if out.rc == 0 else ("timeout" if out.rc is None else "failed")
    # A failed test run still has counts, a run that failed after its chunks its numbers.
    if status == "ok" or step.kind in ("pytest", "train"):
        try:
            rec["numbers"] = NUMBERS[step.kind](step, out)
        except Exception as e:
            status = "failed" if status == "ok" else status
            rec["error"] = f"{type(e).__name__}: {e}"
    run_status = rec.get("numbers", {}).get("status", "finished")
    if step.kind == "train" and status == "ok" and run_status != "finished":
        status = "failed"
        rec["error"] = f"run status {run_status!r}, not 'finished'"
    if step.kind == "train" and not keep_checkpoints:
        shutil.rmtree(Path(step.outputs["run_dir"]) / "checkpoints", ignore_errors=True)
    if status != "ok":
        rec["stderr_tail"] = tail(out.stderr)
        rec["stdout_tail"] = tail(out.stdout, 1500)
    rec["status"] = status
    return rec


def summary_line(rec: dict[str, Any]) -> str:
    """The key numbers of a step record, in a few words, for the table.

    Args:
      rec: a step record.

    Returns:
      A short line.
    """
    if rec.get("status") in ("skipped", "running"):
        return rec.get("reason", "")
    nums = rec.get("numbers")
    if rec.get("status") != "ok":
        why = (rec.get("error") or tail(rec.get("stderr_tail", "").strip(), 300)).strip()
        why = why.splitlines()[-1][-100:] if why else "no output"
        if rec["kind"] == "train" and nums:  # numbers of a run that failed at its end
            why += f" [{nums['env_steps_per_s'] or 0:,.0f} env-steps/s]"
        return why
    kind = rec["kind"]
    if kind == "probe":
        return f"{nums['device_kind']} ({nums['platform']}), jax {nums['jax']}"
    if kind == "train":
        sps = nums["env_steps_per_s"]
        steady = nums["steady_env_steps_per_s"]
        return (f"{sps:,.0f} env-steps/s" if sps else "-") + (
            f" (2nd half {steady:,.0f})" if steady else "") + (
            f", compile {nums['compile_time']:.1f} s, {nums['total_env_steps']:,} steps")
    if kind == "bench":
        name = Path(nums["json"]).name
        head = nums["headline"]
        bits = []
        for k, v in head.items():
            if isinstance(v, dict) and "env_steps_per_s" in v:
                bits.append(f"{k} {v['env_steps_per_s']:,.0f}/s")
            elif isinstance(v, dict) and "ms" in v:
                bits.append(f"{k} {v['ms']:.1f} ms")
        return f"{name}: " + "; ".join(bits[:3])
    order = ("passed", "failed", "error", "skipped", "xfailed", "xpassed", "collected",
             "deselected")
    return ", ".join(f"{nums[k]} {k}" for k in order if k in nums) or "no counts"


def print_table(records: list[dict[str, Any]], stream: Any = sys.stdout) -> None:
    """The readable table of step records.

    Args:
      records: step records.
      stream: where to print.
    """
    header = f"{'step':28} {'status':11} {'rc':>4} {'wall s':>7}  key numbers"
    print(header, file=stream)
    print("-" * 100, file=stream)
    for r in records:
        rc = "-" if r.get("rc") is None else str(r["rc"])
        wall = "-" if r.get("wall_s") is None else f"{r['wall_s']:.0f}"
        print(f"{r['name']:28} {r.get('status', '?'):11} {rc:>4} {wall:>7}  {summary_line(r)}",
              file=stream)


def simulate_budget(steps: list[Step], budget_s: float) -> list[str]:
    """The steps the budget would skip if every step took its estimate.

    Args:
      steps: the selected steps.
      budget_s: the budget (0: none).

    Returns:
      Their names.
    """
    left, skipped = budget_s, []
    for s in steps:
        if budget_s and left < s.est_s and s.kind != "probe":
            skipped.append(s.name)
            continue
        left -= s.est_s
    return skipped


def rerun_command(names: Sequence[str], args: argparse.Namespace) -> str:
    """The command that runs ``names`` and merges them into the same report.

    Args:
      names: step names.
      args: this check's options.

    Returns:
      A shell command line.
    """
    cmd = ["python", "benchmarks/accelerator_check.py", "--steps", *names, "--merge"]
    if args.tiny:
        cmd.append("--tiny")
    if args.out:
        cmd += ["--out", args.out]
    return shlex.join(cmd)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line.

    Args:
      argv: the arguments (``None``: ``sys.argv[1:]``).

    Returns:
      The options.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="put the JSON, the benchmarks' JSON, run dirs and logs here "
                        "(default: JSON in benchmarks/results, runs and logs in runs/)")
    p.add_argument("--tiny", action="store_true",
                   help="toy sizes on a CPU (a few minutes): exercises every step")
    p.add_argument("--dry", action="store_true",
                   help="print the plan and its commands (last line: JSON); run nothing")
    p.add_argument("--steps", nargs="+", default=None, metavar="NAME",
                   help="run only these steps (names or globs, e.g. 'train-*'); the "
                        "device probe always runs")
    p.add_argument("--budget", type=float, default=None, metavar="S",
                   help=f"seconds for the whole check: steps whose estimate exceeds what "
                        f"is left are skipped, timeouts end at the budget (default "
                        f"{GPU_BUDGET_S}; with --tiny 0 = none)")
    p.add_argument("--merge", action="store_true",
                   help="keep the records of steps not run now from an existing JSON")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep the runs' checkpoints/ (deleted by default)")
    args = p.parse_args(argv)
    if args.budget is None:
        args.budget = 0.0 if args.tiny else float(GPU_BUDGET_S)
    if args.budget < 0:
        p.error(f"--budget must be >= 0, got {args.budget}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the check (or prints its plan with ``--dry``).

    Args:
      argv: command-line arguments (``None``: ``sys.argv[1:]``).

    Returns:
      The exit status: 0 all ran and succeeded, 1 a step failed or timed out, 3 the
      budget skipped a step (none failed), 128 + N at signal N.
    """
    args = parse_args(argv)
    where = layout(args.out, args.tiny)
    try:
        steps = select(build_steps(args.tiny, where), args.steps)
    except ValueError as e:
        print(f"accelerator_check: error: {e}", file=sys.stderr)
        return 2
    mode = "tiny" if args.tiny else "gpu"

    if args.dry:
        skipped = simulate_budget(steps, args.budget)
        print(f"accelerator check ({mode}), {len(steps)} steps; report {where.report}")
        for s in steps:
            print(f"\n[{s.name}] est {s.est_s:.0f} s, timeout {s.timeout_s:.0f} s"
                  + (" -- the budget would skip it" if s.name in skipped else ""))
            extra = "".join(f"{k}={shlex.quote(v)} " for k, v in s.env.items())
            print(f"  {extra}{shlex.join(s.command)}")
        total = sum(s.est_s for s in steps)
        print(f"\nestimated total {total:.0f} s; budget "
              + (f"{args.budget:.0f} s" if args.budget else "none")
              + (f"; would skip: {', '.join(skipped)}" if skipped else ""))
        print(json.dumps({"mode": mode, "report": str(where.report), "budget_s": args.budget,
                          "estimated_total_s": total, "would_skip": skipped,
                          "steps": [s.plan() for s in steps]}))
        return 0

    previous: dict[str, dict] = {}
    if args.merge and where.report.is_file():
        previous = {r["name"]: r for r in json.loads(where.report.read_text())["steps"]}
    report: dict[str, Any] = {
        "check": STEM, "mode": mode, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": platform.node(), "cpus": os.cpu_count(), "python": sys.executable,
        "argv": list(sys.argv[1:] if argv is None else argv), "budget_s": args.budget,
        "device": None, "warnings": [], "steps": []}
    t_start = time.perf_counter()
    records: dict[str, dict] = {}
    platform_name: str | None = None

    def save() -> None:
        names = [s.name for s in build_steps(args.tiny, where)]
        merged = {**previous, **records}
        report["steps"] = [merged[n] for n in names if n in merged]
        report["total_wall_s"] = round(time.perf_counter() - t_start, 1)
        write_report(report, where.report)

    old = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        for step in steps:
            left = args.budget - (time.perf_counter() - t_start) if args.budget else None
            if left is not None and step.kind != "probe" and left < step.est_s:
                records[step.name] = {**step.plan(), "status": "skipped", "rc": None,
                                      "wall_s": None, "reason": f"budget: {left:.0f} s left, "
                                      f"estimate {step.est_s:.0f} s"}
                print(f"[{step.name}] skipped: {records[step.name]['reason']}", flush=True)
                save()
                continue
            timeout = step.timeout_s if left is None else max(1.0, min(step.timeout_s, left))
            print(f"[{step.name}] running (timeout {timeout:.0f} s): "
                  f"{shlex.join(step.command)}", flush=True)
            records[step.name] = {**step.plan(), "status": "running"}
            save()
            rec = run_step(step, where, platform_name, timeout, args.keep_checkpoints)
            records[step.name] = rec
            print(f"[{step.name}] {rec['status']} in {rec['wall_s']:.0f} s: "
                  f"{summary_line(rec)}", flush=True)
            if step.kind == "probe" and rec["status"] == "ok":
                report["device"] = rec["numbers"]
                platform_name = rec["numbers"]["platform"]
                if platform_name == "cpu" and not args.tiny:
                    msg = ("the device is a CPU: the GPU settings will be slow and most "
                           "steps will time out (use --tiny for a CPU smoke run)")
                    report["warnings"].append(msg)
                    print(f"warning: {msg}", file=sys.stderr, flush=True)
            save()
    except Interrupted as e:
        status = 128 + e.signum
        for r in records.values():
            if r.get("status") == "running":
                r["status"] = "interrupted"
        report["warnings"].append(f"interrupted by {e}")
        save()
    finally:
        for s, h in old.items():
            signal.signal(s, h)

    ran = [records[s.name] for s in steps if s.name in records]
    print()
    print_table(ran)
    print(f"\nreport: {where.report} ({report['total_wall_s']:.0f} s)")
    failed = [r["name"] for r in ran if r["status"] in ("failed", "timeout", "interrupted")]
    skipped = [r["name"] for r in ran if r["status"] == "skipped"]
    if skipped:
        print(f"not run (budget): {' '.join(skipped)}\n  run them with: "
              f"{rerun_command(skipped, args)}")
    if failed:
        print(f"FAILED: {' '.join(failed)} (logs under {where.work / 'logs'})")
    if status:
        return status
    return 1 if failed else (3 if skipped else 0)


if __name__ == "__main__":
    sys.exit(main())
