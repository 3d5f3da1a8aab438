"""One ``preset()``: every algorithm's presets looked up the same way; a typo in an env
name fails (listing the envs with presets); a registered env without a preset gets the
paper defaults, and says so."""

import importlib

import pytest

from metareward.algos import ConfigError, algorithm_names, get_algorithm
from metareward.algos.config import DefaultConfigWarning

MODULES = ("a2c", "awr", "cln", "epg", "lirpg", "metagenrl", "ppo", "reinforce", "tare", "td3")


@pytest.mark.parametrize("module", MODULES)
def test_module_preset(module):
    mod = importlib.import_module(f"metareward.algos.{module}")
    for env_name, config in mod.PRESETS.items():
        assert mod.preset(env_name) is config
    with pytest.raises(ConfigError, match=r"unknown env 'cartpol' for a .* preset; envs with"):
        mod.preset("cartpol")
    without = next(n for n in ("acrobot", "catch", "hopper") if n not in mod.PRESETS)
    with pytest.warns(DefaultConfigWarning, match=f"no .* preset for env '{without}'"):
        assert mod.preset(without) == mod.Config()
    # Built by config.preset_function: a documented function of its module.
    assert mod.preset.__name__ == "preset"
    assert mod.preset.__module__ == mod.Config.__module__
    assert f"{mod.Config.__module__}.Config" in mod.preset.__doc__


def test_module_preset_finds_entries_added_later(monkeypatch):
    from metareward.algos import ppo

    custom = ppo.Config(num_envs=3)
    monkeypatch.setitem(ppo.PRESETS, "acrobot", custom)
    assert ppo.preset("acrobot") is custom


@pytest.mark.parametrize("name", algorithm_names())
def test_registry_default_config(name):
    spec = get_algorithm(name)
    for env_name, config in spec.presets.items():
        assert spec.default_config(env_name) is config
    with pytest.raises(ConfigError, match=f"envs with {name} presets: {sorted(spec.presets)!r}"
                       .replace("[", r"\[").replace("]", r"\]")):
        spec.default_config("cartpol")


def test_multi_env_list_uses_the_first_env():
    from metareward.algos import metagenrl

    assert metagenrl.preset("pendulum,mountaincar-continuous") is metagenrl.PRESETS["pendulum"]
    with pytest.raises(ConfigError, match="unknown env 'mountaincar-cont'"):
        metagenrl.preset("pendulum,mountaincar-cont")


def test_algos_preset_by_name():
    from metareward.algos import preset, td3

    assert preset("ddpg", "pendulum") is td3.DDPG_PRESETS["pendulum"]
    with pytest.raises(ValueError, match="unknown algorithm 'dpg'"):
        preset("dpg", "pendulum")
