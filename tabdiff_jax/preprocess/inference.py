"""Guesses the preprocessor makes from the data, each one said out loud.

* ISO date / datetime strings (``2021-03-04``, ``2021-03-04 10:30``, ``2021-03-04T10:30:00.123``)
  are datetimes: encoded as numbers and written back as strings in the same format;
* a text column whose values are partly numbers (``"12"``, ``"abc"``) stays categorical, with a
  warning naming the column;
* each float column's decimal places (0 to :data:`MAX_DECIMALS`) are learned, so whole-number and
  2-decimal columns come back rounded as such;
* a numeric target with exactly two distinct whole-number values (0/1) is a classification target.

:func:`describe` collects what was guessed for ``fit_info["inferred"]`` (and the CLI's fit line).
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Optional

import numpy as np
import pandas as pd

from tabdiff_jax.errors import ConfigError, DataError

MAX_DECIMALS = 6
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}(?:([T ])\d{2}:\d{2}(?::\d{2}(?:\.(\d{1,6}))?)?)?$")
_FRACTION = re.compile(r"%(\d)f$")


def _date_format(text: str) -> Optional[str]:
    """ISO string -> its format (``%Y-%m-%d %H:%M:%S.%3f`` style: ``%kf`` = k fraction digits)."""
    m = _ISO.match(text)
    if m is None:
        return None
    fmt = "%Y-%m-%d"
    if m.group(1) is not None:
        fmt += m.group(1) + "%H:%M" + (":%S" if len(text) > 16 else "")
        if m.group(2) is not None:
            fmt += f".%{len(m.group(2))}f"
    return fmt


def _strptime_format(fmt: str) -> str:
    return _FRACTION.sub("%f", fmt)


def iso_format(series: pd.Series) -> Optional[str]:
    """The one ISO date format every present value of a text column has, else ``None``."""
    if not (pd.api.types.is_object_dtype(series.dtype) or pd.api.types.is_string_dtype(series.dtype)):
        return None
    if isinstance(series.dtype, pd.CategoricalDtype):
        return None
    uniques = pd.unique(series.dropna().to_numpy())
    if len(uniques) == 0 or not isinstance(uniques[0], str) or _date_format(uniques[0]) is None:
        return None  # cheap rejection of ordinary text columns
    formats = {_date_format(v) if isinstance(v, str) else None for v in uniques}
    if len(formats) != 1 or None in formats:
        return None
    fmt = formats.pop()
    try:
        pd.to_datetime(pd.Series(uniques), format=_strptime_format(fmt))
    except (ValueError, OverflowError):
        return None  # ISO-shaped but not a date (month 13)
    return fmt


def parse_dates(series: pd.Series, fmt: str, name: Any) -> pd.Series:
    """Text column of ISO dates in ``fmt`` -> ``datetime64[ns]`` (missing -> ``NaT``).

    Raises:
      DataError: a present value that is not a date in that format.
    """
    codes, uniques = pd.factorize(series.to_numpy())
    try:
        parsed = pd.to_datetime(pd.Series(uniques, dtype=object), format=_strptime_format(fmt)).to_numpy("datetime64[ns]")
    except (ValueError, TypeError, OverflowError) as err:
        raise DataError(f"column {name!r} was fitted as ISO dates ({fmt}) but holds a value that is not one: {err}") from None
    out = np.full(len(codes), np.datetime64("NaT"), "datetime64[ns]")
    out[codes >= 0] = parsed[codes[codes >= 0]]
    return pd.Series(out, index=series.index, name=series.name)


def format_dates(values: pd.Series, fmt: str) -> np.ndarray:
    """``datetime64`` series -> object array of strings in ``fmt`` (``NaT`` stays missing, as ``None``)."""
    m = _FRACTION.search(fmt)
    text = values.dt.strftime(_strptime_format(fmt))
    out = np.asarray(text.to_numpy(dtype=object, na_value=None), dtype=object)
    if m is not None and int(m.group(1)) < 6:
        cut = 6 - int(m.group(1))
        out = np.array([None if v is None else v[:-cut] for v in out], dtype=object)
    return out


def mixed_numbers_and_text(series: pd.Series) -> Optional[str]:
    """A one-line warning when a text column holds both numbers (``"12"``) and other text, else ``None``."""
    if isinstance(series.dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(series.dtype):
        return None
    uniques = pd.unique(series.dropna().to_numpy())
    if len(uniques) < 2 or not all(isinstance(v, str) for v in uniques[:1000]):
        return None
    numbers = pd.to_numeric(pd.Series(uniques, dtype=object), errors="coerce").notna().to_numpy()
    if numbers.all() or not numbers.any():
        return None
    text, number = uniques[~numbers][0], uniques[numbers][0]
    return (f"column {series.name!r} mixes numbers (e.g. {number!r}, {int(numbers.sum())} distinct) and text "
            f"(e.g. {text!r}, {int((~numbers).sum())} distinct): fitted as categorical with {len(uniques)} levels; "
            "clean it (pd.to_numeric(errors='coerce')) to make it numeric")


def warn_mixed(series: pd.Series) -> bool:
    """Warn (one line, naming the column) if :func:`mixed_numbers_and_text`; return whether it warned."""
    message = mixed_numbers_and_text(series)
    if message is not None:
        warnings.warn(message, UserWarning, stacklevel=4)
    return message is not None


def learn_decimals(x: np.ndarray) -> Optional[int]:
    """Fewest decimal places (0 .. :data:`MAX_DECIMALS`) that hold every value of ``x`` (finite, no NaN)."""
    x = np.asarray(x, np.float64)
    if len(x) == 0 or np.abs(x).max() >= 2.0**52 / 10**MAX_DECIMALS:
        return None
    tolerance = 4 * np.finfo(np.float64).eps * np.abs(x)  # a few ulps: 0.1 + 0.2 has one decimal
    for d in range(MAX_DECIMALS + 1):
        if np.all(np.abs(np.round(x, d) - x) <= tolerance):
            return d
    return None


def binary_number(series: pd.Series) -> bool:
    """A numeric (non-bool) column with exactly two distinct whole-number values, e.g. a 0/1 label."""
    if pd.api.types.is_bool_dtype(series.dtype) or not pd.api.types.is_numeric_dtype(series.dtype):
        return False
    values = pd.unique(series.dropna().to_numpy(dtype=np.float64, na_value=np.nan))
    return len(values) == 2 and bool(np.all(np.isfinite(values) & (values == np.rint(values))))


def single_class(name: Any, series: pd.Series) -> None:
    """Raise :class:`DataError` if a classification target has fewer than two classes."""
    classes = series.dropna().unique()
    if len(classes) < 2:
        shown = f"only the value {classes[0]!r}" if len(classes) else "no values"
        raise DataError(f"classification target {name!r} has {shown}: a model needs at least two classes "
                        "(choose another target, or fit without one)")


def task_note(target: pd.Series, task: str) -> str:
    """How the task was inferred from the target column, e.g. ``classification (2 integer values)``."""
    if binary_number(target) and task == "classification":
        return f"classification (target {target.name!r} has two values: {sorted(pd.unique(target.dropna()).tolist())})"
    why = "categorical" if task == "classification" else "numeric"
    return f"{task} (target {target.name!r} is {why}; pass task= / --task to change it)"


def describe(specs, task: Optional[str], df: pd.DataFrame) -> dict:
    """``{"task": ..., "columns": {name: what was guessed}}`` for ``fit_info["inferred"]``."""
    columns = {}
    for s in specs:
        if s.kind == "categorical" and s.dtype in ("object", "str", "string"):
            if mixed_numbers_and_text(df[s.name]) is not None:
                columns[s.name] = f"categorical mixing numbers and text ({len(s.categories)} levels)"
        elif getattr(s, "date_format", None):
            columns[s.name] = f"datetime from ISO strings ({s.date_format})"
        elif s.kind == "numeric" and s.integer and s.has_missing:
            columns[s.name] = f"integer with missing values ({s.dtype})"
        elif s.kind == "numeric" and s.has_missing and getattr(s, "decimals", None) == 0:
            columns[s.name] = "whole numbers with missing values (restored rounded)"
    out = {"columns": columns}
    if task is not None:
        out["task"] = task
    return out


def summary(inferred: Optional[dict]) -> str:
    """One line for the CLI: ``task classification (...); d: datetime ...``, or ``""``."""
    if not inferred:
        return ""
    parts = [f"task {inferred['task']}"] if inferred.get("task") else []
    parts += [f"{name!r}: {what}" for name, what in inferred.get("columns", {}).items()]
    return "; ".join(parts)


def label_from_text(spec, text: str):
    """A command-line condition value (text) -> the label of a categorical column, typed like its labels.

    Raises:
      ConfigError: the text is not a value of the column's type.
    """
    if not isinstance(text, str) or not spec.categories:
        return text
    kinds = {type(c) for c in spec.categories}
    try:
        if kinds == {bool}:
            low = text.strip().lower()
            if low not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return low in ("true", "1")
        if kinds == {int}:
            number = float(text)
            return int(number) if number == int(number) else number
        if kinds <= {int, float}:
            return float(text)
    except (ValueError, OverflowError):
        raise ConfigError(f"condition {spec.name}={text!r}: expected one of {known_labels(spec)}") from None
    return text


def known_labels(spec, limit: int = 20) -> str:
    """The fitted labels of a categorical column, for messages (at most ``limit`` shown)."""
    cats = list(spec.categories)
    shown = ", ".join(repr(c) for c in cats[:limit])
    return f"[{shown}{', ...' if len(cats) > limit else ''}] ({len(cats)} classes)"


def typed_conditions(model, conditions: dict) -> dict:
    """``{column: text}`` from the command line -> ``{column: label}`` typed by the fitted column specs."""
    pre = getattr(model, "preprocessor", None)
    specs = {s.name: s for s in (pre.specs if pre is not None else getattr(model, "_specs", None) or ())}
    return {c: label_from_text(specs[c], v) if c in specs and specs[c].kind == "categorical" else v
            for c, v in conditions.items()}
