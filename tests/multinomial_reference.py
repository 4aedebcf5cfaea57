"""Multinomial diffusion in log space over flat vectors: the reference the library's fast paths are tested against.

The library keeps only what training and sampling run (:mod:`tabdiff_jax.diffusion.multinomial`:
``q_sample``, the per-block ``vb_terms``, the probability-space ``posterior_probs``); this module
holds the textbook log-space formulas of Hoogeboom et al. (2021) over the flat ``[*batch, D]``
layout, written for clarity, not speed. Tests compare the fast paths with these, and these with
closed forms and with the PyTorch reference implementation.

Example:
  >>> log_true = q_posterior(schedule, log_onehot(codes0, spec), codes_t, t, spec)
  >>> log_model = p_posterior(schedule, logits, codes_t, t, spec)
  >>> terms = kl(log_true, log_model, spec)              # [n, B], what vb_terms computes
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tabdiff_jax import blocks
from tabdiff_jax.diffusion.multinomial import NEG, BlockSpec
from tabdiff_jax.diffusion.schedules import Schedule, extract


def log1mexp(a: jax.Array) -> jax.Array:
    """``log(1 - exp(a))`` for ``a < 0``, stable everywhere, with finite gradients (Maechler 2012)."""
    near_zero = a > -jnp.log(2.0).astype(a.dtype)
    a1 = jnp.where(near_zero, a, -1.0)  # each branch only sees arguments where it is stable
    a2 = jnp.where(near_zero, -1.0, a)
    return jnp.where(near_zero, jnp.log(-jnp.expm1(a1)), jnp.log1p(-jnp.exp(a2)))


def log_sizes(spec: BlockSpec) -> np.ndarray:
    """``log K_b`` per block, float32 ``[B]``."""
    return np.log(np.asarray(spec.sizes, np.float64)).astype(np.float32)


def expand(per_block: jax.Array, spec: BlockSpec) -> jax.Array:
    """``[*batch, B]`` -> ``[*batch, D]``: each block's value at each of its positions."""
    return jnp.take(per_block, blocks.block_index(spec.sizes), axis=-1)


def block_sum(x: jax.Array, spec: BlockSpec) -> jax.Array:
    """Per-block sum ``[*batch, D] -> [*batch, B]``."""
    return jnp.stack([x[..., o:o + k].sum(-1) for o, k in zip(spec.offsets.tolist(), spec.sizes)], axis=-1)


def normalize(log_unnormed: jax.Array, spec: BlockSpec) -> jax.Array:
    """Per-block log-softmax of flat ``[*batch, D]``."""
    return blocks.block_log_softmax(log_unnormed, spec.sizes)


def to_padded(flat: jax.Array, spec: BlockSpec, fill: float = NEG) -> jax.Array:
    """Flat ``[*batch, D]`` -> padded view ``[*batch, B, K_max]`` (``fill`` in the padding)."""
    sizes = np.asarray(spec.sizes).reshape(-1, 1)
    k_max = max(spec.sizes, default=1)
    gather = spec.offsets.reshape(-1, 1) + np.minimum(np.arange(k_max)[None, :], sizes - 1)
    mask = np.arange(k_max)[None, :] < sizes
    return jnp.where(mask, jnp.take(flat, gather, axis=-1), jnp.asarray(fill, flat.dtype))


def log_onehot(codes: jax.Array, spec: BlockSpec) -> jax.Array:
    """Codes ``[*batch, B]`` -> flat log one-hot ``[*batch, D]`` (0 at the code, NEG elsewhere)."""
    return jnp.where(blocks.onehot(codes, spec.sizes, bool), 0.0, NEG).astype(jnp.float32)


def q_pred(schedule: Schedule, log_x0: jax.Array, t: jax.Array, spec: BlockSpec) -> jax.Array:
    """``log q(x_t | x_0) = log(alpha_bar_t x_0 + (1 - alpha_bar_t) / K)``, flat ``[*batch, D]``."""
    a = extract(schedule.log_alpha_bar, t, log_x0)
    b = extract(schedule.log_1m_alpha_bar, t, log_x0)
    return jnp.logaddexp(log_x0 + a, b - expand(log_sizes(spec), spec))


def _onehot_mix(codes: jax.Array, log_a: jax.Array, log_1m_a: jax.Array, spec: BlockSpec) -> jax.Array:
    """``log(a onehot(codes) + (1 - a) / K)`` flat; ``log_a``, ``log_1m_a`` ``[*batch, 1]``."""
    miss = log_1m_a - log_sizes(spec)  # [*batch, B]
    hit = jnp.logaddexp(log_a, miss)
    return jnp.where(blocks.onehot(codes, spec.sizes, bool), expand(hit, spec), expand(miss, spec))


def q_posterior(schedule: Schedule, log_x0: jax.Array, codes_t: jax.Array, t: jax.Array, spec: BlockSpec,
                s: jax.Array | None = None) -> jax.Array:
    """``log q(x_s | x_t, x_0)``, normalised per block, flat ``[*batch, D]``.

    ``s`` (default ``t - 1``; ``-1``: the data) below ``t - 1`` is the posterior of a skipped step,
    whose transition has ``alpha = alpha_bar_t / alpha_bar_s``.
    """
    col = lambda v: v.reshape(v.shape + (1,))
    if s is None:
        s = t - 1
        log_a, log_1m_a = jnp.take(schedule.log_alphas, t), jnp.take(schedule.log_1m_alphas, t)
    else:
        log_abar_s = jnp.where(s >= 0, jnp.take(schedule.log_alpha_bar, jnp.maximum(s, 0)), 0.0)
        log_a = jnp.minimum(jnp.take(schedule.log_alpha_bar, t) - log_abar_s, -1e-12)
        log_1m_a = log1mexp(log_a)
    log_trans = _onehot_mix(codes_t, col(log_a), col(log_1m_a), spec)
    log_prior = jnp.where(col(s) >= 0, q_pred(schedule, log_x0, jnp.maximum(s, 0), spec), log_x0)
    return normalize(log_prior + log_trans, spec)


def p_posterior(schedule, logits, codes_t, t, spec, s=None) -> jax.Array:
    """The model's reverse distribution: :func:`q_posterior` with ``x_0`` predicted by flat ``logits``."""
    return q_posterior(schedule, normalize(logits, spec), codes_t, t, spec, s)


def kl(log_p: jax.Array, log_q: jax.Array, spec: BlockSpec) -> jax.Array:
    """``KL(p || q)`` per block: flat ``[*batch, D]`` -> ``[*batch, B]`` (nats)."""
    return block_sum(jnp.exp(log_p) * (log_p - log_q), spec)


def log_likelihood(codes: jax.Array, log_p: jax.Array, spec: BlockSpec) -> jax.Array:
    """``log p`` of each block's category in ``codes`` ``[*batch, B]`` -> ``[*batch, B]``."""
    return jnp.take_along_axis(log_p, codes + spec.offsets, axis=-1)


def kl_prior(schedule: Schedule, codes0: jax.Array, spec: BlockSpec) -> jax.Array:
    """``KL(q(x_{T-1} | x_0) || Uniform(K_b))`` per block, ``[*batch, B]``."""
    t_last = jnp.full(codes0.shape[:-1], schedule.num_timesteps - 1, jnp.int32)
    log_qt = q_pred(schedule, log_onehot(codes0, spec), t_last, spec)
    return kl(log_qt, jnp.broadcast_to(-expand(log_sizes(spec), spec), log_qt.shape), spec)


def gumbel_argmax(log_p: jax.Array, gumbel: jax.Array, spec: BlockSpec) -> jax.Array:
    """``argmax(log_p + gumbel)`` within each block: flat ``[*batch, D]`` -> codes ``[*batch, B]``."""
    return jnp.argmax(to_padded(log_p + gumbel, spec, -jnp.inf), axis=-1).astype(jnp.int32)


def sample(key: jax.Array, log_p: jax.Array, spec: BlockSpec) -> jax.Array:
    """Gumbel-max draw from each block of flat ``log_p`` ``[*batch, D]`` -> codes ``[*batch, B]``."""
    return gumbel_argmax(log_p, jax.random.gumbel(key, log_p.shape, log_p.dtype), spec)
