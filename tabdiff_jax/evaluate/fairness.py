"""Fairness of the downstream model: demographic-parity and equalised-odds differences.

The model is the utility section's (:mod:`.utility`): one trained on the real table, one on the
synthetic table, both predicting the real test table. For a sensitive column ``A`` the test rows
fall into groups ``a`` (its values; a missing value is the group ``"<missing>"``), and, as in
fairlearn (``demographic_parity_difference``, ``equalized_odds_difference`` with
``method="between_groups"``, ``agg="worst_case"``):

* demographic-parity difference: ``max_a P(h = c | A = a) - min_a P(h = c | A = a)``;
* equalised-odds difference: the larger of the same spread of the true-positive rate
  ``P(h = c | A = a, Y = c)`` and of the false-positive rate ``P(h = c | A = a, Y != c)``; a
  group without rows of ``Y = c`` (or ``Y != c``) has rate 0 there, as fairlearn and SDMetrics
  count it.

Each class ``c`` of the target is taken in turn as the positive one (one-vs-rest) and the headline
is the largest difference over classes. For a binary target both classes give the same two
numbers (the rates of one class are one minus the other's), so the headline is fairlearn's value
for either ``pos_label``; for a multi-class target it is the worst class, each class kept in
``by_class``.

Beside them, SDMetrics' ``EqualizedOddsImprovement`` score: ``0.5 + (EOD_real - EOD_synthetic) / 2``
(1: the synthetic-trained model removes all the real model's gap, 0.5: the same gap, 0: worse by
the whole range). SDMetrics defines it for a binary target and one sensitive value against the
rest, and trains its own XGBoost; here it is computed from this module's differences (all groups
of the column), which for a two-group column and a binary target is SDMetrics' formula on the same
predictions.

Sensitive columns must be categorical or numeric with at most :data:`MAX_NUMERIC_GROUPS` distinct
values (e.g. a 0/1 code); a continuous one (age) is refused: bin it into a few ranges in every
table first (the binned column is then a feature of the model as well) or choose another column.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from tabdiff_jax.errors import ConfigError, DataError
from tabdiff_jax.evaluate.columns import CATEGORICAL, Columns, category_strings

MAX_NUMERIC_GROUPS = 10  # distinct values a numeric sensitive column may have
MISSING_GROUP = "<missing>"
SOURCES = ("real", "synthetic")  # the utility models' training tables


def check_sensitive(sensitive: str, columns: Columns, task: Optional[str], tables: dict, skip: set) -> None:
    """Refuse, before any model is trained, a sensitive column the fairness metrics cannot use.

    Raises:
      DataError: ``sensitive`` is not a column, a numeric one with too many distinct values, or one
        with a single group in the scored table.
      ConfigError: it is the target, there is no target, the task is regression, the utility part
        is skipped, or there is no test / holdout table to score on.
    """
    if sensitive not in columns.kinds:
        raise DataError(f"sensitive column {sensitive!r} is not a column of the real table; columns are: "
                        f"{', '.join(columns.names)}")
    if columns.target is None:
        raise ConfigError(f"sensitive={sensitive!r} needs a target: the fairness metrics score the utility "
                          f"model's predictions of it")
    if sensitive == columns.target:
        raise ConfigError(f"sensitive column {sensitive!r} is the target; choose another column")
    if task != "classification":
        raise ConfigError(f"sensitive={sensitive!r}: fairness metrics compare predicted classes, but target "
                          f"{columns.target!r} is a regression task; bin the target into classes first")
    if "utility" in skip:
        raise ConfigError(f"sensitive={sensitive!r} needs the utility part (its models are the ones scored); "
                          f"remove 'utility' from skip")
    scored = tables.get("test") if tables.get("test") is not None else tables.get("holdout")
    if scored is None:
        raise ConfigError(f"sensitive={sensitive!r} needs a test or holdout table to score the models on")
    groups = group_labels(scored[sensitive], columns.kinds[sensitive])
    if len(np.unique(groups)) < 2:
        raise DataError(f"sensitive column {sensitive!r} has a single group in the scored table; nothing to compare")


def group_labels(series: pd.Series, kind: str) -> np.ndarray:
    """The group of each row as a string (missing values: :data:`MISSING_GROUP`).

    Raises:
      DataError: a numeric column with more than :data:`MAX_NUMERIC_GROUPS` distinct values.
    """
    if kind != CATEGORICAL:
        distinct = series.dropna().nunique()
        if distinct > MAX_NUMERIC_GROUPS:
            raise DataError(f"sensitive column {series.name!r} is numeric with {distinct} distinct values (at most "
                            f"{MAX_NUMERIC_GROUPS}); fairness compares groups, so bin it into a few ranges in every "
                            f"table first (e.g. pd.cut) or choose a categorical column")
    labels = category_strings(series)
    return labels.fillna(MISSING_GROUP).to_numpy().astype(str)


def group_rates(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, positive: str) -> dict:
    """Per group: rows, selection rate ``P(h = positive)``, true- and false-positive rates.

    ``y_true``, ``y_pred`` and ``groups`` are 1-D arrays of equal length; a rate over no rows is 0.
    """
    out = {}
    for g in np.unique(groups):
        in_g = groups == g
        pos, neg, chosen = in_g & (y_true == positive), in_g & (y_true != positive), y_pred == positive
        out[str(g)] = {"rows": int(in_g.sum()), "selection_rate": float(chosen[in_g].mean()),
                       "true_positive_rate": float(chosen[pos].mean()) if pos.any() else 0.0,
                       "false_positive_rate": float(chosen[neg].mean()) if neg.any() else 0.0}
    return out


def _spread(rates: dict, key: str) -> float:
    values = [r[key] for r in rates.values()]
    return float(max(values) - min(values))


def demographic_parity_difference(y_pred: np.ndarray, groups: np.ndarray, positive: str) -> float:
    """Largest minus smallest group selection rate of class ``positive`` (fairlearn's definition)."""
    return _spread(group_rates(y_pred, y_pred, groups, positive), "selection_rate")


def equalized_odds_difference(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, positive: str) -> float:
    """The larger of the true-positive-rate and false-positive-rate spreads over groups (fairlearn's)."""
    rates = group_rates(y_true, y_pred, groups, positive)
    return max(_spread(rates, "true_positive_rate"), _spread(rates, "false_positive_rate"))


def equalized_odds_improvement(eod_real: float, eod_synthetic: float) -> float:
    """SDMetrics' EqualizedOddsImprovement from the two equalised-odds differences (in [0, 1])."""
    return 0.5 + (eod_real - eod_synthetic) / 2.0


def model_fairness(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, classes: list[str]) -> dict:
    """Both differences of one model, one-vs-rest over ``classes``; the headline is the worst class."""
    by_class = {}
    for c in classes:
        rates = group_rates(y_true, y_pred, groups, c)
        by_class[c] = {"demographic_parity_difference": _spread(rates, "selection_rate"),
                       "equalized_odds_difference": max(_spread(rates, "true_positive_rate"),
                                                        _spread(rates, "false_positive_rate")),
                       "groups": rates}
    return {key: max(v[key] for v in by_class.values())
            for key in ("demographic_parity_difference", "equalized_odds_difference")} | {"by_class": by_class}


def fairness_scores(predictions: dict, sensitive: str, kind: str) -> dict:
    """Fairness of the utility models from the ``predictions`` that :func:`.utility.utility_scores` fills.

    Args:
      predictions: ``{"test": scored rows, "y_test": labels, "real": predictions, "synthetic": predictions}``.
      sensitive: the sensitive column; kind: its kind (``"numeric"`` / ``"categorical"``).

    Returns:
      ``{"sensitive", "groups" (test rows per group), "classes", "real": {...}, "synthetic": {...},
      "equalized_odds_improvement"}``; each model's entry holds ``demographic_parity_difference``,
      ``equalized_odds_difference`` and ``by_class`` (per class, per group rates).
    """
    y_true = np.asarray(predictions["y_test"]).astype(str)
    groups = group_labels(predictions["test"][sensitive], kind)
    names, counts = np.unique(groups, return_counts=True)
    classes = sorted(np.unique(y_true).tolist())
    result = {"sensitive": sensitive, "groups": {str(g): int(n) for g, n in zip(names, counts)}, "classes": classes,
              "definition": "fairlearn between_groups, worst case; one-vs-rest per class, worst class"}
    for key in SOURCES:
        result[key] = model_fairness(y_true, np.asarray(predictions[key]).astype(str), groups, classes)
    result["equalized_odds_improvement"] = equalized_odds_improvement(result["real"]["equalized_odds_difference"],
                                                                      result["synthetic"]["equalized_odds_difference"])
    return result


def summary_rows(fairness: Optional[dict]) -> list[tuple[str, str, str]]:
    """Rows of the report's summary table (label, value, ideal); none without a fairness result."""
    if not fairness:
        return []
    from tabdiff_jax.evaluate.report import _fmt

    col = fairness["sensitive"]
    rows = []
    for key, label in (("demographic_parity_difference", "demographic parity diff"),
                       ("equalized_odds_difference", "equalised odds diff")):
        rows.append((f"{label} ({col}), train on real", _fmt(fairness["real"][key]), "0 (reference)"))
        rows.append((f"{label} ({col}), train on synthetic", _fmt(fairness["synthetic"][key]), "0"))
    rows.append(("EqualizedOddsImprovement (SDMetrics' score)", _fmt(fairness["equalized_odds_improvement"]), ">= 0.5"))
    return rows


def markdown_section(fairness: Optional[dict]) -> list[str]:
    """The report's fairness section: per model and group, the rates behind the differences."""
    if not fairness:
        return []
    from tabdiff_jax.evaluate.report import _fmt

    out = ["", f"## Fairness (sensitive column `{fairness['sensitive']}`)", "",
           ("Demographic-parity and equalised-odds differences of the utility models on the scored table "
            "(fairlearn's definitions; one-vs-rest per class, the worst class)."), "",
           "| trained on | demographic parity diff | equalised odds diff |", "|---|---:|---:|"]
    for key in SOURCES:
        m = fairness[key]
        out.append(f"| {key} | {_fmt(m['demographic_parity_difference'])} | {_fmt(m['equalized_odds_difference'])} |")
    out += ["", (f"SDMetrics' EqualizedOddsImprovement, 0.5 + (real - synthetic equalised odds diff) / 2: "
                 f"{_fmt(fairness['equalized_odds_improvement'])} (0.5: no change, 1: the gap removed)"),
            "", "| trained on | class | group | rows | selection rate | TPR | FPR |", "|---|---|---|---:|---:|---:|---:|"]
    classes = fairness["classes"]
    for key in SOURCES:
        for c in classes[-1:] if len(classes) == 2 else classes:  # binary: one class says it all
            for g, r in fairness[key]["by_class"][c]["groups"].items():
                out.append(f"| {key} | {c} | {g} | {r['rows']} | {_fmt(r['selection_rate'])} | "
                           f"{_fmt(r['true_positive_rate'])} | {_fmt(r['false_positive_rate'])} |")
    return out
