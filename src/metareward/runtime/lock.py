"""One writer per run directory: an advisory lock held while a run trains.

``train``, ``meta-train`` and ``resume`` hold an exclusive ``fcntl.flock`` on
``RUN_DIR/.lock`` from before they write anything until they exit. The kernel releases
it when the process ends, however it ends (SIGKILL included), so a lock never outlives
its holder and needs no clean-up. The file holds who holds it (pid, host, command,
since when), which a second process reads to say whom it is waiting for. Readers
(``eval``, ``plot``, ``meta-test``) take no lock: they never write checkpoint files.

(``flock`` is per host on some network filesystems; two hosts writing one run
directory over NFS are not protected.)
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another process holds the run directory's lock."""


class RunLock:
    """The lock of one run directory (a context manager).

    Args:
      run_dir: the run directory; it must exist.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Takes the lock without waiting.

        Returns:
          ``self``.

        Raises:
          RunLockedError: another process holds it (the message names the holder).
          OSError: the lock file cannot be opened (it names the file).
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read(fd))
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent} is in use by {holder}; wait for it to finish or "
                "stop it first (one writer per run directory)") from None
        except BaseException:
            os.close(fd)
            raise
        info = {
            "pid": os.getpid(),
            "host": platform.node(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "since": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Releases the lock (the file stays; its content is stale from then on)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(info: dict[str, Any]) -> str:
    if not info:
        return "another process"
    return (f"process {info.get('pid')} on {info.get('host')} "
            f"(`{info.get('command')}`, since {info.get('since')})")


__all__ = ["LOCK_FILE", "RunLock", "RunLockedError"]
