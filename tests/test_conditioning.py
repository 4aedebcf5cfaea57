"""Conditioning on any columns and imputation: tabdiff_jax.conditioning and TabDDPM's inpainting.

The given cells must come back exactly, the sampling contract must hold with conditions, impute must
leave observed cells untouched; the inpainting sampler is checked against the exact conditional of a
correlated Gaussian through its Bayes-optimal denoiser, and (slow) a trained TabDDPM against a table
where one column is another plus noise.
"""

import os
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import nnx

from tabdiff_jax import conditioning
from tabdiff_jax.cli import main
from tabdiff_jax.errors import ConfigError, DataError

# the contract, not the weights: untrained; one chunk size (7) so that few programs compile
TINY = dict(steps=0, batch_size=64, num_timesteps=8, hidden_dims=(16, 16), dim_t=16, sample_chunk_size=7)


def _frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    w = rng.gamma(2.0, 3.0, n).round(1)
    w[rng.random(n) < 0.2] = np.nan  # a numeric column with missing values: a "w__missing" block
    return pd.DataFrame({
        "a": a.round(2),
        "b": rng.integers(0, 20, n).astype(np.int64),
        "c": rng.choice(["x", "y", "z"], n),
        "w": w,
        "label": np.where(a > 0, "q", "p"),
    })


@pytest.fixture(scope="module")
def ddpm():
    from tabdiff_jax import TabDDPM

    return TabDDPM(**TINY).fit(_frame(), target="label", progress=False)


def _stub(pre):
    """What the conditioning functions read of a model, around a bare preprocessor."""
    return types.SimpleNamespace(preprocessor=pre, _schema=lambda: (pre.specs, pre._indexes), columns=list(pre.columns))


# ------------------------------------------------------------------------------- Known
@pytest.mark.parametrize("numeric", ["quantile", "mode_specific"])
def test_known_from_condition_is_the_encoding_of_the_values(numeric):
    from tabdiff_jax.preprocess import Preprocessor

    df = _frame()
    pre = Preprocessor(numeric=numeric).fit(df, target="label")
    cond = {"a": 0.37, "c": "z", "w": 4.5, "label": "q"}
    known = conditioning.known_from_condition(_stub(pre), cond, 3)
    row = df.iloc[[0]].assign(**cond)  # the same values through the preprocessor's own path
    enc = pre.encode(row)
    layout = pre.layout
    assert known.num_rows == 3
    for i, name in enumerate(layout.numeric_names):
        assert known.numeric_mask[:, i].tolist() == [name in cond] * 3
        expect = np.asarray(enc.numeric)[0, i] if name in cond else 0.0
        np.testing.assert_array_equal(known.numeric[:, i], expect)
    for b, name in enumerate(layout.categorical_names):
        given = name.split("__")[0] in cond
        assert known.codes_mask[:, b].tolist() == [given] * 3, name
        assert np.all(known.codes[:, b] == (np.asarray(enc.categorical)[0, b] if given else 0)), name
    names = set(layout.categorical_names)
    assert "w__missing" in names and ("w__mode" in names) == (numeric == "mode_specific")
    assert known.codes[0, layout.categorical_names.index("w__missing")] == 0  # given: present


def test_known_from_frame_masks_values_and_row_slices():
    from tabdiff_jax.preprocess import Preprocessor

    df = _frame()
    pre = Preprocessor().fit(df, target="label")
    holes = df.copy()
    holes.loc[::3, "a"] = np.nan
    holes.loc[1::4, "c"] = None
    holes.loc[::5, "label"] = None
    known = conditioning.known_from_frame(_stub(pre), holes)
    enc = pre.encode(df)  # the complete table: the given cells must equal its encoding
    layout = pre.layout
    for i, name in enumerate(layout.numeric_names):
        given = holes[name].notna().to_numpy()
        assert np.array_equal(known.numeric_mask[:, i], given), name
        np.testing.assert_array_equal(known.numeric[given, i], np.asarray(enc.numeric)[given, i])
    for b, (name, role) in enumerate(zip(layout.categorical_names, layout.categorical_roles)):
        if role == "missing":  # a missing number is filled with a value: its block is given as "present"
            assert known.codes_mask[:, b].all() and not known.codes[:, b].any()
            continue
        given = holes[name].notna().to_numpy()
        assert np.array_equal(known.codes_mask[:, b], given), name
        assert np.array_equal(known.codes[given, b], np.asarray(enc.categorical)[given, b])
    part = conditioning.known_from_frame(_stub(pre), holes, 10, 25)
    for x, y in zip(vars(part).values(), vars(known.rows(10, 25)).values()):
        np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------------------- sampling
COND = {"a": 0.37, "b": 7, "c": "z", "w": 4.5, "label": "q"}


def test_given_cells_come_back_exactly_in_the_column_dtype(ddpm):
    free = ddpm.sample(40, seed=3)
    out = ddpm.sample(40, seed=3, condition=COND)
    assert list(out.columns) == list(free.columns) and (out.dtypes == free.dtypes).all()
    for column, value in COND.items():
        assert (out[column] == value).all(), column
    assert out.b.dtype == np.int64 and out["c"].tolist() == ["z"] * 40
    one = ddpm.sample(40, seed=3, condition={"b": 12})  # one numeric column; the others drawn
    assert (one.b == 12).all() and one.c.nunique() > 1
    # a condition on the target alone is TabDDPM's label condition, as before inpainting
    pd.testing.assert_frame_equal(ddpm.sample(40, seed=3, condition={"label": "q"}), ddpm.sample(40, seed=3, y="q"))


def test_sampling_contract_with_a_numeric_condition(ddpm, tmp_path):
    cond = {"a": -0.5, "c": "y"}
    a = ddpm.sample(30, seed=5, condition=cond, chunk_size=7)
    pd.testing.assert_frame_equal(a, ddpm.sample(30, seed=5, condition=cond, chunk_size=64))
    pd.testing.assert_frame_equal(a.iloc[:12], ddpm.sample(12, seed=5, condition=cond, chunk_size=7))
    streamed = pd.concat(list(ddpm.sample_batches(30, seed=5, condition=cond, rows_per_batch=8, chunk_size=7)))
    pd.testing.assert_frame_equal(streamed, a)
    ddpm.sample_to(tmp_path / "parts/", 30, seed=5, condition=cond, rows_per_part=8, chunk_size=7)  # a dataset
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "parts"), a, check_dtype=False)
    assert not a.equals(ddpm.sample(30, seed=6, condition=cond, chunk_size=7))


def test_inpainting_leaves_unconditioned_rows_alone(ddpm):
    """Rows with no given cell draw exactly the unconditional rows (the given cells' noise is a stream of
    its own), and the decoded given numbers are the given values before the base class overwrites them."""
    free = ddpm._sample_raw(0, 20, jax.random.key(2), chunk_size=7)
    known = conditioning.known_from_condition(ddpm, {"a": 1.25, "c": "x"}, 20)
    for field in ("numeric_mask", "codes_mask"):
        getattr(known, field)[::2] = False
    raw = ddpm._sample_raw(0, 20, jax.random.key(2), known=known, chunk_size=7)
    np.testing.assert_array_equal(raw[0][::2], free[0][::2])
    np.testing.assert_array_equal(raw[1][::2], free[1][::2])
    back = ddpm._raw_frame(*raw)
    assert (back.c[1::2] == "x").all() and np.allclose(back.a[1::2], 1.25, atol=0.02)


class GaussianOracle(nnx.Module):
    """The Bayes-optimal noise prediction for x_0 ~ N(0, S): eps* = sqrt(1 - abar) (abar S + (1 - abar) I)^-1 x_t."""

    def __init__(self, cfg, cov):
        self.cfg = cfg
        self.cov = nnx.Param(jnp.asarray(cov, jnp.float32))

    def __call__(self, x, t, y=None, *, dropout_key=None):
        abar = self.cfg.make_schedule().alpha_bar[t][0]
        (p, q), (_, r) = abar * self.cov[...] + (1 - abar) * jnp.eye(2)  # [[p, q], [q, r]], inverted by hand
        a, b = x[:, 0], x[:, 1]
        return jnp.sqrt(1 - abar) * jnp.stack([r * a - q * b, p * b - q * a], 1) / (p * r - q * q)


@pytest.mark.parametrize("num_sample_steps", [None, pytest.param(10, marks=pytest.mark.slow)])
def test_inpainting_draws_the_gaussian_conditional_with_an_oracle(num_sample_steps):
    """x ~ N(0, [[1, r], [r, 1]]), a given: b must follow N(r a, 1 - r^2). Replacement alone is biased
    (RePaint's point): measured mean of b 0.93 (ancestral) and 0.64 (10 DDIM steps) for the exact
    1.35 at r = 0.9, a = 1.5; with 10 resampling passes 1.32 and 1.26, std 0.44 and 0.36 (exact 0.44)."""
    from tabdiff_jax.diffusion import samplers
    from tabdiff_jax.diffusion.tabddpm import DiffusionConfig
    from tabdiff_jax.state import split_params

    r, a, n = 0.9, 1.5, 1000
    cfg = DiffusionConfig(num_numeric=2, num_timesteps=50)
    g, p = split_params(GaussianOracle(cfg, [[1.0, r], [r, 1.0]]))
    known = (np.tile([a, 0.0], (n, 1)), np.tile([True, False], (n, 1)), np.zeros((n, 0), np.int32),
             np.zeros((n, 0), bool))

    def draw(resample, given=known):
        return samplers.sample(p, g, cfg, jax.random.key(0), n, known=given, num_sample_steps=num_sample_steps,
                               chunk_size=n, resample=resample).x_num

    out = draw(10)
    assert np.all(out[:, 0] == np.float32(a))  # the given value, exactly
    b = out[:, 1]
    assert abs(b.mean() - r * a) < 0.15 and abs(b.std() - np.sqrt(1 - r * r)) < 0.15
    assert abs(draw(1)[:, 1].mean() - r * a) > 2 * abs(b.mean() - r * a)  # resampling is what makes it close
    nothing = tuple(np.zeros_like(m) if m.dtype == bool else m for m in known)  # no given cell: unconditional
    free = draw(1, nothing)[:, 1]  # N(0, 1) (10 DDIM steps: a std of 0.86)
    assert abs(free.mean()) < 0.1 and abs(free.std() - (1 if num_sample_steps is None else 0.86)) < 0.1


# ----------------------------------------------------------------------------- impute
def _holes(df, seed=1):
    rng = np.random.default_rng(seed)
    out = df.copy()
    for column, share in (("a", 0.3), ("b", 0.2), ("c", 0.25), ("w", 0.2), ("label", 0.2)):
        hit = rng.random(len(df)) < share
        out[column] = out[column].astype(object if column in ("c", "label") else float)
        out.loc[hit, column] = None if column in ("c", "label") else np.nan
    out.index = pd.RangeIndex(100, 100 + len(df))  # impute keeps the index
    return out


def test_impute_fills_every_missing_cell_and_keeps_the_others(ddpm):
    holes = _holes(_frame(60, seed=4))
    out = ddpm.impute(holes, seed=7)
    assert not out.isna().any().any() and out.index.equals(holes.index) and list(out.columns) == list(holes.columns)
    for column in holes.columns:
        seen = holes[column].notna().to_numpy()
        assert out[column].dtype == holes[column].dtype, column
        assert np.array_equal(out[column].to_numpy()[seen], holes[column].to_numpy()[seen]), column  # bit for bit
    assert set(out.c) <= {"x", "y", "z"} and set(out.label) <= {"p", "q"}
    assert (out.b == out.b.round()).all()
    # row i depends only on (seed, i) and its own observed cells
    pd.testing.assert_frame_equal(ddpm.impute(holes.iloc[:25], seed=7), out.iloc[:25])
    changed = holes.copy()
    changed.iloc[3, changed.columns.get_loc("c")] = "x" if holes.c.iloc[3] != "x" else "y"
    again = ddpm.impute(changed, seed=7)
    pd.testing.assert_frame_equal(again.drop(index=holes.index[3]), out.drop(index=holes.index[3]))
    assert not ddpm.impute(holes, seed=8).equals(out)
    complete = _frame(10).assign(w=1.5)  # nothing to fill: the same frame
    pd.testing.assert_frame_equal(ddpm.impute(complete), complete)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("condition, words", [
    ({"nope": 1}, "'nope' is not a column"),
    ({"c": "purple"}, "'purple' is not a value of column 'c'"),
    ({"a": np.nan}, "a missing value is not a condition"),
    ({"c": None}, "a missing value is not a condition"),
    ({"a": 99.0}, "outside the range the model was fitted on"),
    ({"b": 2.5}, "holds whole numbers"),
    ({"a": "abc"}, "is numeric; give a number"),
    ({}, "non-empty dict"),
])
def test_condition_errors_name_the_column_and_value(ddpm, condition, words):
    with pytest.raises(ConfigError, match=words):
        ddpm.sample(5, condition=condition)


def test_numeric_condition_and_impute_need_inpainting(ddpm):
    from tabdiff_jax import SMOTE

    smote = SMOTE().fit(_frame(), target="label")
    with pytest.raises(ConfigError, match=r"\['a'\] are numeric, not categorical.*inpainting: tabddpm, tabdiff"):
        smote.sample(5, condition={"a": 0.5})
    assert (smote.sample(5, condition={"label": "q"}).label == "q").all()  # categorical: as before
    with pytest.raises(ConfigError, match="smote model has no inpainting"):
        smote.impute(_holes(_frame(10)))
    with pytest.raises(DataError, match=r"lacks the model's column\(s\) \['w'\]"):
        ddpm.impute(_frame(10).drop(columns="w"))
    with pytest.raises(DataError, match=r"has column\(s\) \['extra'\]"):
        ddpm.impute(_frame(10).assign(extra=1))
    with pytest.raises(DataError, match="'purple'"):
        ddpm.impute(_frame(10).assign(c="purple"))
    with pytest.raises(ConfigError, match="impute does not take colour"):
        ddpm.impute(_frame(10), colour=1)


def test_a_categorical_column_with_modelled_missing_values_is_refused_by_impute():
    from tabdiff_jax.preprocess import Preprocessor

    df = _frame(100)
    df.loc[::7, "c"] = None  # "c" had missing values: missing is a category the model draws
    model = _stub(Preprocessor().fit(df))
    known = conditioning.known_from_frame(model, df.assign(c=df.c.fillna("x"), a=np.nan))  # other holes: fine
    assert not known.numeric_mask[:, 0].any() and known.codes_mask.all()
    with pytest.raises(DataError, match="column 'c' had missing values in training"):
        conditioning.known_from_frame(model, df)


def test_the_inpainting_models_are_the_ones_listed():
    from tabdiff_jax.models.base import MODEL_MODULES, get_model_class

    for name in conditioning.INPAINTING_MODELS:
        if name in MODEL_MODULES:
            assert get_model_class(name).supports_inpainting, name
    assert not get_model_class("smote").supports_inpainting


# --------------------------------------------------------------------------------- CLI
def test_cli_numeric_condition_and_impute(ddpm, tmp_path, capsys):
    run = ddpm.save(tmp_path / "run")
    out = tmp_path / "s.csv"
    assert main(["sample", str(run), "-n", "12", "-o", str(out), "--condition", "b=7", "--condition", "c=y",
                 "--condition", "a=-0.25", "--no-progress"]) == 0
    got = pd.read_csv(out)
    assert (got.b == 7).all() and (got.c == "y").all() and (got.a == -0.25).all() and len(got) == 12
    holes = _holes(_frame(30, seed=9))
    holes.to_csv(tmp_path / "in.csv", index=False)
    assert main(["impute", str(run), "-i", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv")]) == 0
    assert "filled" in capsys.readouterr().out
    filled, given = pd.read_csv(tmp_path / "out.csv"), pd.read_csv(tmp_path / "in.csv")
    assert not filled.isna().any().any()
    assert (filled[given.notna()].fillna(0) == given.fillna(0)).all().all()
    for argv, words in ((["sample", str(run), "-n", "3", "-o", str(tmp_path / "x.csv"), "--condition", "b=abc"],
                         "condition b='abc'"),
                        (["impute", str(run), "-i", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "y.csv")],
                         "no such file")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err and "Traceback" not in err
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "y.csv").exists()


# -------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_a_trained_tabddpm_conditions_on_a_number():
    """b = a + N(0, 0.3^2) on a = N(0, 1) (plus an unrelated category): sampled with a = 1.5, b must
    concentrate near 1.5, far closer than without the condition; over 3 fit seeds."""
    from tabdiff_jax import TabDDPM

    rng = np.random.default_rng(0)
    n = 3000
    a = rng.normal(size=n)
    df = pd.DataFrame({"a": a.round(3), "b": (a + rng.normal(scale=0.3, size=n)).round(3),
                       "c": rng.choice(["x", "y"], n)})
    for seed in range(3):
        t0 = time.perf_counter()
        model = TabDDPM(steps=1500, num_timesteps=50, hidden_dims=(128, 128), batch_size=256).fit(
            df, seed=seed, progress=False)
        cond = model.sample(1000, seed=seed, condition={"a": 1.5})
        free = model.sample(1000, seed=seed)
        err_cond, err_free = np.median(np.abs(cond.b - 1.5)), np.median(np.abs(free.b - 1.5))
        print(f"seed {seed}: median |b - 1.5| {err_cond:.3f} conditioned, {err_free:.3f} free "
              f"({time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f})")
        assert (cond.a == 1.5).all()
        assert err_cond < 0.5 and err_cond < 0.4 * err_free
