"""TabDiff's shared training times (``time_strata``): the batch's rows share K stratified times, the time
MLP runs on K rows; checked against the per-row path with the same times, and by the times' law."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tabdiff_jax.diffusion import tabdiff as td
from tabdiff_jax.errors import ConfigError

CFG = td.TabDiffConfig(num_numeric=2, categorical_sizes=(3, 5))


def _batch(n=48, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    codes = jnp.stack([jax.random.randint(jax.random.fold_in(k2, b), (n,), 0, s)
                       for b, s in enumerate(CFG.categorical_sizes)], 1)
    return jax.random.normal(k1, (n, 2)), codes.astype(jnp.int32)


def test_stratified_times_one_per_stratum_and_uniform_overall():
    k = 16
    t = np.asarray(td.stratified_times(jax.random.key(0), k))
    lo = td.T_FLOOR + (1 - td.T_FLOOR) * np.arange(k) / k
    assert np.all(t >= lo) and np.all(t < lo + (1 - td.T_FLOOR) / k)  # one draw in each stratum, in order
    many = np.concatenate([np.asarray(td.stratified_times(jax.random.key(s), k)) for s in range(400)])
    # each time is uniform on [T_FLOOR, 1): the pooled draws' deciles sit at 0.1, 0.2, ...
    np.testing.assert_allclose(np.quantile(many, np.linspace(0.1, 0.9, 9)), np.linspace(0.1, 0.9, 9), atol=0.01)


@pytest.mark.parametrize("backbone", ["mlp", pytest.param("transformer", marks=pytest.mark.slow)])
def test_shared_times_equal_the_per_row_path_with_the_same_times(backbone):
    """The embedding computed once per shared time and gathered equals the per-row embedding: the losses
    and the gradients (time MLP included) of the two paths agree."""
    extra = {"transformer": {"d_token": 8, "layers": 1, "heads": 2}} if backbone == "transformer" else {}
    net = td.make_network(CFG, hidden_dims=(32, 32), dim_t=16, backbone=backbone, rngs=nnx.Rngs(0), **extra)
    graphdef, params = nnx.split(net, nnx.Param)
    x_num, x_cat = _batch()
    keys = jax.random.split(jax.random.key(3), x_num.shape[0])
    shared = td.stratified_times(jax.random.key(4), 8)
    per_row = shared[jnp.arange(x_num.shape[0]) % 8]

    @jax.jit
    def both(p):
        def loss(q, **kw):
            return td.row_losses(nnx.merge(graphdef, q), x_num, x_cat, keys, CFG, **kw)
        return (loss(p, shared_times=shared), loss(p, times=per_row),
                jax.grad(lambda q: loss(q, shared_times=shared).mean())(p),
                jax.grad(lambda q: loss(q, times=per_row).mean())(p))

    a, b, ga, gb = both(params)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for u, v in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=2e-4, atol=1e-6)


@pytest.mark.slow  # 7 s of compiling; the equivalence test above covers the shared path by default
def test_batch_loss_with_strata_uses_k_distinct_times():
    net = td.make_network(CFG, hidden_dims=(16,), dim_t=8, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(net, nnx.Param)
    x_num, x_cat = _batch(n=40)
    batch = td.TableBatch(x_num, x_cat)
    seen = {}
    real = td.row_losses

    def spy(*args, **kw):
        seen["shared"] = kw.get("shared_times")
        return real(*args, **kw)

    td.row_losses = spy
    try:
        loss_fn = jax.jit(td.batch_loss, static_argnums=(1, 4, 6))
        loss, _ = loss_fn(params, graphdef, batch, jax.random.key(0), CFG, 1.0, 8)
        assert seen["shared"].shape == (8,) and np.isfinite(float(loss))
        loss_fn(params, graphdef, batch, jax.random.key(0), CFG, 1.0, 0)
        assert seen["shared"] is None  # time_strata=0: a time per row, the paper's
    finally:
        td.row_losses = real


def test_time_strata_option_is_checked():
    from tabdiff_jax.models.tabdiff import TabDiff

    with pytest.raises(ConfigError, match="time_strata"):
        TabDiff(time_strata=-1)
    with pytest.raises(ConfigError, match="time_strata"):
        TabDiff(time_strata=2.5)
    assert TabDiff().settings["time_strata"] == 64 and TabDiff(time_strata=0).settings["time_strata"] == 0
