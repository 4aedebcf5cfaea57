"""Arithmetic over a table's one-hot blocks, given only their sizes: one-hot codes, softmaxes, argmaxes.

The categorical part of every dense layout is ``[..., onehot_dim]``: the one-hot vectors of the
blocks side by side, block ``b`` of width ``sizes[b]`` (:class:`tabdiff_jax.table.TableLayout`'s
``categorical_sizes``, the multinomial diffusion's :class:`~tabdiff_jax.diffusion.multinomial.BlockSpec`).
Codes are int arrays ``[..., num_blocks]``. Every model that needs a one-hot encoding, a per-block
softmax or a per-block argmax uses these functions.

A per-block log-sum-exp needs each block's maximum for stability; it comes from one
``segment_max`` (held constant under differentiation, which leaves the value and the gradient
unchanged), and the sums of exponentials from one matmul with the ``[onehot_dim, num_blocks]``
membership matrix: no Python loop over blocks in the graph.

Example:
  >>> x = onehot(codes, (3, 5))                      # [n, 2] -> [n, 8]
  >>> probs = block_softmax(logits, (3, 5))          # [n, 8], each block sums to 1
  >>> codes = block_argmax(probs, (3, 5))            # [n, 2]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def block_index(sizes: tuple[int, ...]) -> np.ndarray:
    """Block of every one-hot column, ``[sum(sizes)]`` int32."""
    return np.repeat(np.arange(len(sizes), dtype=np.int32), np.asarray(sizes, dtype=np.int64))


def block_offsets(sizes: tuple[int, ...]) -> tuple[int, ...]:
    """Start of each block in the one-hot vector."""
    return tuple(int(o) for o in np.cumsum((0,) + tuple(sizes))[:-1])


def onehot(codes: jax.Array, sizes: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Codes ``[..., num_blocks]`` -> the concatenated one-hot blocks ``[..., sum(sizes)]``.

    Each block compares its column of codes with ``arange(size)`` (static slices, no gather, which
    XLA runs slowly on CPUs). A code outside ``[0, size)`` gives an all-zero block.
    """
    if not sizes:
        return jnp.zeros(codes.shape[:-1] + (0,), dtype)
    return jnp.concatenate([codes[..., b:b + 1] == jnp.arange(k, dtype=codes.dtype)
                            for b, k in enumerate(sizes)], axis=-1).astype(dtype)


def block_argmax(x: jax.Array, sizes: tuple[int, ...]) -> jax.Array:
    """The largest entry of each block of ``x [..., sum(sizes)]`` (one-hot, probabilities or logits)
    -> int32 codes ``[..., num_blocks]``."""
    if not sizes:
        return jnp.zeros(x.shape[:-1] + (0,), jnp.int32)
    return jnp.stack([jnp.argmax(x[..., o:o + k], axis=-1) for o, k in zip(block_offsets(sizes), sizes)],
                     axis=-1).astype(jnp.int32)


def hard_onehot(x: jax.Array, sizes: tuple[int, ...]) -> jax.Array:
    """Each block of ``x [..., sum(sizes)]`` replaced by the one-hot of its argmax, in ``x``'s dtype."""
    return onehot(block_argmax(x, sizes), sizes, x.dtype)


def block_logsumexp(logits: jax.Array, sizes: tuple[int, ...]) -> jax.Array:
    """``[..., sum(sizes)]`` -> ``[..., num_blocks]``: log-sum-exp of each block's logits."""
    k = len(sizes)
    if k == 0:
        return jnp.zeros(logits.shape[:-1] + (0,), logits.dtype)
    index = block_index(sizes)
    flat = logits.reshape(-1, logits.shape[-1])
    peak = jax.lax.stop_gradient(jax.ops.segment_max(flat.T, index, num_segments=k).T)  # [rows, k]
    membership = jnp.asarray(np.eye(k, dtype=np.float32)[index], logits.dtype)  # [onehot_dim, k]
    sums = jnp.exp(flat - peak[:, index]) @ membership
    return (jnp.log(sums) + peak).reshape(logits.shape[:-1] + (k,))


def block_log_softmax(logits: jax.Array, sizes: tuple[int, ...]) -> jax.Array:
    """Log-softmax within each block, ``[..., sum(sizes)]``."""
    return logits - block_logsumexp(logits, sizes)[..., block_index(sizes)]


def block_exps(logits: jax.Array, sizes: tuple[int, ...]) -> list[jax.Array]:
    """Per block ``exp(logits - max)``, ``[[..., K_b]]``: unnormalised probabilities, each block's largest 1."""
    out = []
    for o, k in zip(block_offsets(sizes), sizes):
        x = logits[..., o:o + k]
        out.append(jnp.exp(x - jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))))
    return out


def block_softmax(logits: jax.Array, sizes: tuple[int, ...]) -> jax.Array:
    """Softmax within each block, ``[..., sum(sizes)]`` (static slices: one exponential per entry, no gather,
    half the time of ``exp(block_log_softmax)`` on CPUs)."""
    if not sizes:
        return logits
    return jnp.concatenate([e / jnp.sum(e, axis=-1, keepdims=True) for e in block_exps(logits, sizes)], axis=-1)


def block_cross_entropy(logits: jax.Array, onehot_target: jax.Array, sizes: tuple[int, ...]) -> jax.Array:
    """Sum over blocks of ``-log softmax(block)[true category]``, ``[...]``.

    ``onehot_target`` holds exactly one 1 per block, so the sum is ``sum_b lse_b - <onehot, logits>``.
    """
    return jnp.sum(block_logsumexp(logits, sizes), axis=-1) - jnp.sum(onehot_target * logits, axis=-1)
