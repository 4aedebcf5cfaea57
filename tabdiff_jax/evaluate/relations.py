"""Exact relations between the columns of the real table, and the share of synthetic rows keeping each.

Two kinds are searched (tables from :func:`~tabdiff_jax.evaluate.columns.prepare`):

* **Functional dependencies** ``X -> Y``: every real row with the same value of ``X`` has the
  same value of ``Y`` (a missing value counts as a value). Only columns ``X`` with at most
  ``max_key_share`` x rows distinct values are candidates, so that an ID-like column does not
  trivially determine everything, ``Y`` must not be constant, and a dependency that still holds
  after ``Y`` is shuffled (seeded, ``null_shuffles`` times) is dropped: it holds by the accident of
  many small groups, not because ``X`` decides ``Y``. When ``Y -> X`` holds too the pair is
  reported once, as ``"one_to_one"`` (Adult's education <-> education-num); otherwise
  ``"determines"``. A synthetic row keeps ``X -> Y`` when its ``Y`` equals the real mapping of
  its ``X``; a row whose ``X`` value never occurs in the real table breaks it.
* **Linear relations** between numeric columns: ``y = a + b1 x1 (+ b2 x2 (+ b3 x3))`` (``"linear"``)
  or ``y = a + b x1 x2 (x3)`` (``"product"``, a charge from a rate and minutes, a volume from three
  lengths), exact when every complete real row's residual is at most ``rel_tol`` x the standard
  deviation of ``y`` (that allows rounding to a few digits). The search fits every candidate on a
  seeded subsample of ``search_rows`` rows, then verifies the survivors on all rows; subsets that
  contain an already found relation are skipped, so each relation is reported once, minimally.
  Relations of 3 columns are searched among the first ``2 max_numeric`` numeric columns, of 4
  columns among the first ``max_numeric``, to bound the candidates on wide tables. A synthetic row
  keeps the relation when its residual is within the same tolerance; rows with a missing value
  in the relation's columns are not counted. Two numbers mapped one to one by a line are reported
  once, as the dependency.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from tabdiff_jax.evaluate.columns import Columns
from tabdiff_jax.preprocess.dependencies import codes_of as _codes
from tabdiff_jax.preprocess.dependencies import determines as _determines
from tabdiff_jax.preprocess.relation_search import search as _search


def functional_dependencies(real: pd.DataFrame, columns: Columns, *, seed: int = 0, max_key_share: float = 0.5,
                            null_shuffles: int = 3) -> list[dict]:
    """The dependencies ``X -> Y`` of ``real`` (see module doc), one-to-one pairs reported once.

    Returns:
      A list of ``{"kind": "one_to_one" | "determines", "columns": [X, Y], "key_values": distinct X}``.
    """
    n = len(real)
    codes = {c: _codes(real[c]) for c in columns.names}
    distinct = {c: int(codes[c].max()) + 1 if n else 0 for c in columns.names}
    keys = [c for c in columns.names if 2 <= distinct[c] <= max_key_share * n]
    rng = np.random.default_rng([int(seed), 4])
    holds = set()
    for x in keys:
        order = np.argsort(codes[x], kind="stable")
        sorted_x = codes[x][order]
        same_group = sorted_x[1:] == sorted_x[:-1]
        for y in columns.names:
            if y == x or distinct[y] < 2 or not _determines(order, same_group, codes[y]):
                continue
            shuffles = [rng.permutation(codes[y]) for _ in range(null_shuffles)]
            if not any(_determines(order, same_group, s) for s in shuffles):
                holds.add((x, y))
    out = []
    for x, y in sorted(holds, key=lambda p: (columns.names.index(p[0]), columns.names.index(p[1]))):
        both = (y, x) in holds
        if both and columns.names.index(y) < columns.names.index(x):
            continue
        out.append({"kind": "one_to_one" if both else "determines", "columns": [x, y], "key_values": distinct[x]})
    return out


def linear_relations(real: pd.DataFrame, columns: Columns, **search) -> list[dict]:
    """The exact linear and product relations between numeric columns of ``real`` (see module doc):
    :func:`tabdiff_jax.preprocess.relation_search.search` on ``columns.numeric``, which the preprocessor's
    ``derive="auto"`` uses too (``search``: ``seed``, ``rel_tol``, ``search_rows``, ``max_numeric``, ``chunk``).

    Returns:
      A list of ``{"kind": "linear" | "product", "target": y, "columns": [x...], "intercept",
      "coefficients", "tolerance", "max_residual"}``; for ``"product"`` the single coefficient
      multiplies the product of the columns.
    """
    return _search(real, columns.numeric, **search)

def _predict(rel: dict, frame: pd.DataFrame) -> np.ndarray:
    x = frame[rel["columns"]].to_numpy(np.float64)
    if rel["kind"] == "product":
        x = np.prod(x, axis=1, keepdims=True)
    return rel["intercept"] + x @ np.asarray(rel["coefficients"])


def kept_share(rel: dict, real: pd.DataFrame, synthetic: pd.DataFrame) -> tuple[float, int]:
    """Share of ``synthetic`` rows that keep relation ``rel`` (from this module), and the rows counted."""
    if rel["kind"] in ("one_to_one", "determines"):
        x, y = rel["columns"]
        mapping = real.drop_duplicates(x)
        index = pd.Index(mapping[x].to_numpy())
        pos = index.get_indexer(synthetic[x].to_numpy())
        expected = pd.Series(mapping[y].to_numpy()[np.maximum(pos, 0)])
        got = pd.Series(synthetic[y].to_numpy())
        same = (got == expected).to_numpy() | (got.isna() & expected.isna()).to_numpy()
        return float(np.mean(same & (pos >= 0))) if len(synthetic) else float("nan"), len(synthetic)
    cols = [rel["target"], *rel["columns"]]
    frame = synthetic[cols].dropna()
    if not len(frame):
        return float("nan"), 0
    residual = np.abs(frame[rel["target"]].to_numpy(np.float64) - _predict(rel, frame))
    return float(np.mean(residual <= rel["tolerance"])), len(frame)


def exact_relations(real: pd.DataFrame, synthetic: pd.DataFrame, columns: Columns, *, seed: int = 0,
                    **search) -> dict:
    """Find the exact relations of ``real`` and measure how many ``synthetic`` rows keep each.

    ``search`` goes to :func:`functional_dependencies` (``max_key_share``, ``null_shuffles``) and
    :func:`linear_relations` (``rel_tol``, ``search_rows``, ``max_numeric``).

    Returns:
      ``{"relations": [{..., "description", "kept_share", "rows_counted"}], "min_kept_share"}``.
    """
    fd_keys = {k: search.pop(k) for k in ("max_key_share", "null_shuffles") if k in search}
    relations = functional_dependencies(real, columns, seed=seed, **fd_keys)
    pairs = {frozenset(r["columns"]) for r in relations}  # two numbers mapped one to one: report the FD only
    relations += [r for r in linear_relations(real, columns, seed=seed, **search)
                  if frozenset([r["target"], *r["columns"]]) not in pairs]
    for rel in relations:
        rel["description"] = describe(rel)
        rel["kept_share"], rel["rows_counted"] = kept_share(rel, real, synthetic)
    shares = [r["kept_share"] for r in relations if np.isfinite(r["kept_share"])]
    return {"relations": relations, "min_kept_share": min(shares) if shares else None}


def describe(rel: dict) -> str:
    """A one-line formula, e.g. ``education <-> education-num`` or ``c = 0 + 1 a + 1 b``."""
    if rel["kind"] == "one_to_one":
        return f"{rel['columns'][0]} <-> {rel['columns'][1]}"
    if rel["kind"] == "determines":
        return f"{rel['columns'][0]} -> {rel['columns'][1]}"
    terms = [f"{rel['intercept']:.4g}"]
    if rel["kind"] == "product":
        terms.append(f"{rel['coefficients'][0]:.4g} " + " * ".join(rel["columns"]))
    else:
        terms += [f"{b:.4g} {c}" for b, c in zip(rel["coefficients"], rel["columns"])]
    return f"{rel['target']} = " + " + ".join(terms)


SUMMARY_LIMIT = 5  # relations listed in the summary table; the markdown lists all


def summary_rows(result: Optional[dict]) -> list[tuple[str, str, str]]:
    """Rows of the report's summary table (label, value, ideal): the share kept per relation."""
    if not result:
        return []
    from tabdiff_jax.evaluate.report import _fmt

    rels = result["relations"]
    if not rels:
        return [("exact relations in the real table", "none", "-")]
    rows = [(f"kept: {r['description'] if len(r['description']) <= 48 else r['description'][:45] + '...'}",
             _fmt(r["kept_share"]), "1") for r in rels[:SUMMARY_LIMIT]]
    if len(rels) > SUMMARY_LIMIT:
        rows.append((f"kept, worst of all {len(rels)} relations", _fmt(result["min_kept_share"]), "1"))
    return rows


def markdown_section(result: Optional[dict]) -> list[str]:
    """The report's section on exact relations: each relation, its kind and the share kept."""
    if not result:
        return []
    from tabdiff_jax.evaluate.report import _fmt

    out = ["", "## Exact relations of the real table", "",
           "Dependencies that hold in every real row (one column determined by another, or a linear / product "
           "formula of numeric columns) and the share of synthetic rows that keep each."]
    if not result["relations"]:
        return out + ["", "None found."]
    out += ["", "| relation | kind | share kept | rows counted |", "|---|---|---:|---:|"]
    out += [f"| `{r['description']}` | {r['kind']} | {_fmt(r['kept_share'])} | {r['rows_counted']} |"
            for r in result["relations"]]
    return out
