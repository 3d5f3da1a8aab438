"""Type aliases shared across the library (the role of brax's ``training/types.py``;
not named ``types``, which would shadow the standard library for a script run from
this folder).

* ``Params``: a pytree of network parameters (a flax ``params`` dict or a flat vector);
* ``PyTree``: any pytree;
* ``Metrics``: a learner's per-update metrics, scalar arrays (or arrays over seeds or
  updates after ``vmap`` / ``scan``) keyed by name.
"""

from __future__ import annotations

from typing import Any

import jax

__all__ = ["Metrics", "Params", "PyTree"]

Params = Any
PyTree = Any
Metrics = dict[str, jax.Array]
