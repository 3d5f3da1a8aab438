"""The functional RL core: rollouts, advantage estimation, losses, normalisation."""

from metareward.rl.gae import discounted_returns, gae, gae_rows, td_errors
from metareward.rl.losses import a2c_loss, ppo_loss
from metareward.rl.normalize import RunningStats
from metareward.rl.rollout import Transition, episode_metrics, evaluate_episodes, rollout

__all__ = [
    "RunningStats",
    "Transition",
    "a2c_loss",
    "discounted_returns",
    "episode_metrics",
    "evaluate_episodes",
    "gae",
    "gae_rows",
    "ppo_loss",
    "rollout",
    "td_errors",
]
