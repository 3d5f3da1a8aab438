"""metareward: learned rewards and learned objectives for RL, trained by bilevel
optimisation, in JAX.

``import metareward`` is cheap and has no side effects: it imports neither jax nor
brax/MuJoCo (the subpackages do, when imported) and leaves ``XLA_FLAGS`` alone. To train
on a CPU with the functional API, call :func:`configure_xla` first (the ``metareward``
command and :mod:`metareward.runtime` do it themselves).
"""

import contextlib as _contextlib
import importlib.machinery as _machinery
import io as _io
import sys as _sys
import threading as _threading
from pathlib import Path as _Path

from metareward import interrupts as _interrupts
from metareward._xla import configure_xla

if (_Path(_sys.argv[0] if _sys.argv else "").name == "metareward"
        and _threading.current_thread() is _threading.main_thread()):
    # The console script: a Ctrl-C while metareward.cli imports jax is held, and `main`
    # stops with one line (a library import leaves the signal handlers alone).
    _interrupts.install(defer=True)


class _QuietImport:
    """Finds module ``name`` as Python would, and runs its code with stdout silenced.

    mujoco-mjx's ``mujoco.mjx.warp`` prints "Failed to import warp" to stdout when the
    optional NVIDIA Warp backend is absent (always, on CPU); brax imports it, and so do
    metareward's subpackages. Installed by ``import metareward`` (which imports neither),
    it acts on that one module, once, then leaves ``sys.meta_path``.
    """

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname != self.name:
            return None
        _sys.meta_path.remove(self)
        spec = _machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            loader = spec.loader
            exec_module = loader.exec_module

            def quiet_exec(module) -> None:
                with _contextlib.redirect_stdout(_io.StringIO()):
                    exec_module(module)

            spec.loader = _QuietLoader(loader, quiet_exec)
        return spec


class _QuietLoader:
    """``loader`` with ``exec_module`` replaced (every other attribute delegated)."""

    def __init__(self, loader, exec_module):
        self._loader = loader
        self.exec_module = exec_module

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def __getattr__(self, attr):
        return getattr(self._loader, attr)


if "mujoco.mjx.warp" not in _sys.modules and not any(
        isinstance(f, _QuietImport) for f in _sys.meta_path):
    _sys.meta_path.insert(0, _QuietImport("mujoco.mjx.warp"))

__version__ = "0.1.0"

__all__ = ["__version__", "configure_xla"]
