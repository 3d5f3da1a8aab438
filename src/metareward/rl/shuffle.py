"""Minibatch shuffles: ``jax.random.permutation(key, n)``, the same permutation bit for bit,
computed with XLA:CPU's fast sort.

``jax.random.permutation(key, n)`` draws fresh 32-bit keys and *stably* sorts the indices
by them, ``ceil(3 ln n / ln(2^32 - 1))`` times (two rounds for n = 2048). Its sort is a
key-value sort (``lax.sort_key_val``). On XLA:CPU it is about 5x slower than a sort of
one ``uint32`` operand of the same length, and in a PPO update of 64 seeds x 10 epochs x
2048 samples the permutations took about a quarter of the update (issue 37,
``benchmarks/RESULTS.md``).

So on a CPU each round here sorts *one* ``uint32`` operand: the key's high bits with the
index in its low ``b = ceil(log2 n)`` bits. That orders the indices by (high key bits,
index). Elements whose keys share their high bits (about ``n^2 / 2^(33-b)`` pairs per
sort: about one at n = 2048) are then put in (full key, index) order by odd-even
transposition passes, repeated until no adjacent pair is out of order (one or two passes
almost always). The result is the stable sort jax's algorithm specifies, hence the
identical permutation; ``tests/test_shuffle.py`` checks it against
``jax.random.permutation`` and, with forced ties and shared high bits, against numpy's
stable argsort.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

#: Largest ``n`` done by the packed sort. Above it the groups of keys sharing their high
#: bits grow (``n^2 / 2^32`` elements on average at ``n`` a power of two) and the fix-up
#: passes with them: on the 2-core VM (2026-12-06, one seed) the packed sort was 2.1x
#: faster at ``n = 2^16`` and level at ``2^18``, so larger ``n`` is left to
#: ``jax.random.permutation``.
MAX_PACKED = 1 << 16


def _rounds(n: int) -> int:
    """The number of sort rounds ``jax.random.permutation`` uses for ``n`` elements."""
    return math.ceil(3 * math.log(max(1, n)) / math.log(2**32 - 1))


def _in_order(k_a: jax.Array, i_a: jax.Array, k_b: jax.Array, i_b: jax.Array) -> jax.Array:
    """Whether ``(k_a, i_a) <= (k_b, i_b)`` lexicographically."""
    return (k_a < k_b) | ((k_a == k_b) & (i_a <= i_b))


def _transposition_pass(keys: jax.Array, order: jax.Array, parity: int) -> jax.Array:
    """One odd-even transposition pass: swaps each pair ``(j, j + 1)`` with
    ``j % 2 == parity`` whose (key, index) order is wrong."""
    n = order.shape[0]
    k = keys[order]
    j = jnp.arange(n - 1)
    swap = (j % 2 == parity) & ~_in_order(k[:-1], order[:-1], k[1:], order[1:])
    swap_left = jnp.concatenate([swap, jnp.zeros((1,), bool)])   # j swaps with j + 1
    swap_right = jnp.concatenate([jnp.zeros((1,), bool), swap])  # j swaps with j - 1
    return jnp.where(swap_left, jnp.roll(order, -1), jnp.where(swap_right, jnp.roll(order, 1),
                                                               order))


def _sorted(keys: jax.Array, order: jax.Array) -> jax.Array:
    """Whether ``order`` lists the indices in (key, index) order."""
    k = keys[order]
    return jnp.all(_in_order(k[:-1], order[:-1], k[1:], order[1:]))


def stable_argsort_u32(keys: jax.Array) -> jax.Array:
    """``jnp.argsort(keys, stable=True)`` of a ``uint32`` vector with ``n <= 2^31``
    elements, by one single-operand sort and odd-even transposition passes.

    Args:
        keys: ``[n]`` ``uint32`` keys.

    Returns:
        ``[n]`` ``int32`` indices: ``keys[result]`` ascending, equal keys in index order.
    """
    n = keys.shape[0]
    if n < 2:
        return jnp.arange(n, dtype=jnp.int32)
    bits = (n - 1).bit_length()
    low = jnp.uint32((1 << bits) - 1)
    packed = (keys & ~low) | jnp.arange(n, dtype=jnp.uint32)
    order = (lax.sort(packed, is_stable=False) & low).astype(jnp.int32)  # packed: distinct

    def fix(order: jax.Array) -> jax.Array:
        return _transposition_pass(keys, _transposition_pass(keys, order, 0), 1)

    return lax.while_loop(lambda o: ~_sorted(keys, o), fix, order)


def _packed_permutation(key: jax.Array, n: int) -> jax.Array:
    """``jax.random.permutation(key, n)``'s rounds with :func:`stable_argsort_u32`."""
    x = jnp.arange(n, dtype=jnp.int32)
    for _ in range(_rounds(n)):
        key, subkey = jax.random.split(key)
        x = x[stable_argsort_u32(jax.random.bits(subkey, (n,), jnp.uint32))]
    return x


def permutation(key: jax.Array, n: int) -> jax.Array:
    """A random permutation of ``arange(n)``: ``jax.random.permutation(key, n)``, bit for
    bit, faster on a CPU (see the module docstring).

    The packed sort is staged for CPUs only (``lax.platform_dependent``); on other
    platforms, and for ``n > MAX_PACKED``, this is ``jax.random.permutation`` itself. The
    packed sort was measured on CPUs only, and on an accelerator the fix-up loop's
    condition would cost a device-to-host copy per pass.

    Args:
        key: PRNG key (raw ``uint32[2]`` or typed).
        n: The number of elements (static).

    Returns:
        ``[n]`` ``int32``: the permutation ``jax.random.permutation(key, n)`` returns.

    Raises:
        ValueError: ``n`` is not a non-negative integer.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"permutation: n={n!r}; expected a non-negative int")
    n = int(n)
    if n > MAX_PACKED:
        return jax.random.permutation(key, n)
    return lax.platform_dependent(key, cpu=lambda k: _packed_permutation(k, n),
                                  default=lambda k: jax.random.permutation(k, n))


__all__ = ["MAX_PACKED", "permutation", "stable_argsort_u32"]
