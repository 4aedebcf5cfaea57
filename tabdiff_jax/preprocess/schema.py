"""Column schema: what kind each column is, its domain (bounds or categories) and its dtype.

Inference rules (one place, documented here):

* ``bool``, ``object``, ``str`` / ``string`` and ``category`` columns are **categorical**, except
  text columns of ISO dates (one format), which are **datetime** and written back as such strings;
  text mixing numbers and words stays categorical with a warning (:mod:`.inference`);
* float columns are **numeric**, rounded on decode to the decimal places learned from the data; integer columns are numeric too, decoded as integers, unless
  ``column_kinds={"col": "categorical"}`` says otherwise, or ``integer_categorical_max=k`` is set and
  the column has at most ``k`` distinct values, or the column is the target of a classification task;
* ``datetime64`` columns (naive or time-zone aware) are **datetime**: encoded as numbers of the
  coarsest unit (day, hour, minute, second, ms, us, ns) that divides every value's distance to the
  lower bound, and restored to their dtype; ``timedelta`` and complex columns are an error.

Numeric and datetime columns are represented on the device *relative to their lower bound*: the
raw value of column ``c`` is ``float32(x - low)`` (in units for datetimes), so it lies in
``[0, span]``. Subtracting the bound in float64 on the host keeps float32 precision relative to the
column's range rather than to its absolute magnitude (latitudes, years, timestamps), and keeps
integers exact up to a range of 2**24.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import numpy as np
import pandas as pd

from tabdiff_jax.errors import ConfigError, DataError
from tabdiff_jax.preprocess import inference

NUMERIC = "numeric"
CATEGORICAL = "categorical"
DATETIME = "datetime"
USER_KINDS = (NUMERIC, CATEGORICAL)

# Datetime units, coarsest first, in nanoseconds.
DATETIME_UNITS = {"D": 86_400 * 10**9, "h": 3_600 * 10**9, "min": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
DATA = "data"
PUBLIC = "public"


@dataclasses.dataclass(frozen=True)
class ColumnSpec:
    """Fitted description of one column of the input table.

    Attributes:
      name: column name.
      kind: ``"numeric"``, ``"categorical"`` or ``"datetime"``.
      dtype: the column's pandas dtype as a string (restored on decode).
      has_missing: whether the fitted data had missing values (then the column gets a missing
        indicator block if numeric, a missing category of its own if categorical).
      low, high: bounds in column units (numeric) or units since ``origin_ns`` (datetime: ``low = 0``).
      integer: decoded values are rounded to integers (integer dtypes, datetime units).
      origin_ns: datetime lower bound in nanoseconds since the epoch (UTC).
      unit: datetime unit, a key of :data:`DATETIME_UNITS`.
      categories: category labels (Python str / int / float / bool), in code order.
      ordered: the ``category`` dtype was ordered.
      missing_is_none: an ``object`` column whose missing values were all ``None`` (restored as
        ``None``; otherwise missing values come back as ``NaN`` / ``NA`` as the dtype has it).
      domain_source: ``"data"`` when bounds / categories were learned from the data, ``"public"``
        when given by the user (``public_bounds`` / ``public_categories``).
      date_format: a datetime column read from ISO strings: their format (written back as such).
      decimals: a float column's decimal places learned from the data (values are rounded to them
        on decode), ``None`` for more than :data:`~tabdiff_jax.preprocess.inference.MAX_DECIMALS`.
    """

    name: str
    kind: str
    dtype: str
    has_missing: bool = False
    low: Optional[float] = None
    high: Optional[float] = None
    integer: bool = False
    origin_ns: Optional[int] = None
    unit: Optional[str] = None
    categories: tuple = ()
    ordered: bool = False
    missing_is_none: bool = False
    domain_source: str = DATA
    date_format: Optional[str] = None
    decimals: Optional[int] = None

    @property
    def span(self) -> float:
        """Width of the numeric domain, ``high - low`` (0 for a constant column)."""
        return float(self.high - self.low)

    @property
    def num_codes(self) -> int:
        """Size of a categorical column's block: its categories plus one if it had missing values."""
        return len(self.categories) + int(self.has_missing)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["categories"] = list(self.categories)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ColumnSpec":
        d = dict(d)
        d["categories"] = tuple(d.get("categories", ()))
        return cls(**d)


def _label_type(value: Any) -> Optional[str]:
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    if isinstance(value, str):
        return "str"
    return None


def _python_label(value: Any) -> Any:
    """numpy scalar -> Python scalar, so that labels are JSON-able and compare equal across runs."""
    return value.item() if isinstance(value, np.generic) else value


def check_labels(name: str, values, max_categories: Optional[int] = None) -> list:
    """Validate the distinct labels of a categorical column; return them as Python scalars.

    Raises:
      DataError: more than ``max_categories`` labels, a label of an unsupported type, or labels of
        several types (e.g. ints and strings mixed in one ``object`` column).
    """
    values = [_python_label(v) for v in values]
    if max_categories is not None and len(values) > max_categories:
        raise DataError(
            f"column {name!r} has {len(values)} distinct values, more than max_categories="
            f"{max_categories}: treat it as numeric (column_kinds={{{name!r}: 'numeric'}}), drop it if "
            "it is an identifier, or raise max_categories"
        )
    types = {_label_type(v) for v in values}
    if None in types:
        bad = next(v for v in values if _label_type(v) is None)
        raise DataError(f"column {name!r} holds a value of unsupported type {type(bad).__name__} ({bad!r})")
    if len(types) > 1:
        raise DataError(
            f"column {name!r} mixes value types {sorted(types)}: convert it to one type "
            "(e.g. df[col].astype(str)) before fitting"
        )
    return values


def _validate_public_categories(name: str, cats) -> tuple:
    cats = [_python_label(v) for v in cats]
    if len(cats) == 0:
        raise ConfigError(f"public_categories[{name!r}] is empty")
    if len(set(cats)) != len(cats):
        raise ConfigError(f"public_categories[{name!r}] has duplicate labels")
    if any(_label_type(c) is None for c in cats) or len({_label_type(c) for c in cats}) > 1:
        raise ConfigError(f"public_categories[{name!r}] must hold labels of one type (str, int, float or bool)")
    return tuple(cats)


def datetime_ns(series: pd.Series) -> np.ndarray:
    """Datetime column -> int64 nanoseconds since the epoch (UTC); missing values are ``NaT``'s int."""
    if getattr(series.dt, "tz", None) is not None:
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return series.to_numpy(dtype="datetime64[ns]").view(np.int64)


def _timestamp_ns(name: str, value) -> int:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"public_bounds[{name!r}]: {value!r} is not a timestamp") from err
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return int(ts.as_unit("ns").value)


def infer_kind(series: pd.Series, requested: Optional[str], integer_categorical_max: Optional[int]) -> str:
    """Column kind from its dtype and the user's request (see the module docstring for the rules)."""
    name, dtype = series.name, series.dtype
    if requested is not None and requested not in USER_KINDS:
        raise ConfigError(f"column_kinds[{name!r}] = {requested!r}; expected one of {USER_KINDS}")
    if pd.api.types.is_timedelta64_dtype(dtype) or pd.api.types.is_complex_dtype(dtype):
        raise DataError(f"column {name!r} has unsupported dtype {dtype}: convert it to numbers first")
    if pd.api.types.is_datetime64_any_dtype(dtype):
        if requested == CATEGORICAL:
            raise ConfigError(f"column {name!r} is a datetime column; it can only be numeric")
        return DATETIME
    categorical_dtype = (
        pd.api.types.is_bool_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
        or pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
    )
    if categorical_dtype:
        if requested != CATEGORICAL and inference.iso_format(series) is not None:
            return DATETIME  # ISO date strings: parsed, encoded as numbers, written back as strings
        if requested == NUMERIC:
            raise ConfigError(f"column {name!r} has dtype {dtype} and cannot be numeric: convert it to numbers first")
        if requested is None:
            inference.warn_mixed(series)
        return CATEGORICAL
    if not pd.api.types.is_numeric_dtype(dtype):
        raise DataError(f"column {name!r} has unsupported dtype {dtype}")
    if requested is not None:
        return requested
    if integer_categorical_max is not None and pd.api.types.is_integer_dtype(dtype):
        if series.nunique(dropna=True) <= integer_categorical_max:
            return CATEGORICAL
    return NUMERIC


def fit_column(
    series: pd.Series,
    kind: str,
    max_categories: int,
    public_bounds=None,
    public_categories=None,
) -> ColumnSpec:
    """Fit the :class:`ColumnSpec` of one column of kind ``kind``.

    Raises:
      DataError: the column is all missing, holds +/-inf, mixes value types, has too many
        categories, or holds values outside ``public_categories``.
      ConfigError: bad ``public_bounds`` / ``public_categories``.
    """
    name, dtype = series.name, series.dtype
    if kind == CATEGORICAL:
        return _fit_categorical(series, max_categories, public_categories)
    if public_categories is not None:
        raise ConfigError(f"public_categories given for column {name!r}, which is {kind}")
    missing = series.isna().to_numpy()
    _check_some_present(name, len(series), not missing.all())
    common = dict(name=name, dtype=dtype_name(dtype), has_missing=bool(missing.any()))
    if kind == DATETIME:
        if not pd.api.types.is_datetime64_any_dtype(dtype):
            date_format = inference.iso_format(series)
            if date_format is None:
                raise DataError(f"column {name!r} has dtype {dtype} and is not ISO dates: it cannot be a datetime")
            gaps = series[missing].to_numpy()
            common.update(date_format=date_format, missing_is_none=len(gaps) > 0 and all(v is None for v in gaps))
            series = inference.parse_dates(series, date_format, name)
        ns = datetime_ns(series)[~missing]
        if public_bounds is not None:
            lo, hi = (_timestamp_ns(name, b) for b in _bounds_pair(name, public_bounds))
        else:
            lo, hi = int(ns.min()), int(ns.max())
        if hi < lo:
            raise ConfigError(f"public_bounds[{name!r}]: lower bound is after the upper bound")
        steps = np.concatenate([ns - lo, [hi - lo]])
        unit = next(u for u, size in DATETIME_UNITS.items() if not np.any(steps % size))
        size = DATETIME_UNITS[unit]
        return ColumnSpec(**common, kind=DATETIME, low=0.0, high=float((hi - lo) // size), integer=True,
                          origin_ns=lo, unit=unit, domain_source=PUBLIC if public_bounds is not None else DATA)
    x = series.to_numpy(dtype=np.float64, na_value=np.nan)[~missing]
    if np.isinf(x).any():
        raise DataError(f"column {name!r} holds {int(np.isinf(x).sum())} infinite value(s); replace them (e.g. with NaN)")
    integer = bool(pd.api.types.is_integer_dtype(dtype))
    if public_bounds is not None:
        lo, hi = (float(b) for b in _bounds_pair(name, public_bounds))
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
            raise ConfigError(f"public_bounds[{name!r}] = {public_bounds!r}; expected finite (low, high) with low <= high")
        if integer:
            lo, hi = float(math.ceil(lo)), float(math.floor(hi))
            if hi < lo:
                raise ConfigError(f"public_bounds[{name!r}] contain no integer")
    else:
        lo, hi = float(x.min()), float(x.max())
    if hi - lo > float(np.finfo(np.float32).max):
        raise DataError(f"column {name!r} spans {hi - lo:.3g}, more than float32 holds: rescale it")
    return ColumnSpec(**common, kind=NUMERIC, low=lo, high=hi, integer=integer,
                      domain_source=PUBLIC if public_bounds is not None else DATA,
                      decimals=None if integer or public_bounds is not None else inference.learn_decimals(x))


def _bounds_pair(name: str, bounds) -> tuple:
    try:
        lo, hi = bounds
    except (TypeError, ValueError) as err:
        raise ConfigError(f"public_bounds[{name!r}] = {bounds!r}; expected a pair (low, high)") from err
    return lo, hi


def dtype_name(dtype) -> str:
    """The name a column's dtype is recorded under: ``str(dtype)``, except Arrow strings (``"string[pyarrow]"``
    would come back as pandas' own pyarrow-backed ``StringDtype``), recorded as ``"arrow:string"``, and pandas'
    pyarrow-backed ``"string"``, recorded as ``"string[pyarrow]"``."""
    arrow = getattr(dtype, "pyarrow_dtype", None)
    if isinstance(dtype, pd.ArrowDtype) and str(arrow) in ("string", "large_string"):
        return f"arrow:{arrow}"
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow" and str(dtype) == "string":
        return "string[pyarrow]"  # str() drops the storage
    return str(dtype)


def _check_some_present(name: str, n: int, some_present: bool) -> None:
    if not some_present:
        raise DataError(f"column {name!r} has no values (all {n} are missing): drop it")


def _fit_categorical(series: pd.Series, max_categories: int, public_categories) -> ColumnSpec:
    name, dtype = series.name, series.dtype
    common = dict(name=name, dtype=dtype_name(dtype))
    if isinstance(dtype, pd.CategoricalDtype):
        own = series.cat.codes.to_numpy()
        _check_some_present(name, len(series), (own >= 0).any())
        common.update(has_missing=bool((own < 0).any()), ordered=bool(dtype.ordered))
        observed = np.asarray(dtype.categories)[np.unique(own[own >= 0])]
    else:
        # One hash pass over the rows; the missing markers are found among the distinct values,
        # so there is no per-row isna over Python objects.
        uniques = pd.unique(series.to_numpy())
        is_missing = np.asarray(pd.isna(uniques), bool)
        observed = uniques[~is_missing]
        _check_some_present(name, len(series), len(observed) > 0)
        common["has_missing"] = bool(is_missing.any())
        if pd.api.types.is_object_dtype(dtype) and is_missing.any():
            common["missing_is_none"] = all(v is None for v in uniques[is_missing])
    if public_categories is not None:
        cats = _validate_public_categories(name, public_categories)
        outside = observed[pd.Index(list(cats)).get_indexer(observed) < 0]
        if len(outside):
            raise DataError(f"column {name!r} holds values outside public_categories: {list(outside[:5])!r}")
        return ColumnSpec(**common, kind=CATEGORICAL, categories=cats, domain_source=PUBLIC)
    if isinstance(dtype, pd.CategoricalDtype):
        cats = tuple(check_labels(name, list(dtype.categories), max_categories))  # the dtype's own order
    elif pd.api.types.is_bool_dtype(dtype):
        cats = (False, True)
    else:
        cats = tuple(sorted(check_labels(name, observed, max_categories)))
    return ColumnSpec(**common, kind=CATEGORICAL, categories=cats)
