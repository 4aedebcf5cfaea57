"""TVAE (Xu et al. 2019): a variational autoencoder of the dense encoded table.

Encoder ``[batch, dense_dim] -> (mu, logvar) [batch, latent_dim]`` and decoder
``[batch, latent_dim] -> [batch, dense_dim]`` are ReLU MLPs (128-128, latent 128 by default).
The ELBO, as in CTGAN's TVAE, per batch of ``b`` rows::

    loss = loss_factor / b * sum_rows [ sum_numeric ((x - act(x_hat))^2 / (2 sigma^2) + log sigma)
                                        + sum_blocks cross_entropy(block logits, block code) ]
           + KL(q(z|x) || N(0, I)) / b

with one learned ``sigma`` per numeric column (clamped to [0.01, 1] after each update), ``act``
the numeric output activation (tanh for min-max / mode-specific, identity otherwise) and
``loss_factor = 2``. Sampling decodes ``z ~ N(0, I)``: numbers are ``act(x_hat) + sigma * eps``,
each categorical block its argmax (TVAE) or a draw from its softmax (``categorical="sample"``).

An epoch is one ``lax.scan`` over ``n // batch_size`` batches of a fresh permutation.

Data parallelism over all local devices (:func:`tabdiff_jax.sharding.auto_mesh`): each batch is split
by rows over the devices (parameters replicated), the batch rounded down to a multiple of the device
count; sampling splits each chunk's rows over the devices and gives the same rows for the same seed
whatever the device count.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.gan.blocks import block_cross_entropy
from tabdiff_jax.gan.nets import activate, apply, numeric_activation_for
from tabdiff_jax.gan.params import (EpochTimer, arrays_to_tree, epochs_from, make_optimizer, resolve_config,
                                    tree_to_arrays)
from tabdiff_jax.layers import Linear, linear_stack
from tabdiff_jax.models.base import Synthesizer, register
from tabdiff_jax.sharding import auto_mesh, check_divisible, constrain_rows, replicate, round_up
from tabdiff_jax.table import TableLayout, from_dense, split_onehot, to_dense
from tabdiff_jax.training import run_training

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


class TVAEState(NamedTuple):
    encoder: object
    decoder: object
    opt: object
    step: jax.Array


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

    With a ``mesh`` each batch is split by rows over its devices (``batch_size`` a multiple of its size).
    """
    check_divisible(batch_size, mesh)

    def loss_fn(params, batch, key):
        enc, dec = params
        batch = constrain_rows(batch, mesh)
        mu, logvar = apply(enc_def, enc, batch)
        z = mu + jnp.exp(0.5 * logvar) * constrain_rows(jax.random.normal(key, mu.shape, mu.dtype), mesh)
        x_hat = apply(dec_def, dec, z)
        loss, terms = elbo_loss(batch, x_hat, dec["sigma"][...], mu, logvar, layout,
                                numeric_activation=numeric_activation, loss_factor=loss_factor)
        return loss, {"loss": loss, **terms}

    def epoch(state: TVAEState, data: jax.Array, key: jax.Array):
        k_perm, k_steps = jax.random.split(key)
        order = jax.random.permutation(k_perm, data.shape[0])[: steps_per_epoch * batch_size]
        order = order.reshape(steps_per_epoch, batch_size)

        def step(state: TVAEState, inputs):
            idx, k = inputs
            params = (state.encoder, state.decoder)
            grads, metrics = jax.grad(loss_fn, has_aux=True)(params, data[idx], k)
            updates, opt = tx.update(grads, state.opt, params)
            enc, dec = optax.apply_updates(params, updates)
            dec["sigma"] = jax.tree.map(lambda s: jnp.clip(s, *SIGMA_RANGE), dec["sigma"])
            return TVAEState(enc, dec, opt, state.step + 1), metrics

        state, metrics = jax.lax.scan(step, state, (order, jax.random.split(k_steps, steps_per_epoch)))
        return state, jax.tree.map(jnp.mean, metrics)

    return epoch


def make_tvae_sample(dec_def, layout: TableLayout, *, latent_dim: int, numeric_activation: str,
                     categorical: str = "argmax", mesh=None):
    """``sample(decoder, key, batch) -> rows [batch, dense_dim]`` with hard one-hot blocks.

    With a ``mesh`` the rows are split over its devices (``batch`` a multiple of its size); the
    values do not depend on it.
    """

    def sample(dec, key, batch: int):
        k_z, k_num, k_cat = jax.random.split(key, 3)
        z = constrain_rows(jax.random.normal(k_z, (batch, latent_dim), jnp.float32), mesh)
        x_hat = apply(dec_def, dec, z)
        k = layout.num_numeric
        num = jnp.tanh(x_hat[:, :k]) if numeric_activation == "tanh" else x_hat[:, :k]
        num = num + dec["sigma"][...] * jax.random.normal(k_num, num.shape, num.dtype)
        if categorical == "sample":
            rows = activate(x_hat, layout, k_cat, numeric_activation="identity", hard=True)
            return constrain_rows(rows.at[:, :k].set(num), mesh)
        blocks = [jax.nn.one_hot(jnp.argmax(b, -1), b.shape[-1]) for b in split_onehot(x_hat[:, k:], layout)]
        return constrain_rows(jnp.concatenate([num] + blocks, axis=-1), mesh)

    return sample


TVAE_DEFAULTS = dict(epochs=300, batch_size=500, latent_dim=128, encoder_dims=(128, 128),
                     decoder_dims=(128, 128), lr=1e-3, weight_decay=1e-5, loss_factor=2.0,
                     categorical="argmax", checkpoint_every=50, preprocessor=None)


@register("tvae")
class TVAE(Synthesizer):
    """TVAE estimator: ``TVAE(epochs=300, batch_size=500, latent_dim=128, encoder_dims=(128, 128),
    decoder_dims=(128, 128), lr=1e-3, weight_decay=1e-5, loss_factor=2.0, categorical="argmax",
    checkpoint_every=50, preprocessor=None)``.

    ``preprocessor`` is a dict of :class:`~tabdiff_jax.preprocess.Preprocessor` options; the
    default is mode-specific normalisation, as in TVAE.
    """

    preprocessor_options = {"numeric": "mode_specific"}

    def __init__(self, **config):
        self.settings = resolve_config(TVAE_DEFAULTS, config, "TVAE")
        if self.settings["categorical"] not in ("argmax", "sample"):
            raise ConfigError(f"categorical must be 'argmax' or 'sample', got {self.settings['categorical']!r}")
        for name in ("epochs", "batch_size", "latent_dim", "checkpoint_every"):
            if int(self.settings[name]) < (0 if name == "epochs" else 1):
                raise ConfigError(f"{name} must be a positive integer, got {self.settings[name]!r}")
        super().__init__(**config)

    @property
    def _numeric_activation(self) -> str:
        options = {**self.preprocessor_options, **(self.settings["preprocessor"] or {})}
        return numeric_activation_for(options.get("numeric", "quantile"))

    def _build(self, layout: TableLayout, key: jax.Array):
        s = self.settings
        k_enc, k_dec = jax.random.split(key)
        enc = Encoder(layout.dense_dim, s["encoder_dims"], s["latent_dim"], rngs=nnx.Rngs(params=k_enc))
        dec = Decoder(s["latent_dim"], s["decoder_dims"], layout.dense_dim, layout.num_numeric,
                      rngs=nnx.Rngs(params=k_dec))
        (self._enc_def, enc_params), (self._dec_def, dec_params) = nnx.split(enc), nnx.split(dec)
        self._layout, self._sample_fn = layout, None
        return enc_params, dec_params

    def _fit(self, df, encoded, key, *, run_dir, resume, progress, epochs=None, steps=None, batch_size=None):
        """``epochs`` / ``batch_size`` override the options for this fit; ``steps`` (updates, the
        command line's ``--steps``) is rounded up to whole epochs."""
        s = self.settings
        layout = encoded.layout
        data = to_dense(encoded)
        n = data.shape[0]
        batch = min(int(s["batch_size"] if batch_size is None else batch_size), n)
        if batch < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
        steps_per_epoch = max(n // batch, 1)
        mesh = auto_mesh()  # data parallelism over all local devices; None on one device
        if mesh is not None and batch < mesh.size:
            mesh = None  # too few rows to split
        if mesh is not None:
            batch -= batch % mesh.size
        num_epochs = epochs_from(s["epochs"], epochs, steps, steps_per_epoch)
        steps = steps_per_epoch
        k_init, k_train = jax.random.split(key)
        enc, dec = self._build(layout, k_init)
        tx = make_optimizer("adam", s["lr"], betas=(0.9, 0.999), weight_decay=s["weight_decay"])
        state = TVAEState(enc, dec, tx.init((enc, dec)), jnp.zeros((), jnp.int32))
        epoch = jax.jit(make_tvae_epoch(self._enc_def, self._dec_def, layout, tx, batch_size=batch,
                                        steps_per_epoch=steps, numeric_activation=self._numeric_activation,
                                        loss_factor=float(s["loss_factor"]), mesh=mesh), donate_argnums=0)
        data, state = replicate((data, state), mesh)
        timer = EpochTimer(lambda st, k: epoch(st, data, k))
        state, history = run_training(timer, state, num_steps=num_epochs, key=k_train,
                                      run_dir=run_dir, checkpoint_every=int(s["checkpoint_every"]), resume=resume,
                                      progress=progress, desc="TVAE epochs", log_every=1)
        self._decoder, self._encoder = state.decoder, state.encoder
        self.fit_info = {"epochs": int(state.step) // steps, "steps_per_epoch": steps, "batch_size": batch,
                         **timer.summary(),
                         "history": [(int(e), m) for e, m in history[-20:]]}

    def _sample(self, n, key, *, batch_size: int = 4096):
        layout = self._layout
        mesh = auto_mesh()  # rows of each chunk split over all local devices
        sample = self._sampler(mesh)
        chunk = min(int(batch_size), n)
        padded = round_up(chunk, mesh)  # split evenly, then trimmed
        rows = [sample(self._decoder, jax.random.fold_in(key, i), padded)[:chunk] for i in range(-(-n // chunk))]
        rows = jnp.concatenate(rows, axis=0)[:n]
        return self.preprocessor.decode(from_dense(rows, layout))

    def _sampler(self, mesh=None):
        if getattr(self, "_sample_fn", None) is None:
            fn = make_tvae_sample(self._dec_def, self._layout, latent_dim=int(self.settings["latent_dim"]),
                                  numeric_activation=self._numeric_activation, categorical=self.settings["categorical"],
                                  mesh=mesh)
            self._sample_fn = jax.jit(fn, static_argnums=2)
        return self._sample_fn

    def _get_state(self):
        return {"layout": self._layout.to_json()}, {**tree_to_arrays(self._encoder, "encoder"),
                                                    **tree_to_arrays(self._decoder, "decoder")}

    def _set_state(self, meta, arrays):
        layout = TableLayout.from_json(meta["layout"])
        enc, dec = self._build(layout, jax.random.key(0))
        self._encoder = arrays_to_tree(enc, arrays, "encoder")
        self._decoder = arrays_to_tree(dec, arrays, "decoder")
