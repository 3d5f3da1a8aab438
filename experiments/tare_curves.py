"""TARE (``tare_implicit_reward_learning.md``) Figure 6: PPO and AWR with and without
TARE's learned reward, learning curves over seeds.

Learners (``--learners``): ``ppo``, ``ppo-tare``, ``ppo-tare-frozen`` (the control: the
same run with the reward frozen at its initialisation, ``hypergrad_coef=0``), ``awr``,
``awr-tare`` and ``awr-tare-frozen`` (AWR-TARE's control); each (env, learner) one
vmapped, jitted program over seeds, from the library's presets (PPO / AWR:
their ``PRESETS``; PPO-TARE / AWR-TARE: ``tare.PRESETS`` / ``tare.AWR_PRESETS``; the
paper's defaults, ``Config()``, on envs without a preset). On ``chain`` PPO takes the
PPO-TARE chain preset's batch and policy settings, so the two differ only in the reward.

Scales (``--scale``):

* ``smoke``: ``chain``, 2 seeds, 2 updates of every learner;
* ``cpu``: TARE's ``chain`` and ``chain-truncating`` (163,840 steps each; the latter's
  step limit is bootstrapped, and plain PPO dithers there) and ``pendulum`` (300k steps),
  4 seeds, all five learners (about 30 minutes on one core);
* ``mujoco-cpu``: the paper's setting at its budget on one CPU core: MuJoCo (brax,
  ``backend=common.MUJOCO_CPU_BACKEND``) ``walker2d``, 1M steps, 5 seeds, all six
  learners with the paper's defaults, AWR and AWR-TARE with the AWR authors' per-env
  actor step size and action std (``awr.MUJOCO_ACTOR``; on walker2d 2.5e-5 and 0.4,
  where the defaults are Ant's 5e-5 and 0.2). On MuJoCo envs (this scale and ``paper``) ``awr``
  steps AWR-TARE's 8 envs x 256 steps per update (``tare.AWRConfig``) instead of AWR's
  own 1 env x 2048, so that AWR and AWR-TARE differ only in the reward; AWR recomputes
  its TD(lambda) targets over the whole 50k-transition buffer every update, a scan of
  50k steps with 1 env against 6,250 with 8 (per update of 5 seeds on walker2d here,
  with the other core busy: 38 s for AWR with 1 env, 10.5 s for AWR-TARE with 8, its
  hypergradient included). Each run trains in a resumable run directory
  (``runs/experiments/mujoco-cpu/tare_curves/<env>-<learner>``); the same command
  continues an interrupted grid;
* ``paper``: MuJoCo (brax) ``humanoid``, ``walker2d``, ``ant``, ``hopper``,
  ``halfcheetah``, ``swimmer`` (the paper's six), 1M steps, 5 seeds.

Writes ``tare_curves.json`` (per run: per-update training return per seed, final
evaluation of 32 episodes per seed, the learned reward's per-episode return
``param_return``, wall time, config), ``tare_curves.png`` (mean +- std over seeds, one
panel per env) and ``tare_curves.md``.

    python experiments/tare_curves.py                       # --scale cpu
    python experiments/tare_curves.py --envs chain --learners ppo ppo-tare
    taskset -c 1 python experiments/tare_curves.py --scale mujoco-cpu     # hours; resumable
"""

from __future__ import annotations

import dataclasses

import common

NAME = "tare_curves"
LEARNERS = ("ppo", "ppo-tare", "ppo-tare-frozen", "awr", "awr-tare", "awr-tare-frozen")
#: The controls: the TARE learner with the hypergradient off (``hypergrad_coef=0``).
FROZEN = ("ppo-tare-frozen", "awr-tare-frozen")
COLORS = dict(zip(LEARNERS, ("C0", "C3", "C7", "C1", "C2", "C8"), strict=True))
MUJOCO = ("humanoid", "walker2d", "ant", "hopper", "halfcheetah", "swimmer")
SCALES = {
    "smoke": common.Scale(envs=("chain",), seeds=2,
                          steps={"chain": 1024, "chain-truncating": 1024}),
    "cpu": common.Scale(envs=("chain", "chain-truncating", "pendulum"), seeds=4,
                        steps={"chain": 163_840, "chain-truncating": 163_840,
                               "pendulum": 300_000}),
    "mujoco-cpu": common.Scale(envs=("walker2d",), seeds=5, steps={"walker2d": 1_000_000},
                               run_dirs=True,
                               extra={"env_kwargs": {"backend": common.MUJOCO_CPU_BACKEND}}),
    "paper": common.Scale(envs=MUJOCO, seeds=5, steps=dict.fromkeys(MUJOCO, 1_000_000)),
}
#: The registered algorithm of each learner.
ALGOS = {"ppo": "ppo", "awr": "awr", "ppo-tare": "tare", "ppo-tare-frozen": "tare",
         "awr-tare": "tare-awr", "awr-tare-frozen": "tare-awr"}


def base_config(learner: str, env_name: str):
    """``(module, config)`` of a learner on an env before ``total_steps``."""
    from metareward.algos import awr, ppo, preset, tare

    if learner == "ppo":
        if env_name.startswith("chain"):  # the PPO-TARE chain preset's batch, policy
            t = tare.preset("chain")
            return ppo, ppo.Config(
                num_envs=t.num_envs, num_steps=t.num_steps, num_epochs=t.num_epochs,
                num_minibatches=2 * t.num_minibatches, learning_rate=t.learning_rate,
                anneal_lr=False, ent_coef=t.ent_coef, normalize_obs=False,
                normalize_reward=False, vf_clip_eps=None, hidden=t.hidden)
        return ppo, ppo.preset(env_name)
    if learner == "awr":
        if env_name.startswith("chain"):
            return awr, awr.Config(num_envs=16, num_steps=32, buffer_size=8192,
                                   value_steps=50, policy_steps=100,
                                   policy_learning_rate=1e-3, normalize_obs=False)
        if env_name in MUJOCO:  # AWR-TARE's env geometry: the pair differs in the reward
            t = tare.AWR_PRESETS.get(env_name, tare.AWRConfig())
            return awr, dataclasses.replace(awr.PRESETS.get(env_name, awr.Config()),
                                            num_envs=t.num_envs, num_steps=t.num_steps)
        return awr, awr.PRESETS.get(env_name, awr.Config())
    cfg = preset(ALGOS[learner], env_name)
    if learner in FROZEN:
        cfg = dataclasses.replace(cfg, hypergrad_coef=0.0)
    return tare, cfg


def build(learner: str, env_name: str, steps: int | None = None,
          env_kwargs: dict | None = None, **overrides) -> common.Run:
    """The run of a learner on an env, ``total_steps`` = ``steps`` (the config's own if
    None), other config fields from ``overrides``, env options ``env_kwargs``."""
    cfg = common.with_steps(dataclasses.replace(base_config(learner, env_name)[1], **overrides),
                            steps)
    return common.Run(ALGOS[learner], env_name, cfg, dict(env_kwargs or {}))


def plot(results: list[dict], path) -> None:
    common.curve_panels(results, path, label=lambda r: r["learner"],
                        color=lambda r: COLORS[r["learner"]], title=lambda env, _: env)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = common.parser(__doc__, SCALES, resumable=True)
    ap.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=LEARNERS)
    args = ap.parse_args(argv)
    scale = common.resolve(args, SCALES)
    env_kwargs = scale.extra.get("env_kwargs", {})
    jobs = [({"env": e, "learner": ln},
             lambda e=e, ln=ln: build(ln, e, scale.steps[e], env_kwargs))
            for e in scale.envs for ln in args.learners]
    if args.finished_only:
        jobs = common.finished_jobs(jobs, args.runs / NAME)
    kept = common.kept_runs(args.out / f"{NAME}.json", ("env", "learner"), jobs, scale.seeds,
                            lambda r: build(r["learner"], r["env"], r["config"]["total_steps"],
                                            env_kwargs)) if args.merge else []

    def write(results: list[dict]) -> None:
        common.write(args.out, NAME, results, common.eval_table(results),
                     {"": lambda p: plot(results, p)})

    results = common.train_all(jobs, scale.seeds, runs=args.runs and args.runs / NAME,
                               after_each=write, kept=kept, learners=LEARNERS,
                               keep=("param_return", "hypergrad_norm",
                                     "cg_negative_curvature", "cg_iterations"))
    if not scale.run_dirs:
        write(results)
    return results


if __name__ == "__main__":
    main()
