"""Periodic embeddings of the numbers (PLR, Gorishniy et al. 2022) in the diffusion MLP: the closed form
from the parameters, each feature's embedding depending on that feature only, the sampler's folded call
form equal to the plain forward pass, book-keeping clipping equal to vmap clipping, and TabDiff's
``numeric_embedding`` option (fit, sampling contract, save / load, private fit, bad options)."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_private_diffusion import assert_tabdiff_ghost_clipping_matches_vmap
from test_sampling_contract import _frame, assert_same_rows

from tabdiff_jax.diffusion import tabdiff as td
from tabdiff_jax.diffusion.denoiser import PeriodicEmbedding, TabDDPMDenoiser
from tabdiff_jax.errors import ConfigError

TINY = dict(steps=30, batch_size=64, num_sample_steps=4, hidden_dims=[32, 32], dim_t=16,
            numeric_embedding="periodic", embedding_frequencies=6, embedding_dim=5)


def test_the_embedding_is_the_closed_form_of_its_parameters_and_feature_wise():
    emb = PeriodicEmbedding(3, frequencies=4, scale=0.7, dim=5, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (6, 3))
    c = np.stack([np.asarray(layer.kernel[...])[0] for layer in emb.coefficients])  # [3, 4]
    w, b = np.asarray(emb.out.kernel[...]), np.asarray(emb.out.bias[...])
    v = 2 * math.pi * np.asarray(x)[:, :, None] * c[None]  # [6, 3, 4]
    expected = np.maximum(np.concatenate([np.cos(v), np.sin(v)], -1) @ w + b, 0.0).reshape(6, 15)
    np.testing.assert_allclose(np.asarray(emb(x)), expected, rtol=1e-5, atol=1e-5)
    # the coefficients start N(0, scale^2), not a Linear's uniform in +-1
    many = PeriodicEmbedding(40, frequencies=50, scale=0.7, rngs=nnx.Rngs(3))
    draws = np.concatenate([np.asarray(layer.kernel[...]).ravel() for layer in many.coefficients])
    assert abs(draws.std() - 0.7) < 0.05 and np.abs(draws).max() > 1.0
    # output chunk j (width 5) depends on input feature j only
    jac = np.asarray(jax.jacobian(lambda r: emb(r[None])[0])(x[0] + 0.1))  # [15, 3]
    for j in range(3):
        others = [i for i in range(3) if i != j]
        assert np.all(jac[5 * j: 5 * j + 5][:, others] == 0.0)
    assert np.abs(jac).sum() > 0
    with pytest.raises(ConfigError, match="scale"):
        PeriodicEmbedding(3, scale=0.0, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("hidden, dim_t", [((64, 32), 128), ((300, 32), 16)])  # folded / not folded
def test_the_samplers_call_form_equals_the_forward_pass(hidden, dim_t):
    net = TabDDPMDenoiser(10, 7, hidden_dims=hidden, dim_t=dim_t, rngs=nnx.Rngs(0),
                          numeric_embedding=dict(count=3, frequencies=8, dim=4))
    assert net.proj.in_features == 10 + 3 * 4
    x, t = jax.random.normal(jax.random.key(1), (5, 10)), jnp.float32(0.3)
    full = net(x, t[None])
    np.testing.assert_allclose(np.asarray(net.conditioned(None)(x, t)), np.asarray(full), rtol=1e-5, atol=1e-6)
    # the embedding reaches the output: zeroing its output layer changes the result
    net.embed_numbers.out.bias = nnx.Param(jnp.zeros_like(net.embed_numbers.out.bias[...]))
    net.embed_numbers.out.kernel = nnx.Param(jnp.zeros_like(net.embed_numbers.out.kernel[...]))
    assert float(jnp.abs(net(x, t[None]) - full).max()) > 1e-4
    with pytest.raises(ConfigError, match="count"):
        TabDDPMDenoiser(2, 2, numeric_embedding=dict(count=3), rngs=nnx.Rngs(0))


def test_bookkeeping_clipping_with_the_embedding_matches_per_example_vmap():
    config = td.TabDiffConfig(num_numeric=2, categorical_sizes=(3, 2))
    net = td.make_network(config, hidden_dims=(16, 16), dim_t=8, rngs=nnx.Rngs(0),
                          numeric_embedding=dict(frequencies=4, scale=1.0, dim=3))
    assert net.denoiser.embed_numbers is not None and net.denoiser.embed_numbers.count == 2
    assert_tabdiff_ghost_clipping_matches_vmap(net, config, rows=8, real=6, rtol_norms=1e-4, rtol_grads=1e-4)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from tabdiff_jax.models.tabdiff import TabDiff

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TabDiff(**TINY).fit(_frame(), target="label", progress=False, seed=1)
    folder = tmp_path_factory.mktemp("plr")
    model.save(folder)
    return model, folder


def test_estimator_sampling_contract_and_save_load_round_trip(fitted):
    from tabdiff_jax import load

    model, folder = fitted
    assert "embed_numbers" in model._params["denoiser"]
    large = model.sample(30, seed=1, chunk_size=64)
    assert_same_rows(model.sample(30, seed=1, chunk_size=7), large)
    assert_same_rows(model.sample(12, seed=1, chunk_size=7), large.iloc[:12].reset_index(drop=True))
    again = load(folder)
    assert again.settings["numeric_embedding"] == "periodic" and again.settings["embedding_dim"] == 5
    assert again.sample(30, seed=1, chunk_size=64).equals(large)


@pytest.mark.parametrize("options, name", [({"numeric_embedding": "linear"}, "numeric_embedding"),
                                           ({"numeric_embedding": "periodic", "frequency_scale": -1}, "frequency_scale"),
                                           ({"numeric_embedding": "periodic", "embedding_dim": 0}, "embedding_dim"),
                                           ({"numeric_embedding": "periodic", "backbone": "transformer"}, "numeric_embedding")])
def test_bad_embedding_options_are_refused_naming_the_option(options, name):
    from tabdiff_jax.models.tabdiff import TabDiff

    with pytest.raises(ConfigError, match=name):
        TabDiff(**options)


def test_a_private_fit_with_the_embedding_uses_bookkeeping_clipping_and_spends_its_budget():
    from tabdiff_jax.models.tabdiff import TabDiff

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TabDiff(**{**TINY, "steps": 3}, epsilon=5.0, delta=1e-3).fit(_frame(), target="label", progress=False,
                                                                              seed=0)
    assert model.fit_info["steps"] == 3 and 0 < model.fit_info["epsilon_spent"] <= 5.0
    assert len(model.sample(8, seed=0)) == 8
