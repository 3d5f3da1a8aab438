"""A tiny config and env for every registered algorithm (a few updates on classic
control), for tests that go over all of them (``test_contract.py``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from metareward import envs
from metareward.algos import get_algorithm

_ON = dict(num_envs=2, num_steps=16, total_steps=2 * 16 * 3, num_epochs=2, num_minibatches=2,
           hidden=(16, 16))
_OFF = dict(total_steps=64, learning_starts=16, buffer_size=64, batch_size=8, hidden=(16, 16))

#: algorithm -> (env names, comma-separated; config fields to override)
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "ppo": ("pendulum", _ON),
    "a2c": ("cartpole", dict(num_envs=2, num_steps=5, total_steps=30, hidden=(16, 16))),
    "reinforce": ("cartpole", dict(num_envs=2, num_steps=16, total_steps=96, hidden=(16, 16))),
    "awr": ("pendulum", dict(num_envs=2, num_steps=64, total_steps=2 * 64 * 3, buffer_size=512,
                             value_steps=5, policy_steps=6, value_batch_size=32,
                             hidden=(16, 16))),
    "td3": ("pendulum", dict(_OFF, policy_delay=2)),
    "ddpg": ("pendulum", _OFF),
    "lirpg": ("pendulum", dict(_ON, total_steps=96, reward_hidden=(16, 16), r_ex_coef=0.5)),
    "lirpg-a2c": ("cartpole", dict(num_envs=4, num_steps=5, total_steps=60, hidden=(16, 16),
                                   reward_hidden=(16, 16), r_in_coef=0.5)),
    "cln": ("pendulum", dict(_ON, total_steps=96, hidden=(8, 8), reward_hidden=(8, 8),
                             segment_length=4, reward_buffer_size=64, reward_batch_size=8)),
    "tare": ("pendulum", dict(num_envs=4, num_steps=8, total_steps=96, num_epochs=1,
                              num_minibatches=2, hidden=(4,), reward_hidden=4,
                              reward_lstm_hidden=4)),
    "tare-awr": ("pendulum", dict(num_envs=4, num_steps=8, total_steps=96, hidden=(4,),
                                  reward_hidden=4, reward_lstm_hidden=4, buffer_size=64,
                                  value_steps=2, policy_steps=2, value_batch_size=8,
                                  policy_batch_size=8, hypergrad_batch=16)),
    "epg": ("pendulum", dict(num_epochs=2, pop_size=4, steps_per_update=16, inner_updates=6,
                             buffer_size=64, eval_episodes=2, anneal_epochs=2)),
    "metagenrl": ("pendulum,mountaincar-continuous",
                  dict(num_agents=2, total_steps=300, learning_starts=100, buffer_size=64,
                       batch_size=8, window=5, hidden=(16, 16), anneal_steps=50,
                       inner_windows=8)),
}


def config_and_env(name: str) -> tuple[Any, Any]:
    """``(config, env)`` of algorithm ``name``'s tiny case (a list of envs for a
    multi-env learner)."""
    spec = get_algorithm(name)
    env_names, overrides = CASES[name]
    config = dataclasses.replace(spec.config(), **overrides)
    made = [envs.make(n, **dict(spec.env_kwargs)) for n in env_names.split(",")]
    return config, (made if spec.multi_env else made[0])


def build(name: str, **changes: Any) -> Any:
    """The learner of algorithm ``name``'s tiny case, with ``changes`` to its config."""
    config, env = config_and_env(name)
    return get_algorithm(name).make_train(dataclasses.replace(config, **changes), env)
