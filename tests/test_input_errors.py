"""Bad input is one line on stderr, exit code 2, no traceback and nothing written
(issue 31): non-finite config floats, bad env options, non-UTF-8 config and metrics
files, EPG's buffer size, ``metareward plot``'s output and metric, ``meta-test --out``.

The checks call the validators directly; tests/test_bad_inputs.py sends the same cases
through the command."""

import json
import os
from pathlib import Path

import pytest

from metareward import envs
from metareward.errors import ConfigError
from metareward.runtime import configs

BINARY = bytes(range(128, 256)) * 2  # not UTF-8 from the first byte


def fake_run(path, records=None):
    """A run directory with a metrics.jsonl (2 seeds x 3 chunks) and a config.json."""
    path.mkdir(parents=True)
    if records is None:
        records = [{"seed": s, "chunk": c, "update": c + 1, "env_steps": 100 * (c + 1),
                    "return_mean": float(c + s), "return_std": 0.0, "episodes": 1,
                    "loss": 0.5} for c in range(3) for s in range(2)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (path / "config.json").write_text(json.dumps(
        {"algo": "epg", "env": "pendulum", "config": {}, "run": {"num_updates": 3,
                                                                  "seeds": 2}}))
    return path


# --- 1. non-finite floats in configs ---------------------------------------------------


@pytest.mark.parametrize("value", ["1e400", "-1e400", float("inf"), float("nan")])
def test_coerce_rejects_non_finite_floats(value):
    with pytest.raises(ConfigError, match="'learning_rate' expects a finite number, got"):
        configs.coerce("learning_rate", float, value)
    with pytest.raises(ConfigError, match="'max_grad_norm' expects a finite number or none"):
        configs.coerce("max_grad_norm", float | None, value)
    with pytest.raises(ConfigError, match="'scales' expects a list of finite numbers"):
        configs.coerce("scales", tuple[float, ...], [1.0, value])
    assert configs.coerce("learning_rate", float, "1e-3") == 1e-3  # finite: as before
    assert configs.coerce("max_grad_norm", float | None, "none") is None


@pytest.mark.parametrize("name,text", [
    ("c.json", '{"learning_rate": Infinity}'),
    ("c.json", '{"learning_rate": NaN}'),
    ("c.yaml", "learning_rate: .inf\n"),
    ("c.toml", "learning_rate = -inf\n"),
])
def test_config_file_with_non_finite_float_is_rejected(tmp_path, name, text):
    from metareward.algos import get_algorithm

    (tmp_path / name).write_text(text)
    default = get_algorithm("ppo").default_config("cartpole")
    with pytest.raises(ConfigError) as e:
        configs.resolve_config(default, tmp_path / name)
    assert "'learning_rate' expects a finite number" in str(e.value)
    assert f"config file {str(tmp_path / name)!r}" in str(e.value)


# --- 3. config files that are not UTF-8 text -------------------------------------------


@pytest.mark.parametrize("name", ["c.json", "c.toml", "c.yaml"])
def test_config_file_that_is_not_utf8_names_the_file(tmp_path, name):
    (tmp_path / name).write_bytes(BINARY)
    with pytest.raises(ConfigError, match="is not UTF-8 text") as e:
        configs.load_config_file(tmp_path / name)
    assert f"config file {str(tmp_path / name)!r}" in str(e.value)


# --- 2. env options: types and ranges --------------------------------------------------


@pytest.mark.parametrize("name,options,message", [
    ("cartpole", {"gravity": "nan"}, "env option gravity='nan' for cartpole: expects a "
                                     "finite number"),
    ("cartpole", {"gravity": float("nan")}, "gravity=nan for cartpole: expects a finite"),
    ("cartpole", {"gravity": [1, 2]}, "gravity=[1, 2] for cartpole: expects a finite"),
    ("cartpole", {"gravity": True}, "gravity=True for cartpole: expects a finite number"),
    ("cartpole", {"max_steps_in_episode": -5}, "max_steps_in_episode=-5 for cartpole: "
                                               "expects an int > 0"),
    ("cartpole", {"max_steps_in_episode": 2.5}, "expects an int > 0"),
    ("cartpole", {"episode_length": True}, "episode_length=True for cartpole: expects an "
                                           "int > 0"),
    ("pendulum", {"randomize": True, "max_speed": "fast"}, "max_speed='fast' for pendulum"),
    ("acrobot", {"available_torque": [1.0, 2.0]}, "expects 3 numbers, e.g. [-1.0, 0.0, 1.0]"),
    ("asterix-minatar", {"ramping": "maybe"}, "ramping='maybe' for asterix-minatar: expects "
                                              "true or false"),
    ("seaquest-minatar", {"max_oxygen": 0}, "max_oxygen=0 for seaquest-minatar: expects an "
                                            "int > 0"),
    ("chain", {"right_mean": float("inf")}, "right_mean=inf for chain: expects a finite"),
    ("chain", {"step_limit_truncates": 1}, "step_limit_truncates=1 for chain: expects true "
                                           "or false"),
    # brax: checked before the model is loaded; unknown names list the allowed ones
    ("hopper", {"ctrl_cost_weight": float("nan")}, "ctrl_cost_weight=nan for hopper: "
                                                   "expects a finite number"),
    ("hopper", {"healthy_z_range": (1.0,)}, "expects 2 numbers, e.g. (0.7, inf)"),
    ("hopper", {"n_frames": 0}, "n_frames=0 for hopper: expects an int > 0"),
    ("reacher", {"ctrl_cost": 1.0}, "reacher: unknown env parameter(s) ['ctrl_cost']; "
                                    "allowed: ['debug', 'n_frames']"),
])
def test_env_option_of_a_wrong_type_or_range_fails_in_make(name, options, message):
    with pytest.raises(ValueError) as e:
        envs.make(name, **options)
    assert message in str(e.value)


def test_env_options_are_converted_to_the_type_of_their_default():
    env = envs.make("cartpole", gravity=10, max_steps_in_episode=1e2).unwrapped
    params = env.gymnax_params
    assert type(params.max_steps_in_episode) is int and params.max_steps_in_episode == 100
    assert type(params.gravity) is float and params.gravity == 10.0
    assert env.spec.episode_length == 100
    chain = envs.make("chain", step_limit_truncates="true").unwrapped
    assert chain.step_limit_truncates is True


# --- 4. EPG's buffer size ---------------------------------------------------------------


def test_epg_buffer_too_short_names_the_key_and_the_smallest_value():
    from metareward.algos import epg
    from metareward.nets.epg import LOSS_ARCHS, conv_output_length, min_input_length

    assert min_input_length(LOSS_ARCHS["paper"]["conv"]) == 29
    assert min_input_length(LOSS_ARCHS["code"]["conv"]) == 21
    for arch in LOSS_ARCHS.values():  # the smallest length gives one output step
        assert conv_output_length(min_input_length(arch["conv"]), arch["conv"]) == 1
    with pytest.raises(ConfigError) as e:
        epg.Config(steps_per_update=16, buffer_size=16)
    assert "config field buffer_size=16 is invalid; allowed: an int >= 29" in str(e.value)
    assert "a buffer of 2 steps" not in str(e.value)
    with pytest.raises(ConfigError, match=r"buffer_size=20 is invalid; allowed: an int >= 21"):
        epg.Config(steps_per_update=16, buffer_size=20, loss_arch="code")
    with pytest.raises(ConfigError, match=r"buffer_size=16 is invalid; allowed: an int >= 64"):
        epg.Config(steps_per_update=64, buffer_size=16)
    epg.Config(steps_per_update=16, buffer_size=29)  # the smallest allowed: fine


# --- 5. plot: output format, metric, metrics files -------------------------------------


@pytest.mark.parametrize("out,message", [
    ("x.xyz", "output 'x.xyz': unknown figure format '.xyz'; allowed: .avif, .eps"),
    ("noext", "output 'noext' has no suffix; the suffix is the figure's format, one of"),
    ("adir", "output 'adir' is a directory; give a file name, e.g. adir/curves.png"),
    ("afile/x.png", "output 'afile/x.png' cannot be written: afile is a file"),
])
def test_plot_output_is_checked_before_drawing(tmp_path, monkeypatch, out, message):
    from metareward.runtime.plot import plot_runs

    monkeypatch.chdir(tmp_path)
    fake_run(tmp_path / "r1")
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError) as e:
        plot_runs(["r1"], out)
    assert message in str(e.value) and ".png" in str(e.value)
    assert sorted(os.listdir(tmp_path)) == before and os.listdir("adir") == []


def test_plot_unknown_metric_names_the_metrics_the_runs_have(tmp_path):
    from metareward.runtime.plot import plot_runs

    r1, r2 = fake_run(tmp_path / "r1"), fake_run(tmp_path / "r2")
    with pytest.raises(ValueError) as e:
        plot_runs([r1, r2], tmp_path / "c.png", metric="bogus")
    assert f"no metric 'bogus' in the metrics.jsonl of {r1}, {r2}" in str(e.value)
    assert "'loss', 'return_mean'" in str(e.value)
    assert not (tmp_path / "c.png").exists()
    # a metric present in the runs still plots, and so do returns that are all null (a
    # run whose chunks ended no episode: what the driver plots at the end of a run)
    assert plot_runs([r1, r2], tmp_path / "c.png", metric="loss").is_file()
    nulls = fake_run(tmp_path / "r3", [{"seed": 0, "chunk": 0, "update": 1, "env_steps": 8,
                                        "return_mean": None}])
    assert plot_runs([nulls], tmp_path / "n.png").is_file()


def test_read_metrics_skips_lines_that_are_not_objects_and_refuses_binary(tmp_path):
    from metareward.runtime.rundir import RunDir

    rd = RunDir(tmp_path)
    rd.metrics_jsonl.write_text('3\n[1]\n"x"\nnull\n{"chunk": 0}\n{"chunk": 1, "env_st')
    assert rd.read_metrics() == [{"chunk": 0}]
    rd.metrics_jsonl.write_bytes(BINARY)
    with pytest.raises(ValueError) as e:
        rd.read_metrics()
    assert f"{rd.metrics_jsonl} is not UTF-8 text" in str(e.value)


# --- 6. meta-test --out, checked before the work ---------------------------------------


def test_check_writable_dir(tmp_path, monkeypatch):
    from metareward.runtime import paths

    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match=r"f is a file, not a directory"):
        paths.check_writable_dir(tmp_path / "f")
    with pytest.raises(ValueError, match=r"f/a/b is under a file \(.*f\)"):
        paths.check_writable_dir(tmp_path / "f" / "a" / "b")
    paths.check_writable_dir(tmp_path / "new" / "deeper")  # creatable: fine, not created
    paths.check_writable_dir(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["f"]
    # (as root, os.access says any directory is writable: pretend it is read-only)
    monkeypatch.setattr(paths.os, "access", lambda p, mode: Path(p) != tmp_path)
    with pytest.raises(ValueError, match=rf"new is not writable \({tmp_path} is read-only\)"):
        paths.check_writable_dir(tmp_path / "new")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root may write into a read-only (chmod 555) directory")
def test_check_writable_dir_under_a_read_only_directory(tmp_path):
    from metareward.runtime import paths

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="is not writable"):
            paths.check_writable_dir(ro / "out")
    finally:
        ro.chmod(0o755)


def test_meta_test_checks_out_before_loading_the_run(tmp_path):
    from metareward.runtime import meta_test

    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        meta_test.run(tmp_path / "no-such-run", out=tmp_path / "f")

# The same cases end to end through the command: tests/test_bad_inputs.py.
