"""Bad input to the preprocessor: each case raises a specific error that names the culprit."""

import os
import re

import numpy as np
import pandas as pd
import pytest

from tabdiff_jax.errors import ConfigError, DataError, TabdiffError
from tabdiff_jax.preprocess import Preprocessor


@pytest.fixture
def frame():
    return pd.DataFrame({
        "age": [23, 45, 31, 52, 38, 27],
        "income": [1.5, 2.25, np.nan, 4.0, 3.5, 2.0],
        "city": ["paris", "lyon", "paris", None, "nice", "lyon"],
        "label": ["yes", "no", "no", "yes", "no", "yes"],
    })


def raises(exc, *fragments):
    """pytest.raises that also checks that the message names each fragment (the culprit)."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


def test_errors_are_tabdiff_errors_and_value_errors():
    assert issubclass(DataError, TabdiffError) and issubclass(DataError, ValueError)
    assert issubclass(ConfigError, TabdiffError) and issubclass(ConfigError, ValueError)


def test_empty_table(frame):
    with raises(DataError, "no rows"):
        Preprocessor().fit(frame.iloc[:0])


def test_no_columns():
    with raises(DataError, "no columns"):
        Preprocessor().fit(pd.DataFrame(index=range(3)))


def test_not_a_dataframe(frame):
    with raises(DataError, "DataFrame", "ndarray"):
        Preprocessor().fit(frame.to_numpy())


def test_target_not_a_column(frame):
    with raises(DataError, "'salary'", "not a column"):
        Preprocessor().fit(frame, target="salary")


def test_duplicate_column_names(frame):
    dup = pd.concat([frame, frame[["city"]]], axis=1)
    with raises(DataError, "duplicate", "'city'"):
        Preprocessor().fit(dup)


def test_non_string_column_names():
    with raises(DataError, "strings"):
        Preprocessor().fit(pd.DataFrame(np.zeros((3, 2))))


@pytest.mark.parametrize("column", ["income", "city"])
def test_column_all_missing(frame, column):
    frame[column] = None if column == "city" else np.nan
    with raises(DataError, f"'{column}'", "missing"):
        Preprocessor().fit(frame)


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_values_at_fit_and_at_encode(frame, value):
    bad = frame.copy()
    bad.loc[2, "income"] = value
    with raises(DataError, "'income'", "infinite"):
        Preprocessor().fit(bad)
    pre = Preprocessor().fit(frame)
    with raises(DataError, "'income'", "infinite"):
        pre.encode(bad)


def test_too_many_categories_suggests_numeric_or_id():
    df = pd.DataFrame({"user_id": [f"u{i}" for i in range(50)], "x": np.arange(50.0)})
    with raises(DataError, "'user_id'", "50 distinct", "max_categories=20", "numeric", "identifier"):
        Preprocessor(max_categories=20).fit(df)
    assert Preprocessor(max_categories=50).fit(df).layout.categorical_sizes == (50,)


def test_unseen_category_at_encode(frame):
    pre = Preprocessor().fit(frame)
    new = frame.copy()
    new.loc[0, "city"] = "marseille"
    with raises(DataError, "'city'", "marseille", "not seen"):
        pre.encode(new)


def test_missing_value_in_a_column_fitted_without_any(frame):
    pre = Preprocessor().fit(frame)
    new = frame.copy()
    new.loc[1, "label"] = None
    with raises(DataError, "'label'", "missing"):
        pre.encode(new)
    new = frame.copy()
    new["age"] = new["age"].astype(float)
    new.loc[1, "age"] = np.nan
    with raises(DataError, "'age'", "missing"):
        pre.encode(new)


def test_mixed_type_object_column(frame):
    frame["code"] = pd.Series([1, "a", 2, "b", 3, "c"], dtype=object)
    with raises(DataError, "'code'", "mixes", "int", "str"):
        Preprocessor().fit(frame)


def test_unsupported_object_values(frame):
    frame["obj"] = pd.Series([(1, 2)] * 6, dtype=object)
    with raises(DataError, "'obj'", "tuple"):
        Preprocessor().fit(frame)


def test_encode_frame_missing_a_fitted_column(frame):
    pre = Preprocessor().fit(frame)
    with raises(DataError, "lacks", "'city'"):
        pre.encode(frame.drop(columns=["city"]))
    # extra columns are ignored; column order does not matter
    shuffled = frame[["label", "city", "income", "age"]].assign(extra=1)
    np.testing.assert_array_equal(np.asarray(pre.encode(shuffled).categorical), np.asarray(pre.encode(frame).categorical))


def test_numeric_column_fitted_then_strings(frame):
    pre = Preprocessor().fit(frame)
    with raises(DataError, "'income'", "non-numbers"):
        pre.encode(frame.assign(income=["a"] * 6))


def test_column_wider_than_float32(frame):
    frame["huge"] = [0.0, 1e300, 2.0, 3.0, 4.0, 5.0]
    with raises(DataError, "'huge'", "float32"):
        Preprocessor().fit(frame)


def test_timedelta_column_is_a_clear_error(frame):
    frame["wait"] = pd.to_timedelta(np.arange(6), unit="s")
    with raises(DataError, "'wait'", "timedelta"):
        Preprocessor().fit(frame)


def test_public_categories_exclude_a_value(frame):
    with raises(DataError, "'city'", "public_categories", "nice"):
        Preprocessor().fit(frame, public_categories={"city": ["paris", "lyon"]})


@pytest.mark.parametrize("kwargs, fragments", [
    (dict(column_kinds={"nope": "numeric"}), ["column_kinds", "'nope'"]),
    (dict(public_bounds={"nope": (0, 1)}), ["public_bounds", "'nope'"]),
    (dict(public_categories={"nope": ["a"]}), ["public_categories", "'nope'"]),
])
def test_arguments_naming_unknown_columns(frame, kwargs, fragments):
    with raises(DataError, *fragments):
        Preprocessor().fit(frame, **kwargs)


@pytest.mark.parametrize("kwargs, fragments", [
    (dict(task="ranking", target="label"), ["task", "ranking"]),
    (dict(task="classification"), ["without a target"]),
    (dict(target="label", task="regression"), ["'label'", "regression"]),
    (dict(column_kinds={"city": "numeric"}), ["'city'", "numeric"]),
    (dict(column_kinds={"age": "ordinal"}), ["'age'", "ordinal"]),
    (dict(public_bounds={"age": (10, 5)}), ["'age'", "low <= high"]),
    (dict(public_bounds={"age": 7}), ["'age'", "pair"]),
    (dict(public_bounds={"city": (0, 1)}), ["'city'", "categorical"]),
    (dict(public_categories={"city": ["a", "a"]}), ["'city'", "duplicate"]),
    (dict(target="age", task="classification", column_kinds={"age": "numeric"}), ["'age'", "classification"]),
])
def test_contradictory_arguments(frame, kwargs, fragments):
    with raises(ConfigError, *fragments):
        Preprocessor().fit(frame, **kwargs)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(numeric="log"), "numeric"), (dict(max_categories=0), "max_categories"),
    (dict(n_quantiles=1), "n_quantiles"), (dict(max_modes=2.5), "max_modes"),
    (dict(integer_categorical_max=-1), "integer_categorical_max"), (dict(seed=-3), "seed"),
])
def test_bad_configuration(kwargs, fragment):
    with raises(ConfigError, fragment):
        Preprocessor(**kwargs)


def test_helper_block_name_clash():
    df = pd.DataFrame({"x": [1.0, np.nan, 2.0], "x__missing": [0, 1, 0]})
    with raises(DataError, "'x__missing'", "clash"):
        Preprocessor().fit(df)


def test_unfitted_and_layout_mismatch(frame):
    with raises(ConfigError, "not fitted"):
        Preprocessor().encode(frame)
    a = Preprocessor().fit(frame)
    b = Preprocessor().fit(frame.drop(columns=["city"]))
    with raises(DataError, "layout"):
        b.decode(a.encode(frame))


def test_failed_fit_leaves_the_fitted_state_untouched(frame):
    pre = Preprocessor().fit(frame)
    before = pre.encode(frame)
    bad = frame.copy()
    bad.loc[0, "income"] = np.inf
    with pytest.raises(DataError):
        pre.fit(bad)
    np.testing.assert_array_equal(np.asarray(pre.encode(frame).numeric), np.asarray(before.numeric))


def test_save_writes_nothing_half_done(frame, tmp_path, monkeypatch):
    pre = Preprocessor().fit(frame)
    pre.save(tmp_path)
    good = {name: (tmp_path / name).read_bytes() for name in ("preprocessor.json", "preprocessor.npz")}

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError):
        Preprocessor(numeric="minmax").fit(frame).save(tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in good} == good  # the old pair is intact
    assert sorted(os.listdir(tmp_path)) == ["preprocessor.json", "preprocessor.npz"]  # no temp files


def test_load_rejects_a_foreign_file(frame, tmp_path):
    Preprocessor().fit(frame).save(tmp_path)
    (tmp_path / "preprocessor.json").write_text('{"format": "something else"}')
    with raises(DataError, "not a saved preprocessor"):
        Preprocessor.load(tmp_path)
    (tmp_path / "preprocessor.json").write_text('{"format": "tabdiff_jax.preprocessor/1", "config": {}}')
    with raises(DataError, "malformed"):
        Preprocessor.load(tmp_path)
    (tmp_path / "preprocessor.npz").unlink()
    with raises(DataError, "preprocessor.npz", "missing"):
        Preprocessor.load(tmp_path)
