"""TableDiffusion's pure core (Truda 2023): the noise predictor, the all-levels loss, the sampler.

A few noise levels (``T = 3..5``) with the schedule ``beta_t = (1 - cos(pi t / T)) / 2 + 0.1``
(:func:`tabdiff_jax.diffusion.schedules.tablediffusion_betas`); the noisy row at level ``t`` is
``x_t = x_0 + sqrt(beta_t) eps`` on the dense encoding ``[numeric | one-hot]``, and a residual MLP
with LayerNorm (which never mixes examples) predicts ``eps``. The loss of one example averages the
noise-prediction MSE over *all* ``T`` levels, so a batch is exactly one DP-SGD step.

The estimator is :class:`tabdiff_jax.models.tablediffusion.TableDiffusion`.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tabdiff_jax.diffusion.schedules import tablediffusion_betas
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.layers import LayerNorm, Linear
from tabdiff_jax.sharding import constrain_rows
from tabdiff_jax.table import EncodedTable, TableLayout, from_dense, split_onehot


class ResidualBlock(nnx.Module):
    """``concat([relu(LayerNorm(x W + b)), x])``: width grows by ``features`` (CTGAN-style residual)."""

    def __init__(self, in_features: int, features: int, *, rngs: nnx.Rngs):
        self.linear = Linear(in_features, features, rngs=rngs)
        self.norm = LayerNorm(features)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.concatenate([jax.nn.relu(self.norm(self.linear(x))), x], axis=-1)


class TableDiffusionNet(nnx.Module):
    """The noise predictor: residual blocks then a linear head, on ``[..., in_features]`` inputs.

    Args:
      in_features: data width plus the conditioning width (1 with ``time_conditioning``).
      out_features: data width ``d``.
      hidden_dims: widths of the residual blocks.
      rngs: parameter keys.
    """

    def __init__(self, in_features: int, out_features: int, hidden_dims: Sequence[int] = (256, 256), *,
                 rngs: nnx.Rngs):
        dims = tuple(int(h) for h in hidden_dims)
        if in_features < 1 or out_features < 1 or not dims or min(dims) < 1:
            raise ConfigError(f"hidden_dims must be positive widths, got {hidden_dims!r}")
        blocks, width = [], in_features
        for h in dims:
            blocks.append(ResidualBlock(width, h, rngs=rngs))
            width += h
        self.blocks = nnx.List(blocks)
        self.head = Linear(width, out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _with_condition(x: jax.Array, scale: jax.Array, time_conditioning: bool) -> jax.Array:
    if not time_conditioning:
        return x
    return jnp.concatenate([x, jnp.broadcast_to(scale, x.shape[:-1] + (1,)).astype(x.dtype)], axis=-1)


def make_loss(num_timesteps: int, time_conditioning: bool = True):
    """Per-example loss ``(model, x [B, d], keys [B]) -> [B]``: eps-MSE averaged over all levels.

    Row ``i`` draws its noise ``[T, d]`` from ``keys[i]`` only, so the loss is separable per
    example, as DP-SGD (and the ghost-vs-vmap comparison) requires.
    """
    scales = jnp.sqrt(jnp.asarray(tablediffusion_betas(num_timesteps), jnp.float32))  # [T]

    def loss_fn(model, x, keys):
        eps = jax.vmap(lambda k: jax.random.normal(k, (scales.shape[0], x.shape[-1]), x.dtype))(keys)
        xt = x[:, None, :] + scales[None, :, None] * eps  # [B, T, d]
        pred = model(_with_condition(xt, scales[None, :, None], time_conditioning))
        return jnp.mean(jnp.square(pred - eps), axis=(1, 2))

    return loss_fn


def make_sampler(graphdef, num_timesteps: int, data_dim: int, time_conditioning: bool = True, mesh=None):
    """``sample(params, row_keys [n]) -> [n, d]`` dense rows, denoising top level first.

    Row ``i`` draws its starting noise from ``fold_in(row_keys[i], 0)`` and the noise of level ``t``
    from ``fold_in(row_keys[i], t + 1)``, so it depends on its key only (not on ``n`` or the other
    rows). With a ``mesh`` the rows are split over its devices (``n`` a multiple of its size); the
    values do not depend on it.
    """
    scales = [float(s) for s in np.sqrt(tablediffusion_betas(num_timesteps))]

    def noise(keys, i):
        return constrain_rows(jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, i), (data_dim,)))(keys), mesh)

    def sample(params, row_keys):
        model = nnx.merge(graphdef, params)
        row_keys = constrain_rows(row_keys, mesh)
        # Start at the top level: the data's unit-scale part plus that level's noise.
        x = math.sqrt(1.0 + scales[-1] ** 2) * noise(row_keys, 0)
        x0 = x
        for t in reversed(range(num_timesteps)):
            eps = model(_with_condition(x, jnp.float32(scales[t]), time_conditioning))
            x0 = x - scales[t] * eps
            if t > 0:
                x = constrain_rows(x0 + scales[t - 1] * noise(row_keys, t + 1), mesh)
        return constrain_rows(x0, mesh)

    return sample


def decode_categories(x: jax.Array, layout: TableLayout, row_keys: jax.Array, categorical: str = "sample"):
    """Dense denoised rows ``[n, d]`` -> :class:`EncodedTable`, drawing each category block.

    ``"argmax"`` (default) takes the largest entry of each one-hot block, as the reference's
    inverse one-hot encoding does; it favours majority categories. ``"sample"`` treats the block
    (clipped at 0, normalised) as the probabilities ``E[onehot | x_t]`` of a posterior-mean denoiser
    and draws from them (row ``i``, block ``j`` with ``fold_in(row_keys[i], j)``): marginal
    frequencies come out closer, but on Adult at epsilon 5 it lowered the shape and trend scores
    (0.755 / 0.700 against 0.800 / 0.780) and the utility.
    """
    if categorical == "argmax" or layout.num_categorical == 0:
        return from_dense(x, layout)
    numeric = x[:, :layout.num_numeric]
    codes = []
    for j, block in enumerate(split_onehot(x[:, layout.num_numeric:], layout)):
        p = jnp.clip(block, 0.0, None)
        total = jnp.sum(p, axis=-1, keepdims=True)
        p = jnp.where(total > 0, p / jnp.maximum(total, 1e-12), jax.nn.one_hot(jnp.argmax(block, -1), block.shape[-1]))
        logp = jnp.log(jnp.maximum(p, 1e-30))
        codes.append(jax.vmap(lambda k, lp, j=j: jax.random.categorical(jax.random.fold_in(k, j), lp))(row_keys, logp))
    return EncodedTable(numeric=numeric.astype(jnp.float32), categorical=jnp.stack(codes, -1).astype(jnp.int32),
                        layout=layout)
