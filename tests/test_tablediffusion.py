"""TableDiffusion: the private step on its network, and the estimator's privacy record."""

import json
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import nnx

from tabdiff_jax.diffusion.schedules import tablediffusion_betas
from tabdiff_jax.diffusion.tablediffusion import (
    TableDiffusionNet,
    make_loss,
    make_sampler,
)
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.models.base import load
from tabdiff_jax.models.tablediffusion import TableDiffusion
from tabdiff_jax.privacy import clipped_grad_sum
from tabdiff_jax.privacy.preprocessing import PrivacyWarning
from tabdiff_jax.sampling import row_keys


def _table(n=300, seed=0):
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], size=n, p=[0.5, 0.3, 0.2])
    size = rng.normal(10, 2, size=n) + (colour == "red") * 5
    return pd.DataFrame({"size": size.round(2), "count": rng.integers(0, 20, size=n), "colour": colour,
                         "flag": rng.choice(["yes", "no"], size=n)})


def test_loss_averages_all_levels_and_ghost_matches_vmap_on_the_network():
    d, b = 6, 8
    net = TableDiffusionNet(d + 1, d, (16, 16), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(net, nnx.Param)
    x = jax.random.normal(jax.random.key(0), (b, d))
    keys = jax.random.split(jax.random.key(1), b)
    mask = jnp.arange(b) < 6
    loss = make_loss(4)
    # per-example loss by hand: mean over the 4 levels of the eps-MSE
    scales = np.sqrt(tablediffusion_betas(4))
    model = nnx.merge(graphdef, params)
    eps = jnp.stack([jax.random.normal(keys[i], (4, d)) for i in range(b)])  # row i's noise from keys[i]
    xt = x[:, None, :] + jnp.asarray(scales, jnp.float32)[None, :, None] * eps
    level = jnp.broadcast_to(jnp.asarray(scales, jnp.float32)[None, :, None], (b, 4, 1))
    manual = np.mean((np.asarray(model(jnp.concatenate([xt, level], -1))) - np.asarray(eps)) ** 2, axis=(1, 2))
    np.testing.assert_allclose(np.asarray(loss(model, x, keys)), manual, rtol=1e-5)
    f = jax.jit(lambda p: [clipped_grad_sum(loss, p, x, keys, mask, l2_clip=0.5, clipping=m, graphdef=graphdef)
                           for m in ("ghost", "vmap")])
    (gs, gst, _), (vs, vst, _) = f(params)
    np.testing.assert_allclose(np.asarray(gst.norms), np.asarray(vst.norms), rtol=1e-5, atol=1e-6)
    for a, c in zip(jax.tree.leaves(gs), jax.tree.leaves(vs)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-5, atol=1e-5)


def test_sampler_shape_and_determinism():
    net = TableDiffusionNet(5, 4, (8,), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(net, nnx.Param)
    sample = jax.jit(make_sampler(graphdef, 3, 4))
    keys = lambda seed, n: row_keys(jax.random.key(seed), 0, n)
    a, b, c = sample(params, keys(0, 7)), sample(params, keys(0, 7)), sample(params, keys(1, 7))
    assert a.shape == (7, 4) and np.all(np.isfinite(np.asarray(a)))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    # row i depends only on its key: the first 3 of 7 rows are the 3 rows of a shorter call
    np.testing.assert_allclose(np.asarray(sample(params, keys(0, 3))), np.asarray(a)[:3], rtol=1e-5, atol=1e-6)


def test_private_fit_records_privacy_warns_and_round_trips(tmp_path):
    df = _table()
    model = TableDiffusion(epsilon=1.0, delta=1e-5, steps=6, batch_size=64, hidden_dims=(16, 16), num_timesteps=3)
    with pytest.warns(PrivacyWarning, match="size") as record:
        model.fit(df, target="flag", progress=False, run_dir=tmp_path / "run")
    assert any("colour" in str(w.message) for w in record)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    for key in ("epsilon", "delta", "noise_multiplier", "sampling_rate", "steps", "epsilon_spent"):
        assert key in info, key
    assert info["epsilon"] == 1.0 and info["delta"] == 1e-5 and info["steps"] == 6
    assert 0.9 < info["epsilon_spent"] <= 1.0
    assert info["sampling_rate"] == pytest.approx(64 / 300)
    assert info["noise_multiplier"] > 0.5 and info["truncated_steps"] == 0
    assert info["accountant_delta"] + info["truncation_delta"] == pytest.approx(1e-5)
    assert set(info["preprocessing"]["data_dependent"]) >= {"size", "colour", "flag"}
    assert info["preprocessing"]["private"] is False
    out = model.sample(50, seed=3)
    assert list(out.columns) == list(df.columns) and len(out) == 50
    assert set(out["colour"]) <= {"red", "green", "blue"}
    assert out["count"].dtype == df["count"].dtype
    again = load(tmp_path / "run").sample(50, seed=3)
    pd.testing.assert_frame_equal(out, again)


def test_public_bounds_and_categories_make_preprocessing_private():
    df = _table(200, seed=1)
    model = TableDiffusion(epsilon=2.0, steps=3, batch_size=50, hidden_dims=(8,), num_timesteps=3, clipping="vmap",
                           preprocessor={"numeric": "minmax"})  # quantiles would be learned from the data
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyWarning)
        model.fit(df, progress=False, public_bounds={"size": (0.0, 30.0), "count": (0, 20)},
                  public_categories={"colour": ["red", "green", "blue"], "flag": ["yes", "no"]})
    assert model.fit_info["preprocessing"]["private"] is True
    assert model.fit_info["clipping"] == "vmap" and model.fit_info["epsilon_spent"] <= 2.0
    out = model.sample(20)
    assert out["size"].between(0.0, 30.0).all()


def test_nonprivate_mode_and_bad_options():
    model = TableDiffusion(epsilon=None, steps=2, batch_size=32, hidden_dims=(8,), num_timesteps=3)
    model.fit(_table(100), progress=False)
    assert model.fit_info["private"] is False and model.fit_info["epsilon"] is None
    assert model.fit_info["steps"] == 2 and math.isfinite(model.fit_info["final_loss"])
    for bad in (dict(epsilon=0.0), dict(epsilon=-1), dict(delta=1.5), dict(clipping="opacus"), dict(num_timesteps=0),
                dict(batch_size=0), dict(learning_rate=1e-3)):
        with pytest.raises(ConfigError):
            TableDiffusion(**bad)
    with pytest.raises(ConfigError, match="delta"):  # delta >= 1/n for a 100-row table
        TableDiffusion(epsilon=1.0, delta=0.02, steps=1).fit(_table(100), progress=False)
