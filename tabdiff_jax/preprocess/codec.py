"""The pure jnp halves of the preprocessor: raw arrays <-> encoded blocks.

Both functions are jitted with the static :class:`CodecPlan` (transform name and block
structure) and take the fitted statistics as a traced pytree, so every preprocessor with the same
structure and shapes shares one compiled program, and calling them inside a user's ``jax.jit``
simply inlines them.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from tabdiff_jax.preprocess.transforms import TRANSFORMS

CATEGORY_SOURCE, MODE_SOURCE, MISSING_SOURCE = "category", "mode", "missing"


class CodecPlan(NamedTuple):
    """Static structure of an encoded table (hashable).

    Attributes:
      numeric: name of the numeric transform (a key of ``TRANSFORMS``).
      blocks: for each categorical block, ``(source, index)``: ``("category", j)`` is raw code
        column ``j``; ``("mode", i)`` / ``("missing", i)`` belong to raw numeric column ``i``.
      sizes: number of codes of each categorical block.
      num_numeric: raw numeric columns (N); num_codes: raw categorical columns (K).
    """

    numeric: str
    blocks: tuple[tuple[str, int], ...]
    sizes: tuple[int, ...]
    num_numeric: int
    num_codes: int

    def block_of(self, source: str, index: int) -> Optional[int]:
        for b, key in enumerate(self.blocks):
            if key == (source, index):
                return b
        return None


class CodecStats(NamedTuple):
    """Fitted statistics (a pytree): all ``[N]`` except the transform's ``params``."""

    impute: jax.Array   # float32, value used for a missing numeric entry (x - low units)
    span: jax.Array     # float32, high - low: raw numeric values are clipped to [0, span]
    integer: jax.Array  # bool, round on decode
    params: tuple       # the numeric transform's params NamedTuple


@functools.partial(jax.jit, static_argnums=0)
def encode_raw(plan: CodecPlan, stats: CodecStats, raw_numeric, raw_codes):
    """``raw_numeric`` f32 [n, N] (NaN missing), ``raw_codes`` i32 [n, K] ->
    ``(numeric f32 [n, N], categorical i32 [n, B])``."""
    n = raw_numeric.shape[0]
    missing = jnp.isnan(raw_numeric)
    values, modes = jnp.zeros((n, 0), jnp.float32), None
    if plan.num_numeric:
        x = jnp.clip(jnp.where(missing, stats.impute, raw_numeric), 0.0, stats.span)
        values, modes = TRANSFORMS[plan.numeric].encode(stats.params, x)
    sources = {CATEGORY_SOURCE: lambda i: raw_codes[:, i], MODE_SOURCE: lambda i: modes[:, i],
               MISSING_SOURCE: lambda i: missing[:, i]}
    blocks = [sources[src](i).astype(jnp.int32) for src, i in plan.blocks]
    categorical = jnp.stack(blocks, axis=1) if blocks else jnp.zeros((n, 0), jnp.int32)
    return values.astype(jnp.float32), categorical


@functools.partial(jax.jit, static_argnums=0)
def decode_raw(plan: CodecPlan, stats: CodecStats, numeric, categorical):
    """Inverse of :func:`encode_raw`: ``(numeric, categorical)`` -> ``(raw_numeric, raw_codes)``.

    Inverts the transform, clips to ``[0, span]``, rounds integer columns, puts NaN where a
    missing block says 1, and clips each category block into its range.
    """
    n = numeric.shape[0]
    x = jnp.zeros((n, 0), jnp.float32)
    if plan.num_numeric:
        modes = None
        if TRANSFORMS[plan.numeric].has_modes:
            modes = jnp.stack([categorical[:, plan.block_of(MODE_SOURCE, i)] for i in range(plan.num_numeric)], axis=1)
        x = TRANSFORMS[plan.numeric].decode(stats.params, numeric.astype(jnp.float32), modes)
        x = jnp.clip(x, 0.0, stats.span)
        x = jnp.where(stats.integer, jnp.round(x), x)
        missing_blocks = [plan.block_of(MISSING_SOURCE, i) for i in range(plan.num_numeric)]
        missing = jnp.stack([categorical[:, b] == 1 if b is not None else jnp.zeros((n,), bool)
                             for b in missing_blocks], axis=1)
        x = jnp.where(missing, jnp.nan, x)
    codes = []
    for j in range(plan.num_codes):
        b = plan.block_of(CATEGORY_SOURCE, j)
        codes.append(jnp.clip(categorical[:, b], 0, plan.sizes[b] - 1))
    raw_codes = jnp.stack(codes, axis=1).astype(jnp.int32) if codes else jnp.zeros((n, 0), jnp.int32)
    return x.astype(jnp.float32), raw_codes
