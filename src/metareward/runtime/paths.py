"""Checks of output paths, made before any computation (pure stdlib, no side effects).

A command that computes for a while and writes at the end (``metareward meta-test``,
``metareward plot``) checks where it will write first, so that a bad ``--out`` is a
one-line error up front rather than a traceback after the work is done.
"""

from __future__ import annotations

import os
from pathlib import Path


def nearest_existing(path: str | Path) -> Path:
    """``path`` itself if it exists, else its nearest existing ancestor (absolute).

    Args:
      path: any path, relative to the working directory or absolute.

    Returns:
      The first of ``path``, its parent, its parent's parent... that exists.
    """
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable_dir(path: str | Path) -> None:
    """Fails unless ``path`` is a directory, or can be made one, that we may write into.

    Nothing is created: the checks are that ``path`` is not a file (nor a dangling
    link), that no ancestor is a file, and that the nearest existing ancestor (``path``
    itself if it exists) is writable and searchable (``os.access``; a read-only file
    system counts, for root too, but root passes a ``chmod 555`` directory, which it can
    indeed write into).

    Args:
      path: the directory to write into.

    Raises:
      ValueError: naming ``path`` and what is wrong: it "is a file", it "is under a
        file", or it "is not writable".
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{path} is a file, not a directory; choose a directory")
    if p.is_symlink() and not p.exists():
        raise ValueError(f"{path} is a dangling link; choose a directory")
    base = nearest_existing(p)
    if not base.is_dir():
        raise ValueError(f"{path} is under a file ({base}); choose a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        where = "" if base == Path(os.path.abspath(p)) else f" ({base} is read-only)"
        raise ValueError(f"{path} is not writable{where}; choose another directory")


__all__ = ["check_writable_dir", "nearest_existing"]
