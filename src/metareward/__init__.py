"""metareward: learned rewards and learned objectives for RL, trained by bilevel
optimisation, in JAX."""

import contextlib as _contextlib
import io as _io
import sys as _sys
import threading as _threading
from pathlib import Path as _Path

from metareward import interrupts as _interrupts
from metareward._xla import configure_xla as _configure_xla

if (_Path(_sys.argv[0] if _sys.argv else "").name == "metareward"
        and _threading.current_thread() is _threading.main_thread()):
    # The console script: a Ctrl-C during the imports below is held, and `main` stops
    # with one line (a library import leaves the signal handlers alone).
    _interrupts.install(defer=True)

_configure_xla()

import jax as _jax  # noqa: E402, F401  (imported outside the redirect below)

# mujoco-mjx prints "Failed to import warp" to stdout when the optional NVIDIA Warp
# backend is absent (always, on CPU); brax imports it. Silence that one import.
with _contextlib.redirect_stdout(_io.StringIO()):
    import mujoco.mjx  # noqa: F401

__version__ = "0.1.0"
