"""Running a script in a subprocess with forced CPU host devices (the sharding tests)."""

import json
import subprocess
import sys
from pathlib import Path

from fast_compile import fast_compile_env


def run_with_host_devices(script: str, out: Path, devices: int = 4, timeout: int = 300) -> dict:
    """Runs ``python -c script OUT`` with ``devices`` forced host devices (XLA reads the
    flag once, hence the subprocess) and returns the JSON the script wrote to
    ``OUT/res.json``."""
    # The script compares its own programs with each other (split against unsplit), so
    # it compiles with XLA:CPU's cheapest settings whatever the suite (fast_compile.py).
    env = fast_compile_env()
    env["XLA_FLAGS"] += f" --xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    # XLA:CPU's thread pool has one thread per core it may use; a collective blocks its
    # thread until every device arrives, so with fewer threads than devices (a pinned or
    # 2-core CI machine) the devices starve and deadlock. NPROC sizes that pool.
    env["NPROC"] = str(2 * devices)
    proc = subprocess.run([sys.executable, "-c", script, str(out)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "res.json").read_text())
