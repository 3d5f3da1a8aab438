"""Ctrl-C before a run has anything to save: honoured even where Python drops it.

The console script installs it (deferred) when the package is imported, before JAX is,
then raising in ``main``. A ``KeyboardInterrupt``
raised while JAX runs a garbage-collection callback is printed as "Exception ignored" and
lost, so the handler also records that Ctrl-C was pressed, and :func:`check` raises it
again at the next safe point (before a run directory is created; the run's own signal
handling then stops after the current chunk if it already started). Imports nothing heavy.
"""

from __future__ import annotations

import signal
from types import FrameType

_seen = False


def _handler(signum: int, frame: FrameType | None) -> None:
    global _seen
    _seen = True
    raise KeyboardInterrupt


def _record(signum: int, frame: FrameType | None) -> None:
    global _seen
    _seen = True


def install(*, defer: bool = False) -> None:
    """Makes Ctrl-C raise ``KeyboardInterrupt`` and remembers that it came.

    Args:
      defer: only remember it (for the package's own imports, where an exception
        would end in a traceback or be swallowed); :func:`check` raises it later.
    """
    signal.signal(signal.SIGINT, _record if defer else _handler)


def seen() -> bool:
    """Whether Ctrl-C came since :func:`install`."""
    return _seen


def check() -> None:
    """Raises ``KeyboardInterrupt`` if Ctrl-C came (and was perhaps swallowed)."""
    if _seen:
        raise KeyboardInterrupt


__all__ = ["check", "install", "seen"]
