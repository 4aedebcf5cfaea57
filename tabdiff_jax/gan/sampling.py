"""Sampling from a trained generator, one PRNG key per row (the library's sampling contract)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tabdiff_jax.gan import conditional as cond_lib
from tabdiff_jax.gan.nets import activate, apply
from tabdiff_jax.gan.train import GANConfig, make_conditions
from tabdiff_jax.sharding import constrain_rows
from tabdiff_jax.table import TableLayout


def make_sample_fn(gen_def, layout: TableLayout, config: GANConfig, mesh=None):
    """``sample(gen_params, sampler, row_keys [batch], block_id=None, category=None) -> rows [batch, dense_dim]``.

    Hard one-hot blocks (Gumbel-max). Conditions are drawn from the empirical frequencies unless
    ``block_id`` / ``category`` (scalars or ``[batch]``) fix them (the block is then set to it).
    Row ``i`` draws everything from ``row_keys[i]`` only; with a ``mesh`` rows are split over it.
    """

    def row_draws(rk):
        return (jax.random.fold_in(rk, 0), jax.random.normal(jax.random.fold_in(rk, 1), (config.noise_dim,), jnp.float32),
                jax.random.fold_in(rk, 2))

    def hard_row(raw, key):
        return activate(raw[None], layout, key, numeric_activation=config.numeric_activation, tau=config.tau,
                        hard=True)[0]

    def sample(gen_params, sampler, row_keys, block_id=None, category=None):
        k_cond, z, k_gumbel = constrain_rows(jax.vmap(row_draws)(constrain_rows(row_keys, mesh)), mesh)
        batch = z.shape[0]
        conditions, impose = None, False
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
        return constrain_rows(rows, mesh)

    return sample
