"""The shared training state: TrainState, apply_gradients, the EMA, parameter constraints as optax transforms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tabdiff_jax.gan.losses import clip_weights
from tabdiff_jax.gan.train import GANConfig, critic_optimizer
from tabdiff_jax.state import (
    TrainState,
    apply_gradients,
    ema_update,
    global_norm,
    init_train_state,
    split_params,
)
from tabdiff_jax.training import arrays_to_tree, tree_to_arrays
from tabdiff_jax.transforms import clip_params
from tabdiff_jax.vae.core import (
    SIGMA_RANGE,
    Decoder,
    Encoder,
    init_tvae_state,
    tvae_optimizer,
)


def assert_trees_close(a, b, rtol=1e-6, atol=0.0):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _tree(key, scale=1.0):
    k1, k2 = jax.random.split(key)
    return {"w": scale * jax.random.normal(k1, (4, 3)), "b": {"c": scale * jax.random.normal(k2, (3,))}}


def test_clip_params_matches_clip_after_update_under_jit():
    params, grads = _tree(jax.random.key(0), 0.02), _tree(jax.random.key(1))
    tx = optax.chain(optax.sgd(0.01), clip_params(-0.01, 0.01))
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    new, _ = step(params, state)
    # the old hand-written form: plain SGD, then clip the parameters (gan.losses.clip_weights)
    old = clip_weights(jax.tree.map(lambda p, g: p - 0.01 * g, params, grads), 0.01)
    assert_trees_close(new, old, rtol=0, atol=1e-8)  # p + (clip(p + u) - p): a few ulps
    leaves = jax.tree.leaves(new)
    assert max(float(jnp.max(jnp.abs(p))) for p in leaves) <= 0.01 * (1 + 1e-6)
    assert any(bool(jnp.any(jnp.abs(p) >= 0.01 * (1 - 1e-6))) for p in leaves)  # the clip was active
    assert any(bool(jnp.any(jnp.abs(p) < 0.009)) for p in leaves)  # and not everything sits at the bound


def test_clip_params_needs_params_and_ordered_bounds():
    tx = clip_params(0.0, 1.0)
    with pytest.raises(ValueError, match="params"):
        tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))
    with pytest.raises(ValueError, match="lower"):
        clip_params(1.0, 0.0)


def test_critic_optimizer_chains_the_weight_clip_only_when_set():
    params, grads = _tree(jax.random.key(2), 0.05), _tree(jax.random.key(3))
    plain = optax.sgd(0.1)
    assert critic_optimizer(plain, GANConfig()) is plain
    tx = critic_optimizer(plain, GANConfig(loss="wasserstein", weight_clip=0.03))
    state = apply_gradients(init_train_state(params, tx), grads, tx)
    old = clip_weights(jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), 0.03)
    assert_trees_close(state.params, old, rtol=0, atol=1e-8)


def test_tvae_optimizer_clamps_decoder_sigma_only():
    enc = Encoder(5, (4,), 2, rngs=nnx.Rngs(0))
    dec = Decoder(2, (4,), 5, 3, rngs=nnx.Rngs(1))
    params = {"encoder": split_params(enc)[1], "decoder": split_params(dec)[1]}
    params["decoder"]["sigma"] = jnp.array([0.02, 0.5, 0.95])
    grads = jax.tree.map(lambda p: jnp.full_like(p, 10.0), params)  # pushes everything down by 1.0
    grads["decoder"]["sigma"] = jnp.array([1.0, 0.0, -1.0])  # sigma: below 0.01, unchanged, above 1
    tx = optax.sgd(0.1)
    state = jax.jit(lambda s, g: apply_gradients(s, g, tvae_optimizer(tx)))(init_tvae_state(params, tx), grads)
    # the old hand-written form: plain SGD, then sigma clipped to SIGMA_RANGE
    old = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    old["decoder"]["sigma"] = jnp.clip(old["decoder"]["sigma"], *SIGMA_RANGE)
    assert_trees_close(state.params, old, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(state.params["decoder"]["sigma"], [0.01, 0.5, 1.0], rtol=1e-6)
    # the other leaves left the sigma range: the mask really restricts the clamp
    assert float(jnp.min(state.params["decoder"]["out"]["bias"])) < SIGMA_RANGE[0] - 0.5


def test_global_norm_is_the_l2_norm_of_all_leaves_together():
    tree = {"a": jnp.arange(3.0), "b": (jnp.ones((2, 2)), jnp.zeros(()))}  # 0 + 1 + 4 + 4 ones
    assert float(global_norm(tree)) == pytest.approx(3.0)
    assert float(jax.jit(global_norm)({"w": jnp.full((4,), -2.0)})) == pytest.approx(4.0)


def test_ema_update_matches_the_hand_written_formula_under_jit():
    ema, params = _tree(jax.random.key(4)), _tree(jax.random.key(5))
    for step, decay in [(0, 0.999), (5, 0.999), (10_000, 0.9)]:
        got = jax.jit(ema_update, static_argnums=3)(ema, params, jnp.asarray(step), decay)
        d = min(decay, (1.0 + step) / (10.0 + step))
        want = jax.tree.map(lambda e, p, d=d: d * e + (1.0 - d) * p, ema, params)
        assert_trees_close(got, want, rtol=1e-5, atol=1e-6)
    out = ema_update({"w": jnp.zeros(3)}, {"w": jnp.ones(3)}, jnp.asarray(0), 0.999)  # warm-up: d = 1/10
    np.testing.assert_allclose(out["w"], 0.9, rtol=1e-6)


def test_apply_gradients_is_one_optax_update_and_moves_the_ema():
    params, grads = _tree(jax.random.key(6)), _tree(jax.random.key(7))
    tx = optax.adam(0.1)
    state = init_train_state(params, tx, ema_decay=0.5)
    assert isinstance(state, TrainState) and int(state.step) == 0
    assert_trees_close(state.ema, params)
    # copies: donating the state leaves the caller's arrays alive
    assert all(a is not b for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params)))
    new = jax.jit(apply_gradients, static_argnums=(2, 3))(state, grads, tx, 0.5)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert_trees_close(new.params, optax.apply_updates(params, updates))
    d = 1.0 / 10.0  # warm-up at step 0
    assert_trees_close(new.ema, jax.tree.map(lambda e, p: d * e + (1 - d) * p, params, new.params), rtol=1e-5)
    assert int(new.step) == 1
    plain = apply_gradients(init_train_state(params, tx), grads, tx, ema_decay=0.5)
    assert plain.ema is None  # no EMA kept, none made


def test_split_params_is_a_plain_dict_that_merges_and_saves():
    dec = Decoder(2, (4,), 5, 3, rngs=nnx.Rngs(1))
    graphdef, params = split_params(dec)
    assert isinstance(params, dict) and set(params) == {"hidden", "out", "sigma"}
    z = jnp.ones((3, 2))
    np.testing.assert_array_equal(nnx.merge(graphdef, params)(z), dec(z))
    arrays = tree_to_arrays(params, "decoder")
    assert "decoder['out']['kernel']" in arrays
    assert_trees_close(arrays_to_tree(params, arrays, "decoder"), params, rtol=0)
