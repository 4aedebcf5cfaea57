"""Exact relations: planted ones found (and nothing else), none on independent columns, shares by count."""

import numpy as np
import pandas as pd
import pytest

from tabdiff_jax.evaluate import evaluate
from tabdiff_jax.evaluate.columns import prepare
from tabdiff_jax.evaluate.relations import exact_relations, kept_share

N = 2000


def planted(n=N, seed=0):
    """One-to-one (code <-> code_num), many-to-one (city -> state), linear (total), product (charge)."""
    rng = np.random.default_rng(seed)
    code = rng.choice(list("abcdefgh"), n)
    city = rng.integers(0, 30, n)
    a, b = np.round(rng.uniform(0, 10, n), 2), np.round(rng.uniform(0, 5, n), 2)
    rate, minutes = np.round(rng.uniform(0.1, 0.5, n), 2), rng.integers(1, 300, n)
    return pd.DataFrame({
        "code": code,
        "code_num": (np.searchsorted(list("abcdefgh"), code) + 1) * 10,
        "city": [f"city{c}" for c in city],
        "state": [f"state{c % 5}" for c in city],
        "a": a, "b": b, "total": np.round(a + b + 5.0, 2),
        "rate": rate, "minutes": minutes, "charge": np.round(rate * minutes, 2),
        "noise": rng.normal(size=n),
        "colour": rng.choice(["red", "green", "blue"], n),
    })


def find(df, synthetic=None):
    cols, t = prepare(df, {"synthetic": df if synthetic is None else synthetic})
    return exact_relations(t["real"], t["synthetic"], cols, seed=0)


def test_planted_relations_are_found_and_nothing_else():
    rels = find(planted())["relations"]
    got = {(r["kind"], frozenset([r.get("target"), *r["columns"]]) - {None}) for r in rels}
    assert got == {
        ("one_to_one", frozenset({"code", "code_num"})),
        ("determines", frozenset({"city", "state"})),
        ("linear", frozenset({"total", "a", "b"})),
        ("product", frozenset({"charge", "rate", "minutes"})),
    }
    by_kind = {r["kind"]: r for r in rels}
    assert by_kind["determines"]["columns"] == ["city", "state"]  # the direction: city decides state
    lin = by_kind["linear"]  # whichever column is the target: total - a - b = 5 once normalised
    w = {lin["target"]: 1.0, **{c: -b for c, b in zip(lin["columns"], lin["coefficients"])}}
    scale = 1.0 / w["total"]
    assert {c: v * scale for c, v in w.items()} == pytest.approx({"total": 1.0, "a": -1.0, "b": -1.0}, abs=1e-6)
    assert lin["intercept"] * scale == pytest.approx(5.0, abs=1e-5)
    prod = by_kind["product"]  # only charge is a product of the other two
    assert prod["target"] == "charge" and prod["coefficients"][0] == pytest.approx(1.0, abs=1e-3)
    assert all(r["kept_share"] == 1.0 for r in rels)  # the real table keeps its own relations


def test_independent_columns_have_no_relations():
    rng = np.random.default_rng(1)
    df = pd.DataFrame({
        "x": rng.normal(size=N), "y": rng.normal(size=N), "z": np.round(rng.uniform(0, 10, N), 1),
        "dice": rng.integers(1, 7, N), "flag": rng.integers(0, 2, N), "rare": (rng.random(N) < 0.002).astype(int),
        "colour": rng.choice(["red", "green", "blue"], N), "group": rng.choice(list("abcdefghij"), N),
        "noisy_sum": rng.normal(size=N),
    })
    df["noisy_sum"] = df["x"] + df["y"] + 0.01 * rng.normal(size=N)  # close, but not exact
    assert find(df)["relations"] == []


def test_shares_count_kept_rows():
    real = pd.DataFrame({"k": ["a", "a", "b", "b", "c", "c"] * 50, "v": [1, 1, 2, 2, 3, 3] * 50,
                         "p": np.tile([1.0, 2.0, 3.0], 100), "q": np.tile([2.0, 5.0, 7.0, 11.0], 75)})
    real["s"] = real["p"] + 2.0 * real["q"]
    real["m"] = real["p"] * real["q"]
    syn = pd.DataFrame({
        "k": ["a", "b", "c", "a", "b", "c", "a", "zz", "b", "c"],  # rows 3, 6 break; "zz" unseen breaks
        "v": [1, 2, 3, 9, 2, 3, 3, 1, 2, 3],
        "p": [1.0] * 10, "q": [2.0] * 10,
        "s": [5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 6.0, 7.0],  # 8 of 10 keep s = p + 2 q
        "m": [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.5, 3.0, 2.0, 2.0],  # 8 of 10 keep m = p q
    })
    cols, t = prepare(real, {"synthetic": syn})
    rels = exact_relations(t["real"], t["synthetic"], cols, seed=0)["relations"]
    by_cols = {(r["kind"], r.get("target"), tuple(r["columns"])): r for r in rels}
    fd = by_cols[("one_to_one", None, ("k", "v"))]
    assert fd["kept_share"] == pytest.approx(0.7) and fd["rows_counted"] == 10
    lin = next(r for r in rels if r["kind"] == "linear" and {r["target"], *r["columns"]} == {"s", "p", "q"})
    assert lin["kept_share"] == pytest.approx(0.8)
    prod = next(r for r in rels if r["kind"] == "product")
    assert {prod["target"], *prod["columns"]} == {"m", "p", "q"} and prod["kept_share"] == pytest.approx(0.8)
    # The same share straight from kept_share, and a missing value is not counted.
    syn_missing = t["synthetic"].copy()
    syn_missing.loc[9, "p"] = np.nan
    share, counted = kept_share(lin, t["real"], syn_missing)
    assert counted == 9 and share == pytest.approx(8 / 9)  # row 9 (which broke it) is no longer counted


def test_evaluate_reports_relations_and_logistic_detection(tmp_path):
    df = planted(600)
    syn = planted(600, seed=5)
    syn.loc[:59, "code_num"] = 999  # 60 of 600 rows break code <-> code_num
    report = evaluate(df, syn, seed=0, threads=1, detection_rows=600,
                      skip=("utility", "coverage", "privacy", "sdmetrics_dcr"))
    rel = {r["description"]: r for r in report["relations"]["relations"]}
    assert rel["code <-> code_num"]["kept_share"] == pytest.approx(0.9)
    assert report["relations"]["min_kept_share"] == pytest.approx(0.9)
    assert 0.0 <= report["fidelity"]["logistic_detection_score"] <= 1.0
    assert "kept: code <-> code_num" in report.summary_table()
    md = report.to_markdown(tmp_path / "r.md")
    assert "## Exact relations of the real table" in md and "`code <-> code_num`" in md
    assert "relations" not in evaluate(df, syn, seed=0, skip=("utility", "detection", "coverage", "privacy",
                                                               "sdmetrics_dcr", "relations"))


def test_numbers_mapped_one_to_one_are_reported_once():
    rng = np.random.default_rng(2)
    level = rng.integers(1, 6, N).astype(float)
    df = pd.DataFrame({"level": level, "score": 2.0 * level + 1.0, "x": rng.normal(size=N)})
    rels = find(df)["relations"]
    assert [(r["kind"], r["columns"]) for r in rels] == [("one_to_one", ["level", "score"])]  # not also "linear"
