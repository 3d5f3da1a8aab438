"""Environments: the gymnax adapter against gymnax itself, the wrappers against a toy env
with known answers, the registry's errors."""

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy_envs import CountEnv

from metareward import envs
from metareward.envs import (
    ActionRescale,
    AutoResetWrapper,
    EpisodeStats,
    EpisodeWrapper,
    VmapWrapper,
)

GYMNAX_IDS = {
    "cartpole": "CartPole-v1",
    "pendulum": "Pendulum-v1",
    "acrobot": "Acrobot-v1",
    "mountaincar": "MountainCar-v0",
    "mountaincar-continuous": "MountainCarContinuous-v0",
    "breakout-minatar": "Breakout-MinAtar",
    "asterix-minatar": "Asterix-MinAtar",
    "freeway-minatar": "Freeway-MinAtar",
    "space-invaders-minatar": "SpaceInvaders-MinAtar",
    "seaquest-minatar": "Seaquest-MinAtar",
}
BRAX = [
    "hopper",
    "walker2d",
    "halfcheetah",
    "ant",
    "humanoid",
    "reacher",
    "swimmer",
    "inverted-pendulum",
    "inverted-double-pendulum",
]


def test_names_cover_the_issue_list():
    assert set(GYMNAX_IDS) | set(BRAX) <= set(envs.names())
    assert set(envs.names("gymnax")) == set(GYMNAX_IDS)
    assert set(envs.names("brax")) == set(BRAX)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown environment 'cartpol'.*cartpole"):
        envs.make("cartpol")


def test_bad_options_fail_clearly():
    with pytest.raises(ValueError, match=r"unknown env parameter.*max_sped"):
        envs.make("pendulum", max_sped=3.0)
    with pytest.raises(ValueError, match="episode_length"):
        envs.make("pendulum", episode_length=0)
    with pytest.raises(ValueError, match="unknown backend 'physx'"):
        envs.make("hopper", backend="physx")


def _gymnax_reference(gymnax_id, key, actions, episode_length=None):
    """Steps gymnax directly with the adapter's key stream (see GymnaxEnv's docstring)."""
    env, params = gymnax.make(gymnax_id)
    if episode_length is not None:
        params = params.replace(max_steps_in_episode=episode_length)
    key, k = jax.random.split(key)
    obs, state = env.reset(k, params)
    out = []
    for a in actions:
        key, k = jax.random.split(key)
        obs, state, r, term, trunc, info = env.step(k, state, a, params)
        out.append((obs, r, term, trunc, info["final_observation"]))
    return out


@pytest.mark.parametrize(
    "name,length,steps",
    [("cartpole", None, 120), ("pendulum", 25, 60), ("breakout-minatar", 5, 70)],
)
def test_gymnax_adapter_reproduces_gymnax(name, length, steps):
    env = envs.make(name, episode_length=length, rescale_actions=False)
    spec = env.spec
    key = jax.random.PRNGKey(3)
    akeys = jax.random.split(jax.random.PRNGKey(4), steps)
    if spec.discrete:
        actions = [jax.random.randint(k, (), 0, spec.action_size) for k in akeys]
    else:
        actions = [jax.random.uniform(k, (spec.action_size,), minval=-2, maxval=2) for k in akeys]
    ref = _gymnax_reference(GYMNAX_IDS[name], key, actions, length)
    state = env.reset(key)
    step = jax.jit(env.step)
    dones = truncs = 0
    for a, (obs, r, term, trunc, final_obs) in zip(actions, ref, strict=True):
        state = step(state, a)
        np.testing.assert_allclose(state.obs, obs, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(state.info["final_obs"], final_obs, rtol=1e-6, atol=1e-6)
        assert float(state.reward) == pytest.approx(float(r), rel=1e-6, abs=1e-6)
        assert bool(state.done) == bool(term or trunc)
        assert bool(state.info["truncation"]) == bool(trunc and not term)
        dones += bool(state.done)
        truncs += bool(state.info["truncation"])
    assert dones >= 2, "the trajectory must include auto-resets"
    if length is not None:
        assert truncs >= 2, "the trajectory must include time-limit truncations"


def test_episode_and_autoreset_wrappers_on_toy_env():
    env = EpisodeStats(AutoResetWrapper(EpisodeWrapper(CountEnv(terminate_at=3), 5)))
    state = env.reset(jax.random.PRNGKey(0))
    start = float(state.obs[0])
    step = jax.jit(env.step)
    # Terminates after 3 steps (no truncation), final obs = start + 3, then a fresh start.
    for _ in range(3):
        state = step(state, jnp.array([1.0]))
    assert float(state.done) == 1.0 and float(state.info["truncation"]) == 0.0
    np.testing.assert_allclose(state.info["final_obs"], [start + 3, 3.0], rtol=1e-6)
    assert float(state.obs[0]) != pytest.approx(start + 3)
    assert 0.0 <= float(state.obs[0]) < 1.0 and float(state.obs[1]) == 0.0
    assert float(state.info["completed_return"]) == pytest.approx(6.0)
    assert int(state.info["completed_length"]) == 3
    assert int(state.info["steps"]) == 0
    # Next step: a new episode whose return restarts from zero.
    state = step(state, jnp.array([0.5]))
    assert float(state.done) == 0.0
    assert float(state.info["episode_return"]) == pytest.approx(1.5)
    assert float(state.info["completed_return"]) == 0.0

    # Time limit shorter than termination: truncation flagged, final obs kept.
    env = AutoResetWrapper(EpisodeWrapper(CountEnv(terminate_at=None), 4))
    state = env.reset(jax.random.PRNGKey(1))
    start = float(state.obs[0])
    flags = []
    for _ in range(8):
        state = env.step(state, jnp.array([0.0]))
        flags.append((float(state.done), float(state.info["truncation"])))
    assert flags[3] == (1.0, 1.0) and flags[7] == (1.0, 1.0)
    assert all(f == (0.0, 0.0) for i, f in enumerate(flags) if i not in (3, 7))


def test_termination_at_the_time_limit_is_not_truncation():
    env = AutoResetWrapper(EpisodeWrapper(CountEnv(terminate_at=4), 4))
    state = env.reset(jax.random.PRNGKey(0))
    for _ in range(4):
        state = env.step(state, jnp.array([0.0]))
    assert float(state.done) == 1.0 and float(state.info["truncation"]) == 0.0


def test_action_rescale_and_vmap():
    env = VmapWrapper(ActionRescale(AutoResetWrapper(EpisodeWrapper(CountEnv(), 10))), 3)
    state = env.reset(jax.random.PRNGKey(0))
    assert state.obs.shape == (3, 2)
    assert len(set(np.asarray(state.obs[:, 0]).tolist())) == 3, "each env its own key"
    # [-1, 1] -> [-2, 3]: -1 -> -2, 0 -> 0.5, 1 -> 3; beyond 1 clipped.
    state = jax.jit(env.step)(state, jnp.array([[-1.0], [0.0], [5.0]]))
    np.testing.assert_allclose(state.reward, [1 - 2.0, 1 + 0.5, 1 + 3.0], rtol=1e-6)
    assert env.spec.action_low == (-1.0,) and env.spec.action_high == (1.0,)


def test_pendulum_actions_rescaled_to_torque_bounds():
    env = envs.make("pendulum")
    assert env.spec.action_low == (-1.0,)
    raw = envs.make("pendulum", rescale_actions=False)
    assert raw.spec.action_high == (2.0,)
    s1 = env.step(env.reset(jax.random.PRNGKey(0)), jnp.array([0.5]))
    s2 = raw.step(raw.reset(jax.random.PRNGKey(0)), jnp.array([1.0]))
    np.testing.assert_allclose(s1.obs, s2.obs, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["mjx", "positional"])
def test_brax_adapter_runs_vmapped(backend):
    env = envs.make("inverted-pendulum", backend=backend, episode_length=20)
    assert env.spec.obs_shape == (4,) and env.spec.action_size == 1
    venv = VmapWrapper(env, 4)

    def run(key):
        state = venv.reset(key)

        def body(s, k):
            a = jax.random.uniform(k, (4, 1), minval=-1, maxval=1)
            s = venv.step(s, a)
            return s, (s.obs, s.done, s.info["truncation"])

        return jax.lax.scan(body, state, jax.random.split(key, 30))[1]

    obs, done, _ = jax.jit(run)(jax.random.PRNGKey(0))
    assert obs.shape == (30, 4, 4)
    assert np.isfinite(np.asarray(obs)).all()
    assert np.asarray(done).sum() >= 4  # every env ends an episode within 20 steps
