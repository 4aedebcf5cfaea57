"""Generator and critic MLPs of the GAN family, and the generator's output activation.

The networks are Flax NNX modules built from :mod:`tabdiff_jax.layers` (so that the privacy
module's book-keeping clipping can see every ``Linear``); the training code never calls them
directly but through :func:`apply`, a pure function of ``(graphdef, params, *inputs)``.

* :class:`Generator`: noise ``[batch, noise_dim]`` and condition indices ``[batch]`` -> raw outputs
  ``[batch, layout.dense_dim]``.
  Plain (``Linear -> ReLU`` per hidden layer, the GAN talk's 128-256-512) or residual as CTGAN
  (``Linear -> LayerNorm -> ReLU`` concatenated with its input; LayerNorm replaces CTGAN's
  BatchNorm so that no statistic mixes examples).
* :class:`Critic`: ``[batch, data_dim + cond_dim]`` -> scores ``[batch // pac]``; with PacGAN
  packing (Lin et al. 2018) ``pac`` consecutive rows are concatenated into one critic input.
* :func:`activate`: numbers through ``tanh`` or identity, every one-hot block through a
  Gumbel-softmax (training) or a hard Gumbel-max one-hot (sampling).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from tabdiff_jax.blocks import block_softmax, hard_onehot
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.layers import Embed, LayerNorm, Linear, linear_stack
from tabdiff_jax.table import TableLayout

NUMERIC_ACTIVATIONS = ("tanh", "identity")
LEAKY_SLOPE = 0.2


class Generator(nnx.Module):
    """Noise (and condition) to raw generator outputs in the dense layout.

    The condition enters as an index into ``cond_dim`` one-hot slots. Multiplying a one-hot
    vector by a kernel selects one of its rows, so every layer that would see the one-hot
    condition (the first, and with ``residual`` all of them, through the concatenations) holds
    those rows as an ``Embed`` table and adds the looked-up row: the same function as a
    ``Linear`` on ``[x, one_hot(cond)]`` (initialised like it), without the multiplications by zero.

    Args:
      noise_dim: noise dimension.
      hidden_dims: widths of the hidden layers.
      out_features: ``layout.dense_dim``.
      cond_dim: number of one-hot condition slots (0: unconditional).
      residual: CTGAN's residual layers (each hidden output concatenated with its input).
      rngs: parameter initialisation keys.
    """

    def __init__(self, noise_dim: int, hidden_dims: Sequence[int], out_features: int, *, cond_dim: int = 0,
                 residual: bool = False, rngs: nnx.Rngs):
        self.residual, self.cond_dim = bool(residual), int(cond_dim)
        layers, norms, tables, dim = [], [], [], int(noise_dim)
        widths = [int(w) for w in hidden_dims] + [int(out_features)]
        for i, width in enumerate(widths):
            last = i == len(widths) - 1
            layer = Linear(dim, width, rngs=rngs)
            if self.cond_dim and (i == 0 or self.residual):
                table = Embed(self.cond_dim, width, rngs=rngs)
                bound = 1.0 / math.sqrt(dim + self.cond_dim)  # the fan-in of the equivalent Linear
                layer.kernel = nnx.Param(jax.random.uniform(rngs.params(), (dim, width), jnp.float32, -bound, bound))
                layer.bias = nnx.Param(jax.random.uniform(rngs.params(), (width,), jnp.float32, -bound, bound))
                table.embedding = nnx.Param(jax.random.uniform(rngs.params(), (self.cond_dim, width), jnp.float32,
                                                               -bound, bound))
                tables.append(table)
            else:
                tables.append(None)
            if last:
                self.out = layer
            else:
                layers.append(layer)
                if self.residual:
                    norms.append(LayerNorm(width))
                dim = dim + width if self.residual else width
        self.hidden = nnx.List(layers)
        self.norms = nnx.List(norms)
        self.cond_tables = nnx.List(tables)

    def _layer(self, i: int, layer, x, cond_id):
        y = layer(x)
        table = self.cond_tables[i]
        return y if table is None or cond_id is None else y + table(cond_id)

    def __call__(self, z: jax.Array, cond_id: Optional[jax.Array] = None) -> jax.Array:
        """``z [batch, noise_dim]``, ``cond_id [batch]`` int -> ``[batch, out_features]`` (before activation)."""
        x = z
        for i, layer in enumerate(self.hidden):
            h = self._layer(i, layer, x, cond_id)
            if self.residual:
                x = jnp.concatenate([jax.nn.relu(self.norms[i](h)), x], axis=-1)
            else:
                x = jax.nn.relu(h)
        return self._layer(len(self.hidden), self.out, x, cond_id)


class Critic(nnx.Module):
    """Rows (and condition) to one score per pack of ``pac`` rows.

    Args:
      in_features: data dimension plus condition-vector dimension (of one row).
      hidden_dims: widths of the hidden layers (``Linear -> LeakyReLU(0.2) -> dropout``).
      pac: rows per critic input (PacGAN); the batch must be a multiple of it.
      dropout: dropout rate after each hidden layer (CTGAN uses 0.5); applied only when a
        ``dropout_key`` is passed.
      classifier: ``(data_dim, offset, size, widths)``: also build AC-GAN's auxiliary classifier
        (:meth:`classify`), an MLP of ``widths`` from the row's other columns to the ``size`` classes of
        the block at dense ``offset`` (Odena et al. 2017); ``None``: none.
      rngs: parameter initialisation keys.
    """

    def __init__(self, in_features: int, hidden_dims: Sequence[int], *, pac: int = 1,
                 dropout: float = 0.0, classifier: Optional[tuple] = None, rngs: nnx.Rngs):
        self.pac, self.dropout = int(pac), float(dropout)
        self.row_features = int(in_features)
        self.hidden, dim = linear_stack(int(in_features) * self.pac, hidden_dims, rngs=rngs)
        self.out = Linear(dim, 1, rngs=rngs)
        self.label_slice, layers = None, None
        if classifier is not None:  # AC-GAN's auxiliary classifier: (data_dim, label offset, label size, widths)
            data_dim, offset, size, widths = classifier
            self.label_slice = (int(offset), int(size))
            hidden, width = linear_stack(int(data_dim) - int(size), widths, rngs=rngs)
            layers = nnx.List(list(hidden) + [Linear(width, int(size), rngs=rngs)])
        self.classifier = layers

    def __call__(self, x: jax.Array, dropout_key: Optional[jax.Array] = None) -> jax.Array:
        """``x [batch, in_features]`` -> scores ``[batch // pac]``."""
        x = x.reshape(x.shape[0] // self.pac, self.pac * x.shape[-1])
        for i, layer in enumerate(self.hidden):
            x = jax.nn.leaky_relu(layer(x), LEAKY_SLOPE)
            if dropout_key is not None and self.dropout > 0.0:
                keep = jax.random.bernoulli(jax.random.fold_in(dropout_key, i), 1.0 - self.dropout, x.shape)
                x = jnp.where(keep, x / (1.0 - self.dropout), 0.0)
        return self.out(x)[:, 0]

    def classify(self, rows: jax.Array) -> jax.Array:
        """AC-GAN's auxiliary classifier: rows ``[batch, data_dim]`` (dense layout, no condition vector) ->
        logits ``[batch, label size]`` of the label block, read from every other column (the block itself
        is left out). Only on a critic built with ``classifier=``."""
        if self.classifier is None:
            raise ConfigError("this critic has no auxiliary classifier (classifier_loss is 0)")
        offset, size = self.label_slice
        x = jnp.concatenate([rows[:, :offset], rows[:, offset + size:]], axis=-1)
        for layer in self.classifier[:-1]:
            x = jax.nn.leaky_relu(layer(x), LEAKY_SLOPE)
        return self.classifier[-1](x)


def apply(graphdef: nnx.GraphDef, params: nnx.State, *inputs, **kwargs):
    """Run the module ``nnx.merge(graphdef, params)`` on ``inputs`` (pure; use under jit/grad)."""
    return nnx.merge(graphdef, params)(*inputs, **kwargs)


def gumbel_softmax(key: jax.Array, logits: jax.Array, tau: float, hard: bool = False) -> jax.Array:
    """Gumbel-softmax sample ``[..., k]`` from ``logits [..., k]``.

    ``hard=True`` returns the one-hot of the Gumbel-max, an exact sample of ``softmax(logits)``.
    """
    perturbed = logits + jax.random.gumbel(key, logits.shape, logits.dtype)
    if hard:
        return hard_onehot(perturbed, (logits.shape[-1],))
    return jax.nn.softmax(perturbed / tau, axis=-1)


def activate(raw: jax.Array, layout: TableLayout, key: jax.Array, *, numeric_activation: str = "tanh",
             tau: float = 0.2, hard: bool = False) -> jax.Array:
    """Generator outputs ``[batch, dense_dim]`` -> rows in the dense layout ``[batch, dense_dim]``.

    Args:
      raw: generator outputs before activation.
      layout: the table layout (numeric block, then one one-hot block per categorical block).
      key: Gumbel noise key (one draw for all blocks).
      numeric_activation: ``"tanh"`` (min-max or mode-specific alpha) or ``"identity"``.
      tau: Gumbel-softmax temperature (CTGAN: 0.2).
      hard: hard one-hot blocks (sampling) instead of soft ones (training).
    """
    if numeric_activation not in NUMERIC_ACTIVATIONS:
        raise ConfigError(f"numeric_activation must be one of {NUMERIC_ACTIVATIONS}, got {numeric_activation!r}")
    num = raw[:, : layout.num_numeric]
    num = jnp.tanh(num) if numeric_activation == "tanh" else num
    if layout.num_categorical == 0:
        return num
    logits = raw[:, layout.num_numeric:]
    perturbed = logits + jax.random.gumbel(key, logits.shape, logits.dtype)
    if not hard:
        return jnp.concatenate([num, block_softmax(perturbed / tau, layout.categorical_sizes)], axis=-1)
    return jnp.concatenate([num, hard_onehot(perturbed, layout.categorical_sizes)], axis=-1)


def numeric_activation_for(numeric: str) -> str:
    """The output activation that matches the preprocessor's numeric transform."""
    if numeric in ("minmax", "mode_specific"):
        return "tanh"
    if numeric in ("quantile", "standard"):
        return "identity"
    raise ConfigError(f"numeric must be one of 'quantile', 'minmax', 'standard', 'mode_specific'; got {numeric!r}")
