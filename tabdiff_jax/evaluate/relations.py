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

import itertools
from typing import Optional

import numpy as np
import pandas as pd

from tabdiff_jax.evaluate.columns import Columns
from tabdiff_jax.preprocess.dependencies import codes_of as _codes
from tabdiff_jax.preprocess.dependencies import determines as _determines


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


def _zscore(values: np.ndarray, axis: int) -> np.ndarray:
    """Standardise along ``axis`` (a constant stays 0)."""
    mean, std = values.mean(axis=axis, keepdims=True), values.std(axis=axis, keepdims=True)
    return (values - mean) / np.where(std > 0, std, 1.0)


def _fit_max_residual(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares with an intercept for a batch of designs: ``x`` [C, m, k], ``y`` [C, m].

    Returns ``(coefficients [C, k + 1] (intercept first), max |residual| [C])``.
    """
    design = np.concatenate([np.ones(x.shape[:2] + (1,)), x], axis=2)
    gram = np.einsum("cmi,cmj->cij", design, design) + 1e-12 * np.eye(design.shape[2])
    coef = np.linalg.solve(gram, np.einsum("cmi,cm->ci", design, y)[..., None])[..., 0]
    residual = y - np.einsum("cmi,ci->cm", design, coef)
    return coef, np.abs(residual).max(axis=1)


def _fit_raw(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, float]:
    """Least squares ``y ~ a + x b`` (``x`` [m, k]) fitted on standardised columns for conditioning.

    Returns ``(a, b [k], max |residual|)`` in the columns' own units.
    """
    mx, sx = x.mean(axis=0), x.std(axis=0)
    my, sy = y.mean(), y.std()
    sx, sy = np.where(sx > 0, sx, 1.0), sy if sy > 0 else 1.0
    coef, _ = _fit_max_residual(((x - mx) / sx)[None], ((y - my) / sy)[None])
    b = coef[0, 1:] * sy / sx
    a = my + sy * coef[0, 0] - float(b @ mx)
    return float(a), b, float(np.abs(y - a - x @ b).max())


def _pool(names: list[str], size: int, max_numeric: int) -> list[str]:
    """Columns searched for relations with ``size`` other columns: all for 1, the first ``2 max_numeric``
    for 2, the first ``max_numeric`` for 3 (the candidates grow as columns ** (size + 1))."""
    return names if size == 1 else names[:max_numeric * (2 if size == 2 else 1)]


def _candidates(names: list[str], max_numeric: int):
    """(kind, target, features) in increasing size (see :func:`_pool`)."""
    for size in (1, 2, 3):
        pool = _pool(names, size, max_numeric)
        for y in pool:
            others = [c for c in pool if c != y]
            for feats in itertools.combinations(others, size):
                yield "linear", y, feats
            if size >= 2:
                for feats in itertools.combinations(others, size):
                    yield "product", y, feats


def linear_relations(real: pd.DataFrame, columns: Columns, *, seed: int = 0, rel_tol: float = 1e-3,
                     search_rows: int = 2000, max_numeric: int = 16, chunk: int = 512) -> list[dict]:
    """The exact linear and product relations between numeric columns of ``real`` (see module doc).

    Returns:
      A list of ``{"kind": "linear" | "product", "target": y, "columns": [x...], "intercept",
      "coefficients", "tolerance", "max_residual"}``; for ``"product"`` the single coefficient
      multiplies the product of the columns.
    """
    names = [c for c in columns.numeric if real[c].notna().any() and real[c].nunique() > 1]
    complete = real[names].dropna()
    if len(names) < 2 or len(complete) < 10:
        return []
    values = complete.to_numpy(np.float64)
    rng = np.random.default_rng([int(seed), 5])
    sub = values[np.sort(rng.choice(len(values), min(search_rows, len(values)), replace=False))]
    z_sub = _zscore(sub, 0)
    col = {c: i for i, c in enumerate(names)}
    found: list[dict] = []
    found_sets: list[frozenset] = []
    batch: list[tuple] = []

    def features(rows: np.ndarray, kind: str, feats) -> np.ndarray:
        idx = [col[f] for f in feats]
        return rows[:, idx] if kind == "linear" else np.prod(rows[:, idx], axis=1, keepdims=True)

    corr = z_sub.T @ z_sub / len(z_sub)
    product_corr: dict = {}  # feature set -> correlation of its (standardised) product with every column
    for size in (2, 3):
        sets = list(itertools.combinations(_pool(names, size, max_numeric), size))
        if sets:
            p = _zscore(np.stack([np.prod(sub[:, [col[c] for c in f]], axis=1) for f in sets], axis=1), 0)
            product_corr.update(zip(sets, p.T @ z_sub / len(z_sub)))

    def screen(kind: str, cands: list) -> np.ndarray:
        """Mean squared residual of each candidate on the subsample, in units of var(y) (a bound on max^2)."""
        y = np.array([col[t] for _, t, _ in cands])
        if kind == "product":
            return 1.0 - np.array([product_corr[f][col[t]] for _, t, f in cands]) ** 2
        idx = np.array([[col[c] for c in f] for _, _, f in cands])
        gram = corr[idx[:, :, None], idx[:, None, :]] + 1e-12 * np.eye(idx.shape[1])
        rhs = corr[idx, y[:, None]]
        beta = np.linalg.solve(gram, rhs[..., None])[..., 0]
        return 1.0 - np.sum(beta * rhs, axis=1)

    def flush():
        groups: dict = {}
        for cand in batch:
            groups.setdefault((cand[0], len(cand[2])), []).append(cand)
        for (kind, _), cands in groups.items():
            for (k, t, f), msr in zip(cands, screen(kind, cands)):
                members = frozenset((t, *f))
                if msr > (1.5 * rel_tol) ** 2 or any(s <= members for s in found_sets):
                    continue
                target = values[:, col[t]]
                intercept, coefs, full_res = _fit_raw(features(values, k, f), target)
                tolerance = rel_tol * float(target.std())
                if full_res <= tolerance:
                    found_sets.append(members)
                    found.append({"kind": k, "target": t, "columns": list(f), "intercept": intercept,
                                  "coefficients": [float(v) for v in coefs], "tolerance": tolerance,
                                  "max_residual": full_res})
        batch.clear()

    last_size = 1
    for cand in _candidates(names, max_numeric):
        if len(cand[2]) != last_size:  # found relations of one size prune the next
            flush()
            last_size = len(cand[2])
        if any(s <= frozenset((cand[1], *cand[2])) for s in found_sets):
            continue
        batch.append(cand)
        if len(batch) >= chunk:
            flush()
    flush()
    return found


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
