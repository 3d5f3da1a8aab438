r"""Brax PPO on gymnax environments: the "peer" side of the throughput benchmark.

This script runs INSIDE the isolated peer virtual env built by ``benchmarks/peer.py``
(jax 0.7.2 / brax 0.14.2 / gymnax 1.0.1), never in the main project's env: brax.training
calls ``jax.device_put_replicated``, which newer jax no longer has.  It imports only jax,
brax (+ flax, which brax depends on), gymnax, numpy and the stdlib.

It wraps a gymnax environment as a ``brax.envs.base.Env``, trains it with brax's own
``brax.training.agents.ppo.train.train`` and writes one JSON record (throughput, compile
time, final return, peak memory, versions, hyper-parameters) to ``--json`` and stdout.

Example::

    python benchmarks/_brax_peer_ppo.py --env pendulum --num-envs 8 --unroll-length 128 \
        --num-minibatches 4 --num-epochs 4 --total-steps 200000 --learning-rate 3e-4 \
        --gamma 0.99 --gae-lambda 0.95 --clip-eps 0.2 --entropy-coef 0.0 --vf-coef 0.5 \
        --max-grad-norm 0.5 --normalize-obs --reward-scale 0.1 --json /tmp/peer.json
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
from _memory import peak_rss_mb  # benchmarks/ is on sys.path when run as a script
from brax.envs.base import Env, State, Wrapper
from brax.envs.wrappers.training import EpisodeWrapper, VmapWrapper
from brax.training.agents.ppo import networks as ppo_networks
from brax.training.agents.ppo import train as ppo_train
from flax import linen

#: benchmark env name -> (gymnax id, time limit applied by brax's EpisodeWrapper)
ENVS: dict[str, tuple[str, int]] = {
    "pendulum": ("Pendulum-v1", 200),
    "cartpole": ("CartPole-v1", 500),
}

ACTION_ADAPTERS: dict[str, str] = {
    # brax's 'normal' distribution has no squashing: samples are unbounded.
    "pendulum": "torque = 2 * clip(a, -1, 1)  (brax action in [-1, 1] -> gymnax [-2, 2])",
    # brax PPO only has continuous (normal / tanh_normal) action distributions.
    "cartpole": "continuous->discrete threshold: 1-d continuous a, discrete action = int(a > 0)",
}

TIMING_METHOD = (
    "brax.train runs num_evals-1 equally sized training epochs (one pmapped lax.scan over "
    "training steps each); brax times each epoch with block_until_ready and reports the "
    "cumulative 'training/walltime' (evals excluded) to progress_fn. epoch_times_s are its "
    "differences. Epoch 0 includes tracing+XLA compilation of the training epoch, so "
    "compile_s = epoch_times_s[0] - median(epoch_times_s[1:]) and steps_per_s (steady "
    "state) = env steps of epochs 1.. / their summed time. jax_compile_events_s sums "
    "jax.monitoring trace/lower/backend-compile durations of every jitted function in the "
    "run (training epoch, env reset, evaluator) as a cross-check. wall_s is the whole "
    "train() call (all compiles, initial + per-epoch evals included)."
)


def _strong(tree: Any) -> Any:
    """Return ``tree`` with every leaf as a jax array of fixed (non-weak) dtype.

    gymnax states hold Python ints (``time=0``) and weakly typed scalars; brax's scans
    and ``jnp.where`` based auto-reset need carry leaves whose dtypes never change.
    """
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)


class GymnaxBraxEnv(Env):
    """A gymnax environment exposed through brax's ``Env`` interface.

    Single-episode dynamics only: gymnax's ``reset_env`` / ``step_env`` (not the
    auto-resetting ``step``).  ``pipeline_state`` holds the gymnax env state; the rng
    lives in ``state.info['rng']`` and is split every step.  ``done`` is gymnax's
    natural termination only; time limits and auto-reset come from brax's wrappers
    (``EpisodeWrapper``/``AutoResetWrapper`` added by ``ppo.train(episode_length=...)``).
    """

    def __init__(self, name: str) -> None:
        """Build the wrapper for benchmark env ``name`` ('pendulum' or 'cartpole')."""
        if name not in ENVS:
            raise ValueError(f"unknown env {name!r}; expected one of {sorted(ENVS)}")
        self.name = name
        self.gymnax_id, self.episode_length = ENVS[name]
        self._env, self._params = gymnax.make(self.gymnax_id)
        self._obs_size = int(np.prod(self._env.observation_space(self._params).shape))

    @property
    def observation_size(self) -> int:
        """Flat observation size."""
        return self._obs_size

    @property
    def action_size(self) -> int:
        """Continuous action size brax's policy emits (1 for both envs)."""
        return 1

    @property
    def backend(self) -> str:
        """Physics backend name (gymnax, not a brax pipeline)."""
        return "gymnax"

    def _to_gymnax_action(self, action: jax.Array) -> jax.Array:
        """Map brax's continuous action to gymnax's action space."""
        if self.name == "pendulum":
            max_torque = self._params.max_torque
            return max_torque * jnp.clip(action, -1.0, 1.0)
        return (action[0] > 0).astype(jnp.int32)

    def reset(self, rng: jax.Array) -> State:
        """Start a new episode; keeps a fresh rng in ``info['rng']``."""
        rng, key_reset = jax.random.split(rng)
        obs, env_state = self._env.reset_env(key_reset, self._params)
        return State(
            pipeline_state=_strong(env_state),
            obs=jnp.asarray(obs, jnp.float32),
            reward=jnp.zeros((), jnp.float32),
            done=jnp.zeros((), jnp.float32),
            metrics={},
            info={"rng": rng},
        )

    def step(self, state: State, action: jax.Array) -> State:
        """Advance one step with gymnax's raw (non-resetting) dynamics."""
        rng, key_step = jax.random.split(state.info["rng"])
        obs, env_state, reward, done, _ = self._env.step_env(
            key_step, state.pipeline_state, self._to_gymnax_action(action), self._params
        )
        # Update in place: brax's wrappers keep their own keys (steps, truncation,
        # first_obs, episode_metrics, ...) in the same dict.
        state.info.update(rng=rng)
        return state.replace(
            pipeline_state=_strong(env_state),
            obs=jnp.asarray(obs, jnp.float32),
            reward=jnp.asarray(reward, jnp.float32).reshape(()),
            done=jnp.asarray(done, jnp.float32).reshape(()),
        )


class ResampleAutoResetWrapper(Wrapper):
    """Auto-reset that draws a FRESH initial state (gymnax semantics).

    brax's own ``AutoResetWrapper`` puts a finished env back into the initial state it
    was first reset to (``info['first_pipeline_state']``), so with ``num_envs`` envs the
    whole run only ever starts from ``num_envs`` distinct states.  This wrapper instead
    calls the wrapped env's ``reset`` with a key split off ``info['rng']`` (carried
    forward), like gymnax's auto-resetting ``step``.  Opt-in via ``--autoreset resample``.
    """

    def reset(self, rng: jax.Array) -> State:
        """Reset the (batched) wrapped env."""
        return self.env.reset(rng)

    def step(self, state: State, action: jax.Array) -> State:
        """Step; envs that finish get a freshly sampled initial state and observation."""
        if "steps" in state.info:
            steps = state.info["steps"]
            state.info.update(steps=jnp.where(state.done, jnp.zeros_like(steps), steps))
        keys = jax.vmap(jax.random.split)(state.info["rng"])
        state.info.update(rng=keys[:, 0])
        fresh = jax.vmap(self.env.unwrapped.reset)(keys[:, 1])
        state = self.env.step(state.replace(done=jnp.zeros_like(state.done)), action)
        done = state.done

        def where_done(new: jax.Array, old: jax.Array) -> jax.Array:
            return jnp.where(done.reshape(done.shape + (1,) * (old.ndim - 1)), new, old)

        return state.replace(
            pipeline_state=jax.tree.map(where_done, fresh.pipeline_state, state.pipeline_state),
            obs=where_done(fresh.obs, state.obs),
        )


def wrap_resample(
    env: Env, episode_length: int = 1000, action_repeat: int = 1, randomization_fn: Any = None
) -> Wrapper:
    """brax's training wrapper stack with :class:`ResampleAutoResetWrapper` on top."""
    if randomization_fn is not None:
        raise ValueError("domain randomization is not supported here")
    return ResampleAutoResetWrapper(EpisodeWrapper(VmapWrapper(env), episode_length, action_repeat))


AUTORESET_MODES: dict[str, str] = {
    "brax": "brax AutoResetWrapper: a finished env restarts from ITS OWN first initial state",
    "resample": "ResampleAutoResetWrapper: a finished env restarts from a fresh random state",
}


ACTIVATIONS: dict[str, Any] = {"tanh": linen.tanh, "swish": linen.swish, "relu": linen.relu}

#: --distribution -> (make_ppo_networks keywords, description for the record)
DISTRIBUTIONS: dict[str, tuple[dict[str, Any], str]] = {
    # state-independent std (exp of a log-std parameter, init 1.0); samples are NOT
    # tanh-squashed (the env adapter clips)
    "normal": (dict(distribution_type="normal", noise_std_type="log", init_noise_std=1.0,
                    state_dependent_std=False),
               "normal, state-independent std (noise_std_type='log', init 1.0)"),
    # make_ppo_networks' own defaults
    "tanh_normal": (dict(distribution_type="tanh_normal", noise_std_type="scalar",
                         init_noise_std=1.0, state_dependent_std=False),
                    "tanh_normal, state-independent std (noise_std_type='scalar', init 1.0)"),
}


def _float_or_none(text: str) -> float | None:
    """``None`` for 'none', else the float."""
    return None if text.lower() == "none" else float(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (flags mirror ``benchmarks.peer.run_peer``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", required=True, choices=sorted(ENVS))
    p.add_argument("--num-envs", type=int, required=True)
    p.add_argument("--unroll-length", type=int, required=True)
    p.add_argument("--num-minibatches", type=int, required=True)
    p.add_argument("--num-epochs", type=int, required=True)
    p.add_argument("--total-steps", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--learning-rate", type=float, required=True)
    p.add_argument("--gamma", type=float, required=True)
    p.add_argument("--gae-lambda", type=float, required=True)
    p.add_argument("--clip-eps", type=float, required=True)
    p.add_argument("--entropy-coef", type=float, required=True)
    p.add_argument("--vf-coef", type=float, required=True)
    p.add_argument("--max-grad-norm", type=_float_or_none, required=True,
                   help="global-norm clip, or 'none' (brax's default: no clip)")
    p.add_argument("--normalize-obs", action=argparse.BooleanOptionalAction, required=True)
    p.add_argument("--reward-scale", type=float, required=True)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64],
                   help="the policy's hidden layers (and the value net's, without --value-hidden)")
    p.add_argument("--value-hidden", type=int, nargs="+", default=None)
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="brax batch_size (unrolls per minibatch); default num_envs // num_minibatches, "
        "one rollout of num_envs x unroll_length per training step",
    )
    p.add_argument(
        "--distribution",
        choices=sorted(DISTRIBUTIONS),
        default="normal",
        help="'normal' (Gaussian, learned log-std, unsquashed) or 'tanh_normal' (brax's "
        "default: tanh-squashed, learned scalar std)",
    )
    p.add_argument("--num-eval-envs", type=int, default=128)
    p.add_argument(
        "--num-evals",
        type=int,
        default=5,
        help="brax num_evals (>= 3): num_evals-1 timed training epochs + an initial eval",
    )
    p.add_argument(
        "--autoreset",
        choices=sorted(AUTORESET_MODES),
        default="brax",
        help="'brax' (default, brax's own wrapper) or 'resample' (fresh initial states)",
    )
    p.add_argument("--json", dest="json_out", default=None, help="write the result here")
    args = p.parse_args(argv)
    if args.batch_size is None:
        if args.num_envs % args.num_minibatches:
            p.error("--num-envs must be divisible by --num-minibatches")
        args.batch_size = args.num_envs // args.num_minibatches
    elif args.batch_size < 1 or (args.batch_size * args.num_minibatches) % args.num_envs:
        p.error("--batch-size times --num-minibatches must be a positive multiple of --num-envs")
    if args.num_evals < 3:
        p.error("--num-evals must be >= 3 (needs >= 2 training epochs to separate compile)")
    return args


def _versions() -> dict[str, str]:
    """Installed versions of the packages that matter for the peer."""
    out = {"python": platform.python_version()}
    for pkg in ("jax", "jaxlib", "brax", "gymnax", "flax", "optax", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:  # pragma: no cover - defensive
            out[pkg] = "missing"
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train brax PPO as configured by ``args`` and return the JSON-able record."""
    env = GymnaxBraxEnv(args.env)
    hidden = tuple(args.hidden)
    value_hidden = tuple(args.value_hidden or hidden)

    # --- How brax 0.14.2's PPO batches data (ppo/train.py, training_step) ---------------
    # One brax "training step" scans acting.generate_unroll
    #     batch_size * num_minibatches // num_envs
    # times over all num_envs envs (unroll_length steps each), giving
    # batch_size * num_minibatches trajectories of length unroll_length, i.e.
    #     env_step_per_training_step = batch_size * unroll_length * num_minibatches.
    # Then num_updates_per_batch times: permute the trajectories and split them into
    # num_minibatches minibatches of batch_size trajectories each (GAE is computed per
    # minibatch over whole unroll_length-long segments).  So brax's batch_size counts
    # env-unrolls, not transitions.  Choosing batch_size = num_envs // num_minibatches
    # (batch_size * num_minibatches == num_envs) makes one training step = exactly one
    # rollout of num_envs x unroll_length followed by num_epochs passes over it in
    # num_minibatches minibatches of (num_envs // num_minibatches) * unroll_length
    # transitions -- the usual PPO update.  That is the default; --batch-size sets it
    # (brax's own default: 1 env, 32 x 16 unrolls of 10 steps per training step).
    batch_size = args.batch_size
    env_steps_per_training_step = batch_size * args.unroll_length * args.num_minibatches

    # brax runs num_evals-1 epochs of ceil(total / ((num_evals-1) * steps_per_train_step))
    # training steps each, so the actual step count is rounded up.
    num_epochs_timed = args.num_evals - 1
    train_steps_per_epoch = -(-args.total_steps // (num_epochs_timed * env_steps_per_training_step))
    env_steps_per_epoch = train_steps_per_epoch * env_steps_per_training_step

    network_factory = functools.partial(
        ppo_networks.make_ppo_networks,
        policy_hidden_layer_sizes=hidden,
        value_hidden_layer_sizes=value_hidden,
        activation=ACTIVATIONS[args.activation],
        **DISTRIBUTIONS[args.distribution][0],
    )

    train_kwargs: dict[str, Any] = dict(
        num_timesteps=args.total_steps,
        num_envs=args.num_envs,
        episode_length=env.episode_length,
        unroll_length=args.unroll_length,
        batch_size=batch_size,
        num_minibatches=args.num_minibatches,
        num_updates_per_batch=args.num_epochs,
        learning_rate=args.learning_rate,
        entropy_cost=args.entropy_coef,
        discounting=args.gamma,
        gae_lambda=args.gae_lambda,
        clipping_epsilon=args.clip_eps,
        vf_loss_coefficient=args.vf_coef,
        max_grad_norm=args.max_grad_norm,
        normalize_observations=args.normalize_obs,
        reward_scaling=args.reward_scale,
        seed=args.seed,
        num_evals=args.num_evals,
        num_eval_envs=args.num_eval_envs,
        deterministic_eval=False,
    )

    compile_events: dict[str, float] = {}

    def on_duration(event: str, duration: float, **_: Any) -> None:
        if event.startswith("/jax/core/compile/"):
            key = event.rsplit("/", 1)[-1]
            compile_events[key] = compile_events.get(key, 0.0) + float(duration)

    jax.monitoring.register_event_duration_secs_listener(on_duration)

    progress: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def progress_fn(step: int, metrics: dict[str, Any]) -> None:
        progress.append(
            {
                "step": int(step),
                "wall_s": time.perf_counter() - t0,
                "train_walltime_s": float(metrics.get("training/walltime", 0.0)),
                "return": float(metrics["eval/episode_reward"]),
                "return_std": float(metrics["eval/episode_reward_std"]),
                "episode_length": float(metrics["eval/avg_episode_length"]),
            }
        )
        print(
            f"[brax-peer] step={step} return={progress[-1]['return']:.1f} "
            f"wall={progress[-1]['wall_s']:.1f}s",
            file=sys.stderr,
            flush=True,
        )

    ppo_train.train(
        environment=env,
        network_factory=network_factory,
        progress_fn=progress_fn,
        # None -> brax's default envs.training.wrap (Vmap + Episode + AutoReset).
        wrap_env_fn=wrap_resample if args.autoreset == "resample" else None,
        **train_kwargs,
    )
    wall_s = time.perf_counter() - t0

    # progress[0] is the initial (step 0) eval; progress[1:] follow each training epoch.
    epoch_records = progress[1:]
    cumulative = [r["train_walltime_s"] for r in epoch_records]
    epoch_times = [b - a for a, b in zip([0.0, *cumulative[:-1]], cumulative, strict=True)]
    steady = epoch_times[1:]
    steady_time = sum(steady)
    compile_s = epoch_times[0] - statistics.median(steady)
    env_steps = epoch_records[-1]["step"]
    final = epoch_records[-1]

    hyper = {
        "num_envs": args.num_envs,
        "unroll_length": args.unroll_length,
        "num_minibatches": args.num_minibatches,
        "num_epochs": args.num_epochs,
        "total_steps": args.total_steps,
        "seed": args.seed,
        "learning_rate": args.learning_rate,
        "gamma": args.gamma,
        "gae_lambda": args.gae_lambda,
        "clip_eps": args.clip_eps,
        "entropy_coef": args.entropy_coef,
        "vf_coef": args.vf_coef,
        "max_grad_norm": args.max_grad_norm,
        "normalize_obs": args.normalize_obs,
        "reward_scale": args.reward_scale,
        "hidden": list(hidden),
        "value_hidden": list(value_hidden),
        "activation": args.activation,
        "batch_size": batch_size,
        "distribution": args.distribution,
        "num_eval_envs": args.num_eval_envs,
        "num_evals": args.num_evals,
        "autoreset": args.autoreset,
    }
    return {
        "framework": "brax.training.agents.ppo",
        "env": args.env,
        "gymnax_env_id": env.gymnax_id,
        "episode_length": env.episode_length,
        "action_adapter": ACTION_ADAPTERS[args.env],
        "autoreset": AUTORESET_MODES[args.autoreset],
        "policy_distribution": DISTRIBUTIONS[args.distribution][1],
        "versions": _versions(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "hyperparameters": hyper,
        "brax_train_kwargs": train_kwargs,
        "env_steps_per_training_step": env_steps_per_training_step,
        "training_steps_per_epoch": int(train_steps_per_epoch),
        "env_steps_per_epoch": int(env_steps_per_epoch),
        "num_timed_epochs": num_epochs_timed,
        "env_steps": int(env_steps),
        "wall_s": wall_s,
        "train_time_s": cumulative[-1],
        "eval_and_overhead_s": wall_s - cumulative[-1],
        "epoch_times_s": epoch_times,
        "compile_s": compile_s,
        "steady_state_time_s": steady_time,
        "steps_per_s": env_steps_per_epoch * len(steady) / steady_time,
        "steps_per_s_incl_compile": env_steps / cumulative[-1],
        "jax_compile_events_s": compile_events,
        "final_return": final["return"],
        "final_return_std": final["return_std"],
        "final_episode_length": final["episode_length"],
        "eval_history": progress,
        "peak_rss_mb": peak_rss_mb(),
        "timing_method": TIMING_METHOD,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: train, print the JSON record and write it to ``--json``."""
    args = parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text, flush=True)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
