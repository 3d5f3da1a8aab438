"""Several processes (hosts) training one run: ``jax.distributed`` from CLI flags or
environment variables.

Each process starts with the same command plus its own process id; process 0 also hosts
the coordinator (JAX's coordination service)::

    # host A (10.0.0.1)                           # host B
    metareward train ppo --env pendulum \\        metareward train ppo --env pendulum \\
      --seeds 16 --coordinator 10.0.0.1:8476 \\     --seeds 16 --coordinator 10.0.0.1:8476 \\
      --num-processes 2 --process-id 0              --num-processes 2 --process-id 1

or the same through ``METAREWARD_COORDINATOR``, ``METAREWARD_NUM_PROCESSES``,
``METAREWARD_PROCESS_ID`` and ``METAREWARD_INIT_TIMEOUT`` (flags win); ``--coordinator
auto`` leaves the three to JAX's cluster detection (SLURM, Open MPI, Cloud TPU).

After :func:`initialize`, ``jax.devices()`` lists the devices of every process; the run's
mesh (:func:`metareward.runtime.sharding.make_mesh`) spans them all and the sharded chunk
program is the same one as on a single host (collectives cross hosts; on CPU through
gloo). Host-side data is exchanged with the helpers here: :func:`gather` (every process
gets the whole of a sharded array, e.g. the metrics), :func:`agree` (process 0's value of
a small JSON value, e.g. the run directory's path, on every process), :func:`any_process`
(e.g. a signal seen by one process stops all of them at the same chunk).

One JAX behaviour shapes :func:`initialize`: when the coordinator cannot be reached,
``jax.distributed.initialize`` does not raise, it aborts the process (a fatal C++ log,
SIGABRT) after twice its timeout. So a process other than 0 first waits for the
coordinator's port itself and raises :class:`DistributedError` naming the address when it
does not open within the timeout; process 0 first checks that it can bind the port.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
from collections.abc import Mapping
from typing import Any

from metareward.errors import ConfigError

#: Environment variables read by :meth:`DistributedConfig.from_env` (flags win).
ENV_VARS = {
    "coordinator": "METAREWARD_COORDINATOR",
    "num_processes": "METAREWARD_NUM_PROCESSES",
    "process_id": "METAREWARD_PROCESS_ID",
    "timeout": "METAREWARD_INIT_TIMEOUT",
}
DEFAULT_TIMEOUT = 300


class DistributedError(RuntimeError):
    """The processes of a multi-host run could not be connected."""


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")  # [::1]:8476
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"coordinator must be HOST:PORT with a port in 1..65535 (e.g. 10.0.0.1:8476), "
            f"or 'auto'; got {address!r}"
        )
    return host, int(port)


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """Which process of how many this is, and where process 0's coordinator listens.

    Attributes:
      coordinator: ``HOST:PORT`` of process 0 (reachable from every process), ``"auto"``
        (JAX's cluster detection) or ``None``: a single process, nothing to initialise.
      num_processes: processes in the run (all start the same command).
      process_id: this process, ``0 .. num_processes - 1``; 0 hosts the coordinator and
        writes the run directory.
      timeout: seconds to wait for the coordinator and the other processes.
    """

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    timeout: int = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        def int_or_none(name: str, v: Any, low: int) -> None:
            if v is not None and not (isinstance(v, int) and not isinstance(v, bool)
                                      and v >= low):
                raise ConfigError(f"{name} must be an int >= {low}, got {v!r}")

        int_or_none("num_processes", self.num_processes, 1)
        int_or_none("process_id", self.process_id, 0)
        int_or_none("timeout", self.timeout, 1)
        if self.coordinator is None:
            if self.num_processes not in (None, 1) or self.process_id not in (None, 0):
                raise ConfigError(
                    f"num_processes={self.num_processes}, process_id={self.process_id} "
                    "need a coordinator (--coordinator HOST:PORT of process 0, or auto)")
            return
        if self.coordinator == "auto":
            return
        _split_address(self.coordinator)
        if self.num_processes is None or self.process_id is None:
            raise ConfigError(
                f"coordinator={self.coordinator!r} needs num_processes and process_id "
                "(--num-processes, --process-id or METAREWARD_NUM_PROCESSES, "
                "METAREWARD_PROCESS_ID)")
        if self.process_id >= self.num_processes:
            raise ConfigError(f"process_id must be in 0..{self.num_processes - 1} "
                              f"(num_processes={self.num_processes}), got {self.process_id}")

    @property
    def enabled(self) -> bool:
        """Whether a multi-process run is asked for (a coordinator is set).

        Returns:
          ``True`` if ``coordinator`` is not ``None``.
        """
        return self.coordinator is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 **flags: Any) -> DistributedConfig:
        """``flags`` (``None``: not given) over the ``METAREWARD_*`` variables of
        :data:`ENV_VARS`; a malformed variable is a :class:`ConfigError` naming it.

        Args:
          environ: the variables to read; ``None``: ``os.environ``.
          **flags: field name -> value given on the command line (``None``: not given); a
            given value wins over its variable (names not in ``ENV_VARS`` are ignored).

        Returns:
          The :class:`DistributedConfig` (unset fields keep their defaults).

        Raises:
          ConfigError: a non-integer value in an integer variable.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, var in ENV_VARS.items():
            v = flags.get(field)
            if v is None and environ.get(var, "").strip():
                text = environ[var].strip()
                if field == "coordinator":
                    v = text
                else:
                    try:
                        v = int(text)
                    except ValueError:
                        raise ConfigError(f"{var} must be an integer, got {text!r}") from None
            if v is not None:
                values[field] = v
        return cls(**values)


def _check_bindable(port: int) -> None:
    """Process 0's coordinator binds ``[::]:port``; fail clearly if it is taken."""
    for family, addr in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 on this host: try IPv4
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, port))
            return
        except OSError as e:
            raise DistributedError(
                f"process 0 hosts the coordinator but cannot listen on port {port}: {e}. "
                "Choose a free port for --coordinator") from None
        finally:
            s.close()


def wait_for_coordinator(host: str, port: int, timeout: float) -> float:
    """Seconds until ``host:port`` accepted a TCP connection (retried every 0.25 s).

    Args:
      host: the coordinator's host name or address.
      port: its TCP port.
      timeout: seconds to wait.

    Returns:
      The seconds it took.

    Raises:
      DistributedError: if no connection was accepted within ``timeout`` seconds.
    """
    start = time.monotonic()
    deadline = start + timeout
    last: Exception | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with socket.create_connection((host, port), timeout=min(left, 2.0)):
                return time.monotonic() - start
        except OSError as e:
            last = e
            time.sleep(min(0.25, max(deadline - time.monotonic(), 0)))
    raise DistributedError(
        f"could not reach the coordinator {host}:{port} within {timeout:g} s "
        f"({last}). Process 0 hosts it: start process 0 (it must be given the same "
        "--coordinator), check that the address is process 0's host as seen from here, "
        "and that the port is open; --init-timeout / METAREWARD_INIT_TIMEOUT sets the wait")


def initialize(config: DistributedConfig, *, stream: Any = None) -> None:
    """Connects this process to the others (``jax.distributed.initialize``); nothing for a
    single process. Must run before JAX touches a device (before
    :func:`metareward.runtime.driver.prepare`).

    If the coordinator is up but not every process joins within the timeout, JAX itself
    aborts the process with ``DEADLINE_EXCEEDED`` (this message is printed first so the
    log says what was being waited for).

    Args:
      config: which process of how many this is, the coordinator and the timeout
        (nothing happens when ``config.enabled`` is false).
      stream: where the progress message goes (``None``: ``sys.stderr``).

    Raises:
      ConfigError: when JAX is already running (a device was used before this call), or
        the coordinator is not ``HOST:PORT``.
      DistributedError: when the coordinator's port cannot be reached (other processes)
        or bound (process 0) within ``config.timeout``.
    """
    if not config.enabled:
        return
    import jax
    from jax._src import xla_bridge

    if jax.distributed.is_initialized():
        return  # (e.g. a script that called it itself)
    if xla_bridge.backends_are_initialized():
        raise ConfigError(
            "jax.distributed must be initialised before JAX uses a device: call "
            "metareward.distributed.initialize(...) first in the process")
    out = stream or sys.stderr
    if config.coordinator == "auto":
        print(f"multi-process: JAX cluster detection (timeout {config.timeout} s)",
              file=out, flush=True)
        # (num_processes / process_id, when given, override what detection finds)
        jax.distributed.initialize(None, config.num_processes, config.process_id,
                                   initialization_timeout=config.timeout)
        return
    host, port = _split_address(config.coordinator)
    timeout = config.timeout
    if config.process_id == 0:
        _check_bindable(port)
    else:
        timeout = max(1, round(timeout - wait_for_coordinator(host, port, timeout)))
    print(f"process {config.process_id} of {config.num_processes}: joining coordinator "
          f"{config.coordinator} (JAX aborts this process if the others have not joined "
          f"within {timeout} s)", file=out, flush=True)
    jax.distributed.initialize(config.coordinator, config.num_processes, config.process_id,
                               initialization_timeout=timeout)


# ----------------------------------------------------------------------------------------
# Host-side exchange between processes (identities for a single process)


def process_count() -> int:
    """The number of processes in the run (``jax.process_count()``).

    Returns:
      The process count (1 for a single process).
    """
    import jax

    return jax.process_count()


def process_index() -> int:
    """This process's index (``jax.process_index()``).

    Returns:
      ``0 .. process_count() - 1``; 0 for a single process.
    """
    import jax

    return jax.process_index()


def is_main() -> bool:
    """Whether this process writes the run directory (process 0; a single process)."""
    return process_index() == 0


def gather(tree: Any) -> Any:
    """``tree`` as host numpy arrays, whole on every process: ``jax.device_get`` for one
    process, else ``process_allgather`` (a collective: every process must call it).

    Args:
      tree: a pytree of arrays (with several processes: each process's part, joined
        along the leading axis as ``process_allgather(..., tiled=True)`` does).

    Returns:
      The whole tree as host arrays.
    """
    import jax

    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def broadcast(tree: Any) -> Any:
    """Process 0's host arrays ``tree`` on every process (the others pass arrays of the
    same shapes and dtypes, e.g. zeros).

    Args:
      tree: a pytree of host arrays.

    Returns:
      Process 0's ``tree``.
    """
    import jax

    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    return multihost_utils.broadcast_one_to_all(tree)


def agree(value: Any) -> Any:
    """Process 0's JSON-serialisable ``value`` on every process (the others' are
    ignored).

    Args:
      value: a JSON-serialisable value.

    Returns:
      Process 0's ``value`` (round-tripped through JSON when there are several
      processes: tuples come back as lists).
    """
    import jax

    if jax.process_count() == 1:
        return value
    import numpy as np

    data = json.dumps(value).encode() if is_main() else b""
    n = int(broadcast(np.int32(len(data))))
    buf = np.frombuffer(data, np.uint8) if is_main() else np.zeros(n, np.uint8)
    return json.loads(np.asarray(broadcast(buf)).tobytes().decode())


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true on any process.

    Args:
      flag: this process's flag.

    Returns:
      ``True`` if ``flag`` is true on at least one process (a collective: every process
      must call it).
    """
    import jax

    if jax.process_count() == 1:
        return bool(flag)
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.int32(bool(flag)))))


__all__ = ["DEFAULT_TIMEOUT", "ENV_VARS", "DistributedConfig", "DistributedError", "agree",
           "any_process", "broadcast", "gather", "initialize", "is_main", "process_count",
           "process_index", "wait_for_coordinator"]
