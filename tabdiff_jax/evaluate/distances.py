"""Nearest neighbours between mixed-type tables in JAX, in fixed-size chunks.

Rows are encoded as :class:`EncodedRows`: numbers scaled by a reference table's min / range
(``NaN`` marks a missing value) and categories as integer codes. Two distances are supported:

* ``"euclidean"``: the Euclidean distance between ``[min-max scaled numbers | one-hot categories]``
  (a differing category adds 2 to the squared distance, as two one-hot entries differ by 1);
* ``"sdmetrics"``: SDMetrics' DCR distance: per number ``min(|a - b| / range, 1)`` (``range`` 0:
  1 if the values differ), per category 0 / 1, averaged over the columns.

For both, a number missing in exactly one row adds 1 and missing in both adds 0.

:func:`nearest_neighbours` walks the (reference chunk, query chunk) grid with one jitted block
function whose shapes are fixed (the last chunk of each side is padded and masked), so it compiles
once per column layout and never holds more than one ``[chunk, chunk]`` block of distances. It
searches several reference tables (e.g. train and holdout) in one call, can skip each row itself
(nearest *other* row of a table) and can return the index of the nearest row.
"""

from __future__ import annotations

import functools
import warnings
from typing import NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.evaluate.columns import Columns, category_codes

METRICS = ("euclidean", "sdmetrics")
_CONSTANT_WEIGHT = 1e30  # |a - b| * 1e30 caps at 1 for any real difference: SDMetrics' "range 0" rule.


class EncodedRows(NamedTuple):
    """Rows ready for :func:`nearest_neighbours`.

    Attributes:
      numeric: float32 ``[n, num_numeric]``, scaled numbers, ``NaN`` where missing.
      codes: int32 ``[n, num_categorical]``, category codes (one code per missing value).
    """

    numeric: np.ndarray
    codes: np.ndarray

    @property
    def num_rows(self) -> int:
        return int(self.numeric.shape[0])

    def take(self, index: np.ndarray) -> "EncodedRows":
        return EncodedRows(self.numeric[index], self.codes[index])


def concat_rows(parts: Sequence[EncodedRows]) -> EncodedRows:
    return EncodedRows(np.concatenate([p.numeric for p in parts]), np.concatenate([p.codes for p in parts]))


def encode_rows(tables: Sequence[pd.DataFrame], columns: Columns, *, reference: pd.DataFrame) -> tuple[list[EncodedRows], np.ndarray]:
    """Encode normalised tables (see :func:`~tabdiff_jax.evaluate.columns.prepare`) for distances.

    Numbers are min-max scaled with the minimum and range of ``reference`` (a constant column is only
    shifted); category codes are taken over the union of the categories of all ``tables``.

    Returns:
      ``(rows, weights)``: one :class:`EncodedRows` per table and the float32 per-number weights
      that the ``"sdmetrics"`` distance needs (``1e30`` marks a constant reference column).
    """
    num, cat = columns.numeric, columns.categorical
    ref = reference[num].to_numpy(dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column: treated as constant
        lo = np.nanmin(ref, axis=0) if len(ref) else np.zeros(len(num))
        span = np.nanmax(ref, axis=0) - lo if len(ref) else np.zeros(len(num))
    constant = ~(span > 0)
    lo = np.where(np.isnan(lo), 0.0, lo)
    divisor = np.where(constant, 1.0, span)
    weights = np.where(constant, _CONSTANT_WEIGHT, 1.0).astype(np.float32)
    codes_per_column = [category_codes([t[c] for t in tables])[0] for c in cat]
    rows = []
    for i, t in enumerate(tables):
        numeric = ((t[num].to_numpy(dtype=np.float64) - lo) / divisor).astype(np.float32)
        codes = np.stack([cc[i] for cc in codes_per_column], axis=1) if cat else np.zeros((len(t), 0), np.int32)
        rows.append(EncodedRows(numeric.reshape(len(t), len(num)), codes.astype(np.int32)))
    return rows, weights


def _pair_sums(rn, rc, qn, qc, weights, metric: str, has_missing: bool):
    """``[cr, cq]`` sums of the per-column terms (before the final sqrt / average).

    Reference rows run along axis 0, so that the nearest-row search reduces over the major axis.
    """
    total = jnp.zeros((rn.shape[0], qn.shape[0]), jnp.float32)
    # One broadcast op per column: XLA fuses them into one elementwise pass over the block, which is
    # far faster than a [cr, cq, columns] tensor reduced over its short last axis.
    for j in range(qn.shape[1]):
        a, b = rn[:, j, None], qn[None, :, j]
        diff = a - b
        term = diff * diff if metric == "euclidean" else jnp.minimum(jnp.abs(diff) * weights[j], 1.0)
        if has_missing:
            ma, mb = jnp.isnan(a), jnp.isnan(b)
            term = jnp.where(ma | mb, (ma != mb).astype(jnp.float32), term)
        total = total + term
    if qc.shape[1]:
        mismatches = jnp.zeros_like(total)
        for j in range(qc.shape[1]):
            mismatches = mismatches + (rc[:, j, None] != qc[None, :, j]).astype(jnp.float32)
        total = total + (2.0 if metric == "euclidean" else 1.0) * mismatches
    return total


def _min_over_rows(d, with_index: bool):
    """Minimum (and first arg-minimum) over axis 0 of ``d`` (a power-of-two number of rows).

    Folding halves elementwise vectorises well on CPU, where XLA's fused reductions of a large
    elementwise producer do not; on ties the lower row index wins.
    """
    idx = jax.lax.broadcasted_iota(jnp.int32, d.shape, 0) if with_index else None
    while d.shape[0] > 1:
        h = d.shape[0] // 2
        take_low = d[:h] <= d[h:]
        if with_index:
            idx = jnp.where(take_low, idx[:h], idx[h:])
        d = jnp.where(take_low, d[:h], d[h:])
    return d[0], (idx[0] if with_index else None)


@functools.partial(jax.jit, static_argnames=("metric", "has_missing", "exclude_self", "with_index"))
def _block(rn, rc, r_valid, qn, qc, weights, r_offset, q_offset, best_d, best_i,
           *, metric, has_missing, exclude_self, with_index):
    """Merge one reference chunk into the running nearest (distance, index) of one query chunk."""
    d = _pair_sums(rn, rc, qn, qc, weights, metric, has_missing)
    invalid = ~r_valid[:, None]
    if exclude_self:
        r_ids = r_offset + jnp.arange(rn.shape[0], dtype=jnp.int32)[:, None]
        q_ids = q_offset + jnp.arange(qn.shape[0], dtype=jnp.int32)[None, :]
        invalid = invalid | (r_ids == q_ids)
    d = jnp.where(invalid, jnp.inf, d)
    new_d, new_i = _min_over_rows(d, with_index)
    better = new_d < best_d  # strict: on ties the earlier chunk (lower index) wins
    best_d = jnp.where(better, new_d, best_d)
    if with_index:
        best_i = jnp.where(better, new_i + r_offset, best_i)
    return best_d, best_i


def _chunk_size(n: int, limit: int) -> int:
    """Power of two >= n (at least 128), at most ``limit``: small inputs compile small blocks."""
    limit = 1 << max(7, int(limit).bit_length() - 1)
    return int(min(limit, max(128, 1 << max(0, int(n - 1).bit_length()))))


def _chunks(x: np.ndarray, size: int, fill) -> list[jax.Array]:
    n = x.shape[0]
    padded_n = -(-max(n, 1) // size) * size
    pad = np.full((padded_n - n,) + x.shape[1:], fill, dtype=x.dtype)
    full = np.concatenate([x, pad]) if len(pad) else x
    return [jnp.asarray(full[i:i + size]) for i in range(0, padded_n, size)]


def nearest_neighbours(
    queries: EncodedRows,
    references: Union[EncodedRows, Sequence[EncodedRows]],
    *,
    metric: str = "euclidean",
    weights: Optional[np.ndarray] = None,
    exclude_self: bool = False,
    with_index: bool = False,
    chunk_size: int = 2048,
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Distance from every query row to its nearest row in each reference table, chunk by chunk.

    Args:
      queries: rows from the same :func:`encode_rows` call as the references.
      references: one table or a list of tables; each is searched separately.
      metric: ``"euclidean"`` or ``"sdmetrics"`` (see the module docstring).
      weights: per-number weights from :func:`encode_rows` (used by ``"sdmetrics"``).
      exclude_self: the queries *are* the (single) reference table: row ``i`` is not its own neighbour.
      with_index: also return the index of the nearest row (costs about twice the time on CPU).
      chunk_size: rows per block on each side (rounded down to a power of two); memory is
        ``O(chunk_size**2)`` whatever the table sizes.

    Returns:
      ``(distance, index)``: float64 ``[n_queries, n_references]`` in the metric's units (``inf``
      when a reference table has no eligible row), and int64 indices into each reference table
      (``-1`` likewise), or ``None`` without ``with_index``.

    Raises:
      ConfigError: unknown metric, mismatched column layouts, or ``exclude_self`` with a reference
        table whose rows are not the queries' rows.
    """
    refs = [references] if isinstance(references, EncodedRows) else list(references)
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {METRICS}, got {metric!r}")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be positive, got {chunk_size}")
    for r in refs:
        if queries.numeric.shape[1] != r.numeric.shape[1] or queries.codes.shape[1] != r.codes.shape[1]:
            raise ConfigError("queries and references have different column layouts; encode them with one encode_rows call")
    if exclude_self and (len(refs) != 1 or refs[0].num_rows != queries.num_rows):
        raise ConfigError("exclude_self needs exactly one reference table with the queries' rows")
    num_numeric, num_categorical = queries.numeric.shape[1], queries.codes.shape[1]
    w = jnp.asarray(np.ones(num_numeric, np.float32) if weights is None else np.asarray(weights, np.float32))
    has_missing = bool(np.isnan(queries.numeric).any() or any(np.isnan(r.numeric).any() for r in refs))
    nq = queries.num_rows
    cq = _chunk_size(nq, chunk_size)
    q_chunks = list(zip(_chunks(queries.numeric, cq, 0.0), _chunks(queries.codes, cq, 0)))
    static = dict(metric=metric, has_missing=has_missing, exclude_self=exclude_self, with_index=with_index)
    finish = _finisher(metric, num_numeric + num_categorical)
    distances, indices = [], []
    for ref in refs:
        cr = _chunk_size(ref.num_rows, chunk_size)
        r_chunks = list(zip(_chunks(ref.numeric, cr, 0.0), _chunks(ref.codes, cr, 0),
                            _chunks(np.ones(ref.num_rows, bool), cr, False)))
        out_d, out_i = [], []
        for i, (qn, qc) in enumerate(q_chunks):
            best_d = jnp.full((cq,), jnp.inf, jnp.float32)
            best_i = jnp.full((cq,), -1, jnp.int32)
            for j, (rn, rc, rv) in enumerate(r_chunks):
                best_d, best_i = _block(rn, rc, rv, qn, qc, w, np.int32(j * cr), np.int32(i * cq), best_d, best_i, **static)
            out_d.append(best_d)
            out_i.append(best_i)
        distances.append(finish(np.concatenate([np.asarray(d) for d in out_d])[:nq]))
        indices.append(np.concatenate([np.asarray(i) for i in out_i])[:nq].astype(np.int64))
    distance = np.stack(distances, axis=1)
    return distance, (np.stack(indices, axis=1) if with_index else None)


def _finisher(metric: str, num_columns: int):
    if metric == "euclidean":
        return lambda d: np.sqrt(np.maximum(d.astype(np.float64), 0.0))
    return lambda d: d.astype(np.float64) / max(num_columns, 1)


def nearest(queries: EncodedRows, reference: EncodedRows, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Distance ``[n_queries]`` and index ``[n_queries]`` of each query's nearest reference row."""
    distance, index = nearest_neighbours(queries, reference, with_index=True, **kwargs)
    return distance[:, 0], index[:, 0]
