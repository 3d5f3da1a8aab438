"""Environments behind one protocol: brax's ``Env``/``State``.

``make(name, **kwargs)`` builds a single environment (see :mod:`.wrappers` for the
conventions every env follows); ``names()`` lists them. Sources: gymnax (classic control,
MinAtar) through :class:`GymnaxEnv`, brax's MuJoCo locomotion envs through
:class:`BraxEnv`, and TARE's chain (:class:`ChainEnv`). Randomised envs (task
distributions, ``make(name, randomize=True)``): :mod:`.tasks`, :mod:`.brax_tasks`.

Your own env: :func:`register` (``overwrite=True`` to run the cell again) and, for
every process, the entry-point group ``metareward.envs`` (see :mod:`.registry`).
"""

from brax.envs.base import Env, State, Wrapper

from metareward.envs.brax_adapter import BACKENDS, BraxEnv
from metareward.envs.brax_tasks import HOPPER, HOPPER_FORWARD_BACKWARD, REACHER
from metareward.envs.chain import ChainEnv
from metareward.envs.gymnax_adapter import GymnaxEnv
from metareward.envs.registry import (
    ENTRY_POINT_GROUP,
    describe,
    make,
    names,
    randomizable,
    register,
    register_tasks,
    task_distribution,
)
from metareward.envs.spec import EnvSpec, SpecMixin
from metareward.envs.tasks import PENDULUM, Task, TaskDistribution
from metareward.envs.wrappers import (
    ActionRescale,
    AutoResetWrapper,
    DelayedReward,
    EpisodeStats,
    EpisodeWrapper,
    NormalizedReward,
    VmapWrapper,
)

__all__ = [
    "BACKENDS",
    "ENTRY_POINT_GROUP",
    "HOPPER",
    "HOPPER_FORWARD_BACKWARD",
    "PENDULUM",
    "REACHER",
    "ActionRescale",
    "AutoResetWrapper",
    "BraxEnv",
    "ChainEnv",
    "DelayedReward",
    "Env",
    "EnvSpec",
    "EpisodeStats",
    "EpisodeWrapper",
    "GymnaxEnv",
    "NormalizedReward",
    "SpecMixin",
    "State",
    "Task",
    "TaskDistribution",
    "VmapWrapper",
    "Wrapper",
    "describe",
    "make",
    "names",
    "randomizable",
    "register",
    "register_tasks",
    "task_distribution",
]
