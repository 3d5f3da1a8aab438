"""Learners: each a module with a frozen ``Config`` and ``make_train(config, env)``,
registered by name (:mod:`metareward.algos.registry`) for the ``metareward`` command."""

from typing import Any

from metareward._xla import configure_xla as _configure_xla

# The learners build the training programs: metareward's XLA:CPU setting (jaxlib 0.10.2's
# concurrency-optimised scheduler deadlocks some vmapped training programs) is applied
# here, before any learner module can start jax's backend, so the functional API is safe
# without a call to remember. `import metareward` alone leaves XLA_FLAGS alone.
_configure_xla()

from metareward.algos import a2c, awr, cln, epg, lirpg, metagenrl, ppo, reinforce, tare, td3  # noqa: E402
from metareward.algos.config import ConfigError, DefaultConfigWarning  # noqa: E402
from metareward.algos.onpolicy import Trainer, TrainState, check_finite  # noqa: E402
from metareward.algos.policy import Policy, load_policy, save_policy, take_seed  # noqa: E402
from metareward.algos.registry import (  # noqa: E402
    AlgoSpec,
    Learner,
    algorithm_names,
    get_algorithm,
    register_algorithm,
)

register_algorithm(
    "ppo",
    config=ppo.Config,
    make_train=ppo.make_train,
    presets=ppo.PRESETS,
    description="PPO, clipped surrogate + GAE (Schulman et al. 2017)",
)
register_algorithm(
    "a2c",
    config=a2c.Config,
    make_train=a2c.make_train,
    presets=a2c.PRESETS,
    description="A2C, synchronous advantage actor-critic (Mnih et al. 2016)",
)
register_algorithm(
    "awr",
    config=awr.Config,
    make_train=awr.make_train,
    presets=awr.PRESETS,
    description="AWR, advantage-weighted regression with a replay buffer (Peng et al. 2019)",
)
register_algorithm(
    "reinforce",
    config=reinforce.Config,
    make_train=reinforce.make_train,
    presets=reinforce.PRESETS,
    description="REINFORCE with a GAE baseline, on-policy (Williams 1992; VPG)",
)
register_algorithm(
    "td3",
    config=td3.Config,
    make_train=td3.make_train,
    presets=td3.PRESETS,
    description="TD3: clipped double Q, delayed policy updates, target smoothing (Fujimoto+ 2018)",
)
register_algorithm(
    "ddpg",
    config=td3.DDPGConfig,
    make_train=td3.make_train,
    presets=td3.DDPG_PRESETS,
    description="DDPG as a TD3 config: one critic, no smoothing, no delay (Lillicrap+ 2016)",
)

register_algorithm(
    "lirpg",
    config=lirpg.Config,
    make_train=lirpg.make_train,
    presets=lirpg.PRESETS,
    description="LIRPG on PPO: learned intrinsic reward by a one-step meta-gradient (Zheng+ 2018)",
)
register_algorithm(
    "lirpg-a2c",
    config=lirpg.A2CConfig,
    make_train=lirpg.make_train,
    presets=lirpg.A2C_PRESETS,
    description="LIRPG on A2C (the paper's Atari flavour; MinAtar here)",
)

register_algorithm(
    "cln",
    config=cln.Config,
    make_train=cln.make_train,
    presets=cln.PRESETS,
    description="CLN bilevel: intrinsic reward by a Self-Tuning-Network best response (Zhang+)",
)

register_algorithm(
    "tare",
    config=tare.Config,
    make_train=tare.make_train,
    presets=tare.PRESETS,
    description="TARE on PPO: learned reward by implicit differentiation, CG on HVPs",
)
register_algorithm(
    "tare-awr",
    config=tare.AWRConfig,
    make_train=tare.make_train,
    presets=tare.AWR_PRESETS,
    description="TARE on AWR (replay buffer, advantage-weighted regression)",
)
register_algorithm(
    "epg",
    config=epg.Config,
    make_train=epg.make_train,
    presets=epg.PRESETS,
    env_kwargs={"randomize": True},
    meta=True,
    learned=lambda state: state.params["loss"],
    description="EPG: a learned loss evolved by ES over a population on random tasks",
)
register_algorithm(
    "metagenrl",
    config=metagenrl.Config,
    make_train=metagenrl.make_train,
    presets=metagenrl.PRESETS,
    meta=True,
    multi_env=True,
    learned=lambda state: state.params["objective"],
    description="MetaGenRL: a learned LSTM objective trained through TD3 critics (Kirsch+ 2020)",
)


def preset(algorithm: str, env_name: str) -> Any:
    """The config of registered ``algorithm`` for ``env_name``: its tuned preset, or the
    paper defaults (with a :class:`DefaultConfigWarning`); ``ConfigError`` for an env name
    that is not registered, ``ValueError`` for an unknown algorithm.

    Args:
        algorithm: A registered algorithm (:func:`algorithm_names`), e.g. ``"ddpg"``.
        env_name: A registered env (``metareward.envs.names()``).

    Returns:
        The algorithm's config for that env.
    """
    return get_algorithm(algorithm).default_config(env_name)


__all__ = [
    "AlgoSpec",
    "ConfigError",
    "DefaultConfigWarning",
    "Learner",
    "Policy",
    "TrainState",
    "Trainer",
    "a2c",
    "algorithm_names",
    "awr",
    "check_finite",
    "cln",
    "epg",
    "get_algorithm",
    "lirpg",
    "load_policy",
    "metagenrl",
    "ppo",
    "preset",
    "register_algorithm",
    "reinforce",
    "save_policy",
    "take_seed",
    "tare",
    "td3",
]
