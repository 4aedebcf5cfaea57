"""TVAE's ELBO and sampler, and the block-softmax arithmetic they use."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tabdiff_jax.blocks import block_cross_entropy, block_log_softmax, block_softmax
from tabdiff_jax.sampling import row_keys
from tabdiff_jax.table import TableLayout, split_onehot
from tabdiff_jax.vae.core import Decoder, elbo_loss, make_tvae_sample

LAYOUT = TableLayout(("a", "b"), ("c", "d", "e"), (3, 1, 4), ("category", "category", "mode"))


def test_block_log_softmax_matches_per_block_and_is_stable():
    logits = jax.random.normal(jax.random.key(0), (5, 8)) * 4
    logits = logits.at[0, 3].set(800.0).at[1, 4:].set(-900.0)  # huge and tiny blocks stay finite
    got = block_log_softmax(logits, LAYOUT.categorical_sizes)
    want = jnp.concatenate([jax.nn.log_softmax(b, axis=-1) for b in split_onehot(logits, LAYOUT)], axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert bool(jnp.all(jnp.isfinite(got)))
    for block in split_onehot(block_softmax(logits, LAYOUT.categorical_sizes), LAYOUT):
        np.testing.assert_allclose(block.sum(-1), 1.0, rtol=1e-5)
    # the gradient is the usual softmax - onehot, block by block
    target = jax.nn.one_hot(jnp.array([[0, 0, 2]] * 5), 4)[..., :4]
    onehot = jnp.concatenate([target[:, 0, :3], target[:, 1, :1], target[:, 2, :4]], axis=-1)
    g = jax.grad(lambda l: jnp.sum(block_cross_entropy(l, onehot, LAYOUT.categorical_sizes)))(logits)
    np.testing.assert_allclose(g, jnp.exp(want) - onehot, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("activation", ["tanh", "identity"])
def test_elbo_matches_closed_form(activation):
    rng = np.random.default_rng(0)
    b = 4
    codes = np.stack([rng.integers(0, 3, b), np.zeros(b, int), rng.integers(0, 4, b)], 1)
    onehot = np.concatenate([np.eye(3)[codes[:, 0]], np.eye(1)[codes[:, 1]], np.eye(4)[codes[:, 2]]], 1)
    x = np.concatenate([rng.uniform(-1, 1, (b, 2)), onehot], 1).astype(np.float32)
    x_hat = rng.normal(size=(b, 10)).astype(np.float32)
    sigma = np.array([0.3, 0.7], np.float32)
    mu, logvar = rng.normal(size=(b, 3)).astype(np.float32), rng.normal(size=(b, 3)).astype(np.float32)
    loss, terms = elbo_loss(jnp.asarray(x), jnp.asarray(x_hat), jnp.asarray(sigma), jnp.asarray(mu),
                            jnp.asarray(logvar), LAYOUT, numeric_activation=activation, loss_factor=2.0)
    act = np.tanh(x_hat[:, :2]) if activation == "tanh" else x_hat[:, :2]
    gauss = np.sum((x[:, :2] - act) ** 2 / (2 * sigma ** 2)) + b * np.sum(np.log(sigma))
    ce = 0.0
    for start, size, col in ((2, 3, 0), (5, 1, 1), (6, 4, 2)):
        logits = x_hat[:, start:start + size].astype(np.float64)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        ce -= logp[np.arange(b), codes[:, col]].sum()
    kl = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar))
    np.testing.assert_allclose(terms["reconstruction"], 2.0 * (gauss + ce) / b, rtol=1e-5)
    np.testing.assert_allclose(terms["kl"], kl / b, rtol=1e-5)
    np.testing.assert_allclose(loss, 2.0 * (gauss + ce) / b + kl / b, rtol=1e-5)


def test_sampler_gives_one_hot_blocks_and_sigma_noise():
    dec = Decoder(3, (8,), LAYOUT.dense_dim, 2, rngs=nnx.Rngs(0))
    dec_def, params = nnx.split(dec)
    params["sigma"] = nnx.Param(jnp.array([0.01, 0.5]))
    for categorical in ("argmax", "sample"):
        sample = jax.jit(make_tvae_sample(dec_def, LAYOUT, latent_dim=3, numeric_activation="tanh",
                                          categorical=categorical))
        rows = sample(params, row_keys(jax.random.key(1), 0, 4000))
        # row i depends only on its key: a shorter call gives the same first rows
        np.testing.assert_allclose(np.asarray(sample(params, row_keys(jax.random.key(1), 0, 5))), np.asarray(rows[:5]),
                                   rtol=1e-5, atol=1e-6)
        for block in split_onehot(rows[:, 2:], LAYOUT):
            np.testing.assert_array_equal(block.sum(-1), 1.0)
            assert bool(jnp.all((block == 0) | (block == 1)))
    # numbers are tanh(decoder) + N(0, sigma): the low-sigma column stays within (-1, 1) + noise
    assert float(jnp.max(jnp.abs(rows[:, 0]))) < 1.05
    assert float(jnp.max(jnp.abs(rows[:, 1]))) > 1.2
