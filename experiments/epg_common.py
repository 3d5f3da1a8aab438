"""What the EPG entry points share (not an entry point): their scales, options, one
meta-training of the evolved loss cached in the output directory, the held-out tasks and
the meta-test runs.

Evolved Policy Gradients (``epg_evolved_policy_gradients.md``): ``epg_vs_ppo.py``
(Figures 4/5), ``epg_kl.py`` (Figure 6) and ``epg_sensitivity.py`` (Figure 9) all study
one loss: ``--seeds`` meta-seeds meta-trained by :mod:`metareward.algos.epg` (keys
``jax.random.split(PRNGKey(0), seeds)``), all in one jitted program (``vmap`` over
meta-seeds, ``lax.scan`` over ES epochs), as in ``tests/test_epg.py``'s slow test. The
first script to run saves the initial and evolved losses as
``<out>/epg_loss_<scale>.msgpack`` (``flax.serialization``) with
``epg_loss_<scale>.json`` (the settings, the per-epoch meta-training metrics, the wall
time); the others load them when their settings (env, config, seeds) are the same, and
meta-train again otherwise or with ``--retrain``.

Held-out tasks: ``jax.vmap(env.tasks.sample)(split(PRNGKey(12345), tasks))``; agents per
task: ``split(PRNGKey(7), agents)``. A meta-test run is ``(meta-seed, task, agent)``.

Scales:

* ``smoke``: random pendulum with 32-step episodes (so that some end within the tiny
  budgets), a tiny config (4 members, 2 epochs, 4 updates of 16 steps, buffer 32),
  2 meta-seeds, 2 tasks x 1 agent;
* ``cpu``: random pendulum, ``epg.preset("pendulum")`` with 100 epochs (alpha annealed
  over 25, the outer learning rate decayed over 100), 2 meta-seeds x 15.0M env steps;
  4 held-out tasks x 2 agents;
* ``paper``: random hopper (brax, MJX), ``epg.Config()`` (the paper's: 3000 epochs of 32
  members, 128 updates of 128 steps, buffer 128), 4 meta-seeds, 8 tasks x 2 agents.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import numpy as np

#: Meta-seed keys ``split(PRNGKey(META_KEY), seeds)``, held-out tasks and agent keys.
META_KEY, TASK_KEY, AGENT_KEY = 0, 12345, 7
CACHE_VERSION = 1

SCALES = {
    "smoke": common.Scale(envs=("pendulum",), seeds=2, steps={"pendulum": None}, extra=dict(
        config=dict(num_epochs=2, pop_size=4, steps_per_update=16, inner_updates=4,
                    buffer_size=32, eval_episodes=1, anneal_epochs=1, outer_decay_epochs=2),
        tasks=2, agents=1, num_eval=2, episode_length=32)),
    "cpu": common.Scale(envs=("pendulum",), seeds=2, steps={"pendulum": None}, extra=dict(
        config=dict(num_epochs=100, anneal_epochs=25, outer_decay_epochs=100),
        tasks=4, agents=2, num_eval=10)),
    "paper": common.Scale(envs=("hopper",), seeds=4, steps={"hopper": None}, extra=dict(
        config={}, tasks=8, agents=2, num_eval=10)),
}


@dataclasses.dataclass(frozen=True)
class Setup:
    """One EPG experiment: the env, the EPG config, meta-seeds, held-out tasks x agents
    per task, evaluation episodes per agent, the output directory and the scale."""

    scale: str
    env_name: str
    config: Any
    seeds: int
    tasks: int
    agents: int
    num_eval: int
    out: Path
    retrain: bool
    episode_length: int | None = None

    def settings(self) -> dict:
        """JSON-ready settings (those that decide the numbers)."""
        return {"scale": self.scale, "env": self.env_name,
                "episode_length": self.episode_length, "seeds": self.seeds,
                "tasks": self.tasks, "agents": self.agents, "num_eval": self.num_eval,
                "meta_key": META_KEY, "task_key": TASK_KEY, "agent_key": AGENT_KEY,
                "config": common.config_dict(self.config)}


def add_options(ap: argparse.ArgumentParser) -> None:
    """The EPG scripts' own options (besides ``common.parser``'s)."""
    ap.add_argument("--epochs", type=int, default=None,
                    help="ES epochs of meta-training, the outer learning rate decayed "
                         "over all of them (default: the scale's config)")
    ap.add_argument("--tasks", type=int, default=None, help="held-out tasks")
    ap.add_argument("--agents", type=int, default=None, help="fresh agents per held-out task")
    ap.add_argument("--retrain", action="store_true",
                    help="meta-train even if a cached loss with these settings exists")


def resolve(args: argparse.Namespace, scales: dict[str, common.Scale]) -> Setup:
    """The :class:`Setup` of the command line; fails (``SystemExit``, with the allowed
    values) on a bad option before anything is compiled."""
    from metareward import envs
    from metareward.algos import epg
    from metareward.algos.config import ConfigError

    scale = common.resolve(args, scales)
    if args.steps is not None:
        raise SystemExit("--steps does not apply to EPG: its budgets are --epochs and the "
                         "config's inner_updates x steps_per_update")
    if len(scale.envs) != 1:
        raise SystemExit(f"EPG meta-trains on one task distribution; got --envs {scale.envs}")
    env_name = scale.envs[0]
    if env_name not in envs.randomizable():
        raise SystemExit(f"env {env_name!r} has no task distribution; allowed: "
                         f"{', '.join(envs.randomizable())}")
    for k in ("epochs", "tasks", "agents"):
        if getattr(args, k) is not None and getattr(args, k) < 1:
            raise SystemExit(f"--{k} must be >= 1, got {getattr(args, k)}")
    ex = scale.extra
    over = dict(ex["config"])
    if args.epochs is not None:  # the outer learning rate decays over the whole run
        over["num_epochs"] = over["outer_decay_epochs"] = args.epochs
    try:
        cfg = dataclasses.replace(epg.preset(env_name), **over)
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    return Setup(scale=args.scale, env_name=env_name, config=cfg, seeds=scale.seeds,
                 tasks=args.tasks or ex["tasks"], agents=args.agents or ex["agents"],
                 num_eval=ex["num_eval"], out=Path(args.out), retrain=args.retrain,
                 episode_length=ex.get("episode_length"))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_env(setup: Setup, **task_ranges: Any):
    """The randomised env (``task_ranges`` override factors' ranges; the episode length
    the scale's, default the env's own)."""
    from metareward import envs

    return envs.make(setup.env_name, randomize=True, task_ranges=task_ranges or None,
                     episode_length=setup.episode_length)


def trainer(setup: Setup, env: Any = None):
    """The EPG trainer of ``setup`` (on ``env``, default the setup's randomised env)."""
    from metareward.algos import epg

    return epg.make_train(setup.config, env if env is not None else make_env(setup))


def _normal(x: Any) -> Any:
    return json.loads(json.dumps(x))


def meta_train(setup: Setup, tr: Any) -> tuple[Any, Any, dict]:
    """The initial and evolved loss parameters of every meta-seed (stacked on a leading
    axis of ``setup.seeds``) and a JSON-ready record of the meta-training (per-epoch
    ``fitness_mean``, ``fitness_max``, ``alpha`` and the members' mean final return
    ``member_final_return``, each ``[seeds, epochs]``; ``wall_s``, ``cached``).

    Loaded from ``<out>/epg_loss_<scale>.{msgpack,json}`` when their settings equal
    ``setup``'s (and ``--retrain`` is not given); otherwise meta-trained in one jitted
    program and saved there."""
    import jax
    from flax import serialization

    cfg = setup.config
    keys = jax.random.split(jax.random.PRNGKey(META_KEY), setup.seeds)
    states0 = jax.vmap(tr.init)(keys)
    phi0 = states0.params["loss"]
    stem = setup.out / f"epg_loss_{setup.scale}"
    blob, meta = stem.with_suffix(".msgpack"), stem.with_suffix(".json")
    settings = _normal({"version": CACHE_VERSION, "env": setup.env_name,
                        "episode_length": setup.episode_length, "seeds": setup.seeds,
                        "meta_key": META_KEY, "config": common.config_dict(cfg)})
    if not setup.retrain and blob.exists() and meta.exists():
        saved = json.loads(meta.read_text())
        if saved.get("settings") == settings:
            params = serialization.from_bytes({"initial": phi0, "evolved": phi0},
                                              blob.read_bytes())
            log(f"meta-training: loaded {blob} (meta-trained in "
                f"{saved['record']['wall_s']:.0f} s)")
            return params["initial"], params["evolved"], {**saved["record"], "cached": True}
        log(f"meta-training: {meta} has other settings; meta-training again")

    def run(s):
        return jax.lax.scan(lambda s, _: tr.update(s), s, None, length=cfg.num_epochs)

    log(f"meta-training {setup.seeds} meta-seed(s) x {cfg.num_epochs} epochs of "
        f"{cfg.pop_size} members on random {setup.env_name}")
    t0 = time.perf_counter()
    states, m = jax.jit(jax.vmap(run))(states0)
    jax.block_until_ready(states)
    wall = time.perf_counter() - t0
    phi = states.params["loss"]
    if int(np.max(np.asarray(states.nonfinite))) > 0:
        log(f"warning: {np.asarray(states.nonfinite).tolist()} non-finite outer steps "
            "(skipped)")
    if not all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(phi)):
        raise FloatingPointError("the evolved loss parameters are not finite")
    record = {
        "wall_s": wall,
        "env_steps_per_seed": int(np.asarray(m["env_steps"])[0, -1]),
        "fitness_mean": common.listed(m["fitness_mean"], 2),
        "fitness_max": common.listed(m["fitness_max"], 2),
        "alpha": common.listed(m["alpha"], 4),
        "member_final_return": common.listed(m["episode_return"], 2),
        "inner_nonfinite_members": np.asarray(m["inner_nonfinite_members"]).tolist(),
        "outer_nonfinite": np.asarray(states.nonfinite).tolist(),
    }
    fm = np.asarray(m["fitness_mean"])
    log(f"meta-trained in {wall:.0f} s; fitness_mean first/last epoch per seed "
        f"{np.round(fm[:, 0], 1).tolist()} -> {np.round(fm[:, -1], 1).tolist()}")
    setup.out.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(serialization.to_bytes({"initial": jax.device_get(phi0),
                                             "evolved": jax.device_get(phi)}))
    meta.write_text(json.dumps({"settings": settings, "record": record}) + "\n")
    log(f"saved {blob}")
    return phi0, phi, {**record, "cached": False}


def held_out(setup: Setup, env: Any) -> tuple[Any, Any]:
    """``(tasks, agent_keys)``: ``setup.tasks`` held-out tasks (``PRNGKey(12345)``, never
    the meta-training's) and ``setup.agents`` agent keys (``PRNGKey(7)``)."""
    import jax

    tasks = jax.vmap(env.tasks.sample)(jax.random.split(jax.random.PRNGKey(TASK_KEY),
                                                        setup.tasks))
    return tasks, jax.random.split(jax.random.PRNGKey(AGENT_KEY), setup.agents)


def tasks_json(tasks: Any) -> dict:
    """Held-out task factors as ``{factor: [tasks]}`` (nested lists if not scalars)."""
    return {k: np.round(np.asarray(v, np.float64), 4).tolist() for k, v in tasks.items()}


def over_runs(fn: Callable[[Any, Any, Any], Any]) -> Callable[[Any, Any, Any], Any]:
    """``fn(phi, task, key)`` jitted over every run: ``(phis [S], tasks [T], keys [G])
    -> outputs [S, T, G, ...]``."""
    import jax

    f = jax.vmap(fn, (None, None, 0))
    f = jax.vmap(f, (None, 0, None))
    return jax.jit(jax.vmap(f, (0, None, None)))


def run_key(key: Any) -> Any:
    """The key ``meta_test(phi, task, key)`` gives ``inner_run``: an ``inner_run`` with it
    trains the very agent that ``meta_test`` with ``key`` trains."""
    import jax

    return jax.random.split(key)[0]


def device() -> str:
    import jax

    return str(jax.devices()[0])


def per_seed(a: Any) -> list[float]:
    """Mean over every axis but the first (meta-seeds), ignoring NaN."""
    a = np.asarray(a, np.float64)
    return [float(v) for v in common.nanmean(a.reshape(a.shape[0], -1), axis=1)]


def band(ax: Any, x: Any, runs: Any, label: str, *, log_y: bool = False,
         band_alpha: float = 0.2, **kw: Any) -> None:
    """Mean +- std over ``runs`` (``[runs, len(x)]``, NaN ignored) against ``x``; on a
    log axis the band's lower edge is clipped to a tenth of the curve's smallest
    positive value."""
    runs = np.asarray(runs, np.float64)
    m = common.nanmean(runs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = np.nanstd(runs, axis=0)
    x = np.asarray(x)
    ok = np.isfinite(m)
    lo = m - sd
    if log_y:  # mean - std is often <= 0 here: the band stops a decade below the curve
        pos = m[ok & (m > 0)]
        lo = np.maximum(lo, pos.min() / 10 if pos.size else 1e-12)
    (line,) = ax.plot(x[ok], m[ok], label=label, **kw)
    ax.fill_between(x[ok], lo[ok], (m + sd)[ok], alpha=band_alpha, color=line.get_color(),
                    lw=0)
    if log_y:
        ax.set_yscale("log")


def meta_train_md(setup: Setup, record: dict) -> str:
    """One line on the meta-training behind the results."""
    cfg = setup.config
    fm = np.asarray(record["fitness_mean"], np.float64)
    how = "loaded from the cache" if record.get("cached") else "meta-trained in this run"
    return (f"EPG loss: {setup.seeds} meta-seed(s) x {cfg.num_epochs} epochs x "
            f"{cfg.pop_size} members on random `{setup.env_name}` (inner loop "
            f"{cfg.inner_updates} updates x {cfg.steps_per_update} steps, buffer "
            f"{cfg.buffer_size}; alpha annealed 1 -> {cfg.alpha_final:g} over "
            f"{cfg.alpha_epochs} epochs, L2 {cfg.l2_coef:g} in the {cfg.l2_form!r} form), "
            f"{record['wall_s']:.0f} s, {how}; members' mean fitness per meta-seed, first "
            f"-> last epoch: "
            + ", ".join(f"{a:.0f} -> {b:.0f}" for a, b in zip(fm[:, 0], fm[:, -1],
                                                            strict=True))
            + f". Held out: {setup.tasks} tasks x {setup.agents} agents per meta-seed.")
