"""The TabDDPM denoiser (Kotelnikov et al. 2023): an MLP over ``[x_num | one-hot x_cat]`` in Flax NNX.

Built from :mod:`tabdiff_jax.layers` (so the privacy module's per-example gradient tape sees every
layer). The forward pass is pure: dropout draws from an explicit ``dropout_key``, and without one
the network is deterministic. Hand it to ``jax.jit`` / ``jax.grad`` as ``(graphdef, params)``::

    model = TabDDPMDenoiser(d_in=10, d_out=10, rngs=nnx.Rngs(0))
    graphdef, params = split_params(model)
    out = apply_denoiser(graphdef, params, x, t, y)     # [n, d_out]
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.layers import Embed, Linear

DEFAULT_HIDDEN_DIMS = (256, 256)
DEFAULT_DIM_T = 128


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding ``[cos(t f_i) | sin(t f_i)]``, ``f_i = max_period^(-i / (dim/2))``.

    Args:
      t: timesteps ``[*batch]`` (int or float).
      dim: embedding width (an odd ``dim`` gets a trailing zero).

    Returns:
      float32 ``[*batch, dim]``.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(t, jnp.float32)[..., None] * freqs
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros(emb.shape[:-1] + (1,), emb.dtype)], axis=-1)
    return emb


def dropout(x: jax.Array, rate: float, key: Optional[jax.Array]) -> jax.Array:
    """Inverted dropout with an explicit key; the identity when ``key`` is None or ``rate`` is 0."""
    if key is None or rate <= 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


class PeriodicEmbedding(nnx.Module):
    """Periodic embeddings of numeric inputs (Gorishniy et al. 2022, "On Embeddings for Numerical Features
    in Tabular Deep Learning": PLR, the "lite" form with one output layer shared by the features).

    Feature ``j`` of ``x [n, d]`` becomes ``relu(W [cos(2 pi c_j x_j) | sin(2 pi c_j x_j)] + b)`` of width
    ``dim``, with ``frequencies`` trainable coefficients ``c_j ~ N(0, scale^2)`` per feature. Every
    parameter lives in a :class:`~tabdiff_jax.layers.Linear` (one ``1 x frequencies`` map per feature,
    without bias, then the shared ``2 frequencies x dim`` one), so book-keeping clipping sees them all.

    Returns ``[n, d * dim]`` (feature-major).
    """

    def __init__(self, count: int, *, frequencies: int = 48, scale: float = 1.0, dim: int = 24, rngs: nnx.Rngs):
        if count < 1 or frequencies < 1 or dim < 1 or not scale > 0:
            raise ConfigError(f"periodic embedding needs count, frequencies, dim >= 1 and scale > 0, got "
                              f"{count}, {frequencies}, {dim}, {scale}")
        self.count, self.dim = int(count), int(dim)
        self.coefficients = nnx.List([Linear(1, frequencies, use_bias=False, rngs=rngs) for _ in range(count)])
        for layer in self.coefficients:  # N(0, scale^2) as the paper, not the uniform of a Linear
            layer.kernel = nnx.Param(float(scale) * jax.random.normal(rngs.params(), (1, frequencies), jnp.float32))
        self.out = Linear(2 * frequencies, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        v = 2.0 * math.pi * jnp.stack([layer(x[:, j:j + 1]) for j, layer in enumerate(self.coefficients)], axis=1)
        h = jax.nn.relu(self.out(jnp.concatenate([jnp.cos(v), jnp.sin(v)], axis=-1)))  # [n, d, dim]
        return h.reshape(x.shape[0], self.count * self.dim)


class TabDDPMDenoiser(nnx.Module):
    """TabDDPM's ``MLPDiffusion``.

    ``h = proj(x) + time_mlp(sinusoidal(t)) [+ silu(label_embed(y))]``, then blocks
    ``Linear -> ReLU -> Dropout`` of widths ``hidden_dims``, then a final ``Linear`` to ``d_out``.

    Args:
      d_in: input width (numeric columns plus the one-hot width).
      d_out: output width (noise for the numbers plus one logit per category).
      num_classes: classes of the label condition (0: unconditional).
      hidden_dims: widths of the hidden blocks.
      dim_t: width of the input projection and the time / label embeddings (128 in TabDDPM).
      dropout_rate: dropout after each hidden block (active only with a ``dropout_key``).
      matmul_dtype: None (float32 matmuls) or "bfloat16" (operands in bfloat16, float32
        accumulation and parameters: faster on GPUs and TPUs, not on most CPUs).
      numeric_embedding: None, or the keyword options of :class:`PeriodicEmbedding` (``count``: the first
        ``count`` input columns are numbers; ``frequencies``, ``scale``, ``dim``): their periodic embeddings
        join the input (``proj`` then reads ``[x | embeddings of x[:, :count]]``).
      rngs: parameter initialisation keys.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        num_classes: int = 0,
        hidden_dims: Sequence[int] = DEFAULT_HIDDEN_DIMS,
        dim_t: int = DEFAULT_DIM_T,
        dropout_rate: float = 0.0,
        matmul_dtype: Optional[str] = None,
        numeric_embedding: Optional[dict] = None,
        rngs: nnx.Rngs,
    ):
        hidden_dims = tuple(int(w) for w in hidden_dims)
        if d_in < 1 or d_out < 1:
            raise ConfigError(f"d_in and d_out must be >= 1, got {d_in}, {d_out}")
        if not hidden_dims or any(w < 1 for w in hidden_dims):
            raise ConfigError(f"hidden_dims must be a non-empty list of positive widths, got {hidden_dims}")
        if not 0.0 <= dropout_rate < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout_rate}")
        self.dim_t, self.num_classes, self.dropout_rate = int(dim_t), int(num_classes), float(dropout_rate)
        md = dict(matmul_dtype=matmul_dtype)
        self.embed_numbers = PeriodicEmbedding(**numeric_embedding, rngs=rngs) if numeric_embedding else None
        if self.embed_numbers is not None and self.embed_numbers.count > d_in:
            raise ConfigError(f"numeric_embedding count {self.embed_numbers.count} exceeds d_in {d_in}")
        extra = 0 if self.embed_numbers is None else self.embed_numbers.count * self.embed_numbers.dim
        self.proj = Linear(d_in + extra, dim_t, rngs=rngs, **md)
        self.time_in = Linear(dim_t, dim_t, rngs=rngs, **md)
        self.time_out = Linear(dim_t, dim_t, rngs=rngs, **md)
        self.label_embed = Embed(num_classes, dim_t, rngs=rngs) if num_classes > 0 else None
        widths = (dim_t,) + hidden_dims
        self.blocks = nnx.List([Linear(a, b, rngs=rngs, **md) for a, b in zip(widths[:-1], widths[1:])])
        self.head = Linear(widths[-1], d_out, rngs=rngs, **md)

    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        y: Optional[jax.Array] = None,
        *,
        dropout_key: Optional[jax.Array] = None,
        time_table: Optional[int] = None,
        time_rows: Optional[jax.Array] = None,
    ) -> jax.Array:
        """Denoise one batch.

        Args:
          x: noisy input ``[n, d_in]``.
          t: timesteps ``[n]`` (0-indexed), or ``[1]`` for one timestep shared by every row
            (the sampler's case: the time embedding is then computed once).
          y: class labels int ``[n]`` (required iff ``num_classes > 0``).
          dropout_key: PRNG key for dropout; None means no dropout (evaluation / sampling).
          time_table: ``T``: embed all timesteps ``0 .. T - 1`` once and look the rows' up (the
            same values; cheaper when ``n`` exceeds ``T``, as in a training batch of 4,096 rows
            with ``T`` = 1000: the time MLP runs on ``T`` rows instead of ``n``).
          time_rows: int ``[n]``: ``t`` then holds ``K`` times, embedded once, and row ``i`` reads
            ``t[time_rows[i]]``'s (TabDiff's training with shared times: the time MLP runs on ``K`` rows).

        Returns:
          ``[n, d_out]``: predicted noise for the numbers, then the logits of each block.
        """
        if time_table is not None:
            emb = jnp.take(self.time_embedding(jnp.arange(int(time_table))), t, axis=0, mode="clip")
        elif time_rows is not None:
            emb = jnp.take(self.time_embedding(t), time_rows, axis=0)
        else:
            emb = self.time_embedding(t)
        if self.label_embed is not None:
            emb = emb + self.label_embedding(y)
        return self.trunk(x, emb, dropout_key=dropout_key)

    def time_embedding(self, t: jax.Array) -> jax.Array:
        """``[n or 1, dim_t]``: the sinusoidal embedding of ``t`` through the time MLP."""
        return self.time_out(jax.nn.silu(self.time_in(timestep_embedding(t, self.dim_t))))

    def label_embedding(self, y: Optional[jax.Array]) -> jax.Array:
        """``[n, dim_t]``: ``silu`` of the label embedding (the sampler computes it once per chunk)."""
        if y is None:
            raise ConfigError("y is required: the denoiser was built with a class condition")
        return jax.nn.silu(self.label_embed(y))

    def expand(self, x: jax.Array) -> jax.Array:
        """The input ``proj`` reads: ``x``, with the numbers' periodic embeddings appended if any."""
        if self.embed_numbers is None:
            return x
        return jnp.concatenate([x, self.embed_numbers(x[:, : self.embed_numbers.count])], axis=-1)

    def trunk(self, x: jax.Array, emb: jax.Array, *, dropout_key: Optional[jax.Array] = None) -> jax.Array:
        """``head(blocks(proj(expand(x)) + emb))``: everything after the conditioning."""
        h = self.proj(self.expand(x)) + emb
        keys = jax.random.split(dropout_key, len(self.blocks)) if dropout_key is not None else [None] * len(self.blocks)
        for layer, k in zip(self.blocks, keys):
            h = dropout(jax.nn.relu(layer(h)), self.dropout_rate, k)
        return self.head(h)

    def conditioned(self, y: Optional[jax.Array] = None) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """``denoise(x, t)`` for fixed labels ``y`` and one timestep ``t`` (shape ``[]``) at a time: the sampler's form.

        The same function as ``self(x, t[None], y)`` (to float rounding), arranged for a chain
        of calls: the label embedding is computed once, and when it saves work the input
        projection is folded into the first block (``relu((x Wp + bp + e) W1 + b1)`` =
        ``relu(x (Wp W1) + (bp + e) W1 + b1)``: one ``d_in x w1`` product per call instead of
        ``d_in x dim_t`` and ``dim_t x w1``).
        """
        label = self.label_embedding(y) if self.label_embed is not None else 0.0
        first = self.blocks[0]
        d_in, width = self.proj.in_features, first.out_features
        if self.proj.matmul_dtype is not None or d_in * width >= self.dim_t * (d_in + width):
            return lambda x, t: self.trunk(x, self.time_embedding(t[None]) + label)
        w1 = first.kernel[...]
        w_in = self.proj.kernel[...] @ w1  # [d_in, w1]
        base = (self.proj.bias[...] + label) @ w1 + first.bias[...]  # [n or 1, w1], once per chain

        def denoise(x, t):
            h = jax.nn.relu(self.expand(x) @ w_in + base + self.time_embedding(t[None]) @ w1)
            for layer in self.blocks[1:]:
                h = jax.nn.relu(layer(h))
            return self.head(h)

        return denoise


def apply_denoiser(graphdef, params: dict, x, t, y=None, *, dropout_key=None,
                   num_timesteps: Optional[int] = None) -> jax.Array:
    """Pure forward pass of a split denoiser: ``nnx.merge(graphdef, params)(x, t, y, dropout_key=...)``.

    With ``num_timesteps`` (``T``) and more rows than ``T``, a :class:`TabDDPMDenoiser` embeds the
    ``T`` timesteps once and looks each row's up (its ``time_table``). Not for per-example
    gradients: each example's gradient would then carry the whole table's.
    """
    model = nnx.merge(graphdef, params)
    if num_timesteps is not None and isinstance(model, TabDDPMDenoiser) and x.shape[0] > int(num_timesteps):
        return model(x, t, y, dropout_key=dropout_key, time_table=int(num_timesteps))
    return model(x, t, y, dropout_key=dropout_key)
