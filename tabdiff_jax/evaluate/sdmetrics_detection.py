"""SDMetrics' ``LogisticDetection``: the "C2ST" score that TabSyn and TabDiff report.

A logistic regression learns to tell real rows from synthetic rows; its cross-validated ROC-AUC
gives the score ``1 - mean_folds(max(AUC, 0.5) * 2 - 1)`` (1: indistinguishable, 0: every row
recognised). Preprocessing as ``sdmetrics.single_table.LogisticDetection`` (SDMetrics 0.x):

* numbers: missing values filled with the real column's mean;
* categories (missing as its own category): one-hot over the real table's categories;
* then scikit-learn's ``SimpleImputer`` (mean), ``RobustScaler`` and ``LogisticRegression(solver="lbfgs")``,
  scored on ``StratifiedKFold(3, shuffle=True)`` with real rows labelled 1, synthetic rows 0.

Differences: the folds come from ``seed`` (SDMetrics draws them from NumPy's global random state;
after ``np.random.seed(seed)`` both give the same folds and the same score, bit for bit with the
same BLAS threads: lbfgs stops at 100 iterations before converging on tables like Adult, so another
summation order moves the score by ~1e-4); a synthetic category the real table lacks is an
all-zero one-hot row here, where SDMetrics stops with an error; and the tables may be subsampled
to ``max_rows`` rows each (seeded) to bound the time.
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import pandas as pd

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.evaluate.columns import CATEGORICAL, Columns
from tabdiff_jax.evaluate.detection import thread_limit


def logistic_features(real: pd.DataFrame, synthetic: pd.DataFrame, columns: Columns) -> tuple[np.ndarray, np.ndarray]:
    """SDMetrics' ``HyperTransformer`` on tables from :func:`~tabdiff_jax.evaluate.columns.prepare`.

    Returns:
      ``(x_real, x_synthetic)``: float64 ``[rows, features]`` matrices: the numeric columns, then
      (as SDMetrics appends them) each categorical column expanded into one column per real
      category (sorted, missing last).
    """
    real_parts, syn_parts = [], []
    for c in columns.numeric + columns.categorical:
        r, s = real[c], synthetic[c]
        if columns.kinds[c] != CATEGORICAL:
            mean = r.mean()
            real_parts.append(r.fillna(mean).to_numpy(np.float64)[:, None])
            syn_parts.append(s.fillna(mean).to_numpy(np.float64)[:, None])
            continue
        values = pd.unique(r.dropna()).tolist()
        index = pd.Index(sorted(values) + ([np.nan] if r.isna().any() else []))
        for table, parts in ((r, real_parts), (s, syn_parts)):
            codes = index.get_indexer(table.to_numpy())
            onehot = np.zeros((len(table), len(index)))
            hit = codes >= 0
            onehot[np.flatnonzero(hit), codes[hit]] = 1.0
            parts.append(onehot)
    return np.concatenate(real_parts, axis=1), np.concatenate(syn_parts, axis=1)


def logistic_detection(real: pd.DataFrame, synthetic: pd.DataFrame, columns: Columns, *, seed: int = 0,
                       max_rows: Optional[int] = None, folds: int = 3, threads: int = 1) -> dict:
    """SDMetrics-style ``LogisticDetection`` score and its cross-validated ROC-AUC (see module doc).

    Args:
      real, synthetic: tables from :func:`~tabdiff_jax.evaluate.columns.prepare`.
      seed: seed of the folds (as ``np.random.seed(seed)`` before SDMetrics) and of the subsample.
      max_rows: at most this many rows per table (seeded subsample); ``None`` keeps all.
      threads: BLAS / OpenMP threads of the fit (<= 0: no cap).

    Returns:
      ``{"score", "auc", "fold_auc", "rows_per_table", "folds", "model"}`` with ``auc`` the mean
      fold AUC and ``score`` SDMetrics' ``1 - mean(max(AUC, 0.5) * 2 - 1)``.

    Raises:
      ConfigError: ``folds`` < 2, or ``max_rows`` < ``folds``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import RobustScaler

    if folds < 2 or (max_rows is not None and max_rows < folds):
        raise ConfigError(f"logistic detection needs folds >= 2 and max_rows >= folds, got folds={folds}, "
                          f"max_rows={max_rows}")
    if max_rows is not None:
        rng = np.random.default_rng([int(seed), 3])
        real, synthetic = (t.iloc[np.sort(rng.choice(len(t), max_rows, replace=False))].reset_index(drop=True)
                           if len(t) > max_rows else t for t in (real, synthetic))
    model_name = "sklearn LogisticRegression (lbfgs) after SimpleImputer + RobustScaler, as SDMetrics"
    out = {"rows_per_table": [len(real), len(synthetic)], "folds": folds, "model": model_name}
    if min(len(real), len(synthetic)) < folds:
        return {"score": float("nan"), "auc": float("nan"), "fold_auc": [], **out,
                "note": "too few rows for cross-validation"}
    x_real, x_syn = logistic_features(real, synthetic, columns)
    x = np.concatenate([x_real, x_syn])
    y = np.concatenate([np.ones(len(x_real)), np.zeros(len(x_syn))])
    aucs = []
    with thread_limit(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # lbfgs stops at 100 iterations, as in SDMetrics
        for train_idx, test_idx in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y):
            model = Pipeline([("imputer", SimpleImputer()), ("scaler", RobustScaler()),
                              ("classifier", LogisticRegression(solver="lbfgs"))])
            model.fit(x[train_idx], y[train_idx])
            aucs.append(float(roc_auc_score(y[test_idx], model.predict_proba(x[test_idx])[:, 1])))
    score = 1.0 - float(np.mean([max(0.5, a) * 2.0 - 1.0 for a in aucs]))
    return {"score": score, "auc": float(np.mean(aucs)), "fold_auc": aucs, **out}
