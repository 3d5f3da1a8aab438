"""Outer-gradient estimators, generic and free of RL: unrolled and implicit
hypergradients, Hessian-vector products, CG / Neumann solvers, evolution strategies."""

from metareward.meta.es import centered_ranks, es_grad
from metareward.meta.hypergrad import implicit_hypergrad, unrolled_hypergrad
from metareward.meta.solvers import cg_solve, hvp, neumann_solve

__all__ = [
    "centered_ranks",
    "cg_solve",
    "es_grad",
    "hvp",
    "implicit_hypergrad",
    "neumann_solve",
    "unrolled_hypergrad",
]
