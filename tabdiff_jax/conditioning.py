"""Conditioning on any columns and imputation: the cells given for each row, in the encoded space.

:class:`Known` holds, for each row, the cells that are given (``mask`` True) in the space of
:meth:`Preprocessor.encode <tabdiff_jax.preprocess.Preprocessor.encode>` (the target included). A
model with ``supports_inpainting = True`` receives it as ``_sample_raw(start, n, key, known=...)``
and draws the other cells from its conditional (TabDDPM: RePaint-style replacement in the reverse
process, :mod:`tabdiff_jax.diffusion.samplers`). Built from

* a condition ``{column: value}`` (:func:`known_from_condition`): categorical and numeric columns;
  a number is encoded as a training value would be, with its helper blocks (``<col>__mode``,
  ``<col>__missing`` = present); the base class then overwrites the given columns of the decoded
  frame with the values, so they come back exactly as given, in the column's dtype;
* a DataFrame with missing cells (:func:`known_from_frame`): ``NaN`` / ``None`` / ``NaT`` is a cell
  to fill, anything else is given; :func:`impute` fills the missing cells and leaves the others as
  they were.

What "missing" means in a column that had missing values in training (where the model generates
missing values as values of their own): a condition value must be a value (``NaN`` is refused), and
:func:`impute` fills a missing cell with a present value. A numeric column's ``<col>__missing`` block
is given as "present" and its number drawn; a categorical column's missing value is a category of
its own that a present value cannot be told from, so a missing cell there is refused (DataError).

Row ``i`` of a conditional sample or imputation depends only on ``(seed, i)`` and row ``i``'s given
cells: ``known`` is per-row input to the compiled chunks (:func:`tabdiff_jax.sampling.sample_rows`).
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import warnings
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from tabdiff_jax.errors import ConfigError, DataError
from tabdiff_jax.sampling import seed_key

INPAINTING_MODELS = ("tabddpm", "tabdiff")  # the models with supports_inpainting = True (tested)


@dataclasses.dataclass
class Known:  # cells given for each row, in the EncodedTable space of preprocessor.encode (target included)
    numeric: np.ndarray       # [n, layout.num_numeric] float32, encoded values, 0 where not given
    numeric_mask: np.ndarray  # [n, layout.num_numeric] bool, True = given
    codes: np.ndarray         # [n, layout.num_categorical] int32, codes of the categorical blocks, 0 where not given
    codes_mask: np.ndarray    # [n, layout.num_categorical] bool

    @property
    def num_rows(self) -> int:
        return int(self.numeric_mask.shape[0])

    def rows(self, start: int, stop: int) -> "Known":
        """Rows ``start .. stop - 1``."""
        return Known(*(a[start:stop] for a in dataclasses.astuple(self)))

    def repeat(self, n: int) -> "Known":
        """A one-row Known (a condition) for ``n`` rows."""
        return Known(*(np.repeat(a[:1], n, axis=0) for a in dataclasses.astuple(self)))

    def any(self) -> bool:
        """Whether any cell is given."""
        return bool(self.numeric_mask.any() or self.codes_mask.any())


def split_target(known: Known, layout) -> tuple[Known, Optional[np.ndarray]]:
    """Remove the classification target block (as :func:`tabdiff_jax.table.split_target`): returns
    ``(known of the features, target codes [n] with -1 where not given)``, or ``(known, None)``."""
    i = layout.target_categorical_index
    if i is None or layout.task != "classification":
        return known, None
    y = np.where(known.codes_mask[:, i], known.codes[:, i], -1).astype(np.int32)
    drop = lambda a: np.delete(a, i, axis=1)
    return Known(known.numeric, known.numeric_mask, drop(known.codes), drop(known.codes_mask)), y


# --------------------------------------------------------------------------- building
def _column_of_blocks(layout) -> list[str]:
    """The input column each categorical block belongs to (a helper block ``<col>__mode`` -> ``<col>``)."""
    return [name if role == "category" else name.rsplit("__", 1)[0]
            for name, role in zip(layout.categorical_names, layout.categorical_roles)]


def _encode(pre, raw_numeric: np.ndarray, raw_codes: np.ndarray, given: dict[str, np.ndarray]) -> Known:
    """Raw arrays -> Known, the cells of column ``c`` given where ``given[c]`` (bool ``[n]``) is True."""
    n = len(raw_numeric)
    enc = pre.encode_arrays(raw_numeric, raw_codes)
    layout = pre.layout
    none = np.zeros(n, bool)
    num_mask = np.stack([given.get(c, none) for c in layout.numeric_names], 1) if layout.num_numeric \
        else np.zeros((n, 0), bool)
    code_mask = np.stack([given.get(c, none) for c in _column_of_blocks(layout)], 1) if layout.num_categorical \
        else np.zeros((n, 0), bool)
    numeric = np.where(num_mask, np.asarray(enc.numeric, np.float32), 0.0).astype(np.float32)
    codes = np.where(code_mask, np.asarray(enc.categorical, np.int32), 0).astype(np.int32)
    return Known(numeric, num_mask, codes, code_mask)


def _is_missing(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or an array: not a scalar
        raise ConfigError(f"condition values must be single values, got {value!r}") from None


def _numeric_raw(spec, value) -> float:
    """A condition value of a numeric or datetime column -> its raw value (``x - low``; datetimes: units).

    Raises:
      ConfigError: not a number (or date), not a whole number in an integer column, or outside the
        range the model was fitted on.
    """
    from tabdiff_jax.preprocess import frames

    if spec.kind == "datetime":
        try:
            series = pd.Series([value])
            if not spec.date_format and not pd.api.types.is_datetime64_any_dtype(series.dtype):
                series = pd.to_datetime(series)
            x = float(frames.centred_values(series, spec)[0])
        except (ValueError, TypeError, DataError) as err:
            raise ConfigError(f"condition {spec.name}={value!r}: not a date of the column ({err})") from None
    else:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, str)):
            raise ConfigError(f"condition {spec.name}={value!r}: column {spec.name!r} is numeric; give a number")
        try:
            x = float(value)
        except ValueError:
            raise ConfigError(f"condition {spec.name}={value!r}: column {spec.name!r} is numeric; give a number") from None
        if not np.isfinite(x):
            raise ConfigError(f"condition {spec.name}={value!r}: not a finite number")
        if spec.integer and x != np.round(x):
            raise ConfigError(f"condition {spec.name}={value!r}: column {spec.name!r} holds whole numbers")
        x -= spec.low
    if not 0.0 <= x <= spec.span:
        raise ConfigError(f"condition {spec.name}={value!r}: outside the range the model was fitted on "
                          f"[{spec.low}, {spec.high}]" if spec.kind != "datetime" else
                          f"condition {spec.name}={value!r}: outside the dates the model was fitted on")
    return x


def parse_condition(model, condition: Any) -> dict[str, tuple]:
    """``{column: value}`` -> ``{column: ("categorical", j, code, None) | ("numeric", i, raw, number)}``:
    the column's place among the raw code (numeric) columns, the value's code (raw value ``x - low``)
    and, for a number, the number itself (None for a date).

    Raises:
      ConfigError: not a non-empty dict, an unknown column, a missing value (NaN / None), a label
        the column never had, or a number it cannot encode (see :func:`_numeric_raw`).
    """
    from tabdiff_jax import sampling

    if not isinstance(condition, dict) or not condition:
        raise ConfigError(f"condition must be a non-empty dict {{column: value}}, got {condition!r}")
    specs, indexes = model._schema()
    nums = [s for s in specs if s.kind != "categorical"]
    out = {}
    for column, value in condition.items():
        if _is_missing(value):
            raise ConfigError(f"condition {column}={value!r}: a missing value is not a condition; give a value "
                              "(to fill missing cells use impute)")
        num = [i for i, s in enumerate(nums) if s.name == column]
        if num:
            raw = _numeric_raw(nums[num[0]], value)
            out[column] = ("numeric", num[0], raw, None if nums[num[0]].kind == "datetime" else float(value))
        else:  # categorical, or an unknown column: condition_codes names it
            j, code = sampling.condition_codes({column: value}, specs, indexes)[column]
            out[column] = ("categorical", j, code, None)
    return out


def known_from_condition(model, condition: dict, n: int = 1) -> Known:
    """The Known of ``n`` rows that all have ``condition`` (see :func:`parse_condition`)."""
    pre = model.preprocessor
    parsed = parse_condition(model, condition)
    raw_numeric = np.zeros((1, len(pre._num_specs)), np.float32)
    raw_codes = np.zeros((1, len(pre._cat_specs)), np.int32)
    for kind, j, value, _ in parsed.values():
        if kind == "numeric":
            raw_numeric[0, j] = value
        else:
            raw_codes[0, j] = value
    return _encode(pre, raw_numeric, raw_codes, {c: np.ones(1, bool) for c in parsed}).repeat(n)


def known_from_frame(model, df: pd.DataFrame, start: int = 0, stop: Optional[int] = None) -> Known:
    """The Known of rows ``start .. stop - 1`` of ``df``: missing cells (NaN / None / NaT) are to fill,
    the others given (see the module docstring for columns that had missing values in training).

    Raises:
      DataError: not a DataFrame; columns other than the model's (named); a value the column cannot
        hold (an unseen label, a non-number in a numeric column); a missing cell in a categorical
        column whose missing values the model generates as a category of their own.
    """
    from tabdiff_jax.preprocess import frames

    check_impute_frame(model, df)
    part = df.iloc[start:stop]
    pre = model.preprocessor
    n = len(part)
    raw_numeric = np.zeros((n, len(pre._num_specs)), np.float32)
    raw_codes = np.zeros((n, len(pre._cat_specs)), np.int32)
    given = {}
    for i, spec in enumerate(pre._num_specs):
        raw_numeric[:, i] = frames.centred_values(part[spec.name], dataclasses.replace(spec, has_missing=True))
        given[spec.name] = ~np.isnan(raw_numeric[:, i])
        raw_numeric[~given[spec.name], i] = 0.0  # not given: any valid value (masked out)
    for j, spec in enumerate(pre._cat_specs):
        codes = frames.category_codes(part[spec.name], dataclasses.replace(spec, has_missing=True),
                                      pre._indexes[spec.name])
        given[spec.name] = codes < len(spec.categories)
        if spec.has_missing and not given[spec.name].all():
            raise DataError(f"impute: column {spec.name!r} had missing values in training, so the model draws "
                            "'missing' as a category of its own; its missing cells cannot be filled (fill that "
                            "column otherwise, or fit on a table where missing is an explicit label)")
        raw_codes[:, j] = np.where(given[spec.name], codes, 0)
    known = _encode(pre, raw_numeric, raw_codes, given)
    missing_blocks = [b for b, (name, role) in enumerate(zip(pre.layout.categorical_names,
                                                             pre.layout.categorical_roles)) if role == "missing"]
    known.codes[:, missing_blocks] = 0  # present: a missing numeric cell is filled with a value
    known.codes_mask[:, missing_blocks] = True
    return known


def check_impute_frame(model, df) -> None:
    """Raise :class:`DataError` unless ``df`` is a DataFrame with exactly the model's columns (any order)."""
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"impute: expected a pandas DataFrame, got {type(df).__name__}")
    dup = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    absent = [c for c in model.columns if c not in df.columns]
    extra = [str(c) for c in df.columns if c not in set(model.columns)]
    if dup or absent or extra:
        what = (f"duplicate column(s) {dup}" if dup else f"lacks the model's column(s) {absent}" if absent
                else f"has column(s) {extra} the model was not fitted on")
        raise DataError(f"impute: the table {what}; the model's columns are {model.columns}")


# --------------------------------------------------------------------------- sampling
def given_columns(model, parsed: dict[str, tuple]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """``finish(frame) -> frame`` that sets the condition's columns to the given values, in the
    column's dtype: a categorical column to its label, a number to itself (a date to its unit)."""
    from tabdiff_jax.preprocess import frames
    from tabdiff_jax.preprocess.linear import rebuild_given

    specs = {s.name: s for s in model._schema()[0]}
    labels = getattr(model.preprocessor, "_labels", {})

    def finish(df: pd.DataFrame) -> pd.DataFrame:
        n = len(df)
        for column, (kind, _, value, number) in parsed.items():
            spec = specs[column]
            if kind == "categorical":
                series = frames.category_series(np.full(n, value), spec, labels[column])
            elif spec.kind == "datetime":
                series = frames.numeric_series(np.full(n, value), spec)
            else:
                series = pd.Series(np.full(n, number)).astype(df[column].dtype)
            series.index = df.index
            df[column] = series
        return rebuild_given(model, df, parsed)

    return finish


def stream(model, key, condition: dict, kwargs: dict) -> tuple[Callable, Optional[Callable], Callable]:
    """How ``model.sample(n, seed, condition=condition)`` computes its rows: ``(draw(start, count) ->
    raw rows, accept or None, finish(frame) -> frame)``. An inpainting model draws every row with the
    condition as its :class:`Known`; other models impose a categorical condition natively or by
    rejection (``accept`` keeps the matching candidates).

    Raises:
      ConfigError: as :func:`parse_condition`; a numeric column on a model without inpainting.
    """
    from tabdiff_jax.preprocess.dependencies import key_condition
    from tabdiff_jax.preprocess.linear import check_condition

    condition = key_condition(model, check_condition(model, condition))  # a derived column: its key's label
    if getattr(model, "supports_inpainting", False):
        parsed = parse_condition(model, condition)
        template = known_from_condition(model, condition)
        finish = given_columns(model, parsed)

        def draw(start, count):
            return model._sample_raw(start, count, key, known=template.repeat(count), **kwargs)

        return draw, None, finish
    from tabdiff_jax import sampling

    specs = model._schema()[0]
    numeric = [c for c in (condition or {}) if any(s.name == c and s.kind != "categorical" for s in specs)]
    if numeric:
        raise ConfigError(f"condition: column(s) {numeric} are numeric, not categorical; the {model.model_name} "
                          f"model conditions on categorical columns only (numeric conditions need a model with "
                          f"inpainting: {', '.join(INPAINTING_MODELS)})")
    codes = sampling.condition_codes(condition, *model._schema())
    same = lambda df: df  # noqa: E731
    if model._native_condition(codes):
        return (lambda s, c: model._sample_raw(s, c, key, condition=codes, **kwargs)), None, same

    def accept(rows):
        return np.all([rows[1][:, j] == code for j, code in codes.values()], axis=0)

    return (lambda s, c: model._sample_raw(s, c, key, **kwargs)), accept, same


def impute(model, df: pd.DataFrame, *, seed: int = 0, **kwargs) -> pd.DataFrame:
    """A copy of ``df`` with every missing cell filled by a draw from the model's conditional given the
    row's observed cells (observed cells untouched); row ``i`` depends only on ``(seed, i)`` and its
    observed cells. ``kwargs``: the model's sampling options (``chunk_size``, ...).

    Raises:
      ConfigError: the model has no inpainting (the models that have it are named).
      DataError: as :func:`known_from_frame`.
    """
    if not getattr(model, "supports_inpainting", False):
        raise ConfigError(f"impute: the {model.model_name} model has no inpainting; use one of "
                          f"{', '.join(INPAINTING_MODELS)}")
    if not model.fitted:
        raise ConfigError(f"{type(model).__name__} is not fitted: call fit() or load() first")
    unknown = sorted(set(kwargs) - set(inspect.signature(model._sample_raw).parameters) - {"known", "condition"})
    if unknown:
        raise ConfigError(f"{type(model).__name__}.impute does not take {', '.join(unknown)}")
    from tabdiff_jax.preprocess.dependencies import fill_keys
    from tabdiff_jax.preprocess.linear import fill_terms, finish_impute

    filled = fill_terms(model, df)  # a missing term given by its linearly derived cell and the other terms
    known = known_from_frame(model, fill_keys(model, filled))  # a missing key given by its derived cells
    out = df.copy()
    if len(df) == 0:
        return out
    missing = {c: df[c].isna().to_numpy() for c in model.columns}
    if not any(m.any() for m in missing.values()):
        return out
    raw = model._sample_raw(0, len(df), seed_key(seed), known=known, **kwargs)
    drawn = model._raw_frame(*raw)
    for column, miss in missing.items():
        if not miss.any():
            continue
        values = drawn[column].to_numpy()[miss]
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)  # pandas: a value the column's dtype cannot hold
            try:
                out.loc[miss, column] = values
                continue
            except (FutureWarning, TypeError, ValueError):
                pass
        out[column] = out[column].astype(object)  # e.g. labels into an all-NaN float column
        out.loc[miss, column] = values
    return finish_impute(model, df, filled, out)
