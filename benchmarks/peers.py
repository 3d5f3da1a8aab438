"""PPO against its JAX peers, each on the peers' own configurations: PureJaxRL, rejax and
brax, at 1, 16 and 64 seeds vmapped, on CartPole, Pendulum and MinAtar Space Invaders.

Every measurement is a fresh process (its compile time and peak memory are its own), the
learners of a setting run in an order rotated each round, and each round gives a paired
ratio ours / peer of env-steps/s; the table shows medians over rounds. Reported per
setting and learner: env-steps/s after compilation (all seeds together), compile time,
peak resident memory of the process, final return (mean over seeds).

The peers are installed as packages, never copied into the project:

* **rejax 0.1.3** (``pip install rejax==0.1.3``) and PureJaxRL run in a virtual env of
  their own (:data:`GYMNAX_PEER_REQUIREMENTS`, built on first use under
  ``~/.cache/metareward/``; ``$METAREWARD_GYMNAX_PEER_VENV`` moves it), on this
  project's jax / flax / optax / gymnax pins; ``benchmarks/_gymnax_peer_ppo.py`` drives
  them.
* **PureJaxRL** is not on PyPI: give a checkout of its repository with
  ``--purejaxrl-dir DIR`` (the directory holding its ``ppo.py`` and ``wrappers.py``),
  or its rows are skipped. Its ``ppo.py`` is discrete-action only, so it has no
  Pendulum rows.
* **brax's PPO** runs in its jax 0.7.2 env (``benchmarks/peer.py``), at 1 seed (its
  trainer has no seed axis), on CartPole and Pendulum (``_brax_peer_ppo.py`` adapts
  those two), on the others' configurations and on its own defaults
  (:data:`BRAX_DEFAULT`: one env, 5,120 steps per update).

Both gymnax peers were written for gymnax < 1.0 (a five-value ``step``); the worker
adapts gymnax 1.0's six values (``done = terminated | truncated``). A process that runs
past ``--timeout`` is recorded as hung (PureJaxRL's vmapped PPO deadlocked XLA:CPU's
default scheduler in issue 37's runs: a batched LAPACK QR of its orthogonal init).

    python benchmarks/peers.py --purejaxrl-dir ~/src/purejaxrl/purejaxrl
    python benchmarks/peers.py --settings cartpole-purejaxrl-1 --rounds 1   # one row
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _harness
from benchmarks.peer import clean_env, ensure_venv, run_peer

#: The gymnax peers' env: rejax and what PureJaxRL's ``ppo.py`` / ``wrappers.py`` import
#: (distrax, and brax and navix for wrappers it does not use here), on this project's
#: pins of jax, flax, optax and gymnax.
GYMNAX_PEER_REQUIREMENTS: list[str] = [
    "jax==0.10.2", "jaxlib==0.10.2", "flax==0.12.8", "optax==0.2.8", "gymnax==1.0.1",
    "six==1.17.0", "rejax==0.1.3", "distrax==0.1.9", "brax==0.14.2", "navix==0.7.4",
]

#: ``pip freeze`` of the env the table was measured with.
GYMNAX_PEER_CONSTRAINTS: list[str] = """absl-py==2.5.1 aiofiles==25.1.0 annotated-types==0.8.0
anyio==4.16.0 astroid==4.4.0 attrs==26.1.0 black==26.10.1 blinker==1.9.0 brax==0.14.2
certifi==2026.10.19.post1 charset-normalizer==3.5.3 chex==0.1.92 click==8.5.1
cloudpickle==3.1.3 contourpy==1.3.3 cwevals==0.0.1b1 cycler==0.12.1 decorator==5.3.2
dill==0.4.1 distrax==0.1.9 distro==1.9.0 dm-env==1.6 dm-tree==0.1.10
docstring_parser==0.18.0 etils==1.15.0 Farama-Notifications==0.0.6 flake8==7.5.0
Flask==3.1.3 flask-cors==6.0.5 flax==0.12.8 fonttools==4.68.0 fsspec==2026.9.0 gast==0.7.0
glfw==2.11.0 googleapis-common-protos==1.76.0 gymnasium==1.3.0 gymnax==1.0.1 h11==0.16.0
httpcore==1.0.9 httpx==0.29.0 humanize==4.17.0 idna==3.20 iniconfig==2.3.1 isort==9.0.2
itsdangerous==2.2.0 jax==0.10.2 jaxlib==0.10.2 jaxopt==0.8.5 Jinja2==3.1.6 kiwisolver==1.5.1
markdown-it-py==4.3.0 MarkupSafe==3.0.4 matplotlib==3.11.2 mccabe==0.7.0 mdurl==0.1.2
ml_collections==1.1.0 ml_dtypes==0.7.0 msgpack==1.2.4 mujoco==4.0.0 mujoco-core==4.0.0
mujoco-mjx==3.17.0 mujoco-studio==4.0.0 mypy_extensions==1.2.0 Navix==0.7.4 numpy==2.4.6
opentelemetry-api==1.45.2 opentelemetry-exporter-http-transport==0.66b2
opentelemetry-exporter-otlp-common==0.66b2 opentelemetry-exporter-otlp-proto-common==1.45.2
opentelemetry-exporter-otlp-proto-http==1.45.2 opentelemetry-proto==1.45.2
opentelemetry-sdk==1.45.2 opentelemetry-semantic-conventions==0.66b2 opt_einsum==3.4.0
optax==0.2.8 orbax-checkpoint==0.12.8 packaging==26.4 pandas==3.1.1 pathspec==1.1.1
pillow==13.0.0 platformdirs==4.14.9 pluggy==1.7.0 prometheus_client==0.26.0 protobuf==7.36.2
psutil==7.2.2 pycodestyle==2.15.0 pydantic==2.14.4 pydantic_core==2.50.5 pyflakes==4.1.0
Pygments==2.21.0 pylint==4.1.5 PyOpenGL==3.1.10 pyparsing==3.3.3 pytest==9.2.0
python-dateutil==4.0.0 pytokens==0.4.1 PyYAML==6.0.3 rejax==0.1.3 requests==2.34.2
rich==15.0.0 rlax==0.1.9 scipy==1.17.1 seaborn==0.13.2 setuptools-scm==10.3.4
simplejson==4.3.0 six==1.17.0 sniffio==1.3.1 tensorboardX==2.6.5 tensorstore==0.1.86
tfp-nightly==0.26.0.dev20261027 tomlkit==0.15.3 toolz==1.2.0 treescope==0.1.10
trimesh==5.2.0 typeguard==4.6.1 typing-inspection==0.4.5 typing_extensions==4.16.0
tyro==1.0.17 tzdata==2026.6 urllib3==2.8.0 uvloop==0.23.0 vcs-versioning==2.6.0
wandb==0.31.0 websockets==17.4 Werkzeug==3.1.9 wrapt==2.5.2 xxhash==4.1.0
zipp==4.1.2""".split()

GYMNAX_PEER_VENV_ENV_VAR = "METAREWARD_GYMNAX_PEER_VENV"
DEFAULT_GYMNAX_PEER_VENV = Path("~/.cache/metareward/gymnax-peer-venv")
GYMNAX_PEER_SCRIPT = Path(__file__).with_name("_gymnax_peer_ppo.py")

#: benchmark env name -> gymnax id
GYMNAX_IDS = {"cartpole": "CartPole-v1", "pendulum": "Pendulum-v1",
              "space-invaders-minatar": "SpaceInvaders-MinAtar"}


@dataclasses.dataclass(frozen=True)
class PPOSettings:
    """One PPO configuration in neutral terms, mapped onto each learner's fields by
    :func:`ours_config`, :func:`rejax_config`, :func:`purejaxrl_config` and
    :func:`brax_args` (the mapping table is in ``benchmarks/RESULTS.md``)."""

    source: str
    learning_rate: float
    anneal_lr: bool
    num_envs: int
    num_steps: int
    num_epochs: int
    num_minibatches: int
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    vf_clip: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float | None = 0.5
    activation: str = "tanh"
    hidden: tuple[int, ...] = (64, 64)
    normalize_obs: bool = False
    reward_scale: float = 1.0
    #: The value net's hidden layers (``None``: ``hidden``).
    value_hidden: tuple[int, ...] | None = None
    #: Continuous actions: a tanh-squashed Gaussian (brax's ``tanh_normal``).
    squash: bool = False
    adam_eps: float = 1e-5
    #: brax's ``unroll_length`` when it is not the whole rollout (``num_steps``): brax
    #: then takes ``num_steps // brax_unroll`` unrolls of each env per training step and
    #: computes GAE within each unroll.
    brax_unroll: int | None = None


#: PureJaxRL's ``ppo.py`` CartPole config (its ``__main__``).
PUREJAXRL_CARTPOLE = PPOSettings("PureJaxRL ppo.py", 2.5e-4, True, 4, 128, 4, 4)
#: PureJaxRL's MinAtar config (its ``examples/brax_minatar.ipynb``).
PUREJAXRL_MINATAR = PPOSettings("PureJaxRL brax_minatar.ipynb", 5e-3, True, 64, 128, 4, 8,
                                activation="relu")
#: rejax's own CartPole config (``configs/gymnax/cartpole.yaml``, ``ppo``).
REJAX_CARTPOLE = PPOSettings("rejax configs/gymnax/cartpole.yaml", 7.5e-4, False, 5, 100,
                             5, 5)
#: brax's own ``ppo.train`` defaults (brax 0.14.2: 1 env, ``batch_size`` 32 x
#: ``num_minibatches`` 16 unrolls of ``unroll_length`` 10 per training step, 2 epochs,
#: lr 1e-4 constant, entropy 1e-4, discount 0.9, clip 0.3, no gradient clip, Adam eps
#: 1e-8) with ``make_ppo_networks``' defaults (policy 4 x 32, value 5 x 256, swish,
#: ``tanh_normal``); ours takes the same 5,120 steps as one rollout.
BRAX_DEFAULT = PPOSettings("brax ppo.train / make_ppo_networks defaults", 1e-4, False, 1,
                           5120, 2, 16, gamma=0.9, clip_eps=0.3, vf_clip=False,
                           ent_coef=1e-4, max_grad_norm=None, activation="swish",
                           hidden=(32,) * 4, value_hidden=(256,) * 5, squash=True,
                           adam_eps=1e-8, brax_unroll=10)
#: This project's Pendulum preset (``ppo.PRESETS["pendulum"]``), for everyone.
OURS_PENDULUM = PPOSettings("metareward ppo.PRESETS['pendulum']", 1e-3, True, 16, 128, 10,
                            16, gamma=0.95, vf_clip=False, ent_coef=0.0, normalize_obs=True,
                            reward_scale=0.1)


@dataclasses.dataclass(frozen=True)
class Setting:
    """A row of the table: an env, a configuration, a number of vmapped seeds and the env
    steps each seed trains for (fewer per seed with more seeds, to bound the time)."""

    name: str
    env: str
    ppo: PPOSettings
    seeds: int
    steps_per_seed: int
    learners: tuple[str, ...]


SETTINGS: dict[str, Setting] = {s.name: s for s in [
    Setting("cartpole-purejaxrl-1", "cartpole", PUREJAXRL_CARTPOLE, 1, 500_000,
            ("ours", "rejax", "purejaxrl", "brax")),
    Setting("cartpole-purejaxrl-16", "cartpole", PUREJAXRL_CARTPOLE, 16, 131_072,
            ("ours", "rejax", "purejaxrl")),
    Setting("cartpole-purejaxrl-64", "cartpole", PUREJAXRL_CARTPOLE, 64, 32_768,
            ("ours", "rejax", "purejaxrl")),
    Setting("cartpole-rejax-1", "cartpole", REJAX_CARTPOLE, 1, 100_000,
            ("ours", "rejax", "purejaxrl")),
    Setting("pendulum-ours-1", "pendulum", OURS_PENDULUM, 1, 262_144,
            ("ours", "rejax", "brax")),
    Setting("pendulum-ours-16", "pendulum", OURS_PENDULUM, 16, 65_536, ("ours", "rejax")),
    Setting("pendulum-ours-64", "pendulum", OURS_PENDULUM, 64, 16_384, ("ours", "rejax")),
    Setting("cartpole-brax-1", "cartpole", BRAX_DEFAULT, 1, 163_840, ("ours", "brax")),
    Setting("pendulum-brax-1", "pendulum", BRAX_DEFAULT, 1, 163_840, ("ours", "brax")),
    Setting("minatar-purejaxrl-1", "space-invaders-minatar", PUREJAXRL_MINATAR, 1, 1_048_576,
            ("ours", "rejax", "purejaxrl")),
]}


def ours_config(p: PPOSettings, total_steps: int, discrete: bool = False) -> dict[str, Any]:
    """``metareward.algos.ppo.Config`` fields for ``p``.

    Args:
        p: the settings.
        total_steps: env steps of one seed.
        discrete: the env's actions are discrete (``p.squash`` does not apply).

    Returns:
        The keyword arguments of ``ppo.Config``.
    """
    return dict(num_envs=p.num_envs, num_steps=p.num_steps, total_steps=total_steps,
                learning_rate=p.learning_rate, anneal_lr=p.anneal_lr, num_epochs=p.num_epochs,
                num_minibatches=p.num_minibatches, gamma=p.gamma, gae_lambda=p.gae_lambda,
                clip_eps=p.clip_eps, vf_clip_eps=p.clip_eps if p.vf_clip else None,
                ent_coef=p.ent_coef, vf_coef=p.vf_coef, max_grad_norm=p.max_grad_norm,
                activation=p.activation, hidden=p.hidden, value_hidden=p.value_hidden,
                squash=p.squash and not discrete, adam_eps=p.adam_eps,
                normalize_obs=p.normalize_obs, normalize_reward=False,
                reward_scale=p.reward_scale)


def rejax_config(p: PPOSettings, total_steps: int) -> dict[str, Any]:
    """rejax ``PPO.create`` fields for ``p``. rejax has no learning-rate annealing, no
    reward scale and always clips the value loss (with ``clip_eps``).

    Args:
        p: the settings.
        total_steps: env steps of one seed.

    Returns:
        The rejax config dict.
    """
    return dict(num_envs=p.num_envs, num_steps=p.num_steps, num_epochs=p.num_epochs,
                num_minibatches=p.num_minibatches, learning_rate=p.learning_rate,
                max_grad_norm=p.max_grad_norm, total_timesteps=total_steps, gamma=p.gamma,
                gae_lambda=p.gae_lambda, clip_eps=p.clip_eps, ent_coef=p.ent_coef,
                vf_coef=p.vf_coef, normalize_observations=p.normalize_obs,
                agent_kwargs={"activation": p.activation,
                              "hidden_layer_sizes": list(p.hidden)})


def purejaxrl_config(p: PPOSettings, total_steps: int) -> dict[str, Any]:
    """PureJaxRL's ``ppo.py`` config dict for ``p``. Its network is fixed at 64 x 64; it
    clips the value loss, has no observation normalisation and no reward scale.

    Args:
        p: the settings.
        total_steps: env steps of one seed.

    Returns:
        The PureJaxRL config dict.
    """
    return {"LR": p.learning_rate, "NUM_ENVS": p.num_envs, "NUM_STEPS": p.num_steps,
            "TOTAL_TIMESTEPS": total_steps, "UPDATE_EPOCHS": p.num_epochs,
            "NUM_MINIBATCHES": p.num_minibatches, "GAMMA": p.gamma,
            "GAE_LAMBDA": p.gae_lambda, "CLIP_EPS": p.clip_eps, "ENT_COEF": p.ent_coef,
            "VF_COEF": p.vf_coef, "MAX_GRAD_NORM": p.max_grad_norm,
            "ACTIVATION": p.activation, "ANNEAL_LR": p.anneal_lr}


def brax_args(p: PPOSettings, total_steps: int) -> dict[str, Any]:
    """``benchmarks.peer.run_peer`` arguments for ``p`` (brax's trainer has no
    learning-rate schedule and no value clipping, and its Adam's eps is optax's 1e-8).

    Args:
        p: the settings.
        total_steps: env steps of the run.

    Returns:
        The keyword arguments.
    """
    unroll = p.brax_unroll or p.num_steps
    unrolls = p.num_envs * (p.num_steps // unroll)  # env-unrolls per training step
    return dict(num_envs=p.num_envs, unroll_length=unroll,
                num_minibatches=p.num_minibatches, num_epochs=p.num_epochs,
                batch_size=unrolls // p.num_minibatches,
                total_steps=total_steps, learning_rate=p.learning_rate, gamma=p.gamma,
                gae_lambda=p.gae_lambda, clip_eps=p.clip_eps, entropy_coef=p.ent_coef,
                vf_coef=p.vf_coef, max_grad_norm=p.max_grad_norm,
                normalize_obs=p.normalize_obs, reward_scale=p.reward_scale,
                hidden=p.hidden, value_hidden=p.value_hidden, activation=p.activation,
                distribution="tanh_normal" if p.squash else "normal", num_eval_envs=128)


def ours_worker(setting: Setting, seed: int) -> dict[str, Any]:
    """Compiles and times one training run of our PPO (all seeds in one vmapped program),
    then evaluates it (128 episodes of each seed's final policy).

    Args:
        setting: the row.
        seed: the first PRNG seed.

    Returns:
        The measurement.
    """
    import jax
    import numpy as np

    from metareward import envs
    from metareward.algos import ppo

    env = envs.make(setting.env)
    discrete = env.spec.discrete
    cfg = ppo.Config(**ours_config(setting.ppo, setting.steps_per_seed, discrete))
    trainer = ppo.make_train(cfg, env)
    keys = jax.random.split(jax.random.PRNGKey(seed), setting.seeds)
    batched = setting.seeds > 1
    arg = keys if batched else keys[0]
    train = jax.jit(jax.vmap(trainer.train) if batched else trainer.train)
    t0 = time.perf_counter()
    compiled = train.lower(arg).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, _ = jax.block_until_ready(compiled(arg))
    seconds = time.perf_counter() - t0
    ev = lambda s, k: trainer.evaluate(s, k, 128)
    ekeys = jax.random.split(jax.random.PRNGKey(seed + 1), setting.seeds)
    ret = jax.jit(jax.vmap(ev) if batched else ev)(state, ekeys if batched else ekeys[0])
    steps = trainer.num_updates * cfg.num_envs * cfg.num_steps * setting.seeds
    return {"seconds": seconds, "env_steps": steps, "final_return": float(np.mean(ret)),
            **_harness.process_facts(compile_s)}


def gymnax_peer_python() -> Path:
    """The gymnax peers' venv python, built on first use.

    Returns:
        Its path.
    """
    venv = Path(os.environ.get(GYMNAX_PEER_VENV_ENV_VAR) or DEFAULT_GYMNAX_PEER_VENV)
    return ensure_venv(venv.expanduser(), GYMNAX_PEER_REQUIREMENTS, GYMNAX_PEER_CONSTRAINTS)


def measure(learner: str, setting: Setting, seed: int, timeout: float,
            purejaxrl_dir: str | None) -> dict[str, Any]:
    """One measurement of ``learner`` on ``setting`` in a fresh process.

    Args:
        learner: ``ours``, ``rejax``, ``purejaxrl`` or ``brax``.
        setting: the row.
        seed: the first PRNG seed.
        timeout: seconds before the process counts as hung and is killed.
        purejaxrl_dir: PureJaxRL's checkout (its ``ppo.py``).

    Returns:
        ``{"seconds", "env_steps", "compile_s", "peak_rss_mb", "final_return", ...}``, or
        ``{"hung": True}``.
    """
    steps = setting.steps_per_seed
    try:
        if learner == "brax":
            r = run_peer(setting.env, seed=seed, timeout=timeout,
                         **brax_args(setting.ppo, steps))
            return {"seconds": r["env_steps"] / r["steps_per_s"], **r}
        if learner == "ours":
            cmd = [sys.executable, __file__, "--worker", setting.name, "--seed", str(seed)]
            env = None
        else:
            cfg = (rejax_config if learner == "rejax" else purejaxrl_config)(setting.ppo, steps)
            cmd = [str(gymnax_peer_python()), str(GYMNAX_PEER_SCRIPT), "--learner", learner,
                   "--gymnax-id", GYMNAX_IDS[setting.env], "--config", json.dumps(cfg),
                   "--seeds", str(setting.seeds), "--seed", str(seed)]
            if learner == "purejaxrl":
                cmd += ["--purejaxrl-dir", str(purejaxrl_dir)]
            env = clean_env()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                             check=False)
    except subprocess.TimeoutExpired:
        return {"hung": True}
    if out.returncode != 0:
        raise RuntimeError(f"{learner} on {setting.name} failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if "seconds" in r and isinstance(r["seconds"], list):
        r["seconds"] = r["seconds"][0]
    return r


def summarise(setting: Setting, runs: dict[str, list[dict]]) -> dict[str, Any]:
    """Medians over rounds and paired ratios ours / peer for one setting.

    Args:
        setting: the row.
        runs: learner -> the measurement of each round.

    Returns:
        The setting's summary.
    """
    out: dict[str, Any] = {"setting": setting.name, "env": setting.env,
                           "config": dataclasses.asdict(setting.ppo), "seeds": setting.seeds,
                           "steps_per_seed": setting.steps_per_seed, "learners": {}}
    for learner, ms in runs.items():
        done = [m for m in ms if not m.get("hung")]
        row: dict[str, Any] = {"rounds": len(ms), "hung": len(ms) - len(done)}
        if done:
            sps = [m["env_steps"] / m["seconds"] for m in done]
            row.update(env_steps_per_s=statistics.median(sps), env_steps_per_s_all=sps,
                       compile_s=statistics.median(m["compile_s"] for m in done),
                       peak_rss_mb=statistics.median(m["peak_rss_mb"] for m in done),
                       final_return=statistics.median(m["final_return"] for m in done),
                       env_steps=done[0]["env_steps"])
        if learner != "ours":
            pairs = [o["env_steps"] / o["seconds"] / (m["env_steps"] / m["seconds"])
                     for o, m in zip(runs["ours"], ms, strict=True)
                     if not o.get("hung") and not m.get("hung")]
            row["ours_over_peer_per_round"] = pairs
            row["ours_over_peer"] = statistics.median(pairs) if pairs else None
        out["learners"][learner] = row
    return out


def print_table(rows: list[dict]) -> None:
    """Prints the summaries as a table.

    Args:
        rows: :func:`summarise` results.
    """
    head = (f"{'setting':24} {'learner':10} {'steps/s':>9} {'ours/peer':>9} {'compile s':>9} "
            f"{'peak MB':>8} {'return':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        for learner, x in r["learners"].items():
            if "env_steps_per_s" not in x:
                print(f"{r['setting']:24} {learner:10} {'hung':>9}")
                continue
            ratio = x.get("ours_over_peer")
            print(f"{r['setting']:24} {learner:10} {x['env_steps_per_s']:9.0f} "
                  f"{'' if ratio is None else f'{ratio:.2f}x':>9} {x['compile_s']:9.1f} "
                  f"{x['peak_rss_mb']:8.0f} {x['final_return']:8.1f}")


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark (or, with ``--worker``, one measurement of ours).

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The results written to ``--json``.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--learners", nargs="+", default=["ours", "rejax", "purejaxrl", "brax"],
                   choices=["ours", "rejax", "purejaxrl", "brax"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds after which a process counts as hung")
    p.add_argument("--purejaxrl-dir", default=None,
                   help="PureJaxRL checkout's purejaxrl/ directory (its rows are skipped "
                        "without it)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=str(_harness.RESULTS / "peers.json"))
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds {args.rounds}: must be at least 1")
    if args.purejaxrl_dir is not None and not (Path(args.purejaxrl_dir) / "ppo.py").is_file():
        p.error(f"--purejaxrl-dir {args.purejaxrl_dir}: no ppo.py there")
    if args.worker:
        print(json.dumps(ours_worker(SETTINGS[args.worker], args.seed)))
        return {}
    learners = [x for x in args.learners if x != "purejaxrl" or args.purejaxrl_dir]
    rows = []
    for name in args.settings:
        setting = SETTINGS[name]
        who = [x for x in setting.learners if x in learners and x != "ours"]
        runs: dict[str, list[dict]] = {x: [] for x in ["ours", *who]}
        for r in range(args.rounds):
            for learner in _harness.rotated(list(runs), r):
                m = measure(learner, setting, args.seed, args.timeout, args.purejaxrl_dir)
                runs[learner].append(m)
                sps = "hung" if m.get("hung") else f"{m['env_steps'] / m['seconds']:.0f}"
                print(f"[round {r}] {name} {learner}: {sps} env-steps/s", flush=True)
        rows.append(summarise(setting, runs))
    print_table(rows)
    command = " ".join(["python", "benchmarks/peers.py", *(argv or sys.argv[1:])])
    path = _harness.write_results(args.json, "peers", rows, command=command,
                                  rounds=args.rounds)
    print(f"wrote {path}")
    return {"rows": rows}


if __name__ == "__main__":
    main()
