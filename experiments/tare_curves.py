"""TARE (``tare_implicit_reward_learning.md``) Figure 6: PPO and AWR with and without
TARE's learned reward, learning curves over seeds.

Learners (``--learners``): ``ppo``, ``ppo-tare``, ``ppo-tare-frozen`` (the control: the
same run with the reward frozen at its initialisation, ``hypergrad_coef=0``), ``awr``,
``awr-tare``; each (env,
learner) one vmapped, jitted program over seeds, from the library's presets (PPO / AWR:
their ``PRESETS``; PPO-TARE / AWR-TARE: ``tare.PRESETS`` / ``tare.AWR_PRESETS``; the
paper's defaults, ``Config()``, on envs without a preset). On ``chain`` PPO takes the
PPO-TARE chain preset's batch and policy settings, so the two differ only in the reward.

Scales (``--scale``):

* ``smoke``: ``chain``, 2 seeds, 2 updates of every learner;
* ``cpu``: TARE's ``chain`` and ``chain-truncating`` (163,840 steps each; the latter's
  step limit is bootstrapped, and plain PPO dithers there) and ``pendulum`` (300k steps),
  4 seeds, all five learners (about 30 minutes on one core);
* ``paper``: MuJoCo (brax) ``humanoid``, ``walker2d``, ``ant``, ``hopper``,
  ``halfcheetah``, ``swimmer`` (the paper's six), 1M steps, 5 seeds.

Writes ``tare_curves.json`` (per run: per-update training return per seed, final
evaluation of 32 episodes per seed, the learned reward's per-episode return
``param_return``, wall time, config), ``tare_curves.png`` (mean +- std over seeds, one
panel per env) and ``tare_curves.md``.

    python experiments/tare_curves.py                       # --scale cpu
    python experiments/tare_curves.py --envs chain --learners ppo ppo-tare
"""

from __future__ import annotations

import dataclasses

import common

NAME = "tare_curves"
LEARNERS = ("ppo", "ppo-tare", "ppo-tare-frozen", "awr", "awr-tare")
COLORS = dict(zip(LEARNERS, ("C0", "C3", "C7", "C1", "C2"), strict=True))
MUJOCO = ("humanoid", "walker2d", "ant", "hopper", "halfcheetah", "swimmer")
SCALES = {
    "smoke": common.Scale(envs=("chain",), seeds=2,
                          steps={"chain": 1024, "chain-truncating": 1024}),
    "cpu": common.Scale(envs=("chain", "chain-truncating", "pendulum"), seeds=4,
                        steps={"chain": 163_840, "chain-truncating": 163_840,
                               "pendulum": 300_000}),
    "paper": common.Scale(envs=MUJOCO, seeds=5, steps=dict.fromkeys(MUJOCO, 1_000_000)),
}


def base_config(learner: str, env_name: str):
    """``(module, config)`` of a learner on an env before ``total_steps``."""
    from metareward.algos import awr, ppo, preset, tare

    if learner == "ppo":
        if env_name.startswith("chain"):  # the PPO-TARE chain preset's batch, policy
            t = tare.preset("chain")
            return ppo, ppo.Config(
                num_envs=t.num_envs, num_steps=t.num_steps, num_epochs=t.num_epochs,
                num_minibatches=2 * t.num_minibatches, learning_rate=t.learning_rate,
                anneal_lr=False, ent_coef=t.ent_coef, normalize_obs=False, hidden=t.hidden)
        return ppo, ppo.preset(env_name)
    if learner == "awr":
        if env_name.startswith("chain"):
            return awr, awr.Config(num_envs=16, num_steps=32, buffer_size=8192,
                                   value_steps=50, policy_steps=100,
                                   policy_learning_rate=1e-3, normalize_obs=False)
        return awr, awr.PRESETS.get(env_name, awr.Config())
    cfg = preset("tare-awr" if learner == "awr-tare" else "tare", env_name)
    if learner == "ppo-tare-frozen":
        cfg = dataclasses.replace(cfg, hypergrad_coef=0.0)
    return tare, cfg


def build(learner: str, env_name: str, steps: int | None = None, **overrides):
    """``(trainer, config)`` for a learner on an env, ``total_steps`` = ``steps`` (the
    config's own if None), other fields from ``overrides``."""
    from metareward import envs

    module, cfg = base_config(learner, env_name)
    cfg = common.with_steps(dataclasses.replace(cfg, **overrides), steps)
    return module.make_train(cfg, envs.make(env_name)), cfg


def plot(results: list[dict], path) -> None:
    common.curve_panels(results, path, label=lambda r: r["learner"],
                        color=lambda r: COLORS[r["learner"]], title=lambda env, _: env)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = common.parser(__doc__, SCALES)
    ap.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=LEARNERS)
    args = ap.parse_args(argv)
    scale = common.resolve(args, SCALES)
    jobs = [({"env": e, "learner": ln}, lambda e=e, ln=ln: build(ln, e, scale.steps[e]))
            for e in scale.envs for ln in args.learners]
    results = common.train_all(jobs, scale.seeds, keep=("param_return", "hypergrad_norm",
                                                            "cg_negative_curvature",
                                                            "cg_iterations"))
    common.write(args.out, NAME, results, common.eval_table(results),
                 {"": lambda p: plot(results, p)})
    return results


if __name__ == "__main__":
    main()
