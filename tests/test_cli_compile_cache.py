"""The ``metareward`` command keeps its compiled programs in JAX's persistent compilation
cache (issue 37): on by default, in ``$METAREWARD_COMPILE_CACHE``; off with
``--no-compile-cache`` or ``METAREWARD_COMPILE_CACHE=off``."""

import os

from cli_runs import TINY, ok, run

from metareward.cli import compile_cache_dir


def _env(cache):
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["METAREWARD_COMPILE_CACHE"] = str(cache)
    # jax caches only programs that took over 1 s to compile: on a loaded machine a small
    # program crosses that line in one run and not the next, so cache every program here
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def _files(path):
    return sorted(p.name for p in path.rglob("*") if p.is_file()) if path.exists() else []


def test_train_fills_the_cache_and_the_flag_turns_it_off(tmp_path):
    cache = tmp_path / "cache"
    args = ["train", "ppo", "--env", "cartpole", *TINY, "--total-steps", "384",
            "--eval-episodes", "2", "--no-progress"]
    ok(run(*args, "--no-compile-cache", "--out", tmp_path / "a", cwd=tmp_path,
           env=_env(cache)))
    assert _files(cache) == []
    ok(run(*args, "--out", tmp_path / "b", cwd=tmp_path, env=_env(cache)))
    first = _files(cache)
    assert first, "the training program was not cached"
    # the same program again: loaded from the cache, nothing new written
    ok(run(*args, "--out", tmp_path / "c", cwd=tmp_path, env=_env(cache)))
    assert _files(cache) == first
    ok(run(*args, "--out", tmp_path / "d", cwd=tmp_path, env=_env("off")))


def test_cache_directory_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("METAREWARD_COMPILE_CACHE", "off")
    assert compile_cache_dir() is None
    monkeypatch.setenv("METAREWARD_COMPILE_CACHE", str(tmp_path / "c"))
    assert compile_cache_dir() == str(tmp_path / "c")
    assert compile_cache_dir(disabled=True) is None
    monkeypatch.delenv("METAREWARD_COMPILE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache_dir() == str(tmp_path / "metareward" / "jax-compile-cache")
