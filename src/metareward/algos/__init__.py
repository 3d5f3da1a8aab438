"""Learners: each a module with a frozen ``Config`` and ``make_train(config, env)``."""

from metareward.algos import a2c, ppo
from metareward.algos.config import ConfigError
from metareward.algos.onpolicy import Trainer, TrainState, check_finite

ALGORITHMS = {"ppo": ppo, "a2c": a2c}

__all__ = ["ALGORITHMS", "ConfigError", "TrainState", "Trainer", "a2c", "check_finite", "ppo"]
