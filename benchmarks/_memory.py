"""Peak memory of the current process, shared by the benchmark scripts (imports nothing
beyond the standard library, so the brax peer venv can use it too)."""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    Reads ``VmHWM`` from ``/proc/self/status``: unlike ``ru_maxrss``, it restarts at
    ``exec``, so a subprocess does not inherit its parent's peak. Falls back to
    ``ru_maxrss`` where /proc is absent.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
