"""Exact linear relations kept by construction: the numeric half of ``Preprocessor(derive="auto")``.

A numeric column ``Y`` equal to ``a + b1 X1 (+ b2 X2 (+ b3 X3))`` of other numeric columns in every
training row (King's ``sqft_living = sqft_above + sqft_basement``) is left out of the encoded table,
so no model sees or generates it, and rebuilt on decode from the decoded ``X``'s: the relation then
holds in every synthetic row (the models broke this one in 93% of their rows, an easy cue for a
detection classifier).

* **Found** by :func:`tabdiff_jax.preprocess.relation_search.search` (the search the evaluation
  reports relations with) among the numeric columns that :mod:`.dependencies` keeps (a column
  derived from a categorical key is neither ``Y`` nor a term). The target is never ``Y``; datetimes,
  categorical columns and a ``Y`` with public bounds (which decode would enforce) are left alone.
* **Exact**, as decode rebuilds it: ``a`` and the ``b``'s are snapped to the fewest decimals (0 to
  :data:`MAX_DIGITS`) that reproduce every training row, the sum rounded as ``Y`` is (whole numbers,
  or its decimal places) and cast to ``Y``'s dtype; it must equal ``Y`` in every row, missing exactly
  where a term is missing (a float ``Y`` without decimal places: within :data:`FLOAT_RTOL`). Integer
  coefficients on integer columns give exact integers.
* **Not by accident**: at least :data:`ROWS_PER_PARAMETER` distinct ``(Y, X...)`` rows per fitted
  parameter, so that a handful of points on a plane is no relation.
* **No cycles**: terms are kept columns; relations are taken in the search's order (fewer terms
  first), skipping one whose ``Y`` is already derived or a term, or whose terms include a derived column.

Only ``derive="auto"`` searches (given pairs are categorical keys); private models never derive
(:func:`tabdiff_jax.preprocess.dependencies.model_options`). Conditioning on ``Y`` is refused (it
is no condition on one column); imputation fills a missing ``Y`` from its terms and a single missing
term from an observed ``Y`` (:func:`fill_terms`, :func:`finish_impute`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.preprocess import dependencies, frames
from tabdiff_jax.preprocess.relation_search import search
from tabdiff_jax.preprocess.schema import DATA, NUMERIC, ColumnSpec

MAX_DIGITS = 6
ROWS_PER_PARAMETER = 10
FLOAT_RTOL = 1e-12


def round_as(y: np.ndarray, integer: bool, decimals: Optional[int]) -> np.ndarray:
    """``y`` rounded as a column is: whole numbers, ``decimals`` places, or not at all (``None``)."""
    if integer:
        return np.rint(y)
    return y if decimals is None else np.round(y, decimals)


@dataclasses.dataclass(frozen=True)
class Linear:
    """One linearly derived column: ``column = intercept + sum(coefficients * terms)``, rounded as the column.

    Attributes:
      column: the derived column; ``terms``: the kept numeric columns it is built from.
      intercept, coefficients: the snapped relation (floats, one coefficient per term).
      position: its place in the fitted table; ``dtype``: its pandas dtype as a string.
      integer: round to whole numbers; ``decimals``: else round to these decimal places (``None``: no rounding).
    """

    column: str
    terms: tuple
    intercept: float
    coefficients: tuple
    position: int
    dtype: str
    integer: bool = False
    decimals: Optional[int] = None

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["terms"], d["coefficients"] = list(self.terms), list(self.coefficients)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Linear":
        return cls(**{**d, "terms": tuple(d["terms"]), "coefficients": tuple(d["coefficients"])})

    def formula(self) -> str:
        """The right-hand side, e.g. ``sqft_above + sqft_basement`` or ``a + 2 b + 3``."""
        out = ""
        for b, term in zip(self.coefficients, self.terms):
            sign = "-" if b < 0 else "+"
            factor = "" if abs(b) == 1 else f"{abs(b):.12g} "
            out += f" {sign} {factor}{term}" if out else f"{'-' if b < 0 else ''}{factor}{term}"
        if self.intercept:
            out += f" {'-' if self.intercept < 0 else '+'} {abs(self.intercept):.12g}"
        return out

    def describe(self) -> str:
        return f"equals {self.formula()} in every row: derived on decode, not modelled"

    def values(self, frame: pd.DataFrame) -> np.ndarray:
        """float64 ``[n]``: the column for the rows of ``frame`` (which holds the terms), rounded as the column."""
        y = np.full(len(frame), float(self.intercept))
        for b, term in zip(self.coefficients, self.terms):
            y = y + float(b) * frame[term].to_numpy(np.float64, na_value=np.nan)
        return round_as(y, self.integer, self.decimals)

    def series(self, frame: pd.DataFrame) -> pd.Series:
        """The column for the rows of ``frame``, in its dtype (index of ``frame``)."""
        y = self.values(frame)
        dtype = frames.restore_dtype(self.dtype)
        if isinstance(dtype, np.dtype) and dtype.kind in "iu" and np.isnan(y).any():
            dtype = np.dtype(np.float64)  # a missing term (the fitted column had none): missing, as a float
        return pd.Series(y, index=frame.index).astype(dtype)


def _holds(rel: Linear, df: pd.DataFrame) -> bool:
    """Whether ``rel`` rebuilds ``df[rel.column]`` in every row (missing exactly where a term is)."""
    got = rel.series(df).to_numpy(np.float64, na_value=np.nan)
    want = df[rel.column].to_numpy(np.float64, na_value=np.nan)
    same = np.isnan(got) == np.isnan(want)
    close = got == want
    if not rel.integer and rel.decimals is None:
        close |= np.abs(got - want) <= FLOAT_RTOL * max(1.0, float(np.nanmax(np.abs(want))))
    return bool(np.all(same & (close | np.isnan(want))))


def _exact(found: dict, spec: ColumnSpec, position: int, df: pd.DataFrame) -> Optional[Linear]:
    """The relation ``found`` (from the search) with the fewest decimals that holds in every row, or ``None``."""
    intercept, coefficients = float(found["intercept"]), [float(b) for b in found["coefficients"]]
    snaps = [(round(intercept, d), tuple(round(b, d) for b in coefficients)) for d in range(MAX_DIGITS + 1)]
    for a, bs in snaps + [(intercept, tuple(coefficients))]:
        if any(b == 0 for b in bs):  # a term dropped: not this relation
            continue
        rel = Linear(column=spec.name, terms=tuple(found["columns"]), intercept=a + 0.0, coefficients=bs,
                     position=position, dtype=spec.dtype, integer=spec.integer,
                     decimals=None if spec.integer else spec.decimals)
        if _holds(rel, df):
            return rel
    return None


def find(df: pd.DataFrame, specs: Sequence[ColumnSpec], target: Optional[str], excluded,
         seed: int) -> tuple[Linear, ...]:
    """The linearly derived columns of ``df`` (see the module docstring), in table order.

    Args:
      specs: the fitted columns; ``excluded``: columns derived otherwise (from a categorical key).
    """
    numeric = [s for s in specs if s.kind == NUMERIC and s.name not in set(excluded)]
    spec = {s.name: s for s in numeric}
    targets = [s.name for s in numeric if s.name != target and s.domain_source == DATA]
    if not targets:
        return ()
    position = {c: i for i, c in enumerate(df.columns)}
    out: dict[str, Linear] = {}
    used: set = set()
    for found in search(df, list(spec), seed=seed, targets=targets):
        y, terms = found["target"], found["columns"]
        if found["kind"] != "linear" or y in out or y in used or any(t in out for t in terms):
            continue
        distinct = len(df[[y, *terms]].dropna().drop_duplicates())
        if distinct < ROWS_PER_PARAMETER * (len(terms) + 1):
            continue
        rel = _exact(found, spec[y], position[y], df)
        if rel is not None:
            out[y] = rel
            used.update(terms)
    return tuple(sorted(out.values(), key=lambda r: r.position))


def find_all(df: pd.DataFrame, specs: Sequence[ColumnSpec], target: Optional[str], derive,
             seed: int) -> tuple[tuple, tuple[Linear, ...]]:
    """``(categorical-key dependencies, linear relations)`` of ``df`` for the preprocessor's ``derive`` option:
    both for ``"auto"``, the given pairs only for a list, nothing for ``None``."""
    if not derive:
        return (), ()
    derived = dependencies.find(df, specs, target, derive, seed)
    if derive != dependencies.AUTO:
        return derived, ()
    return derived, find(df, specs, target, [d.column for d in derived], seed)


def state(derived: Sequence, linear: Sequence[Linear]) -> dict:
    """The preprocessor meta's entries for its derived columns (read back by :func:`from_state`)."""
    return {"derived": [d.to_json() for d in derived], "linear": [r.to_json() for r in linear]}


def from_state(meta: dict) -> tuple[tuple, tuple[Linear, ...]]:
    """``(derived, linear)`` from a preprocessor's meta (:func:`state`; older files have no ``"linear"``)."""
    return (tuple(dependencies.Derived.from_json(d) for d in meta.get("derived", ())),
            tuple(Linear.from_json(d) for d in meta.get("linear", ())))


def restored(frame: pd.DataFrame, linear: Sequence[Linear]) -> list[tuple]:
    """``(position, column, series)`` of each linearly derived column, from the decoded kept columns ``frame``."""
    return [(r.position, r.column, r.series(frame)) for r in linear]


def _relations(model) -> tuple[Linear, ...]:
    return tuple(getattr(getattr(model, "preprocessor", None), "linear", ()) or ())


def check_condition(model, condition):
    """``condition`` unchanged, unless it names a linearly derived column.

    Raises:
      ConfigError: a condition on a derived column (a value of ``a + b1 X1 + ...`` is no condition
        on one column the model draws); condition on its terms instead.
    """
    if isinstance(condition, dict):
        for rel in _relations(model):
            if rel.column in condition:
                raise ConfigError(
                    f"condition {rel.column}={condition[rel.column]!r}: {rel.column!r} {rel.describe()} (derive=), "
                    f"so it cannot be a condition; condition on {' and '.join(rel.terms)} instead")
    return condition


def _term_value(rel: Linear, j: int, rows: pd.DataFrame, spec: Optional[ColumnSpec]) -> np.ndarray:
    """Term ``j`` solved from the rows' derived value and other terms, rounded as the term (NaN: none holds)."""
    rest = rows[rel.column].to_numpy(np.float64) - rel.intercept
    for i, (b, term) in enumerate(zip(rel.coefficients, rel.terms)):
        if i != j:
            rest = rest - b * rows[term].to_numpy(np.float64)
    x = rest / rel.coefficients[j]
    if spec is not None:
        x = round_as(x, spec.integer, spec.decimals)
    trial = rows.assign(**{rel.terms[j]: x})
    return np.where(rel.values(trial) == rows[rel.column].to_numpy(np.float64), x, np.nan)


def fill_terms(model, df: pd.DataFrame) -> pd.DataFrame:
    """For imputation: ``df`` with a term cell set where the row's derived cell is observed and that term is
    its only missing one, so that the relation holds in the imputed row (``df`` itself is not changed)."""
    if not isinstance(df, pd.DataFrame):
        return df  # known_from_frame names the problem
    relations = [r for r in _relations(model) if {r.column, *r.terms} <= set(df.columns)]
    if not relations:
        return df
    specs = {s.name: s for s in model.preprocessor.specs}
    out = df.copy()
    for rel in relations:  # in order: a term filled for one relation counts as given for the next
        gaps = out[list(rel.terms)].isna().to_numpy()
        for j, term in enumerate(rel.terms):
            rows = (out[rel.column].notna().to_numpy() & gaps[:, j] & (gaps.sum(axis=1) == 1))
            if rows.any():
                value = _term_value(rel, j, out.loc[rows], specs.get(term))
                out.loc[out.index[rows], term] = pd.Series(value, index=out.index[rows]).astype(np.float64)
    return out


def finish_impute(model, df: pd.DataFrame, filled: pd.DataFrame, out: pd.DataFrame) -> pd.DataFrame:
    """``out`` (an imputation of ``df``) with the terms :func:`fill_terms` set (``filled``) exactly, and each
    missing derived cell rebuilt from its row's terms, so the relation holds whatever the decode rounded."""
    for rel in (r for r in _relations(model) if r.column in df.columns):
        for term in rel.terms:
            rows = df[term].isna().to_numpy() & filled[term].notna().to_numpy()
            if rows.any():
                out.loc[out.index[rows], term] = filled.loc[filled.index[rows], term].to_numpy()
        rows = df[rel.column].isna().to_numpy()
        if rows.any():
            out.loc[out.index[rows], rel.column] = rel.series(out.loc[rows]).to_numpy()
    return out


def rebuild_given(model, frame: pd.DataFrame, given) -> pd.DataFrame:
    """``frame`` with each derived column that has a term in ``given`` (columns set to a condition's values
    after decoding) rebuilt from the set values."""
    for rel in _relations(model):
        if rel.column in frame.columns and set(rel.terms) & set(given):
            frame[rel.column] = rel.series(frame)
    return frame
