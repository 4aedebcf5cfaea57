"""Sampling from a trained generator, one PRNG key per row (the library's sampling contract)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tabdiff_jax.gan import conditional as cond_lib
from tabdiff_jax.gan.nets import activate, apply
from tabdiff_jax.gan.train import GANConfig, make_conditions
from tabdiff_jax.sharding import constrain_rows
from tabdiff_jax.table import TableLayout


def make_sample_fn(gen_def, layout: TableLayout, config: GANConfig, mesh=None, critic_def=None):
    """``sample(gen_params, sampler, row_keys [batch], block_id=None, category=None, critic_params=None)
    -> rows [batch, dense_dim]``.

    Hard one-hot blocks (Gumbel-max). Conditions are drawn from the empirical frequencies unless
    ``block_id`` / ``category`` (scalars or ``[batch]``) fix them (the block is then set to it).
    With ``critic_params`` (of a critic ``critic_def`` with an auxiliary classifier) and drawn conditions,
    each row's conditioned column is then drawn again from the classifier's ``p(label | other columns)``
    of the generated row (the label last, as TabDiff's ``target_last``; ``label_bias [K]`` added to its
    logits, :func:`label_bias`); fixed conditions are kept.
    Row ``i`` draws everything from ``row_keys[i]`` only; with a ``mesh`` rows are split over it.
    """

    def row_draws(rk):
        return (jax.random.fold_in(rk, 0), jax.random.normal(jax.random.fold_in(rk, 1), (config.noise_dim,), jnp.float32),
                jax.random.fold_in(rk, 2), jax.random.uniform(jax.random.fold_in(rk, 3)))

    def hard_row(raw, key):
        return activate(raw[None], layout, key, numeric_activation=config.numeric_activation, tau=config.tau,
                        hard=True)[0]

    def sample(gen_params, sampler, row_keys, block_id=None, category=None, critic_params=None, label_bias=None):
        k_cond, z, k_gumbel, u_label = constrain_rows(jax.vmap(row_draws)(constrain_rows(row_keys, mesh)), mesh)
        batch = z.shape[0]
        conditions, impose, drawn = None, False, block_id is None
        if sampler is not None:
            if block_id is None:
                draw = lambda k: cond_lib.sample_condition(sampler, k, 1, training=False)
                block_id, category = jax.tree.map(lambda a: a[:, 0], jax.vmap(draw)(k_cond))
                impose = config.impose_condition
            else:
                block_id = jnp.broadcast_to(jnp.asarray(block_id, jnp.int32), (batch,))
                category = jnp.broadcast_to(jnp.asarray(category, jnp.int32), (batch,))
                impose = True
            conditions = constrain_rows(make_conditions(sampler, block_id, category), mesh)
        raw = apply(gen_def, gen_params, z, None if conditions is None else conditions.index)
        rows = jax.vmap(hard_row)(raw, k_gumbel)
        if impose:
            rows = cond_lib.impose_condition(sampler, rows, conditions.block_id, conditions.category)
        if critic_params is not None and sampler is not None and drawn:  # the label from the classifier
            logits = nnx.merge(critic_def, critic_params).classify(rows)
            probs = jax.nn.softmax(logits if label_bias is None else logits + label_bias, axis=-1)
            label = jnp.sum(jnp.cumsum(probs, axis=-1)[:, :-1] <= u_label[:, None], axis=-1).astype(jnp.int32)
            rows = cond_lib.impose_condition(sampler, rows, jnp.zeros_like(label), label)
        return constrain_rows(rows, mesh)

    return sample


def label_bias(logits: np.ndarray, shares: np.ndarray, iters: int = 500, tol: float = 1e-7) -> np.ndarray:
    """The per-class shift ``b [K]`` with ``mean_i softmax(logits_i + b) = shares``: the classifier's labels of
    generated rows ``logits [n, K]`` calibrated to the class shares the rows were generated with (a class of
    share 0 gets a large negative shift: never drawn). Iterative proportional fitting on one margin."""
    logits = np.asarray(logits, np.float64)
    shares = np.asarray(shares, np.float64) / np.sum(shares)
    b = np.where(shares > 0, 0.0, -1e4)
    for _ in range(iters):
        z = logits + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        mean = (p / p.sum(axis=1, keepdims=True)).mean(axis=0)
        step = np.where(shares > 0, np.log(np.maximum(shares, 1e-300) / np.maximum(mean, 1e-300)), 0.0)
        b = b + step
        if np.max(np.abs(step)) < tol:
            break
    return (b - np.max(b[shares > 0])).astype(np.float32) if np.any(shares > 0) else b.astype(np.float32)
