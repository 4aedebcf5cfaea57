"""Column shapes, column-pair trends and association matrices of a real and a synthetic table.

Definitions follow SDMetrics (so that the numbers can be cross-checked column by column):

* **shape** of a numeric column: ``KSComplement`` = 1 - the two-sample Kolmogorov-Smirnov statistic
  (missing values dropped, values rounded to 14 decimals); of a categorical column:
  ``TVComplement`` = 1 - the total-variation distance of the category frequencies (missing dropped).
* **trend** of two numeric columns: ``CorrelationSimilarity`` = 1 - |r_real - r_synthetic| / 2 with
  Pearson's r over the rows where both are present; of any other pair: ``ContingencySimilarity`` =
  1 - the total-variation distance of the joint frequencies, where a number is put into 10 bins
  (missing values: a category of their own). ``binning="real"`` uses ``ContingencySimilarity``'s
  bins (edges from the real column, outer edges at +-inf); ``binning="separate"`` bins each table
  with its own edges, as SDMetrics' ``QualityReport`` does.

The **association matrix** mixes Pearson's r (two numbers), the correlation ratio eta (a number and
a category) and Cramer's V (two categories); ``correlation_diff`` is the Frobenius norm of the
difference of the real and synthetic matrices. An undefined association (a constant column) is 0.
All inputs are tables normalised by :func:`tabdiff_jax.evaluate.columns.prepare`.
"""

from __future__ import annotations

import itertools
from typing import Optional

import numpy as np
import pandas as pd

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.evaluate.columns import CATEGORICAL, NUMERIC, Columns, category_codes

NUM_BINS = 10
BINNINGS = ("real", "separate")
_DECIMALS = 14  # SDMetrics rounds to sys.float_info.dig - 1 decimals before the KS test


def ks_complement(real: np.ndarray, synthetic: np.ndarray) -> float:
    """1 - the two-sample KS statistic of two float arrays (``NaN`` dropped); ``NaN`` if one is empty."""
    x = np.sort(np.round(real[~np.isnan(real)], _DECIMALS))
    y = np.sort(np.round(synthetic[~np.isnan(synthetic)], _DECIMALS))
    if len(x) == 0 or len(y) == 0:
        return float("nan")
    grid = np.concatenate([x, y])
    cdf_x = np.searchsorted(x, grid, side="right") / len(x)
    cdf_y = np.searchsorted(y, grid, side="right") / len(y)
    return float(1.0 - np.max(np.abs(cdf_x - cdf_y)))


def _frequencies(codes: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(codes, minlength=size) / max(len(codes), 1)


def tv_complement(real: pd.Series, synthetic: pd.Series) -> float:
    """1 - the total-variation distance of two categorical columns' frequencies (missing dropped)."""
    real, synthetic = real.dropna(), synthetic.dropna()
    if len(real) == 0 or len(synthetic) == 0:
        return float("nan")
    (cr, cs), cats = category_codes([real, synthetic])
    return float(1.0 - 0.5 * np.abs(_frequencies(cr, len(cats)) - _frequencies(cs, len(cats))).sum())


def _bin_codes(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # np.digitize puts NaN past the last edge: missing values become a bin of their own.
    return np.digitize(values, edges).astype(np.int64)


def _hist_edges(values: np.ndarray) -> np.ndarray:
    present = values[~np.isnan(values)]
    return np.histogram_bin_edges(present if len(present) else np.zeros(1), bins=NUM_BINS)


def discrete_codes(real: pd.DataFrame, synthetic: pd.DataFrame, columns: Columns, binning: str = "real"):
    """Integer codes of every column of both tables: categories over their union, numbers binned.

    Returns:
      ``{column: (real_codes, synthetic_codes, number_of_codes)}``.
    """
    if binning not in BINNINGS:
        raise ConfigError(f"binning must be one of {BINNINGS}, got {binning!r}")
    out = {}
    for c, kind in columns.kinds.items():
        if kind == CATEGORICAL:
            (a, b), cats = category_codes([real[c], synthetic[c]])
            out[c] = (a.astype(np.int64), b.astype(np.int64), len(cats) + 1)
            continue
        x, y = real[c].to_numpy(np.float64), synthetic[c].to_numpy(np.float64)
        if binning == "real":
            edges = _hist_edges(x)
            edges[0], edges[-1] = -np.inf, np.inf
            a, b = _bin_codes(x, edges), _bin_codes(y, edges)
        else:
            a, b = _bin_codes(x, _hist_edges(x)), _bin_codes(y, _hist_edges(y))
        out[c] = (a, b, NUM_BINS + 2)
    return out


def _joint_counts(a: np.ndarray, b: np.ndarray, size_b: int) -> tuple[np.ndarray, np.ndarray]:
    """Observed (a, b) cells as int64 keys and their counts (only the non-empty cells)."""
    return np.unique(a.astype(np.int64) * size_b + b, return_counts=True)


def contingency_similarity(a_real, b_real, a_syn, b_syn, size_b: int) -> float:
    """1 - the total-variation distance of the joint frequencies of two coded columns."""
    keys_r, counts_r = _joint_counts(a_real, b_real, size_b)
    keys_s, counts_s = _joint_counts(a_syn, b_syn, size_b)
    keys = np.union1d(keys_r, keys_s)
    p = np.zeros(len(keys))
    q = np.zeros(len(keys))
    p[np.searchsorted(keys, keys_r)] = counts_r / len(a_real)
    q[np.searchsorted(keys, keys_s)] = counts_s / len(a_syn)
    return float(1.0 - 0.5 * np.abs(p - q).sum())


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r over the rows where both are present; ``NaN`` if either is constant there."""
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 2:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def correlation_ratio(values: np.ndarray, groups: np.ndarray) -> float:
    """Correlation ratio eta of a number given a category (rows with a missing number dropped)."""
    keep = ~np.isnan(values)
    values, groups = values[keep], groups[keep]
    if len(values) == 0:
        return float("nan")
    counts = np.bincount(groups)
    sums = np.bincount(groups, weights=values)
    present = counts > 0
    means = sums[present] / counts[present]
    total = ((values - values.mean()) ** 2).sum()
    between = (counts[present] * (means - values.mean()) ** 2).sum()
    return float(np.sqrt(between / total)) if total > 0 else float("nan")


def cramers_v(a: np.ndarray, b: np.ndarray, size_b: int) -> float:
    """Cramer's V of two coded columns (no bias correction); ``NaN`` if either is constant.

    Uses ``chi2 = n (sum_ij O_ij^2 / (R_i C_j) - 1)`` over the observed cells only, so that two
    columns with thousands of categories never need a dense contingency table.
    """
    keys, counts = _joint_counts(a, b, size_b)
    rows, cols = keys // size_b, keys % size_b
    row_of = np.unique(rows, return_inverse=True)[1]
    col_of = np.unique(cols, return_inverse=True)[1]
    row_totals = np.bincount(row_of, weights=counts)
    col_totals = np.bincount(col_of, weights=counts)
    k = min(len(row_totals), len(col_totals)) - 1
    if k < 1:
        return float("nan")
    n = counts.sum()
    chi2 = n * (np.sum(counts.astype(np.float64) ** 2 / (row_totals[row_of] * col_totals[col_of])) - 1.0)
    return float(np.sqrt(max(chi2, 0.0) / (n * k)))


def shape_scores(real: pd.DataFrame, synthetic: pd.DataFrame, columns: Columns) -> dict[str, dict]:
    """Per-column shape: ``{column: {"metric": "KSComplement" | "TVComplement", "score": float}}``."""
    out = {}
    for c, kind in columns.kinds.items():
        if kind == NUMERIC:
            score = ks_complement(real[c].to_numpy(np.float64), synthetic[c].to_numpy(np.float64))
            out[c] = {"metric": "KSComplement", "score": score}
        else:
            out[c] = {"metric": "TVComplement", "score": tv_complement(real[c], synthetic[c])}
    return out


def _association(kind_a, kind_b, x, y, codes_a, codes_b, size_b) -> float:
    if kind_a == NUMERIC and kind_b == NUMERIC:
        value = pearson(x, y)
    elif kind_a == NUMERIC:
        value = correlation_ratio(x, codes_b)
    elif kind_b == NUMERIC:
        value = correlation_ratio(y, codes_a)
    else:
        value = cramers_v(codes_a, codes_b, size_b)
    return 0.0 if np.isnan(value) else value


def pair_scores(real: pd.DataFrame, synthetic: pd.DataFrame, columns: Columns, binning: str = "real") -> list[dict]:
    """Trend and association of every column pair (in column order).

    Returns:
      One dict per pair: ``columns``, ``metric`` (``CorrelationSimilarity`` or
      ``ContingencySimilarity``), ``score``, ``association`` (``pearson``, ``correlation_ratio``
      or ``cramers_v``), ``real_association`` and ``synthetic_association``.
    """
    binned = discrete_codes(real, synthetic, columns, binning)
    # Associations always use the categories themselves (not bins) for categorical columns.
    cats = {c: binned[c] for c in columns.categorical}
    out = []
    for a, b in itertools.combinations(columns.names, 2):
        ka, kb = columns.kinds[a], columns.kinds[b]
        xr, yr = (real[c].to_numpy(np.float64) if columns.kinds[c] == NUMERIC else None for c in (a, b))
        xs, ys = (synthetic[c].to_numpy(np.float64) if columns.kinds[c] == NUMERIC else None for c in (a, b))
        if ka == NUMERIC and kb == NUMERIC:
            r_real, r_syn = pearson(xr, yr), pearson(xs, ys)
            score = 1.0 - abs(r_real - r_syn) / 2.0
            metric = "CorrelationSimilarity"
        else:
            (ar, as_, _), (br, bs, size_b) = binned[a], binned[b]
            score = contingency_similarity(ar, br, as_, bs, size_b)
            metric = "ContingencySimilarity"
        ca_r, ca_s, _ = cats.get(a, (None, None, 0))
        cb_r, cb_s, size_cb = cats.get(b, (None, None, 0))
        out.append({
            "columns": [a, b],
            "metric": metric,
            "score": float(score),
            "association": "pearson" if ka == kb == NUMERIC else ("cramers_v" if ka == kb == CATEGORICAL else "correlation_ratio"),
            "real_association": _association(ka, kb, xr, yr, ca_r, cb_r, size_cb),
            "synthetic_association": _association(ka, kb, xs, ys, ca_s, cb_s, size_cb),
        })
    return out


def association_matrices(pairs: list[dict], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Real and synthetic association matrices ``[columns, columns]`` (diagonal 1) from :func:`pair_scores`."""
    index = {c: i for i, c in enumerate(names)}
    mats = [np.eye(len(names)), np.eye(len(names))]
    for p in pairs:
        i, j = index[p["columns"][0]], index[p["columns"][1]]
        for m, key in zip(mats, ("real_association", "synthetic_association")):
            m[i, j] = m[j, i] = p[key]
    return mats[0], mats[1]


def fidelity_scores(real: pd.DataFrame, synthetic: pd.DataFrame, columns: Columns, binning: str = "real") -> dict:
    """Shape, trend and correlation difference with their per-column / per-pair details.

    Returns:
      ``{"shape", "trend", "correlation_diff", "columns": {...}, "pairs": [...],
      "association_real", "association_synthetic"}`` (the two matrices as nested lists).
    """
    per_column = shape_scores(real, synthetic, columns)
    pairs = pair_scores(real, synthetic, columns, binning)
    a_real, a_syn = association_matrices(pairs, columns.names)
    shape = np.nanmean([v["score"] for v in per_column.values()]) if per_column else float("nan")
    trend = np.nanmean([p["score"] for p in pairs]) if pairs else float("nan")
    return {
        "shape": float(shape),
        "trend": float(trend),
        "correlation_diff": float(np.linalg.norm(a_real - a_syn)),
        "columns": per_column,
        "pairs": pairs,
        "association_real": a_real.tolist(),
        "association_synthetic": a_syn.tolist(),
    }


def column_summary(series: pd.Series, kind: str, top: Optional[int] = 5) -> dict:
    """A small description of one column for the report's per-column details."""
    out = {"missing_share": float(series.isna().mean())}
    if kind == NUMERIC:
        x = series.to_numpy(np.float64)
        x = x[~np.isnan(x)]
        if len(x):
            out.update(mean=float(x.mean()), std=float(x.std()), min=float(x.min()), max=float(x.max()))
    else:
        counts = series.value_counts(normalize=True)
        out["categories"] = int(len(counts))
        out["top"] = {str(k): float(v) for k, v in counts.head(top).items()}
    return out
