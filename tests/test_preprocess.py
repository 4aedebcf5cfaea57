"""Round trips of the shared preprocessor on the seven real tables, jit equality, save / load,
and each numeric transform against an independent reference (scikit-learn, float64 numpy)."""

import json

import jax
import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr

from tabdiff_jax.preprocess import Preprocessor
from tabdiff_jax.preprocess.transforms import MODE_CLIP, TAIL

TABLES = ["adult_train", "adult_test", "california_housing", "king", "abalone", "insurance", "german_credit"]
TRANSFORMS = ["quantile", "minmax", "standard", "mode_specific"]
EPS32 = float(np.finfo(np.float32).eps)
TINY32 = float(np.finfo(np.float32).tiny)  # smallest normal float32
QUICK_ROWS = 1500


def load_table(shared_data, name, rows=None):
    df = pd.read_csv(shared_data / f"{name}.csv")
    if rows is not None and len(df) > rows:
        df = df.sample(n=rows, random_state=0).reset_index(drop=True)
    return df


def numeric_tolerance(pre, df, j, spec, acceptance=True):
    """Per-row bound on |decoded - original| for numeric column ``spec`` (the j-th numeric block)."""
    x = df[spec.name].to_numpy(np.float64)
    x_c = np.abs(x - spec.low)  # the value the device sees, float32(x - low)
    if pre.numeric in ("minmax", "standard") and acceptance:
        # The acceptance criterion: 1e-6 relative, relative to max(|x|, column std) so that
        # values near zero of a wide column are judged on the column's scale, not on |x|.
        return 1e-6 * np.maximum(np.abs(x), np.nanstd(x))
    if pre.numeric in ("minmax", "standard"):
        # float32 bound for arbitrary columns (an outlier makes std << range): a few roundings,
        # each relative to the span of the column or to |x - low|.
        # (XLA on CPU flushes float32 subnormals to zero: nothing below TINY32 is resolved.)
        return 8 * EPS32 * (spec.span + x_c) + 2 * TINY32
    if pre.numeric == "quantile":
        # Quantile resolution: the error of the level u (a few float32 ulps) times (Q - 1) times
        # the width of the quantile bin holding x, plus float32 rounding of x - low itself.
        # A value at a bin edge may come back through either neighbouring bin, so the bound
        # takes the widest of the bins k - 1, k, k + 1 around it.
        q = pre.params.quantiles[j].astype(np.float64)
        widths = np.diff(q)
        k = np.clip(np.searchsorted(q, x_c, side="right") - 1, 0, len(widths) - 1)
        gap = np.max([widths[np.clip(k + d, 0, len(widths) - 1)] for d in (-1, 0, 1)], axis=0)
        return 8 * EPS32 * ((len(q) - 1) * gap + x_c) + 2 * TINY32
    raise AssertionError(pre.numeric)


def mode_reference(pre, df, j, spec, encoded):
    """float64 reference of CTGAN's round trip with the modes chosen by the encoder: clip the
    normalised value to [-0.99, 0.99], undo it, clip to the bounds; and the float32 tolerance."""
    block = pre.layout.categorical_names.index(f"{spec.name}__mode")
    k = np.asarray(encoded.categorical)[:, block]
    mu = pre.params.means[j, k].astype(np.float64)
    sigma = pre.params.stds[j, k].astype(np.float64)
    x_c = df[spec.name].to_numpy(np.float64) - spec.low
    ref = mu + np.clip((x_c - mu) / (4 * sigma), -MODE_CLIP, MODE_CLIP) * 4 * sigma
    ref = np.clip(ref, 0.0, spec.span) + spec.low
    # float32: x - low, x - mu, the division and the multiply-add each round once, relative to
    # the largest magnitude involved (|x - low|, |mu|, 4 sigma).
    tol = 16 * EPS32 * (np.abs(x_c) + np.abs(mu) + 4 * sigma) + 2 * TINY32
    clipped = np.abs(x_c - mu) > MODE_CLIP * 4 * sigma
    return ref, tol, clipped


def _half_step(spec):
    """Half the grid step decoded values are rounded to (integers, learned decimals), else 0."""
    if spec.integer:
        return 0.5
    return 0.0 if spec.decimals is None else 0.5 * 10.0 ** -spec.decimals


def assert_round_trip(pre, df, encoded, back, acceptance=True):
    assert list(back.columns) == list(df.columns)
    assert back.dtypes.to_dict() == df.dtypes.to_dict()
    assert len(back) == len(df)
    numeric_specs = [s for s in pre.specs if s.kind != "categorical"]
    for spec in pre.specs:
        a, b = df[spec.name], back[spec.name]
        np.testing.assert_array_equal(a.isna().to_numpy(), b.isna().to_numpy(), err_msg=spec.name)
        present = a.notna().to_numpy()
        if spec.kind == "categorical":
            assert (a[present].to_numpy() == b[present].to_numpy()).all(), spec.name
            continue
        j = numeric_specs.index(spec)
        x, y = a.to_numpy(np.float64)[present], b.to_numpy(np.float64)[present]
        if pre.numeric == "mode_specific":
            ref, tol, clipped = mode_reference(pre, df[present], j, spec, _rows(encoded, present))
            half = _half_step(spec)
            if half:  # rounding of a clipped value may land on either side of .5 (of the last decimal)
                exact = ~clipped & (tol < half)  # values on the grid, decoded closer than half a step
                ref, tol = np.round(ref, spec.decimals or 0), np.where(exact, 0.0, half + tol)
            assert np.all(np.abs(y - ref) <= tol), (spec.name, np.max(np.abs(y - ref) - tol))
            assert np.all(np.abs(y - x)[~clipped] <= tol[~clipped] + half), spec.name
            continue
        tol = numeric_tolerance(pre, df[present], j, spec, acceptance)
        if spec.integer:
            if pre.numeric in ("minmax", "standard"):
                np.testing.assert_array_equal(y, x, err_msg=spec.name)
        tol = tol + _half_step(spec)  # rounding to the integer grid or the learned decimal places
        err = np.abs(y - x)
        assert np.all(err <= tol), (spec.name, float(np.max(err - tol)))
        assert np.all((y >= spec.low) & (y <= spec.high)), spec.name


def _rows(encoded, mask):
    from tabdiff_jax.table import EncodedTable

    return EncodedTable(np.asarray(encoded.numeric)[mask], np.asarray(encoded.categorical)[mask], encoded.layout)


@pytest.mark.parametrize("numeric", TRANSFORMS)
@pytest.mark.parametrize("table", TABLES)
def test_round_trip_real_tables(shared_data, table, numeric):
    df = load_table(shared_data, table, rows=QUICK_ROWS)
    pre = Preprocessor(numeric=numeric).fit(df)
    encoded = pre.encode(df)
    assert encoded.numeric.dtype == np.float32 and encoded.categorical.dtype == np.int32
    assert encoded.numeric.shape == (len(df), pre.layout.num_numeric)
    codes = np.asarray(encoded.categorical)
    assert np.all((codes >= 0) & (codes < np.array(pre.layout.categorical_sizes)))
    assert np.isfinite(np.asarray(encoded.numeric)).all()
    assert_round_trip(pre, df, encoded, pre.decode(encoded))


@pytest.mark.slow
@pytest.mark.parametrize("numeric", TRANSFORMS)
@pytest.mark.parametrize("table", TABLES)
def test_round_trip_real_tables_full_size(shared_data, table, numeric):
    df = load_table(shared_data, table)
    pre = Preprocessor(numeric=numeric).fit(df)
    encoded = pre.encode(df)
    assert_round_trip(pre, df, encoded, pre.decode(encoded))


def test_adult_layout_and_missing_marker_is_a_category(shared_data):
    df = load_table(shared_data, "adult_train", rows=QUICK_ROWS)
    pre = Preprocessor(numeric="mode_specific").fit(df, target="income")
    lay = pre.layout
    assert lay.target == "income" and lay.task == "classification"
    assert lay.numeric_names == ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
    assert lay.categorical_names[:3] == ("age__mode", "workclass", "fnlwgt__mode")
    assert set(lay.categorical_roles) == {"mode", "category"}
    # "?" is an ordinary category, not a missing value
    ws = next(s for s in pre.specs if s.name == "workclass")
    assert "?" in ws.categories and not ws.has_missing
    assert pre.columns["age"] == "numeric" and pre.columns["income"] == "categorical"
    sizes = dict(zip(lay.categorical_names, lay.categorical_sizes))
    assert sizes["income"] == 2 and sizes["workclass"] == df["workclass"].nunique()


def test_california_missing_block_and_regression_target(shared_data):
    df = load_table(shared_data, "california_housing")
    pre = Preprocessor(numeric="quantile").fit(df, target="median_house_value")
    assert pre.task == "regression" and pre.layout.target_numeric_index == pre.layout.numeric_names.index("median_house_value")
    b = pre.layout.categorical_names.index("total_bedrooms__missing")
    assert pre.layout.categorical_roles[b] == "missing" and pre.layout.categorical_sizes[b] == 2
    enc = pre.encode(df)
    np.testing.assert_array_equal(np.asarray(enc.categorical)[:, b], df["total_bedrooms"].isna().to_numpy())
    assert int(df["total_bedrooms"].isna().sum()) == 207
    back = pre.decode(enc)
    np.testing.assert_array_equal(back["total_bedrooms"].isna(), df["total_bedrooms"].isna())
    # missing rows carry the imputed value (the median) in the numeric block
    j = pre.layout.numeric_names.index("total_bedrooms")
    median_row = df.iloc[:1].copy()
    median_row["total_bedrooms"] = df["total_bedrooms"].median()
    expected = np.asarray(pre.encode(median_row).numeric)[0, j]
    np.testing.assert_allclose(np.asarray(enc.numeric)[df["total_bedrooms"].isna().to_numpy(), j], expected, rtol=1e-6)


def test_task_override_makes_integer_target_categorical(shared_data):
    df = load_table(shared_data, "german_credit")
    assert Preprocessor().fit(df, target="default").task == "classification"  # two values (1, 2): inferred
    assert Preprocessor().fit(df, target="dependents", task="regression").task == "regression"
    pre = Preprocessor().fit(df, target="default", task="classification")
    assert pre.columns["default"] == "categorical" and pre.layout.target_categorical_index is not None
    back = pre.decode(pre.encode(df))
    assert back["default"].dtype == np.int64 and (back["default"] == df["default"]).all()


@pytest.mark.parametrize("numeric", TRANSFORMS)
def test_jit_equals_eager(shared_data, numeric):
    full = load_table(shared_data, "california_housing")
    # 300 rows, 5 of them with total_bedrooms missing (so the missing block is exercised)
    df = pd.concat([full.sample(n=295, random_state=0), full[full["total_bedrooms"].isna()].head(5)], ignore_index=True)
    pre = Preprocessor(numeric=numeric).fit(df, target="median_house_value")
    raw = pre.to_arrays(df)
    eager = pre.encode_arrays(*raw)
    jitted = jax.jit(pre.encode_arrays)(*raw)
    np.testing.assert_array_equal(np.asarray(jitted.categorical), np.asarray(eager.categorical))
    # XLA may fuse differently under jit; allow a couple of float32 ulps of the encoded values
    np.testing.assert_allclose(np.asarray(jitted.numeric), np.asarray(eager.numeric), rtol=4 * EPS32, atol=4 * EPS32)
    d_eager = pre.decode_arrays(eager)
    d_jit = jax.jit(pre.decode_arrays)(eager)
    np.testing.assert_array_equal(np.asarray(d_jit[1]), np.asarray(d_eager[1]))
    scale = np.nanmax(np.abs(raw[0]), axis=0)
    np.testing.assert_allclose(np.asarray(d_jit[0]), np.asarray(d_eager[0]), rtol=0, atol=1e-5 * scale.max())
    np.testing.assert_array_equal(np.isnan(np.asarray(d_jit[0])), np.isnan(raw[0]))
    # encode = encode_arrays o to_arrays; decode = from_arrays o decode_arrays
    enc = pre.encode(df)
    np.testing.assert_array_equal(np.asarray(enc.categorical), np.asarray(eager.categorical))
    pd.testing.assert_frame_equal(pre.decode(enc), pre.from_arrays(*jax.jit(pre.decode_arrays)(enc)))


@pytest.mark.parametrize("numeric", TRANSFORMS)
def test_save_load_gives_identical_encodings(shared_data, tmp_path, numeric):
    df = load_table(shared_data, "adult_train", rows=800)
    pre = Preprocessor(numeric=numeric, seed=3).fit(df, target="income")
    pre.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preprocessor.json", "preprocessor.npz"]
    json.loads((tmp_path / "preprocessor.json").read_text())  # plain JSON
    with np.load(tmp_path / "preprocessor.npz", allow_pickle=False) as npz:  # no pickled objects
        assert all(npz[k].dtype != object for k in npz.files)
    loaded = Preprocessor.load(tmp_path)
    assert loaded.layout == pre.layout and loaded.specs == pre.specs
    a, b = pre.encode(df), loaded.encode(df)
    np.testing.assert_array_equal(np.asarray(a.numeric), np.asarray(b.numeric))
    np.testing.assert_array_equal(np.asarray(a.categorical), np.asarray(b.categorical))
    pd.testing.assert_frame_equal(pre.decode(a), loaded.decode(b))
    meta, arrays = pre.to_state()
    again = Preprocessor.from_state(json.loads(json.dumps(meta)), arrays)
    np.testing.assert_array_equal(np.asarray(again.encode(df).numeric), np.asarray(a.numeric))


def test_quantile_matches_scikit_learn(shared_data):
    from sklearn.preprocessing import QuantileTransformer

    df = load_table(shared_data, "adult_train", rows=5000)[["age", "fnlwgt", "capital-gain", "hours-per-week"]]
    df = df.astype(np.float64)
    pre = Preprocessor(numeric="quantile", n_quantiles=200).fit(df)
    ours = np.asarray(pre.encode(df).numeric, np.float64)
    ref = QuantileTransformer(n_quantiles=200, output_distribution="normal", subsample=None).fit_transform(df.to_numpy())
    # Compare the levels u = Phi(z): scikit-learn clips u to [1e-7, 1 - 1e-7] where we squeeze it
    # affinely into that range, which moves z visibly only in the far tails (|z| > 4).
    u_ours = (ndtr(ours) - TAIL) / (1 - 2 * TAIL)
    u_ref = ndtr(ref)
    np.testing.assert_allclose(u_ours, u_ref, atol=1e-6)
    np.testing.assert_allclose(ours[np.abs(ref) < 4], ref[np.abs(ref) < 4], atol=1e-3)
    # ties: capital-gain is 0 (its minimum) for ~90% of rows: all of them map to the lower tail
    zero = df["capital-gain"].to_numpy() == 0
    np.testing.assert_allclose(ours[zero, 2], ref[zero, 2], rtol=1e-5)


def test_mode_specific_modes_follow_ctgan_rules(shared_data):
    df = load_table(shared_data, "adult_train", rows=2000)
    pre = Preprocessor(numeric="mode_specific", max_modes=10).fit(df)
    weights = np.exp(pre.params.log_weights)
    kept = np.isfinite(pre.params.log_weights)
    assert np.all(kept.sum(axis=1) >= 1) and np.all(kept.sum(axis=1) <= 10)
    # kept modes first, sorted by mean, and the block sizes are the kept counts
    for j, name in enumerate(pre.layout.numeric_names):
        k = kept[j].sum()
        assert kept[j, :k].all() and not kept[j, k:].any()
        assert np.all(np.diff(pre.params.means[j, :k]) >= 0)
        assert pre.layout.categorical_sizes[pre.layout.categorical_names.index(f"{name}__mode")] == k
    np.testing.assert_allclose(np.where(kept, weights, 0).sum(axis=1), 1.0, rtol=1e-5)
    # the encoder picks the argmax of log w_k + log N(x | mu_k, sigma_k) (float64 reference)
    enc = pre.encode(df)
    x = pre.to_arrays(df)[0].astype(np.float64)
    mu, sd, lw = (a.astype(np.float64)[None] for a in (pre.params.means, pre.params.stds, pre.params.log_weights))
    score = lw - np.log(sd) - 0.5 * ((x[:, :, None] - mu) / sd) ** 2
    blocks = [pre.layout.categorical_names.index(f"{n}__mode") for n in pre.layout.numeric_names]
    chosen = np.asarray(enc.categorical)[:, blocks]
    best = np.take_along_axis(score, chosen[:, :, None], axis=2)[..., 0]
    assert np.all(best >= score.max(axis=2) - 1e-3 * (1 + np.abs(score.max(axis=2))))
    assert np.all(np.abs(np.asarray(enc.numeric)) <= MODE_CLIP)
    # deterministic: same seed, same modes; the fit does not depend on the thread schedule
    again = Preprocessor(numeric="mode_specific").fit(df)
    np.testing.assert_array_equal(again.params.means, pre.params.means)


@pytest.mark.parametrize("numeric", TRANSFORMS)
def test_constant_column_is_reproduced_exactly(numeric):
    df = pd.DataFrame({"c": [0.1] * 7, "k": [3] * 7, "x": np.linspace(-1, 2, 7), "s": ["a"] * 7})
    pre = Preprocessor(numeric=numeric).fit(df)
    enc = pre.encode(df)
    np.testing.assert_allclose(np.asarray(enc.numeric)[:, :2], 0.0, atol=1e-6)
    back = pre.decode(enc)
    assert (back["c"] == 0.1).all() and (back["k"] == 3).all() and (back["s"] == "a").all()


def test_decode_clips_to_bounds_and_rounds_integers():
    df = pd.DataFrame({"i": [1, 5, 9], "f": [-2.0, 0.5, 3.0]})
    for numeric in TRANSFORMS:
        pre = Preprocessor(numeric=numeric).fit(df)
        wild = pre.encode(df).replace(numeric=jax.numpy.asarray([[40.0, -40.0], [-40.0, 40.0], [0.3, 0.1]]))
        back = pre.decode(wild)
        assert back["i"].dtype == np.int64 and back["i"].between(1, 9).all()
        assert back["f"].between(-2.0, 3.0).all()
        if numeric != "mode_specific":  # there +-40 is clipped to mu +- 4 sigma of the mode
            assert set(back["i"].iloc[:2]) == {1, 9} and set(back["f"].iloc[:2]) == {-2.0, 3.0}


def test_public_bounds_and_categories_are_recorded():
    df = pd.DataFrame({"age": [20, 30, 40], "w": [1.5, 2.5, np.nan], "c": ["x", "y", "x"], "d": ["u", "v", "u"]})
    pre = Preprocessor(numeric="minmax").fit(
        df, public_bounds={"age": (0, 100.7), "w": (0.0, 10.0)}, public_categories={"c": ["x", "y", "z"]})
    spec = {s.name: s for s in pre.specs}
    assert (spec["age"].low, spec["age"].high) == (0.0, 100.0)  # integer column: bounds to integers
    assert spec["c"].categories == ("x", "y", "z") and spec["c"].domain_source == "public"
    facts = pre.data_dependent()
    assert facts["age"] == [] and facts["c"] == []
    assert facts["w"] == ["missing", "median"] and facts["d"] == ["categories"]
    assert pre.data_dependent_columns() == ["w", "d"]
    enc = pre.encode(df)
    np.testing.assert_allclose(np.asarray(enc.numeric)[:, 0], [-0.6, -0.4, -0.2], atol=1e-6)  # 2 * age / 100 - 1
    assert "quantiles" in Preprocessor().fit(df).data_dependent()["age"]
    # values outside public bounds are clipped to them
    clipped = pre.decode(pre.encode(pd.DataFrame({"age": [150, -3, 50], "w": [20.0, 1.0, np.nan],
                                                  "c": ["z", "x", "y"], "d": ["u", "u", "v"]})))
    assert clipped["age"].tolist() == [100, 0, 50] and clipped["w"].iloc[0] == 10.0
    assert clipped["c"].tolist() == ["z", "x", "y"]


def test_integer_categorical_rule_and_column_kinds():
    df = pd.DataFrame({"few": [1, 2, 3, 1, 2, 3], "many": [1, 2, 3, 4, 5, 6], "f": np.arange(6.0)})
    assert Preprocessor().fit(df).columns == {"few": "numeric", "many": "numeric", "f": "numeric"}
    pre = Preprocessor(integer_categorical_max=3).fit(df)
    assert pre.columns == {"few": "categorical", "many": "numeric", "f": "numeric"}
    pre = Preprocessor().fit(df, column_kinds={"many": "categorical", "f": "categorical"})
    assert pre.columns["many"] == "categorical" and pre.columns["f"] == "categorical"
    back = pre.decode(pre.encode(df))
    pd.testing.assert_frame_equal(back, df)


@pytest.mark.parametrize("tz", [None, "Europe/Paris"])
def test_datetime_round_trip(tz):
    stamps = pd.to_datetime(["2021-01-01 10:00", "2021-03-05 11:30", None, "2022-12-31 23:59", "2021-01-01 10:00"])
    df = pd.DataFrame({"t": stamps, "v": [1.0, 2.0, 3.0, 4.0, 5.0]})
    if tz:
        df["t"] = df["t"].dt.tz_localize(tz)
    df["day"] = pd.to_datetime(["2020-01-01", "2020-01-02", "2020-02-01", "2020-01-05", "2020-01-03"]).astype("datetime64[s]")
    for numeric in ("quantile", "mode_specific"):  # the two non-affine transforms
        pre = Preprocessor(numeric=numeric).fit(df)
        assert pre.columns["t"] == "datetime"
        spec = {s.name: s for s in pre.specs}
        assert spec["t"].unit == "min" and spec["day"].unit == "D"
        back = pre.decode(pre.encode(df))
        pd.testing.assert_frame_equal(back, df)


def test_arrow_backed_columns_round_trip_with_their_own_dtypes(tmp_path):
    # pd.read_csv(..., dtype_backend="pyarrow") / read_parquet: Arrow strings are not pandas' "string[pyarrow]"
    pa = pytest.importorskip("pyarrow")
    df = pd.DataFrame({
        "s": pd.array(["a", None, "b", "a"], dtype=pd.ArrowDtype(pa.string())),
        "ls": pd.array(["x", "y", "y", None], dtype=pd.ArrowDtype(pa.large_string())),
        "i": pd.array([1, 2, None, 4], dtype=pd.ArrowDtype(pa.int64())),
        "f": pd.array([0.5, None, 1.5, 2.0], dtype=pd.ArrowDtype(pa.float64())),
        "ps": pd.array(["u", "v", None, "u"], dtype="string[pyarrow]"),
    })
    pre = Preprocessor(numeric="minmax").fit(df)
    pre.save(tmp_path / "pre")
    for p in (pre, Preprocessor.load(tmp_path / "pre")):
        back = p.decode(p.encode(df))
        assert [str(back[c].dtype) for c in df] == [str(df[c].dtype) for c in df]
        assert [type(back[c].dtype) for c in df] == [type(df[c].dtype) for c in df]
        pd.testing.assert_frame_equal(back, df)


def test_bool_category_and_nullable_dtypes_round_trip():
    df = pd.DataFrame({
        "b": [True, False, True, True],
        "cat": pd.Categorical(["lo", "hi", None, "lo"], categories=["lo", "mid", "hi"], ordered=True),
        "ni": pd.array([1, None, 3, 4], dtype="Int64"),
        "nb": pd.array([True, None, False, True], dtype="boolean"),
        "s": pd.array(["a", None, "b", "a"], dtype="string"),
        "f32": np.array([0.5, 1.5, np.nan, 2.0], np.float32),
        "obj_int": pd.Series([1, 2, None, 2], dtype=object),
    })
    pre = Preprocessor(numeric="minmax").fit(df)
    assert pre.columns["cat"] == "categorical" and pre.columns["ni"] == "numeric"
    assert next(s for s in pre.specs if s.name == "cat").categories == ("lo", "mid", "hi")
    back = pre.decode(pre.encode(df))
    pd.testing.assert_frame_equal(back, df)
