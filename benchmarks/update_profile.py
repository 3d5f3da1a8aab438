"""Where one PPO update's time goes: ours against rejax's, stage by stage, at the same shapes.

Each stage is jitted on its own, vmapped over the setting's seeds (a 16- or 64-seed
setting times one update of all its seeds, as ``peers.py`` trains them), and timed over
many calls (median microseconds per call, after a warm-up call), with the number of
instructions of its optimised HLO and XLA's count of its floating-point operations (a
loop's body counted once):

* ours (:mod:`metareward.algos.onpolicy`): ``rollout`` (the scan of env steps under the
  policy), ``gae`` (on that rollout's rewards and values), ``collect`` (rollout, value
  passes, GAE and the flat batch: what an update runs before its minibatch steps),
  ``metrics`` (episode statistics), ``epochs`` (the epochs of minibatch steps:
  shuffles, losses, gradients, clipping, Adam) and ``update`` (all of it, one call);
* rejax 0.1.3, in its own env (``benchmarks/peers.py`` builds it): ``rollout``
  (``collect_trajectories``), ``gae`` (``calculate_gae``), ``epochs`` and ``update``
  (``train_iteration``).

Both sides run in fresh processes, one after the other, ``--rounds`` times (medians).
PureJaxRL's ``make_train`` is one closure, so it has no stages to time apart; its whole
update is in ``peers.py``'s table.

    python benchmarks/update_profile.py                      # PureJaxRL's CartPole shapes
    python benchmarks/update_profile.py --setting pendulum-ours-64 --calls 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _harness
from benchmarks._timing import time_call
from benchmarks.peer import clean_env
from benchmarks.peers import (
    GYMNAX_IDS,
    GYMNAX_PEER_SCRIPT,
    SETTINGS,
    gymnax_peer_python,
    ours_config,
    rejax_config,
)


def seeds_vmap(fn: Any, seeds: int) -> Any:
    """``fn`` vmapped over a leading seed axis of every argument, or ``fn`` at 1 seed.

    Args:
        fn: the function.
        seeds: the number of seeds.

    Returns:
        The function the profile times.
    """
    import jax

    return jax.vmap(fn) if seeds > 1 else fn


def ours_profile(setting_name: str, calls: int) -> dict[str, Any]:
    """Times the stages of one update of our PPO at ``setting_name``'s configuration, all
    its seeds vmapped in each stage (as :func:`benchmarks.peers.ours_worker` runs them).

    Args:
        setting_name: a :data:`benchmarks.peers.SETTINGS` name.
        calls: timed calls per stage.

    Returns:
        Stage name -> ``{"us", "hlo_ops"}``.
    """
    import jax

    from metareward import envs
    from metareward.algos import onpolicy, ppo
    from metareward.rl.gae import gae
    from metareward.rl.rollout import episode_metrics, rollout, sampler

    setting = SETTINGS[setting_name]
    env = envs.make(setting.env)
    cfg = ppo.Config(**ours_config(setting.ppo, setting.steps_per_seed, env.spec.discrete))
    trainer = ppo.make_train(cfg, env)
    parts = trainer.update.args[0]  # the learner's static parts (functools.partial)
    batch = lambda fn: seeds_vmap(fn, setting.seeds)
    keys = jax.random.split(jax.random.PRNGKey(0), setting.seeds)
    if setting.seeds == 1:
        keys = keys[0]
    state = jax.jit(batch(trainer.init))(keys)

    def run_rollout(state, key):
        act = sampler(lambda obs: parts.policy.apply(
            state.params["policy"], parts.prep(state.obs_stats, obs)))
        return rollout(parts.venv, state.env_state, act, key, cfg.num_steps)

    def collect(state, key):
        return onpolicy.collect(parts, state, key)

    def values_of(state, traj):
        v = lambda o: parts.value.apply(state.params["value"], o)
        return v(traj.obs), v(traj.next_obs)

    def epochs(state, data, key):
        return onpolicy.optimise(parts, state.params,
                                 (state.opt_state["agent"], state.nonfinite), data, key)

    _, traj = jax.jit(batch(run_rollout))(state, keys)
    values, next_values = jax.jit(batch(values_of))(state, traj)
    _, _, data, _ = jax.jit(batch(collect))(state, keys)
    return {
        "rollout": time_call(batch(run_rollout), state, keys, calls=calls),
        "gae": time_call(batch(lambda r, v, nv, d, t: gae(r, v, nv, d, t, cfg.gamma,
                                                           cfg.gae_lambda)),
                         traj.reward, values, next_values, traj.done, traj.truncation,
                         calls=calls),
        "collect": time_call(batch(collect), state, keys, calls=calls),
        "metrics": time_call(batch(episode_metrics), traj, calls=calls),
        "epochs": time_call(batch(epochs), state, data, keys, calls=calls),
        "update": time_call(batch(trainer.update), state, calls=calls),
    }


def main(argv: list[str] | None = None) -> dict:
    """Runs the profile (or, with ``--worker``, our side of one round).

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The results written to ``--json``.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # the settings rejax runs (it has no value-net width of its own: not brax's defaults)
    p.add_argument("--setting", default="cartpole-purejaxrl-1",
                   choices=[n for n, s in SETTINGS.items() if "rejax" in s.learners])
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", default=str(_harness.RESULTS / "update_profile.json"))
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(ours_profile(args.setting, args.calls)))
        return {}
    setting = SETTINGS[args.setting]
    rejax_cmd = [str(gymnax_peer_python()), str(GYMNAX_PEER_SCRIPT), "--learner", "rejax",
                 "--gymnax-id", GYMNAX_IDS[setting.env], "--profile", str(args.calls),
                 "--seeds", str(setting.seeds),
                 "--config", json.dumps(rejax_config(setting.ppo, setting.steps_per_seed))]
    ours_cmd = [sys.executable, __file__, "--worker", "--setting", args.setting,
                "--calls", str(args.calls)]
    runs: dict[str, list[dict]] = {"ours": [], "rejax": []}
    for r in range(args.rounds):
        for who in _harness.rotated(["ours", "rejax"], r):
            cmd, env = (ours_cmd, None) if who == "ours" else (rejax_cmd, clean_env())
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"{who} failed:\n{out.stderr[-3000:]}")
            runs[who].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = []
    for stage in ("rollout", "gae", "collect", "metrics", "epochs", "update"):
        row: dict[str, Any] = {"stage": stage}
        for who, ms in runs.items():
            if stage in ms[0]:
                row[who] = {"us": statistics.median(m[stage]["us"] for m in ms),
                            "us_all": [m[stage]["us"] for m in ms],
                            "hlo_ops": ms[0][stage]["hlo_ops"],
                            "mflops": ms[0][stage].get("flops", float("nan")) / 1e6}
        rows.append(row)
    print(f"{'stage':8} {'ours us':>9} {'ops':>5} {'MFLOP':>7} {'rejax us':>9} {'ops':>5} "
          f"{'MFLOP':>7}")
    for row in rows:
        cells = []
        for who in ("ours", "rejax"):
            x = row.get(who)
            cells.append(f"{x['us']:9.0f} {x['hlo_ops']:5d} {x['mflops']:7.1f}" if x
                         else f"{'-':>9} {'':5} {'':7}")
        print(f"{row['stage']:8} {' '.join(cells)}")
    command = " ".join(["python", "benchmarks/update_profile.py", *(argv or sys.argv[1:])])
    path = _harness.write_results(args.json, "update_profile", rows, command=command,
                                  setting=args.setting, calls=args.calls, rounds=args.rounds)
    print(f"wrote {path}")
    return {"rows": rows}


if __name__ == "__main__":
    main()
