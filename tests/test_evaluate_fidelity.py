"""Shape, trend and association metrics: closed forms, independent paths, and SDMetrics itself."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp
from scipy.stats.contingency import association

from tabdiff_jax.errors import ConfigError, DataError
from tabdiff_jax.evaluate.columns import infer_kinds, prepare
from tabdiff_jax.evaluate.fidelity import (
    contingency_similarity,
    correlation_ratio,
    cramers_v,
    fidelity_scores,
    ks_complement,
    pearson,
    tv_complement,
)


def test_ks_complement_matches_scipy_with_missing_values():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=400), rng.normal(0.3, 1.2, size=350)
    y[:20] = np.nan
    expected = 1 - ks_2samp(x, y[~np.isnan(y)]).statistic
    assert ks_complement(x, y) == pytest.approx(expected, abs=1e-12)
    assert ks_complement(x, x) == 1.0
    assert np.isnan(ks_complement(x, np.full(3, np.nan)))


def test_tv_complement_closed_form():
    real = pd.Series(["a", "a", "b", "b", None])
    syn = pd.Series(["a", "b", "b", "b"])
    assert tv_complement(real, syn) == pytest.approx(0.75)  # 1 - (|.5-.25| + |.5-.75|) / 2
    assert tv_complement(real, pd.Series(["c", "c"])) == pytest.approx(0.0)


def test_pearson_correlation_ratio_and_cramers_v():
    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    y = 2 * x + rng.normal(size=300)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert np.isnan(pearson(x, np.ones(300)))
    groups = rng.integers(0, 4, 300)
    assert correlation_ratio(groups * 10.0, groups) == pytest.approx(1.0)
    # Closed form: values 0, 2 in group 0 and 4, 6 in group 1 -> eta^2 = 16 / 20.
    assert correlation_ratio(np.array([0.0, 2.0, 4.0, 6.0]), np.array([0, 0, 1, 1])) == pytest.approx(np.sqrt(0.8))
    a, b = rng.integers(0, 3, 500), rng.integers(0, 4, 500)
    table = np.zeros((3, 4), np.int64)
    np.add.at(table, (a, b), 1)
    assert cramers_v(a, b, 4) == pytest.approx(association(table, method="cramer"), abs=1e-12)
    assert cramers_v(a, a, 3) == pytest.approx(1.0)


def test_contingency_similarity_is_one_minus_joint_total_variation():
    a = np.array([0, 0, 1, 1])
    b = np.array([0, 1, 0, 1])
    assert contingency_similarity(a, b, a, b, 2) == 1.0
    # Synthetic puts all mass on (0, 0): TV = (0.75 + 3 * 0.25) / 2 = 0.75.
    assert contingency_similarity(a, b, np.zeros(4, int), np.zeros(4, int), 2) == pytest.approx(0.25)


def correlated_table(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({
        "x": x,
        "y": x + 0.3 * rng.normal(size=n),
        "c": np.where(x > 0, "hi", "lo"),
        "d": rng.choice(["p", "q", "r"], n),
    })


def test_shuffling_keeps_shape_and_breaks_trend():
    real = correlated_table(800, 0)
    rng = np.random.default_rng(1)
    shuffled = pd.DataFrame({c: rng.permutation(real[c].to_numpy()) for c in real.columns})
    columns, t = prepare(real, {"syn": shuffled})
    same = fidelity_scores(t["real"], t["real"], columns)
    mixed = fidelity_scores(t["real"], t["syn"], columns)
    assert same["shape"] == same["trend"] == 1.0 and same["correlation_diff"] == 0.0
    assert mixed["shape"] == 1.0  # marginals are untouched by shuffling
    assert mixed["trend"] < 0.85 and mixed["correlation_diff"] > 1.0


def test_binning_modes_differ_only_for_shifted_numbers():
    real = correlated_table(500, 2)
    shifted = real.assign(x=real["x"] + 5.0)
    columns, t = prepare(real, {"syn": shifted})
    own = fidelity_scores(t["real"], t["syn"], columns, binning="separate")
    ref = fidelity_scores(t["real"], t["syn"], columns, binning="real")
    pair = lambda f, a, b: next(p["score"] for p in f["pairs"] if p["columns"] == [a, b])
    assert pair(own, "x", "c") == pytest.approx(1.0)  # each table binned on its own range
    assert pair(ref, "x", "c") < 0.6  # the real bins see the shift
    with pytest.raises(ConfigError, match="binning"):
        fidelity_scores(t["real"], t["syn"], columns, binning="quantile")


def test_kinds_and_column_errors():
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "c": [True, False], "d": pd.Categorical(["u", "v"]), "e": [0.5, 1.5]})
    assert infer_kinds(df) == {"a": "numeric", "b": "categorical", "c": "categorical", "d": "categorical", "e": "numeric"}
    assert infer_kinds(df, {"a": "categorical"})["a"] == "categorical"
    with pytest.raises(ConfigError, match="'zz'"):
        infer_kinds(df, {"zz": "numeric"})
    with pytest.raises(DataError, match="missing 'e'.*unexpected 'f'"):
        prepare(df, {"synthetic": df.drop(columns="e").assign(f=1)})
    with pytest.raises(DataError, match="column 'a' must be numeric"):
        prepare(df, {"synthetic": df.assign(a=["p", "q"])})
    with pytest.raises(DataError, match="'when'"):
        prepare(pd.DataFrame({"when": pd.to_datetime(["2020-01-01"])}), {})
    # Numbers read back as floats and integers as strings are the same categories.
    cols, t = prepare(pd.DataFrame({"k": pd.Series([1, 2], dtype=object)}), {"s": pd.DataFrame({"k": [1.0, 2.0]})},
                      column_kinds={"k": "categorical"})
    assert list(t["s"]["k"]) == list(t["real"]["k"]) == ["1", "2"]


@pytest.mark.eval
def test_agrees_with_sdmetrics_on_adult(shared_data):
    sdmetrics = pytest.importorskip("sdmetrics")
    from sdmetrics.column_pairs import ContingencySimilarity, CorrelationSimilarity
    from sdmetrics.single_column import KSComplement, TVComplement

    real = pd.read_csv(shared_data / "adult_train.csv").sample(1000, random_state=0).reset_index(drop=True)
    syn = pd.read_csv(shared_data / "adult_test.csv").sample(1000, random_state=1).reset_index(drop=True)
    syn.loc[syn.index[:60], "age"] = np.nan  # exercise missing values on both paths
    syn.loc[syn.index[30:90], "workclass"] = np.nan
    columns, t = prepare(real, {"syn": syn})
    mine = fidelity_scores(t["real"], t["syn"], columns)
    for c, v in mine["columns"].items():
        metric = KSComplement if columns.kinds[c] == "numeric" else TVComplement
        assert v["score"] == pytest.approx(metric.compute(real[c], syn[c]), abs=1e-6), c
    for p in mine["pairs"]:
        a, b = p["columns"]
        if p["metric"] == "CorrelationSimilarity":
            ref = CorrelationSimilarity.compute(real[[a, b]], syn[[a, b]])
        else:
            numbers = [c for c in (a, b) if columns.kinds[c] == "numeric"] or None
            ref = ContingencySimilarity.compute(real[[a, b]], syn[[a, b]], continuous_column_names=numbers)
        assert p["score"] == pytest.approx(ref, abs=1e-6), (a, b)

    # QualityReport's own binning ("separate") reproduces its per-pair and per-column details.
    with warnings.catch_warnings():  # the single-table report is deprecated in favour of a multi-table API
        warnings.simplefilter("ignore", FutureWarning)
        from sdmetrics.reports.single_table import QualityReport

    metadata = {"columns": {c: {"sdtype": "numerical" if k == "numeric" else "categorical"} for c, k in columns.kinds.items()}}
    report = QualityReport()
    report.generate(real, syn, metadata, verbose=False)
    qr_pairs = report.get_details("Column Pair Trends")
    separate = fidelity_scores(t["real"], t["syn"], columns, binning="separate")
    scores = {tuple(p["columns"]): p["score"] for p in separate["pairs"]}
    # QualityReport leaves pairs whose real association is under its thresholds unscored (NaN).
    scored = qr_pairs[qr_pairs["Score"].notna()]
    assert len(scored) >= 10
    for _, row in scored.iterrows():
        assert scores[(row["Column 1"], row["Column 2"])] == pytest.approx(row["Score"], abs=1e-6)
    qr_shapes = report.get_details("Column Shapes").set_index("Column")["Score"]
    for c, v in separate["columns"].items():
        assert v["score"] == pytest.approx(qr_shapes[c], abs=1e-6)
    assert sdmetrics is not None
