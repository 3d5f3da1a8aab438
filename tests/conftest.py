"""Shared fixtures. Tests run on CPU; jitted programs are shared per module where the
shapes agree, since compilation dominates small CPU tests."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
