"""Meta-testing: fresh agents trained by a frozen meta-learned loss or objective.

``metareward meta-test epg --loss RUN_DIR --env pendulum`` loads the learned part of a
meta-training run (its newest good checkpoint; for EPG the loss parameters ``phi`` of
every meta-seed), samples held-out tasks from the env's task distribution, and trains
``agents`` fresh agents on each task with the frozen loss (EPG: ``alpha = 0``, no PPO
guidance, no reward input unless the loss was trained to read one). All runs (meta-seeds
x tasks x agents) are one vmapped, jitted program. It writes

* ``meta_test.json``: the settings, the tasks, every agent's final return and learning
  curve, and a summary per loss;
* ``meta_test.png``: return vs the agent's env steps, mean +- std over all runs of a loss;
* ``meta_test.md``: the summary table (also printed).

With ``compare_init`` the same agents are also trained by each meta-seed's loss at
initialisation (rebuilt from the run's seeds): the baseline a meta-learned loss must
beat. Python use::

    from metareward.runtime import meta_test
    learned, plan = meta_test.load_learned("runs/epg-pendulum-...")   # phi per meta-seed
    result = meta_test.run("runs/epg-pendulum-...", tasks=4, agents=2)
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from metareward import envs
from metareward.algos.config import ConfigError
from metareward.runtime import configs, driver
from metareward.runtime.paths import check_writable_dir
from metareward.runtime.rundir import RunDir


def load_learned(run_dir: str | Path) -> tuple[Any, driver.Plan]:
    """The meta-learned parameters of a run's newest good checkpoint.

    Args:
        run_dir: A meta-training run directory.

    Returns:
        ``(learned, plan)``: the meta-learned parameters (a pytree batched over the run's
        meta-seeds) and the run's plan.

    Raises:
        ValueError: If the run's algorithm is not a meta-learner.
    """
    plan, _, state, _ = driver.load(run_dir)
    if plan.algo.learned is None:
        raise ValueError(f"{run_dir} is a {plan.algo.name} run, which has nothing to "
                         "meta-test (not a meta-learner)")
    return plan.algo.learned(state), plan


@dataclasses.dataclass(frozen=True)
class MetaTestResult:
    """What :func:`run` measured; ``final_return [L, S, T, A]`` and ``curves [L, S, T, A,
    K]`` over losses (evolved, then init if compared), meta-seeds, tasks and agents."""

    labels: list[str]
    env_steps: np.ndarray
    final_return: np.ndarray
    curves: np.ndarray
    tasks: dict[str, np.ndarray]
    out: Path | None

    def summary(self) -> list[dict[str, Any]]:
        """One row per loss: its final return's mean and standard deviation over meta-seeds,
        tasks and agents, and its means per meta-seed and per task.

        Returns:
            A list of dicts with ``loss``, ``final_return_mean``, ``final_return_std``,
            ``per_meta_seed`` (``[S]`` floats) and ``per_task`` (``[T]`` floats).
        """
        rows = []
        for i, label in enumerate(self.labels):
            f = self.final_return[i]
            rows.append({
                "loss": label,
                "final_return_mean": float(np.mean(f)),
                "final_return_std": float(np.std(f)),
                "per_meta_seed": [float(x) for x in f.mean(axis=(1, 2))],
                "per_task": [float(x) for x in f.mean(axis=(0, 2))],
            })
        return rows

    def table(self) -> str:
        """:meth:`summary` as a Markdown table, one row per loss and one column per task.

        Returns:
            The table's lines joined by newlines.
        """
        rows = self.summary()
        n_tasks = self.final_return.shape[2]
        head = ("| loss | final return (mean ± std) | per meta-seed | "
                + " | ".join(f"task {t}" for t in range(n_tasks)) + " |")
        sep = "|" + "---|" * (3 + n_tasks)
        lines = [head, sep]
        for r in rows:
            lines.append(
                f"| {r['loss']} | {r['final_return_mean']:.1f} ± {r['final_return_std']:.1f} | "
                + ", ".join(f"{x:.1f}" for x in r["per_meta_seed"]) + " | "
                + " | ".join(f"{x:.1f}" for x in r["per_task"]) + " |")
        return "\n".join(lines)


def _check_like(learned_one: Any, template: Any, run_dir: str | Path, env_name: str) -> None:
    got = jax.tree.map(lambda x: tuple(x.shape), learned_one)
    want = jax.tree.map(lambda x: tuple(x.shape), template)
    if jax.tree.structure(got) != jax.tree.structure(want) or jax.tree.leaves(
            got) != jax.tree.leaves(want):
        diff = [f"{g} vs {w}" for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want),
                                              strict=False) if g != w][:3]
        raise ValueError(
            f"the learned parameters of {run_dir} do not fit {env_name!r} with this config "
            f"(shapes {', '.join(diff) or 'differ in structure'}; run's vs needed): a loss "
            "reads a fixed number of inputs per step, so meta-test it on an env with the "
            "same observation and action sizes")


def _binned(curves: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Means over windows of ``width`` updates (NaN: no episode ended), ``[..., K / w]``."""
    K = curves.shape[-1]
    n = math.ceil(K / width)
    pad = n * width - K
    c = np.concatenate([curves, np.full((*curves.shape[:-1], pad), np.nan)], axis=-1)
    c = c.reshape((*curves.shape[:-1], n, width))
    ok = ~np.isnan(c)
    s = np.where(ok, c, 0.0).sum(-1)
    cnt = ok.sum(-1)
    return np.where(cnt > 0, s / np.maximum(cnt, 1), np.nan), np.arange(n)


def _check_settings(out: str | Path | None, tasks: int | None, agents: int,
                    eval_episodes: int, seed: int) -> None:
    """Raises ``ConfigError`` (``ValueError`` for an ``out`` that is not a writable
    directory) on bad settings of :func:`run`, before the checkpoint is read and the
    agents trained."""
    if out is not None:
        check_writable_dir(out)
    for name, v in (("tasks", 1 if tasks is None else tasks), ("agents", agents),
                    ("eval_episodes", eval_episodes)):
        if not (isinstance(v, int) and not isinstance(v, bool) and v > 0):
            raise ConfigError(f"{name} must be an int > 0, got {v!r}")
    if not (isinstance(seed, int) and 0 <= seed < 2**32):
        raise ConfigError(f"seed must be an int in [0, 2**32), got {seed!r}")


def _test_env_name(run_dir: str | Path, plan: driver.Plan, env: str | None) -> str:
    """The env to meta-test on: ``env``, or the run's own (one env only)."""
    if env is None and "," in plan.env_name:
        raise ConfigError(f"{run_dir} meta-trained on several envs ({plan.env_name}): name "
                          "the env to meta-test on with --env")
    env_name = env or plan.env_name
    envs.describe(env_name)  # unknown env: ValueError listing the valid names
    return env_name


def _losses(learned: Any, plan: driver.Plan, learner: Any, run_dir: str | Path,
            env_name: str, compare_init: bool) -> tuple[Any, list[str]]:
    """``(stacked [L, S, ...], labels)``: the meta-learned parameters (checked to fit
    ``learner``), and with ``compare_init`` each meta-seed's at initialisation."""
    spec = plan.algo
    abstract = jax.eval_shape(learner.init, jax.random.PRNGKey(0))
    _check_like(jax.tree.map(lambda x: x[0], learned), spec.learned(abstract), run_dir,
                env_name)
    losses = [learned]
    labels = ["meta-learned"]
    if compare_init:  # each meta-seed's loss before meta-training
        losses.append(spec.learned(jax.vmap(learner.init)(plan.keys())))
        labels.append("initial")
    return jax.tree.map(lambda *x: jnp.stack(x), *losses), labels


def _held_out_tasks(environment: Any, spec: Any, env_name: str, tasks: int | None,
                    key: jax.Array) -> tuple[Any, int]:
    """``(held_out, tasks)``: ``tasks`` (default 4) tasks sampled with ``key`` from the
    env's task distribution, or the env itself as the one task when it has none."""
    dist = getattr(environment, "tasks", None)
    if dist is not None:
        tasks = 4 if tasks is None else tasks
        return jax.vmap(dist.sample)(jax.random.split(key, tasks)), tasks
    if spec.env_kwargs.get("randomize"):  # a learner meta-trained over a distribution
        raise ValueError(f"{env_name} is not a task distribution; build it with "
                         "randomize=True (--env-arg randomize=True)")
    # The env itself is the one test task (MetaGenRL: a new env, not a new task).
    tasks = 1 if tasks is None else tasks
    if tasks != 1:
        raise ConfigError(f"{env_name} has no task distribution: --tasks must be 1 "
                          f"(the env itself), got {tasks}")
    return jnp.zeros((1,), jnp.float32), tasks


def _train_agents(learner: Any, stacked: Any, held_out: Any, agent_keys: jax.Array,
                  eval_episodes: int) -> tuple[Any, Any, Any]:
    """``(curves, final, steps)`` of every loss x meta-seed x task x agent, one jitted
    program (``learner.meta_test``)."""

    def one(phi, task, key):
        m = learner.meta_test(phi, task, key, eval_episodes)
        return m["episode_return"], m["final_return"], m["env_steps"]

    per_agent = jax.vmap(one, in_axes=(None, None, 0))
    per_task = jax.vmap(per_agent, in_axes=(None, 0, None))
    per_seed = jax.vmap(per_task, in_axes=(0, None, None))
    per_loss = jax.vmap(per_seed, in_axes=(0, None, None))
    return jax.jit(per_loss)(stacked, held_out, agent_keys)


def run(
    run_dir: str | Path,
    env: str | None = None,
    *,
    tasks: int | None = None,
    agents: int = 2,
    seed: int = 0,
    eval_episodes: int = 10,
    overrides: Mapping[str, Any] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    compare_init: bool = False,
    out: str | Path | None = None,
) -> MetaTestResult:
    """Meta-tests the learned part of ``run_dir`` (see the module docstring).

    Args:
        run_dir: A meta-training run directory.
        env: The env to test on (default: the run's; it must have the same observation
            and action sizes).
        tasks: Held-out tasks sampled from the env's task distribution (default 4; must
            be 1 for an env without one).
        agents: Fresh agents trained on each task.
        seed: Picks the held-out tasks and the agents' keys (an int in ``[0, 2**32)``).
        eval_episodes: Episodes of each agent's final evaluation.
        overrides: Config keys changed for the test (e.g. EPG's ``inner_updates`` to
            train the agents longer than in meta-training).
        env_kwargs: Options for ``metareward.envs.make`` over the algorithm's (and, on
            the run's env, the run's).
        compare_init: Also train the agents with each meta-seed's loss at
            initialisation.
        out: Where the files go (``None``: ``RUN_DIR/meta-test-ENV``; it must be a
            directory or creatable, and writable).

    Returns:
        The :class:`MetaTestResult` (its ``out`` set to the directory written).

    Raises:
        ValueError: On bad input (a :class:`ConfigError` for bad settings or config
            keys), before anything compiles.
    """
    _check_settings(out, tasks, agents, eval_episodes, seed)
    learned, plan = load_learned(run_dir)
    spec = plan.algo
    env_name = _test_env_name(run_dir, plan, env)
    if out is None:
        out = Path(run_dir) / f"meta-test-{env_name}"
        check_writable_dir(out)
    config = configs.resolve_config(plan.config, None, overrides)
    kwargs = {**spec.env_kwargs, **plan.env_kwargs, **dict(env_kwargs or {})} if (
        env_name == plan.env_name) else {**spec.env_kwargs, **dict(env_kwargs or {})}
    environment = envs.make(env_name, **kwargs)
    learner = spec.make_train(config, [environment] if spec.multi_env else environment)
    stacked, labels = _losses(learned, plan, learner, run_dir, env_name, compare_init)

    k_task, k_agent = jax.random.split(jax.random.PRNGKey(seed))
    held_out, tasks = _held_out_tasks(environment, spec, env_name, tasks, k_task)
    agent_keys = jax.random.split(k_agent, agents)
    curves, final, steps = _train_agents(learner, stacked, held_out, agent_keys,
                                         eval_episodes)
    result = MetaTestResult(
        labels=labels,
        env_steps=np.asarray(steps)[0, 0, 0, 0],
        final_return=np.asarray(final),
        curves=np.asarray(curves),
        tasks={k: np.asarray(v) for k, v in held_out.items()} if isinstance(held_out, dict)
        else {"task": np.asarray(held_out)},
        out=None,
    )
    out = Path(out)
    write(result, out, {
        "run_dir": str(run_dir), "algo": spec.name, "env": env_name, "env_kwargs": kwargs,
        "tasks": tasks, "agents": agents, "seed": seed, "eval_episodes": eval_episodes,
        "overrides": dict(overrides or {}), "config": configs.config_to_dict(config),
        "episode_length": environment.spec.episode_length,
    })
    return dataclasses.replace(result, out=out)


def write(result: MetaTestResult, out: Path, settings: dict[str, Any]) -> None:
    """``meta_test.json``, ``meta_test.png`` and ``meta_test.md`` under ``out``.

    Args:
        result: The meta-test's result.
        out: The directory (created if needed).
        settings: The test's settings, stored in ``meta_test.json`` (``algo``, ``env``
            and ``episode_length`` are also read for the plot and the curves' bins).
    """
    out.mkdir(parents=True, exist_ok=True)
    K = result.curves.shape[-1]
    steps_per_update = int(result.env_steps[0])
    ep_len = settings.get("episode_length") or steps_per_update
    width = max(1, math.ceil(ep_len / steps_per_update))
    binned, idx = _binned(result.curves, width)  # [L, S, T, A, n]
    x = (np.minimum((idx + 1) * width, K)) * steps_per_update
    curves_json = {}
    for i, label in enumerate(result.labels):
        runs = binned[i].reshape(-1, binned.shape[-1])
        with warnings.catch_warnings():  # a window where no run had an episode: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(runs, 0), np.nanstd(runs, 0)
        curves_json[label] = {"env_steps": x.tolist(), "mean": _nan_list(mean),
                              "std": _nan_list(std)}
    record = {
        **settings,
        "held_out_tasks": {k: v.tolist() for k, v in result.tasks.items()},
        "summary": result.summary(),
        "final_return": {lab: result.final_return[i].tolist()
                         for i, lab in enumerate(result.labels)},
        "curves": curves_json,
        "curves_per_update": {lab: _nan_list(result.curves[i])
                              for i, lab in enumerate(result.labels)},
        "curve_note": (f"episode returns of the episodes that ended in windows of {width} "
                       f"updates ({width * steps_per_update} env steps), mean +- std over "
                       "all meta-seeds x tasks x agents"),
    }
    RunDir.write_json(out / "meta_test.json", record)
    (out / "meta_test.md").write_text(result.table() + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label, c in curves_json.items():
        m = np.array(c["mean"], dtype=float)
        s = np.array(c["std"], dtype=float)
        (line,) = ax.plot(c["env_steps"], m, label=f"{label} loss")
        ax.fill_between(c["env_steps"], m - s, m + s, color=line.get_color(), alpha=0.2)
    n_runs = int(np.prod(result.final_return.shape[1:]))
    ax.set_xlabel("env steps (per agent)")
    ax.set_ylabel("episode return")
    ax.set_title(f"meta-test {settings.get('algo', '')} on {settings.get('env', '')}: "
                 f"{n_runs} fresh agents (mean ± std)", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "meta_test.png")
    plt.close(fig)


def _nan_list(a: np.ndarray) -> Any:
    return np.where(np.isnan(a), None, a).tolist() if np.ndim(a) else (
        None if np.isnan(a) else float(a))


__all__ = ["MetaTestResult", "load_learned", "run", "write"]
