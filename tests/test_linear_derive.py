"""Exact linear relations kept by construction: ``Preprocessor(derive="auto")``'s numeric half (preprocess.linear)."""

import numpy as np
import pandas as pd
import pytest

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.preprocess import Preprocessor
from tabdiff_jax.preprocess.relation_search import search

LEVELS = {"pre": 1, "school": 2, "college": 3, "bachelor": 4}
TINY = dict(steps=20, batch_size=64, hidden_dims=(16, 16), dim_t=16, num_sample_steps=4)


def _table(n=300, seed=0):
    """``c = a + 2 b + 3`` (integers) before ``edu_num``, which ``edu`` determines; noise columns around."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 60, n)
    b = rng.integers(-20, 20, n)
    edu = rng.choice(list(LEVELS), n)
    return pd.DataFrame({
        "c": (a + 2 * b + 3).astype(np.int64),
        "edu": edu,
        "a": a.astype(np.int64),
        "edu_num": np.array([LEVELS[e] for e in edu], np.int64),
        "noise": rng.normal(0, 1, n).round(3),
        "b": b.astype(np.int64),
        "label": rng.choice(["yes", "no"], n),
    })


def _keeps(out: pd.DataFrame) -> bool:
    return bool((out["c"] == out["a"] + 2 * out["b"] + 3).all())


def test_exact_relation_is_found_left_out_and_rebuilt_whatever_is_drawn():
    df = _table()
    pre = Preprocessor(derive="auto").fit(df, target="label")
    (rel,) = pre.linear
    assert (rel.column, rel.terms, rel.intercept, rel.coefficients) == ("c", ("a", "b"), 3.0, (1.0, 2.0))
    assert rel.integer and [d.column for d in pre.derived] == ["edu_num"]
    assert "c" not in pre.layout.numeric_names and {"a", "b", "noise"} <= set(pre.layout.numeric_names)
    assert pre.inferred["columns"]["c"] == "equals a + 2 b + 3 in every row: derived on decode, not modelled"
    back = pre.decode(pre.encode(df))
    assert list(back.columns) == list(df.columns) and back.dtypes.equals(df.dtypes)  # both kinds in their places
    pd.testing.assert_frame_equal(back[["c", "edu_num"]], df[["c", "edu_num"]])
    enc = pre.encode(df)
    rng = np.random.default_rng(1)  # arbitrary numbers, as a model could draw: the relation still holds exactly
    drawn = type(enc)(rng.normal(0, 2, np.shape(enc.numeric)).astype(np.float32), enc.categorical, enc.layout)
    out = pre.decode(drawn)
    assert _keeps(out) and out["c"].dtype == np.int64 and out["a"].nunique() > 10
    assert Preprocessor().fit(df, target="label").linear == ()  # derive off: every column modelled


def test_near_relations_accidents_and_the_target_are_not_derived():
    rng = np.random.default_rng(2)
    n = 400
    a, b = rng.integers(0, 100_000, n), rng.integers(0, 100_000, n)
    df = pd.DataFrame({"a": a, "b": b, "c": a + b, "noise": rng.normal(size=n)})
    df.loc[7, "c"] += 1  # off by one in one row: within the evaluation's tolerance, not exact
    found = search(df, ["a", "b", "c", "noise"])
    assert [(r["target"], r["columns"]) for r in found] == [("a", ["b", "c"])]  # the search finds it...
    assert Preprocessor(derive="auto").fit(df).linear == ()  # ...derive does not take it
    # three distinct rows lie on a plane whatever they are: 300 rows, no relation
    base = pd.DataFrame({"x": [1.0, 2.0, 5.0], "y": [3.0, 1.0, 4.0], "z": [10.0, -2.0, 7.5]})
    accident = pd.concat([base] * 100, ignore_index=True).assign(noise=rng.normal(size=300))
    assert search(accident, ["x", "y", "z", "noise"]) and Preprocessor(derive="auto").fit(accident).linear == ()
    # the target stays modelled: another column is derived through it
    exact = Preprocessor(derive="auto").fit(_table().drop(columns=["edu", "edu_num"]), target="c")
    assert [(r.column, "c" in r.terms) for r in exact.linear] == [("a", True)]


@pytest.fixture(scope="module")
def tabdiff():
    from tabdiff_jax.models.tabdiff import TabDiff

    return TabDiff(**TINY).fit(_table(), target="label", seed=0, progress=False)


def test_tabdiff_samples_keep_the_relation(tabdiff):
    df = _table()
    out = tabdiff.sample(200, seed=3)
    assert _keeps(out) and out.dtypes.equals(df.dtypes) and list(out.columns) == list(df.columns)
    assert tabdiff.preprocessor.linear and "c" not in tabdiff.preprocessor.layout.numeric_names
    assert out["c"].nunique() > 20  # drawn, not one row repeated


@pytest.mark.slow
def test_save_and_load_sample_the_same_rows(tabdiff, tmp_path):
    from tabdiff_jax import load

    out = tabdiff.sample(200, seed=3)
    tabdiff.save(tmp_path / "m")
    back = load(tmp_path / "m")
    assert back.preprocessor.linear == tabdiff.preprocessor.linear
    pd.testing.assert_frame_equal(back.sample(200, seed=3), out)


def test_a_condition_on_the_derived_column_names_its_terms(tabdiff):
    with pytest.raises(ConfigError, match=r"'c' equals a \+ 2 b \+ 3 .*condition on a and b instead"):
        tabdiff.sample(5, seed=0, condition={"c": 11})


@pytest.mark.slow
def test_a_condition_on_a_term_keeps_the_relation(tabdiff):
    given = tabdiff.sample(40, seed=1, condition={"a": 7})
    assert (given["a"] == 7).all() and _keeps(given)


def test_impute_keeps_observed_cells_and_the_relation(tabdiff):
    df = _table().head(40)
    gaps = df.copy()
    gaps.loc[0:9, "c"] = np.nan  # terms observed: c rebuilt from them
    gaps.loc[10:19, "b"] = np.nan  # c and a observed: b = (c - a - 3) / 2
    gaps.loc[20:24, "a"] = np.nan  # c and b observed: a = c - 2 b - 3
    gaps.loc[25:29, ["a", "c"]] = np.nan  # a drawn, c rebuilt
    filled = tabdiff.impute(gaps, seed=0)
    assert filled.notna().all().all() and _keeps(filled)
    observed = gaps.notna()
    assert (filled[observed] == gaps[observed]).sum().sum() == observed.sum().sum()  # observed cells unchanged
    pd.testing.assert_frame_equal(filled.loc[:24, ["a", "b", "c"]].astype(np.int64), df.loc[:24, ["a", "b", "c"]])
    assert gaps["c"].isna().sum() == 15  # the input is not changed


def test_private_models_do_not_derive():
    from tabdiff_jax.models.tabdiff import TabDiff
    from tabdiff_jax.preprocess import dependencies

    options = dependencies.model_options(TabDiff(epsilon=1.0), {"seed": 0, **TabDiff.preprocessor_options})  # as fit
    assert Preprocessor(**options).fit(_table(), target="label").linear == ()
    assert Preprocessor(**{**options, "derive": "auto"}).fit(_table(), target="label").linear  # what was avoided


@pytest.mark.slow
def test_a_private_fit_models_every_column():
    from tabdiff_jax.models.tabddpm import TabDDPM

    model = TabDDPM(epsilon=1.0, steps=2, batch_size=64, num_timesteps=10, hidden_dims=(8,), dim_t=8)
    model.fit(_table(), target="label", seed=0, progress=False)
    assert model.preprocessor.linear == () and "c" in model.preprocessor.layout.numeric_names
