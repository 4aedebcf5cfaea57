"""Book-keeping ("ghost") clipping: clipped per-example gradient sums in one forward and one backward.

For a layer ``y = a W + b`` applied to each example ``i`` (``a_i`` of shape ``[T, d]``, ``T = 1`` for
a plain row), the per-example gradients are ``a_i^T g_i`` and ``sum_t g_{i,t}``, where ``g = dL/dy``
is the gradient of the summed loss with respect to the layer output. Their squared norms need only
``a`` and ``g`` (Goodfellow 2015; Li et al. 2021; Bu et al. 2022):

* ``T = 1``: ``||a_i||^2 ||g_i||^2`` (kernel) and ``||g_i||^2`` (bias);
* ``T > 1``: the Gram form ``sum_{t,s} (a_t . a_s)(g_t . g_s)`` when ``T^2`` is small next to
  ``d p``, else the per-example ``a_i^T g_i`` itself; bias ``||sum_t g_t||^2``.

LayerNorm's affine map gives ``sum_t x_hat_t * g_t`` (scale) and ``sum_t g_t`` (bias); an embedding
lookup gives ``sum_{t,s} [id_t = id_s] (g_t . g_s)``. With the clip factors ``c_i = min(1, C /
||grad_i||)`` the clipped sum of each layer is ``A^T (c * G)``: no per-example gradient is ever
materialised and there is no second backward pass (Bu et al.'s "book-keeping" trick, unlike
Opacus' ghost clipping, which runs backward twice).

How ``G`` is obtained: the layers of :mod:`tabdiff_jax.layers` report to a :class:`ProbeTape`, which
adds a zero "probe" to each output and records the input. A first, shape-only trace
(``jax.eval_shape``) finds the probes' shapes; then one ``jax.value_and_grad`` of the summed loss
with respect to the probes gives every ``G`` at once, with the recorded inputs as auxiliary output.
A layer called several times (weight sharing) has its calls stacked along ``T``.

Requirements (checked where possible, else documented): every parameter belongs to a
``Linear``, ``LayerNorm`` or ``Embed`` of :mod:`tabdiff_jax.layers` (otherwise ConfigError, naming the
parameter), every hooked input has the example axis first, and the network never mixes examples
(no batch norm): the loss of row ``i`` depends on row ``i`` only. A parameter read outside its
layer's ``__call__`` would escape the tape: do not do that.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.layers import Embed, LayerNorm, Linear, use_tape
from tabdiff_jax.privacy.clipping import ClipStats, clip_factors

PyTree = Any
HOOKED_LAYERS = (Linear, LayerNorm, Embed)
_PARAM_NAMES = {"linear": ("kernel", "bias"), "affine": ("scale", "bias"), "embed": ("embedding",)}


class _Call(NamedTuple):
    kind: str  # "linear" | "affine" | "embed"
    module: tuple  # graph path of the layer inside the model
    has_bias: bool


class ProbeTape:
    """The :class:`tabdiff_jax.layers.Tape` of ghost clipping: probes outputs, records inputs.

    Args:
      module_paths: ``id(layer) -> graph path`` of every hooked layer of the model.
      batch_size: size ``B`` of the example axis that every hooked input must lead with.
      probes: list of arrays added to the outputs in call order, or ``None`` for the shape pass.
    """

    def __init__(self, module_paths: dict, batch_size: int, probes: Optional[list] = None):
        self.module_paths = module_paths
        self.batch_size = batch_size
        self.probes = probes
        self.calls: list[_Call] = []
        self.inputs: list[jax.Array] = []
        self.shapes: list[jax.ShapeDtypeStruct] = []

    def _hook(self, kind: str, layer, x: jax.Array, y: jax.Array, has_bias: bool) -> jax.Array:
        path = self.module_paths.get(id(layer))
        if path is None:
            raise ConfigError(f"ghost clipping: a {type(layer).__name__} was called that is not part of the model "
                              "passed to the step (create layers in __init__, not in __call__)")
        if x.ndim == 0 or x.shape[0] != self.batch_size or y.shape[0] != self.batch_size:
            raise ConfigError(f"ghost clipping: layer {'/'.join(map(str, path))} got input of shape {tuple(x.shape)}; "
                              f"every layer input must lead with the example axis of size {self.batch_size}")
        i = len(self.calls)
        self.calls.append(_Call(kind, path, has_bias))
        self.inputs.append(x)
        self.shapes.append(jax.ShapeDtypeStruct(y.shape, y.dtype))
        if self.probes is None:
            return y
        if i >= len(self.probes) or self.probes[i].shape != y.shape:
            raise ConfigError("ghost clipping: the forward pass is not deterministic in its layer calls "
                              "(different layers or shapes between two traces)")
        return y + self.probes[i]

    def linear(self, layer, x, y):
        return self._hook("linear", layer, x, y, layer.bias is not None)

    def affine(self, layer, x_hat, y):
        return self._hook("affine", layer, x_hat, y, True)

    def embed(self, layer, ids, y):
        return self._hook("embed", layer, ids, y, False)


def hooked_module_paths(model) -> dict:
    """``id(layer) -> path`` for every Linear / LayerNorm / Embed in an NNX model graph."""
    return {id(node): tuple(path) for path, node in nnx.iter_graph(model) if isinstance(node, HOOKED_LAYERS)}


def _key_name(k) -> Any:
    for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
            return getattr(k, attr)
    return str(k)


def param_path(keypath) -> tuple:
    """A jax key path of a parameter leaf as a plain tuple (the NNX ``Variable.value`` hop dropped)."""
    names = tuple(_key_name(k) for k in keypath)
    if names and names[-1] == "value" and isinstance(keypath[-1], jax.tree_util.GetAttrKey):
        names = names[:-1]
    return names


# --------------------------------------------------------------------------------------- norms
def _use_gram(t: int, d: int, p: int) -> bool:
    """Gram form costs ~ T^2 (d + p) per example, the explicit per-example gradient ~ T d p (+ d p memory)."""
    return t * t * (d + p) <= 2 * t * d * p


def _linear_sq_norms(a, g, has_bias):
    a, g = a.astype(jnp.float32), g.astype(jnp.float32)
    t, d, p = a.shape[1], a.shape[2], g.shape[2]
    if t == 1:
        kernel = jnp.sum(jnp.square(a[:, 0]), -1) * jnp.sum(jnp.square(g[:, 0]), -1)
    elif _use_gram(t, d, p):
        kernel = jnp.sum(jnp.einsum("btd,bsd->bts", a, a) * jnp.einsum("btp,bsp->bts", g, g), axis=(1, 2))
    else:
        kernel = jnp.sum(jnp.square(jnp.einsum("btd,btp->bdp", a, g)), axis=(1, 2))
    bias = jnp.sum(jnp.square(jnp.sum(g, axis=1)), -1) if has_bias else 0.0
    return kernel + bias


def _affine_sq_norms(x_hat, g, has_bias):
    x_hat, g = x_hat.astype(jnp.float32), g.astype(jnp.float32)
    return jnp.sum(jnp.square(jnp.sum(x_hat * g, axis=1)), -1) + jnp.sum(jnp.square(jnp.sum(g, axis=1)), -1)


def _embed_sq_norms(ids, g, has_bias):
    g = g.astype(jnp.float32)
    if ids.shape[1] == 1:
        return jnp.sum(jnp.square(g[:, 0]), -1)
    same = (ids[:, :, None] == ids[:, None, :]).astype(jnp.float32)
    return jnp.sum(same * jnp.einsum("btp,bsp->bts", g, g), axis=(1, 2))


# ------------------------------------------------------------------------------- clipped sums
# Each rule gets the stacked inputs x, output gradients g, the clip factors c and the usable-row
# mask u. Rows that are padding or non-finite must contribute exactly zero: c is 0 there, but
# 0 * NaN is NaN, so g * c is masked with a select (fused into the one pass that forms it).
def _rows(u, ndim):
    return u.reshape((-1,) + (1,) * (ndim - 1))


def _scaled(g, c, u):
    return jnp.where(_rows(u, g.ndim), g * _rows(c, g.ndim).astype(g.dtype), jnp.zeros((), g.dtype))


def _flat_rows(x, c, u):
    """``[B, T, k] -> [B T, k]`` with the per-example ``c`` and ``u`` repeated over ``T``."""
    t = x.shape[1]
    flat = x.reshape(-1, x.shape[-1])
    return (flat, c, u) if t == 1 else (flat, jnp.repeat(c, t), jnp.repeat(u, t))


def _linear_sums(a, g, c, u, has_bias, layer_shapes):
    a2 = a.reshape(-1, a.shape[-1])
    g2, c2, u2 = _flat_rows(g, c, u)
    gc = _scaled(g2, c2, u2)
    # [B T, d]^T [B T, p]: the same matrix product as a non-private backward, on c-scaled rows.
    kernel = a2.T @ gc
    # Only a non-finite input in a masked-out row can make this non-finite; recomputing with those
    # rows zeroed is rare, so it sits behind a cond instead of costing a pass over every input.
    clean = lambda: jnp.where(u2[:, None], a2, jnp.zeros((), a2.dtype)).T @ gc
    out = {"kernel": jax.lax.cond(jnp.all(jnp.isfinite(kernel)), lambda: kernel, clean)}
    if has_bias:
        out["bias"] = jnp.sum(gc, axis=0)
    return out


def _affine_sums(x_hat, g, c, u, has_bias, layer_shapes):
    gc = _scaled(g, c, u)
    scale = jnp.sum(jnp.where(_rows(u, g.ndim), x_hat * gc, jnp.zeros((), gc.dtype)), axis=(0, 1))
    return {"scale": scale, "bias": jnp.sum(gc, axis=(0, 1))}


def _embed_sums(ids, g, c, u, has_bias, layer_shapes):
    gc = _scaled(g, c, u).reshape(-1, g.shape[-1])
    num_embeddings = layer_shapes["embedding"][0][0]
    return {"embedding": jnp.zeros((num_embeddings, g.shape[-1]), gc.dtype).at[ids.reshape(-1)].add(gc)}


_RULES = {"linear": (_linear_sq_norms, _linear_sums), "affine": (_affine_sq_norms, _affine_sums),
          "embed": (_embed_sq_norms, _embed_sums)}


def _stack_calls(kind, inputs, grads, batch_size):
    """Stack the calls of one layer into ``[B, T, d]`` inputs (``[B, T]`` ids) and ``[B, T, p]`` grads."""
    if kind == "embed":
        x = jnp.concatenate([v.reshape(batch_size, -1) for v in inputs], axis=1)
    else:
        x = jnp.concatenate([v.reshape(batch_size, -1, v.shape[-1]) for v in inputs], axis=1)
    g = jnp.concatenate([v.reshape(batch_size, -1, v.shape[-1]) for v in grads], axis=1)
    return x, g


class GhostResult(NamedTuple):
    """Output of :func:`ghost_clipped_sum`.

    Attributes:
      summed: clipped sum of per-example gradients, same tree structure as ``params``.
      stats: :class:`~tabdiff_jax.privacy.clipping.ClipStats` (``norms`` are the per-example norms).
      losses: per-example losses ``[B]``.
    """

    summed: PyTree
    stats: ClipStats
    losses: jax.Array


def ghost_clipped_sum(loss_fn: Callable, graphdef, params, batch, keys, mask, l2_clip: float,
                      static_state: tuple = ()) -> GhostResult:
    """Clipped per-example gradient sum of an NNX model, by book-keeping, without per-example grads.

    Args:
      loss_fn: ``(model, batch, keys) -> losses [B]`` where row ``i`` of the loss depends only on
        row ``i`` of ``batch`` and ``keys[i]``.
      graphdef: the model's ``nnx.GraphDef``.
      params: the model's parameters (the differentiated ones): a dict from
        :func:`tabdiff_jax.state.split_params`, or an ``nnx.State``.
      batch: pytree of ``[B, ...]`` arrays.
      keys: ``[B]`` PRNG keys, one per example.
      mask: ``[B]`` bool, real rows.
      l2_clip: clipping norm ``C``.
      static_state: further NNX states merged with ``params`` (not differentiated).

    Returns:
      A :class:`GhostResult`.

    Raises:
      ConfigError: a parameter outside the hooked layers, a layer input without the example axis, a
        loss of the wrong shape.
    """
    batch_size = int(mask.shape[0])
    # Every parameter must belong to a hooked layer, or its gradient would escape clipping.
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    leaf_shapes = {param_path(kp): (leaf.shape, leaf.dtype) for kp, leaf in flat}
    hooked = _hooked_param_paths(graphdef, params, static_state)
    missing = [p for p in leaf_shapes if p not in hooked]
    if missing:
        raise ConfigError("ghost clipping cannot clip parameters outside tabdiff_jax.layers Linear/LayerNorm/Embed: "
                          + ", ".join("/".join(map(str, p)) for p in missing) + " (use clipping='vmap')")

    def forward(probes):
        model = nnx.merge(graphdef, params, *static_state)
        tape = ProbeTape(hooked_module_paths(model), batch_size, probes)
        with use_tape(tape):
            losses = loss_fn(model, batch, keys)
        if losses.shape != (batch_size,):
            raise ConfigError(f"loss_fn must return per-example losses of shape ({batch_size},), got {losses.shape}")
        return losses, tape

    traced = {}

    def shapes_only():
        losses, traced["tape"] = forward(None)
        return losses

    jax.eval_shape(shapes_only)
    calls, shapes = traced["tape"].calls, traced["tape"].shapes
    probes = [jnp.zeros(s.shape, s.dtype) for s in shapes]

    def summed_loss(probes):
        losses, tape = forward(probes)
        if tape.calls != calls:
            raise ConfigError("ghost clipping: the forward pass called different layers in two traces")
        return jnp.sum(jnp.where(mask, losses, 0.0)), (losses, tape.inputs)

    (_, (losses, inputs)), grads = jax.value_and_grad(summed_loss, has_aux=True)(probes)

    # Group calls by layer, in first-call order.
    groups: "OrderedDict[tuple, list[int]]" = OrderedDict()
    for i, call in enumerate(calls):
        groups.setdefault(call.module, []).append(i)
    stacked = {}
    sq_norms = jnp.zeros((batch_size,), jnp.float32)
    for module, idx in groups.items():
        kind, has_bias = calls[idx[0]].kind, calls[idx[0]].has_bias
        x, g = _stack_calls(kind, [inputs[i] for i in idx], [grads[i] for i in idx], batch_size)
        stacked[module] = (kind, has_bias, x, g)
        sq_norms = sq_norms + _RULES[kind][0](x, g, has_bias)

    factors, usable, stats = clip_factors(sq_norms, l2_clip, mask)

    sums: dict[tuple, jax.Array] = {}
    for module, (kind, has_bias, x, g) in stacked.items():
        layer_shapes = {n: leaf_shapes.get(module + (n,)) for n in _PARAM_NAMES[kind]}
        for name, value in _RULES[kind][1](x, g, factors, usable, has_bias, layer_shapes).items():
            sums[module + (name,)] = value

    def leaf_sum(kp, leaf):
        value = sums.get(param_path(kp))
        # A hooked layer that the forward pass never called has a zero gradient.
        return jnp.zeros(leaf.shape, leaf.dtype) if value is None else value.reshape(leaf.shape).astype(leaf.dtype)

    summed = jax.tree_util.tree_unflatten(treedef, [leaf_sum(kp, leaf) for kp, leaf in flat])
    return GhostResult(summed=summed, stats=stats, losses=losses)


def _hooked_param_paths(graphdef, params, static_state) -> set:
    """Paths of every parameter that belongs to a hooked layer (whether or not it was called)."""
    model = nnx.merge(graphdef, params, *static_state)
    out = set()
    for path, node in nnx.iter_graph(model):
        if isinstance(node, Linear):
            out |= {tuple(path) + ("kernel",), tuple(path) + ("bias",)}
        elif isinstance(node, LayerNorm):
            out |= {tuple(path) + ("scale",), tuple(path) + ("bias",)}
        elif isinstance(node, Embed):
            out.add(tuple(path) + ("embedding",))
    return out
