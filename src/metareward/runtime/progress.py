"""A one-line progress bar for training chunks (stderr; plain lines when not a TTY)."""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """``update(done, total, env_steps, steps_per_sec, last_return)`` after each chunk.

    On a terminal the line is redrawn in place; otherwise (logs, CI) a line is printed
    each time another 10% is done, so logs stay short.
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._next_pct = 0.0
        self._start = time.perf_counter()
        self._start_done = None
        self._drawn = False

    def update(
        self,
        done: int,
        total: int,
        env_steps: int,
        steps_per_sec: float,
        last_return: float | None,
    ) -> None:
        """Redraws the bar (terminal) or prints a line at each further 10% (otherwise).

        The first call sets the start the ETA is measured from (nothing is shown when it
        reports 0 updates done); a disabled bar does nothing.

        Args:
            done: Updates done so far.
            total: Updates in the run.
            env_steps: Env steps taken so far.
            steps_per_sec: The recent env steps per second.
            last_return: The latest episode return, or ``None`` (shown as ``-``, as a
                non-finite one).
        """
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._start_done is None:
            self._start_done, self._start = done, now
            if done == 0:
                return
        rate = (done - self._start_done) / max(now - self._start, 1e-9)
        eta = (total - done) / rate if rate > 0 else math.inf
        frac = done / max(total, 1)
        ret = "-" if last_return is None or not math.isfinite(last_return) else f"{last_return:.1f}"
        bar = "#" * int(20 * frac) + "-" * (20 - int(20 * frac))
        line = (
            f"[{bar}] {100 * frac:3.0f}%  {env_steps:,} env steps  "
            f"{steps_per_sec:,.0f} steps/s  return {ret}  ETA {_hms(eta)}"
        )
        if self.tty:
            self.stream.write("\r" + line + "\033[K")
            self._drawn = True
        elif 100 * frac >= self._next_pct or done >= total:
            self.stream.write(line + "\n")
            self._next_pct = 10 * math.floor(10 * frac) + 10
        self.stream.flush()

    def close(self) -> None:
        """Ends a bar drawn in place on a terminal with a newline (otherwise does nothing)."""
        if self.enabled and self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


__all__ = ["Progress"]
