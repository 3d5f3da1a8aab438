"""``metareward.rl.shuffle``: the learners' minibatch shuffle is ``jax.random.permutation``
bit for bit (so swapping it in changed no result), and its stable argsort agrees with
numpy's on keys built to collide."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareward.rl import shuffle

SIZES = [1, 2, 3, 7, 64, 100, 512, 1000, 2048, 2049, 5000,
         shuffle.MAX_PACKED, shuffle.MAX_PACKED + 1]


@pytest.mark.parametrize("n", SIZES)
def test_permutation_is_jax_random_permutation_bit_for_bit(n):
    keys = jax.random.split(jax.random.PRNGKey(n), 24)
    ours = jax.jit(jax.vmap(lambda k: shuffle.permutation(k, n)))(keys)
    theirs = jax.jit(jax.vmap(lambda k: jax.random.permutation(k, n)))(keys)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape == (24, n)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_permutation_unbatched_and_typed_keys():
    for key in (jax.random.PRNGKey(3), jax.random.key(3)):
        np.testing.assert_array_equal(np.asarray(shuffle.permutation(key, 2048)),
                                      np.asarray(jax.random.permutation(key, 2048)))


def collide(rng, n, high_values):
    """``uint32`` keys whose high 12 bits take ``high_values`` values and whose low bits
    take 3: many share their high bits (the packed sort's buckets) and many tie."""
    high = rng.integers(0, high_values, n, dtype=np.uint64) << 20
    return (high | rng.integers(0, 3, n, dtype=np.uint64)).astype(np.uint32)


@pytest.mark.parametrize("n", [2, 5, 100, 2048, 3000])
@pytest.mark.parametrize("high_values", [1, 4, 4096])
def test_stable_argsort_matches_numpy_stable_on_collisions(n, high_values):
    keys = collide(np.random.default_rng(n + high_values), n, high_values)
    got = jax.jit(shuffle.stable_argsort_u32)(jnp.asarray(keys))
    np.testing.assert_array_equal(np.asarray(got), np.argsort(keys, kind="stable"))


def test_stable_argsort_batched_rows_converge_independently():
    """Under vmap the fix-up loop runs until every row is sorted; a row without
    collisions must come out the same as on its own."""
    rng = np.random.default_rng(0)
    rows = np.stack([collide(rng, 1000, 1),
                     rng.integers(0, 2**32, 1000, dtype=np.uint64).astype(np.uint32)])
    got = np.asarray(jax.jit(jax.vmap(shuffle.stable_argsort_u32))(jnp.asarray(rows)))
    for row, g in zip(rows, got, strict=True):
        np.testing.assert_array_equal(g, np.argsort(row, kind="stable"))


def test_the_sort_is_the_single_operand_one():
    """The point of the module: no key-value sort below ``MAX_PACKED`` (the slow one on
    XLA:CPU), one above it (``jax.random.permutation`` itself)."""
    def sorts(n):
        hlo = jax.jit(lambda k: shuffle.permutation(k, n)).lower(jax.random.PRNGKey(0))
        lines = [x for x in hlo.as_text().splitlines() if "stablehlo.sort" in x]
        return [x.split("stablehlo.sort")[1].count("%") for x in lines]

    assert sorts(2048) == [1, 1]  # two rounds, one operand each
    assert all(k == 2 for k in sorts(shuffle.MAX_PACKED + 1))


@pytest.mark.parametrize("n", [-1, 2.0, "8", True])
def test_bad_n_fails_naming_the_value(n):
    with pytest.raises(ValueError, match=rf"n={n!r}; expected a non-negative int"):
        shuffle.permutation(jax.random.PRNGKey(0), n)
