"""LIRPG vs PPO on delayed rewards: Figure 4 of Zheng et al. 2018 (``lirpg_slides.md``,
"Experiments on Delayed Mujoco"). The extrinsic reward is summed and paid every
``delay`` steps (or at the episode's end); curves show the true, undelayed return.

Learners (``--learners``), each (env, delay, learner) one vmapped, jitted program over
seeds:

* ``ppo``: PPO on the delayed reward (the paper's deep-blue baseline);
* ``lirpg``: the policy trained on the learned intrinsic reward alone
  (``r_ex_coef=0, r_in_coef=1``, the paper's green "intrinsic only" curve);
* ``lirpg-mix``: the policy trained on ``r_ex + r_in`` (the paper's red curve).

The paper's "PPO-bonus" baseline (a constant live bonus) is not included.

Scales (``--scale``):

* ``smoke``: delayed ``cartpole``, 2 seeds, 2 updates per learner;
* ``cpu``: delayed ``cartpole`` (500k steps) and ``pendulum`` (1M steps), delay 10,
  4 seeds, ``ppo`` and ``lirpg``: the library's presets for these envs (18 minutes on
  one core of a 2-core CPU);
* ``paper``: MuJoCo (brax) ``hopper``, ``halfcheetah``, ``walker2d``, ``ant``, delays 10,
  20 and 40, 1M steps, 10 seeds, all three learners, with the paper's PPO settings
  (``ppo.Config()`` / ``lirpg.Config()`` defaults).

Writes ``lirpg_delayed.json`` (per run: per-update training return per seed, env steps,
final evaluation of 32 episodes per seed, wall time, config), ``lirpg_delayed.png``
(mean +- std over seeds; rows: delays, columns: envs) and ``lirpg_delayed.md``.

    python experiments/lirpg_delayed.py                          # --scale cpu
    python experiments/lirpg_delayed.py --scale smoke --out /tmp/smoke
    python experiments/lirpg_delayed.py --scale paper --envs hopper --delays 20
"""

from __future__ import annotations

import dataclasses

import common

NAME = "lirpg_delayed"
LEARNERS = ("ppo", "lirpg", "lirpg-mix")
COLORS = dict(zip(LEARNERS, ("C0", "C3", "C2"), strict=True))
SCALES = {
    "smoke": common.Scale(envs=("cartpole",), seeds=2, steps={"cartpole": 1024},
                          extra={"delays": (10,), "learners": LEARNERS}),
    "cpu": common.Scale(envs=("cartpole", "pendulum"), seeds=4,
                        steps={"cartpole": 500_000, "pendulum": 1_000_000},
                        extra={"delays": (10,), "learners": ("ppo", "lirpg")}),
    "paper": common.Scale(envs=("hopper", "halfcheetah", "walker2d", "ant"), seeds=10,
                          steps=dict.fromkeys(("hopper", "halfcheetah", "walker2d", "ant"),
                                              1_000_000),
                          extra={"delays": (10, 20, 40), "learners": LEARNERS}),
}


def build(learner: str, env_name: str, delay: int, steps: int | None):
    """``(trainer, config)``: the library's preset for the env (the paper's defaults for
    envs without one), ``total_steps`` = ``steps``."""
    from metareward import envs
    from metareward.algos import lirpg, ppo

    if learner == "ppo":
        module, cfg = ppo, ppo.preset(env_name)
    else:
        module, cfg = lirpg, lirpg.preset(env_name)
        coefs = (1.0, 1.0) if learner == "lirpg-mix" else (0.0, 1.0)
        cfg = dataclasses.replace(cfg, r_ex_coef=coefs[0], r_in_coef=coefs[1])
    cfg = common.with_steps(cfg, steps)
    return module.make_train(cfg, envs.make(env_name, reward_delay=delay)), cfg


def plot(results: list[dict], path) -> None:
    """Rows: delays; columns: envs."""
    common.curve_panels(
        results, path, row="delay", width=5.5, height=4.0,
        label=lambda r: f"{r['learner']} (eval {sum(r['eval_return_per_seed']) / r['seeds']:.0f})",
        color=lambda r: COLORS[r["learner"]],
        title=lambda env, delay: f"{env}, reward delayed by {delay} steps")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = common.parser(__doc__, SCALES)
    ap.add_argument("--learners", nargs="+", choices=LEARNERS, default=None)
    ap.add_argument("--delays", nargs="+", type=int, default=None)
    args = ap.parse_args(argv)
    scale = common.resolve(args, SCALES)
    learners = args.learners or scale.extra["learners"]
    delays = args.delays or scale.extra["delays"]
    if any(d < 1 for d in delays):
        raise SystemExit(f"--delays must be >= 1, got {delays}")
    jobs = [({"env": e, "delay": d, "learner": ln},
             lambda e=e, d=d, ln=ln: build(ln, e, d, scale.steps[e]))
            for e in scale.envs for d in delays for ln in learners]
    results = common.train_all(jobs, scale.seeds, keys=("env", "delay", "learner"))
    md = common.eval_table(results, ("env", "delay", "learner"))
    common.write(args.out, NAME, results, md, {"": lambda p: plot(results, p)})
    return results


if __name__ == "__main__":
    main()
