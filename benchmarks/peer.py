"""Peer baseline for the throughput benchmark: brax's own PPO on gymnax environments.

brax.training does not run on the main project's jax (it calls
``jax.device_put_replicated``, gone from newer jax), so the peer runs in its own
virtual env with pinned, mutually compatible versions, and is driven through a
subprocess running ``benchmarks/_brax_peer_ppo.py``.  Importing this module imports
neither jax nor brax.

Typical use::

    from benchmarks.peer import run_peer
    result = run_peer("pendulum", num_envs=8, unroll_length=128, num_minibatches=4,
                      num_epochs=4, total_steps=200_000, learning_rate=3e-4, gamma=0.99,
                      gae_lambda=0.95, clip_eps=0.2, entropy_coef=0.0, vf_coef=0.5,
                      max_grad_norm=0.5, normalize_obs=True, reward_scale=0.1)
    result["steps_per_s"], result["compile_s"], result["final_return"]
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

#: Direct requirements of the peer env (exact pins).  gymnax 1.0.1 declares jax<0.12 and
#: imports ``six`` without declaring it; it installs and runs beside jax 0.7.2.
PEER_REQUIREMENTS: list[str] = [
    "jax==0.7.2",
    "jaxlib==0.7.2",
    "brax==0.14.2",
    "flax==0.12.0",
    "gymnax==1.0.1",
    "six==1.17.0",
]

#: Every transitive dependency, pinned to the versions the peer was validated with
#: (``pip freeze`` of a working env), passed to pip as a constraints file so that a
#: future release of e.g. optax / mujoco-mjx cannot silently change the peer.
PEER_CONSTRAINTS: list[str] = [
    "absl-py==2.5.1",
    "aiofiles==25.1.0",
    "blinker==1.9.0",
    "click==8.5.1",
    "cloudpickle==3.1.2",
    "contourpy==1.3.3",
    "cycler==0.12.1",
    "etils==1.15.0",
    "Farama-Notifications==0.0.6",
    "Flask==3.1.3",
    "flask-cors==6.0.5",
    "fonttools==4.68.0",
    "fsspec==2026.9.0",
    "glfw==2.11.0",
    "gymnasium==1.3.0",
    "humanize==4.17.0",
    "itsdangerous==2.2.0",
    "jaxopt==0.8.5",
    "Jinja2==3.1.6",
    "kiwisolver==1.5.1",
    "markdown-it-py==4.3.0",
    "MarkupSafe==3.0.4",
    "matplotlib==3.11.2",
    "mdurl==0.1.2",
    "ml_collections==1.1.0",
    "ml_dtypes==0.6.0",
    "msgpack==1.2.4",
    "mujoco==4.0.0",
    "mujoco-core==4.0.0",
    "mujoco-mjx==3.17.0",
    "mujoco-studio==4.0.0",
    "numpy==2.4.6",
    "opt_einsum==3.4.0",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "packaging==26.3",
    "pandas==3.1.1",
    "pillow==13.0.0",
    "prometheus_client==0.26.0",
    "protobuf==7.36.2",
    "psutil==7.2.2",
    "Pygments==2.21.0",
    "PyOpenGL==3.1.10",
    "pyparsing==3.3.3",
    "python-dateutil==4.0.0",
    "PyYAML==6.0.3",
    "rich==15.0.0",
    "scipy==1.17.1",
    "seaborn==0.13.2",
    "simplejson==4.3.0",
    "tensorboardX==2.6.5",
    "tensorstore==0.1.86",
    "treescope==0.1.10",
    "trimesh==5.2.0",
    "typing_extensions==4.16.0",
    "tzdata==2026.6",
    "uvloop==0.23.0",
    "websockets==17.4",
    "Werkzeug==3.1.9",
    "zipp==4.1.2",
]

#: Environment variable overriding the peer venv location.
PEER_VENV_ENV_VAR = "METAREWARD_PEER_VENV"
DEFAULT_PEER_VENV = Path("~/.cache/metareward/brax-peer-venv")
PEER_SCRIPT = Path(__file__).with_name("_brax_peer_ppo.py")
PEER_ENVS = ("pendulum", "cartpole")

_MARKER = ".metareward-peer-pins"


def default_peer_venv() -> Path:
    """Peer venv location: ``$METAREWARD_PEER_VENV`` or ``~/.cache/metareward/...``."""
    return Path(os.environ.get(PEER_VENV_ENV_VAR) or DEFAULT_PEER_VENV).expanduser()


def _marker_text(requirements: Sequence[str], constraints: Sequence[str]) -> str:
    """Return the text the marker must hold for an existing venv to be reused."""
    lines = [f"python {sys.version_info.major}.{sys.version_info.minor}"]
    lines += ["# requirements", *requirements, "# constraints", *constraints]
    return "\n".join(lines) + "\n"


def _venv_python(venv: Path) -> Path:
    """Path of the venv's python executable."""
    return venv / "bin" / "python"


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive file lock (serialises concurrent venv builds)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run_checked(cmd: Sequence[str | os.PathLike[str]], what: str) -> None:
    """Run ``cmd``; raise ``RuntimeError`` with its output tail if it fails."""
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, env=clean_env(), check=False
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def ensure_peer_venv(path: str | Path | None = None) -> Path:
    """Create (once) the pinned brax peer venv and return its python executable.

    Args:
        path: venv directory; defaults to :func:`default_peer_venv`.

    Returns:
        Path of the venv's ``python``.
    """
    venv = Path(path).expanduser() if path is not None else default_peer_venv()
    return ensure_venv(venv, PEER_REQUIREMENTS, PEER_CONSTRAINTS)


def ensure_venv(venv: Path, requirements: Sequence[str], constraints: Sequence[str]) -> Path:
    """Create (once) a virtual env holding exactly ``requirements`` under ``constraints``
    and return its python executable.

    Idempotent: a marker file inside the venv records the pins it was built with; the
    venv is reused while the marker matches and rebuilt from scratch when it does not
    (pins changed, interrupted build, different python minor version).

    Args:
        venv: venv directory.
        requirements: the direct requirements (exact pins).
        constraints: every transitive dependency, pinned (a pip constraints file).

    Returns:
        Path of the venv's ``python``.
    """
    venv = venv.absolute()
    marker = venv / _MARKER
    python = _venv_python(venv)
    wanted = _marker_text(requirements, constraints)

    def is_ready() -> bool:
        return python.exists() and marker.exists() and marker.read_text() == wanted

    if is_ready():
        return python
    with _locked(venv.parent / f".{venv.name}.lock"):
        if is_ready():  # built by a concurrent caller while we waited
            return python
        if venv.exists():
            if not (venv / "pyvenv.cfg").exists():
                raise RuntimeError(f"{venv} exists and is not a virtual env; refusing to replace")
            shutil.rmtree(venv)
        _run_checked([sys.executable, "-m", "venv", venv], "creating the peer venv")
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
            fh.write("\n".join(constraints) + "\n")
            constraints_file = fh.name
        try:
            _run_checked(
                [
                    python,
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--constraint",
                    constraints_file,
                    *requirements,
                ],
                "installing the peer requirements",
            )
        finally:
            os.unlink(constraints_file)
        marker.write_text(wanted)
    return python


def clean_env() -> dict[str, str]:
    """Environment for peer subprocesses, isolated from the main project's env."""
    env = dict(os.environ)
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV"):
        env.pop(var, None)
    env["PYTHONNOUSERSITE"] = "1"
    # The peer venv ships CPU-only jaxlib; don't inherit e.g. JAX_PLATFORMS=cuda.
    env["JAX_PLATFORMS"] = os.environ.get("METAREWARD_PEER_JAX_PLATFORMS", "cpu")
    return env


def peer_command(
    env: str,
    *,
    python: str | Path,
    json_out: str | Path,
    num_envs: int,
    unroll_length: int,
    num_minibatches: int,
    num_epochs: int,
    total_steps: int,
    seed: int,
    learning_rate: float,
    gamma: float,
    gae_lambda: float,
    clip_eps: float,
    entropy_coef: float,
    vf_coef: float,
    max_grad_norm: float | None,
    normalize_obs: bool,
    reward_scale: float,
    hidden: Sequence[int],
    num_eval_envs: int,
    num_evals: int,
    autoreset: str = "brax",
    value_hidden: Sequence[int] | None = None,
    activation: str = "tanh",
    batch_size: int | None = None,
    distribution: str = "normal",
) -> list[str]:
    """Build the argv that runs the peer script (see ``_brax_peer_ppo.py --help``)."""
    if env not in PEER_ENVS:
        raise ValueError(f"unknown env {env!r}; expected one of {PEER_ENVS}")
    if batch_size is None and num_envs % num_minibatches:
        raise ValueError("num_envs must be divisible by num_minibatches")
    if batch_size is not None and (batch_size < 1 or (batch_size * num_minibatches) % num_envs):
        raise ValueError(f"batch_size * num_minibatches must be a positive multiple of "
                         f"num_envs = {num_envs}, got batch_size={batch_size}")
    if num_evals < 3:
        raise ValueError("num_evals must be >= 3 (>= 2 timed epochs to separate compile)")
    if autoreset not in ("brax", "resample"):
        raise ValueError(f"autoreset must be 'brax' or 'resample', got {autoreset!r}")
    return [
        str(python),
        str(PEER_SCRIPT),
        "--env", env,
        "--num-envs", str(num_envs),
        "--unroll-length", str(unroll_length),
        "--num-minibatches", str(num_minibatches),
        "--num-epochs", str(num_epochs),
        "--total-steps", str(total_steps),
        "--seed", str(seed),
        "--learning-rate", repr(float(learning_rate)),
        "--gamma", repr(float(gamma)),
        "--gae-lambda", repr(float(gae_lambda)),
        "--clip-eps", repr(float(clip_eps)),
        "--entropy-coef", repr(float(entropy_coef)),
        "--vf-coef", repr(float(vf_coef)),
        "--max-grad-norm", "none" if max_grad_norm is None else repr(float(max_grad_norm)),
        "--normalize-obs" if normalize_obs else "--no-normalize-obs",
        "--reward-scale", repr(float(reward_scale)),
        "--hidden", *(str(int(h)) for h in hidden),
        "--num-eval-envs", str(num_eval_envs),
        "--num-evals", str(num_evals),
        "--autoreset", autoreset,
        *(["--value-hidden", *(str(int(h)) for h in value_hidden)] if value_hidden else []),
        "--activation", activation,
        *(["--batch-size", str(batch_size)] if batch_size is not None else []),
        "--distribution", distribution,
        "--json", str(json_out),
    ]  # fmt: skip


def run_peer(
    env: str,
    *,
    timeout: float | None = 3600.0,
    venv: str | Path | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Train brax PPO on a gymnax env in the peer venv and return its JSON record.

    One brax training step is, by default, one rollout of ``num_envs x unroll_length``
    followed by ``num_epochs`` passes in ``num_minibatches`` minibatches (brax
    ``batch_size`` set to ``num_envs // num_minibatches``); ``batch_size`` sets it
    (brax's own default: 1 env, 32 x 16 unrolls of 10 steps per training step).
    ``num_evals - 1`` equal training epochs are timed; the first one's excess over the
    others is reported as ``compile_s``.

    Args:
        env: ``"pendulum"`` (gymnax Pendulum-v1, 200-step limit) or ``"cartpole"``
            (CartPole-v1, 500-step limit, continuous->discrete action threshold).
        timeout: seconds before the subprocess is killed (``None``: no limit).
        venv: peer venv directory (default :func:`default_peer_venv`); built if needed.
        **settings: the keyword arguments of :func:`peer_command` after ``json_out``:
            ``num_envs, unroll_length, num_minibatches, num_epochs, total_steps,
            learning_rate, gamma, gae_lambda, clip_eps, entropy_coef, vf_coef,
            max_grad_norm`` (``None``: no clip), ``normalize_obs, reward_scale`` (all
            required), and ``seed`` (0), ``hidden`` ((64, 64)), ``value_hidden`` (as
            ``hidden``), ``activation`` ("tanh"), ``batch_size``, ``distribution``
            ("normal"; "tanh_normal" is brax's default), ``num_eval_envs`` (episodes per
            evaluation, 128), ``num_evals`` (>= 3, default 5) and ``autoreset``
            ("brax": brax's AutoResetWrapper, a finished env restarts from the state it
            was first reset to; "resample": a fresh random initial state, gymnax's
            semantics).

    Returns:
        The parsed JSON record written by ``_brax_peer_ppo.py`` (``steps_per_s``,
        ``compile_s``, ``final_return``, ``peak_rss_mb``, ``versions``, ...).

    Raises:
        RuntimeError: the peer process failed; the message holds its output tail.
        subprocess.TimeoutExpired: it ran past ``timeout``.
    """
    settings = {"seed": 0, "hidden": (64, 64), "num_eval_envs": 128, "num_evals": 5,
                **settings}
    python = ensure_peer_venv(venv)
    with tempfile.TemporaryDirectory(prefix="metareward-peer-") as tmp:
        json_out = Path(tmp) / "result.json"
        cmd = peer_command(env, python=python, json_out=json_out, **settings)
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=clean_env(), timeout=timeout, check=False
        )
        if proc.returncode != 0 or not json_out.exists():
            tail = (proc.stdout + proc.stderr)[-4000:]
            raise RuntimeError(f"brax peer run failed (exit {proc.returncode}):\n{tail}")
        result: dict[str, Any] = json.loads(json_out.read_text())
    return result
