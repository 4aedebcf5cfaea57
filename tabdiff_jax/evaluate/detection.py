"""Detection: how well a classifier tells real rows from synthetic rows (ROC-AUC, cross-validated).

0.5 means the two tables cannot be told apart; 1.0 means every synthetic row is recognisable.
The classifier is scikit-learn's ``HistGradientBoostingClassifier`` (native categorical support,
missing values allowed), scored with stratified k-fold cross-validation on at most ``max_rows``
rows of each table (seeded subsample). Identical rows are kept in one fold (grouped by a hash of
the row): otherwise a copied row would sit in training with one label and in testing with the
other, and a classifier that memorises rows would score *below* 0.5 on a bootstrap of the real data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.evaluate.columns import CATEGORICAL, Columns, category_codes

_MAX_NATIVE_CATEGORIES = 250  # HistGradientBoosting's native categorical support needs < 255 bins


def feature_matrix(tables: list[pd.DataFrame], columns: Columns, exclude: tuple[str, ...] = ()) -> tuple[list[np.ndarray], np.ndarray]:
    """Float feature matrices for tree models: numbers as they are, categories as integer codes.

    Categories are coded over the union of all ``tables`` (missing: ``NaN``); a column with more than
    250 categories is coded by descending frequency and treated as a number.

    Returns:
      ``(matrices, is_categorical)``: one ``[n, features]`` float64 matrix per table and a bool mask.
    """
    names = [c for c in columns.names if c not in exclude]
    mats = [np.empty((len(t), len(names))) for t in tables]
    is_cat = np.zeros(len(names), bool)
    for j, c in enumerate(names):
        if columns.kinds[c] != CATEGORICAL:
            for m, t in zip(mats, tables):
                m[:, j] = t[c].to_numpy(np.float64)
            continue
        codes, cats = category_codes([t[c] for t in tables])
        k = len(cats)
        if k > _MAX_NATIVE_CATEGORIES:
            counts = np.bincount(np.concatenate(codes), minlength=k + 1)[:k]
            rank = np.empty(k, np.int64)
            rank[np.argsort(-counts, kind="stable")] = np.arange(k)
            lookup = np.append(rank, -1).astype(np.float64)
        else:
            is_cat[j] = True
            lookup = np.arange(k + 1, dtype=np.float64)
        lookup[k] = np.nan
        for m, cc in zip(mats, codes):
            m[:, j] = lookup[cc]
    return mats, is_cat


def thread_limit(threads: int):
    """Context manager capping the OpenMP / BLAS threads of scikit-learn (``threads`` <= 0: no cap).

    On a busy machine, OpenMP threads that wait for each other at every boosting iteration can
    make a small fit many times slower than one thread; ``threads=1`` avoids that.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(threads) if threads and threads > 0 else None)


def detection_auc(real: pd.DataFrame, synthetic: pd.DataFrame, columns: Columns, *, seed: int = 0,
                  max_rows: int = 10_000, folds: int = 3, max_iter: int = 100, threads: int = 1) -> dict:
    """Cross-validated ROC-AUC of a classifier separating real (label 0) from synthetic (label 1).

    ``threads`` caps the classifier's OpenMP threads (default 1: these fits are small, and on a
    busy machine threads waiting for each other cost far more than they save).

    Returns:
      ``{"auc", "fold_auc", "rows_per_table", "folds", "model"}``.

    Raises:
      ConfigError: ``folds`` < 2 or ``max_rows`` < ``folds``.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    if folds < 2 or max_rows < folds:
        raise ConfigError(f"detection needs folds >= 2 and max_rows >= folds, got folds={folds}, max_rows={max_rows}")
    rng = np.random.default_rng(seed)
    n_real, n_syn = min(len(real), max_rows), min(len(synthetic), max_rows)
    real = real.iloc[np.sort(rng.choice(len(real), n_real, replace=False))]
    synthetic = synthetic.iloc[np.sort(rng.choice(len(synthetic), n_syn, replace=False))]
    (x_real, x_syn), is_cat = feature_matrix([real, synthetic], columns)
    x = np.concatenate([x_real, x_syn])
    y = np.concatenate([np.zeros(n_real, np.int64), np.ones(n_syn, np.int64)])
    if min(n_real, n_syn) < folds:
        return {"auc": float("nan"), "fold_auc": [], "rows_per_table": [n_real, n_syn], "folds": folds,
                "model": "sklearn HistGradientBoostingClassifier", "note": "too few rows for cross-validation"}
    aucs = []
    groups = pd.util.hash_pandas_object(pd.concat([real, synthetic], ignore_index=True), index=False).to_numpy()
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_idx, test_idx in splitter.split(x, y, groups):
        model = HistGradientBoostingClassifier(
            max_iter=max_iter, early_stopping=False, random_state=seed,
            categorical_features=is_cat if is_cat.any() else None,
        )
        with thread_limit(threads):
            model.fit(x[train_idx], y[train_idx])
            aucs.append(float(roc_auc_score(y[test_idx], model.predict_proba(x[test_idx])[:, 1])))
    return {
        "auc": float(np.mean(aucs)),
        "fold_auc": aucs,
        "rows_per_table": [n_real, n_syn],
        "folds": folds,
        "model": "sklearn HistGradientBoostingClassifier",
    }
