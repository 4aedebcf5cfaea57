"""Exact column dependencies kept by construction: ``Preprocessor(derive=...)`` (preprocess.dependencies)."""

import numpy as np
import pandas as pd
import pytest

from tabdiff_jax.errors import ConfigError, DataError
from tabdiff_jax.preprocess import Preprocessor, dependencies

LEVELS = {"pre": 1, "school": 2, "college": 3, "bachelor": 4, "master": 5, "phd": 6}
REGION = {"paris": "north", "lille": "north", "nice": "south", "marseille": "south", "lyon": "east"}


def _table(n=400, seed=0):
    """``edu`` <-> ``edu_num`` (one-to-one), ``city`` -> ``region`` and ``city`` -> ``dist`` (many-to-one)."""
    rng = np.random.default_rng(seed)
    edu = rng.choice(list(LEVELS), n)
    city = rng.choice(list(REGION), n)
    dist = {"paris": 0.0, "lille": 225.5, "nice": 930.25, "marseille": 775.0, "lyon": 465.0}
    return pd.DataFrame({
        "age": rng.integers(18, 80, n),
        "edu": edu,
        "income": rng.normal(30, 5, n).round(2),
        "edu_num": np.array([LEVELS[e] for e in edu], np.int64),
        "city": city,
        "region": [REGION[c] for c in city],
        "dist": [dist[c] for c in city],
        "label": rng.choice(["yes", "no"], n),
    })


def _derived(pre):
    return {d.column: d for d in pre.derived}


def test_planted_dependencies_are_found_removed_and_rebuilt_exactly():
    df = _table()
    pre = Preprocessor(derive="auto").fit(df, target="label")
    got = _derived(pre)
    assert set(got) == {"edu_num", "region", "dist"}
    assert got["edu_num"].key == "edu" and got["edu_num"].one_to_one  # the categorical column stays the key
    assert got["region"].key == got["dist"].key == "city" and not got["region"].one_to_one
    names = set(pre.layout.numeric_names) | set(pre.layout.categorical_names)
    assert names.isdisjoint(got) and {"edu", "city", "age", "income", "label"} <= names
    back = pre.decode(pre.encode(df))
    pd.testing.assert_frame_equal(back[list(got)], df[list(got)])
    assert list(back.columns) == list(df.columns) and back.dtypes.equals(df.dtypes)
    assert "edu_num" in pre.inferred["columns"] and "'edu'" in pre.inferred["columns"]["edu_num"]
    # without the option nothing changes: every column is modelled
    plain = Preprocessor().fit(df, target="label")
    assert plain.derived == () and "edu_num" in plain.layout.numeric_names


def test_decoded_rows_follow_the_key_whatever_the_model_draws():
    df = _table()
    pre = Preprocessor(derive="auto").fit(df, target="label")
    rng = np.random.default_rng(1)
    enc = pre.encode(df)
    codes = np.asarray(enc.categorical).copy()
    for j, size in enumerate(pre.layout.categorical_sizes):  # arbitrary codes, as a model could draw
        codes[:, j] = rng.integers(0, size, len(df))
    out = pre.decode(type(enc)(enc.numeric, codes, enc.layout))
    assert (out["edu_num"] == out["edu"].map(LEVELS)).all()
    assert (out["region"] == out["city"].map(REGION)).all()


def test_chain_is_derived_from_the_kept_root():
    rng = np.random.default_rng(2)
    x = rng.choice([f"x{i}" for i in range(12)], 500)
    y = np.array([f"y{int(v[1:]) % 4}" for v in x])
    z = np.array([int(v[1:]) * 10 for v in y], np.int64)
    df = pd.DataFrame({"x": x, "y": y, "z": z, "noise": rng.normal(size=500)})
    auto = _derived(Preprocessor(derive="auto").fit(df))
    assert set(auto) == {"y", "z"} and auto["y"].key == auto["z"].key == "x"  # x determines both
    given = Preprocessor(derive=[("x", "y"), ("y", "z")]).fit(df)
    chain = _derived(given)
    assert chain["z"].via == "y" and chain["z"].key == "x"  # z read through y, stored from the root
    pd.testing.assert_frame_equal(given.decode(given.encode(df)), df, check_exact=False, atol=1e-4)


def test_accidental_dependency_on_small_groups_is_not_taken():
    # 29 single-row keys and one key of 31 rows; y is 0 but in one single-row key's row, so the key
    # "determines" y, as it would after about half the shuffles of y.
    key = np.array([f"k{i}" for i in range(29)] + ["big"] * 31)
    y = np.zeros(60, np.int64)
    y[3] = 1
    df = pd.DataFrame({"key": key, "y": y, "v": np.arange(60.0)})
    specs = Preprocessor().fit(df).specs
    for seed in range(5):
        assert dependencies.find(df, specs, None, "auto", seed) == ()
        assert Preprocessor(derive="auto", seed=seed).fit(df).derived == ()
    taken = dependencies.find(df, specs, None, "auto", 0, null_shuffles=0)  # the test is what rejects it
    assert [d.column for d in taken] == ["y"]


def test_target_is_never_derived_but_may_be_a_key():
    df = _table()
    df["label"] = df["city"].map(REGION).eq("north").map({True: "yes", False: "no"})  # city -> label
    df["flag"] = df["label"].eq("yes").astype(np.int64)  # label <-> flag
    pre = Preprocessor(derive="auto").fit(df, target="label")
    got = _derived(pre)
    assert "label" not in got and "label" in pre.layout.categorical_names
    assert got["flag"].key in ("city", "label")
    with pytest.raises(ConfigError, match="'label' cannot be derived"):
        Preprocessor(derive=[("city", "label")]).fit(df, target="label")


def test_missing_key_maps_to_its_observed_value():
    df = _table()
    rows = np.arange(0, len(df), 7)
    df.loc[rows, "city"] = np.nan  # missing city: region missing too, dist -1
    df.loc[rows, "region"] = None
    df.loc[rows, "dist"] = -1.0
    pre = Preprocessor(derive="auto").fit(df, target="label")
    assert {"region", "dist"} <= set(_derived(pre))
    back = pre.decode(pre.encode(df))
    pd.testing.assert_frame_equal(back[["city", "region", "dist"]], df[["city", "region", "dist"]])
    assert back["region"].isna().sum() == len(rows) and (back.loc[rows, "dist"] == -1.0).all()


def test_save_and_load_keep_the_mapping(tmp_path):
    df = _table()
    pre = Preprocessor(derive="auto").fit(df, target="label")
    pre.save(tmp_path)
    again = Preprocessor.load(tmp_path)
    assert again.derived == pre.derived and again.derive == "auto" and again.layout == pre.layout
    pd.testing.assert_frame_equal(again.decode(pre.encode(df)), pre.decode(pre.encode(df)))


def test_bad_options_and_pairs_are_refused():
    with pytest.raises(ConfigError, match="derive"):
        Preprocessor(derive="yes")
    df = _table()
    with pytest.raises(DataError, match=r"\('city', 'age'\).*disagree"):
        Preprocessor(derive=[("city", "age")]).fit(df, target="label")
    with pytest.raises(ConfigError, match="'income' cannot be a key"):
        Preprocessor(derive=[("income", "edu")]).fit(df, target="label")
    with pytest.raises(DataError, match="'nope'"):
        Preprocessor(derive=[("city", "nope")]).fit(df, target="label")


def test_conditions_and_imputation_go_through_the_key():
    from types import SimpleNamespace

    df = _table()
    model = SimpleNamespace(preprocessor=Preprocessor(derive="auto").fit(df, target="label"))
    assert dependencies.key_condition(model, {"edu_num": 3, "label": "yes"}) == {"edu": "college", "label": "yes"}
    assert dependencies.key_condition(model, {"edu_num": "3"}) == {"edu": "college"}  # text from the CLI
    assert dependencies.key_condition(model, {"dist": 930.25}) == {"city": "nice"}
    with pytest.raises(ConfigError, match=r"\['lille', 'paris'\] all give 'north'; condition on 'city'"):
        dependencies.key_condition(model, {"region": "north"})
    with pytest.raises(ConfigError, match="none of its values gives 7"):
        dependencies.key_condition(model, {"edu_num": 7})
    with pytest.raises(ConfigError, match="needs edu='college'"):
        dependencies.key_condition(model, {"edu_num": 3, "edu": "phd"})
    gaps = df.head(6).copy()
    gaps.loc[[0, 1, 2], "edu"] = np.nan
    gaps.loc[[2], "edu_num"] = np.nan
    gaps.loc[[0, 1], "city"] = np.nan
    filled = dependencies.fill_keys(model, gaps)
    assert filled["edu"].tolist()[:2] == df["edu"].tolist()[:2] and pd.isna(filled.loc[2, "edu"])
    assert filled["city"].tolist()[:2] == df["city"].tolist()[:2]  # dist is one-to-one with city
    assert gaps["edu"].isna().sum() == 3  # the input is not changed


class _Fake:
    model_name = "fake"

    def __init__(self, epsilon, preprocessor=None):
        self.settings = {"epsilon": epsilon}
        self.config = {"preprocessor": preprocessor} if preprocessor else {}


def test_private_models_ignore_a_default_and_refuse_a_request():
    default = {"numeric": "quantile", "derive": "auto"}  # a model's default (TabDiff's)
    assert dependencies.model_options(_Fake(None), default) == default
    assert dependencies.model_options(_Fake(1.0), default)["derive"] is None
    with pytest.raises(ConfigError, match="private"):
        dependencies.model_options(_Fake(1.0, {"derive": "auto"}), {**default})
    from tabdiff_jax.models.tabddpm import TabDDPM

    with pytest.raises(ConfigError, match="derive='auto'.*private"):
        TabDDPM(epsilon=1.0, steps=2, preprocessor={"derive": "auto"}).fit(_table(), target="label", progress=False)


@pytest.mark.slow
def test_tabddpm_with_derive_keeps_the_relations_in_every_sampled_row():
    from tabdiff_jax.evaluate.columns import prepare
    from tabdiff_jax.evaluate.relations import functional_dependencies, kept_share
    from tabdiff_jax.models.tabddpm import TabDDPM

    df = _table()
    model = TabDDPM(steps=20, batch_size=64, num_timesteps=10, hidden_dims=(16, 16), dim_t=8,
                    preprocessor={"derive": "auto"}).fit(df, target="label", progress=False)
    out = model.sample(300, seed=0)
    assert list(out.columns) == list(df.columns) and out.dtypes.equals(df.dtypes)
    columns, tables = prepare(df, {"synthetic": out})
    real, synthetic = tables["real"], tables["synthetic"]
    rels = {tuple(r["columns"]): r for r in functional_dependencies(real, columns)}  # the evaluation's own search
    for pair in (("edu", "edu_num"), ("city", "region"), ("city", "dist")):
        assert kept_share(rels[pair], real, synthetic)[0] == 1.0
    given = model.sample(20, seed=1, condition={"edu_num": 3})  # conditioned through the key
    assert (given["edu"] == "college").all() and (given["edu_num"] == 3).all()
    gaps = df.head(50).copy()
    gaps.loc[:9, "edu"] = np.nan  # edu_num observed: the drawn edu agrees with it
    gaps.loc[10:19, "edu_num"] = np.nan  # edu observed: edu_num follows it
    filled = model.impute(gaps, seed=0)
    assert (filled["edu"].map(LEVELS) == filled["edu_num"]).all() and filled.notna().all().all()


def test_cli_derive_flag_reaches_the_preprocessor(tmp_path, capsys):
    from tabdiff_jax.cli import main

    path = tmp_path / "t.csv"
    _table(n=120).to_csv(path, index=False)
    code = main(["fit", str(path), "--model", "tabddpm", "--epsilon", "1", "--target", "label", "--derive", "auto",
                 "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "derive='auto'" in err and "private" in err and not (tmp_path / "run" / "model.json").exists()
