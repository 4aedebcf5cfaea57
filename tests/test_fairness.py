"""Fairness metrics: fairlearn's values, hand-computed rates, SDMetrics' score, evaluate(), CLI, errors."""

import functools
import json

import numpy as np
import pandas as pd
import pytest

from tabdiff_jax.cli import main
from tabdiff_jax.errors import ConfigError, DataError
from tabdiff_jax.evaluate import PARTS, evaluate
from tabdiff_jax.evaluate import fairness as fm
from tabdiff_jax.evaluate.columns import prepare
from tabdiff_jax.evaluate.utility import utility_scores

N = 800
ONLY_UTILITY = dict(skip=tuple(p for p in PARTS if p != "utility"), utility_model="sklearn", threads=1)


def population(n, seed):
    """Income depends on x and on sex (so a model's selection rate differs between the sexes)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    sex = rng.choice(["Female", "Male"], n, p=[0.4, 0.6])
    label = np.where(x + 0.8 * (sex == "Male") + 0.5 * rng.normal(size=n) > 0.6, ">50K", "<=50K")
    return pd.DataFrame({"x": x, "hours": rng.integers(20, 60, n), "sex": sex,
                         "race": rng.choice(["a", "b", "c"], n), "income": label})


@pytest.fixture(scope="module")
def tables():
    return population(N, 0), population(N, 1), population(N, 2)  # real, synthetic, test


@pytest.fixture(scope="module")
def report(tables):
    real, synthetic, test = tables
    return evaluate(real, synthetic, test=test, target="income", sensitive="sex", **ONLY_UTILITY)


def random_example(seed, n=300, classes=("0", "1"), groups=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    return (rng.choice(classes, n).astype(str), rng.choice(classes, n).astype(str), rng.choice(groups, n).astype(str))


def test_differences_equal_fairlearns():
    fl = pytest.importorskip("fairlearn.metrics")
    for seed in range(3):
        y, p, g = random_example(seed)
        yi, pi = y.astype(int), p.astype(int)  # fairlearn's rates take the larger label as the positive one
        for positive in ("0", "1"):  # a binary target: either class gives fairlearn's value
            assert fm.demographic_parity_difference(p, g, positive) == pytest.approx(
                fl.demographic_parity_difference(yi, pi, sensitive_features=g), abs=1e-12)
            assert fm.equalized_odds_difference(y, p, g, positive) == pytest.approx(
                fl.equalized_odds_difference(yi, pi, sensitive_features=g), abs=1e-12)
    # A multi-class target: each class one-vs-rest is fairlearn on the binarised labels, the headline the worst.
    y, p, g = random_example(7, classes=("x", "y", "z"), groups=("a", "b"))
    result = fm.model_fairness(y, p, g, ["x", "y", "z"])
    expected = {c: (fl.demographic_parity_difference((y == c).astype(int), (p == c).astype(int), sensitive_features=g),
                    fl.equalized_odds_difference((y == c).astype(int), (p == c).astype(int), sensitive_features=g))
                for c in "xyz"}
    for c, (dpd, eod) in expected.items():
        assert result["by_class"][c]["demographic_parity_difference"] == pytest.approx(dpd, abs=1e-12)
        assert result["by_class"][c]["equalized_odds_difference"] == pytest.approx(eod, abs=1e-12)
    assert result["demographic_parity_difference"] == pytest.approx(max(v[0] for v in expected.values()), abs=1e-12)
    assert result["equalized_odds_difference"] == pytest.approx(max(v[1] for v in expected.values()), abs=1e-12)
    assert len({round(v[1], 9) for v in expected.values()}) > 1  # the classes differ: "worst" is a real choice


def test_closed_form_rates_on_a_hand_made_example():
    # Group F: 4 rows, labels 1 1 0 0, predictions 1 0 1 0 -> selection 2/4, TPR 1/2, FPR 1/2.
    # Group M: 5 rows, labels 1 1 1 0 0, predictions 1 1 1 1 0 -> selection 4/5, TPR 3/3, FPR 1/2.
    # Group U: 2 rows, labels 0 0 (no positives: TPR 0), predictions 0 0 -> selection 0, FPR 0.
    y = np.array(list("11001110000"))
    p = np.array(list("10101111000"))
    g = np.array(["F"] * 4 + ["M"] * 5 + ["U"] * 2)
    rates = fm.group_rates(y, p, g, "1")
    assert rates == {"F": {"rows": 4, "selection_rate": 0.5, "true_positive_rate": 0.5, "false_positive_rate": 0.5},
                     "M": {"rows": 5, "selection_rate": 0.8, "true_positive_rate": 1.0, "false_positive_rate": 0.5},
                     "U": {"rows": 2, "selection_rate": 0.0, "true_positive_rate": 0.0, "false_positive_rate": 0.0}}
    assert fm.demographic_parity_difference(p, g, "1") == pytest.approx(0.8)
    assert fm.equalized_odds_difference(y, p, g, "1") == pytest.approx(1.0)  # TPR spread 1 - 0 beats FPR's 0.5
    two = g != "U"
    assert fm.demographic_parity_difference(p[two], g[two], "1") == pytest.approx(0.3)
    assert fm.equalized_odds_difference(y[two], p[two], g[two], "1") == pytest.approx(0.5)
    assert fm.equalized_odds_improvement(0.5, 0.1) == pytest.approx(0.7)
    assert fm.equalized_odds_improvement(0.0, 1.0) == 0.0 and fm.equalized_odds_improvement(1.0, 0.0) == 1.0


def test_improvement_equals_sdmetrics_on_the_same_predictions(tables, report, monkeypatch):
    """SDMetrics' EqualizedOddsImprovement, its classifier replaced by our utility models' predictions."""
    eo = pytest.importorskip("sdmetrics.single_table.equalized_odds")
    real, synthetic, test = tables
    columns, t = prepare(real, {"synthetic": synthetic, "test": test}, target="income")
    preds = {}
    utility_scores(t["real"], t["synthetic"], t["test"], columns, "classification", seed=0, model="sklearn",
                   threads=1, predictions=preds)
    assert fm.fairness_scores(preds, "sex", "categorical")["equalized_odds_improvement"] == pytest.approx(
        report["fairness"]["equalized_odds_improvement"], abs=1e-12)  # evaluate() scores these same models
    queue = [preds["real"], preds["synthetic"]]

    class Fixed:
        def __init__(self, labels):
            self.labels = labels

        def predict(self, features):
            assert len(features) == len(test)
            return (self.labels == ">50K").astype(int)

    monkeypatch.setattr(eo.EqualizedOddsImprovement, "_train_classifier",
                        classmethod(lambda cls, data, name: Fixed(queue.pop(0))))
    metadata = {"columns": {"x": {"sdtype": "numerical"}, "hours": {"sdtype": "numerical"},
                            "sex": {"sdtype": "categorical"}, "race": {"sdtype": "categorical"},
                            "income": {"sdtype": "categorical"}}}
    out = eo.EqualizedOddsImprovement.compute_breakdown(
        real, synthetic, test, metadata, None, prediction_column_name="income", positive_class_label=">50K",
        sensitive_column_name="sex", sensitive_column_value="Female")
    f = report["fairness"]
    assert out["score"] == pytest.approx(f["equalized_odds_improvement"], abs=1e-12)
    assert out["real_training_data"]["equalized_odds"] == pytest.approx(1 - f["real"]["equalized_odds_difference"], abs=1e-12)
    assert out["synthetic_data"]["equalized_odds"] == pytest.approx(1 - f["synthetic"]["equalized_odds_difference"], abs=1e-12)


def test_evaluate_report_json_and_markdown(tables, report, tmp_path):
    real, _, test = tables
    f = report["fairness"]
    assert f["sensitive"] == "sex" and f["scored_on"] == "test table"
    assert f["groups"] == test["sex"].value_counts().to_dict()
    for key in ("real", "synthetic"):
        a, b = f[key]["by_class"]["<=50K"], f[key]["by_class"][">50K"]
        assert a["demographic_parity_difference"] == pytest.approx(b["demographic_parity_difference"], abs=1e-12)
        assert a["equalized_odds_difference"] == pytest.approx(b["equalized_odds_difference"], abs=1e-12)
        assert f[key]["demographic_parity_difference"] > 0.1  # sex drives income here: rates differ
    # The same model on the same rows: identical differences, improvement exactly 0.5.
    same = evaluate(real, real, test=test, target="income", sensitive="sex", **ONLY_UTILITY)["fairness"]
    assert same["real"] == same["synthetic"] and same["equalized_odds_improvement"] == 0.5
    assert same["real"] == f["real"]
    json.loads(json.dumps(report.to_dict()))  # JSON-able
    text = report.to_markdown(tmp_path / "report.md")
    assert "## Fairness (sensitive column `sex`)" in text and "| synthetic | >50K | Female |" in text
    assert "equalised odds diff (sex), train on synthetic" in report.summary_table()
    assert report["timings"]["fairness"] >= 0.0
    plain = evaluate(real, real, test=test, target="income", skip=PARTS)
    assert plain["fairness"] is None and "Fairness" not in plain.to_markdown()


def test_numeric_codes_and_missing_values_are_groups(tables):
    real, synthetic, test = (t.copy() for t in tables)
    for t in (real, synthetic, test):
        t["sex"] = (t["sex"] == "Male").astype(float)
        t.loc[t.index[:40], "sex"] = np.nan
    f = evaluate(real, synthetic, test=test, target="income", sensitive="sex", **ONLY_UTILITY)["fairness"]
    assert set(f["groups"]) == {"0", "1", fm.MISSING_GROUP} and f["groups"][fm.MISSING_GROUP] == 40


def test_sensitive_errors_name_the_column(tables):
    real, synthetic, test = tables
    cases = [
        (dict(sensitive="gender"), DataError, "sensitive column 'gender' is not a column"),
        (dict(sensitive="x"), DataError, "numeric with 800 distinct values"),
        (dict(sensitive="income"), ConfigError, "is the target"),
        (dict(sensitive="sex", target=None), ConfigError, "needs a target"),
        (dict(sensitive="sex", target="hours", task="regression"), ConfigError, "regression task"),
        (dict(sensitive="sex", skip=("utility",)), ConfigError, "remove 'utility' from skip"),
        (dict(sensitive="sex", test=None), ConfigError, "needs a test or holdout table"),
    ]
    for kwargs, error, text in cases:
        kwargs = {"test": test, "target": "income", **kwargs}
        with pytest.raises(error, match=text):
            evaluate(real, synthetic, **kwargs)
    one = test.assign(sex="Male")
    with pytest.raises(DataError, match="single group"):
        evaluate(real, synthetic, test=one, target="income", sensitive="sex")


def test_cli_flag_prints_and_writes_fairness(tables, tmp_path, capsys, monkeypatch):
    import tabdiff_jax.evaluate as ev

    # The command as it is, its evaluation limited to the utility part (the rest is tested elsewhere).
    monkeypatch.setattr(ev, "evaluate_files", functools.partial(ev.evaluate_files, **ONLY_UTILITY))
    paths = []
    for name, t in zip(("real", "synthetic", "test"), tables):
        paths.append(tmp_path / f"{name}.csv")
        t.to_csv(paths[-1], index=False)
    args = ["evaluate", "--real", str(paths[0]), "--synthetic", str(paths[1]), "--test", str(paths[2]),
            "--target", "income"]
    assert main(args + ["--sensitive", "sex", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "demographic parity diff (sex), train on real" in out and "EqualizedOddsImprovement" in out
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["fairness"]["sensitive"] == "sex" and 0.0 <= saved["fairness"]["equalized_odds_improvement"] <= 1.0
    assert main(args + ["--sensitive", "nosuch"]) == 2
    assert "error: sensitive column 'nosuch' is not a column" in capsys.readouterr().err


def test_demo_refuses_a_bad_sensitive_column_before_fitting(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--no-progress", "--sensitive", "income"]) == 2
    assert "error: sensitive column 'income' is the target" in capsys.readouterr().err
    assert not (tmp_path / "demo" / "model").exists()
