"""Flax NNX layers used by every network of tabdiff_jax, with a hook for per-example gradient norms.

``Linear``, ``LayerNorm`` and ``Embed`` behave like their ``flax.nnx`` namesakes. In addition, each
reports its input and output to the active :class:`Tape`, if any. A tape is activated only while a
forward pass is traced by the privacy module's book-keeping ("ghost") clipping, which adds a zero
"probe" to every layer output: the gradient of the summed loss with respect to the probe is the
per-example output gradient, and together with the recorded inputs it gives every layer's
per-example weight-gradient norm without materialising per-example gradients. With no tape active
the hook costs nothing (a Python ``None`` check at trace time).

Initialisation follows PyTorch's ``nn.Linear`` default (uniform in +-1/sqrt(fan_in) for kernel and
bias) so that networks here and in the PyTorch reference start from the same distribution.
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional, Protocol

import jax
import jax.numpy as jnp
from flax import nnx


class Tape(Protocol):
    """What a tape receives. Each method returns the (possibly probed) output to use downstream."""

    def linear(self, layer: "Linear", x: jax.Array, y: jax.Array) -> jax.Array: ...

    def affine(self, layer: "LayerNorm", x_hat: jax.Array, y: jax.Array) -> jax.Array: ...

    def embed(self, layer: "Embed", ids: jax.Array, y: jax.Array) -> jax.Array: ...


_ACTIVE_TAPE: Optional[Tape] = None


@contextlib.contextmanager
def use_tape(tape: Tape):
    """Activate ``tape`` for the forward passes traced inside the ``with`` block."""
    global _ACTIVE_TAPE
    previous, _ACTIVE_TAPE = _ACTIVE_TAPE, tape
    try:
        yield tape
    finally:
        _ACTIVE_TAPE = previous


def _uniform(key, shape, bound, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)


class Linear(nnx.Module):
    """``y = x @ kernel + bias``; kernel ``[in_features, out_features]``."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, use_bias: bool = True,
                 matmul_dtype: Optional[str] = None):
        bound = 1.0 / math.sqrt(max(in_features, 1))
        self.in_features, self.out_features = in_features, out_features
        # None: the matmul in the input's dtype; "bfloat16": operands cast to bfloat16, products
        # accumulated and returned in float32 (mixed precision: the parameters stay float32)
        self.matmul_dtype = None if matmul_dtype is None else str(jnp.dtype(matmul_dtype))
        self.kernel = nnx.Param(_uniform(rngs.params(), (in_features, out_features), bound))
        self.bias = nnx.Param(_uniform(rngs.params(), (out_features,), bound)) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...]
        # [..., d] inputs are multiplied as one [rows, d] matrix: XLA's CPU backend runs a 2-D matmul
        # markedly faster than the same product with extra leading axes (TableDiffusion's [B, T, d])
        rows = x.reshape(-1, x.shape[-1]) if x.ndim > 2 else x
        if self.matmul_dtype is not None:
            low = jnp.dtype(self.matmul_dtype)
            y = jnp.matmul(rows.astype(low), kernel.astype(low), preferred_element_type=jnp.float32)
        else:
            y = rows @ kernel.astype(rows.dtype) if rows.dtype != kernel.dtype else rows @ kernel
        if x.ndim > 2:
            y = y.reshape(x.shape[:-1] + (y.shape[-1],))
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        tape = _ACTIVE_TAPE
        return tape.linear(self, x, y) if tape is not None else y


def linear_stack(in_features: int, widths, *, rngs: nnx.Rngs) -> tuple[nnx.List, int]:
    """``Linear`` layers of the given ``widths``, each feeding the next: ``(layers, last width)``
    (``in_features`` when ``widths`` is empty). The caller chooses the activation between them."""
    layers, dim = [], int(in_features)
    for width in widths:
        layers.append(Linear(dim, int(width), rngs=rngs))
        dim = int(width)
    return nnx.List(layers), dim


class LayerNorm(nnx.Module):
    """Layer normalisation over the last axis with an elementwise affine map (never mixes examples)."""

    def __init__(self, num_features: int, *, rngs: nnx.Rngs | None = None, epsilon: float = 1e-5):
        del rngs
        self.num_features, self.epsilon = num_features, epsilon
        self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        x_hat = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        y = x_hat * self.scale[...] + self.bias[...]
        tape = _ACTIVE_TAPE
        return tape.affine(self, x_hat, y) if tape is not None else y


class Embed(nnx.Module):
    """Lookup table ``[num_embeddings, features]`` indexed by integer ids."""

    def __init__(self, num_embeddings: int, features: int, *, rngs: nnx.Rngs):
        self.num_embeddings, self.features = num_embeddings, features
        self.embedding = nnx.Param(jax.random.normal(rngs.params(), (num_embeddings, features), jnp.float32))

    def __call__(self, ids: jax.Array) -> jax.Array:
        y = jnp.take(self.embedding[...], ids, axis=0)
        tape = _ACTIVE_TAPE
        return tape.embed(self, ids, y) if tape is not None else y
