"""Softmax arithmetic over all one-hot blocks at once (no Python loop over blocks in the graph).

The one-hot part of the dense layout is ``[..., onehot_dim]``, cut into blocks of the layout's
``categorical_sizes``. A per-block log-sum-exp needs each block's maximum for stability; it comes
from one ``segment_max`` (held constant under differentiation, which leaves the value and the
gradient unchanged), and the sums of exponentials from one matmul with the ``[onehot_dim, blocks]``
membership matrix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def block_index(sizes: tuple[int, ...]) -> np.ndarray:
    """Block of every one-hot column, ``[sum(sizes)]`` int32."""
    return np.repeat(np.arange(len(sizes), dtype=np.int32), np.asarray(sizes, dtype=np.int64))


def block_logsumexp(logits: jax.Array, sizes: tuple[int, ...]) -> jax.Array:
    """``[batch, onehot_dim]`` -> ``[batch, num_blocks]``: log-sum-exp of each block's logits."""
    index = block_index(sizes)
    k = len(sizes)
    peak = jax.lax.stop_gradient(jax.ops.segment_max(logits.T, index, num_segments=k).T)  # [batch, k]
    membership = jnp.asarray(np.eye(k, dtype=np.float32)[index], logits.dtype)  # [onehot_dim, k]
    sums = jnp.exp(logits - peak[:, index]) @ membership
    return jnp.log(sums) + peak


def block_log_softmax(logits: jax.Array, sizes: tuple[int, ...]) -> jax.Array:
    """Log-softmax within each block, ``[batch, onehot_dim]``."""
    return logits - block_logsumexp(logits, sizes)[:, block_index(sizes)]


def block_softmax(logits: jax.Array, sizes: tuple[int, ...]) -> jax.Array:
    """Softmax within each block, ``[batch, onehot_dim]``."""
    return jnp.exp(block_log_softmax(logits, sizes))


def block_cross_entropy(logits: jax.Array, onehot: jax.Array, sizes: tuple[int, ...]) -> jax.Array:
    """Sum over blocks of ``-log softmax(block)[true category]`` per row, ``[batch]``.

    ``onehot`` holds exactly one 1 per block, so the sum is ``sum_b lse_b - <onehot, logits>``.
    """
    return jnp.sum(block_logsumexp(logits, sizes), axis=-1) - jnp.sum(onehot * logits, axis=-1)
