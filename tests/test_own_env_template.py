"""Bring your own environment: the template of the docs' own-env page, executed.

The page includes the lines between ``# --- template start ---`` and
``# --- template end ---`` (dedented by 4 spaces): a tiny env written the way a user
writes one, registered so that running the cell again is safe, and trained by PPO for a
few updates. The other tests check what the page says around it: a second run of the
cell replaces the env, and an env registered from an entry point (group
``metareward.envs``) is found by name in a fresh process, by ``metareward.envs.make`` and
by the ``metareward`` command (``list``; ``train``, ``eval`` and ``resume`` in a slow
test). The registry's messages (a taken name, a factory without ``make``'s keywords, an
env that lacks a method): ``tests/test_registry.py``.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from metareward import envs
from metareward.envs import registry


def own_env_template() -> dict:
    """The template; returns its names for the tests."""
    # --- template start ---
    import jax
    import jax.numpy as jnp

    from metareward import envs
    from metareward.algos import ppo  # (its import applies metareward's XLA:CPU setting)


    class Corridor(envs.SpecMixin, envs.Env):
        """Walk right (action 1) from 0 to `size`; reward 1 there, which ends the episode."""

        def __init__(self, name: str, episode_length: int | None = None, size: int = 4):
            self.size = size  # name, episode_length: what make() passes; size: an option
            self._spec = envs.EnvSpec(name, obs_shape=(1,), discrete=True, action_size=2,
                                      episode_length=episode_length or 20)

        def reset(self, rng: jax.Array) -> envs.State:
            zero = jnp.zeros(())
            return envs.State(pipeline_state=zero, obs=jnp.zeros(1), reward=zero, done=zero)

        def step(self, state: envs.State, action: jax.Array) -> envs.State:
            pos = jnp.clip(state.pipeline_state + 2.0 * action - 1.0, 0, self.size)
            end = (pos >= self.size).astype(jnp.float32)
            return state.replace(pipeline_state=pos, obs=pos[None] / self.size,
                                 reward=end, done=end)

        observation_size = property(lambda self: 1)  # brax's Env asks for these three
        action_size = property(lambda self: 2)
        backend = property(lambda self: "corridor")


    # overwrite=True: running this cell again replaces the env instead of failing
    envs.register("corridor", Corridor, "walk right to the end of a line", overwrite=True)
    env = envs.make("corridor", size=3)  # adds time limit, auto-reset, episode statistics

    config = ppo.Config(num_envs=2, num_steps=16, total_steps=96, num_epochs=2,
                        num_minibatches=2)  # 3 updates of 2 x 16 steps
    trainer = ppo.make_train(config, env)
    state, metrics = jax.jit(trainer.train)(jax.random.key(0))
    print(metrics["episode_return"])
    # --- template end ---
    return {"Corridor": Corridor, "env": env, "state": state, "metrics": metrics}


@pytest.fixture
def restore_registry():
    """Leaves the env registry as it found it."""
    saved = dict(registry._REGISTRY), dict(registry._TASKS)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved[0])
    registry._TASKS.clear()
    registry._TASKS.update(saved[1])


def test_the_template_runs_twice_and_trains(restore_registry):
    first = own_env_template()
    second = own_env_template()  # the notebook cell run again: no "already registered"
    assert "corridor" in envs.names(source="user")
    assert registry._REGISTRY["corridor"].factory is second["Corridor"]
    assert first["Corridor"] is not second["Corridor"]
    assert second["env"].spec.episode_length == 20
    assert int(second["state"].update_step) == 3
    returns = np.asarray(second["metrics"]["episode_return"])
    assert returns.shape[0] == 3 and np.isfinite(returns).all()
    # the env is what the template says: right, right, right reaches the end (size 3)
    state = second["env"].reset(jax.random.key(1))
    for _ in range(3):
        state = second["env"].step(state, 1)
    assert float(state.reward) == 1.0 and float(state.done) == 1.0


def test_the_page_can_include_the_template_verbatim():
    lines = Path(__file__).read_text().splitlines()
    start, end = (lines.index("    # --- template start ---"),
                  lines.index("    # --- template end ---"))
    body = textwrap.dedent("\n".join(lines[start + 1:end]))
    compile(body, "own_env_template", "exec")  # a script once dedented
    assert 25 <= end - start - 1 <= 50


PLUGIN = '''
import jax.numpy as jnp
from brax.envs.base import Env, State

from metareward import envs


class Line(envs.SpecMixin, Env):
    def __init__(self, name, episode_length=None):
        self._spec = envs.EnvSpec(name, (1,), True, 2, episode_length=episode_length or 8)

    def reset(self, rng):
        zero = jnp.zeros(())
        return State(pipeline_state=zero, obs=jnp.zeros(1), reward=zero, done=zero)

    def step(self, state, action):
        pos = state.pipeline_state + action
        return state.replace(pipeline_state=pos, obs=pos[None], reward=jnp.float32(action))

    observation_size = property(lambda self: 1)
    action_size = property(lambda self: 2)
    backend = property(lambda self: "line")


def register_envs():
    envs.register("line-plugin", Line, "a line, from an entry point", "plugin")
'''


def _install_plugin(root: Path) -> dict[str, str]:
    """A distribution ``line-plugin`` under ``root`` whose entry point (group
    ``metareward.envs``) registers the env ``line-plugin``, as ``pip install`` would leave
    it; the environment of a process that finds it on ``sys.path``."""
    (root / "line_plugin.py").write_text(PLUGIN)
    info = root / "line_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: line-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[{envs.ENTRY_POINT_GROUP}]\nline = line_plugin:register_envs\n")
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def test_an_entry_point_env_is_found_by_a_fresh_process(tmp_path):
    env = _install_plugin(tmp_path)
    code = ("from metareward import envs; print(envs.names(source='plugin')); "
            "e = envs.make('line-plugin'); print(e.spec.name, e.spec.episode_length)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["['line-plugin']", "line-plugin 8"]
    # the command (`list`, and `train`/`eval`/`resume` through metareward.envs.make)
    out = subprocess.run([sys.executable, "-m", "metareward", "list"], capture_output=True,
                         text=True, env=env, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "line-plugin" in out.stdout and "a line, from an entry point" in out.stdout


def test_a_failing_entry_point_is_named(tmp_path):
    env = _install_plugin(tmp_path)
    (tmp_path / "line_plugin.py").write_text("def register_envs():\n    raise OSError('no')\n")
    out = subprocess.run([sys.executable, "-c", "from metareward import envs; envs.names()"],
                         capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert out.returncode != 0
    assert ("the env plugin line = line_plugin:register_envs (entry-point group "
            "'metareward.envs') failed: OSError: no") in out.stderr


@pytest.mark.slow
def test_train_eval_and_resume_find_an_entry_point_env(tmp_path):
    """A run on an entry-point env, then ``eval`` and ``resume`` in fresh processes."""
    env = _install_plugin(tmp_path)
    tiny = ["--seeds", "1", "--set", "num_envs=2", "--set", "num_steps=8", "--set",
            "num_epochs=1", "--set", "num_minibatches=2", "--set", "hidden=8,8"]

    def metareward(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run([sys.executable, "-m", "metareward", *args], capture_output=True,
                             text=True, env=env, timeout=600, cwd=tmp_path)
        assert out.returncode == 0, out.stdout + out.stderr
        return out

    metareward("train", "ppo", "--env", "line-plugin", *tiny, "--total-steps", "64",
               "--chunk-updates", "2", "--eval-episodes", "1", "--no-progress")
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert "checkpoint of update 4" in metareward("eval", str(run_dir), "--episodes", "1").stdout
    metareward("resume", str(run_dir), "--no-progress")
