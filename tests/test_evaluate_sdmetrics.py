"""The SDMetrics-style DCR scores agree with SDMetrics' DCRBaselineProtection / DCROverfittingProtection."""

import warnings

import numpy as np
import pandas as pd
import pytest

from tabdiff_jax.evaluate.columns import prepare
from tabdiff_jax.evaluate.sdmetrics_dcr import random_like, sdmetrics_dcr

pytestmark = pytest.mark.eval


def adult_tables(shared_data, rows):
    train = pd.read_csv(shared_data / "adult_train.csv")
    real = train.sample(rows, random_state=0).reset_index(drop=True)
    synthetic = train.sample(rows, random_state=5).reset_index(drop=True)
    # Perturb some synthetic values so that distances are neither all zero nor all large.
    rng = np.random.default_rng(0)
    synthetic["age"] = synthetic["age"] + rng.integers(-2, 3, rows)
    synthetic.loc[synthetic.index[: rows // 10], "occupation"] = "Tech-support"
    holdout = pd.read_csv(shared_data / "adult_test.csv").sample(rows, random_state=1).reset_index(drop=True)
    return real, synthetic, holdout


def check_against_sdmetrics(real, synthetic, holdout, seed=7):
    pytest.importorskip("sdmetrics")
    from sdmetrics.single_table import DCRBaselineProtection, DCROverfittingProtection

    columns, t = prepare(real, {"synthetic": synthetic, "holdout": holdout})
    mine = sdmetrics_dcr(t["real"], t["synthetic"], t["holdout"], columns, seed=seed)
    metadata = {"columns": {c: {"sdtype": "numerical" if k == "numeric" else "categorical"} for c, k in columns.kinds.items()}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DCRBaselineProtection._seed = seed  # the random baseline draws from default_rng(seed), as ours
        try:
            base = DCRBaselineProtection.compute_breakdown(real, synthetic, metadata, None)
        finally:
            DCRBaselineProtection._seed = None
        over = DCROverfittingProtection.compute_breakdown(real, synthetic, holdout, metadata, None)
    assert mine["synthetic_median"] == pytest.approx(base["median_DCR_to_real_data"]["synthetic_data"], abs=1e-6)
    assert mine["random_median"] == pytest.approx(base["median_DCR_to_real_data"]["random_data_baseline"], abs=1e-6)
    assert mine["baseline_protection"] == pytest.approx(base["score"], abs=1e-6)
    assert mine["closer_to_training"] == pytest.approx(over["synthetic_data_percentages"]["closer_to_training"], abs=1e-6)
    assert mine["overfitting_protection"] == pytest.approx(over["score"], abs=1e-6)
    return mine


def test_random_baseline_matches_sdmetrics_draws():
    pytest.importorskip("sdmetrics")
    from sdmetrics.single_table import DCRBaselineProtection

    real = pd.DataFrame({"i": np.arange(20, dtype=np.int64) % 7, "f": np.linspace(0, 1, 20), "c": list("abcd") * 5})
    columns, t = prepare(real, {})
    ours = random_like(t["real"], columns, 50, seed=3)
    DCRBaselineProtection._seed = 3
    try:
        theirs = DCRBaselineProtection._generate_random_data(real, 50)
    finally:
        DCRBaselineProtection._seed = None
    np.testing.assert_array_equal(ours["i"].to_numpy(), theirs["i"].to_numpy())
    np.testing.assert_allclose(ours["f"].to_numpy(), theirs["f"].to_numpy())
    assert list(ours["c"]) == list(theirs["c"])


def test_dcr_scores_agree_with_sdmetrics_small(shared_data):
    mine = check_against_sdmetrics(*adult_tables(shared_data, 300))
    assert 0.0 < mine["baseline_protection"] < 1.0 and 0.0 < mine["closer_to_training"] < 1.0


@pytest.mark.slow
def test_dcr_scores_agree_with_sdmetrics_on_1000_rows(shared_data):
    check_against_sdmetrics(*adult_tables(shared_data, 1000))
