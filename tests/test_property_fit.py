"""Property: random small tables with odd dtypes, missing values and odd names either fit and sample
(same columns, same dtypes) or raise a :class:`~tabdiff_jax.errors.TabdiffError`; nothing else escapes.

The preprocessor (shared by every model but SMOTE) and SMOTE see every example (25); TabDDPM and a
GAN, whose every fit compiles its own programs (seconds each), see 3 examples by default and 15
with ``-m slow``, with a handful of training steps.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tabdiff_jax.errors import TabdiffError
from tabdiff_jax.preprocess import Preprocessor

KINDS = ("int", "float", "bool", "text", "category", "datetime", "Int64", "iso", "mixed", "whole", "objects")
NAMES = st.text(alphabet=st.sampled_from(list("ab Z9_é中- .")), min_size=1, max_size=6)


def _column(kind, n, rng, missing):
    if kind == "int":
        values = pd.Series(rng.integers(-5, 50, n))
    elif kind == "float":
        values = pd.Series(rng.normal(10, 3, n))
    elif kind == "whole":
        values = pd.Series(rng.integers(0, 9, n).astype(float))
    elif kind == "bool":
        values = pd.Series(rng.random(n) < 0.3)
    elif kind == "text":
        values = pd.Series(rng.choice(["a", "b b", "ü", "12"], n), dtype=object)
    elif kind == "category":
        values = pd.Series(pd.Categorical(rng.choice(["lo", "hi"], n), categories=["lo", "mid", "hi"], ordered=True))
    elif kind == "datetime":
        values = pd.Series(pd.Timestamp("2020-02-28") + pd.to_timedelta(rng.integers(0, 400, n), unit="h"))
    elif kind == "Int64":
        values = pd.Series(rng.integers(0, 4, n), dtype="Int64")
    elif kind == "iso":
        values = pd.Series((pd.Timestamp("1999-12-31") + pd.to_timedelta(rng.integers(0, 90, n), unit="D"))
                           .strftime("%Y-%m-%d"), dtype=object)
    elif kind == "objects":  # Python objects of several types in one column
        values = pd.Series([[1, "a", 2.5, True][v] for v in rng.integers(0, 4, n)], dtype=object)
    else:  # mixed numbers and text
        values = pd.Series([str(v) if v % 3 else f"n{v}" for v in rng.integers(0, 30, n)], dtype=object)
    if missing and kind not in ("int", "bool"):
        values = values.mask(pd.Series(rng.random(n) < 0.2))
    return values


@st.composite
def tables(draw):
    n = draw(st.integers(15, 60))
    names = draw(st.lists(NAMES, min_size=1, max_size=5, unique=True))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    df = pd.DataFrame({name: _column(draw(st.sampled_from(KINDS)), n, rng, draw(st.booleans())) for name in names})
    target = draw(st.none() | st.sampled_from(names))
    return df, target


def _fit_and_sample(make, df, target):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = make().fit(df, target=target, progress=False, seed=0)
            out = model.sample(12, seed=1)
    except TabdiffError:
        return
    assert list(out.columns) == list(df.columns) and len(out) == 12
    assert out.dtypes.equals(df.dtypes), (df.dtypes, out.dtypes)


def _smote():
    from tabdiff_jax.models.smote import SMOTE

    return SMOTE(k_neighbors=3)


def _tabddpm():
    from tabdiff_jax.models.tabddpm import TabDDPM

    return TabDDPM(steps=2, batch_size=16, num_timesteps=10, hidden_dims=(16,), dim_t=8)


def _gan():
    from tabdiff_jax.models.gan import GAN

    return GAN(epochs=1, batch_size=16, generator_dims=(16,), critic_dims=(16,), noise_dim=4)


CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large]


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=CHECKS)
@given(tables())
def test_preprocessor_and_smote_raise_only_tabdiff_errors(table):
    df, target = table
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pre = Preprocessor().fit(df, target=target)
        back = pre.decode(pre.encode(df))
        assert list(back.columns) == list(df.columns) and back.dtypes.equals(df.dtypes), (df.dtypes, back.dtypes)
    except TabdiffError:
        pass
    _fit_and_sample(_smote, df, target)


@pytest.mark.parametrize("examples", [3, pytest.param(15, marks=pytest.mark.slow)])
@pytest.mark.parametrize("make", [_tabddpm, _gan], ids=["tabddpm", "gan"])
def test_models_raise_only_tabdiff_errors(make, examples):
    @settings(max_examples=examples, deadline=None, derandomize=True, suppress_health_check=CHECKS)
    @given(tables())
    def check(table):
        _fit_and_sample(make, *table)

    check()
