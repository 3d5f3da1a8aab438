"""TARE (``tare_implicit_reward_learning.md``) Figure 4: the learned reward on the
illustrative chain, for left and right moves.

On TARE's ``chain`` (``metareward.envs.chain``) a left move pays 1.0 and a right move
N(0.5, 1), yet the best policy goes right to the goal. PPO-TARE (the library's chain
preset, ``lstm-b-mul`` reward) trains one vmapped program of seeds; then each trained
agent collects ``rollouts`` more rollouts with its final policy, and the learned reward
``r_phi`` of every transition is split by the action taken. The paper plots these
distributions "averaged over five random seeds"; we pool the seeds' transitions.

Scales (``--scale``):

* ``smoke``: 2 seeds, 2 updates, 2 rollouts;
* ``cpu``: 5 seeds (the paper's five), the preset's 163,840 steps, 16 rollouts of
  16 x 32 steps (1.5 minutes on one core);
* ``paper``: the same: the chain is the paper's own small env.

The training log has, per rollout, the mean learned reward of each move
(``r_param_action0/1``, with the move counts); a move not taken in a rollout is left out.

Writes ``tare_chain_rewards.json`` (per seed: the mean learned reward of left and right
moves over training and on the final rollouts, the share of right moves, the final
evaluation return; histogram counts and bin edges), ``tare_chain_rewards.png`` (1: the
per-rollout mean learned reward of left and right moves over all of training; 2: the
learned reward of the final rollouts' moves; 3: their extrinsic rewards; 4: the mean
learned reward of each move over training, mean +- std over seeds) and
``tare_chain_rewards.md``.

    python experiments/tare_chain_rewards.py                    # --scale cpu
"""

from __future__ import annotations

import common
import numpy as np

NAME = "tare_chain_rewards"
SCALES = {
    "smoke": common.Scale(envs=("chain",), seeds=2, steps={"chain": 1024},
                          extra={"rollouts": 2}),
    "cpu": common.Scale(envs=("chain",), seeds=5, steps={"chain": 163_840},
                        extra={"rollouts": 16}),
    "paper": common.Scale(envs=("chain",), seeds=5, steps={"chain": 163_840},
                          extra={"rollouts": 16}),
}
MOVES = ("left", "right")  # chain actions 0 and 1


def final_rollouts(trainer, state, rollouts: int):
    """``(r_phi, r_ex, action)``, each ``[seeds, rollouts, T, N]``: the learned and the
    extrinsic reward of every transition of ``rollouts`` more rollouts of each seed's
    final policy (no training in between)."""
    import jax

    def one_seed(s):
        def step(s, _):
            s, seg = trainer.collect_segment(s)
            return s, (trainer.reward(s.params["reward"], seg), seg.r_ex, seg.action)

        return jax.lax.scan(step, s, None, length=rollouts)[1]

    return jax.jit(jax.vmap(one_seed))(state)


def masked_move_rewards(r: dict) -> list[np.ndarray]:
    """Per move, the training log's mean learned reward of that move in each rollout
    (``[seeds, updates]``), NaN where the move was not taken (the log has 0 there)."""
    return [np.where(common.unlisted(r[f"action{k}_count"]) > 0,
                     common.unlisted(r[f"r_param_action{k}"]), np.nan)
            for k in range(len(MOVES))]


def summarise(r: dict, r_phi, r_ex, action, bins: int = 40) -> None:
    """Adds to the record ``r``: per seed, the mean learned reward of left and right moves
    over training (from the log) and on the final rollouts, and the final share of right
    moves; histograms (counts and edges) of the per-rollout means over training and of
    the final rollouts' learned and extrinsic rewards, seeds pooled."""
    r_phi, r_ex, action = (np.asarray(x, np.float64) for x in (r_phi, r_ex, action))
    seeds = r_phi.shape[0]
    logged = masked_move_rewards(r)
    per_seed = {k: [] for k in ("train_left", "train_right", "final_left", "final_right",
                                "right_share")}
    for s in range(seeds):
        a = action[s].reshape(-1)
        for k, m in enumerate(MOVES):
            sel = r_phi[s].reshape(-1)[a == k]
            per_seed[f"final_{m}"].append(float(sel.mean()) if sel.size else None)
            row = logged[k][s]
            per_seed[f"train_{m}"].append(float(np.nanmean(row)) if np.isfinite(row).any()
                                          else None)
        per_seed["right_share"].append(float((a == 1).mean()))
    r.update(per_seed)
    a = action.reshape(-1)
    hist = {}
    for key, values in (("train_r_param", logged), ("final_r_param", [
            r_phi.reshape(-1)[a == k] for k in range(len(MOVES))]), ("final_r_ex", [
            r_ex.reshape(-1)[a == k] for k in range(len(MOVES))])):
        pooled = [v[np.isfinite(v)].reshape(-1) for v in values]
        edges = np.histogram_bin_edges(np.concatenate(pooled), bins=bins)
        hist[f"{key}_edges"] = edges.tolist()
        for m, v in zip(MOVES, pooled, strict=True):
            hist[f"{key}_{m}"] = np.histogram(v, edges)[0].tolist()
    r["hist"] = hist


def plot(r: dict, path) -> None:
    fig, axes = common.grid(1, 4, 4.2, 3.6)
    h, n = r["hist"], r["seeds"]
    for ax, key, xlabel, title in (
            (axes[0, 0], "train_r_param", "mean learned reward of a move in a rollout",
             f"over training, {n} seeds"),
            (axes[0, 1], "final_r_param", "learned reward r_phi", f"final policy, {n} seeds"),
            (axes[0, 2], "final_r_ex", "extrinsic reward", f"final policy, {n} seeds")):
        edges = np.asarray(h[f"{key}_edges"])
        for m, color in zip(MOVES, ("C0", "C3"), strict=True):
            counts = np.asarray(h[f"{key}_{m}"], np.float64)
            dens = counts / max(counts.sum(), 1.0) / np.diff(edges)
            ax.stairs(dens, edges, fill=True, alpha=0.5, color=color,
                      label=f"{m} ({int(counts.sum())})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
        ax.set_title(title)
        ax.legend(fontsize=8)
    ax = axes[0, 3]
    for y, m, color in zip(masked_move_rewards(r), MOVES, ("C0", "C3"), strict=True):
        common.curve(ax, r["env_steps"], y, f"{m} moves", color=color)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean learned reward")
    ax.set_title("learned reward of each move")
    ax.legend(fontsize=8)
    common.save(fig, path)


def table(r: dict) -> str:
    lines = ["| seed | mean r_phi over training: left / right moves | final policy: left / "
             "right | final share of right moves | eval return |", "|---|---|---|---|---|"]
    fmt = lambda x: "-" if x is None else f"{x:.2f}"
    for s in range(r["seeds"]):
        lines.append(f"| {s} | {fmt(r['train_left'][s])} / {fmt(r['train_right'][s])} | "
                     f"{fmt(r['final_left'][s])} / {fmt(r['final_right'][s])} | "
                     f"{r['right_share'][s]:.2f} | {r['eval_return_per_seed'][s]:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from metareward import envs
    from metareward.algos import tare

    ap = common.parser(__doc__, SCALES)
    args = ap.parse_args(argv)
    scale = common.resolve(args, SCALES)
    if scale.envs != ("chain",):
        raise SystemExit(f"this experiment runs on chain only, got --envs {list(scale.envs)}")
    cfg = common.with_steps(tare.preset("chain"), scale.steps["chain"])
    trainer = tare.make_train(cfg, envs.make("chain"))
    r = {"env": "chain", "learner": "ppo-tare",
         **common.train_seeds(trainer, cfg, scale.seeds, keep_state=True,
                              keep=("r_param_action0", "r_param_action1", "action0_count",
                                    "action1_count", "param_return"))}
    common.log_run(r)
    summarise(r, *final_rollouts(trainer, r.pop("_state"), scale.extra["rollouts"]))
    common.write(args.out, NAME, r, table(r), {"": lambda p: plot(r, p)})
    return r


if __name__ == "__main__":
    main()
