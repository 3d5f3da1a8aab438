"""Named pause points for fault-injection tests (``tests/test_faults.py``).

With ``METAREWARD_FAULT=NAME:INDEX`` in its environment, a run stops at that point —
prints ``metareward fault point NAME:INDEX`` on stderr and sleeps — so a test can kill or
signal the process at a moment it could not otherwise hit reliably (between two
checkpoint saves, inside an asynchronous save, during the final evaluation). The pause
ends when the file named by ``METAREWARD_FAULT_RELEASE`` exists (then the run goes on as
if nothing happened), or after ``METAREWARD_FAULT_SECONDS`` (default 600). Without the
variable this is one dictionary lookup.

Points: ``after-chunk:C`` (chunk ``C``'s metrics written and its checkpoint, if any,
started), ``in-save:U`` (the checkpoint of update ``U`` has all its files but no
manifest and its temporary name; orbax's writer thread), ``in-eval:0`` (the final
evaluation's thread, before it runs).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ENV = "METAREWARD_FAULT"


def point(name: str, index: int) -> None:
    """Pauses here if ``METAREWARD_FAULT`` names this point (see the module docstring).

    Args:
      name: the point's name.
      index: which one (a chunk index, an update).
    """
    spec = os.environ.get(ENV)
    if spec != f"{name}:{index}":
        return
    print(f"metareward fault point {spec}", file=sys.stderr, flush=True)
    release = os.environ.get(ENV + "_RELEASE")
    deadline = time.monotonic() + float(os.environ.get(ENV + "_SECONDS", "600"))
    while time.monotonic() < deadline:
        if release and Path(release).exists():
            return
        time.sleep(0.01)


__all__ = ["ENV", "point"]
