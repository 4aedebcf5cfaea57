"""Block arithmetic shared by every model: one-hot codes, per-block argmax, log-sum-exp over any batch shape."""

import jax
import jax.numpy as jnp
import numpy as np

from tabdiff_jax import blocks

SIZES = (3, 1, 4)


def test_onehot_matches_numpy_and_argmax_inverts_it():
    codes = jnp.array([[2, 0, 3], [0, 0, 1]], jnp.int32)
    x = jax.jit(blocks.onehot, static_argnums=1)(codes, SIZES)
    want = np.concatenate([np.eye(k)[np.asarray(codes[:, b])] for b, k in enumerate(SIZES)], axis=1)
    np.testing.assert_array_equal(x, want)
    assert x.dtype == jnp.float32 and blocks.onehot(codes, SIZES, bool).dtype == jnp.bool_
    np.testing.assert_array_equal(blocks.block_argmax(x, SIZES), codes)
    assert blocks.onehot(codes[:, :0], ()).shape == (2, 0) and blocks.block_argmax(x[:, :0], ()).shape == (2, 0)


def test_hard_onehot_is_the_onehot_of_each_blocks_largest_entry():
    logits = jax.random.normal(jax.random.key(0), (5, sum(SIZES)))
    hard = np.asarray(blocks.hard_onehot(logits, SIZES))
    for o, k in zip(blocks.block_offsets(SIZES), SIZES):
        np.testing.assert_array_equal(hard[:, o:o + k], np.eye(k)[np.argmax(np.asarray(logits)[:, o:o + k], 1)])


def test_block_logsumexp_any_leading_shape_and_large_logits():
    x = 50.0 * jax.random.normal(jax.random.key(1), (2, 3, sum(SIZES)))
    lse = np.asarray(blocks.block_logsumexp(x, SIZES))
    assert lse.shape == (2, 3, len(SIZES))
    x64 = np.asarray(x, np.float64)
    for b, (o, k) in enumerate(zip(blocks.block_offsets(SIZES), SIZES)):
        m = x64[..., o:o + k].max(-1)
        np.testing.assert_allclose(lse[..., b], m + np.log(np.exp(x64[..., o:o + k] - m[..., None]).sum(-1)), rtol=1e-5)
    probs = np.asarray(blocks.block_softmax(x, SIZES), np.float64)
    for o, k in zip(blocks.block_offsets(SIZES), SIZES):
        np.testing.assert_allclose(probs[..., o:o + k].sum(-1), 1.0, rtol=1e-5)
