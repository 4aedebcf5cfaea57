"""Host halves of the preprocessor: DataFrame <-> raw arrays, vectorised with numpy / pandas.

Raw arrays are what the pure jnp halves consume and produce:

* ``raw_numeric`` float32 ``[n, num_numeric_columns]``: numeric and datetime columns in table
  order, as ``x - low`` (datetimes: units since ``origin_ns``), ``NaN`` where missing;
* ``raw_codes`` int32 ``[n, num_categorical_columns]``: categorical columns in table order, as the
  index of the label in ``spec.categories``; a missing value is code ``len(spec.categories)``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from tabdiff_jax.errors import DataError
from tabdiff_jax.preprocess import inference
from tabdiff_jax.preprocess.schema import (
    CATEGORICAL,
    DATETIME,
    DATETIME_UNITS,
    ColumnSpec,
    datetime_ns,
)

_NAT = np.iinfo(np.int64).min


def check_table(df) -> None:
    """Raise :class:`DataError` unless ``df`` is a non-empty DataFrame with unique string column names."""
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame, got {type(df).__name__}")
    if df.shape[1] == 0:
        raise DataError("the table has no columns")
    dup = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if dup:
        raise DataError(f"duplicate column name(s) {dup!r}")
    bad = [c for c in df.columns if not isinstance(c, str)]
    if bad:
        raise DataError(f"column names must be strings; got {bad[:5]!r} (use df.columns = df.columns.astype(str))")
    if len(df) == 0:
        raise DataError("the table has no rows")


def check_frame(df, names: Sequence[str]) -> None:
    """Raise :class:`DataError` unless ``df`` is a DataFrame holding each of ``names`` exactly once."""
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame, got {type(df).__name__}")
    absent = [c for c in names if c not in df.columns]
    if absent:
        raise DataError(f"the table lacks fitted column(s) {absent!r}")
    dup = sorted({c for c in df.columns[df.columns.duplicated()] if c in set(names)})
    if dup:
        raise DataError(f"duplicate column name(s) {dup!r}")


def centred_values(series: pd.Series, spec: ColumnSpec) -> np.ndarray:
    """Numeric or datetime column -> float64 ``[n]`` of ``x - low`` (units since origin), NaN if missing.

    Raises:
      DataError: +/-inf values, or missing values in a column that had none when fitted.
    """
    if spec.kind == DATETIME:
        if spec.date_format and not pd.api.types.is_datetime64_any_dtype(series.dtype):
            series = inference.parse_dates(series, spec.date_format, spec.name)
        if not pd.api.types.is_datetime64_any_dtype(series.dtype):
            raise DataError(f"column {spec.name!r} was fitted as datetime but has dtype {series.dtype}")
        ns = datetime_ns(series)
        missing = ns == _NAT
        out = (ns - np.int64(spec.origin_ns)).astype(np.float64) / DATETIME_UNITS[spec.unit]
        out[missing] = np.nan
    else:
        try:
            out = series.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as err:
            raise DataError(f"column {spec.name!r} was fitted as numeric but holds non-numbers ({series.dtype})") from err
        if np.isinf(out).any():
            raise DataError(f"column {spec.name!r} holds {int(np.isinf(out).sum())} infinite value(s); replace them (e.g. with NaN)")
        out = out - spec.low
    if not spec.has_missing and np.isnan(out).any():
        raise DataError(f"column {spec.name!r} has missing values but had none when the preprocessor was fitted")
    return out


def label_index(spec: ColumnSpec) -> pd.Index:
    """The fitted labels as a pandas Index (for vectorised label -> code lookup)."""
    if not spec.categories:
        return pd.Index([], dtype=object)
    return pd.Index(list(spec.categories))


def category_codes(series: pd.Series, spec: ColumnSpec, index: pd.Index) -> np.ndarray:
    """Categorical column -> int32 codes ``[n]`` (missing -> ``len(spec.categories)``).

    Raises:
      DataError: a label that was not seen at fit time (or is outside the public categories), or a
        missing value in a column that had none when fitted.
    """
    if isinstance(series.dtype, pd.CategoricalDtype):
        own, labels = series.cat.codes.to_numpy(), series.cat.categories
    else:
        # One hash pass (factorize: missing -> -1), then the few distinct labels are looked up:
        # cheaper than a lookup per row, which makes pandas infer the type of every object.
        own, labels = pd.factorize(series.to_numpy())
    remap = index.get_indexer(labels) if len(labels) else np.zeros(0, np.intp)
    missing = own < 0
    codes = np.where(missing, -1, remap[np.maximum(own, 0)] if len(remap) else -1)
    unseen = (codes < 0) & ~missing
    if unseen.any():
        examples = list(np.asarray(labels)[remap < 0][:5])
        raise DataError(
            f"column {spec.name!r} holds {int(unseen.sum())} value(s) not seen when fitting, e.g. {examples!r}; "
            f"known values: {inference.known_labels(spec)} (fit on data that covers them, or pass public_categories)"
        )
    if missing.any():
        if not spec.has_missing:
            raise DataError(f"column {spec.name!r} has missing values but had none when the preprocessor was fitted")
        codes = np.where(missing, len(spec.categories), codes)
    return codes.astype(np.int32)


def frame_to_raw(df: pd.DataFrame, specs: Sequence[ColumnSpec], indexes: dict,
                 rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """DataFrame -> ``(raw_numeric float32 [rows, N], raw_codes int32 [rows, K])`` (see the module docstring).

    ``rows`` >= ``len(df)`` pads with zero rows (valid values) for a jitted call of a fixed shape;
    it defaults to ``len(df)``.
    """
    check_frame(df, [s.name for s in specs])
    n = len(df)
    rows = n if rows is None else rows
    num_specs = [s for s in specs if s.kind != CATEGORICAL]
    cat_specs = [s for s in specs if s.kind == CATEGORICAL]
    raw_numeric = np.zeros((rows, len(num_specs)), np.float32)
    for j, spec in enumerate(num_specs):
        raw_numeric[:n, j] = centred_values(df[spec.name], spec)
    raw_codes = np.zeros((rows, len(cat_specs)), np.int32)
    for j, spec in enumerate(cat_specs):
        raw_codes[:n, j] = category_codes(df[spec.name], spec, indexes[spec.name])
    return raw_numeric, raw_codes


def restore_dtype(name: str):
    """dtype string recorded at fit time (:func:`~tabdiff_jax.preprocess.schema.dtype_name`) -> dtype
    (``"str"`` maps to object on pandas without it; Arrow strings to pandas' ``"string"`` where pyarrow is
    missing)."""
    if name.startswith("arrow:"):
        try:
            import pyarrow as pa

            return pd.ArrowDtype(pa.type_for_alias(name[len("arrow:"):]))
        except ImportError:
            return pd.StringDtype()
    if name == "str":
        try:
            return pd.StringDtype(na_value=np.nan)
        except TypeError:  # pandas < 2.3
            return np.dtype(object)
    return pd.api.types.pandas_dtype(name)


def _with_dtype(values: np.ndarray, name: str) -> pd.Series:
    # An explicit dtype: pandas 3 would otherwise infer "str" for an object array of strings.
    return pd.Series(values, dtype=restore_dtype(name), copy=False)


def numeric_series(raw: np.ndarray, spec: ColumnSpec) -> pd.Series:
    """float ``[n]`` of ``x - low`` -> the column with its fitted dtype, clipped to the bounds, rounded if integer."""
    x = np.asarray(raw, np.float64)
    missing = np.isnan(x)
    if spec.kind == DATETIME:
        units = np.rint(np.clip(np.where(missing, 0.0, x), 0.0, spec.span)).astype(np.int64)
        ns = np.where(missing, _NAT, np.int64(spec.origin_ns) + units * np.int64(DATETIME_UNITS[spec.unit]))
        series = pd.Series(ns.view("datetime64[ns]"))
        if spec.date_format:  # read from ISO strings: written back in their format
            text = inference.format_dates(series, spec.date_format)
            if not spec.missing_is_none:
                text[missing] = np.nan
            return _with_dtype(text, spec.dtype)
        dtype = restore_dtype(spec.dtype)
        if isinstance(dtype, pd.DatetimeTZDtype):
            series = series.dt.tz_localize("UTC").dt.tz_convert(dtype.tz)
        return series if series.dtype == dtype else series.astype(dtype)
    x = np.clip(x + spec.low, spec.low, spec.high)  # float64 clip: exact bounds after the float32 trip
    if spec.integer:
        x = np.rint(x)
    elif spec.decimals is not None:  # the decimal places of the fitted data (whole numbers: 0)
        x = np.clip(np.round(x, spec.decimals), spec.low, spec.high)  # public bounds may have more decimals
    dtype = restore_dtype(spec.dtype)
    if isinstance(dtype, np.dtype) and dtype.kind in "iu" and not missing.any():
        return pd.Series(x.astype(dtype), copy=False)
    return _with_dtype(x, spec.dtype)


def label_array(spec: ColumnSpec) -> np.ndarray:
    """The fitted labels as a numpy array typed like the labels (object for strings)."""
    cats = list(spec.categories)
    kinds = {type(c) for c in cats}
    if kinds == {bool}:
        return np.array(cats, dtype=bool)
    if kinds == {int}:
        return np.array(cats, dtype=np.int64)
    if kinds <= {float, int} and cats:
        return np.array(cats, dtype=np.float64)
    out = np.empty(len(cats), dtype=object)
    out[:] = cats
    return out


def category_series(codes: np.ndarray, spec: ColumnSpec, labels: np.ndarray) -> pd.Series:
    """int codes ``[n]`` -> the column with its fitted dtype; the missing code becomes a missing value."""
    codes = np.clip(np.asarray(codes), 0, spec.num_codes - 1)
    missing = codes == len(spec.categories) if spec.has_missing else np.zeros(codes.shape, bool)
    if spec.dtype == "category":
        dtype = pd.CategoricalDtype(pd.Index(list(spec.categories)), ordered=spec.ordered)
        return pd.Series(pd.Categorical.from_codes(np.where(missing, -1, codes), dtype=dtype))
    values = labels[np.where(missing, 0, codes)] if len(labels) else np.empty(codes.shape, object)
    if missing.any():
        values = values.astype(np.float64 if values.dtype.kind == "f" else object)
        values[missing] = None if spec.missing_is_none else np.nan
    return _with_dtype(values, spec.dtype)


def raw_to_frame(raw_numeric: np.ndarray, raw_codes: np.ndarray, specs: Sequence[ColumnSpec], labels: dict) -> pd.DataFrame:
    """Inverse of :func:`frame_to_raw`: raw arrays -> DataFrame with the fitted columns, order and dtypes."""
    raw_numeric, raw_codes = np.asarray(raw_numeric), np.asarray(raw_codes)
    columns, i, j = {}, 0, 0
    for spec in specs:
        if spec.kind == CATEGORICAL:
            columns[spec.name] = category_series(raw_codes[:, j], spec, labels[spec.name])
            j += 1
        else:
            columns[spec.name] = numeric_series(raw_numeric[:, i], spec)
            i += 1
    # copy=False keeps one block per column: consolidating 1e6-row object columns costs more
    # than building them.
    return pd.DataFrame(columns, columns=[s.name for s in specs], copy=False)
