"""Conditional vectors and training-by-sampling (CTGAN, Xu et al. 2019), with static shapes.

A :class:`ConditionSampler` covers a set of categorical blocks of the layout (CTGAN: every
categorical column; CGAN: one column, the target by default). Each training row of the
generator gets a condition ``(block, category)``: the block uniformly at random, the category
with probability proportional to ``log(1 + count)`` (CTGAN's log-frequency; ``log_frequency=False``
uses the plain frequencies), and the real rows the critic sees are drawn among the rows that have
that category ("training-by-sampling"), so that rare categories are learnt.

Everything a jitted step needs is an array: ``row_order[j]`` lists the row indices sorted by their
category in block ``j``; the rows of category ``c`` are ``row_order[j, start[j, c] : start[j, c] +
count[j, c]]``. A row is drawn as ``row_order[j, start + floor(u * count)]``.

The condition vector is the concatenation of one one-hot slot per covered block: zeros except a
one at the chosen category of the chosen block, ``[batch, cond_dim]``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from tabdiff_jax.blocks import block_offsets
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.table import TableLayout


@struct.dataclass
class ConditionSampler:
    """Arrays of training-by-sampling for the covered blocks (``m`` blocks, largest size ``s``).

    Attributes:
      row_order: ``[m, n]`` int32, row indices sorted by category within each block.
      row_start: ``[m, s]`` int32, first position of each category in ``row_order``.
      row_count: ``[m, s]`` int32, number of rows of each category (0 for padding).
      train_logits: ``[m, s]`` float32, log-probabilities of categories during training.
      sample_logits: ``[m, s]`` float32, log empirical frequencies (for generation).
      blocks: indices of the covered blocks among ``layout.categorical_names`` (static).
      sizes: number of categories of each covered block (static).
      dense_offsets: first column of each covered block in the dense layout (static).
    """

    row_order: jax.Array
    row_start: jax.Array
    row_count: jax.Array
    train_logits: jax.Array
    sample_logits: jax.Array
    blocks: tuple[int, ...] = struct.field(pytree_node=False)
    sizes: tuple[int, ...] = struct.field(pytree_node=False)
    dense_offsets: tuple[int, ...] = struct.field(pytree_node=False)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def cond_dim(self) -> int:
        return int(sum(self.sizes))

    @property
    def cond_offsets(self) -> tuple[int, ...]:
        return block_offsets(self.sizes)


def build_condition_sampler(codes: np.ndarray, layout: TableLayout, blocks: Sequence[int], *,
                            log_frequency: bool = True) -> ConditionSampler:
    """Index the training rows by category for the given categorical ``blocks``.

    Args:
      codes: ``[n, layout.num_categorical]`` integer codes of the training rows.
      layout: the table layout.
      blocks: indices of the categorical blocks to condition on (non-empty).
      log_frequency: training categories drawn with probability ``~ log(1 + count)``.

    Raises:
      ConfigError: ``blocks`` is empty or names a block outside the layout.
    """
    blocks = tuple(int(b) for b in blocks)
    if not blocks:
        raise ConfigError("blocks: a condition needs at least one categorical block")
    for b in blocks:
        if not 0 <= b < layout.num_categorical:
            raise ConfigError(f"blocks: {b} is not a categorical block index (0..{layout.num_categorical - 1})")
    codes = np.asarray(codes)
    sizes = tuple(int(layout.categorical_sizes[b]) for b in blocks)
    width = max(sizes)
    order = np.zeros((len(blocks), codes.shape[0]), np.int32)
    start = np.zeros((len(blocks), width), np.int32)
    count = np.zeros((len(blocks), width), np.int32)
    train = np.full((len(blocks), width), -np.inf, np.float32)
    sample = np.full((len(blocks), width), -np.inf, np.float32)
    for j, (b, size) in enumerate(zip(blocks, sizes)):
        column = codes[:, b]
        order[j] = np.argsort(column, kind="stable")
        counts = np.bincount(column, minlength=size)[:size]
        count[j, :size] = counts
        start[j, :size] = np.concatenate([[0], np.cumsum(counts)[:-1]])
        weight = np.log1p(counts) if log_frequency else counts.astype(np.float64)
        with np.errstate(divide="ignore"):
            train[j, :size] = np.log(weight / weight.sum())
            sample[j, :size] = np.log(counts / counts.sum())
    offsets = tuple(layout.num_numeric + layout.onehot_offsets[b] for b in blocks)
    return ConditionSampler(jnp.asarray(order), jnp.asarray(start), jnp.asarray(count), jnp.asarray(train),
                            jnp.asarray(sample), blocks=blocks, sizes=sizes, dense_offsets=offsets)


def sample_condition(sampler: ConditionSampler, key: jax.Array, batch: int, *,
                     training: bool = True) -> tuple[jax.Array, jax.Array]:
    """Draw ``(block_id [batch], category [batch])``: block uniform, category by the training
    (log-frequency) or the empirical probabilities."""
    k_block, k_cat = jax.random.split(key)
    block_id = jax.random.randint(k_block, (batch,), 0, sampler.num_blocks)
    logits = (sampler.train_logits if training else sampler.sample_logits)[block_id]
    return block_id, jax.random.categorical(k_cat, logits, axis=-1).astype(jnp.int32)


def sample_rows(sampler: ConditionSampler, key: jax.Array, block_id: jax.Array, category: jax.Array) -> jax.Array:
    """Indices ``[batch]`` of training rows, each uniform among the rows with its condition."""
    count = sampler.row_count[block_id, category]
    offset = jnp.floor(jax.random.uniform(key, block_id.shape) * count).astype(jnp.int32)
    position = sampler.row_start[block_id, category] + jnp.minimum(offset, jnp.maximum(count - 1, 0))
    return sampler.row_order[block_id, position]


def condition_vector(sampler: ConditionSampler, block_id: jax.Array, category: jax.Array) -> jax.Array:
    """One-hot condition vectors ``[batch, cond_dim]``."""
    offsets = jnp.asarray(sampler.cond_offsets, jnp.int32)
    return jax.nn.one_hot(offsets[block_id] + category, sampler.cond_dim, dtype=jnp.float32)


def raw_condition_blocks(sampler: ConditionSampler, raw: jax.Array) -> list[jax.Array]:
    """The generator's raw outputs of each covered block, ``[batch, size_j]`` each."""
    return [raw[:, o:o + s] for o, s in zip(sampler.dense_offsets, sampler.sizes)]


def impose_condition(sampler: ConditionSampler, rows: jax.Array, block_id: jax.Array,
                     category: jax.Array) -> jax.Array:
    """Rows ``[batch, dense_dim]`` whose conditioned block is replaced by the one-hot category."""
    for j, (o, s) in enumerate(zip(sampler.dense_offsets, sampler.sizes)):
        onehot = jax.nn.one_hot(category, s, dtype=rows.dtype)
        block = jnp.where((block_id == j)[:, None], onehot, rows[:, o:o + s])
        rows = rows.at[:, o:o + s].set(block)
    return rows


def fixed_condition(sampler: ConditionSampler, layout: TableLayout, block_name: str,
                    category: int, batch: int) -> tuple[jax.Array, jax.Array]:
    """``(block_id, category)`` arrays ``[batch]`` that fix block ``block_name`` to ``category``.

    Raises:
      ConfigError: the block is not covered by the sampler, or the category is out of range.
    """
    names = [layout.categorical_names[b] for b in sampler.blocks]
    if block_name not in names:
        raise ConfigError(f"condition: column {block_name!r} is not a conditioning column; expected one of {names}")
    j = names.index(block_name)
    if not 0 <= int(category) < sampler.sizes[j]:
        raise ConfigError(f"condition: category code {category} out of range for column {block_name!r}")
    return jnp.full((batch,), j, jnp.int32), jnp.full((batch,), int(category), jnp.int32)


def category_blocks(layout: TableLayout, column: Optional[str] = None) -> tuple[int, ...]:
    """Block indices to condition on: ``column``'s block, or every ``"category"``-role block."""
    if column is not None:
        if column not in layout.categorical_names:
            raise ConfigError(f"condition_column: {column!r} is not a categorical column; "
                              f"categorical columns: {list(layout.categorical_names)}")
        return (layout.categorical_names.index(column),)
    return tuple(i for i, role in enumerate(layout.categorical_roles) if role == "category")
