"""Where one PPO update's time goes: ours against rejax's, stage by stage, at the same shapes.

Each stage is jitted on its own and timed over many calls (median microseconds per call,
after a warm-up call), with the number of instructions of its optimised HLO:

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


def ours_profile(setting_name: str, calls: int) -> dict[str, Any]:
    """Times the stages of one update of our PPO at ``setting_name``'s configuration.

    Args:
        setting_name: a :data:`benchmarks.peers.SETTINGS` name (its 1-seed shapes).
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
    cfg = ppo.Config(**ours_config(setting.ppo, setting.steps_per_seed))
    trainer = ppo.make_train(cfg, envs.make(setting.env))
    parts = trainer.update.args[0]  # the learner's static parts (functools.partial)
    state = trainer.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)

    def run_rollout(state, key):
        act = sampler(lambda obs: parts.policy.apply(
            state.params["policy"], parts.prep(state.obs_stats, obs)))
        return rollout(parts.venv, state.env_state, act, key, cfg.num_steps)

    _, traj = jax.jit(run_rollout)(state, key)
    values = parts.value.apply(state.params["value"], traj.obs)
    next_values = parts.value.apply(state.params["value"], traj.next_obs)
    _, _, data, _ = jax.jit(lambda s, k: onpolicy.collect(parts, s, k))(state, key)

    def epochs(state, data, key):
        return onpolicy.optimise(parts, state.params,
                                 (state.opt_state["agent"], state.nonfinite), data, key)

    return {
        "rollout": time_call(run_rollout, state, key, calls=calls),
        "gae": time_call(lambda r, v, nv, d, t: gae(r, v, nv, d, t, cfg.gamma, cfg.gae_lambda),
                         traj.reward, values, next_values, traj.done, traj.truncation,
                         calls=calls),
        "collect": time_call(lambda s, k: onpolicy.collect(parts, s, k), state, key,
                             calls=calls),
        "metrics": time_call(episode_metrics, traj, calls=calls),
        "epochs": time_call(epochs, state, data, key, calls=calls),
        "update": time_call(trainer.update, state, calls=calls),
    }


def main(argv: list[str] | None = None) -> dict:
    """Runs the profile (or, with ``--worker``, our side of one round).

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The results written to ``--json``.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", default="cartpole-purejaxrl-1",
                   choices=[n for n, s in SETTINGS.items() if s.seeds == 1])
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
                            "hlo_ops": ms[0][stage]["hlo_ops"]}
        rows.append(row)
    print(f"{'stage':8} {'ours us':>9} {'ops':>5} {'rejax us':>9} {'ops':>5}")
    for row in rows:
        o, x = row.get("ours"), row.get("rejax")
        print(f"{row['stage']:8} {o['us'] if o else float('nan'):9.0f} "
              f"{o['hlo_ops'] if o else '':>5} {x['us'] if x else float('nan'):9.0f} "
              f"{x['hlo_ops'] if x else '':>5}")
    command = " ".join(["python", "benchmarks/update_profile.py", *(argv or sys.argv[1:])])
    path = _harness.write_results(args.json, "update_profile", rows, command=command,
                                  setting=args.setting, calls=args.calls, rounds=args.rounds)
    print(f"wrote {path}")
    return {"rows": rows}


if __name__ == "__main__":
    main()
