"""Column kinds and the aligned, normalised tables every evaluation metric reads.

The *real* table decides each column's kind: numbers (int / float dtypes) are ``"numeric"``;
``object``, string, ``category`` and ``bool`` columns are ``"categorical"``. Every other table
(synthetic, holdout, test) must have the same column set; it is reordered to the real table's
order and converted to the same kinds:

* numeric columns become float64 (missing values stay ``NaN``; infinities are an error);
* categorical columns become Python strings with missing values kept as ``NaN``, so that
  ``1`` / ``1.0`` / ``"1"`` and ``True`` / ``"True"`` are the same category in every table.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

import numpy as np
import pandas as pd

from tabdiff_jax.errors import ConfigError, DataError

NUMERIC = "numeric"
CATEGORICAL = "categorical"
KINDS = (NUMERIC, CATEGORICAL)


def infer_kind(series: pd.Series) -> str:
    """``"numeric"`` for int / float dtypes, ``"categorical"`` for object, string, category and bool.

    Raises:
      DataError: the dtype is neither (datetimes, timedeltas, complex numbers ...).
    """
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return CATEGORICAL
    if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
        return CATEGORICAL
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return NUMERIC
    raise DataError(f"column {series.name!r} has dtype {dtype}, which the evaluation does not support; convert it to numbers or strings")


def infer_kinds(df: pd.DataFrame, column_kinds: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Kind of every column of ``df``, in column order; ``column_kinds`` overrides some of them.

    Raises:
      ConfigError: an override names a column that does not exist or a kind other than
        ``"numeric"`` / ``"categorical"``.
      DataError: a column has an unsupported dtype, or a column forced to ``"numeric"`` holds text.
    """
    overrides = dict(column_kinds or {})
    for name, kind in overrides.items():
        if name not in df.columns:
            raise ConfigError(f"column_kinds names {name!r}, which is not a column")
        if kind not in KINDS:
            raise ConfigError(f"column_kinds[{name!r}] = {kind!r}; expected one of {KINDS}")
    return {str(c): overrides.get(c) or infer_kind(df[c]) for c in df.columns}


def category_strings(series: pd.Series) -> pd.Series:
    """Values as strings (integral floats without ``.0``), missing values as ``NaN``, dtype object."""
    values = series.to_numpy(dtype=object, na_value=np.nan)
    missing = pd.isna(values)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if missing[i]:
            out[i] = np.nan
        elif isinstance(v, (float, np.floating)) and float(v).is_integer():
            out[i] = str(int(v))
        else:
            out[i] = str(v)
    return pd.Series(out, index=series.index, name=series.name, dtype=object)


def _normalise_column(series: pd.Series, kind: str, table: str) -> pd.Series:
    if kind == CATEGORICAL:
        if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
            # Fast path: already strings (object or string dtype) and missing values.
            return pd.Series(series.to_numpy(dtype=object, na_value=np.nan), index=series.index, name=series.name)
        return category_strings(series)
    if pd.api.types.is_bool_dtype(series.dtype):
        raise DataError(f"{table} column {series.name!r} is boolean but the real column is numeric")
    try:
        values = pd.to_numeric(series, errors="raise").astype("float64")
    except (ValueError, TypeError) as exc:
        raise DataError(f"{table} column {series.name!r} must be numeric like the real column ({exc})") from exc
    if np.isinf(values.to_numpy()).any():
        raise DataError(f"{table} column {series.name!r} contains infinite values")
    return values


@dataclasses.dataclass(frozen=True)
class Columns:
    """The evaluated columns: their kinds (real table's order), the optional target, and the numeric
    columns whose real dtype is an integer type."""

    kinds: dict
    target: Optional[str] = None
    integers: tuple = ()

    @property
    def names(self) -> list[str]:
        return list(self.kinds)

    @property
    def numeric(self) -> list[str]:
        return [c for c, k in self.kinds.items() if k == NUMERIC]

    @property
    def categorical(self) -> list[str]:
        return [c for c, k in self.kinds.items() if k == CATEGORICAL]


def prepare(
    real: pd.DataFrame,
    others: Mapping[str, Optional[pd.DataFrame]],
    *,
    target: Optional[str] = None,
    column_kinds: Optional[Mapping[str, str]] = None,
) -> tuple[Columns, dict[str, Optional[pd.DataFrame]]]:
    """Check and normalise ``real`` and every table in ``others`` (``None`` entries pass through).

    Returns:
      ``(columns, tables)`` where ``tables`` maps ``"real"`` and each key of ``others`` to a
      normalised copy (columns in the real table's order, kinds as described in the module).

    Raises:
      DataError: a table is not a non-empty DataFrame, has duplicate columns, its column set differs
        from the real table's (the message names the missing and extra columns), the target is not
        a column, or a value does not fit its column's kind.
    """
    tables = {"real": real, **dict(others)}
    for name, df in tables.items():
        if df is None:
            continue
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
        if df.shape[0] == 0 or df.shape[1] == 0:
            raise DataError(f"the {name} table is empty ({df.shape[0]} rows, {df.shape[1]} columns)")
        dup = df.columns[df.columns.duplicated()].tolist()
        if dup:
            raise DataError(f"the {name} table has duplicate columns: {', '.join(map(str, dup))}")
    real = real.rename(columns=str)
    kinds = infer_kinds(real, column_kinds)
    if target is not None and target not in kinds:
        raise DataError(f"target {target!r} is not a column of the real table; columns are: {', '.join(kinds)}")
    out: dict[str, Optional[pd.DataFrame]] = {}
    for name, df in tables.items():
        if df is None:
            out[name] = None
            continue
        df = df.rename(columns=str)
        missing = [c for c in kinds if c not in df.columns]
        extra = [c for c in df.columns if c not in kinds]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(map(repr, missing))}")
            if extra:
                parts.append(f"unexpected {', '.join(map(repr, extra))}")
            raise DataError(f"the {name} table's columns differ from the real table's: {'; '.join(parts)}")
        out[name] = pd.DataFrame(
            {c: _normalise_column(df[c], kinds[c], name).to_numpy() for c in kinds},
            index=pd.RangeIndex(len(df)),
        ).astype({c: (object if k == CATEGORICAL else "float64") for c, k in kinds.items()})
    integers = tuple(c for c, k in kinds.items() if k == NUMERIC and pd.api.types.is_integer_dtype(real[c].dtype))
    return Columns(kinds=kinds, target=target, integers=integers), out


def category_codes(series_list: list[pd.Series]) -> tuple[list[np.ndarray], list[str]]:
    """Integer codes over the union of the categories of several columns (missing: its own code).

    Returns:
      ``(codes, categories)``: one int32 array per input series and the sorted category names; a
      missing value gets code ``len(categories)``.
    """
    values = pd.concat([s.dropna() for s in series_list], ignore_index=True)
    categories = sorted(pd.unique(values).tolist())
    index = pd.Index(categories)
    codes = []
    for s in series_list:
        c = index.get_indexer(s.to_numpy()).astype(np.int32)
        c[pd.isna(s.to_numpy())] = len(categories)
        codes.append(c)
    return codes, categories


def seeded_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into (kept, held out) index arrays; ``fraction`` of the rows held out."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"split fraction must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(n * fraction)))
    return np.sort(order[k:]), np.sort(order[:k])
