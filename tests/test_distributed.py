"""Several processes on localhost with ``jax.distributed`` (issue 10): two CPU processes
(gloo collectives) train one sharded run to the single-process result, stop together on a
signal to one of them and resume to the same end; a process that cannot reach the
coordinator fails with a clear error within its timeout; malformed settings fail before
anything starts.

Each process of a run is ``python -m metareward ... --coordinator 127.0.0.1:PORT
--num-processes 2 --process-id I`` in a subprocess (``jax.distributed`` can be initialised
once per process, and only before JAX starts)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from fast_compile import FAST_COMPILE

from metareward import distributed
from metareward.cli import main
from metareward.errors import ConfigError

PPO = ["train", "ppo", "--env", "cartpole", "--seeds", "2", "--total-steps", "40000",
       "--checkpoint-every", "3", "--eval-episodes", "4", "--no-progress"]
EPG = ["meta-train", "epg", "--env", "pendulum", "--no-progress", "--eval-episodes", "1",
       "--chunk-updates", "1", "--set", "num_epochs=3", "--set", "anneal_epochs=0",
       *[x for kv in ("pop_size=4", "steps_per_update=16", "inner_updates=6",
                      "buffer_size=64", "eval_episodes=2") for x in ("--set", kv)]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    # One CPU device per process; equal programs on both sides of every comparison, so
    # XLA:CPU's cheapest compilation (tests/fast_compile.py) whatever the suite.
    env["XLA_FLAGS"] = FAST_COMPILE
    for var in distributed.ENV_VARS.values():
        env.pop(var, None)
    return env


def _spawn(args: list[str], port: int, pid: int, n: int = 2, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "metareward", *args, "--coordinator", f"127.0.0.1:{port}",
           "--num-processes", str(n), "--process-id", str(pid)]
    return subprocess.Popen(cmd, env=_env(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, **kw)


def _finish(procs: list[subprocess.Popen], timeout: float) -> list[tuple[int, str]]:
    """Waits for every process; kills all of them if one runs past ``timeout``."""
    deadline = time.monotonic() + timeout
    out = []
    try:
        for p in procs:
            text, _ = p.communicate(timeout=max(deadline - time.monotonic(), 1))
            out.append((p.returncode, text))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return out


def _two_processes(args: list[str], timeout: float = 400) -> list[tuple[int, str]]:
    port = _free_port()
    return _finish([_spawn(args, port, i) for i in range(2)], timeout)


def _one_process(args: list[str], devices: int = 2, timeout: float = 400) -> None:
    """The same run in one process on ``devices`` forced CPU devices: the same mesh and
    per-device programs as the two processes, so the same floats. (Against one device
    the two-process run agrees only to ~1e-6 at first, a different batching of the same
    sums, and RL amplifies that over a run.)"""
    env = {**_env(), "NPROC": str(2 * devices),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"}
    proc = subprocess.run([sys.executable, "-m", "metareward", *args, "--devices",
                           str(devices)], env=env, text=True, capture_output=True,
                          timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert f"sharded over {devices} cpu devices" in proc.stdout


def _records(run: Path) -> list[dict]:
    drop = ("wall_time", "steps_per_sec")
    return [{k: v for k, v in json.loads(line).items() if k not in drop}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_records(a: list[dict], b: list[dict], rtol: float) -> None:
    assert len(a) == len(b) and len(a) > 0
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], float):
                np.testing.assert_allclose(y[k], x[k], rtol=rtol, atol=1e-7, err_msg=k)
            else:
                assert x[k] == y[k], (k, x, y)


def _final_params(run: Path) -> list[np.ndarray]:
    from metareward.runtime import driver

    _, _, state, _ = driver.load(run)
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


@pytest.fixture(scope="session")  # once, even if xdist interleaves other modules
def ppo_reference(tmp_path_factory) -> Path:
    """The single-process run the two-process runs must reproduce."""
    out = tmp_path_factory.mktemp("dist") / "single"
    _one_process([*PPO, "--out", str(out)])
    return out


@pytest.mark.xdist_group("ppo_reference")  # one worker makes the reference run
def test_two_processes_train_to_the_single_process_result(ppo_reference, tmp_path):
    run = tmp_path / "two"
    (rc0, out0), (rc1, out1) = _two_processes([*PPO, "--out", str(run)])
    assert rc0 == 0, out0[-3000:]
    assert rc1 == 0, out1[-3000:]
    # The mesh spans both processes, one seed each; process 1 logs its own seed.
    assert "sharded over 2 cpu devices in 2 processes: 2 seed shard(s)" in out0
    assert "this process holds seed(s) [0]" in out0
    assert "this process holds seed(s) [1]" in out1
    assert "(written by process 0)" in out1
    assert "update 78/78" in out1 and "over seed(s) [1]" in out1
    # Process 0 wrote the run directory: config, metrics of both seeds, checkpoints, eval.
    assert json.loads((run / "config.json").read_text())["processes"] == 2
    _assert_same_records(_records(ppo_reference), _records(run), rtol=1e-6)
    ref_eval = json.loads((ppo_reference / "eval.json").read_text())["per_seed"]
    np.testing.assert_allclose(json.loads((run / "eval.json").read_text())["per_seed"],
                               ref_eval, rtol=1e-6)
    for a, b in zip(_final_params(ppo_reference), _final_params(run), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


@pytest.mark.xdist_group("ppo_reference")
def test_a_signal_to_one_process_stops_both_and_the_run_resumes(ppo_reference, tmp_path):
    run = tmp_path / "two"
    port = _free_port()
    p0 = _spawn([*PPO, "--out", str(run)], port, 0)
    p1 = _spawn([*PPO, "--out", str(run)], port, 1)
    try:
        seen = []
        for line in p1.stdout:  # SIGTERM to process 1 once training is under way
            seen.append(line)
            if "update 3/78" in line:
                p1.send_signal(signal.SIGTERM)
                break
        (rc0, out0), (rc1, out1) = _finish([p0, p1], 300)
    finally:
        for p in (p0, p1):
            if p.poll() is None:
                p.kill()
    out1 = "".join(seen) + out1
    # Both stop after the same chunk with a checkpoint (exit 128 + SIGTERM).
    assert rc0 == rc1 == 128 + signal.SIGTERM, (out0[-2000:], out1[-2000:])
    stopped = json.loads((run / "summary.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["update"] < 78
    port = _free_port()
    res = _finish([_spawn(["resume", str(run), "--no-progress"], port, i) for i in range(2)],
                  300)
    for rc, out in res:
        assert rc == 0, out[-3000:]
    assert f"resuming from the checkpoint of update {stopped['update']}" in res[1][1]
    _assert_same_records(_records(ppo_reference), _records(run), rtol=1e-6)
    for a, b in zip(_final_params(ppo_reference), _final_params(run), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_an_epg_population_split_over_two_processes_matches_one(tmp_path):
    """The ES gradient's collectives (all-gather of fitness, all-reduce of the update)
    cross the processes here: pop 4 is split 2 + 2 over them."""
    one = tmp_path / "one"
    _one_process([*EPG, "--out", str(one)], timeout=600)
    two = tmp_path / "two"
    (rc0, out0), (rc1, out1) = _two_processes([*EPG, "--out", str(two)], timeout=600)
    assert rc0 == 0, out0[-3000:]
    assert rc1 == 0, out1[-3000:]
    assert "1 seed shard(s) x 2 population shard(s)" in out0
    _assert_same_records(_records(one), _records(two), rtol=1e-6)


def test_an_unreachable_coordinator_fails_clearly_within_the_timeout():
    port = _free_port()  # nobody listens there
    t0 = time.monotonic()
    env = {**_env(), "METAREWARD_COORDINATOR": f"127.0.0.1:{port}",
           "METAREWARD_NUM_PROCESSES": "2", "METAREWARD_PROCESS_ID": "1",
           "METAREWARD_INIT_TIMEOUT": "3"}  # through the environment this time
    proc = subprocess.run([sys.executable, "-m", "metareward", *PPO], env=env, text=True,
                          capture_output=True, timeout=120)
    took = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"could not reach the coordinator 127.0.0.1:{port} within 3 s" in proc.stderr
    assert "start process 0" in proc.stderr
    assert took < 60  # 3 s of waiting plus the interpreter's start


def test_wait_for_coordinator_returns_once_the_port_listens():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert distributed.wait_for_coordinator("127.0.0.1", s.getsockname()[1], 5) < 5
    with pytest.raises(distributed.DistributedError, match=r"within 0\.5 s"):
        distributed.wait_for_coordinator("127.0.0.1", _free_port(), 0.5)


def test_process_0_refuses_a_port_in_use():
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        with pytest.raises(distributed.DistributedError, match="cannot listen on port"):
            distributed._check_bindable(s.getsockname()[1])


@pytest.mark.parametrize("kwargs, match", [
    ({"coordinator": "localhost"}, "HOST:PORT"),
    ({"coordinator": "h:99999", "num_processes": 2, "process_id": 0}, "1..65535"),
    ({"coordinator": "h:1234"}, "needs num_processes and process_id"),
    ({"coordinator": "h:1234", "num_processes": 2, "process_id": 2}, r"in 0\.\.1"),
    ({"num_processes": 2, "process_id": 1}, "need a coordinator"),
    ({"coordinator": "h:1234", "num_processes": 0, "process_id": 0}, "num_processes"),
    ({"coordinator": "auto", "timeout": 0}, "timeout"),
])
def test_bad_distributed_settings_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        distributed.DistributedConfig(**kwargs)


def test_settings_come_from_flags_over_environment_variables():
    env = {"METAREWARD_COORDINATOR": "10.0.0.1:8476", "METAREWARD_NUM_PROCESSES": "4",
           "METAREWARD_PROCESS_ID": "3"}
    c = distributed.DistributedConfig.from_env(env, process_id=1)
    assert (c.coordinator, c.num_processes, c.process_id, c.timeout) == (
        "10.0.0.1:8476", 4, 1, distributed.DEFAULT_TIMEOUT)
    assert not distributed.DistributedConfig.from_env({}).enabled
    with pytest.raises(ConfigError, match="METAREWARD_PROCESS_ID must be an integer"):
        distributed.DistributedConfig.from_env({**env, "METAREWARD_PROCESS_ID": "one"})


def test_cli_rejects_bad_distributed_flags_before_starting(capsys):
    assert main([*PPO, "--coordinator", "10.0.0.1:8476", "--process-id", "0"]) == 2
    assert "needs num_processes and process_id" in capsys.readouterr().err


def test_a_split_over_processes_that_does_not_divide_fails_before_compiling(monkeypatch):
    """The mesh takes ``devices`` per process from every process; the total must split
    over the seeds and population like one host's devices (JAX's process count is faked:
    the arithmetic and the message are what is checked)."""
    from metareward.runtime import sharding

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"devices=1 per process x 2 processes = 2 cannot "
                                          r"be split over seeds=1.*--seeds a multiple of 2"):
        sharding.make_mesh(1, seeds=1)
    with pytest.raises(ConfigError, match=r"remaining factor 2 must divide the population "
                                          r"\(3\)"):
        sharding.make_mesh(1, seeds=1, members=(3,))
