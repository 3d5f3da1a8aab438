"""Any distribution-based strategy of evosax (Lange 2023, "evosax: JAX-based Evolution
Strategies", https://github.com/RobertTLange/evosax, version 0.3.x) behind one
ask/tell interface over parameter pytrees: EPG's outer loop with CMA-ES, SNES, PGPE, ...
instead of :func:`metareward.meta.es_grad`.

Fitness is *maximised* here, as in ``es_grad``; evosax minimises, so :meth:`EvosaxStrategy.tell`
hands evosax the negated fitness. A non-finite fitness (a diverged member) ranks worst.

evosax is an optional dependency (``pip install 'metareward[evosax]'``); it is imported
only when an :class:`EvosaxStrategy` is built or :func:`evosax_strategies` is called, so
``import metareward.meta`` works without it.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from metareward.aliases import PyTree

_INSTALL_HINT = "evosax is not installed: pip install 'metareward[evosax]' (evosax==0.3.2)"
# evosax ask/tell machinery, not knobs of a strategy.
_RESERVED = frozenset({"self", "population_size", "solution"})


def _evosax_algorithms() -> tuple[dict[str, type], dict[str, type]]:
    """(supported, unsupported) evosax classes by registry name; unsupported maps to
    classes whose ``init`` is not ``init(key, mean, params)`` around a single mean."""
    try:
        from evosax.algorithms import algorithms
        from evosax.algorithms.distribution_based.base import DistributionBasedAlgorithm
        from evosax.algorithms.distribution_based.sv.base import SV_ES
    except ImportError as e:  # pragma: no cover - exercised only without evosax
        raise ImportError(_INSTALL_HINT) from e
    supported, unsupported = {}, {}
    for name, cls in algorithms.items():
        # Population-based algorithms (GAs, PSO, DE) are initialised from an evaluated
        # population and have no search mean; Stein-variational ES keep several means.
        ok = issubclass(cls, DistributionBasedAlgorithm) and not issubclass(cls, SV_ES)
        (supported if ok else unsupported)[name] = cls
    return supported, unsupported


def evosax_strategies() -> list[str]:
    """Names accepted by :class:`EvosaxStrategy`, sorted: the keys of evosax's registry
    ``evosax.algorithms.algorithms`` whose classes are distribution-based with a single
    search mean (``Open_ES``, ``CMA_ES``, ``SNES``, ``PGPE``, ...). Population-based
    algorithms (``SimpleGA``, ``PSO``, ...) and the Stein-variational ``SV_*`` ones are
    left out. Raises ``ImportError`` when evosax is not installed."""
    return sorted(_evosax_algorithms()[0], key=str.lower)


def fitness_to_loss(fitness: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Maps fitness to be *maximised* to the loss evosax minimises.

    ``loss = -fitness`` where fitness is finite; a non-finite fitness (NaN from a diverged
    member, or +-inf from an overflow) becomes a finite loss strictly larger than every
    finite one, ``hi + (hi - lo) + 1e-3 (1 + |hi|)`` with ``lo, hi`` the smallest and
    largest finite losses: it ranks worst for rank-based strategies and stays finite for
    those that use fitness values as they are (ARS, ESMC, ...), where a NaN or an inf
    would poison the mean. ``all_failed`` (a bool scalar) is true when no fitness is
    finite; the loss is then all zeros (callers skip the update).

    Args:
        fitness: Fitness values ``[n]`` (cast to float32 if not floating).

    Returns:
        ``(loss, all_failed)``: the loss ``[n]`` and the bool scalar.
    """
    fitness = jnp.asarray(fitness)
    if not jnp.issubdtype(fitness.dtype, jnp.floating):
        fitness = fitness.astype(jnp.float32)
    loss = -fitness
    ok = jnp.isfinite(loss)
    all_failed = ~jnp.any(ok)
    hi = jnp.max(jnp.where(ok, loss, -jnp.inf))
    lo = jnp.min(jnp.where(ok, loss, jnp.inf))
    hi = jnp.where(all_failed, 0.0, hi)
    lo = jnp.where(all_failed, 0.0, lo)
    penalty = hi + (hi - lo) + 1e-3 * (1.0 + jnp.abs(hi))
    return jnp.where(ok, loss, jnp.where(all_failed, 0.0, penalty)), all_failed


def _strong(tree: PyTree) -> PyTree:
    """Leaves as arrays without weak types, so the state is a fixed-type loop carry."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)


@struct.dataclass
class EvosaxState:
    """State of an :class:`EvosaxStrategy` search: a pytree of arrays (jit, vmap,
    ``lax.scan`` carries, checkpoints). ``es_state`` is the evosax state (its ``mean`` is
    the flat search mean, its ``best_fitness`` the best *loss*, i.e. minus the best
    fitness, seen so far); ``es_params`` the evosax params of the strategy."""

    es_state: Any
    es_params: Any


class EvosaxStrategy:
    """A distribution-based evosax strategy over parameter pytrees shaped like ``template``.

    ``name``: one of :func:`evosax_strategies` (evosax's registry name, e.g. ``"Open_ES"``,
    ``"CMA_ES"``, ``"SNES"``); ``pop_size``: population size (a Python int >= 2; several
    strategies, e.g. ``Open_ES``, ``PGPE``, ``ARS``, need it even). ``template``: a pytree
    of arrays (or ``jax.ShapeDtypeStruct``) fixing the parameters' structure, shapes and
    dtypes; its values are not used.

    ``strategy_kwargs`` go, by name,

    * to the evosax constructor when they are among its arguments, e.g. ``Open_ES``'s
      ``optimizer=optax.adam(1e-2)``, ``std_schedule=optax.constant_schedule(0.1)``,
      ``use_antithetic_sampling``, ``fitness_shaping_fn``;
    * otherwise into the strategy's params, replacing fields of its ``default_params``,
      e.g. ``std_init=0.1`` for ``CMA_ES``, ``SNES``, ``PGPE``. Fields that evosax derives
      from others (CMA-ES's ``weights``, ``mu_eff``, ...) are not recomputed.

    A name that is neither raises ``ValueError`` listing both. In evosax 0.3 the initial
    step size of the optax-driven strategies (``Open_ES``, ``ARS``, ``ESMC``, ...) is
    ``std_schedule(0)``, a constructor argument, while CMA-ES-like strategies take a
    ``std_init`` param.

    Fitness passed to :meth:`tell` is *maximised* (as in :func:`metareward.meta.es_grad`);
    it is negated for evosax, which minimises, and a non-finite fitness ranks worst (see
    :func:`fitness_to_loss`). If every member of a generation is non-finite the state is
    left unchanged.

    The object is immutable and hashed by identity; build it outside ``jax.jit`` and close
    over it. :meth:`init`, :meth:`ask`, :meth:`tell` and :meth:`mean` work under
    ``jax.jit`` and ``jax.vmap`` (e.g. over the keys of independent meta-seeds).
    """

    __slots__ = ("_es", "_es_params", "_shapes", "_treedef", "name", "pop_size")

    def __init__(self, name: str, pop_size: int, template: PyTree, **strategy_kwargs: Any):
        supported, unsupported = _evosax_algorithms()
        allowed = sorted(supported, key=str.lower)
        if name not in supported:
            why = (
                " (population-based or multi-mean, not supported by this adapter)"
                if name in unsupported
                else ""
            )
            raise ValueError(
                f"unknown evosax strategy {name!r}{why}; allowed names: {', '.join(allowed)}"
            )
        if isinstance(pop_size, bool) or not isinstance(pop_size, numbers.Integral):
            raise ValueError(f"pop_size must be a Python int >= 2, got {pop_size!r}")
        if pop_size < 2:
            raise ValueError(f"pop_size must be a Python int >= 2, got {pop_size!r}")
        pop_size = int(pop_size)
        cls = supported[name]

        leaves, treedef = jax.tree.flatten(template)
        if not leaves:
            raise ValueError("template has no array leaves")
        leaves = [x if isinstance(x, jax.ShapeDtypeStruct) else jnp.asarray(x) for x in leaves]
        shapes = tuple((tuple(x.shape), jnp.dtype(x.dtype)) for x in leaves)
        solution = jax.tree.unflatten(treedef, [jnp.zeros(s, d) for s, d in shapes])

        ctor_args = set(inspect.signature(cls.__init__).parameters) - _RESERVED
        ctor_kwargs = {k: v for k, v in strategy_kwargs.items() if k in ctor_args}
        try:
            es = cls(population_size=pop_size, solution=solution, **ctor_kwargs)
        except AssertionError as e:  # evosax checks its arguments with assert
            raise ValueError(f"evosax {name} rejected pop_size={pop_size}: {e}") from e
        except TypeError as e:  # e.g. RandomSearch's required sampling_fn
            raise ValueError(f"evosax {name} constructor: {e}") from e
        params = es.default_params
        fields = {f.name for f in dataclasses.fields(params)}
        param_kwargs = {k: v for k, v in strategy_kwargs.items() if k not in ctor_args}
        unknown = sorted(set(param_kwargs) - fields)
        if unknown:
            raise ValueError(
                f"unknown keyword(s) {unknown} for evosax {name}: constructor arguments "
                f"are {sorted(ctor_args)}, params fields are {sorted(fields)}"
            )
        params = params.replace(**param_kwargs)

        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "pop_size", pop_size)
        set_(self, "_es", es)
        set_(self, "_es_params", _strong(params))
        set_(self, "_treedef", treedef)
        set_(self, "_shapes", shapes)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        return f"EvosaxStrategy({self.name!r}, pop_size={self.pop_size})"

    @property
    def algorithm(self) -> Any:
        """The wrapped evosax strategy object (e.g. an ``evosax.algorithms.Open_ES``)."""
        return self._es

    @property
    def default_params(self) -> PyTree:
        """The evosax params :meth:`init` puts in the state (defaults plus overrides)."""
        return self._es_params

    def _check_tree(self, tree: PyTree, what: str, batch: tuple[int, ...] = ()) -> None:
        leaves, treedef = jax.tree.flatten(tree)
        shapes = tuple(tuple(jnp.shape(x)) for x in leaves)
        want = tuple(batch + s for s, _ in self._shapes)
        if treedef != self._treedef or shapes != want:
            raise ValueError(
                f"{what} must match the template (structure {self._treedef}, leaf shapes "
                f"{want}), got structure {treedef}, leaf shapes {shapes}"
            )

    def init(self, key: jax.Array, params: PyTree) -> EvosaxState:
        """Initial state, its search distribution centred on ``params`` (a pytree like the
        template), with the strategy's params (defaults plus overrides).

        Args:
            key: PRNG key of the strategy's initialisation.
            params: The initial mean, a pytree with the template's structure and leaf shapes.

        Returns:
            The :class:`EvosaxState`.
        """
        self._check_tree(params, "params")
        es_state = self._es.init(key, params, self._es_params)
        return EvosaxState(es_state=_strong(es_state), es_params=self._es_params)

    def ask(self, key: jax.Array, state: EvosaxState) -> tuple[PyTree, EvosaxState]:
        """Samples a population: a pytree like the template whose leaves have a leading
        ``pop_size`` axis, and the state to pass to :meth:`tell` (some strategies record
        the sampled noise in it).

        Args:
            key: PRNG key of the sampling.
            state: The current :class:`EvosaxState`.

        Returns:
            ``(population, state)``: the ``[pop_size, ...]``-leaved population and the new state.
        """
        population, es_state = self._es.ask(key, state.es_state, state.es_params)
        return population, state.replace(es_state=_strong(es_state))

    def tell(
        self, key: jax.Array, population: PyTree, fitness: jax.Array, state: EvosaxState
    ) -> EvosaxState:
        """Updates the search distribution from the population returned by :meth:`ask`
        and its ``[pop_size]`` fitness, which is *maximised* (negated for evosax). A
        non-finite fitness counts as the worst of the generation; if none is finite the
        state is returned unchanged.

        Args:
            key: PRNG key of the update (for strategies that use one).
            population: The population :meth:`ask` returned (leaves ``[pop_size, ...]``).
            fitness: ``[pop_size]`` fitness of each member, higher is better.
            state: The state :meth:`ask` returned.

        Returns:
            The updated :class:`EvosaxState`.

        Raises:
            ValueError: If ``population`` does not match the template with a leading
                ``pop_size`` axis, or ``fitness`` is not of shape ``[pop_size]``.
        """
        self._check_tree(population, "population", (self.pop_size,))
        if jnp.shape(fitness) != (self.pop_size,):
            raise ValueError(
                f"fitness must have shape ({self.pop_size},), got {jnp.shape(fitness)}"
            )
        loss, all_failed = fitness_to_loss(fitness)
        es_state, _ = self._es.tell(key, population, loss, state.es_state, state.es_params)
        es_state = _strong(es_state)
        es_state = jax.tree.map(
            lambda old, new: jnp.where(all_failed, old, new), state.es_state, es_state
        )
        return state.replace(es_state=es_state)

    def mean(self, state: EvosaxState) -> PyTree:
        """The search distribution's mean, a pytree like the template.

        Args:
            state: The current :class:`EvosaxState`.

        Returns:
            The mean, with the template's structure and leaf shapes.
        """
        return self._es.get_mean(state.es_state)


__all__ = ["EvosaxState", "EvosaxStrategy", "evosax_strategies", "fitness_to_loss"]
