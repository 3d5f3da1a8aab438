"""Running observation normalisation, carried as learner state (not env state)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class RunningStats:
    """Mean and variance of everything seen so far (Chan et al. parallel update)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def create(cls, shape: tuple[int, ...]) -> RunningStats:
        """Zero mean, unit variance, a tiny prior count (as OpenAI baselines).

        Args:
            shape: The shape of one sample.

        Returns:
            The initial statistics (``mean`` and ``var`` of shape ``shape``, ``count`` 1e-4).
        """
        return cls(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32), jnp.float32(1e-4))

    def update(self, x: jax.Array) -> RunningStats:
        """Folds in a batch ``x`` of shape ``[..., *shape]``.

        Args:
            x: The batch; every leading axis counts as samples.

        Returns:
            The updated statistics.
        """
        x = x.reshape((-1, *self.mean.shape))
        n = jnp.float32(x.shape[0])
        b_mean = jnp.mean(x, axis=0)
        b_var = jnp.var(x, axis=0)
        total = self.count + n
        delta = b_mean - self.mean
        mean = self.mean + delta * n / total
        m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / total
        return RunningStats(mean, m2 / total, total)

    def update_until(self, x: jax.Array, seen: jax.Array, limit: int | None) -> RunningStats:
        """Folds in ``x`` while ``seen`` (the samples before it) is below ``limit``, then
        stays frozen; ``limit=None`` always folds it in. The AWR code's normaliser
        (``xbpeng/awr``, ``normalizer_samples``) records only its first ``limit``
        samples.

        Args:
            x: A batch of shape ``[..., *shape]``.
            seen: The samples seen before ``x`` (a traced scalar).
            limit: The samples after which the statistics freeze, or ``None``.

        Returns:
            The updated statistics, or these ones once ``seen >= limit``.
        """
        updated = self.update(x)
        if limit is None:
            return updated
        keep = seen < limit
        return jax.tree.map(lambda a, b: jnp.where(keep, a, b), updated, self)

    def normalize(self, x: jax.Array, clip: float = 10.0) -> jax.Array:
        """``clip((x - mean) / sqrt(var + 1e-8), -clip, clip)``.

        Args:
            x: ``[..., *shape]`` values to normalise.
            clip: The bound of the normalised values.

        Returns:
            The normalised values, ``x``'s shape.
        """
        return jnp.clip((x - self.mean) / jnp.sqrt(self.var + 1e-8), -clip, clip)


__all__ = ["RunningStats"]
