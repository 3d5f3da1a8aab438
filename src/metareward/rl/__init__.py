"""The functional RL core: rollouts, advantage estimation, losses, normalisation, the
replay buffer, minibatch shuffles."""

from metareward.rl import replay, shuffle
from metareward.rl.gae import (
    discounted_cumsum,
    discounted_returns,
    gae,
    td_errors,
    td_lambda_targets,
)
from metareward.rl.losses import a2c_loss, awr_policy_loss, awr_weights, ppo_loss
from metareward.rl.normalize import RunningStats
from metareward.rl.rollout import (
    Transition,
    episode_metrics,
    evaluate_episodes,
    rollout,
    sampler,
)

__all__ = [
    "RunningStats",
    "Transition",
    "a2c_loss",
    "awr_policy_loss",
    "awr_weights",
    "discounted_cumsum",
    "discounted_returns",
    "episode_metrics",
    "evaluate_episodes",
    "gae",
    "ppo_loss",
    "replay",
    "rollout",
    "sampler",
    "shuffle",
    "td_errors",
    "td_lambda_targets",
]
