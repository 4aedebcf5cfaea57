"""Per-example L2 clipping, safe for zero, NaN and infinite norms.

Every function here takes per-example quantities with the example axis first (``[B, ...]``) and a
boolean ``mask`` ``[B]`` that marks the real rows of a fixed-size padded batch. A row contributes to
a clipped sum only if it is real *and* its gradient norm is finite: a NaN or infinite per-example
gradient is replaced by zero (and counted in :class:`ClipStats`), so one bad example can neither
poison the update nor exceed the sensitivity ``l2_clip``.

Example:
  >>> grads = {"w": jnp.array([[3.0, 4.0], [0.3, 0.4]])}         # two examples, norms 5 and 0.5
  >>> total, stats = clipped_sum(grads, l2_clip=1.0, mask=jnp.array([True, True]))
  >>> total["w"]                                                   # [0.6, 0.8] + [0.3, 0.4]
  Array([0.90000004, 1.2       ], dtype=float32)
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from tabdiff_jax.errors import ConfigError

PyTree = Any


class ClipStats(NamedTuple):
    """What clipping saw in one batch (all scalars except ``norms``).

    Attributes:
      norms: per-example gradient L2 norms before clipping, ``[B]`` (NaN/inf kept as they were; 0 on
        padding rows).
      batch_size: number of real rows (``sum(mask)``), int32.
      num_clipped: real rows with a finite norm above ``l2_clip`` (scaled down), int32.
      num_nonfinite: real rows whose gradient was NaN or infinite (contributed zero), int32.
    """

    norms: jax.Array
    batch_size: jax.Array
    num_clipped: jax.Array
    num_nonfinite: jax.Array


def per_example_sq_norms(per_example: PyTree) -> jax.Array:
    """Squared L2 norm of each example's slice of every leaf, summed over leaves: ``[B]`` float32."""
    leaves = jax.tree_util.tree_leaves(per_example)
    if not leaves:
        raise ConfigError("per-example gradients are empty: the model has no parameters")
    return sum(jnp.sum(jnp.square(x.astype(jnp.float32)).reshape(x.shape[0], -1), axis=1) for x in leaves)


def clip_factors(sq_norms: jax.Array, l2_clip: float, mask: Optional[jax.Array] = None):
    """Scale factors ``c_i = min(1, C / ||g_i||)`` from squared norms, zero where unusable.

    Args:
      sq_norms: squared per-example norms ``[B]``.
      l2_clip: the clipping norm ``C > 0``.
      mask: ``[B]`` bool, real rows; ``None`` means all rows are real.

    Returns:
      ``(factors [B] float32, usable [B] bool, stats ClipStats)``. ``usable`` is ``mask`` and a
      finite norm; ``factors`` is 0 where not usable, 1 for norms <= C, ``C / norm`` otherwise.
    """
    sq_norms = sq_norms.astype(jnp.float32)
    mask = jnp.ones(sq_norms.shape, bool) if mask is None else mask.astype(bool)
    norms = jnp.sqrt(jnp.where(jnp.isfinite(sq_norms), jnp.maximum(sq_norms, 0.0), sq_norms))
    finite = jnp.isfinite(norms)
    usable = mask & finite
    # C / max(norm, C) is 1 below the threshold and C / norm above it; no division by zero.
    safe_norms = jnp.where(finite, norms, l2_clip)
    factors = jnp.where(usable, l2_clip / jnp.maximum(safe_norms, l2_clip), 0.0)
    stats = ClipStats(
        norms=jnp.where(mask, norms, 0.0),
        batch_size=jnp.sum(mask, dtype=jnp.int32),
        num_clipped=jnp.sum(usable & (norms > l2_clip), dtype=jnp.int32),
        num_nonfinite=jnp.sum(mask & ~finite, dtype=jnp.int32),
    )
    return factors, usable, stats


def _scale_rows(x: jax.Array, factors: jax.Array, usable: jax.Array) -> jax.Array:
    """``factors[i] * x[i]``, with rows that are not usable set to exactly zero (NaN-proof)."""
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return jnp.where(usable.reshape(shape), x * factors.reshape(shape).astype(x.dtype), jnp.zeros((), x.dtype))


def clip_per_example(per_example: PyTree, l2_clip: float, mask: Optional[jax.Array] = None):
    """Clip each example's gradient (a pytree slice along axis 0) to global L2 norm ``l2_clip``.

    Args:
      per_example: pytree of ``[B, ...]`` arrays.
      l2_clip: clipping norm ``C``.
      mask: ``[B]`` bool of real rows, or ``None``.

    Returns:
      ``(clipped, stats)``: the same pytree with every row of norm <= C (rows of padding or with a
      non-finite norm are zero), and the :class:`ClipStats`.
    """
    factors, usable, stats = clip_factors(per_example_sq_norms(per_example), l2_clip, mask)
    return jax.tree_util.tree_map(lambda x: _scale_rows(x, factors, usable), per_example), stats


def clipped_sum(per_example: PyTree, l2_clip: float, mask: Optional[jax.Array] = None):
    """Sum over examples of the clipped per-example gradients; sensitivity ``l2_clip``.

    Returns:
      ``(summed, stats)``: a pytree like one example's gradient, and the :class:`ClipStats`.
    """
    factors, usable, stats = clip_factors(per_example_sq_norms(per_example), l2_clip, mask)
    return weighted_row_sum(per_example, factors, usable), stats


def weighted_row_sum(per_example: PyTree, factors: jax.Array, usable: jax.Array) -> PyTree:
    """``sum_i factors[i] * x[i]`` over the example axis of every leaf, skipping rows not ``usable``.

    A contraction over the example axis (no ``[B, ...]`` temporary of scaled rows); rows that are
    not usable are replaced by zeros first, so a NaN gradient cannot leak in as ``0 * NaN``.
    """

    def weighted_sum(x):
        safe = jnp.where(usable.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.zeros((), x.dtype))
        return jnp.tensordot(factors.astype(x.dtype), safe, axes=(0, 0))

    return jax.tree_util.tree_map(weighted_sum, per_example)
