"""What ``import metareward`` promises: the XLA:CPU workaround and a quiet import."""

import os
import subprocess
import sys

FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def _run(code: str, env_flags: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if env_flags is not None:
        env["XLA_FLAGS"] = env_flags
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


def test_import_sets_the_xla_flag_and_prints_nothing():
    out = _run("import os, metareward.envs; print(os.environ['XLA_FLAGS'])")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == FLAG  # nothing else on stdout (no "Failed to import warp")


def test_user_setting_of_the_flag_is_kept():
    mine = "--xla_cpu_enable_concurrency_optimized_scheduler=true"
    out = _run("import os, metareward; print(os.environ['XLA_FLAGS'])", env_flags=mine)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == mine


def test_warns_when_jax_cpu_backend_started_first():
    out = _run("import jax; jax.numpy.ones(1).block_until_ready(); import metareward")
    assert out.returncode == 0, out.stderr
    assert "RuntimeWarning" in out.stderr and "XLA_FLAGS" in out.stderr
