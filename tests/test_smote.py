"""SMOTE baseline: interpolation within classes, dtypes, class frequencies, seeds, save / load."""

import numpy as np
import pandas as pd
import pytest

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.models.base import MODEL_REGISTRY, load
from tabdiff_jax.models.smote import SMOTE


def mixed_frame(n=240, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    income = rng.normal(50_000, 10_000, n)
    income[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({
        "age": rng.integers(18, 90, n).astype(np.int64),
        "x": x,
        "income": income,
        "city": pd.Series(rng.choice(["Paris", "Oslo", "Rome"], n)).astype("category"),
        "member": rng.random(n) < 0.3,
        "note": pd.Series(rng.choice(["a", "b", None], n), dtype=object),
        "label": np.where(x > 0.5, "pos", "neg"),
    })


def test_registered_and_validates_config():
    assert MODEL_REGISTRY["smote"] is SMOTE
    with pytest.raises(ConfigError, match="k_neighbors"):
        SMOTE(k_neighbors=0)
    with pytest.raises(ConfigError, match="steps"):
        SMOTE().fit(mixed_frame(), target="label", progress=False, steps=10)


def test_columns_dtypes_and_class_counts():
    df = mixed_frame()
    out = SMOTE().fit(df, target="label", progress=False).sample(1001, seed=3)
    assert list(out.columns) == list(df.columns)
    assert out.dtypes.to_dict() == df.dtypes.to_dict()
    assert set(out["city"].cat.categories) == set(df["city"].cat.categories)
    # each row draws its class from the training frequencies: counts within 4 binomial sd of n p
    p = (df["label"] == "pos").mean()
    assert abs((out["label"] == "pos").sum() - 1001 * p) < 4 * np.sqrt(1001 * p * (1 - p))
    assert out["income"].isna().any() and out["note"].isna().any()  # missing values are carried over
    assert out["age"].between(df["age"].min(), df["age"].max()).all()


def test_interpolates_between_neighbours_within_a_class():
    # Two rows per class p, q: each new row lies on the segment between them, its category from the
    # nearer end, and the integer column is rounded. Class r fills the table to fit's minimum of
    # 10 rows; its 6-decimal values make v's learned rounding (6 places) invisible here.
    df = pd.DataFrame({
        "v": [0.0, 10.0, 100.0, 110.0] + [1000.000001 * k for k in range(1, 7)],
        "n": np.array([0, 10, 100, 110] + [1000 * k for k in range(1, 7)], np.int64),
        "c": ["a", "b", "c", "d"] + ["e"] * 6,
        "y": ["p", "p", "q", "q"] + ["r"] * 6,
    })
    out = SMOTE(k_neighbors=5).fit(df, target="y", progress=False).sample(400, seed=0)
    p, q = out[out["y"] == "p"], out[out["y"] == "q"]
    assert p["v"].between(0, 10).all() and q["v"].between(100, 110).all()
    assert len(p) > 40 and len(np.unique(p["v"])) > 0.9 * len(p)  # continuous interpolation, not copies
    assert ((p["v"] < 5) == (p["c"] == "a")).all() and ((q["v"] < 105) == (q["c"] == "c")).all()
    pq = out[out["y"] != "r"]
    assert (np.abs(pq["n"] - pq["v"]) <= 0.5 + 1e-6).all()  # rounded from the same lambda


def test_categories_come_together_from_one_training_row():
    df = mixed_frame(300, 1)
    out = SMOTE().fit(df, target="label", progress=False).sample(500, seed=1)
    cats = ["city", "member", "note", "label"]
    key = lambda frame: set(map(tuple, frame[cats].astype(str).to_numpy()))
    assert key(out) <= key(df)


def test_seeds_reproduce_and_save_load_round_trip(tmp_path):
    df = mixed_frame()
    model = SMOTE(k_neighbors=3).fit(df, target="label", progress=False)
    a, b, c = model.sample(200, seed=7), model.sample(200, seed=7), model.sample(200, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    model.save(tmp_path / "run")
    with np.load(tmp_path / "run" / "state.npz", allow_pickle=False) as state:
        assert {"raw_numeric", "codes", "classes", "neighbours"} <= set(state.files)
    restored = load(tmp_path / "run")
    assert isinstance(restored, SMOTE) and restored.config == {"k_neighbors": 3}
    pd.testing.assert_frame_equal(restored.sample(200, seed=7), a)


def test_regression_uses_one_class_and_tiny_classes_copy():
    df = mixed_frame(60, 2).drop(columns="label")
    out = SMOTE().fit(df, target="x", progress=False).sample(80, seed=0)
    assert out["x"].between(df["x"].min(), df["x"].max()).all() and len(out) == 80
    single = pd.DataFrame({"v": [float(i) for i in range(1, 12)] + [99.0], "y": ["a"] * 11 + ["b"]})
    model = SMOTE().fit(single, target="y", progress=False)
    out = model.sample(80, seed=0)
    assert (out.loc[out["y"] == "b", "v"] == 99.0).all()  # a class of one row can only be copied
    only_b = model.sample(30, seed=0, condition={"y": "b"})  # drawn from that class natively
    assert (only_b["y"] == "b").all() and (only_b["v"] == 99.0).all()
    with pytest.raises(ConfigError, match="known values"):
        model.sample(5, seed=0, condition={"y": "c"})


def test_nominal_weight_follows_smote_nc():
    from tabdiff_jax.models.smote import _nominal_scale

    features = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    np.testing.assert_allclose(_nominal_scale(features, 1), [1.0, 0.25, 0.25])  # median std 0.5, halved
    np.testing.assert_allclose(_nominal_scale(features[:, 1:], 0), [1.0, 1.0])  # no numbers: plain one-hot
