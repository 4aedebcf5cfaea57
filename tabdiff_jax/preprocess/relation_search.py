"""Exact linear and product relations between numeric columns, found by least squares.

Shared by the evaluation (:mod:`tabdiff_jax.evaluate.relations` reports the share of synthetic rows
keeping each relation of the real table) and the preprocessor (:mod:`tabdiff_jax.preprocess.linear`
rebuilds a linearly derived column on decode). A relation is ``y = a + b1 x1 (+ b2 x2 (+ b3 x3))``
(``"linear"``) or ``y = a + b x1 x2 (x3)`` (``"product"``, a charge from a rate and minutes, a volume
from three lengths), exact when every complete row's residual is at most ``rel_tol`` x the standard
deviation of ``y`` (that allows rounding to a few digits). The search fits every candidate on a
seeded subsample of ``search_rows`` rows, then verifies the survivors on all complete rows; subsets
that contain an already found relation are skipped, so each relation is reported once, minimally.
Relations of 3 columns are searched among the first ``2 max_numeric`` numeric columns, of 4 columns
among the first ``max_numeric``, to bound the candidates on wide tables.
"""

from __future__ import annotations

import itertools
from typing import Collection, Optional, Sequence

import numpy as np
import pandas as pd


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


def _candidates(names: list[str], max_numeric: int, targets: Optional[Collection[str]] = None):
    """(kind, target, features) in increasing size (see :func:`_pool`); targets among ``targets`` if given."""
    for size in (1, 2, 3):
        pool = _pool(names, size, max_numeric)
        for y in pool if targets is None else [c for c in pool if c in targets]:
            others = [c for c in pool if c != y]
            for feats in itertools.combinations(others, size):
                yield "linear", y, feats
            if size >= 2:
                for feats in itertools.combinations(others, size):
                    yield "product", y, feats


def search(real: pd.DataFrame, numeric: Sequence[str], *, seed: int = 0, rel_tol: float = 1e-3,
           search_rows: int = 2000, max_numeric: int = 16, chunk: int = 512,
           targets: Optional[Collection[str]] = None) -> list[dict]:
    """The exact linear and product relations between the ``numeric`` columns of ``real`` (see module doc).

    Args:
      targets: the columns that may be a relation's ``y`` (default: any); the others are features only.

    Returns:
      A list of ``{"kind": "linear" | "product", "target": y, "columns": [x...], "intercept",
      "coefficients", "tolerance", "max_residual"}``; for ``"product"`` the single coefficient
      multiplies the product of the columns.
    """
    names = [c for c in numeric if real[c].notna().any() and real[c].nunique() > 1]
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
    for cand in _candidates(names, max_numeric, targets):
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

