"""Task distributions of brax envs: EPG's random Hopper and random Reacher.

Houthooft et al., "Evolved Policy Gradients" (NeurIPS 2018), section 4: "Hopper (with
randomized gravity, friction, body mass, and link thickness) and Reacher (with
randomized link lengths)"; section 4.5: the forward/backward Hopper, which rewards
hopping in a random direction. The ranges of the hopper follow EPG's code
(``openai/EPG``, ``epg/envs/mujoco/hopper.py``); EPG's repository has no random Reacher,
so its range is ours.

A task is a dict of float32 arrays (:mod:`metareward.envs.tasks`); :class:`TaskPhysics`
says how a task changes a brax env. Following brax's own
``brax.envs.wrappers.training.DomainRandomizationVmapWrapper``, every ``reset`` and
``step`` builds the task's model, ``sys.tree_replace({...})`` of the nominal one, and runs
the brax env with it (``env.sys`` is swapped while the function is traced, then restored).
The model is thus an ordinary function of the task: it is ``jit``-ted, and ``vmap``-ped
over batches of tasks (env copies, population members) like any other input. Only the
``"mjx"`` backend is randomised: brax's own backends read other model fields.

Use: ``metareward.envs.make("hopper", randomize=True)`` (:data:`HOPPER`),
``make("hopper", randomize=True, task_ranges={"direction": (-1.0, 1.0)})``
(:data:`HOPPER_FORWARD_BACKWARD`), ``make("reacher", randomize=True)`` (:data:`REACHER`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from brax import base
from brax.envs.base import PipelineEnv, State
from brax.envs.reacher import Reacher

from metareward.envs.tasks import Task, TaskDistribution

#: EPG's hopper is unhealthy (the episode ends) once ``|torso angle| >= 0.5`` (gym's
#: ``Hopper``, ``epg/envs/mujoco/hopper.py``); brax's hopper ends at 0.2. The default of
#: the randomised hopper's env option ``healthy_angle_range`` (``-0.5, 0.5``).
EPG_HEALTHY_ANGLE = 0.5

#: bodies of brax's hopper other than the world body: torso, thigh, leg, foot.
HOPPER_BODIES = 4
#: geoms of brax's hopper other than the floor: torso, thigh, leg, foot capsules.
HOPPER_GEOMS = 4

#: EPG's random Hopper (section 4; ``RandomWeightHopperEnv`` of EPG's code). Factors:
#:
#: * ``mass_scale`` (4,): each body's mass x U(0.5, 2), world body excluded (bodies
#:   torso, thigh, leg, foot, as EPG's ``range(1, nbody)``).
#: * ``gravity_z`` (): gravity along z, -U(0, 18) - 2, i.e. U(-20, -2) (nominal -9.81).
#: * ``friction_scale`` (4, 3): each geom's sliding, torsional and rolling friction
#:   coefficients x U(0.5, 2), each drawn independently as in EPG's code, floor excluded.
#:   (The hopper's contacts have ``condim=3``: only the sliding column acts, and MuJoCo
#:   takes the larger coefficient of the foot and the floor (1.0).)
#: * ``thickness_scale`` (4,): each capsule's radius (``geom_size[:, 0]``) x U(0.5, 2),
#:   floor excluded. Only the foot collides; the others change the looks only (masses
#:   are those of the nominal model, as in EPG's code).
#: * ``direction`` (): choices (1.0,): the reward is ``direction * dx/dt`` of the torso,
#:   nothing else (no healthy bonus, no control cost).
#:
#: Termination is brax's hopper's (unhealthy: torso height <= 0.7, |torso angle| >=
#: bound, or |state| >= 100), time limit 1000 steps, with the angle bound of EPG's gym
#: hopper, :data:`EPG_HEALTHY_ANGLE` = 0.5 (brax's own hopper: 0.2). It is the env
#: option ``healthy_angle_range`` (brax's hopper's keyword): ``make("hopper",
#: randomize=True, healthy_angle_range=(-0.2, 0.2))`` for brax's bound; a plain
#: ``make("hopper")`` keeps brax's 0.2.
HOPPER = TaskDistribution(
    "random hopper",
    ranges={
        "mass_scale": (0.5, 2.0),
        "gravity_z": (-20.0, -2.0),
        "friction_scale": (0.5, 2.0),
        "thickness_scale": (0.5, 2.0),
    },
    choices={"direction": (1.0,)},
    shapes={
        "mass_scale": (HOPPER_BODIES,),
        "friction_scale": (HOPPER_GEOMS, 3),
        "thickness_scale": (HOPPER_GEOMS,),
    },
)

#: EPG's forward/backward Hopper (section 4.5): :data:`HOPPER` whose ``direction`` is
#: -1 or +1 with probability 1/2 each. (EPG's code drew ``[-1, 1][randint(0, 1)]``, always
#: backward, and did not randomise the physics; both are the paper's intent here.)
HOPPER_FORWARD_BACKWARD = dataclasses.replace(
    HOPPER.with_overrides({"direction": (-1.0, 1.0)}), name="random forward/backward hopper"
)

#: EPG's random Reacher (section 4, "randomized link lengths"). Factor ``link_scale``
#: (2,): the length of each of the two links x U(0.75, 1.25), independently. The range
#: is ours (neither the paper nor EPG's code gives one). A link is stretched along its
#: axis: its capsule's half-length and centre, its centre of mass, and what it carries
#: (the second link, the fingertip) move with it; masses and inertias stay nominal (the
#: joints' armature of 1 outweighs the links' inertia ~1e-4 by far). The reach goes from
#: 0.21 to 0.1575-0.2625; targets are still drawn within 0.2 of the centre, so a short
#: arm may not reach them all.
REACHER = TaskDistribution(
    "random reacher",
    ranges={"link_scale": (0.75, 1.25)},
    shapes={"link_scale": (2,)},
)


def _body(sys: base.System, name: str) -> int:
    i = mujoco.mj_name2id(sys.mj_model, mujoco.mjtObj.mjOBJ_BODY, name)
    if i < 0:
        raise ValueError(f"the model has no body {name!r}")
    return int(i)


def _geom(sys: base.System, name: str) -> int:
    i = mujoco.mj_name2id(sys.mj_model, mujoco.mjtObj.mjOBJ_GEOM, name)
    if i < 0:
        raise ValueError(f"the model has no geom {name!r}")
    return int(i)


def hopper_sys(sys: base.System, task: Mapping[str, jax.Array]) -> base.System:
    """brax's hopper model ``sys`` with the physics of ``task`` (a :data:`HOPPER` task;
    missing factors keep their nominal values).

    Fields: ``body_mass[1:]`` (mass_scale), ``opt.gravity[2]`` (gravity_z),
    ``geom_friction[1:]`` (friction_scale), ``geom_size[1:, 0]`` and, with it,
    ``geom_rbound[1:]`` (thickness_scale; a capsule's bounding radius is radius plus
    half-length, used by MJX's broad phase). Constants MuJoCo derives from these when it
    compiles a model (``body_subtreemass``, ``*_invweight0``, ``geom_aabb``) keep their
    nominal values, as in EPG's code, which changed the mujoco-py model in place.

    Args:
        sys: The nominal hopper model.
        task: The task's factors (any subset of :data:`HOPPER`'s).

    Returns:
        The model with those factors applied.
    """
    bodies = np.arange(1, sys.nbody)
    geoms = np.flatnonzero(np.asarray(sys.geom_bodyid) > 0)
    new: dict[str, jax.Array] = {}
    if "mass_scale" in task:
        new["body_mass"] = sys.body_mass.at[bodies].multiply(task["mass_scale"])
    if "gravity_z" in task:
        new["opt.gravity"] = sys.opt.gravity.at[2].set(task["gravity_z"])
    if "friction_scale" in task:
        new["geom_friction"] = sys.geom_friction.at[geoms].multiply(task["friction_scale"])
    if "thickness_scale" in task:
        radius = sys.geom_size[geoms, 0]
        grown = radius * task["thickness_scale"] - radius
        new["geom_size"] = sys.geom_size.at[geoms, 0].add(grown)
        new["geom_rbound"] = sys.geom_rbound.at[geoms].add(grown)
    return sys.tree_replace(new)


#: the reacher's links: (the link's body, its capsule), proximal first. Each link lies
#: along its body's x axis (checked in :func:`reacher_sys`).
REACHER_LINKS = (("body0", "link0"), ("body1", "link1"))


def reacher_sys(sys: base.System, task: Mapping[str, jax.Array]) -> base.System:
    """brax's reacher model ``sys`` with the link lengths of ``task`` (a :data:`REACHER`
    task; ``link_scale[i]`` scales link ``i``).

    Stretching link ``i`` (body ``b``) by ``s`` scales the x coordinates (the link's
    axis) in ``b``'s frame: ``geom_pos[g, 0]`` of every geom of ``b`` (the capsule's
    centre; on the second link also the fingertip sphere, which brax's model fuses into
    it), ``body_ipos[b, 0]`` (centre of mass) and ``body_pos[c, 0]`` of every child
    body ``c`` (the second link); and the capsule's half-length ``geom_size[g, 1]``
    (with ``geom_rbound[g]``, radius plus half-length). None of the reacher's geoms
    collide, so the geoms matter only for the fingertip's position (observation and
    reward, see :class:`RandomReacher`) and the looks.

    Args:
        sys: The nominal reacher model.
        task: The task (``link_scale``, ``[2]``; without it ``sys`` is returned).

    Returns:
        The model with the links stretched.
    """
    if "link_scale" not in task:
        return sys
    scale = task["link_scale"]
    geom_pos, geom_size = sys.geom_pos, sys.geom_size
    geom_rbound, body_pos, body_ipos = sys.geom_rbound, sys.body_pos, sys.body_ipos
    geom_bodyid, parent = np.asarray(sys.geom_bodyid), np.asarray(sys.body_parentid)
    for i, (body_name, capsule_name) in enumerate(REACHER_LINKS):
        b, g = _body(sys, body_name), _geom(sys, capsule_name)
        half = float(sys.mj_model.geom_size[g, 1])  # static: the compiled nominal model
        if not np.allclose(sys.mj_model.geom_pos[g], [half, 0.0, 0.0], atol=1e-6):
            raise ValueError(f"reacher: capsule {capsule_name!r} does not lie along its "
                             "body's x axis; the link scaling assumes it does")
        s = scale[..., i]
        geoms = np.flatnonzero(geom_bodyid == b)
        children = np.flatnonzero((parent == b) & (np.arange(sys.nbody) != b))
        geom_pos = geom_pos.at[geoms, 0].multiply(s)
        body_ipos = body_ipos.at[b, 0].multiply(s)
        body_pos = body_pos.at[children, 0].multiply(s)
        geom_size = geom_size.at[g, 1].multiply(s)
        geom_rbound = geom_rbound.at[g].add(half * s - half)
    return sys.tree_replace({"geom_pos": geom_pos, "geom_size": geom_size,
                             "geom_rbound": geom_rbound, "body_pos": body_pos,
                             "body_ipos": body_ipos})


class RandomReacher(Reacher):
    """brax's reacher whose fingertip is where the (per-task) model puts it.

    brax's ``Reacher._get_obs`` places the fingertip at a constant offset ``(0.11, 0,
    0)`` from the second link's body (the fingertip geom's position in the nominal
    model); here the offset is read from ``self.sys.geom_pos`` of the fingertip geom, so
    that the observation (tip velocity, tip-to-target vector) and the reward (minus the
    tip-to-target distance, minus the control cost) follow the scaled links. With the
    nominal model it is exactly brax's reacher.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._tip_geom = _geom(self.sys, "fingertip")

    def _get_obs(self, pipeline_state: base.State) -> jax.Array:
        offset = base.Transform.create(pos=self.sys.geom_pos[self._tip_geom])
        theta = pipeline_state.q[:2]
        target_pos = pipeline_state.x.pos[2]
        tip_pos = pipeline_state.x.take(1).do(offset).pos
        tip_vel = offset.do(pipeline_state.xd.take(1)).vel
        return jnp.concatenate([
            jnp.cos(theta),
            jnp.sin(theta),
            pipeline_state.q[2:],  # target x, y
            tip_vel[:2],
            tip_pos - target_pos,
        ])


def _direction_reward(state: State, task: Task) -> State:
    # brax's hopper with healthy_reward=0, ctrl_cost_weight=0 rewards dx/dt of the torso.
    if "direction" not in task:
        return state
    return state.replace(reward=task["direction"] * state.reward)


@dataclasses.dataclass(frozen=True)
class TaskPhysics:
    """How the tasks of one brax env act on it.

    Args:
      factors: the task factors it understands (a distribution may use fewer: missing
        factors keep their nominal values).
      shapes: the shape each factor must have.
      make_sys: ``(nominal sys, task) -> the task's sys``, traceable in the task.
      env_kwargs: defaults for the brax env's constructor of a randomised env (e.g. the
        hopper's reward terms and EPG's termination angle); env options given to
        ``make`` override them.
      env_class: the brax env class to build, if not brax's registered one.
      reward: ``(state after a step, task) -> state`` (e.g. the direction of the hopper).
    """

    factors: tuple[str, ...]
    shapes: Mapping[str, tuple[int, ...]]
    make_sys: Callable[[base.System, Mapping[str, jax.Array]], base.System]
    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    env_class: type[PipelineEnv] | None = None
    reward: Callable[[State, Task], State] | None = None

    def check(self, name: str, tasks: TaskDistribution) -> None:
        """Fails, naming the allowed factors, unless ``tasks`` fits this physics.

        Args:
            name: The env's name, for the message.
            tasks: The task distribution to check.

        Raises:
            ValueError: If ``tasks`` has a factor this physics does not know, or a factor
                whose shape differs from ``shapes``.
        """
        unknown = sorted(set(tasks.factors) - set(self.factors))
        if unknown:
            raise ValueError(f"{name}: unknown task factor(s) {unknown}; allowed: "
                             f"{list(self.factors)}")
        for f in tasks.factors:
            if tasks.shape(f) != self.shapes.get(f, ()):
                raise ValueError(f"{name}: task factor {f!r} must have shape "
                                 f"{self.shapes.get(f, ())}, got {tasks.shape(f)}")

    @contextlib.contextmanager
    def applied(self, env: PipelineEnv, nominal: base.System, task: Task) -> Iterator[None]:
        """Within the block, ``env.sys`` is ``task``'s model (built from ``nominal``).

        Args:
            env: The brax env whose ``sys`` to swap.
            nominal: The env's nominal system, restored on leaving the block.
            task: The task whose model to use.

        Yields:
            None.
        """
        env.sys = self.make_sys(nominal, task)
        try:
            yield
        finally:
            env.sys = nominal

    def reset(self, env: PipelineEnv, nominal: base.System, rng: jax.Array,
              task: Task) -> State:
        """``env.reset(rng)`` in ``task``'s physics, with ``info["task"] = task``.

        Args:
            env: The brax env.
            nominal: The env's nominal system.
            rng: The reset's key.
            task: The task of the episode.

        Returns:
            The first state, with ``info["task"]``.
        """
        with self.applied(env, nominal, task):
            state = env.reset(rng)
        return state.replace(info={**state.info, "task": task})

    def step(self, env: PipelineEnv, nominal: base.System, state: State,
             action: jax.Array) -> State:
        """``env.step`` in the physics of ``state.info["task"]`` (info kept).

        Args:
            env: The brax env.
            nominal: The env's nominal system.
            state: The current state (with ``info["task"]``).
            action: The action.

        Returns:
            The next state, passed through ``reward`` (with the task) if it is set.
        """
        task = state.info["task"]
        with self.applied(env, nominal, task):
            state = env.step(state, action)
        return state if self.reward is None else self.reward(state, task)


#: brax registry name -> its task physics.
PHYSICS: dict[str, TaskPhysics] = {
    "hopper": TaskPhysics(
        factors=HOPPER.factors,
        shapes=dict(HOPPER.shapes),
        make_sys=hopper_sys,
        env_kwargs={"forward_reward_weight": 1.0, "healthy_reward": 0.0,
                    "ctrl_cost_weight": 0.0,
                    "healthy_angle_range": (-EPG_HEALTHY_ANGLE, EPG_HEALTHY_ANGLE)},
        reward=_direction_reward,
    ),
    "reacher": TaskPhysics(
        factors=REACHER.factors,
        shapes=dict(REACHER.shapes),
        make_sys=reacher_sys,
        env_class=RandomReacher,
    ),
}


def task_physics(name: str, brax_name: str, tasks: TaskDistribution,
                 backend: str) -> TaskPhysics:
    """The :class:`TaskPhysics` of a brax env, checked against ``tasks``.

    Args:
        name: The registered env's name (for messages).
        brax_name: The brax env's name (a key of ``PHYSICS``).
        tasks: The task distribution the env is randomised over.
        backend: The brax backend (only ``"mjx"`` supports randomised physics).

    Returns:
        The env's task physics.

    Raises:
        ValueError: an env without task physics, a backend other than ``"mjx"``, or a
            factor of ``tasks`` the physics does not know.
    """
    if brax_name not in PHYSICS:
        raise ValueError(f"{name}: no task physics for brax env {brax_name!r}; "
                         f"randomisable brax envs: {sorted(PHYSICS)}")
    if backend != "mjx":
        raise ValueError(f"{name}: randomised physics needs backend='mjx', got {backend!r}")
    physics = PHYSICS[brax_name]
    physics.check(name, tasks)
    return physics


__all__ = [
    "EPG_HEALTHY_ANGLE",
    "HOPPER",
    "HOPPER_FORWARD_BACKWARD",
    "PHYSICS",
    "REACHER",
    "RandomReacher",
    "TaskPhysics",
    "hopper_sys",
    "reacher_sys",
    "task_physics",
]
