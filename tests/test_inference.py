"""What the preprocessor guesses from the data is said out loud, and odd inputs are refused or restored.

One test per case of issue 14 (build points 3, 4 and 6).
"""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from tabdiff_jax.cli import main
from tabdiff_jax.datasets import resolve_table
from tabdiff_jax.errors import ConfigError, DataError, TabdiffError
from tabdiff_jax.io import load_table, write_table
from tabdiff_jax.models.base import MIN_ROWS
from tabdiff_jax.models.smote import SMOTE
from tabdiff_jax.preprocess import Preprocessor
from tabdiff_jax.preprocess.inference import label_from_text


def _frame(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=n).round(3), "c": rng.choice(["a", "b", "c"], n),
                         "y": rng.integers(0, 2, n)})


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ build point 3: inference said out loud
def test_binary_integer_target_is_classification_and_recorded(tmp_path):
    df = _frame()
    pre = Preprocessor().fit(df, target="y")
    assert pre.task == "classification" and pre.columns["y"] == "categorical"
    assert "two values" in pre.inferred["task"] and "'y'" in pre.inferred["task"]
    back = pre.decode(pre.encode(df))
    assert back["y"].dtype == np.int64 and (back["y"] == df["y"]).all()
    # the explicit task still wins, and is not reported as a guess
    explicit = Preprocessor().fit(df, target="y", task="regression")
    assert explicit.task == "regression" and "task" not in explicit.inferred
    # models without the preprocessor (SMOTE) infer the same, and run.json records it
    model = SMOTE().fit(df, target="y", progress=False, run_dir=tmp_path / "run")
    assert model.task == "classification"
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "classification" in run["inferred"]["task"]


def test_cli_fit_prints_inferred_kinds_and_condition_is_typed(capsys, tmp_path):
    df = _frame(60)
    df["when"] = pd.date_range("2020-01-01", periods=60, freq="D").strftime("%Y-%m-%d")
    write_table(df, tmp_path / "t.csv")
    code, out, err = _run(capsys, "fit", tmp_path / "t.csv", "--model", "smote", "--target", "y", "--out", tmp_path / "r")
    assert code == 0, err
    assert "inferred:" in out and "task classification" in out and "'when': datetime from ISO strings" in out
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["inferred"]["columns"]["when"].startswith("datetime")
    code, out, err = _run(capsys, "sample", tmp_path / "r", "-n", 30, "-o", tmp_path / "s.csv", "--condition", "y=1")
    assert code == 0, err
    sample = pd.read_csv(tmp_path / "s.csv")
    assert (sample["y"] == 1).all() and len(sample) == 30


def test_condition_text_is_parsed_with_the_column_type_and_unseen_lists_classes():
    df = _frame()
    pre = Preprocessor().fit(df, target="y")
    spec = {s.name: s for s in pre.specs}
    assert label_from_text(spec["y"], "1") == 1 and isinstance(label_from_text(spec["y"], "1"), int)
    assert label_from_text(spec["c"], "b") == "b"
    with pytest.raises(ConfigError, match=r"y='one'.*\[0, 1\]"):
        label_from_text(spec["y"], "one")
    model = SMOTE().fit(df, target="c", progress=False)
    with pytest.raises(TabdiffError, match=r"'a'.*'b'.*'c'"):  # the known classes are listed
        model.sample(5, condition={"c": "zzz"})


# ------------------------------------------------------------------ build point 4: odd inputs
def test_too_few_rows_are_refused_with_the_minimum():
    with pytest.raises(DataError, match=f"at least {MIN_ROWS}"):
        SMOTE().fit(_frame(1), progress=False)
    SMOTE().fit(_frame(MIN_ROWS, seed=3), progress=False)  # the minimum itself is accepted


def test_single_class_target_is_refused_naming_the_column():
    df = _frame()
    df["only"] = "yes"
    with pytest.raises(DataError, match="'only'"):
        SMOTE().fit(df, target="only", progress=False)
    with pytest.raises(DataError, match="'y'"):
        SMOTE().fit(df.assign(y=1), target="y", task="classification", progress=False)


@pytest.mark.parametrize("fmt, freq", [("%Y-%m-%d", "D"), ("%Y-%m-%d %H:%M", "17min"), ("%Y-%m-%dT%H:%M:%S", "1001s")])
def test_iso_date_strings_are_datetimes_restored_in_their_format(tmp_path, fmt, freq):
    stamps = pd.date_range("2019-12-30 08:00", periods=50, freq=freq)
    df = pd.DataFrame({"when": stamps.strftime(fmt), "v": np.arange(50) % 7})
    df.loc[[3, 9], "when"] = np.nan
    pre = Preprocessor().fit(df)
    assert pre.columns["when"] == "datetime" and fmt in pre.inferred["columns"]["when"]
    back = pre.decode(pre.encode(df))
    assert back["when"].dtype == df["when"].dtype
    pd.testing.assert_series_equal(back["when"], df["when"])  # same strings, same format, gaps kept
    # through a CSV file: the synthetic table's strings are in the input's format
    write_table(df, tmp_path / "d.csv")
    model = SMOTE().fit(load_table(tmp_path / "d.csv"), progress=False)
    out = model.sample(40, seed=0)["when"].dropna()
    assert len(out) and (pd.to_datetime(out, format=fmt).dt.strftime(fmt) == out).all()
    # a datetime64 input stays datetime64
    typed = df.assign(when=pd.to_datetime(df["when"], format=fmt))
    again = Preprocessor().fit(typed)
    assert again.decode(again.encode(typed))["when"].dtype == typed["when"].dtype


def test_mixed_numbers_and_text_warn_once_naming_the_column():
    df = _frame()
    df["code"] = [str(i) if i % 4 else f"x{i}" for i in range(len(df))]
    with pytest.warns(UserWarning, match="column 'code' mixes numbers") as caught:
        pre = Preprocessor().fit(df)
    assert sum("'code'" in str(w.message) for w in caught) == 1
    assert pre.columns["code"] == "categorical" and "mixing numbers and text" in pre.inferred["columns"]["code"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Preprocessor().fit(_frame())  # plain text columns do not warn


def test_integers_with_gaps_in_a_csv_come_back_as_integers(tmp_path):
    (tmp_path / "g.csv").write_text("n,f,c\n1,2.0,a\n,3.5,b\n7,,a\n" + "".join(f"{i},{i}.25,b\n" for i in range(20)))
    df = load_table(tmp_path / "g.csv")
    assert str(df["n"].dtype) == "Int64" and df["f"].dtype == np.float64  # "2.0" is a float in the file
    pre = Preprocessor().fit(df)
    assert "integer with missing values" in pre.inferred["columns"]["n"]
    back = pre.decode(pre.encode(df))
    assert str(back["n"].dtype) == "Int64"
    pd.testing.assert_frame_equal(back, df)
    syn = SMOTE().fit(df, progress=False).sample(50, seed=1)
    assert str(syn["n"].dtype) == "Int64"


def test_decimal_places_are_learned_and_restored_exactly(shared_data):
    cal = pd.read_csv(shared_data / "california_housing.csv")
    df = cal[["total_rooms", "total_bedrooms", "median_income", "longitude"]].iloc[:3000]
    for numeric in ("quantile", "minmax", "mode_specific"):
        pre = Preprocessor(numeric=numeric).fit(df)
        decimals = {s.name: s.decimals for s in pre.specs}
        assert decimals == {"total_rooms": 0, "total_bedrooms": 0, "median_income": 4, "longitude": 2}
        back = pre.decode(pre.encode(df))
        assert back.dtypes.equals(df.dtypes)
        assert (back["total_rooms"] == np.round(back["total_rooms"])).all()
        assert (back["longitude"] == np.round(back["longitude"], 2)).all()
        if numeric != "mode_specific":  # CTGAN's encoding clips outliers (see Preprocessor)
            pd.testing.assert_frame_equal(back[["total_rooms", "longitude"]], df[["total_rooms", "longitude"]])
    assert "whole numbers with missing values" in pre.inferred["columns"]["total_bedrooms"]


def test_duplicate_csv_headers_are_refused_naming_them(tmp_path):
    (tmp_path / "dup.csv").write_text("a,a,b,b,c\n1,2,3,4,5\n")
    with pytest.raises(DataError, match=r"\['a', 'b'\]"):
        load_table(tmp_path / "dup.csv")


def test_near_miss_of_a_bundled_name_is_suggested(capsys, tmp_path):
    with pytest.raises(DataError, match="did you mean the bundled table 'adult'"):
        resolve_table("adlt")
    code, _, err = _run(capsys, "fit", "adlt", "--model", "smote", "--out", tmp_path / "r")
    assert code == 2 and "'adult'" in err


# ------------------------------------------------------------------ build point 6: small tables evaluate fast
def test_utility_on_a_small_table_is_bounded():
    from tabdiff_jax.evaluate.columns import prepare
    from tabdiff_jax.evaluate.utility import SMALL_MAX_ITER, utility_scores

    rng = np.random.default_rng(0)
    n = 800
    x = rng.normal(size=(n, 3))
    df = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": rng.choice(list("pqr"), n),
                       "y": np.where(x[:, 0] + 0.5 * rng.normal(size=n) > 0, "yes", "no")})
    columns, t = prepare(df, {"test": df.iloc[:200]}, target="y")
    u = utility_scores(t["real"], t["real"], t["test"], columns, "classification", model="sklearn", threads=1)
    ran = int(u["real"]["fitted"].split("ran ")[1].rstrip(")"))
    assert ran < 1000 and u["real"]["f1_macro"] > 0.7  # early stopped, and it learned the rule
    tiny = utility_scores(t["real"].iloc[:30], t["real"].iloc[:30], t["test"], columns, "classification",
                          model="sklearn", threads=1)
    assert int(tiny["real"]["fitted"].split("ran ")[1].rstrip(")")) <= SMALL_MAX_ITER
