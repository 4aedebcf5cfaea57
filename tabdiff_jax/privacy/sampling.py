"""Poisson sampling into fixed-size padded batches, so that a jitted step compiles once.

Each of the ``n`` examples joins a batch independently with probability ``q``; the realised batch
size is ``Binomial(n, q)``. To keep shapes static, the chosen indices go into an array of fixed
``capacity`` with a boolean ``mask`` marking the real rows; padding rows point at example 0 (so
any loss stays finite on them) and are masked out of every sum. An empty batch is fine: the step
then adds only noise.

Overflow: when more than ``capacity`` examples are drawn, the batch is *truncated* to the first
``capacity`` of them (in index order) and the step reports ``overflow`` (how many were dropped).
:func:`poisson_capacity` chooses the capacity so that this happens with probability below a
target ``p`` per step. Privacy effect: the truncated run differs from the untruncated Poisson run
(which the accountant analyses) only on the event that some step overflows, of probability at most
``T p`` for ``T`` steps, for every data set. A standard coupling argument then turns the
accountant's ``(epsilon, delta)`` into ``(epsilon, delta + (1 + e^epsilon) T p)`` for the truncated
run; :func:`tabdiff_jax.privacy.accounting.truncation_delta` computes the extra term, and
:func:`tabdiff_jax.privacy.accounting.plan_privacy` sets ``p`` so that it is a negligible part of
the target ``delta`` and spends ``delta`` minus that part on the accountant.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from scipy import stats

from tabdiff_jax import validate


class PoissonBatch(NamedTuple):
    """One Poisson-sampled batch, padded to a static capacity.

    Attributes:
      indices: ``[capacity]`` int32 row indices (padding rows hold 0).
      mask: ``[capacity]`` bool, True for real rows.
      size: realised Poisson batch size before truncation, int32.
      overflow: number of sampled examples dropped by truncation (0 almost always), int32.
    """

    indices: jax.Array
    mask: jax.Array
    size: jax.Array
    overflow: jax.Array


def check_sampling(num_examples: int, sampling_rate: float) -> tuple[int, float]:
    """Validate ``n >= 1`` and ``0 < q <= 1``; raises ConfigError naming the argument."""
    return (validate.positive_int("num_examples", num_examples),
            validate.probability("sampling_rate", sampling_rate, closed_high=True))


def overflow_probability(num_examples: int, sampling_rate: float, capacity: int) -> float:
    """``P[Binomial(n, q) > capacity]``: the chance that one step truncates."""
    n, q = check_sampling(num_examples, sampling_rate)
    return float(stats.binom.sf(int(capacity), n, q))


def poisson_capacity(num_examples: int, sampling_rate: float, *, overflow_tail: float = 1e-9,
                     multiple: int = 8) -> int:
    """Smallest capacity (rounded up to ``multiple``) with ``P[overflow] <= overflow_tail``.

    The capacity is computed for ``n + 1`` examples, so it also holds on a neighbouring data set
    with one more row (the add/remove neighbour relation of the accountant).

    Args:
      num_examples: ``n``, the data set size.
      sampling_rate: ``q``.
      overflow_tail: target probability that one step overflows, in (0, 1).
      multiple: round the capacity up to a multiple of this (friendlier shapes for the compiler).

    Returns:
      The capacity, at most ``n`` rounded up to ``multiple``.

    Raises:
      ConfigError: bad ``num_examples``, ``sampling_rate``, ``overflow_tail`` or ``multiple``.
    """
    n, q = check_sampling(num_examples, sampling_rate)
    overflow_tail = validate.probability("overflow_tail", overflow_tail)
    multiple = validate.positive_int("multiple", multiple)
    # isf gives the smallest k with sf(k) <= tail, up to floating point; step up until it holds.
    k = int(max(stats.binom.isf(float(overflow_tail), n + 1, q), 0))
    while k < n + 1 and stats.binom.sf(k, n + 1, q) > overflow_tail:
        k += 1
    k = max(k, 1)
    return int(math.ceil(k / multiple) * multiple)


def poisson_sample(key: jax.Array, num_examples: int, sampling_rate: float, capacity: int) -> PoissonBatch:
    """Draw one Poisson batch (jit-friendly; ``num_examples`` and ``capacity`` must be static).

    Args:
      key: PRNG key.
      num_examples: ``n``.
      sampling_rate: ``q`` (may be a traced scalar).
      capacity: static size of the padded batch.

    Returns:
      A :class:`PoissonBatch` whose ``indices`` and ``mask`` have shape ``[capacity]``.
    """
    chosen = jax.random.bernoulli(key, sampling_rate, (num_examples,))
    size = jnp.sum(chosen, dtype=jnp.int32)
    (indices,) = jnp.nonzero(chosen, size=capacity, fill_value=0)
    mask = jnp.arange(capacity) < size
    return PoissonBatch(
        indices=indices.astype(jnp.int32),
        mask=mask,
        size=size,
        overflow=jnp.maximum(size - capacity, 0).astype(jnp.int32),
    )


def gather_rows(data, indices: jax.Array):
    """``data[indices]`` on every leaf of a pytree of ``[n, ...]`` arrays."""
    return jax.tree_util.tree_map(lambda x: jnp.take(x, indices, axis=0), data)
