"""Book-keeping (ghost) clipping agrees with vmap(grad) clipping, and refuses what it cannot clip."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.layers import Embed, LayerNorm, Linear
from tabdiff_jax.privacy import ghost
from tabdiff_jax.privacy.dpsgd import clipped_grad_sum, make_private_step

B, D = 12, 5


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.layers = nnx.List([Linear(D, 16, rngs=rngs), Linear(16, 16, rngs=rngs), Linear(16, D, rngs=rngs)])

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


class ResidualLN(nnx.Module):
    """Residual blocks with LayerNorm, applied to [B, T, d] inputs (the TableDiffusion shape)."""

    def __init__(self, rngs):
        self.inp = Linear(D + 1, 12, rngs=rngs)
        self.blocks = nnx.List([Linear(12, 12, rngs=rngs) for _ in range(2)])
        self.norms = nnx.List([LayerNorm(12) for _ in range(2)])
        self.out = Linear(12, D, rngs=rngs, use_bias=False)

    def __call__(self, x):
        h = self.inp(x)
        for lin, ln in zip(self.blocks, self.norms):
            h = h + jax.nn.relu(ln(lin(h)))
        return self.out(h)


class EmbedNet(nnx.Module):
    """An embedding looked up once per example and once per noise level (repeated ids)."""

    def __init__(self, rngs):
        self.emb = Embed(4, 8, rngs=rngs)
        self.lin = Linear(D, 8, rngs=rngs)
        self.shared = Linear(8, 8, rngs=rngs)  # called twice: weight sharing
        self.out = Linear(8, D, rngs=rngs)

    def __call__(self, x, ids):
        h = jnp.tanh(self.lin(x) + self.emb(ids)[:, None, :] + self.emb(jnp.stack([ids, (ids + 1) % 4, ids], 1)))
        return self.out(self.shared(jnp.tanh(self.shared(h))))


def mlp_loss(model, batch, keys):
    x, y = batch
    return jnp.mean((model(x) - y) ** 2, axis=-1)


def residual_loss(model, batch, keys):
    x, _ = batch
    levels = jnp.array([0.1, 0.5, 1.0])
    eps = jax.vmap(lambda k: jax.random.normal(k, (3, D)))(keys)
    xt = x[:, None, :] + jnp.sqrt(levels)[None, :, None] * eps
    inp = jnp.concatenate([xt, jnp.broadcast_to(levels[None, :, None], (x.shape[0], 3, 1))], -1)
    return jnp.mean((model(inp) - eps) ** 2, axis=(1, 2))


def embed_loss(model, batch, keys):
    x, y = batch
    ids = (jnp.abs(y[:, 0] * 3).astype(jnp.int32)) % 4
    xt = jnp.stack([x, 2 * x, -x], axis=1)
    return jnp.mean((model(xt, ids) - y[:, None, :]) ** 2, axis=(1, 2))


CASES = [(MLP, mlp_loss), (ResidualLN, residual_loss), (EmbedNet, embed_loss)]


def _data(seed=0, nan_row=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, D)).astype(np.float32) * 3
    y = rng.normal(size=(B, D)).astype(np.float32)
    if nan_row is not None:
        x[nan_row] = np.nan
    keys = jax.random.split(jax.random.key(seed), B)
    mask = jnp.arange(B) < B - 3
    return (jnp.asarray(x), jnp.asarray(y)), keys, mask


@pytest.mark.parametrize("net,loss", CASES, ids=["mlp", "residual_layernorm", "embed_shared"])
def test_ghost_matches_vmap(net, loss):
    graphdef, params = nnx.split(net(nnx.Rngs(0)), nnx.Param)
    batch, keys, mask = _data()
    f = jax.jit(lambda p, c: [clipped_grad_sum(loss, p, batch, keys, mask, l2_clip=c, clipping=m, graphdef=graphdef)
                              for m in ("ghost", "vmap")])
    for l2_clip in (0.3, 1e4):  # clipping every row, and clipping none
        (gs, gstats, glosses), (vs, vstats, vlosses) = f(params, l2_clip)
        np.testing.assert_allclose(np.asarray(gstats.norms), np.asarray(vstats.norms), rtol=1e-5, atol=1e-6)
        real = np.asarray(mask)
        np.testing.assert_allclose(np.asarray(glosses)[real], np.asarray(vlosses)[real], rtol=1e-6)
        assert float(jnp.min(gstats.norms[:B - 3])) > 0.3 and float(jnp.max(gstats.norms)) < 1e4
        for a, b in zip(jax.tree.leaves(gs), jax.tree.leaves(vs)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
        assert jax.tree.structure(gs) == jax.tree.structure(params)


def test_private_steps_agree_on_the_final_update():
    graphdef, params = nnx.split(MLP(nnx.Rngs(1)), nnx.Param)
    batch, _, mask = _data(seed=2)
    outs = []
    for method in ("ghost", "vmap"):
        dp = make_private_step(mlp_loss, optax.sgd(0.1), l2_clip=0.5, noise_multiplier=1.3,
                               expected_batch_size=8.0, clipping=method, graphdef=graphdef)
        state, metrics = dp.step(dp.init(params), batch, mask, jax.random.key(5))
        outs.append((state, metrics))
    for a, b in zip(jax.tree.leaves(outs[0][0].params), jax.tree.leaves(outs[1][0].params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    for k in ("loss", "grad_norm", "clipped_fraction"):
        np.testing.assert_allclose(float(outs[0][1][k]), float(outs[1][1][k]), rtol=1e-5)


def test_nan_example_and_padding_contribute_zero_in_both_paths():
    graphdef, params = nnx.split(MLP(nnx.Rngs(0)), nnx.Param)
    batch, keys, mask = _data(nan_row=2)
    f = jax.jit(lambda b, m: [clipped_grad_sum(mlp_loss, params, b, keys, m, l2_clip=1.0, clipping=method,
                                               graphdef=graphdef) for method in ("ghost", "vmap")])
    with_nan, without = f(batch, mask), f(batch, mask.at[2].set(False))
    x, y = batch
    poisoned = (jnp.where(mask[:, None], x, 1e4), jnp.where(mask[:, None], y, -1e4))  # garbage in padding rows
    for (s, stats, _), (ref, _, _), (pad, _, _) in zip(with_nan, without, f(poisoned, mask)):
        assert int(stats.num_nonfinite) == 1
        for a, b, c in zip(jax.tree.leaves(s), jax.tree.leaves(ref), jax.tree.leaves(pad)):
            assert np.all(np.isfinite(np.asarray(a)))
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
            np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


def test_norm_rules_against_explicit_per_example_gradients():
    rng = np.random.default_rng(3)
    for t, d, p in [(1, 7, 5), (4, 6, 3), (40, 2, 2)]:  # 2-D rows, Gram form, explicit form
        a = jnp.asarray(rng.normal(size=(6, t, d)), jnp.float32)
        g = jnp.asarray(rng.normal(size=(6, t, p)), jnp.float32)
        explicit = np.einsum("btd,btp->bdp", a, g)
        bias = np.asarray(g).sum(1)
        want = (explicit ** 2).sum((1, 2)) + (bias ** 2).sum(1)
        np.testing.assert_allclose(np.asarray(ghost._linear_sq_norms(a, g, True)), want, rtol=1e-5)
    ids = jnp.array([[0, 1, 0], [2, 2, 2]])
    g = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
    dense = np.zeros((2, 3, 4))
    for b in range(2):
        for t in range(3):
            dense[b, int(ids[b, t])] += np.asarray(g[b, t])
    np.testing.assert_allclose(np.asarray(ghost._embed_sq_norms(ids, g, False)), (dense ** 2).sum((1, 2)), rtol=1e-5)


class RawParam(nnx.Module):
    def __init__(self, rngs):
        self.lin = Linear(D, D, rngs=rngs)
        self.gain = nnx.Param(jnp.ones((D,)))

    def __call__(self, x):
        return self.lin(x) * self.gain[...]


class Unbatched(nnx.Module):
    def __init__(self, rngs):
        self.lin = Linear(D, D, rngs=rngs)

    def __call__(self, x):
        return x + self.lin(jnp.ones((1, D)))  # a layer applied to something without the example axis


@pytest.mark.parametrize("net,match", [(RawParam, "gain"), (Unbatched, "example axis")])
def test_uncovered_parameters_and_unbatched_layers_raise(net, match):
    graphdef, params = nnx.split(net(nnx.Rngs(0)), nnx.Param)
    batch, keys, mask = _data()
    with pytest.raises(ConfigError, match=match):
        clipped_grad_sum(mlp_loss, params, batch, keys, mask, l2_clip=1.0, clipping="ghost", graphdef=graphdef)
    if net is RawParam:  # the vmap path handles any parameter
        s, _, _ = jax.jit(lambda p: clipped_grad_sum(mlp_loss, p, batch, keys, mask, l2_clip=1.0, clipping="vmap",
                                                     graphdef=graphdef))(params)
        assert jax.tree.structure(s) == jax.tree.structure(params)
        assert float(jnp.sum(jnp.abs(s["gain"]))) > 0
