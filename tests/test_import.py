"""What ``import metareward`` promises: no side effects (``XLA_FLAGS`` untouched, jax,
brax/MuJoCo and gymnax imported only by the subpackages that need them), a quiet import,
and metareward's XLA:CPU settings where metareward trains (the learners, the command, the
runtime, the test suite) or on request (``metareward.configure_xla()``): none by default,
the sequential-scheduler flag with ``METAREWARD_XLA_SEQUENTIAL_SCHEDULER=1``."""

import os
import subprocess
import sys

from fast_compile import FAST_COMPILE

FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


SEQ = "METAREWARD_XLA_SEQUENTIAL_SCHEDULER"


def _run(code: str, env_flags: str | None = None,
         sequential: str | None = "1") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", SEQ)}
    if env_flags is not None:
        env["XLA_FLAGS"] = env_flags
    if sequential is not None:
        env[SEQ] = sequential
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


def test_import_leaves_xla_flags_alone_and_imports_no_jax():
    out = _run("import os, sys, metareward; "
               "print(os.environ.get('XLA_FLAGS'), sorted({'jax', 'brax', 'mujoco', 'gymnax'}"
               " & set(sys.modules)))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None []"


def test_envs_import_leaves_xla_flags_alone_and_prints_nothing():
    code = ("import os, sys, metareward.envs; from metareward._xla import _cpu_backend_started;"
            " print(os.environ.get('XLA_FLAGS'), 'gymnax' in sys.modules,"
            " _cpu_backend_started())")
    out = _run(code)
    assert out.returncode == 0, out.stderr
    # nothing else on stdout (no "Failed to import warp"); gymnax waits for a gymnax env
    assert out.stdout.strip() == "None False False"


def test_by_default_no_flag_is_applied():
    # XLA's own scheduler: metareward's programs no longer deadlock under it (issue 37)
    for module in ("metareward.algos", "metareward.cli", "metareward.runtime"):
        for value in (None, "0", ""):
            out = _run(f"import os, {module}; import metareward; "
                       "print(os.environ.get('XLA_FLAGS'), metareward.configure_xla())",
                       sequential=value)
            assert out.returncode == 0, out.stderr
            assert out.stdout.strip() == "None []", (module, value)


def test_a_bad_sequential_scheduler_value_is_refused_naming_it():
    out = _run("import metareward; metareward.configure_xla()", sequential="yes")
    assert out.returncode != 0
    assert "METAREWARD_XLA_SEQUENTIAL_SCHEDULER='yes': allowed are 0, 1 or unset" in out.stderr


def test_the_command_refuses_a_bad_sequential_scheduler_value_in_one_line(tmp_path):
    from cli_runs import run

    env = {**os.environ, SEQ: "2"}
    out = run("list", cwd=tmp_path, env=env)
    assert out.returncode == 2
    assert out.stderr.strip() == ("metareward list: error: METAREWARD_XLA_SEQUENTIAL_SCHEDULER="
                                  "'2': allowed are 0, 1 or unset")


def test_learners_import_quietly_and_apply_the_flag():
    # brax (imported by metareward.algos before metareward.envs) imports mujoco-mjx, which
    # prints "Failed to import warp" on a CPU: import metareward silences that one module.
    # The learners build the training programs, so importing them applies the flag (the
    # functional API cannot meet the scheduler's deadlock by a forgotten call), before
    # anything starts jax's backend.
    out = _run("import metareward.rl, metareward.meta, os; print(os.environ.get('XLA_FLAGS'))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"
    out = _run("import metareward.algos, os; "
               "from metareward._xla import _cpu_backend_started; "
               "print(os.environ['XLA_FLAGS'], _cpu_backend_started())")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{FLAG} False"


def test_configure_xla_sets_the_flag_before_jax_starts():
    out = _run("import os, warnings, metareward; warnings.simplefilter('error'); "
               "print(metareward.configure_xla(), metareward.configure_xla()); "
               "import jax; jax.numpy.ones(1).block_until_ready(); "
               "print(os.environ['XLA_FLAGS'])")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"['{FLAG}'] []", FLAG]


def test_the_command_and_the_runtime_apply_the_flag():
    for module in ("metareward.cli", "metareward.runtime"):
        out = _run(f"import os, {module}; print(os.environ['XLA_FLAGS'])",
                   env_flags="--xla_dump_to=/nonexistent")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"--xla_dump_to=/nonexistent {FLAG}", module


def test_user_setting_of_the_flag_is_kept():
    mine = "--xla_cpu_enable_concurrency_optimized_scheduler=true"
    out = _run("import os, metareward.cli; print(os.environ['XLA_FLAGS'])", env_flags=mine)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == mine


def test_warns_when_jax_cpu_backend_started_first():
    out = _run("import jax; jax.numpy.ones(1).block_until_ready(); import metareward; "
               "metareward.configure_xla()")
    assert out.returncode == 0, out.stderr
    assert "RuntimeWarning" in out.stderr and "configure_xla" in out.stderr


def test_the_suite_compiles_as_the_command_does():
    # tests/conftest.py applies metareward's settings after FAST_COMPILE: none unless
    # METAREWARD_XLA_SEQUENTIAL_SCHEDULER=1, as for the command
    flags = os.environ.get("XLA_FLAGS", "")
    assert (FLAG in flags) == (os.environ.get(SEQ) == "1")
    if FAST_COMPILE in flags and FLAG in flags:
        assert flags.index(FAST_COMPILE) < flags.index(FLAG)
