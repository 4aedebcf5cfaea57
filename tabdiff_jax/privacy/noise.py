"""The Gaussian mechanism of DP-SGD: noise on the clipped sum, then the fixed normalisation.

A note on randomness for a production run:
  The noise here comes from an explicit ``jax.random`` key, so a run is reproducible from its seed,
  which is what tests and research need. JAX's Threefry generator is a good pseudo-random
  generator, but it has not been audited as a cryptographically secure source for DP, and a key
  derived from a small integer seed is guessable: whoever knows the seed can subtract the noise.
  For a release whose guarantee matters, build the noise key from the operating system's CSPRNG,
  e.g. ``jax.random.wrap_key_data(jnp.asarray(np.frombuffer(os.urandom(8), np.uint32)))`` (64 bits
  of OS entropy), never log or checkpoint it, and keep in mind that floating-point Gaussian
  sampling has known side channels (Mironov 2012) that a hardened implementation would close
  with discrete or snapped noise.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def standard_normal(key: jax.Array, num: int, dtype=jnp.float32) -> jax.Array:
    """``num`` independent N(0, 1) draws, float32, from one PRNG key.

    The bits come from XLA's native counter-based Threefry generator (``lax.rng_bit_generator``
    with ``RNG_THREE_FRY``), seeded from ``key``; on CPU it is several times faster than
    ``jax.random.normal``, which matters because DP-SGD draws one number per parameter per step.
    Each 32-bit word gives a uniform on (-1, 1) with 23 random mantissa bits, mapped through
    ``sqrt(2) erfinv`` (the inverse-CDF method that ``jax.random.normal`` also uses).
    """
    state = jax.random.bits(key, (4,), jnp.uint32)
    _, bits = jax.lax.rng_bit_generator(state, (num,), jnp.uint32, algorithm=jax.lax.RandomAlgorithm.RNG_THREE_FRY)
    unit = jax.lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32) - 1.0  # [0, 1)
    lo = jnp.nextafter(jnp.float32(-1.0), jnp.float32(0.0))
    u = jnp.maximum(2.0 * unit - 1.0, lo)  # (-1, 1), never erfinv(-1) = -inf
    return (jnp.sqrt(jnp.float32(2.0)) * jax.lax.erf_inv(u)).astype(dtype)


def add_gaussian_noise(tree: PyTree, key: jax.Array, stddev: float | jax.Array) -> PyTree:
    """``tree + N(0, stddev^2)`` independently on every coordinate of every leaf.

    Args:
      tree: pytree of float arrays.
      key: PRNG key (see the module note on keys for production runs).
      stddev: standard deviation of the noise (``noise_multiplier * l2_clip`` in DP-SGD).
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    # One generator call per leaf: slicing one long draw into leaves is several times slower on CPU.
    keys = jax.random.split(key, max(len(leaves), 1))
    noisy = [x + (stddev * standard_normal(k, int(x.size))).reshape(x.shape).astype(x.dtype)
             for x, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, noisy)


def privatize(summed: PyTree, key: jax.Array, *, l2_clip: float, noise_multiplier: float,
              expected_batch_size: float) -> PyTree:
    """DP-SGD's gradient estimate ``(sum_i clip(g_i) + N(0, (sigma C)^2 I)) / (q n)``.

    Dividing by the *expected* batch size ``q n`` (a public constant), not by the realised one,
    keeps the normalisation data-independent, as the privacy analysis of Poisson sampling needs.

    Args:
      summed: clipped sum of per-example gradients (sensitivity ``l2_clip``).
      key: PRNG key of the noise.
      l2_clip: ``C``.
      noise_multiplier: ``sigma``.
      expected_batch_size: ``q n``.
    """
    # sigma = 0 (a debugging setting without privacy) needs no random numbers.
    noisy = summed if noise_multiplier == 0 else add_gaussian_noise(summed, key, noise_multiplier * l2_clip)
    return jax.tree_util.tree_map(lambda x: x / jnp.asarray(expected_batch_size, x.dtype), noisy)
