import os

import numpy as np
import pandas as pd
import pytest

from tabdiff_jax import datasets
from tabdiff_jax.errors import ConfigError, DataError
from tabdiff_jax.io import (
    atomic_path,
    load_table,
    read_json,
    read_npz,
    write_json,
    write_npz,
    write_table,
)


def test_bundled_adult_equals_the_shared_csv(shared_data):
    train, test = datasets.load("adult")
    assert train.shape == (32561, 15) and test.shape == (16281, 15)
    pd.testing.assert_frame_equal(train, pd.read_csv(shared_data / "adult_train.csv"))
    pd.testing.assert_frame_equal(test, pd.read_csv(shared_data / "adult_test.csv"))


def test_unknown_bundled_name_is_a_clear_error():
    with pytest.raises(DataError, match="unknown bundled data set 'nope'"):
        datasets.load("nope")


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".csv.gz"])
def test_write_then_load_table_round_trip(tmp_path, suffix):
    df = pd.DataFrame({"x": [1.5, 2.0, np.nan], "k": ["a", "b", np.nan], "i": [1, 2, 3]})
    path = write_table(df, tmp_path / f"t{suffix}")
    back = load_table(path)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert back["i"].dtype.kind == "i"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_semicolon_tab_and_bar_separated_files_read_as_their_comma_twin(tmp_path):
    import gzip

    df = pd.DataFrame({"x": [1.5, 2.25, np.nan], "k": ["a", "b c", np.nan], "i": [1, 2, 3]})
    comma = load_table(write_table(df, tmp_path / "t.csv"))
    for name, sep in [("semi.csv", ";"), ("tab.csv", "\t"), ("bar.csv", "|"), ("t.tsv", "\t")]:
        df.to_csv(tmp_path / name, sep=sep, index=False)
        pd.testing.assert_frame_equal(load_table(tmp_path / name), comma)
    df.to_csv(tmp_path / "decimal.csv", sep=";", decimal=",", index=False)  # 1,5;a;1
    pd.testing.assert_frame_equal(load_table(tmp_path / "decimal.csv"), comma)
    # decimal commas: a whole-number column with gaps written "3,0" stays float, "3" becomes Int64
    (tmp_path / "gaps.csv").write_text("f;i;k\n3,0;3;a\n;;b\n4,0;4;c\n")
    gaps = load_table(tmp_path / "gaps.csv")
    assert gaps["f"].dtype.kind == "f" and str(gaps["i"].dtype) == "Int64" and gaps["f"].tolist()[::2] == [3.0, 4.0]
    with gzip.open(tmp_path / "semi.csv.gz", "wt") as f:
        df.to_csv(f, sep=";", index=False)
    pd.testing.assert_frame_equal(load_table(tmp_path / "semi.csv.gz"), comma)
    # a comma file keeps its commas, whatever its values hold; a given sep wins
    (tmp_path / "values.csv").write_text("a,b\n1;2,x\n3;4,y\n")
    assert list(load_table(tmp_path / "values.csv").columns) == ["a", "b"]
    (tmp_path / "one.csv").write_text("a;b\n1;2\n")
    assert list(load_table(tmp_path / "one.csv", sep=",").columns) == ["a;b"]
    (tmp_path / "uneven.csv").write_text("a;b\n1;2;3\n")  # not a consistent separator: left to pandas
    assert load_table(tmp_path / "uneven.csv").shape[1] == 1
    with pytest.raises(ConfigError, match="unsupported file type .tsv"):  # read, not written
        write_table(df, tmp_path / "out.tsv")


def test_load_table_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_table(tmp_path / "missing.csv")
    bad = tmp_path / "image.parquet"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(DataError, match="image.parquet: not a readable table"):
        load_table(bad)
    with pytest.raises(DataError, match="unsupported file type .txt"):
        (tmp_path / "x.txt").write_text("a,b\n1,2\n")
        load_table(tmp_path / "x.txt")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.csv"):
        load_table(empty)
    with pytest.raises(ConfigError, match="unsupported file type"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "out.xlsx")


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    path = tmp_path / "report.json"
    write_json({"v": 1}, path)
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert read_json(path) == {"v": 1}
    assert os.listdir(tmp_path) == ["report.json"]


def test_npz_round_trip_without_pickle(tmp_path):
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "k": np.array([1, 2], np.uint32)}
    back = read_npz(write_npz(arrays, tmp_path / "s.npz"))
    assert back.keys() == arrays.keys()
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])
        assert back[k].dtype == arrays[k].dtype
