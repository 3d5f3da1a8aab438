"""brax's locomotion environments (MuJoCo models shipped with brax).

The physics backend is selectable: ``"mjx"`` (MuJoCo-XLA, the default, as in brax) or
brax's own ``"generalized"``, ``"positional"`` and ``"spring"``. brax envs do not end on a
time limit nor reset themselves: :func:`metareward.envs.make` adds
:class:`~metareward.envs.wrappers.EpisodeWrapper` and
:class:`~metareward.envs.wrappers.AutoResetWrapper`. brax envs compile slowly on a CPU
(10-20 s each); they are meant for accelerators.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import numpy as np
from brax.envs.base import State, Wrapper

from metareward.envs.spec import EnvSpec

BACKENDS = ("mjx", "generalized", "positional", "spring")


class BraxEnv(Wrapper):
    """A brax env with a :class:`EnvSpec` (observation shape, action bounds).

    Args:
      name: metareward name (``"inverted-pendulum"``).
      brax_name: brax registry name (``"inverted_pendulum"``).
      backend: one of :data:`BACKENDS`.
      episode_length: the time limit recorded in the spec (applied by ``make``).
      **kwargs: passed to the brax env's constructor.
    """

    def __init__(
        self,
        name: str,
        brax_name: str,
        backend: str = "mjx",
        episode_length: int = 1000,
        **kwargs: Any,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"{name}: unknown backend {backend!r}; allowed: {list(BACKENDS)}")
        from brax import envs as brax_envs

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Brax System")
            try:
                env = brax_envs.get_environment(brax_name, backend=backend, **kwargs)
            except TypeError as e:
                raise ValueError(f"{name}: bad env argument(s) {sorted(kwargs)}: {e}") from e
        super().__init__(env)
        shape = jax.eval_shape(env.reset, jax.random.PRNGKey(0)).obs.shape
        ctrl = np.asarray(env.sys.actuator.ctrl_range, np.float32)
        low = tuple(float(x) for x in ctrl[:, 0])
        high = tuple(float(x) for x in ctrl[:, 1])
        self._spec = EnvSpec(
            name, tuple(shape), False, int(env.action_size), low, high, int(episode_length)
        )

    @property
    def spec(self) -> EnvSpec:
        return self._spec

    @property
    def auto_resets(self) -> bool:
        return False

    def reset(self, rng: jax.Array) -> State:
        return self.env.reset(rng)

    def step(self, state: State, action: jax.Array) -> State:
        return self.env.step(state, action)
