"""LIRPG vs PPO on delayed rewards: Figure 4 of Zheng et al. 2018 (``lirpg_slides.md``,
"Experiments on Delayed Mujoco"). The extrinsic reward is summed and paid every
``delay`` steps (or at the episode's end); curves show the true, undelayed return.

Learners (``--learners``), each (env, delay, learner) one vmapped, jitted program over
seeds:

* ``ppo``: PPO on the delayed reward (the paper's deep-blue baseline);
* ``ppo-bonus``: PPO on the delayed reward plus a constant live bonus of
  ``LIVE_BONUS`` per step (``ppo.Config.live_bonus``; the paper's light-blue "PPO-bonus"
  baseline). The slides do not give the paper's bonus value; 1.0 is cartpole's own
  per-step reward (not tuned). On pendulum (fixed-length episodes) a constant bonus is
  a reward shift that changes nothing the agent can influence;
* ``lirpg``: the policy trained on the learned intrinsic reward alone
  (``r_ex_coef=0, r_in_coef=1``, the paper's green "intrinsic only" curve), the
  authors' look-ahead (``lookahead="constant_second_moment"``, the default);
* ``lirpg-exact``: the same with the exact look-ahead (``lookahead="exact"``);
* ``lirpg-frozen``: the control, ``lirpg`` with eta frozen at its random initial value
  (``intrinsic_learning_rate=1e-12``);
* ``lirpg-mix``: the policy trained on ``r_ex + r_in`` (the paper's red curve).

Scales (``--scale``):

* ``smoke``: delayed ``cartpole``, 2 seeds, 2 updates per learner;
* ``cpu``: delayed ``cartpole`` (500k steps) and ``pendulum`` (1M steps), delay 10,
  4 seeds, ``ppo``, ``ppo-bonus`` and ``lirpg``, plus ``lirpg-exact`` and
  ``lirpg-frozen`` on cartpole only (the pendulum LIRPG run alone takes 15 minutes):
  the library's presets for these envs (37 minutes on one core of a 2-core CPU shared
  with other jobs, 2026-12-02);
* ``mujoco-cpu``: the paper's Figure 4 setting at its budget on one CPU core: MuJoCo
  (brax, ``backend=common.MUJOCO_CPU_BACKEND``) ``hopper`` and ``walker2d``, delay 20,
  1M steps, 5 seeds,
  ``ppo``, ``ppo-bonus``, ``lirpg``, ``lirpg-mix`` and the control ``lirpg-frozen``,
  with the paper's PPO settings (``ppo.Config()`` / ``lirpg.Config()``: 1 env x 2048
  steps, 10 epochs of 32 minibatches, lr 3e-4). Each run trains in a resumable run
  directory (``runs/experiments/mujoco-cpu/lirpg_delayed/<env>-<delay>-<learner>``);
  the same command continues an interrupted grid;
* ``paper``: MuJoCo (brax) ``hopper``, ``halfcheetah``, ``walker2d``, ``ant``, delays 10,
  20 and 40, 1M steps, 10 seeds, all three learners, with the paper's PPO settings
  (``ppo.Config()`` / ``lirpg.Config()`` defaults).

Writes ``lirpg_delayed.json`` (per run: per-update training return per seed, env steps,
final evaluation of 32 episodes per seed, wall time, config), ``lirpg_delayed.png``
(mean +- std over seeds; rows: delays, columns: envs) and ``lirpg_delayed.md``.

    python experiments/lirpg_delayed.py                          # --scale cpu
    python experiments/lirpg_delayed.py --scale smoke --out /tmp/smoke
    python experiments/lirpg_delayed.py --scale paper --envs hopper --delays 20
    taskset -c 1 python experiments/lirpg_delayed.py --scale mujoco-cpu   # hours; resumable
    # one part of the grid, added to the committed results of the others:
    taskset -c 1 python experiments/lirpg_delayed.py --scale mujoco-cpu --envs walker2d --merge
"""

from __future__ import annotations

import dataclasses

import common

NAME = "lirpg_delayed"
LEARNERS = ("ppo", "ppo-bonus", "lirpg", "lirpg-exact", "lirpg-frozen", "lirpg-mix")
COLORS = dict(zip(LEARNERS, ("C0", "C9", "C3", "C1", "C7", "C2"), strict=True))
#: The PPO-bonus baseline's live bonus per step, in the env's reward units.
LIVE_BONUS = 1.0
MUJOCO_CPU = ("hopper", "walker2d")
SCALES = {
    "smoke": common.Scale(envs=("cartpole",), seeds=2, steps={"cartpole": 1024},
                          extra={"delays": (10,), "learners": LEARNERS}),
    "cpu": common.Scale(envs=("cartpole", "pendulum"), seeds=4,
                        steps={"cartpole": 500_000, "pendulum": 1_000_000},
                        extra={"delays": (10,), "learners": ("ppo", "ppo-bonus", "lirpg"),
                               "cartpole_only": ("lirpg-exact", "lirpg-frozen")}),
    "mujoco-cpu": common.Scale(
        envs=MUJOCO_CPU, seeds=5, steps=dict.fromkeys(MUJOCO_CPU, 1_000_000), run_dirs=True,
        extra={"delays": (20,), "env_kwargs": {"backend": common.MUJOCO_CPU_BACKEND},
               "learners": ("ppo", "ppo-bonus", "lirpg", "lirpg-mix", "lirpg-frozen")}),
    "paper": common.Scale(envs=("hopper", "halfcheetah", "walker2d", "ant"), seeds=10,
                          steps=dict.fromkeys(("hopper", "halfcheetah", "walker2d", "ant"),
                                              1_000_000),
                          extra={"delays": (10, 20, 40), "learners": LEARNERS}),
}


def build(learner: str, env_name: str, delay: int, steps: int | None,
          env_kwargs: dict | None = None) -> common.Run:
    """The run of ``learner``: the library's preset for the env (the paper's defaults for
    envs without one), ``total_steps`` = ``steps``, the reward delayed by ``delay``."""
    from metareward.algos import lirpg, ppo

    if learner.startswith("ppo"):
        algo, cfg = "ppo", ppo.preset(env_name)
        if learner == "ppo-bonus":
            cfg = dataclasses.replace(cfg, live_bonus=LIVE_BONUS)
    else:
        algo, cfg = "lirpg", lirpg.preset(env_name)
        coefs = (1.0, 1.0) if learner == "lirpg-mix" else (0.0, 1.0)
        cfg = dataclasses.replace(cfg, r_ex_coef=coefs[0], r_in_coef=coefs[1])
        if learner == "lirpg-exact":
            cfg = dataclasses.replace(cfg, lookahead="exact")
        elif learner == "lirpg-frozen":
            cfg = dataclasses.replace(cfg, intrinsic_learning_rate=1e-12)
    return common.Run(algo, env_name, common.with_steps(cfg, steps),
                      {**(env_kwargs or {}), "reward_delay": delay})


def plot(results: list[dict], path) -> None:
    """Rows: delays; columns: envs."""
    common.curve_panels(
        results, path, row="delay", width=5.5, height=4.0,
        label=lambda r: f"{r['learner']} (eval {sum(r['eval_return_per_seed']) / r['seeds']:.0f})",
        color=lambda r: COLORS[r["learner"]],
        title=lambda env, delay: f"{env}, reward delayed by {delay} steps")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = common.parser(__doc__, SCALES, resumable=True)
    ap.add_argument("--learners", nargs="+", choices=LEARNERS, default=None)
    ap.add_argument("--delays", nargs="+", type=int, default=None)
    args = ap.parse_args(argv)
    scale = common.resolve(args, SCALES)
    learners = args.learners or scale.extra["learners"]
    delays = args.delays or scale.extra["delays"]
    if any(d < 1 for d in delays):
        raise SystemExit(f"--delays must be >= 1, got {delays}")
    per_env = {e: list(learners) for e in scale.envs}
    if args.learners is None and "cartpole" in per_env:
        per_env["cartpole"] += scale.extra.get("cartpole_only", ())
    env_kwargs = scale.extra.get("env_kwargs", {})
    jobs = [({"env": e, "delay": d, "learner": ln},
             lambda e=e, d=d, ln=ln: build(ln, e, d, scale.steps[e], env_kwargs))
            for e in scale.envs for d in delays for ln in per_env[e]]
    keys = ("env", "delay", "learner")
    if args.finished_only:
        jobs = common.finished_jobs(jobs, args.runs / NAME)
    kept = common.kept_runs(args.out / f"{NAME}.json", keys, jobs, scale.seeds,
                            lambda r: build(r["learner"], r["env"], r["delay"],
                                            r["config"]["total_steps"], env_kwargs)
                            ) if args.merge else []

    def write(results: list[dict]) -> None:
        md = common.eval_table(results, ("env", "delay", "learner"))
        common.write(args.out, NAME, results, md, {"": lambda p: plot(results, p)})

    results = common.train_all(jobs, scale.seeds, keys=keys, kept=kept, learners=LEARNERS,
                               runs=args.runs and args.runs / NAME, after_each=write)
    if not scale.run_dirs:
        write(results)
    return results


if __name__ == "__main__":
    main()
