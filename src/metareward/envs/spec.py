"""What a learner needs to know about an environment, without running it."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """Static description of an environment.

    Attributes:
      name: registry name (``metareward.envs.names()``).
      obs_shape: shape of one observation (MinAtar: ``(10, 10, C)``).
      discrete: whether actions are integers in ``[0, num_actions)``.
      action_size: number of actions if ``discrete``, else the action dimension.
      action_low, action_high: bounds of continuous actions as the env accepts them
        (after :class:`~metareward.envs.wrappers.ActionRescale` they are -1 and 1).
      episode_length: time limit; reaching it ends the episode with ``truncation=1``.
    """

    name: str
    obs_shape: tuple[int, ...]
    discrete: bool
    action_size: int
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    episode_length: int = 1000

    @property
    def obs_size(self) -> int:
        """Number of scalars in one flattened observation."""
        n = 1
        for d in self.obs_shape:
            n *= d
        return n
