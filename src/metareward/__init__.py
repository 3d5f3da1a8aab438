"""metareward: learned rewards and learned objectives for RL, trained by bilevel
optimisation, in JAX."""

import contextlib as _contextlib
import io as _io

from metareward._xla import configure_xla as _configure_xla

_configure_xla()

import jax as _jax  # noqa: E402, F401  (imported outside the redirect below)

# mujoco-mjx prints "Failed to import warp" to stdout when the optional NVIDIA Warp
# backend is absent (always, on CPU); brax imports it. Silence that one import.
with _contextlib.redirect_stdout(_io.StringIO()):
    import mujoco.mjx  # noqa: F401

__version__ = "0.1.0"
