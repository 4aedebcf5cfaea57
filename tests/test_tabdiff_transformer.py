"""TabDiff's column-tokenised transformer backbone (``backbone="transformer"``): shapes and the sampler's
call form, which inputs each output column depends on (jacobian sparsity), equivariance to a permutation
of the columns with their parameters, per-example clipping (book-keeping against vmap), a short fit that
lowers the loss, the sampling contract, save / load, and a private fit."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from test_private_diffusion import assert_tabdiff_ghost_clipping_matches_vmap
from test_sampling_contract import _frame, assert_same_rows

from tabdiff_jax.diffusion import tabdiff as td
from tabdiff_jax.diffusion.transformer import ColumnTransformer
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.state import init_train_state, split_params

D, MASKED = 2, (4, 3)  # two numeric columns, blocks of 3 and 2 categories (plus the mask state)
D_IN, D_OUT = D + sum(MASKED), D + sum(k - 1 for k in MASKED)
IN_COLUMNS = [[0], [1], [2, 3, 4, 5], [6, 7, 8]]  # input positions of each column (token)
OUT_COLUMNS = [[0], [1], [2, 3, 4], [5, 6]]
TINY = dict(steps=0, batch_size=64, num_sample_steps=4, backbone="transformer", d_token=16, layers=1, heads=2,
            dim_t=16)


@functools.lru_cache(maxsize=None)
def _net(layers):
    """One network per depth for the whole file (initialising one compiles every distinct layer shape)."""
    return ColumnTransformer(D, MASKED, d_token=16, layers=layers, heads=2, dim_t=16, rngs=nnx.Rngs(0))


def _inputs(n=5, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.random.normal(k1, (n, D_IN)), jax.random.uniform(k2, (n,), minval=0.0, maxval=1000.0)


def test_shapes_shared_time_and_the_samplers_call_form():
    net, (x, t) = _net(2), _inputs()
    graphdef, params = split_params(net)
    apply = jax.jit(lambda p, xx, tt: nnx.merge(graphdef, p)(xx, tt))
    out = apply(params, x, t)
    assert out.shape == (5, D_OUT) and net.d_in == D_IN and net.d_out == D_OUT
    shared = apply(params, x, t[:1])  # one time for every row == that time repeated
    np.testing.assert_allclose(shared, apply(params, x, jnp.full((5,), t[0])), rtol=1e-5, atol=1e-6)
    sampler_form = jax.jit(lambda p, xx, tt: nnx.merge(graphdef, p).conditioned(None)(xx, tt))
    np.testing.assert_allclose(sampler_form(params, x, t[0]), shared, rtol=1e-6, atol=1e-6)
    with pytest.raises(ConfigError, match="width 9"):
        net(x[:, :-1], t)
    with pytest.raises(ConfigError, match="divisible"):
        ColumnTransformer(D, MASKED, d_token=10, heads=4, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="backbone"):
        td.make_network(td.TabDiffConfig(num_numeric=D, categorical_sizes=(3, 2)), backbone="cnn", rngs=nnx.Rngs(0))


def _column_dependence(net, x, t):
    """``[out column, in column]``: max |d out / d in| over the rows (one row's outputs on its own inputs)."""
    graphdef, params = split_params(net)
    one = lambda p, row, tt: nnx.merge(graphdef, p)(row[None], tt[None])[0]
    jac = jax.jit(jax.vmap(jax.jacfwd(one, argnums=1), (None, 0, 0)))(params, x, t)  # [n, d_out, d_in]
    jac = np.abs(np.asarray(jac)).max(axis=0)
    return np.array([[jac[np.ix_(o, i)].max() for i in IN_COLUMNS] for o in OUT_COLUMNS])


def test_without_layers_each_output_column_depends_only_on_its_own_column_and_with_layers_on_all():
    x, t = _inputs(6)
    alone = _column_dependence(_net(0), x, t)
    assert np.all(np.diag(alone) > 1e-3)
    assert np.all(alone[~np.eye(4, dtype=bool)] == 0.0)  # exactly: no path between two tokens
    mixed = _column_dependence(_net(2), x, t)
    assert np.all(mixed > 1e-4), mixed
    # rows never mix (DP-SGD's per-example losses): row 0's outputs do not move with row 1's inputs
    graphdef, params = split_params(_net(2))
    jac = jax.jit(jax.jacfwd(lambda xx: nnx.merge(graphdef, params)(xx, t[:2])[0]))(x[:2])  # [d_out, 2, d_in]
    assert np.all(np.asarray(jac[:, 1]) == 0.0) and np.abs(np.asarray(jac[:, 0])).max() > 1e-3


def test_permuting_columns_with_their_parameters_permutes_the_outputs():
    """Attention has no positions: swapping the two numeric columns' inputs, tokenizers and heads swaps
    their outputs and leaves the categorical logits unchanged (the blocks see the same set of tokens)."""
    net, (x, t) = _net(2), _inputs()
    graphdef, params = split_params(net)
    swapped = jax.tree.map(lambda a: a, params)
    for name in ("tokenizers", "outputs"):
        swapped[name][0], swapped[name][1] = params[name][1], params[name][0]
    apply = jax.jit(lambda p, xx: nnx.merge(graphdef, p)(xx, t))
    out, out_swapped = np.asarray(apply(params, x)), np.asarray(apply(swapped, x[:, [1, 0] + list(range(2, D_IN))]))
    np.testing.assert_allclose(out_swapped[:, [1, 0]], out[:, :2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_swapped[:, 2:], out[:, 2:], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_bookkeeping_clipping_of_the_transformer_matches_per_example_vmap():
    config = td.TabDiffConfig(num_numeric=D, categorical_sizes=(3, 2))
    net = td.make_network(config, backbone="transformer", dim_t=8, transformer=dict(d_token=8, layers=1, heads=2),
                          rngs=nnx.Rngs(0))
    assert net.denoiser.d_in == config.d_in and net.denoiser.d_out == config.d_out
    assert_tabdiff_ghost_clipping_matches_vmap(net, config, rows=6, real=5, rtol_norms=1e-4, rtol_grads=1e-4)


@pytest.mark.slow
def test_a_short_fit_lowers_the_loss_and_mixing_columns_predicts_one_from_another():
    """Two correlated numbers and a block that is the first one's sign. 300 steps with a layer lower the loss on
    fixed evaluation draws (4 seeds: from 1.84-2.75 to 1.26-1.34); with a layer the masked block is predicted from
    the numbers, which the column-wise network (``layers=0``) cannot do: its categorical term stays at the
    marginal's (0.66-0.71 against 0.40-0.41, seeds 0-3) and its numeric term is higher too (by 0.06-0.08)."""
    config = td.TabDiffConfig(num_numeric=2, categorical_sizes=(2,))
    rng = np.random.default_rng(0)
    z = rng.normal(size=(512, 1))
    x_num = np.concatenate([z, 0.8 * z + 0.6 * rng.normal(size=(512, 1))], 1).astype(np.float32)
    data = td.TableBatch(jnp.asarray(x_num), jnp.asarray((z > 0).astype(np.int32)))
    eval_keys = jax.random.split(jax.random.key(99), 2048)
    terms = {}
    for layers in (0, 1):
        net = td.make_network(config, backbone="transformer", dim_t=16, rngs=nnx.Rngs(0),
                              transformer=dict(d_token=16, layers=layers, heads=2))
        graphdef, params = split_params(net)
        optimizer = optax.adam(3e-3)
        step = td.make_train_step(graphdef, optimizer, config, batch_size=128)
        evaluate = jax.jit(lambda p: td.row_losses(nnx.merge(graphdef, p), jnp.tile(data.x_num, (4, 1)),  # noqa: B023
                                                   jnp.tile(data.x_cat, (4, 1)), eval_keys, config, with_terms=True))
        state = init_train_state(params, optimizer)
        before = float(jnp.mean(evaluate(state.params)[0]))
        for i in range(300):
            state, _ = step(state, data, jax.random.key(i))
        loss, (num, cat) = evaluate(state.params)
        if layers:
            assert float(jnp.mean(loss)) < before - 0.3, (before, float(jnp.mean(loss)))
        terms[layers] = float(jnp.mean(num)), float(jnp.mean(cat))
    assert terms[1][1] < 0.75 * terms[0][1], terms
    assert terms[1][0] < terms[0][0], terms


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from tabdiff_jax.models.tabdiff import TabDiff

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TabDiff(**{**TINY, "steps": 30}).fit(_frame(), target="label", progress=False, seed=1)
    folder = tmp_path_factory.mktemp("transformer")
    model.save(folder)
    return model, folder


@pytest.mark.slow
def test_estimator_sampling_contract_and_save_load_round_trip(fitted):
    from tabdiff_jax import load

    model, folder = fitted
    assert "tokenizers" in model._params["denoiser"]
    large = model.sample(30, seed=1, chunk_size=64)
    assert_same_rows(model.sample(30, seed=1, chunk_size=7), large)
    assert_same_rows(model.sample(12, seed=1, chunk_size=7), large.iloc[:12].reset_index(drop=True))
    assert not np.allclose(model.sample(30, seed=2, chunk_size=64)["x"], large["x"])
    again = load(folder)
    assert again.settings["backbone"] == "transformer" and again.settings["d_token"] == 16
    assert again.sample(30, seed=1, chunk_size=64).equals(large)


@pytest.mark.parametrize("options, name", [({"backbone": "cnn"}, "backbone"), ({"d_token": 30, "heads": 4}, "d_token"),
                                           ({"layers": -1}, "layers"), ({"heads": 0}, "heads")])
def test_bad_transformer_options_are_refused_naming_the_option(options, name):
    from tabdiff_jax.models.tabdiff import TabDiff

    with pytest.raises(ConfigError, match=name):
        TabDiff(**options)


@pytest.mark.slow
@pytest.mark.parametrize("clipping", ["ghost", "vmap"])
def test_a_private_fit_with_the_transformer_runs_and_spends_its_budget(clipping):
    from tabdiff_jax.models.tabdiff import TabDiff

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TabDiff(**{**TINY, "steps": 3}, epsilon=5.0, delta=1e-3, clipping=clipping).fit(
            _frame(), target="label", progress=False, seed=0)
    assert model.fit_info["steps"] == 3 and 0 < model.fit_info["epsilon_spent"] <= 5.0
    assert model.fit_info["schedule_learned"] == (clipping == "vmap")
    assert len(model.sample(8, seed=0)) == 8
