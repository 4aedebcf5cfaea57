"""DP-SGD (Abadi et al. 2016) as one jit-compiled step: clip per example, sum, add noise, normalise.

The per-example loss has the signature ``loss_fn(model, batch, keys) -> losses [B]``: ``batch`` is a
pytree of ``[B, ...]`` arrays (a fixed-size padded batch), ``keys`` holds one PRNG key per row, and
row ``i`` of the result must depend only on row ``i`` of ``batch`` and on ``keys[i]`` (draw the
per-example randomness from ``keys[i]``, e.g. with ``jax.vmap(jax.random.normal ...)(keys)``; that
keeps the two gradient methods below exactly comparable). ``model`` is ``nnx.merge(graphdef,
params)`` for an NNX model, or the raw ``params`` pytree when no ``graphdef`` is given.

Two ways to get the clipped sum ``sum_i clip_C(grad_i)``:

* ``clipping="vmap"``: per-example gradients by ``jax.vmap(jax.grad(...))``, for any pytree model
  (memory ``B x num_params``; ``microbatch_size`` bounds it with a ``lax.scan``);
* ``clipping="ghost"``: book-keeping clipping (:mod:`tabdiff_jax.privacy.ghost`), one forward and one
  backward pass, for NNX models built from :mod:`tabdiff_jax.layers`.

Then ``N(0, (sigma C)^2)`` noise once per step and division by the expected batch size ``q n``
(:mod:`tabdiff_jax.privacy.noise`; see its note on noise keys for production runs).

Data parallelism (``mesh=``, :mod:`tabdiff_jax.sharding`): the padded batch, its mask and the
per-example keys are split by rows over the mesh's ``data`` axis; parameters stay replicated.
Clipping is per row, so every device clips its own rows; the clipped sum is then all-reduced by
XLA and the noise, drawn from the step's key on the replicated sum, is added once. The result is
the single-device step (to float rounding), and the privacy accounting does not change: the
capacity must be a multiple of the device count, but ``q`` and ``q n`` do not depend on it.

Example:
  >>> graphdef, params = split_params(model)   # tabdiff_jax.state
  >>> dp = make_private_step(loss_fn, optax.adam(1e-3), graphdef=graphdef, l2_clip=1.0,
  ...                        noise_multiplier=1.1, expected_batch_size=256.0)
  >>> state = dp.init(params)
  >>> state, metrics = dp.step(state, batch, mask, key)
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from tabdiff_jax import validate
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.privacy.clipping import (
    ClipStats,
    clip_factors,
    clipped_sum,
    per_example_sq_norms,
    weighted_row_sum,
)
from tabdiff_jax.privacy.ghost import ghost_clipped_sum
from tabdiff_jax.privacy.noise import privatize
from tabdiff_jax.sharding import check_divisible, constrain_rows
from tabdiff_jax.state import TrainState, apply_gradients, init_train_state

PyTree = Any
LossFn = Callable[[Any, PyTree, jax.Array], jax.Array]
CLIPPINGS = ("ghost", "vmap")


class PrivateStep(NamedTuple):
    """``init(params) -> TrainState`` (:class:`tabdiff_jax.state.TrainState`) and the jitted
    ``step(state, batch, mask, key) -> (state, metrics)``."""

    init: Callable[[PyTree], TrainState]
    step: Callable[..., tuple[TrainState, dict]]


def _model(graphdef, params, static_state):
    if graphdef is None:
        return params
    from flax import nnx

    return nnx.merge(graphdef, params, *static_state)


def _row(x: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda v: v[None], x)


def vmap_clipped_sum(loss_fn: LossFn, params, batch, keys, mask, l2_clip: float, *, graphdef=None,
                     static_state: tuple = (), microbatch_size: Optional[int] = None):
    """Clipped per-example gradient sum from ``jax.vmap(jax.grad(...))``.

    Args:
      loss_fn: per-example loss (module docstring).
      params: differentiated parameters (pytree).
      batch: pytree of ``[B, ...]`` arrays; keys ``[B]``; mask ``[B]`` bool.
      l2_clip: clipping norm ``C``.
      graphdef: NNX graph definition, or ``None`` when ``loss_fn`` takes ``params`` directly.
      static_state: further NNX states merged with ``params``.
      microbatch_size: compute per-example gradients this many rows at a time (must divide ``B``).

    Returns:
      ``(summed, stats, losses)``: clipped sum (like ``params``), ClipStats, per-example losses ``[B]``.
    """

    def one(p, example, key):
        return loss_fn(_model(graphdef, p, static_state), _row(example), key[None])[0]

    grad_fn = jax.vmap(jax.value_and_grad(one), in_axes=(None, 0, 0))
    batch_size = int(mask.shape[0])
    if microbatch_size is None or microbatch_size >= batch_size:
        losses, grads = grad_fn(params, batch, keys)
        summed, stats = clipped_sum(grads, l2_clip, mask)
        return summed, stats, losses
    if batch_size % microbatch_size:
        raise ConfigError(f"microbatch_size {microbatch_size} must divide the batch capacity {batch_size}")
    chunks = batch_size // microbatch_size
    split = lambda x: x.reshape((chunks, microbatch_size) + x.shape[1:])

    def body(acc, chunk):
        b, k, m = chunk
        losses, grads = grad_fn(params, b, k)
        sq = per_example_sq_norms(grads)
        factors, usable, _ = clip_factors(sq, l2_clip, m)
        acc = jax.tree_util.tree_map(jnp.add, acc, weighted_row_sum(grads, factors, usable))
        return acc, (sq, losses)

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    summed, (sq, losses) = jax.lax.scan(body, zeros, (jax.tree_util.tree_map(split, batch), split(keys), split(mask)))
    _, _, stats = clip_factors(sq.reshape(-1), l2_clip, mask)
    return summed, stats, losses.reshape(-1)


def clipped_grad_sum(loss_fn: LossFn, params, batch, keys, mask, *, l2_clip: float, clipping: str = "ghost",
                     graphdef=None, static_state: tuple = (), microbatch_size: Optional[int] = None):
    """``(summed, stats, losses)`` by ``clipping`` ("ghost" or "vmap"); see the two implementations."""
    if clipping == "ghost":
        if graphdef is None:
            raise ConfigError("clipping='ghost' needs an NNX model: pass graphdef (or use clipping='vmap')")
        res = ghost_clipped_sum(loss_fn, graphdef, params, batch, keys, mask, l2_clip, static_state)
        return res.summed, res.stats, res.losses
    if clipping == "vmap":
        return vmap_clipped_sum(loss_fn, params, batch, keys, mask, l2_clip, graphdef=graphdef,
                                static_state=static_state, microbatch_size=microbatch_size)
    raise ConfigError(f"clipping must be one of {CLIPPINGS}, got {clipping!r}")


def step_metrics(losses: jax.Array, stats: ClipStats, mask: jax.Array) -> dict:
    """Scalars worth logging: mean loss and pre-clipping norm over usable rows, batch size, clip counts."""
    usable = mask & jnp.isfinite(stats.norms)
    with_loss = usable & jnp.isfinite(losses)
    return {
        "loss": jnp.sum(jnp.where(with_loss, losses, 0.0)) / jnp.maximum(jnp.sum(with_loss), 1),
        "grad_norm": jnp.sum(jnp.where(usable, stats.norms, 0.0)) / jnp.maximum(jnp.sum(usable), 1),
        "batch_size": stats.batch_size,
        "clipped_fraction": stats.num_clipped / jnp.maximum(stats.batch_size, 1),
        "nonfinite": stats.num_nonfinite,
    }


def make_private_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, *, l2_clip: float,
                      noise_multiplier: float, expected_batch_size: float, clipping: str = "ghost",
                      graphdef=None, static_state: tuple = (), microbatch_size: Optional[int] = None,
                      jit: bool = True, mesh=None, ema_decay: Optional[float] = None) -> PrivateStep:
    """Build DP-SGD's ``init`` and jitted ``step(state, batch, mask, key) -> (state, metrics)``.

    Args:
      loss_fn: per-example loss ``(model, batch, keys) -> [B]`` (module docstring).
      optimizer: any optax transformation, applied to the privatised gradient.
      l2_clip: per-example clipping norm ``C > 0``.
      noise_multiplier: ``sigma >= 0``; the noise std is ``sigma C``.
      expected_batch_size: ``q n`` (a public constant), the normaliser of the noisy sum.
      clipping: ``"ghost"`` (book-keeping, NNX models from :mod:`tabdiff_jax.layers`) or ``"vmap"``.
      graphdef: ``nnx.GraphDef`` of the model (``params`` is then its parameter dict,
        :func:`tabdiff_jax.state.split_params`); ``None``
        for a plain pytree model (vmap only).
      static_state: NNX states merged with ``params`` but not trained.
      microbatch_size: vmap only; bounds the memory of per-example gradients.
      jit: return the step jitted (default) or as a plain function (to embed it in a larger jit).
      mesh: a ``data`` mesh (:func:`tabdiff_jax.sharding.auto_mesh`) to split the batch's rows over,
        or ``None``; the batch capacity must then be a multiple of the mesh size.
      ema_decay: keep an exponential moving average of the parameters in the state (post-processing
        of the private parameters: no privacy cost), or ``None``.

    Returns:
      A :class:`PrivateStep`. ``step`` draws per-example loss keys and the noise key from ``key``
      and returns metrics ``loss``, ``grad_norm`` (mean per-example norm before clipping),
      ``batch_size``, ``clipped_fraction`` and ``nonfinite`` (rows whose gradient was NaN/inf and
      contributed zero).

    Raises:
      ConfigError: invalid ``l2_clip``, ``noise_multiplier``, ``expected_batch_size`` or ``clipping``.
    """
    l2_clip = validate.positive_float("l2_clip", l2_clip)
    noise_multiplier = validate.positive_float("noise_multiplier", noise_multiplier, allow_zero=True)
    expected_batch_size = validate.positive_float("expected_batch_size", expected_batch_size)
    validate.in_choices("clipping", clipping, CLIPPINGS)
    if clipping == "ghost" and graphdef is None:
        raise ConfigError("clipping='ghost' needs an NNX model: pass graphdef (or use clipping='vmap')")

    def init(params) -> TrainState:
        return init_train_state(params, optimizer, ema_decay)

    def step(state: TrainState, batch, mask, key):
        loss_key, noise_key = jax.random.split(key)
        keys = jax.random.split(loss_key, mask.shape[0])
        check_divisible(int(mask.shape[0]), mesh, name="batch capacity")
        batch, mask, keys = constrain_rows((batch, mask, keys), mesh)
        summed, stats, losses = clipped_grad_sum(
            loss_fn, state.params, batch, keys, mask, l2_clip=l2_clip, clipping=clipping, graphdef=graphdef,
            static_state=static_state, microbatch_size=microbatch_size)
        grads = privatize(summed, noise_key, l2_clip=l2_clip, noise_multiplier=noise_multiplier,
                          expected_batch_size=expected_batch_size)
        return apply_gradients(state, grads, optimizer, ema_decay), step_metrics(losses, stats, mask)

    return PrivateStep(init=init, step=jax.jit(step) if jit else step)


def make_nonprivate_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, *, graphdef=None,
                         static_state: tuple = (), jit: bool = True, mesh=None,
                         ema_decay: Optional[float] = None) -> PrivateStep:
    """The same interface without privacy: gradient of the mean loss over the real rows.

    The baseline that the private step is timed against, and the step for ``epsilon=None`` runs.
    """

    def init(params) -> TrainState:
        return init_train_state(params, optimizer, ema_decay)

    def mean_loss(params, batch, keys, mask):
        losses = loss_fn(_model(graphdef, params, static_state), batch, keys)
        count = jnp.maximum(jnp.sum(mask), 1)
        return jnp.sum(jnp.where(mask, losses, 0.0)) / count

    def step(state: TrainState, batch, mask, key):
        loss_key, _ = jax.random.split(key)
        keys = jax.random.split(loss_key, mask.shape[0])
        check_divisible(int(mask.shape[0]), mesh, name="batch capacity")
        batch, mask, keys = constrain_rows((batch, mask, keys), mesh)
        loss, grads = jax.value_and_grad(mean_loss)(state.params, batch, keys, mask)
        metrics = {"loss": loss, "batch_size": jnp.sum(mask, dtype=jnp.int32)}
        return apply_gradients(state, grads, optimizer, ema_decay), metrics

    return PrivateStep(init=init, step=jax.jit(step) if jit else step)
