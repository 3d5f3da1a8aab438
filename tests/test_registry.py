"""The env registry's contract for users' envs (:mod:`metareward.envs.registry`):
``register(..., overwrite=True)``, the factory's keywords checked at registration, envs
that lack a method named, and the entry-point group ``metareward.envs``."""

import importlib.metadata
import types

import jax.numpy as jnp
import pytest

from metareward import envs
from metareward.envs import registry
from metareward.envs.chain import ChainEnv


@pytest.fixture(autouse=True)
def restore_registry():
    """Leaves the env registry (and its plugin flag) as it found it."""
    saved = dict(registry._REGISTRY), dict(registry._TASKS), registry._plugins_loaded
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved[0])
    registry._TASKS.clear()
    registry._TASKS.update(saved[1])
    registry._plugins_loaded = saved[2]


def _chain(name, episode_length=None, **kwargs):
    return ChainEnv(name, episode_length, **kwargs)


def test_register_refuses_a_taken_name_unless_overwrite():
    envs.register("mine", _chain, "first")
    with pytest.raises(ValueError, match=r"'mine' is already registered .*overwrite=True"):
        envs.register("mine", _chain, "again")
    envs.register("mine", _chain, "second", overwrite=True)
    assert envs.describe("mine") == "second"
    assert "mine" in envs.names(source="user")  # the default source
    assert envs.make("mine").spec.name == "mine"


def test_overwrite_forgets_the_old_task_distribution():
    envs.register("mine", _chain)
    envs.register_tasks("mine", envs.PENDULUM)
    with pytest.raises(ValueError, match="already has a task distribution"):
        envs.register_tasks("mine", envs.PENDULUM)
    envs.register_tasks("mine", envs.PENDULUM, overwrite=True)
    envs.register("mine", _chain, overwrite=True)  # the cell run again, from the top
    assert "mine" not in envs.randomizable()
    envs.register_tasks("mine", envs.PENDULUM)
    assert "mine" in envs.randomizable()


def test_builtin_task_distributions_survive_registration():
    assert {"hopper", "pendulum", "pointmass", "reacher"} <= set(envs.randomizable())


def test_a_factory_without_the_make_keywords_is_refused_at_registration():
    def no_length(name):
        return _chain(name)

    with pytest.raises(TypeError, match=r"'no_length' does not accept the keyword "
                                        r"argument\(s\) \['episode_length'\]"):
        envs.register("mine", no_length)
    with pytest.raises(TypeError, match="factory must be callable"):
        envs.register("mine", 3)
    envs.register("mine", lambda **kw: _chain(**kw))  # **kwargs takes them
    envs.register("mine2", ChainEnv)  # a class whose __init__ takes them
    assert "mine" not in registry._TASKS


class _NoSpec(envs.Env):
    def __init__(self, name, episode_length=None):
        pass  # forgets self._spec

    def reset(self, rng):
        raise NotImplementedError

    def step(self, state, action):
        raise NotImplementedError

    observation_size = action_size = backend = None


class _HalfEnv(envs.SpecMixin):
    """No brax base class, no step."""

    def __init__(self, name, episode_length=None):
        self._spec = envs.EnvSpec(name, (1,), True, 2)

    def reset(self, rng):
        return jnp.zeros(1)


class _Abstract(envs.SpecMixin, envs.Env):
    def __init__(self, name, episode_length=None):
        self._spec = envs.EnvSpec(name, (1,), True, 2)

    def reset(self, rng):
        raise NotImplementedError

    def step(self, state, action):
        raise NotImplementedError


def test_an_env_that_lacks_a_member_is_named():
    envs.register("nospec", _NoSpec)
    with pytest.raises(TypeError, match=r"'nospec': its factory returned a _NoSpec, which "
                                        r"lacks spec .*; auto_resets"):
        envs.make("nospec")
    envs.register("half", _HalfEnv)
    with pytest.raises(TypeError, match=r"returned a _HalfEnv, which lacks the method\(s\) "
                                        r"step\. An env needs reset\(rng\)"):
        envs.make("half")
    envs.register("abstract", _Abstract)
    with pytest.raises(TypeError, match=r"'abstract': Can't instantiate abstract class "
                                        r"_Abstract.*(action_size|backend).*also needs the "
                                        r"properties observation_size, action_size and "
                                        r"backend"):
        envs.make("abstract")


def test_a_wrong_spec_type_is_named():
    class BadSpec(_HalfEnv):
        spec = ("obs_shape", (1,))
        auto_resets = 0

        def step(self, state, action):
            return state

    envs.register("badspec", BadSpec)
    with pytest.raises(TypeError, match=r"a spec of type EnvSpec \(got tuple\); "
                                        r"auto_resets of type bool \(got int\)"):
        envs.make("badspec")


class _EntryPoint:
    """What ``importlib.metadata.entry_points`` yields, for a loaded object."""

    def __init__(self, name, value, obj):
        self.name, self.value, self._obj = name, value, obj

    def load(self):
        return self._obj


def _fake_entry_points(monkeypatch, *eps):
    seen = []

    def entry_points(*, group):
        seen.append(group)
        return list(eps) if group == envs.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    registry._plugins_loaded = False
    return seen


def test_entry_points_are_loaded_once_before_any_lookup(monkeypatch):
    calls = []

    def register_envs():
        calls.append(1)
        envs.register("from-plugin", _chain, "plugin env", "plugin")

    module = types.ModuleType("plugin_module")  # a module: importing it registered
    seen = _fake_entry_points(monkeypatch, _EntryPoint("a", "pkg:register_envs", register_envs),
                              _EntryPoint("b", "plugin_module", module))
    assert envs.make("from-plugin").spec.name == "from-plugin"
    assert envs.names(source="plugin") == ["from-plugin"]
    assert calls == [1] and seen == ["metareward.envs"]


def test_a_user_registration_after_a_plugin_sees_its_names(monkeypatch):
    _fake_entry_points(monkeypatch, _EntryPoint(
        "a", "pkg:f", lambda: envs.register("taken", _chain, source="plugin")))
    with pytest.raises(ValueError, match=r"'taken' is already registered .*'plugin'"):
        envs.register("taken", _chain)


def test_a_failing_plugin_is_named(monkeypatch):
    def broken():
        raise ImportError("no module named foo")

    _fake_entry_points(monkeypatch, _EntryPoint("bad", "pkg.mod:broken", broken),
                       _EntryPoint("good", "pkg:f", lambda: envs.register("fine", _chain)))
    with pytest.raises(RuntimeError, match=r"the env plugin bad = pkg.mod:broken \(entry-point "
                                           r"group 'metareward.envs'\) failed: ImportError"):
        envs.names()
    assert "fine" in envs.names()  # the others loaded; reported once

