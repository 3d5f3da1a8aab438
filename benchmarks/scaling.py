"""Throughput against device count: seeds, EPG's population and MetaGenRL's agents split
over 1, 2, 4 devices by the driver's own sharded chunk program (issue 10).

Workloads (each measurement in a fresh process; the baseline is the 1-device row of the
same workload in the same run):

* ``ppo-seeds``: PPO on ``cartpole``, 8 seeds (4 envs x 128 steps per update), the seeds
  split over the devices (no communication);
* ``epg-pop``: one EPG seed, a population of 8 on random ``pendulum`` (16 updates of 32
  steps per member), the members split over the devices (all-gather of the fitness values,
  all-reduce of the ES gradient);
* ``metagenrl-agents``: one MetaGenRL seed, 8 agents on ``pendulum`` (64x64 nets), the
  agents split over the devices (all-reduce of the objective gradient every step).

``--processes 1 2`` adds the same splits over two processes on this host
(``jax.distributed``, gloo collectives on CPU; ``devices`` is then the total, half per
process): the cost of going multi-host, against the 1-process row of the same devices.

On a CPU the devices are forced host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``) sharing the same cores: the
figures measure the overhead of splitting (collectives, per-device programs), not a
speed-up, and the output says so. On several GPUs they measure scaling. Reported:
seconds per update, env-steps/s, updates/s, compile time, peak memory, and ``x 1
device`` (the 1-device seconds per update over this row's: > 1 is faster).

    python benchmarks/scaling.py --pin-cpu 0
    python benchmarks/scaling.py --devices 1 2 4 8 --workloads epg-pop
    python benchmarks/scaling.py --pin-cpu 0 --processes 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks._harness import (  # noqa: E402
    RESULTS,
    measure_in_subprocess,
    process_facts,
    rotated,
    write_results,
)

#: workload -> (algo, env, seeds, overrides, env steps per update and seed multiplier)
WORKLOADS = {
    "ppo-seeds": ("ppo", "cartpole", 8, {"num_envs": 4, "num_steps": 128,
                                         "total_steps": 10_000_000}),
    "epg-pop": ("epg", "pendulum", 1, {"pop_size": 8, "steps_per_update": 32,
                                       "inner_updates": 16, "buffer_size": 64,
                                       "eval_episodes": 1, "num_epochs": 100_000}),
    "metagenrl-agents": ("metagenrl", "pendulum", 1, {"num_agents": 8, "learning_starts": 0,
                                                      "batch_size": 20, "window": 20,
                                                      "buffer_size": 100_000,
                                                      "hidden": [64, 64],
                                                      "total_steps": 10_000_000}),
}


def worker(workload: str, devices: int, max_devices: int, chunk: int, min_time: float,
           procs: int = 1, rank: int = 0, port: int = 0) -> dict:
    """One measurement, in this (fresh) process: ``chunk`` updates per program call. With
    ``procs > 1`` this is process ``rank`` of a run over ``procs`` processes (coordinator
    on ``127.0.0.1:port``), ``devices // procs`` of the devices its own."""
    flags = os.environ.get("XLA_FLAGS", "")
    local = max_devices // procs
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={local}"
    # XLA:CPU sizes its thread pool by the cores it may use; collectives block a thread
    # per device, so fewer threads than forced devices deadlock (tests/test_sharding.py).
    os.environ.setdefault("NPROC", str(max(8, 2 * local)))
    from metareward import distributed

    if procs > 1:  # before anything starts JAX
        distributed.initialize(distributed.DistributedConfig(
            f"127.0.0.1:{port}", procs, rank, timeout=120), stream=sys.stderr)
    import jax
    import numpy as np

    from metareward.runtime import driver

    algo, env, seeds, over = WORKLOADS[workload]
    plan = driver.prepare(algo, env, overrides=over,
                          options=driver.RunOptions(seeds=seeds, devices=devices // procs))
    progs = driver.programs(plan, chunk)
    mesh = progs.mesh
    t0 = time.perf_counter()
    state = progs.init(progs.keys)
    fn = progs.chunk.lower(progs.spec, np.int32(chunk)).compile()
    state, metrics, _ = fn(state, np.int32(chunk))  # warm-up (first updates)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0
    steps = distributed.gather(metrics["env_steps"])
    per_update = float(steps[-1, 0] - steps[-2, 0]) * seeds
    if algo == "metagenrl":
        per_update *= over["num_agents"]  # its env_steps count one agent's
    # Every process must call the program equally often (its collectives): the number of
    # calls is fixed from one timed call, by process 0.
    t0 = time.perf_counter()
    state, metrics, _ = fn(state, np.int32(chunk))
    jax.block_until_ready(metrics)
    calls = distributed.agree(max(1, round(min_time / (time.perf_counter() - t0))))
    t0 = time.perf_counter()
    for _ in range(calls):
        state, metrics, _ = fn(state, np.int32(chunk))
    jax.block_until_ready(metrics)
    dt = time.perf_counter() - t0
    return {"seconds_per_update": dt / (calls * chunk), "env_steps_per_update": per_update,
            "mesh": None if mesh is None else list(mesh.devices.shape),
            "platform": jax.devices()[0].platform, **process_facts(compile_s)}


def measure_processes(args: list[str], procs: int, cpus: list[int] | None) -> dict:
    """``procs`` worker processes of one measurement (:func:`worker`); process 0's JSON
    (its peak memory is one process's)."""
    if procs == 1:
        return measure_in_subprocess(__file__, [*args, "1", "0", "0"], cpus=cpus)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pin = None if cpus is None else (lambda: os.sched_setaffinity(0, set(cpus)))
    ps = [subprocess.Popen([sys.executable, __file__, "--worker", *args, str(procs), str(r),
                            str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, preexec_fn=pin) for r in range(procs)]
    outs = [p.communicate(timeout=900) for p in ps]
    for p, (_, err) in zip(ps, outs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} x {procs} processes failed:\n{err[-3000:]}")
    return json.loads(outs[0][0].strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--chunk", type=int, default=8, help="updates per program call")
    p.add_argument("--repeat", type=int, default=1, help="interleaved rounds (median)")
    p.add_argument("--min-time", type=float, default=3.0, help="seconds timed per measurement")
    p.add_argument("--pin-cpu", type=int, nargs="*", default=None,
                   help="pin every measurement to these CPU cores (e.g. 0)")
    p.add_argument("--processes", type=int, nargs="+", default=[1],
                   help="also split over this many processes on this host (e.g. 1 2); "
                        "each must divide the device counts it is used with")
    p.add_argument("--out", type=Path, default=None, help="JSON path")
    p.add_argument("--worker", nargs=8, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        w, d, m, c, t, n, r, port = a.worker
        res = worker(w, int(d), int(m), int(c), float(t), int(n), int(r), int(port))
        print(json.dumps(res))
        return
    if a.devices[0] != 1:
        p.error("--devices must start with 1 (the baseline)")
    if a.processes[0] != 1:
        p.error("--processes must start with 1")
    # A cell: (workload, total devices, processes); a process count only where it
    # divides the devices (and the max, which each process forces in its own XLA).
    max_devices = max(a.devices)
    cells = [(w, d, n) for w in a.workloads for d in a.devices for n in a.processes
             if d % n == 0 and max_devices % n == 0 and (n == 1 or d > 1)]
    runs: dict[tuple[str, int, int], list[dict]] = {c: [] for c in cells}
    for r in range(a.repeat):
        for w, d, n in rotated(cells, r):
            runs[(w, d, n)].append(measure_processes(
                [w, str(d), str(max_devices), str(a.chunk), str(a.min_time)], n,
                a.pin_cpu))
    rows = []
    for w, d, n in cells:
        base = statistics.median(x["seconds_per_update"] for x in runs[(w, 1, 1)])
        ms = runs[(w, d, n)]
        spu = statistics.median(x["seconds_per_update"] for x in ms)
        rows.append({
            "workload": w, "devices": d, "processes": n, "mesh": ms[0]["mesh"],
            "seconds_per_update": spu,
            "env_steps_per_s": ms[0]["env_steps_per_update"] / spu,
            "updates_per_s": 1.0 / spu,
            "x_1_device": base / spu,
            "compile_s": statistics.median(x["compile_s"] for x in ms),
            "peak_rss_mb": max(x["peak_rss_mb"] for x in ms),
        })
    platform = runs[cells[0]][0]["platform"]
    note = ("CPU: forced host devices share the same cores, so these figures measure the "
            "overhead of splitting, not a speed-up" if platform == "cpu" else
            f"{platform}: real devices")
    print(f"\n{note}; device {runs[cells[0]][0]['device']}, jax {runs[cells[0]][0]['jax']}\n")
    print("| workload | devices | processes | mesh (seeds x members) | s/update | "
          "env-steps/s | updates/s | x 1 device | compile s | peak MB |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        mesh = "-" if r["mesh"] is None else " x ".join(map(str, r["mesh"]))
        print(f"| {r['workload']} | {r['devices']} | {r['processes']} | {mesh} | "
              f"{r['seconds_per_update']:.4f} | "
              f"{r['env_steps_per_s']:,.0f} | {r['updates_per_s']:.1f} | "
              f"{r['x_1_device']:.2f}x | {r['compile_s']:.1f} | {r['peak_rss_mb']:.0f} |")
    out = a.out or RESULTS / f"scaling-{platform}-{time.strftime('%Y-%m-%d')}.json"
    write_results(out, "scaling", rows, note=note, chunk=a.chunk, repeat=a.repeat,
                  pin_cpu=a.pin_cpu, device=runs[cells[0]][0]["device"],
                  jax=runs[cells[0]][0]["jax"])
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
