"""Exact column dependencies kept by construction: ``Preprocessor(derive="auto" | [(X, Y), ...])``.

A column ``Y`` that a categorical column ``X`` determines in every training row (Adult's
``education-num`` is one number per ``education``) is left out of the encoded table, so no model
sees or generates it, and rebuilt on decode from ``X``'s value through the mapping stored at fit
time: the relation then holds in every synthetic row. Detection classifiers find broken exact
relations easily (a first TabDiff run broke this one in 12% of its rows).

* **Keys** ``X``: columns the preprocessor encodes as categorical, with 2 to :data:`MAX_KEY_VALUES`
  values (at most half the rows: not ID-like) and every fitted category seen in the data, so that
  every decoded key has a mapped value. A missing key is a value of its own (its mapped value is
  the one observed with it).
* **Derived** ``Y``: any other column except the target (which stays modelled) and datetimes.
* ``"auto"`` keeps a dependency found in the data only if it fails on ``null_shuffles`` seeded
  shuffles of ``Y`` (a dependency that survives a shuffle holds by the accident of small groups,
  not because ``X`` decides ``Y``); stricter than :mod:`tabdiff_jax.evaluate.relations` (3
  shuffles), since a derived column is then forced in every synthetic row. Pairs given as a list
  are taken as public structure without the test, but must hold in every row.
* One direction per one-to-one pair: keys with a text / category / bool dtype first (so
  ``education`` stays, ``education-num`` is derived), then those that determine more columns, then
  table order. A chain ``X -> Y -> Z`` derives ``Y`` and ``Z`` from the kept root ``X`` (the
  composition is exact on the training rows); no cycles by construction.

The value mapping is learned from the data, so a private model refuses ``derive`` when asked for
and ignores a model's default (:func:`model_options`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from tabdiff_jax.errors import ConfigError, DataError
from tabdiff_jax.preprocess import frames
from tabdiff_jax.preprocess.schema import CATEGORICAL, DATETIME, ColumnSpec, dtype_name

AUTO = "auto"
MAX_KEY_VALUES = 64
MAX_KEY_SHARE = 0.5
NULL_SHUFFLES = 20


@dataclasses.dataclass(frozen=True)
class Derived:
    """One derived column: ``column = values[code of key]`` (codes of the key's fitted categories,
    then its missing code when it had missing values).

    Attributes:
      column: the derived column; ``key``: the kept categorical column it is read from; ``via``: the
        column it was found to depend on (``key``, or a derived column of a chain).
      position: its place in the fitted table; ``dtype``: its pandas dtype as a string.
      values: the value for each key code (Python scalars; ``None`` for missing).
      one_to_one: the key is determined by the column too.
      missing_is_none: an object column whose missing values were ``None`` (else ``NaN``).
      categories, ordered: a ``category`` column's dtype.
    """

    column: str
    key: str
    via: str
    position: int
    dtype: str
    values: tuple
    one_to_one: bool = False
    missing_is_none: bool = False
    categories: Optional[tuple] = None
    ordered: bool = False

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["values"], d["categories"] = list(self.values), None if self.categories is None else list(self.categories)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Derived":
        d = dict(d)
        d["values"] = tuple(d["values"])
        d["categories"] = None if d.get("categories") is None else tuple(d["categories"])
        return cls(**d)

    def describe(self) -> str:
        via = f" via {self.via!r}" if self.via != self.key else ""
        kind = "one-to-one with" if self.one_to_one else "determined by"
        return f"{kind} {self.key!r}{via} in every row: derived on decode, not modelled"


def check_option(derive):
    """``None``, ``"auto"`` or pairs ``[(X, Y), ...]`` (normalised to a tuple of tuples).

    Raises:
      ConfigError: anything else.
    """
    if derive is None or derive == AUTO:
        return derive
    if isinstance(derive, (list, tuple)) and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(c, str) for c in p) for p in derive):
        return tuple((str(x), str(y)) for x, y in derive)
    raise ConfigError(f"derive = {derive!r}; expected None, 'auto' or a list of (key column, derived column) pairs")


def model_options(model, options: dict) -> dict:
    """The preprocessor options of ``model``'s fit: ``derive`` off for a private model (``epsilon``
    set), whose preprocessing must not learn value mappings outside the budget.

    Raises:
      ConfigError: a private model's options ask for ``derive``.
    """
    settings = getattr(model, "settings", None)
    if not isinstance(settings, dict) or settings.get("epsilon") is None or options.get("derive") is None:
        return options
    asked = (model.config.get("preprocessor") or {}).get("derive")
    if asked is not None:
        raise ConfigError(f"preprocessor derive={asked!r}: {model.model_name} is private (epsilon set) and the "
                          "derived columns' value mappings would be learned from the data outside the privacy "
                          "budget; use derive=None (the default for private models)")
    return {**options, "derive": None}


def codes_of(series: pd.Series) -> np.ndarray:
    """Integer codes of ``series``'s values (a missing value is a value of its own)."""
    return pd.factorize(series, use_na_sentinel=False)[0].astype(np.int64)


def determines(order: np.ndarray, same_group: np.ndarray, codes: np.ndarray) -> bool:
    """Whether ``codes`` is constant within each group of the rows sorted by ``order`` (``same_group[i]``:
    sorted rows ``i`` and ``i + 1`` share a group)."""
    ys = codes[order]
    return not np.any((ys[1:] != ys[:-1]) & same_group)


def _keys(df: pd.DataFrame, specs: Sequence[ColumnSpec]) -> dict[str, ColumnSpec]:
    """Columns that may be keys (see the module docstring)."""
    limit = min(MAX_KEY_VALUES, MAX_KEY_SHARE * len(df))
    out = {}
    for s in specs:
        if s.kind != CATEGORICAL or not 2 <= s.num_codes <= limit:
            continue
        if df[s.name].nunique(dropna=False) == s.num_codes:  # every fitted category occurs
            out[s.name] = s
    return out


def _holding(df, keys, targets, seed: int, null_shuffles: int) -> dict[str, list[str]]:
    """``{X: [Y...]}``: the dependencies of ``df`` that pass the null-shuffle test."""
    codes = {c: codes_of(df[c]) for c in set(keys) | set(targets)}
    rng = np.random.default_rng([int(seed), 16])
    out = {}
    for x in keys:
        order = np.argsort(codes[x], kind="stable")
        sorted_x = codes[x][order]
        same_group = sorted_x[1:] == sorted_x[:-1]
        out[x] = [y for y in targets if y != x and codes[y].max() > 0 and determines(order, same_group, codes[y])
                  and not any(determines(order, same_group, rng.permutation(codes[y])) for _ in range(null_shuffles))]
    return out


def _given(df, keys, targets, pairs) -> dict[str, list[str]]:
    """``{X: [Y...]}`` for user-given pairs, each checked to hold in every row."""
    out: dict = {}
    for x, y in pairs:
        for name in (x, y):
            if name not in df.columns:
                raise DataError(f"derive names column {name!r}, which is not in the table")
        if x not in keys:
            raise ConfigError(f"derive pair ({x!r}, {y!r}): {x!r} cannot be a key (a categorical column with 2 to "
                              f"{MAX_KEY_VALUES} values, at most half the rows, every category seen)")
        if y not in targets:
            raise ConfigError(f"derive pair ({x!r}, {y!r}): {y!r} cannot be derived (the target, a datetime or the key)")
        broken = int((df.groupby(codes_of(df[x]))[y].transform("nunique", dropna=False) > 1).sum())
        if broken:
            raise DataError(f"derive pair ({x!r}, {y!r}): {x!r} does not determine {y!r} ({broken} rows disagree)")
        out.setdefault(x, []).append(y)
    return out


def _select(df: pd.DataFrame, holds: dict[str, list[str]]) -> dict[str, str]:
    """``{derived column: the column it is read from}``, acyclic (see the module docstring)."""
    position = {c: i for i, c in enumerate(df.columns)}
    order = sorted(holds, key=lambda x: (pd.api.types.is_numeric_dtype(df[x].dtype) and
                                         not pd.api.types.is_bool_dtype(df[x].dtype), -len(holds[x]), position[x]))
    parent: dict[str, str] = {}

    def root(c: str) -> str:
        while c in parent:
            c = parent[c]
        return c

    for x in order:
        for y in holds[x]:
            if y not in parent and root(x) != y:
                parent[y] = x
    return parent


def _value(v):
    if pd.api.types.is_scalar(v) and pd.isna(v):
        return None
    return v.item() if isinstance(v, np.generic) else v


def find(df: pd.DataFrame, specs: Sequence[ColumnSpec], target: Optional[str], derive, seed: int,
         null_shuffles: int = NULL_SHUFFLES) -> tuple[Derived, ...]:
    """The derived columns of ``df`` for the option ``derive`` (see the module docstring), in table order.

    Raises:
      DataError / ConfigError: a given pair names an unknown column, cannot be used, or does not hold.
    """
    keys = _keys(df, specs)
    targets = [s.name for s in specs if s.name != target and s.kind != DATETIME]
    holds = (_holding(df, keys, targets, seed, null_shuffles) if derive == AUTO
             else _given(df, keys, targets, derive))
    parent = _select(df, holds)
    position = {c: i for i, c in enumerate(df.columns)}
    out = []
    for y, via in parent.items():
        key = via
        while key in parent:
            key = parent[key]
        spec = keys[key]
        codes = frames.category_codes(df[key], spec, frames.label_index(spec))
        _, first = np.unique(codes, return_index=True)  # every code occurs (see _keys)
        column = df[y]
        dtype = column.dtype
        missing = column.isna().to_numpy()
        one_to_one = bool(np.all(pd.Series(codes).groupby(codes_of(column)).nunique().to_numpy() == 1))
        out.append(Derived(
            column=y, key=key, via=via, position=position[y], dtype=dtype_name(dtype),
            values=tuple(_value(v) for v in column.iloc[first].to_numpy(dtype=object)), one_to_one=one_to_one,
            missing_is_none=bool(missing.any()) and all(v is None for v in column[missing]),
            categories=tuple(_value(c) for c in dtype.categories) if isinstance(dtype, pd.CategoricalDtype) else None,
            ordered=bool(getattr(dtype, "ordered", False) or False)))
    return tuple(sorted(out, key=lambda d: d.position))


def _series(d: Derived, codes: np.ndarray) -> pd.Series:
    """The derived column for the key codes ``codes`` (clipped into the key's range)."""
    table = np.empty(len(d.values), dtype=object)
    table[:] = list(d.values)
    values = table[np.clip(codes, 0, len(table) - 1)]
    if d.categories is not None:
        return pd.Series(pd.Categorical(values, categories=list(d.categories), ordered=d.ordered))
    dtype = frames.restore_dtype(d.dtype)
    missing = pd.isna(values)
    if isinstance(dtype, np.dtype) and dtype.kind == "O":
        if missing.any() and not d.missing_is_none:
            values[missing] = np.nan
        return pd.Series(values, dtype=object)
    if isinstance(dtype, np.dtype) and dtype.kind in "fc":
        values[missing] = np.nan
    return pd.Series(values).astype(dtype)


def restore(frame: pd.DataFrame, raw_codes: np.ndarray, derived: Sequence[Derived],
            categorical: Sequence[str], others: Sequence[tuple] = ()) -> pd.DataFrame:
    """``frame`` (the decoded kept columns) with the derived columns inserted at their places.

    Args:
      raw_codes: the raw codes the frame was decoded from, one column per name of ``categorical``.
      others: ``(position, column, series)`` of columns derived otherwise (:func:`.linear.restored`),
        inserted in the same pass so that every position refers to the fitted table.
    """
    index = {name: j for j, name in enumerate(categorical)}
    built = [(d.position, d.column, _series(d, np.asarray(raw_codes)[:, index[d.key]])) for d in derived]
    for position, column, series in sorted([*built, *others], key=lambda t: t[0]):
        series.index = frame.index
        frame.insert(position, column, series)
    return frame


def note(inferred: dict, derived: Sequence) -> dict:
    """``inferred`` (:func:`tabdiff_jax.preprocess.inference.describe`) with a line per derived column
    (:class:`Derived` or :class:`~tabdiff_jax.preprocess.linear.Linear`: its ``describe()``)."""
    if derived:
        inferred.setdefault("columns", {}).update({d.column: d.describe() for d in derived})
    return inferred


def _key_labels(d: Derived, spec: ColumnSpec, value) -> list:
    """The key labels whose mapped value is ``value`` (a number compared as a float: ``"13"`` from the CLI too)."""
    def same(v) -> bool:
        if v is None:
            return False
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            try:
                return float(value) == float(v)
            except (TypeError, ValueError):
                return False
        return v == value or str(v) == str(value)
    return [spec.categories[c] for c, v in enumerate(d.values) if c < len(spec.categories) and same(v)]


def key_condition(model, condition):
    """``condition`` with each derived column replaced by its key's label (the one key value giving it), so
    a model conditions on what it models; the derived column then holds the value in every row.

    Raises:
      ConfigError: no key value, or several, give the value (condition on the key instead), or the key
        is also given with another label.
    """
    pre = getattr(model, "preprocessor", None)
    derived = {d.column: d for d in getattr(pre, "derived", ())}
    if not isinstance(condition, dict) or not derived.keys() & condition.keys():
        return condition
    specs = {s.name: s for s in pre.specs}
    out = {c: v for c, v in condition.items() if c not in derived}
    for column in [c for c in condition if c in derived]:
        d, value = derived[column], condition[column]
        labels = _key_labels(d, specs[d.key], value)
        if len(labels) != 1:
            shown = f"none of its values gives {value!r}" if not labels else f"{labels[:10]!r} all give {value!r}"
            raise ConfigError(f"condition {column}={value!r}: {column!r} is derived from {d.key!r} (derive=) and "
                              f"{shown}; condition on {d.key!r} instead")
        if d.key in out and out[d.key] != labels[0]:
            raise ConfigError(f"condition {column}={value!r} needs {d.key}={labels[0]!r}, but {d.key}={out[d.key]!r} "
                              "is given too")
        out[d.key] = labels[0]
    return out


def fill_keys(model, df: pd.DataFrame) -> pd.DataFrame:
    """For imputation: ``df`` with a missing key cell set from the row's derived cells where exactly one key
    value gives the observed value, so that the drawn key agrees with them (``df`` itself is not changed)."""
    pre = getattr(model, "preprocessor", None)
    derived = [d for d in getattr(pre, "derived", ()) if d.column in df.columns and d.key in df.columns]
    if not derived or not isinstance(df, pd.DataFrame):
        return df
    specs, out = {s.name: s for s in pre.specs}, df.copy()
    for d in derived:
        fill = (out[d.key].isna() & df[d.column].notna()).to_numpy()
        if not fill.any():
            continue
        unique = {}
        for value in pd.unique(df[d.column][fill]):
            labels = _key_labels(d, specs[d.key], _value(value))
            if len(labels) == 1:
                unique[value] = labels[0]
        found = df[d.column][fill].map(unique)
        rows = out.index[fill][found.notna().to_numpy()]
        if len(rows):
            out[d.key] = out[d.key].astype(object)
            out.loc[rows, d.key] = found.dropna().to_numpy()
            out[d.key] = out[d.key].astype(df[d.key].dtype)
    return out
