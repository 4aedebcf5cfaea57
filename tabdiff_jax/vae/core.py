"""TVAE's pure core (Xu et al. 2019): encoder, decoder, the ELBO, a compiled epoch, the sampler.

Encoder ``[batch, dense_dim] -> (mu, logvar) [batch, latent_dim]`` and decoder
``[batch, latent_dim] -> [batch, dense_dim]`` are ReLU MLPs. The ELBO, as in CTGAN's TVAE, per
batch of ``b`` rows::

    loss = loss_factor / b * sum_rows [ sum_numeric ((x - act(x_hat))^2 / (2 sigma^2) + log sigma)
                                        + sum_blocks cross_entropy(block logits, block code) ]
           + KL(q(z|x) || N(0, I)) / b

with one learned ``sigma`` per numeric column, kept in [0.01, 1] by the optimiser
(:func:`tvae_optimizer`). The training state is a :class:`~tabdiff_jax.state.TrainState` whose
``params`` are ``{"encoder": ..., "decoder": ...}`` (one loss, one optimiser). The estimator is
:class:`tabdiff_jax.models.tvae.TVAE`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tabdiff_jax.blocks import block_cross_entropy, hard_onehot
from tabdiff_jax.gan.nets import activate, apply
from tabdiff_jax.layers import Linear, linear_stack
from tabdiff_jax.sharding import check_divisible, constrain_rows
from tabdiff_jax.state import TrainState, apply_gradients, init_train_state
from tabdiff_jax.table import TableLayout
from tabdiff_jax.transforms import clip_params

SIGMA_RANGE = (0.01, 1.0)


class Encoder(nnx.Module):
    """``x [batch, data_dim] -> (mu, logvar)``, each ``[batch, latent_dim]``."""

    def __init__(self, data_dim: int, hidden_dims: Sequence[int], latent_dim: int, *, rngs: nnx.Rngs):
        self.hidden, dim = linear_stack(data_dim, hidden_dims, rngs=rngs)
        self.mu = Linear(dim, int(latent_dim), rngs=rngs)
        self.logvar = Linear(dim, int(latent_dim), rngs=rngs)

    def __call__(self, x: jax.Array):
        for layer in self.hidden:
            x = jax.nn.relu(layer(x))
        return self.mu(x), self.logvar(x)


class Decoder(nnx.Module):
    """``z [batch, latent_dim] -> x_hat [batch, data_dim]``; ``sigma [num_numeric]`` is a parameter."""

    def __init__(self, latent_dim: int, hidden_dims: Sequence[int], data_dim: int, num_numeric: int, *,
                 rngs: nnx.Rngs):
        self.hidden, dim = linear_stack(latent_dim, hidden_dims, rngs=rngs)
        self.out = Linear(dim, int(data_dim), rngs=rngs)
        self.sigma = nnx.Param(jnp.full((int(num_numeric),), 0.1, jnp.float32))

    def __call__(self, z: jax.Array) -> jax.Array:
        for layer in self.hidden:
            z = jax.nn.relu(layer(z))
        return self.out(z)


def _is_sigma(path, _) -> bool:
    return jax.tree_util.keystr(path) == "['decoder']['sigma']"


def tvae_optimizer(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` then the clamp of the decoder's ``sigma`` to ``SIGMA_RANGE`` (an ``optax.masked``
    :func:`~tabdiff_jax.transforms.clip_params`); :func:`init_tvae_state` and :func:`make_tvae_epoch`
    apply it to the ``tx`` they are given."""
    def mask(params):
        return jax.tree_util.tree_map_with_path(_is_sigma, params)

    return optax.chain(tx, optax.masked(clip_params(*SIGMA_RANGE), mask))


def init_tvae_state(params: dict, tx: optax.GradientTransformation) -> TrainState:
    """The initial state of ``params = {"encoder": ..., "decoder": ...}`` for :func:`make_tvae_epoch`."""
    return init_train_state(params, tvae_optimizer(tx))


def elbo_loss(x: jax.Array, x_hat: jax.Array, sigma: jax.Array, mu: jax.Array, logvar: jax.Array,
              layout: TableLayout, *, numeric_activation: str, loss_factor: float = 2.0):
    """Negative ELBO of a batch (scalar) and its two terms.

    Args:
      x: dense rows ``[b, dense_dim]``; x_hat: decoder outputs ``[b, dense_dim]``.
      sigma: ``[num_numeric]`` standard deviations of the numeric columns.
      mu, logvar: ``[b, latent_dim]``.
    """
    b = x.shape[0]
    k = layout.num_numeric
    num_hat = jnp.tanh(x_hat[:, :k]) if numeric_activation == "tanh" else x_hat[:, :k]
    rec = jnp.sum(jnp.square(x[:, :k] - num_hat) / (2.0 * jnp.square(sigma))) + b * jnp.sum(jnp.log(sigma))
    if layout.num_categorical:
        rec = rec + jnp.sum(block_cross_entropy(x_hat[:, k:], x[:, k:], layout.categorical_sizes))
    kld = -0.5 * jnp.sum(1.0 + logvar - jnp.square(mu) - jnp.exp(logvar))
    rec, kld = rec * loss_factor / b, kld / b
    return rec + kld, {"reconstruction": rec, "kl": kld}


def make_tvae_epoch(enc_def, dec_def, layout: TableLayout, tx: optax.GradientTransformation, *, batch_size: int,
                    steps_per_epoch: int, numeric_activation: str, loss_factor: float = 2.0, mesh=None):
    """``epoch(state, data, key) -> (state, metrics)``: a scan over a permutation's batches.

    ``state`` is from :func:`init_tvae_state` with the same ``tx``. With a ``mesh`` each batch is
    split by rows over its devices (``batch_size`` a multiple of its size).
    """
    check_divisible(batch_size, mesh)
    tx = tvae_optimizer(tx)

    def loss_fn(params, batch, key):
        enc, dec = params["encoder"], params["decoder"]
        batch = constrain_rows(batch, mesh)
        mu, logvar = apply(enc_def, enc, batch)
        z = mu + jnp.exp(0.5 * logvar) * constrain_rows(jax.random.normal(key, mu.shape, mu.dtype), mesh)
        x_hat = apply(dec_def, dec, z)
        loss, terms = elbo_loss(batch, x_hat, dec["sigma"][...], mu, logvar, layout,
                                numeric_activation=numeric_activation, loss_factor=loss_factor)
        return loss, {"loss": loss, **terms}

    def epoch(state: TrainState, data: jax.Array, key: jax.Array):
        k_perm, k_steps = jax.random.split(key)
        order = jax.random.permutation(k_perm, data.shape[0])[: steps_per_epoch * batch_size]
        order = order.reshape(steps_per_epoch, batch_size)

        def step(state: TrainState, inputs):
            idx, k = inputs
            grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, data[idx], k)
            return apply_gradients(state, grads, tx), metrics

        state, metrics = jax.lax.scan(step, state, (order, jax.random.split(k_steps, steps_per_epoch)))
        return state, jax.tree.map(jnp.mean, metrics)

    return epoch


def make_tvae_sample(dec_def, layout: TableLayout, *, latent_dim: int, numeric_activation: str,
                     categorical: str = "argmax", mesh=None):
    """``sample(decoder, row_keys [batch]) -> rows [batch, dense_dim]`` with hard one-hot blocks.

    Row ``i`` draws its latent, its numeric noise and its categories from ``row_keys[i]`` only, so
    it does not depend on the batch. With a ``mesh`` the rows are split over its devices (``batch`` a
    multiple of its size); the values do not depend on it.
    """
    k = layout.num_numeric

    def row_noise(rk):
        return (jax.random.normal(jax.random.fold_in(rk, 0), (latent_dim,), jnp.float32),
                jax.random.normal(jax.random.fold_in(rk, 1), (k,), jnp.float32), jax.random.fold_in(rk, 2))

    def sample(dec, row_keys):
        z, eps, k_cat = constrain_rows(jax.vmap(row_noise)(constrain_rows(row_keys, mesh)), mesh)
        x_hat = apply(dec_def, dec, z)
        num = jnp.tanh(x_hat[:, :k]) if numeric_activation == "tanh" else x_hat[:, :k]
        num = num + dec["sigma"][...] * eps
        if categorical == "sample":
            hard = lambda row, key: activate(row[None], layout, key, numeric_activation="identity", hard=True)[0]
            return constrain_rows(jax.vmap(hard)(x_hat, k_cat).at[:, :k].set(num), mesh)
        cats = hard_onehot(x_hat[:, k:], layout.categorical_sizes)
        return constrain_rows(jnp.concatenate([num, cats], axis=-1), mesh)

    return sample
