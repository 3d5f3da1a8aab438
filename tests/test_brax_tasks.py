"""EPG's random brax envs (:mod:`metareward.envs.brax_tasks`): the task distributions, the
model fields a task changes, and the randomised hopper and reacher run under jit and vmap.

brax compiles slowly on a CPU: each env is compiled once, as one program (a vmapped reset
and a few steps, tasks batched), in a module-scoped fixture that the tests share, and with
XLA's cheaper backend optimisation (half the compile time; these programs run 3 steps)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax import envs as brax_envs
from mujoco import mjx

from metareward import envs
from metareward.envs import VmapWrapper, brax_tasks
from metareward.envs.brax_tasks import HOPPER, HOPPER_FORWARD_BACKWARD, REACHER

STEPS = 3  # with episode_length=2: one auto-reset (time limit) after the second step
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


_SAMPLES = {}


def _samples(dist, n=256, seed=0):
    """``n`` tasks of ``dist`` (one program per distribution, cached)."""
    if (dist.name, n, seed) not in _SAMPLES:
        keys = jax.random.split(jax.random.PRNGKey(seed), n)
        _SAMPLES[dist.name, n, seed] = jax.jit(jax.vmap(dist.sample))(keys)
    return _SAMPLES[dist.name, n, seed]


@pytest.mark.parametrize("dist", [HOPPER, HOPPER_FORWARD_BACKWARD, REACHER],
                         ids=lambda d: d.name)
def test_samples_lie_in_their_ranges_and_differ(dist):
    tasks = _samples(dist)
    assert set(tasks) == set(dist.factors)
    for f, v in tasks.items():
        v = np.asarray(v)
        assert v.shape == (256, *dist.shape(f)) and v.dtype == np.float32
        if f in dist.ranges:
            lo, hi = dist.ranges[f]
            assert (v >= lo).all() and (v <= hi).all()
            assert v.min() < lo + 0.1 * (hi - lo) and v.max() > hi - 0.1 * (hi - lo)
            # every entry (body, geom, link) drawn independently, every key its own task
            flat = v.reshape(256, -1)
            assert len(np.unique(flat[:, 0])) > 250  # float32 ties are rare
            if flat.shape[1] > 1:
                assert (flat[:, 0] != flat[:, 1]).all()
        else:
            assert set(np.unique(v)) <= set(dist.choices[f])


def test_hopper_directions():
    assert (np.asarray(_samples(HOPPER)["direction"]) == 1.0).all()
    d = np.asarray(_samples(HOPPER_FORWARD_BACKWARD)["direction"][:64])
    assert set(np.unique(d)) == {-1.0, 1.0}  # EPG's code always drew backward
    assert 16 <= (d > 0).sum() <= 48
    assert HOPPER.factors == ("direction", "friction_scale", "gravity_z", "mass_scale",
                              "thickness_scale")
    assert dict(HOPPER.shapes) == {"mass_scale": (4,), "friction_scale": (4, 3),
                                   "thickness_scale": (4,)}
    assert HOPPER.ranges["gravity_z"] == (-20.0, -2.0)


def test_make_validates_tasks():
    with pytest.raises(ValueError, match=r"unknown task factor.*nonsense.*allowed.*gravity_z"):
        envs.make("hopper", randomize=True, task_ranges={"nonsense": (0, 1)})
    with pytest.raises(ValueError, match="backend='mjx'"):
        envs.make("hopper", randomize=True, backend="generalized")
    assert {"hopper", "reacher"} <= set(envs.randomizable())
    assert envs.task_distribution("hopper") is HOPPER
    assert envs.task_distribution("reacher") is REACHER
    plain = envs.make("hopper")
    with pytest.raises(ValueError, match="not randomised"):
        plain.reset(jax.random.PRNGKey(0), task=HOPPER.nominal())


@pytest.mark.filterwarnings("ignore:Brax System")
def test_hopper_sys_fields():
    sys = brax_envs.get_environment("hopper", backend="mjx").sys
    task = HOPPER.sample(jax.random.PRNGKey(3))
    new = jax.jit(lambda t: brax_tasks.hopper_sys(sys, t))(task)
    np.testing.assert_allclose(new.body_mass[0], sys.body_mass[0])
    np.testing.assert_allclose(new.body_mass[1:], sys.body_mass[1:] * task["mass_scale"])
    np.testing.assert_allclose(new.opt.gravity, [0.0, 0.0, task["gravity_z"]])
    np.testing.assert_allclose(new.geom_friction[0], sys.geom_friction[0])  # the floor
    np.testing.assert_allclose(new.geom_friction[1:],
                               sys.geom_friction[1:] * task["friction_scale"], rtol=1e-6)
    np.testing.assert_allclose(new.geom_size[1:, 0],
                               sys.geom_size[1:, 0] * task["thickness_scale"], rtol=1e-6)
    np.testing.assert_allclose(new.geom_size[:, 1:], sys.geom_size[:, 1:])
    np.testing.assert_allclose(new.geom_rbound[1:], new.geom_size[1:, 0] + new.geom_size[1:, 1],
                               rtol=1e-6)
    # nominal factors = nominal model; the model is a function of the task under vmap
    same = brax_tasks.hopper_sys(sys, {"gravity_z": jnp.float32(-9.81)})
    np.testing.assert_allclose(same.opt.gravity, sys.opt.gravity)
    batched = jax.eval_shape(jax.vmap(lambda t: brax_tasks.hopper_sys(sys, t)),
                             _samples(HOPPER))
    assert batched.body_mass.shape == (256, 5) and batched.geom_friction.shape == (256, 5, 3)


def _run(env, tasks, keys, extra=None):
    """One program: vmapped reset with the given tasks, then STEPS vmapped steps with
    constant actions; returns the reset state, the states after each step, and extra."""

    def run(keys, tasks):
        s0 = jax.vmap(lambda k, t: env.reset(k, task=t))(keys, tasks)
        action = jnp.full((keys.shape[0], env.action_size), 0.5)

        def body(s, _):
            s = jax.vmap(env.step)(s, action)
            return s, s

        _, states = jax.lax.scan(body, s0, None, length=STEPS)
        return s0, states, (None if extra is None else jax.vmap(extra)(tasks))

    return jax.jit(run).lower(keys, tasks).compile(FAST_COMPILE)(keys, tasks)


@pytest.fixture(scope="session")  # once, even if xdist interleaves other modules
def hopper_run():
    """The forward/backward hopper, three copies with one key: 0 and 1 share their
    physics and differ in direction; 2 has other physics."""
    env = envs.make("hopper", randomize=True, task_ranges={"direction": (-1.0, 1.0)},
                    episode_length=2)
    tasks = {k: v[:3].at[1].set(v[0]) for k, v in _samples(HOPPER_FORWARD_BACKWARD).items()}
    tasks["direction"] = jnp.array([1.0, -1.0, 1.0])
    tasks["gravity_z"] = jnp.array([-9.81, -9.81, -18.0])
    keys = jnp.stack([jax.random.PRNGKey(0)] * 3)
    return env, tasks, _run(env, tasks, keys)


@pytest.mark.xdist_group("brax_hopper")  # one worker compiles the hopper run
def test_make_forward_backward_hopper(hopper_run):
    env, _, _ = hopper_run
    assert env.tasks.choices == HOPPER_FORWARD_BACKWARD.choices == {"direction": (-1.0, 1.0)}
    assert env.tasks.ranges == HOPPER.ranges and env.tasks.shapes == HOPPER.shapes
    assert env.spec.obs_shape == (11,) and env.spec.episode_length == 2
    # the default random hopper (the same program, traced only): the copies of a
    # VmapWrapper draw their own tasks
    default = envs.make("hopper", randomize=True)
    assert default.tasks is HOPPER
    v = jax.eval_shape(VmapWrapper(default, 4).reset, jax.random.PRNGKey(0))
    assert jax.tree.map(jnp.shape, v.info["task"]) == {
        k: (4, *x.shape) for k, x in HOPPER.nominal().items()}


@pytest.mark.xdist_group("brax_hopper")
def test_hopper_runs_and_keeps_task(hopper_run):
    _, tasks, (s0, states, _) = hopper_run
    for s in (s0, states):
        assert np.isfinite(np.asarray(s.obs)).all() and np.isfinite(np.asarray(s.reward)).all()
        for k, v in tasks.items():  # kept by every step, the auto-reset included
            np.testing.assert_array_equal(np.broadcast_to(v, s.info["task"][k].shape),
                                          s.info["task"][k])
    np.testing.assert_array_equal(states.info["truncation"][:, 0], [0.0, 1.0, 0.0])
    assert int(states.info["steps"][2, 0]) == 1  # a new episode after the auto-reset
    # same key: the same initial state; other physics (gravity, masses...): another step
    np.testing.assert_array_equal(s0.obs[0], s0.obs[2])
    assert not np.allclose(states.obs[0, 0], states.obs[0, 2], atol=1e-3)


@pytest.mark.xdist_group("brax_hopper")
def test_hopper_reward_is_direction_times_torso_velocity(hopper_run):
    env, tasks, (s0, states, _) = hopper_run
    dt = float(env.unwrapped.dt)
    x = np.concatenate([np.asarray(s0.pipeline_state.x.pos[None, :, 0, 0]),
                        np.asarray(states.pipeline_state.x.pos[:, :, 0, 0])])
    rewards = np.asarray(states.reward)
    direction = np.asarray(tasks["direction"])
    # steps 1 and 3 (step 2 ends in an auto-reset: the stored state is the new episode's)
    for t in (0, 2):
        np.testing.assert_allclose(rewards[t], direction * (x[t + 1] - x[t]) / dt,
                                   rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(rewards, direction * np.asarray(states.metrics["x_velocity"]),
                               rtol=1e-6)
    # same state, same action, opposite directions: the rewards negate, nothing else
    np.testing.assert_array_equal(rewards[:, 0], -rewards[:, 1])
    assert np.abs(rewards[:, 0]).min() > 0
    np.testing.assert_array_equal(states.obs[:, 0], states.obs[:, 1])


def _zero_angle_tip(env):
    sys = env.unwrapped.sys
    tip = brax_tasks._geom(sys, "fingertip")

    def tip_at_zero(task):  # MuJoCo's forward kinematics in the task's model
        task_sys = brax_tasks.reacher_sys(sys, task)
        return mjx.kinematics(task_sys, mjx.make_data(task_sys)).geom_xpos[tip]

    return tip_at_zero


@pytest.fixture(scope="session")
def reacher_run():
    env = envs.make("reacher", randomize=True, episode_length=2)
    tasks = {"link_scale": jnp.array([[1.0, 1.0], [1.25, 0.8], [0.75, 1.2]])}
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    return env, tasks, _run(env, tasks, keys, extra=_zero_angle_tip(env))


@pytest.mark.xdist_group("brax_reacher")  # one worker compiles the reacher run
def test_reacher_link_scaling_moves_the_fingertip(reacher_run):
    env, tasks, (s0, states, tip0) = reacher_run
    s = np.asarray(tasks["link_scale"])
    # forward kinematics at zero joint angles: base (0, 0, 0.01) + 0.1 s0 + 0.11 s1 along x
    expect = np.stack([0.1 * s[:, 0] + 0.11 * s[:, 1], 0 * s[:, 0], 0.01 + 0 * s[:, 0]], -1)
    np.testing.assert_allclose(tip0, expect, atol=1e-6)
    # the observation's tip-to-target vector is the fingertip geom's, at any angles
    tip = brax_tasks._geom(env.unwrapped.sys, "fingertip")
    for st in (s0, jax.tree.map(lambda x: x[0], states)):
        to_target = st.pipeline_state.geom_xpos[:, tip] - st.pipeline_state.x.pos[:, 2]
        np.testing.assert_allclose(st.obs[:, -3:], to_target, atol=1e-6)
    # and it is planar forward kinematics with the scaled lengths
    q = np.asarray(s0.pipeline_state.q)
    xy = (0.1 * s[:, :1] * np.stack([np.cos(q[:, 0]), np.sin(q[:, 0])], -1)
          + 0.11 * s[:, 1:] * np.stack([np.cos(q[:, 0] + q[:, 1]),
                                         np.sin(q[:, 0] + q[:, 1])], -1))
    np.testing.assert_allclose(s0.pipeline_state.geom_xpos[:, tip, :2], xy, atol=1e-6)


@pytest.mark.xdist_group("brax_reacher")
def test_reacher_runs_and_keeps_task(reacher_run):
    env, tasks, (s0, states, _) = reacher_run
    assert env.tasks is REACHER and env.spec.obs_shape == (11,)
    for st in (s0, states):
        assert np.isfinite(np.asarray(st.obs)).all()
        assert np.isfinite(np.asarray(st.reward)).all()
        np.testing.assert_array_equal(
            np.broadcast_to(tasks["link_scale"], st.info["task"]["link_scale"].shape),
            st.info["task"]["link_scale"])
    np.testing.assert_array_equal(states.info["truncation"][:, 0], [0.0, 1.0, 0.0])
    # reward: minus the tip-to-target distance minus the control cost (0.5^2 * 2), from
    # the observation the transition reached
    d = np.linalg.norm(np.asarray(states.info["final_obs"][..., -3:]), axis=-1)
    np.testing.assert_allclose(states.reward, -d - 0.5, rtol=1e-5)
    # the model's fields, as documented (geoms 6, 7: the links' capsules, 8: the fingertip
    # sphere; bodies 1, 2: the links); all-ones scales give the nominal model
    sys = env.unwrapped.sys
    new = brax_tasks.reacher_sys(sys, {"link_scale": jnp.array([1.2, 0.9])})
    np.testing.assert_allclose(new.body_pos[2, 0], 0.12, rtol=1e-6)  # body1 on link 0
    np.testing.assert_allclose(new.geom_size[[6, 7], 1], [0.06, 0.045], rtol=1e-6)
    np.testing.assert_allclose(new.geom_pos[[6, 7, 8], 0], [0.06, 0.045, 0.099], rtol=1e-6)
    np.testing.assert_allclose(new.body_ipos[[1, 2], 0],
                               sys.body_ipos[[1, 2], 0] * np.array([1.2, 0.9]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new.geom_rbound)[[6, 7]], [0.07, 0.055], rtol=1e-6)
    same = brax_tasks.reacher_sys(sys, {"link_scale": jnp.ones(2)})
    for f in ("body_pos", "body_ipos", "geom_pos", "geom_size", "geom_rbound"):
        np.testing.assert_array_equal(getattr(same, f), getattr(sys, f))


@pytest.mark.slow
def test_nominal_random_reacher_is_braxs_reacher():
    """All-ones link scales: the randomised reacher's observations and rewards are those
    of brax's reacher (same initial state, same actions)."""
    random_env = envs.BraxEnv("reacher", "reacher", tasks=REACHER)
    plain = envs.BraxEnv("reacher", "reacher")
    key = jax.random.PRNGKey(7)
    actions = jax.random.uniform(key, (8, 2), minval=-1, maxval=1)

    def run(env, reset):
        def body(s, a):
            s = env.step(s, a)
            return s, (s.obs, s.reward)

        return jax.lax.scan(body, reset, actions)[1]

    env_key = jax.random.split(key)[0]  # what the randomised env resets brax's with
    ones = {"link_scale": jnp.ones(2)}
    a = jax.jit(lambda: run(random_env, random_env.reset(key, task=ones)))()
    b = jax.jit(lambda: run(plain, plain.reset(env_key)))()
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_hopper_termination_angle_is_an_env_option():
    """EPG's hopper ends at |torso angle| >= 0.5 (brax's at 0.2): the randomised hopper's
    default, an env option (``healthy_angle_range``) that overrides it, and a plain brax
    hopper keeps brax's. A hopper tilted by +-0.3 rad (at rest, the nominal task) ends
    after one step under brax's 0.2 and not under EPG's 0.5, all else equal."""
    assert brax_tasks.EPG_HEALTHY_ANGLE == 0.5
    assert tuple(envs.make("hopper").unwrapped._healthy_angle_range) == (-0.2, 0.2)
    epg_env = envs.make("hopper", randomize=True, episode_length=4)
    brax_bound = envs.make("hopper", randomize=True, episode_length=4,
                           healthy_angle_range=(-0.2, 0.2))
    assert tuple(epg_env.unwrapped._healthy_angle_range) == (-0.5, 0.5)
    assert tuple(brax_bound.unwrapped._healthy_angle_range) == (-0.2, 0.2)
    with pytest.raises(ValueError, match=r"healthy_angle_range=0.5 .*expects 2 numbers"):
        envs.make("hopper", randomize=True, healthy_angle_range=0.5)
    task = HOPPER.nominal()

    def tilted_step(env, angle):
        s = env.reset(jax.random.PRNGKey(0), task=task)
        q = s.pipeline_state.q.at[2].set(angle)
        ps = env.unwrapped.pipeline_init(q, jnp.zeros_like(s.pipeline_state.qd))
        s = env.step(s.replace(pipeline_state=ps), jnp.zeros(env.action_size))
        return s.done, s.info["final_obs"][1]  # obs[1]: the torso angle after the step

    def run(angles):
        return [jax.vmap(lambda a, e=e: tilted_step(e, a))(angles) for e in (epg_env, brax_bound)]

    angles = jnp.array([0.3, -0.3, 0.1])
    (done_epg, ang_epg), (done_brax, ang_brax) = jax.jit(run).lower(angles).compile(
        FAST_COMPILE)(angles)
    np.testing.assert_allclose(ang_epg, angles, atol=0.02)  # still tilted after the step
    np.testing.assert_allclose(ang_epg, ang_brax, atol=1e-6)  # the same physics and step
    np.testing.assert_array_equal(done_epg, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(done_brax, [1.0, 1.0, 0.0])
