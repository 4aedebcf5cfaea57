"""A column-tokenised transformer denoiser (the backbone of the TabDiff paper), in Flax NNX.

Each column of the table is one token of width ``d_token``:

* numeric column ``j``: ``x_j w_j + b_j`` (its own ``Linear(1, d_token)``);
* categorical block ``b``: its (masked) one-hot of width ``K_b + 1`` through its own
  ``Linear(K_b + 1, d_token)``: an embedding of each category and of the ``[MASK]`` state, taken as a
  product so that the straight-through masks of TabDiff's loss stay differentiable.

The time embedding (sinusoidal, then ``Linear -> SiLU -> Linear`` to ``d_token``) is added to every
token; ``layers`` pre-norm blocks ``h + Attention(LN(h))``, ``h + MLP(LN(h))`` (multi-head
self-attention over the column tokens of one row; the MLP widens by ``ffn_factor``) mix the columns;
after a final LayerNorm, each token has its own head: one value for a numeric column, ``K_b`` logits
for a block. With ``layers = 0`` every output column depends on its own input column and the time only.

Unlike the official code (a tokenizer, a transformer encoder, TabDDPM's MLP over the flattened tokens
with the time, a transformer decoder, a reconstructor), the time enters the tokens and no MLP sees the
flattened row: the transformer is the whole network. Every parameter belongs to a
:mod:`tabdiff_jax.layers` layer called on inputs that lead with the example axis, so both per-example
clipping paths of :mod:`tabdiff_jax.privacy` (vmap and book-keeping) apply; rows never mix.

Example:
  >>> net = ColumnTransformer(num_numeric=2, masked_sizes=(4, 3), rngs=nnx.Rngs(0))
  >>> out = net(x, t)   # x [n, 2 + 4 + 3], t [n] or [1] -> [n, 2 + 3 + 2]
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from tabdiff_jax.diffusion.denoiser import DEFAULT_DIM_T, dropout, timestep_embedding
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.layers import LayerNorm, Linear

DEFAULT_D_TOKEN = 32
DEFAULT_LAYERS = 2
DEFAULT_HEADS = 4
DEFAULT_FFN_FACTOR = 2


class TransformerBlock(nnx.Module):
    """Pre-norm ``h + Attention(LN(h))`` then ``h + W2 relu(W1 LN(h))`` over tokens ``[n, T, d_token]``."""

    def __init__(self, d_token: int, heads: int, ffn_factor: int, *, matmul_dtype: Optional[str], rngs: nnx.Rngs):
        md = dict(matmul_dtype=matmul_dtype)
        self.heads = int(heads)
        self.norm_attention = LayerNorm(d_token)
        self.qkv = Linear(d_token, 3 * d_token, rngs=rngs, **md)
        self.attention_out = Linear(d_token, d_token, rngs=rngs, **md)
        self.norm_ffn = LayerNorm(d_token)
        self.ffn_in = Linear(d_token, ffn_factor * d_token, rngs=rngs, **md)
        self.ffn_out = Linear(ffn_factor * d_token, d_token, rngs=rngs, **md)

    def attention(self, h: jax.Array) -> jax.Array:
        """Multi-head self-attention among the tokens of each row: ``[n, T, d] -> [n, T, d]``."""
        n, num_tokens, d = h.shape
        q, k, v = jnp.split(self.qkv(h).reshape(n, num_tokens, 3 * self.heads, d // self.heads), 3, axis=2)
        scores = jnp.einsum("nqhc,nkhc->nhqk", q, k) / math.sqrt(d // self.heads)
        mixed = jnp.einsum("nhqk,nkhc->nqhc", jax.nn.softmax(scores, axis=-1), v)
        return self.attention_out(mixed.reshape(n, num_tokens, d))

    def __call__(self, h: jax.Array, *, rate: float = 0.0, dropout_key: Optional[jax.Array] = None) -> jax.Array:
        h = h + self.attention(self.norm_attention(h))
        return h + self.ffn_out(dropout(jax.nn.relu(self.ffn_in(self.norm_ffn(h))), rate, dropout_key))


class ColumnTransformer(nnx.Module):
    """A transformer over column tokens with the call interface of :class:`~tabdiff_jax.diffusion.denoiser.TabDDPMDenoiser`
    (no label input): ``net(x [n, d_in], t [n] or [1]) -> [n, d_out]``.

    Args:
      num_numeric: numeric columns ``d`` (the first ``d`` inputs and outputs).
      masked_sizes: input width of each categorical block (its categories plus the mask state).
      out_sizes: output logits of each block (default: ``masked_sizes`` less one, TabDiff's real categories).
      d_token: token width (divisible by ``heads``).
      layers: transformer blocks (0: no mixing of columns).
      heads: attention heads.
      ffn_factor: the blocks' MLP width is ``ffn_factor * d_token``.
      dim_t: width of the sinusoidal time embedding.
      dropout_rate: dropout inside each block's MLP (active only with a ``dropout_key``).
      matmul_dtype: None or "bfloat16" (as :class:`~tabdiff_jax.layers.Linear`).
      rngs: parameter initialisation keys.

    Raises:
      ConfigError: a size that is not positive, or ``d_token`` not divisible by ``heads``.
    """

    def __init__(self, num_numeric: int, masked_sizes: Sequence[int], *, out_sizes: Optional[Sequence[int]] = None,
                 d_token: int = DEFAULT_D_TOKEN, layers: int = DEFAULT_LAYERS, heads: int = DEFAULT_HEADS,
                 ffn_factor: int = DEFAULT_FFN_FACTOR, dim_t: int = DEFAULT_DIM_T, dropout_rate: float = 0.0,
                 matmul_dtype: Optional[str] = None, rngs: nnx.Rngs):
        masked_sizes = tuple(int(k) for k in masked_sizes)
        out_sizes = tuple(k - 1 for k in masked_sizes) if out_sizes is None else tuple(int(k) for k in out_sizes)
        d_token, layers, heads = int(d_token), int(layers), int(heads)
        if num_numeric < 0 or num_numeric + len(masked_sizes) == 0 or len(out_sizes) != len(masked_sizes):
            raise ConfigError(f"need at least one column and one output size per block, got {num_numeric} numeric "
                              f"columns, blocks {masked_sizes} -> {out_sizes}")
        for name, value, least in (("d_token", d_token, 1), ("layers", layers, 0), ("heads", heads, 1),
                                   ("ffn_factor", ffn_factor, 1), ("dim_t", dim_t, 2)):
            if value < least:
                raise ConfigError(f"{name} must be an integer >= {least}, got {value}")
        if d_token % heads:
            raise ConfigError(f"d_token ({d_token}) must be divisible by heads ({heads})")
        if not 0.0 <= dropout_rate < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout_rate}")
        md = dict(matmul_dtype=matmul_dtype)
        self.num_numeric, self.masked_sizes, self.out_sizes = int(num_numeric), masked_sizes, out_sizes
        self.d_token, self.dim_t, self.dropout_rate = d_token, int(dim_t), float(dropout_rate)
        widths = (1,) * self.num_numeric + masked_sizes  # each token's input width
        self.tokenizers = nnx.List([Linear(w, d_token, rngs=rngs, **md) for w in widths])
        self.time_in = Linear(self.dim_t, d_token, rngs=rngs, **md)
        self.time_out = Linear(d_token, d_token, rngs=rngs, **md)
        self.blocks = nnx.List([TransformerBlock(d_token, heads, int(ffn_factor), rngs=rngs, **md)
                                for _ in range(layers)])
        self.norm_out = LayerNorm(d_token)
        self.outputs = nnx.List([Linear(d_token, w, rngs=rngs, **md) for w in (1,) * self.num_numeric + out_sizes])

    @property
    def d_in(self) -> int:
        return self.num_numeric + sum(self.masked_sizes)

    @property
    def d_out(self) -> int:
        return self.num_numeric + sum(self.out_sizes)

    def time_embedding(self, t: jax.Array) -> jax.Array:
        """``[n or 1, d_token]``: the sinusoidal embedding of ``t`` through the time MLP."""
        return self.time_out(jax.nn.silu(self.time_in(timestep_embedding(t, self.dim_t))))

    def tokens(self, x: jax.Array) -> jax.Array:
        """Column tokens ``[n, T, d_token]`` of inputs ``[n, d_in]`` (``T``: numeric columns plus blocks)."""
        if x.shape[-1] != self.d_in:
            raise ConfigError(f"the transformer expects inputs of width {self.d_in}, got {x.shape[-1]}")
        bounds = [0]
        for width in (1,) * self.num_numeric + self.masked_sizes:
            bounds.append(bounds[-1] + width)
        return jnp.stack([layer(x[:, a:b]) for layer, a, b in zip(self.tokenizers, bounds[:-1], bounds[1:])], axis=1)

    def __call__(self, x: jax.Array, t: jax.Array, y: Optional[jax.Array] = None, *,
                 dropout_key: Optional[jax.Array] = None, time_rows: Optional[jax.Array] = None) -> jax.Array:
        """Denoise one batch: ``x [n, d_in]``, ``t [n]`` or ``[1]`` (shared) -> ``[n, d_out]`` (the numbers'
        outputs, then each block's logits); ``time_rows [n]``: ``t`` holds ``K`` times, row ``i`` reads
        ``t[time_rows[i]]`` (as :class:`~tabdiff_jax.diffusion.denoiser.TabDDPMDenoiser`). ``y`` must be None."""
        if y is not None:
            raise ConfigError("the column transformer takes no label input (y)")
        emb = self.time_embedding(t)
        if time_rows is not None:
            emb = jnp.take(emb, time_rows, axis=0)
        h = self.tokens(x) + emb[:, None, :]
        keys = (jax.random.split(dropout_key, len(self.blocks)) if dropout_key is not None
                else [None] * len(self.blocks))
        for block, key in zip(self.blocks, keys):
            h = block(h, rate=self.dropout_rate, dropout_key=key)
        h = self.norm_out(h)
        return jnp.concatenate([head(h[:, i]) for i, head in enumerate(self.outputs)], axis=-1)

    def conditioned(self, y: Optional[jax.Array] = None) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """``denoise(x, t)`` with one timestep ``t`` (shape ``[]``) at a time: the sampler's form (``y``: None)."""
        if y is not None:
            raise ConfigError("the column transformer takes no label input (y)")
        return lambda x, t: self(x, t[None])
