"""SDMetrics-style LogisticDetection against SDMetrics itself (same folds: same score)."""

import numpy as np
import pandas as pd
import pytest

from tabdiff_jax.evaluate.columns import prepare
from tabdiff_jax.evaluate.sdmetrics_detection import logistic_detection


def pair(n=400):
    def table(shift, p, seed):
        r = np.random.default_rng(seed)
        x = r.normal(size=n) + shift
        return pd.DataFrame({
            "x": np.where(r.random(n) < 0.05, np.nan, x),  # missing numbers: filled with the real mean
            "k": r.integers(0, 5, n),
            "c": r.choice(["a", "b", "c"], n, p=p),
            "d": np.where(r.random(n) < 0.1, None, r.choice(["u", "v"], n)).astype(object),
        })

    return table(0.0, [0.5, 0.3, 0.2], 1), table(0.4, [0.3, 0.3, 0.4], 2)


@pytest.mark.eval
@pytest.mark.parametrize("seed", [0, 3])
def test_matches_sdmetrics_logistic_detection(seed):
    sdmetrics = pytest.importorskip("sdmetrics.single_table")
    real, syn = pair()
    cols, t = prepare(real, {"synthetic": syn})
    ours = logistic_detection(t["real"], t["synthetic"], cols, seed=seed)
    np.random.seed(seed)  # SDMetrics' folds come from NumPy's global state; the same seed, the same folds
    theirs = sdmetrics.LogisticDetection.compute(t["real"], t["synthetic"])
    assert 0.2 < ours["score"] < 0.9  # neither clipped at 1 nor at 0: the comparison means something
    assert ours["score"] == pytest.approx(theirs, abs=1e-6)
    assert ours["score"] == pytest.approx(1 - np.mean([max(a, 0.5) * 2 - 1 for a in ours["fold_auc"]]))


def test_identical_and_separated_tables():
    real, _ = pair()
    far = real.assign(x=real["x"] + 10.0)
    cols, t = prepare(real, {"same": real, "far": far})
    same = logistic_detection(t["real"], t["same"], cols, seed=0)
    assert same["score"] > 0.9  # a table against itself: AUC near 0.5
    sep = logistic_detection(t["real"], t["far"], cols, seed=0)
    assert sep["auc"] > 0.95 and sep["score"] < 0.1  # all but the 5 % missing x (filled with the mean) told apart


def test_unseen_synthetic_category_is_all_zero_not_an_error():
    real, syn = pair()
    syn.loc[:9, "c"] = "never-seen"
    cols, t = prepare(real, {"synthetic": syn})
    out = logistic_detection(t["real"], t["synthetic"], cols, seed=0, max_rows=300)
    assert out["rows_per_table"] == [300, 300] and np.isfinite(out["score"])
