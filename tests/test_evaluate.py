"""evaluate(): sanity by construction (bootstrap, shuffled columns, train-as-synthetic), report I/O."""

import json

import numpy as np
import pandas as pd
import pytest

from tabdiff_jax.errors import ConfigError, DataError
from tabdiff_jax.evaluate import evaluate as evaluate_all_threads
from tabdiff_jax.evaluate import evaluate_files

N = 1500
FAST = dict(skip=("utility",), detection_rows=N, coverage_rows=N, sdmetrics_rows=500)


def evaluate(*args, **kwargs):
    # One model thread: OpenMP threads waiting on each other make small fits slow on a shared machine.
    return evaluate_all_threads(*args, threads=1, **kwargs)


def population(n, seed):
    """A mixed table with strong dependencies between its columns (so shuffling them shows)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    group = np.where(x + 0.5 * rng.normal(size=n) > 0, "high", "low")
    return pd.DataFrame({
        "x": x,
        "y": 2.0 * x + 0.2 * rng.normal(size=n),
        "count": np.clip(np.rint(3 + 2 * x + rng.normal(size=n)), 0, None).astype(np.int64),
        "group": group,
        "colour": rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2]),
        "label": np.where((x > 0.3) ^ (rng.random(n) < 0.1), "yes", "no"),
    })


@pytest.fixture(scope="module")
def tables():
    return population(N, 0), population(N, 1), population(N, 2)  # train, holdout, test


@pytest.fixture(scope="module")
def bootstrap_report(tables):
    train, holdout, _ = tables
    boot = train.sample(N, replace=True, random_state=3).reset_index(drop=True)
    return evaluate(train, boot, holdout=holdout, target="label", seed=0, **FAST)


def test_bootstrap_is_faithful_and_copies(bootstrap_report):
    f, p = bootstrap_report["fidelity"], bootstrap_report["privacy"]
    assert f["shape"] > 0.95 and f["trend"] > 0.95
    assert abs(f["detection_auc"] - 0.5) < 0.08
    assert f["alpha_precision"] > 0.9
    assert p["exact_copies"] == 1.0 and p["dcr_median"] == 0.0
    assert p["dcr_holdout_median"] > 0.0


def test_shuffled_columns_keep_shape_lose_trend(tables, bootstrap_report):
    train, holdout, _ = tables
    rng = np.random.default_rng(4)
    shuffled = pd.DataFrame({c: rng.permutation(train[c].to_numpy()) for c in train.columns})
    report = evaluate(train, shuffled, holdout=holdout, seed=0, **FAST)
    f, boot = report["fidelity"], bootstrap_report["fidelity"]
    assert f["shape"] == 1.0  # permutations leave every marginal as it was
    assert f["trend"] < boot["trend"] - 0.1
    assert f["correlation_diff"] > boot["correlation_diff"] + 1.0
    assert f["detection_auc"] > 0.85


def test_train_as_synthetic_is_caught_by_privacy_metrics(tables):
    train, holdout, _ = tables
    report = evaluate(train, train, holdout=holdout, seed=0, skip=("utility", "detection", "coverage"), sdmetrics_rows=None)
    p = report["privacy"]
    assert p["closer_to_train_share"] > 0.95
    assert p["mia_auc"] > 0.95
    assert p["exact_copies"] == 1.0
    assert p["dcr_sdmetrics"]["closer_to_training"] > 0.95
    assert p["dcr_sdmetrics"]["overfitting_protection"] < 0.1
    # A fresh sample of the same population looks like the holdout: no membership signal.
    fresh = population(N, 9)
    q = evaluate(train, fresh, holdout=holdout, seed=0, skip=("utility", "detection", "coverage", "sdmetrics_dcr"))["privacy"]
    assert abs(q["closer_to_train_share"] - 0.5) < 0.06 and abs(q["mia_auc"] - 0.5) < 0.06
    assert q["exact_copies"] == 0.0


def test_utility_with_sklearn_model(tables):
    train, holdout, test = tables
    noise = train.assign(label=np.random.default_rng(5).permutation(train["label"].to_numpy()))
    report = evaluate(train, noise, test=test, holdout=holdout, target="label", seed=0, utility_model="sklearn",
                      utility_iterations=40, skip=("detection", "coverage", "privacy", "sdmetrics_dcr"))
    u = report["utility"]
    assert u["model"] == "sklearn" and u["task"] == "classification" and u["metric"] == "f1_macro"
    assert u["real"]["f1_macro"] > 0.8  # label is x > 0.3 with 10 % flips
    assert u["synthetic"]["f1_macro"] < 0.65  # labels shuffled: nothing to learn
    assert u["gap"] == pytest.approx(u["real"]["f1_macro"] - u["synthetic"]["f1_macro"])
    assert 0.5 < u["real"]["roc_auc"] <= 1.0 and 0.0 <= u["real"]["accuracy"] <= 1.0
    one_class = train[train["label"] == "no"]
    u1 = evaluate(train, one_class, test=test, target="label", seed=0, utility_model="sklearn", utility_iterations=40,
                  skip=("detection", "coverage", "privacy", "sdmetrics_dcr"))["utility"]
    assert u1["synthetic"]["fitted"].startswith("constant") and u1["synthetic"]["accuracy"] == pytest.approx((test["label"] == "no").mean())
    reg = evaluate(train, train, test=test, target="y", seed=0, utility_model="sklearn", utility_iterations=40,
                   skip=("detection", "coverage", "privacy", "sdmetrics_dcr"))["utility"]
    assert reg["task"] == "regression" and reg["real"]["r2"] > 0.9 and reg["real"]["rmse"] > 0


@pytest.mark.eval
def test_utility_reports_catboost_when_installed(tables):
    pytest.importorskip("catboost")
    train, _, test = tables
    u = evaluate(train, train, test=test, target="label", utility_iterations=30,
                 skip=("detection", "coverage", "privacy", "sdmetrics_dcr"))["utility"]
    assert u["model"] == "catboost" and u["real"] == u["synthetic"] and u["real"]["f1_macro"] > 0.8


def test_holdout_fallbacks_are_reported(tables):
    train, _, test = tables
    r1 = evaluate(train, train, seed=0, skip=("utility", "detection", "coverage", "sdmetrics_dcr"))
    assert r1["holdout_source"].startswith("split of real") and any("split off the real table" in n for n in r1["notes"])
    assert r1["utility"] is None
    r2 = evaluate(train, train, test=test, seed=0, skip=("detection", "coverage", "sdmetrics_dcr"))
    assert r2["holdout_source"] == "test table"
    assert any("no target" in n for n in r2["notes"])


def test_report_outputs(tmp_path, bootstrap_report, tables):
    report = bootstrap_report
    files = report.plots(tmp_path / "plots")
    assert len(files) == len(tables[0].columns) + 2 and all(f.stat().st_size > 1000 for f in files)
    md = report.to_markdown(tmp_path / "report.md")
    assert "![dcr](plots/dcr.png)" in md and (tmp_path / "report.md").read_text() == md
    path = report.to_json(tmp_path / "r.json")

    def no_nan(token):
        raise AssertionError(f"non-JSON constant {token}")

    data = json.loads(path.read_text(), parse_constant=no_nan)
    assert data == report.to_dict()
    for key in ("shape", "trend", "correlation_diff", "detection_auc", "alpha_precision", "beta_recall"):
        assert isinstance(data["fidelity"][key], float)
    for key in ("dcr_median", "dcr_holdout_median", "closer_to_train_share", "exact_copies", "mia_auc", "dcr_sdmetrics"):
        assert key in data["privacy"]
    assert set(data["details"]["columns"]) == set(tables[0].columns)
    assert len(data["details"]["pairs"]) == 15
    table = report.summary_table()
    assert "detection ROC-AUC" in table and "membership inference" in table


def test_evaluate_files_round_trip(tmp_path, tables):
    train, holdout, test = tables
    train.to_csv(tmp_path / "train.csv", index=False)
    train.sample(300, random_state=0).to_parquet(tmp_path / "syn.parquet", index=False)
    holdout.to_csv(tmp_path / "holdout.csv", index=False)
    report = evaluate_files(tmp_path / "train.csv", tmp_path / "syn.parquet", holdout_path=tmp_path / "holdout.csv",
                            target="label", json_out=tmp_path / "out" / "r.json", plots_dir=tmp_path / "figs",
                            skip=("utility", "detection", "coverage", "sdmetrics_dcr"), threads=1)
    assert (tmp_path / "out" / "r.json").exists() and (tmp_path / "figs" / "report.md").exists()
    assert report["rows"] == {"real": N, "synthetic": 300, "test": None, "holdout": N}
    assert report["privacy"]["exact_copies"] == 1.0


def test_input_errors_name_the_culprit(tables):
    train = tables[0]
    with pytest.raises(DataError, match="missing 'colour'"):
        evaluate(train, train.drop(columns="colour"))
    with pytest.raises(DataError, match="target 'nope'"):
        evaluate(train, train, target="nope")
    with pytest.raises(ConfigError, match="skip"):
        evaluate(train, train, skip=("privacy", "speed"))
    with pytest.raises(DataError, match="synthetic table is empty"):
        evaluate(train, train.iloc[:0])
    with pytest.raises(DataError, match="no such file"):
        evaluate_files("/nonexistent/train.csv", "/nonexistent/syn.csv")


def test_missing_values_and_unseen_categories(tables):
    train, holdout, _ = tables
    rng = np.random.default_rng(6)
    real = train.copy()
    real.loc[rng.random(N) < 0.1, "y"] = np.nan
    real.loc[rng.random(N) < 0.1, "colour"] = None
    syn = real.sample(N, replace=True, random_state=7).reset_index(drop=True)
    syn.loc[:99, "colour"] = "purple"  # a category the real table never had
    report = evaluate(real, syn, holdout=holdout, target="label", seed=0, **FAST)
    f, p = report["fidelity"], report["privacy"]
    assert report["details"]["columns"]["y"]["real"]["missing_share"] == pytest.approx(real["y"].isna().mean())
    assert report["details"]["columns"]["colour"]["score"] < 1.0 - 0.05  # the unseen category costs shape
    for value in (f["shape"], f["trend"], f["correlation_diff"], p["dcr_median"], p["mia_auc"]):
        assert np.isfinite(value)
    assert 0.85 < p["exact_copies"] < 0.95  # rows with "purple" are no longer copies


def test_seeds_past_32_bits_evaluate_and_bad_seeds_are_one_error(tables):
    # scikit-learn and CatBoost take 32-bit seeds: wider ones are hashed to 32 bits, the same each time
    train, holdout, _ = tables
    small = dict(skip=("utility", "coverage"), detection_rows=300, sdmetrics_rows=None)
    a = evaluate(train.head(300), holdout.head(300), target="label", seed=2**40 + 1, **small)
    b = evaluate(train.head(300), holdout.head(300), target="label", seed=2**40 + 1, **small)
    assert a["fidelity"]["detection_auc"] == b["fidelity"]["detection_auc"]
    for bad in (-1, None, "0", 2**64):
        with pytest.raises(ConfigError, match="seed must be an integer"):
            evaluate(train.head(50), holdout.head(50), seed=bad, **small)
