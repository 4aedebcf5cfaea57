"""TabDiff's classifier-free guidance: ``cond_prob`` (training with the target given clean in some rows)
and ``guidance`` (the sampler's conditional / unconditional combination), defaults unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import nnx

from tabdiff_jax.blocks import block_log_softmax, onehot
from tabdiff_jax.diffusion import tabdiff as td
from tabdiff_jax.diffusion import tabdiff_sampler as tds
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.models.base import load
from tabdiff_jax.models.tabdiff import TabDiff
from tabdiff_jax.state import split_params

TINY = dict(steps=6, batch_size=32, hidden_dims=(16, 16), dim_t=8, num_sample_steps=4, log_every=3)


def _toy(n=400, seed=0):
    """Two classes; x ~ N(-2, 1) in class a, N(+2, 1) in class b; c independent."""
    rng = np.random.default_rng(seed)
    label = rng.choice(["a", "b"], size=n)
    x = rng.normal(size=n) + np.where(label == "b", 2.0, -2.0)
    return pd.DataFrame({"x": x, "c": rng.choice(["u", "v", "w"], size=n), "label": label})


def _net(config):
    return td.make_network(config, hidden_dims=(16, 16), dim_t=8, rngs=nnx.Rngs(0))


def _data(n, sizes, seed=0):
    rng = np.random.default_rng(seed)
    x_num = jnp.asarray(rng.normal(size=(n, 1)), jnp.float32)
    x_cat = jnp.asarray(np.stack([rng.integers(0, k, n) for k in sizes], 1), jnp.int32)
    return x_num, x_cat


# ------------------------------------------------------------------------------------------ options
def test_options_are_validated():
    for bad in (dict(cond_prob=1.0), dict(cond_prob=-0.1), dict(cond_prob="x"), dict(guidance=-1.0),
                dict(guidance=float("nan"))):
        with pytest.raises(ConfigError):
            TabDiff(**bad)
    with pytest.raises(ConfigError, match="cond_prob"):
        td.TabDiffConfig(num_numeric=1, categorical_sizes=(2,), guided_block=0, cond_prob=1.0)
    with pytest.raises(ConfigError, match="guided_block"):
        td.TabDiffConfig(num_numeric=1, categorical_sizes=(2,), guided_block=1)


# ----------------------------------------------------------------------------------- (a) defaults
def test_cond_prob_zero_is_the_unchanged_loss():
    plain = td.TabDiffConfig(num_numeric=1, categorical_sizes=(3, 2))
    off = td.TabDiffConfig(num_numeric=1, categorical_sizes=(3, 2), guided_block=1, cond_prob=0.0)
    x_num, x_cat = _data(32, (3, 2))
    net = _net(plain)
    keys = jax.random.split(jax.random.key(3), 32)
    a = td.row_losses(net, x_num, x_cat, keys, plain, with_terms=True)
    b = td.row_losses(net, x_num, x_cat, keys, off, with_terms=True)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(u, v)


@pytest.mark.slow  # 15-40 s on 2 cores; the default run keeps the cheaper checks of this file
def test_default_options_reproduce_todays_rows_exactly():
    df = _toy(200)
    base = TabDiff(**TINY).fit(df, target="label", seed=0, progress=False)
    same = TabDiff(**TINY, cond_prob=0.0, guidance=0.0).fit(df, target="label", seed=0, progress=False)
    assert base._config.guided_block == base._layout.target_categorical_index and base._config.cond_prob == 0.0
    for kw in (dict(), dict(condition={"label": "b"}), dict(condition={"c": "u"})):
        pd.testing.assert_frame_equal(base.sample(50, seed=1, **kw), same.sample(50, seed=1, **kw))
    # guidance with no given target is the plain sampler (no second call)
    pd.testing.assert_frame_equal(base.sample(50, seed=1, guidance=3.0), base.sample(50, seed=1))
    pd.testing.assert_frame_equal(base.sample(50, seed=1, condition={"c": "u"}, guidance=3.0),
                                  base.sample(50, seed=1, condition={"c": "u"}))
    assert not base.sample(50, seed=1, condition={"label": "b"}, guidance=3.0).equals(
        base.sample(50, seed=1, condition={"label": "b"}))


# ------------------------------------------------------------------------------------ (b) training
@pytest.mark.slow  # 15-40 s on 2 cores; the default run keeps the cheaper checks of this file
def test_a_given_target_is_never_masked_and_adds_no_loss(monkeypatch):
    config = td.TabDiffConfig(num_numeric=1, categorical_sizes=(3, 2), guided_block=1, cond_prob=0.5)
    x_num, x_cat = _data(64, (3, 2), seed=1)
    net = _net(config)
    keys = jax.random.split(jax.random.key(5), 64)
    seen = {}
    real = td.denoise

    def spy(net_, config_, x_num_t, cat_in, *args, **kwargs):
        seen["cat_in"] = np.asarray(cat_in)
        return real(net_, config_, x_num_t, cat_in, *args, **kwargs)

    monkeypatch.setattr(td, "denoise", spy)
    td.row_losses(net, x_num, x_cat, keys, config, times=jnp.full((64,), 0.999))  # nearly everything masked
    given = np.asarray(jax.vmap(lambda k: td._row_given(config, k))(keys))
    assert 10 < given.sum() < 54
    target_in = seen["cat_in"][:, 4:7]  # block 1: two classes and the mask
    np.testing.assert_array_equal(target_in[given], np.asarray(onehot(x_cat[:, 1:2], (3,)))[given])
    assert target_in[~given, 2].mean() > 0.9  # the other rows diffuse it as before
    monkeypatch.undo()
    # one categorical block (the target), every row given: the categorical loss is zero, the numbers'
    # is finite; per-example losses (DP-SGD's form) equal the batch's rows
    only = td.TabDiffConfig(num_numeric=1, categorical_sizes=(2,), guided_block=0, cond_prob=0.999999)
    net1 = _net(only)
    xn, xc = _data(64, (2,), seed=2)
    loss, (ln, lc) = td.row_losses(net1, xn, xc, keys, only, with_terms=True)
    np.testing.assert_array_equal(lc, 0.0)
    assert np.all(np.isfinite(ln)) and np.all(ln > 0)
    free = td.TabDiffConfig(num_numeric=1, categorical_sizes=(2,))
    assert float(jnp.mean(td.row_losses(net1, xn, xc, keys, free, with_terms=True)[1][1])) > 0
    g, p = split_params(net)
    rows = td.dpsgd_loss_fn(config)(net, td.TableBatch(x_num[:6], x_cat[:6]), keys[:6])
    single = [td.per_example_loss(p, g, config, (x_num[i], x_cat[i]), keys[i]) for i in range(6)]
    np.testing.assert_allclose(rows, single, rtol=2e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ (c) combination
def test_guide_is_the_closed_form_and_w_zero_is_the_conditional_call():
    sizes = (3, 2)
    rng = np.random.default_rng(0)
    lc, lu = (jnp.asarray(rng.normal(size=(5, 5)) * 3, jnp.float32) for _ in range(2))
    dc, du = (jnp.asarray(rng.normal(size=(5, 2)), jnp.float32) for _ in range(2))
    w = 2.0
    d, logp = tds.guide(dc, lc, du, lu, w, sizes)
    np.testing.assert_allclose(d, 3.0 * dc - 2.0 * du, rtol=1e-6)
    for o, k in ((0, 3), (3, 2)):
        a = jax.nn.log_softmax(lc[:, o:o + k]); b = jax.nn.log_softmax(lu[:, o:o + k])
        np.testing.assert_allclose(logp[:, o:o + k], jax.nn.log_softmax((1 + w) * a - w * b), atol=1e-5)
        np.testing.assert_allclose(np.exp(logp[:, o:o + k]).sum(1), 1.0, rtol=1e-5)
    d0, l0 = tds.guide(dc, lc, du, lu, 0.0, sizes)
    assert d0 is dc and l0 is lc
    rows = jnp.asarray([True, False, True, False, False])
    dr, lr = tds.guide(dc, lc, du, lu, w, sizes, rows)
    np.testing.assert_array_equal(dr[1], dc[1]); np.testing.assert_array_equal(lr[3], lc[3])
    np.testing.assert_array_equal(dr[0], d[0]); np.testing.assert_array_equal(lr[2], logp[2])
    np.testing.assert_allclose(block_log_softmax(lr, sizes)[0], logp[0], atol=1e-6)


# -------------------------------------------------------------------------------------- (d) effect
@pytest.fixture(scope="module")
def trained():
    return TabDiff(steps=300, batch_size=128, hidden_dims=(32, 32), dim_t=16, num_sample_steps=12, log_every=100,
                   cond_prob=0.5, ema_decay=None).fit(_toy(1000), target="label", seed=0, progress=False)


def test_guidance_pulls_the_class_conditional_mean_towards_the_class(trained):
    means = {}
    for w in (0.0, 2.0):
        rows = trained.sample(1000, seed=7, condition={"label": "b"}, guidance=w)
        assert (rows["label"] == "b").all()
        means[w] = float(rows["x"].mean())
    # measured over fit seeds 0-2 and sample seeds 7-8: w = 0 gives 1.54-1.71 (under-conditioned),
    # w = 2 gives 3.06-3.51 (past +2, as guidance sharpens): a margin of 1.4 or more
    assert means[2.0] > means[0.0] + 0.5, means
    assert means[0.0] > 0.5, means


# ------------------------------------------------------------------------------------ (e) contract
@pytest.mark.slow  # 15-40 s on 2 cores; the default run keeps the cheaper checks of this file
def test_guided_rows_depend_on_seed_and_index_only_and_survive_save_and_load(tmp_path):
    model = TabDiff(**TINY, cond_prob=0.5, guidance=2.0).fit(_toy(200), target="label", seed=0, progress=False)
    cond = {"label": "b"}
    big = model.sample(90, seed=3, condition=cond)
    head = model.sample(30, seed=3, condition=cond)
    pd.testing.assert_frame_equal(big.iloc[:30].reset_index(drop=True), head.reset_index(drop=True))
    pd.testing.assert_frame_equal(model.sample(30, seed=3, condition=cond, chunk_size=16), head)
    assert not head.equals(model.sample(30, seed=3, condition=cond, guidance=0.0))
    df = _toy(40, seed=5)
    df.loc[::2, "label"] = None  # imputation: guided rows (target observed) next to unguided ones
    df.loc[1::2, "x"] = None
    filled = model.impute(df, seed=1)
    pd.testing.assert_frame_equal(model.impute(df.iloc[:20], seed=1), filled.iloc[:20])
    model.save(tmp_path / "m")
    again = load(tmp_path / "m")
    assert again.settings["cond_prob"] == 0.5 and again.settings["guidance"] == 2.0
    assert again._config == model._config
    pd.testing.assert_frame_equal(again.sample(30, seed=3, condition=cond), head)


def test_plain_sampling_draws_the_class_from_the_training_frequencies_when_guided():
    """Non-private, cond_prob > 0: plain sampling draws each row's class from the training frequencies
    (row-keyed) and guides the rest on it; with cond_prob = 0 no prior is kept (today's joint sampling)."""
    df = _toy(600, seed=3)
    df.loc[:419, "label"] = "a"  # 70% / 30% whatever the draw: a prior far from the tiny model's own
    df.loc[420:, "label"] = "b"
    model = TabDiff(**{**TINY, "cond_prob": 0.5, "guidance": 1.0}).fit(df, target="label", progress=False)
    np.testing.assert_allclose(model._class_probs, [0.7, 0.3])
    rows = model.sample(3000, seed=2)
    assert abs((rows["label"] == "b").mean() - 0.3) < 0.03  # binomial sd 0.008
    assert TabDiff(**TINY).fit(df, target="label", progress=False)._class_probs is None
