"""TARE (``tare_implicit_reward_learning.md``) Figure 3: PPO-TARE with each reward
parameterisation against PPO.

The reward nets (``tare.Config.reward_net``, ``metareward.nets.REWARD_NETS``): ``mlp-concat``
(the paper's MLP), ``mlp-mul`` (MLP with multiplicative interaction), ``lstm-f`` (LSTM
forward in time), ``lstm-b`` (LSTM backward in time, LSTMb) and ``lstm-b-mul`` (LSTMbMul,
the paper's default). Every PPO-TARE learner uses the same TARE preset and differs only
in ``reward_net``; ``ppo`` is the PPO preset for the env. Each (env, learner) is one
vmapped, jitted program over seeds.

Scales (``--scale``):

* ``smoke``: ``pendulum``, 2 seeds, 1 update of every learner;
* ``cpu``: ``pendulum``, 300k steps, 4 seeds (10 minutes on one core);
* ``paper``: MuJoCo (brax) ``walker2d`` and ``ant`` (the paper's two), 1M steps, 5 seeds,
  the paper's TARE defaults (``tare.Config()``).

Writes ``tare_reward_archs.json`` (per run: per-update training return per seed, final
evaluation of 32 episodes per seed, wall time, config), ``tare_reward_archs.png`` (mean
+- std over seeds, one panel per env) and ``tare_reward_archs.md``.

    python experiments/tare_reward_archs.py                     # --scale cpu
    python experiments/tare_reward_archs.py --learners ppo lstm-b-mul mlp-concat
"""

from __future__ import annotations

import common
import tare_curves

from metareward.nets.rewards import REWARD_NETS

NAME = "tare_reward_archs"
LEARNERS = ("ppo", *REWARD_NETS)
COLORS = dict(zip(LEARNERS, (f"C{i}" for i in range(len(LEARNERS))), strict=True))
SCALES = {
    "smoke": common.Scale(envs=("pendulum",), seeds=2, steps={"pendulum": 2048}),
    "cpu": common.Scale(envs=("pendulum",), seeds=4, steps={"pendulum": 300_000}),
    "paper": common.Scale(envs=("walker2d", "ant"), seeds=5,
                          steps={"walker2d": 1_000_000, "ant": 1_000_000}),
}


def build(learner: str, env_name: str, steps: int | None) -> common.Run:
    """The run of ``learner``: PPO's preset for ``ppo``, else TARE's PPO preset with
    ``reward_net = learner``."""
    if learner == "ppo":
        return tare_curves.build("ppo", env_name, steps)
    return tare_curves.build("ppo-tare", env_name, steps, reward_net=learner)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = common.parser(__doc__, SCALES)
    ap.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=LEARNERS)
    args = ap.parse_args(argv)
    scale = common.resolve(args, SCALES)
    jobs = [({"env": e, "learner": ln}, lambda e=e, ln=ln: build(ln, e, scale.steps[e]))
            for e in scale.envs for ln in args.learners]
    results = common.train_all(jobs, scale.seeds)
    common.write(args.out, NAME, results, common.eval_table(results),
                 {"": lambda p: plot(results, p)})
    return results


def plot(results: list[dict], path) -> None:
    common.curve_panels(
        results, path, color=lambda r: COLORS[r["learner"]],
        label=lambda r: "PPO" if r["learner"] == "ppo" else f"PPO-TARE {r['learner']}",
        title=lambda env, _: f"{env}: reward parameterisations")


if __name__ == "__main__":
    main()
