"""metareward.meta.EvosaxStrategy against closed forms: evosax strategies driven through
the adapter maximise a concave quadratic (the sign convention), a NaN fitness ranks
worst, bad arguments are refused, and the state is a pytree that jit and vmap carry."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("evosax")

from metareward.meta import EvosaxState, EvosaxStrategy, evosax_strategies
from metareward.meta.evosax_adapter import fitness_to_loss

TEMPLATE = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
OPT = {"a": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([[0.3, -1.0], [2.0, 0.1]])}


def fitness(x):
    """Concave, maximised at OPT (closed form) with value 0."""
    return -sum(jnp.sum((x[k] - OPT[k]) ** 2) for k in x)


def dist(x):
    return float(jnp.sqrt(-fitness(x)))


def run(strategy, key, generations, start=TEMPLATE):
    """``generations`` of ask / evaluate / tell in one ``lax.scan``; returns the state."""
    state = strategy.init(key, start)

    def body(state, k):
        k_ask, k_tell = jax.random.split(k)
        population, state = strategy.ask(k_ask, state)
        return strategy.tell(k_tell, population, jax.vmap(fitness)(population), state), None

    state, _ = jax.lax.scan(body, state, jax.random.split(key, generations))
    return state


STRATEGIES = {
    # Constructor arguments (optax optimiser, std schedule) ...
    "Open_ES": dict(
        optimizer=optax.adam(optax.exponential_decay(0.1, 50, 0.3)),
        std_schedule=optax.constant_schedule(0.1),
    ),
    # ... and a params field (std_init) overriding default_params.
    "CMA_ES": dict(std_init=0.5),
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_maximises_a_concave_quadratic(name):
    strategy = EvosaxStrategy(name, 16, TEMPLATE, **STRATEGIES[name])
    state = jax.jit(lambda k: run(strategy, k, 150))(jax.random.key(0))
    mean = strategy.mean(state)
    assert jax.tree.structure(mean) == jax.tree.structure(TEMPLATE)
    # Start at distance ~3.2 from the optimum; a minimising adapter would move away.
    assert dist(mean) < 0.1, (name, dist(mean), dist(TEMPLATE))
    assert dist(mean) < 0.03 * dist(TEMPLATE)


def test_fitness_to_loss_negates_and_ranks_non_finite_worst():
    f = jnp.array([1.0, jnp.nan, -3.0, 2.0, -jnp.inf, jnp.inf])
    loss, all_failed = fitness_to_loss(f)
    assert not bool(all_failed)
    np.testing.assert_array_equal(loss[jnp.array([0, 2, 3])], [-1.0, 3.0, -2.0])
    assert bool(jnp.all(jnp.isfinite(loss)))
    # Every non-finite member gets a loss strictly above the worst finite one (3.0).
    assert bool(jnp.all(loss[jnp.array([1, 4, 5])] > 3.0))
    loss, all_failed = fitness_to_loss(jnp.full(4, jnp.nan))
    assert bool(all_failed) and bool(jnp.all(loss == 0.0))


# Open_ES shapes fitness by rank; PersistentES uses the values as they are (a raw NaN or
# inf would make its mean NaN). Both sample antithetic pairs and step along
# sum_i loss_i eps_i, so with every other member equally fit the update moves the mean
# straight away from the diverged member (straight towards it if NaN counted as best).
@pytest.mark.parametrize("name", ["Open_ES", "PersistentES"])
def test_nan_member_counts_as_worst(name):
    strategy = EvosaxStrategy(name, 8, TEMPLATE, optimizer=optax.sgd(0.1))
    k_init, k_ask, k_tell = jax.random.split(jax.random.key(1), 3)
    state = strategy.init(k_init, OPT)
    population, state = strategy.ask(k_ask, state)
    f = jnp.zeros(8).at[2].set(jnp.nan)
    new = strategy.tell(k_tell, population, f, state)
    flat = lambda t: jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(t)])
    step = flat(strategy.mean(new)) - flat(OPT)
    towards_nan = flat(jax.tree.map(lambda x: x[2], population)) - flat(OPT)
    assert bool(jnp.all(jnp.isfinite(step)))
    cos = jnp.dot(step, towards_nan) / (jnp.linalg.norm(step) * jnp.linalg.norm(towards_nan))
    assert float(cos) < -0.99, float(cos)

    # A generation in which every member diverged leaves the state as it was.
    same = strategy.tell(k_tell, population, jnp.full(8, jnp.nan), state)
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments_are_refused():
    names = evosax_strategies()
    assert {"Open_ES", "CMA_ES", "SNES", "PGPE"} <= set(names)
    assert "SimpleGA" not in names  # population-based: no search mean
    with pytest.raises(ValueError, match="NoSuchES") as e:
        EvosaxStrategy("NoSuchES", 8, TEMPLATE)
    assert all(n in str(e.value) for n in names)
    with pytest.raises(ValueError, match=r"SimpleGA.*population-based"):
        EvosaxStrategy("SimpleGA", 8, TEMPLATE)
    for bad in (1, 0, 2.0, True):
        with pytest.raises(ValueError, match="pop_size"):
            EvosaxStrategy("SNES", bad, TEMPLATE)
    with pytest.raises(ValueError, match="pop_size"):
        EvosaxStrategy("Open_ES", 7, TEMPLATE)  # antithetic: evosax needs it even
    with pytest.raises(ValueError, match="not_a_knob"):
        EvosaxStrategy("SNES", 8, TEMPLATE, not_a_knob=1.0)
    s = EvosaxStrategy("SNES", 8, TEMPLATE, std_init=0.25)
    assert float(s.default_params.std_init) == 0.25
    with pytest.raises(AttributeError):
        s.pop_size = 4


def test_vmap_over_meta_seeds():
    strategy = EvosaxStrategy("SNES", 8, TEMPLATE, std_init=0.5)
    keys = jax.random.split(jax.random.key(2), 2)
    states = jax.jit(jax.vmap(lambda k: run(strategy, k, 5)))(keys)
    assert isinstance(states, EvosaxState)
    means = jax.vmap(strategy.mean)(states)
    for leaf in jax.tree.leaves(states):
        assert leaf.shape[0] == 2 and bool(jnp.all(jnp.isfinite(leaf)))
    assert any(not bool(jnp.allclose(x[0], x[1])) for x in jax.tree.leaves(means))
