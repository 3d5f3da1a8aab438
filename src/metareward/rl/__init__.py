"""The functional RL core: rollouts, advantage estimation, losses, normalisation."""

from metareward.rl.gae import discounted_cumsum, discounted_returns, gae, td_errors
from metareward.rl.losses import a2c_loss, ppo_loss
from metareward.rl.normalize import RunningStats
from metareward.rl.rollout import Transition, episode_metrics, evaluate_episodes, rollout

__all__ = [
    "RunningStats",
    "Transition",
    "a2c_loss",
    "discounted_cumsum",
    "discounted_returns",
    "episode_metrics",
    "evaluate_episodes",
    "gae",
    "ppo_loss",
    "rollout",
    "td_errors",
]
