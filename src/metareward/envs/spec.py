"""What a learner needs to know about an environment, without running it."""

from __future__ import annotations

import dataclasses
from typing import Any


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


class SpecMixin:
    """What the metareward env classes share: ``spec`` (the :class:`EnvSpec` each sets as
    ``self._spec`` when built), ``tasks`` (its task distribution, ``self._tasks``; ``None``
    for a fixed env) and ``auto_resets`` (``False``: the registry adds the auto-reset
    wrapper; an env that resets by itself overrides it)."""

    _spec: EnvSpec
    _tasks: Any = None

    @property
    def spec(self) -> EnvSpec:
        """The env's static description."""
        return self._spec

    @property
    def tasks(self) -> Any:
        """The task distribution of a randomised env, else None."""
        return self._tasks

    @property
    def auto_resets(self) -> bool:
        """Whether the env resets itself at an episode's end."""
        return False


__all__ = ["EnvSpec", "SpecMixin"]
