"""Machine-learning efficiency: train a model on real / on synthetic rows, score both on a real test table.

The model is CatBoost (as in TabDDPM) when the ``catboost`` package is importable, else
scikit-learn's ``HistGradientBoosting`` (early stopping on a 10 % validation split from 50 rows,
else at most :data:`SMALL_MAX_ITER` rounds); the result says which. CatBoost runs at most
``iterations`` boosting rounds (learning rate 0.1, depth 6, no combinations of categorical
features: ``max_ctr_complexity=1`` halves the time on Adult at the same F1) with early stopping on
a seeded 20 % validation split of its own training table, so that real and synthetic get the
same treatment.
CatBoost always fits on :data:`CATBOOST_FIT_THREADS` (one) thread, whatever ``threads`` says: its
classifier's trees depend on its thread count (catboost issue 2804; here a DP-GAN table of Adult
scored F1 0.593 on one thread and 0.686 on two, the trees parting from the 12th on), so the score
would depend on the machine. ``threads`` still runs its predictions, which do not depend on it.
Scores: F1 macro (primary), accuracy and ROC-AUC for classification; R2 (primary), RMSE and MAE
for regression.
"""

from __future__ import annotations

import importlib.util
from typing import Optional

import numpy as np
import pandas as pd

from tabdiff_jax.errors import ConfigError, DataError
from tabdiff_jax.evaluate.columns import (
    CATEGORICAL,
    Columns,
    category_strings,
    seeded_split,
)
from tabdiff_jax.evaluate.detection import feature_matrix, thread_limit

CLASSIFICATION, REGRESSION = "classification", "regression"
MODELS = ("auto", "catboost", "sklearn")
SMALL_MAX_ITER = 100  # scikit-learn rounds when there are too few rows to early-stop on
SMALL_TABLE = 10_000  # scikit-learn fits on fewer rows run on one thread
CATBOOST_FIT_THREADS = 1  # CatBoost's trees depend on its thread count: one count for every fit (module doc)


def catboost_available() -> bool:
    return importlib.util.find_spec("catboost") is not None


def _catboost_frame(df: pd.DataFrame, columns: Columns, features: list[str]) -> pd.DataFrame:
    out = {}
    for c in features:
        if columns.kinds[c] == CATEGORICAL:
            out[c] = df[c].fillna("<missing>").astype(str).to_numpy()
        else:
            out[c] = df[c].to_numpy(np.float64)
    return pd.DataFrame(out)


def _fit_predict(model_name: str, task: str, train: pd.DataFrame, y_train: np.ndarray, tests: list[pd.DataFrame],
                 columns: Columns, features: list[str], *, seed: int, iterations: int, threads: int):
    """Fit on ``train`` and return, per test table, (predictions, class probabilities or None, classes)."""
    if task == CLASSIFICATION and len(np.unique(y_train)) < 2:
        # One class only: every model predicts it (CatBoost refuses to train on a constant target).
        only = np.unique(y_train)
        return [(np.repeat(only, len(t)), np.ones((len(t), 1)), only) for t in tests], "constant (one class in training rows)"
    if model_name == "catboost":
        from catboost import CatBoostClassifier, CatBoostRegressor

        keep, val = seeded_split(len(train), 0.2, seed) if len(train) >= 50 else (np.arange(len(train)), None)
        cat_features = [c for c in features if columns.kinds[c] == CATEGORICAL]
        x = _catboost_frame(train, columns, features)
        cls = CatBoostClassifier if task == CLASSIFICATION else CatBoostRegressor
        model = cls(iterations=iterations, learning_rate=0.1, depth=6, max_ctr_complexity=1, random_seed=seed,
                    thread_count=CATBOOST_FIT_THREADS, verbose=0, allow_writing_files=False,
                    early_stopping_rounds=50 if val is not None else None)
        eval_set = None
        if val is not None and (task == REGRESSION or len(np.unique(y_train[keep])) == len(np.unique(y_train))):
            eval_set = (x.iloc[val], y_train[val])
        else:
            keep = np.arange(len(train))
        model.fit(x.iloc[keep], y_train[keep], cat_features=cat_features, eval_set=eval_set)
        out = []
        for t in tests:
            xt = _catboost_frame(t, columns, features)
            if task == CLASSIFICATION:
                out.append((np.asarray(model.predict(xt, thread_count=threads)).ravel(),
                            model.predict_proba(xt, thread_count=threads), np.asarray(model.classes_)))
            else:
                out.append((np.asarray(model.predict(xt, thread_count=threads)), None, None))
        info = f"catboost (iterations<={iterations}, best {model.get_best_iteration() if eval_set else iterations})"
        return out, info
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
    )

    mats, is_cat = feature_matrix([train[features]] + [t[features] for t in tests], Columns({c: columns.kinds[c] for c in features}))
    cls = HistGradientBoostingClassifier if task == CLASSIFICATION else HistGradientBoostingRegressor
    # Early stopping on a held-out 10 % (stratified: each class needs two rows) bounds the time on
    # small tables too (800 rows took minutes at 1000 rounds); without it, at most SMALL_MAX_ITER rounds.
    stop = len(train) >= 50 and (task == REGRESSION or np.unique(y_train, return_counts=True)[1].min() >= 2)
    model = cls(max_iter=iterations if stop else min(iterations, SMALL_MAX_ITER), learning_rate=0.1,
                early_stopping=stop, random_state=seed, categorical_features=is_cat if is_cat.any() else None)
    out = []
    # One thread below SMALL_TABLE rows: OpenMP threads gain nothing there and, on a busy machine,
    # spin (1,000 rows: 1.4 s on one thread, 18.5 s on two with other jobs running).
    with thread_limit(1 if len(train) < SMALL_TABLE else threads):
        model.fit(mats[0], y_train)
        for m in mats[1:]:
            if task == CLASSIFICATION:
                out.append((model.predict(m), model.predict_proba(m), np.asarray(model.classes_)))
            else:
                out.append((model.predict(m), None, None))
    return out, f"sklearn HistGradientBoosting (max_iter={model.max_iter}, ran {model.n_iter_})"


def _classification_scores(y_true, y_pred, proba, classes) -> dict:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    out = {"f1_macro": float(f1_score(y_true, y_pred, average="macro")), "accuracy": float(accuracy_score(y_true, y_pred))}
    labels = np.unique(y_true)
    auc = float("nan")
    if len(labels) >= 2:
        lookup = {c: i for i, c in enumerate(classes)}
        full = np.zeros((len(y_true), len(labels)))
        for k, label in enumerate(labels):
            if label in lookup:
                full[:, k] = proba[:, lookup[label]]
        if len(labels) == 2:
            auc = float(roc_auc_score(y_true == labels[1], full[:, 1]))
        else:
            full = full / np.maximum(full.sum(1, keepdims=True), 1e-12)
            auc = float(roc_auc_score(y_true, full, multi_class="ovr", average="macro", labels=labels))
    out["roc_auc"] = auc
    return out


def _regression_scores(y_true, y_pred) -> dict:
    from sklearn.metrics import mean_absolute_error, r2_score

    return {
        "r2": float(r2_score(y_true, y_pred)),
        "rmse": float(np.sqrt(np.mean((y_true - y_pred) ** 2))),
        "mae": float(mean_absolute_error(y_true, y_pred)),
    }


def utility_scores(real: pd.DataFrame, synthetic: pd.DataFrame, test: pd.DataFrame, columns: Columns, task: str, *,
                   seed: int = 0, model: str = "auto", iterations: int = 1000, threads: int = -1,
                   predictions: Optional[dict] = None) -> dict:
    """Train on real and on synthetic, score both on ``test`` (tables from :func:`prepare`).

    Args:
      task: ``"classification"`` or ``"regression"`` for ``columns.target``.
      model: ``"auto"`` (CatBoost if installed, else scikit-learn), ``"catboost"`` or ``"sklearn"``.
      iterations: most boosting rounds.
      threads: threads of the model (-1: all cores); CatBoost fits on one (the module doc says why)
        and predicts on ``threads``, so its scores do not depend on them.
      predictions: when given, filled with the scored rows (``"test"``), their labels (``"y_test"``)
        and each model's predictions (``"real"``, ``"synthetic"``), for :mod:`.fairness`.

    Returns:
      ``{"model", "task", "target", "metric", "real": {...}, "synthetic": {...}, "gap"}`` where
      ``gap`` is the primary metric on real minus on synthetic.

    Raises:
      ConfigError: bad ``task`` / ``model``, or ``model="catboost"`` without the package.
      DataError: no target, a regression target with missing values, or a test table without labels.
    """
    target = columns.target
    if target is None:
        raise DataError("utility needs a target column")
    if task not in (CLASSIFICATION, REGRESSION):
        raise ConfigError(f"task must be 'classification' or 'regression', got {task!r}")
    if model not in MODELS:
        raise ConfigError(f"utility model must be one of {MODELS}, got {model!r}")
    if model == "catboost" and not catboost_available():
        raise ConfigError("utility model 'catboost' requested but catboost is not installed (pip install 'tabdiff_jax[eval]')")
    name = "catboost" if model == "catboost" or (model == "auto" and catboost_available()) else "sklearn"
    features = [c for c in columns.names if c != target]

    def labels(df: pd.DataFrame, table: str) -> tuple[pd.DataFrame, np.ndarray]:
        y = df[target]
        keep = y.notna().to_numpy()
        if task == REGRESSION:
            if not keep.all() and table == "test":
                raise DataError(f"target {target!r} has missing values in the test table")
            return df[keep].reset_index(drop=True), y[keep].to_numpy(np.float64)
        return df[keep].reset_index(drop=True), category_strings(y[keep]).to_numpy().astype(str)

    test_df, y_test = labels(test, "test")
    if len(y_test) == 0:
        raise DataError(f"the test table has no rows with a value of {target!r}")
    result = {"model": name, "task": task, "target": target, "metric": "f1_macro" if task == CLASSIFICATION else "r2",
              "test_rows": int(len(y_test))}
    for key, table in (("real", real), ("synthetic", synthetic)):
        df, y = labels(table, key)
        (pred,), info = _fit_predict(name, task, df, y, [test_df], columns, features, seed=seed,
                                     iterations=iterations, threads=threads)
        y_pred, proba, classes = pred
        scores = _classification_scores(y_test, y_pred.astype(str), proba, classes.astype(str)) if task == CLASSIFICATION \
            else _regression_scores(y_test, y_pred.astype(np.float64))
        result[key] = {**scores, "train_rows": int(len(y)), "fitted": info}
        if predictions is not None:
            predictions.update({"test": test_df, "y_test": y_test, key: y_pred})
    result["gap"] = result["real"][result["metric"]] - result["synthetic"][result["metric"]]
    return result


def infer_task(series: pd.Series, kind: str, task: Optional[str] = None) -> str:
    """The given ``task``, else classification for a categorical target and regression for a number."""
    if task is not None:
        if task not in (CLASSIFICATION, REGRESSION):
            raise ConfigError(f"task must be 'classification', 'regression' or None, got {task!r}")
        return task
    return CLASSIFICATION if kind == CATEGORICAL else REGRESSION
