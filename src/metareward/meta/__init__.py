"""Outer-gradient estimators, generic and free of RL: unrolled and implicit
hypergradients, Hessian-vector products, CG / Neumann solvers, evolution strategies
(our own ``es_grad``, or any distribution-based evosax strategy through ``EvosaxStrategy``,
evosax being optional and imported only when used).

All losses are minimised; parameters and hyperparameters are arbitrary pytrees; every
function works under ``jax.jit`` and ``jax.vmap``.
"""

from metareward.meta.es import SHAPINGS, centered_ranks, es_grad
from metareward.meta.evosax_adapter import EvosaxState, EvosaxStrategy, evosax_strategies
from metareward.meta.hypergrad import SOLVERS, implicit_hypergrad, unrolled_hypergrad
from metareward.meta.solvers import CGInfo, cg_solve, hvp, neumann_solve

__all__ = [
    "SHAPINGS",
    "SOLVERS",
    "CGInfo",
    "EvosaxState",
    "EvosaxStrategy",
    "centered_ranks",
    "cg_solve",
    "es_grad",
    "evosax_strategies",
    "hvp",
    "implicit_hypergrad",
    "neumann_solve",
    "unrolled_hypergrad",
]
