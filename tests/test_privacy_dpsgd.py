"""The private step: what it computes, that it compiles once, and what it rejects."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.privacy.dpsgd import (
    make_nonprivate_step,
    make_private_step,
    vmap_clipped_sum,
)

B, D = 16, 3


def linear_loss(params, batch, keys):
    """A plain-pytree model (no NNX): per-example squared error of a linear map."""
    x, y = batch
    return jnp.sum((x @ params["w"] + params["b"] - y) ** 2, axis=-1)


def _setup(seed=0):
    rng = np.random.default_rng(seed)
    params = {"w": jnp.asarray(rng.normal(size=(D, 2)), jnp.float32), "b": jnp.zeros((2,), jnp.float32)}
    batch = (jnp.asarray(rng.normal(size=(B, D)), jnp.float32), jnp.asarray(rng.normal(size=(B, 2)), jnp.float32))
    return params, batch


def test_without_noise_or_clipping_the_step_is_sgd_on_the_sum_over_expected_batch():
    params, batch = _setup()
    mask = jnp.arange(B) < 10
    dp = make_private_step(linear_loss, optax.sgd(1.0), l2_clip=1e6, noise_multiplier=0.0,
                           expected_batch_size=8.0, clipping="vmap")
    state, metrics = dp.step(dp.init(params), batch, mask, jax.random.key(0))
    x, y = batch
    total = lambda p: jnp.sum(jnp.where(mask, linear_loss(p, batch, None), 0.0))
    want = jax.tree.map(lambda p, g: p - g / 8.0, params, jax.grad(total)(params))
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert int(metrics["batch_size"]) == 10 and int(state.step) == 1
    np.testing.assert_allclose(float(metrics["loss"]), float(total(params)) / 10, rtol=1e-5)


def test_empty_batch_is_pure_noise_and_compiles_once():
    params, batch = _setup()
    traces = []

    def loss(p, b, k):
        traces.append(1)
        return linear_loss(p, b, k)

    sigma, clip, ebs = 2.0, 0.5, 4.0
    dp = make_private_step(loss, optax.sgd(1.0), l2_clip=clip, noise_multiplier=sigma, expected_batch_size=ebs,
                           clipping="vmap")
    state = dp.init(params)
    empty, _ = dp.step(state, batch, jnp.zeros(B, bool), jax.random.key(1))
    some, _ = dp.step(state, batch, jnp.arange(B) < 5, jax.random.key(2))
    full, _ = dp.step(state, batch, jnp.ones(B, bool), jax.random.key(3))
    assert len(traces) == 1  # one trace (and compilation) for every mask
    # the empty batch moved the parameters by noise only: (sigma C / ebs) * N(0, 1) per coordinate
    step = np.concatenate([np.ravel(np.asarray(a) - np.asarray(b)) for a, b in
                           zip(jax.tree.leaves(empty.params), jax.tree.leaves(params))])
    assert np.all(np.abs(step) < 6 * sigma * clip / ebs) and np.std(step) > 0


def test_microbatched_vmap_equals_full_vmap():
    params, batch = _setup(1)
    keys = jax.random.split(jax.random.key(0), B)
    mask = jnp.arange(B) < 13
    full = vmap_clipped_sum(linear_loss, params, batch, keys, mask, 0.7)
    micro = vmap_clipped_sum(linear_loss, params, batch, keys, mask, 0.7, microbatch_size=4)
    for a, b in zip(jax.tree.leaves(full[0]), jax.tree.leaves(micro[0])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(full[1].norms), np.asarray(micro[1].norms), rtol=1e-6)
    with pytest.raises(ConfigError, match="microbatch_size"):
        vmap_clipped_sum(linear_loss, params, batch, keys, mask, 0.7, microbatch_size=5)


def test_nonprivate_step_is_mean_gradient():
    params, batch = _setup(2)
    mask = jnp.arange(B) < 7
    step = make_nonprivate_step(linear_loss, optax.sgd(1.0))
    state, metrics = step.step(step.init(params), batch, mask, jax.random.key(0))
    mean = lambda p: jnp.sum(jnp.where(mask, linear_loss(p, batch, None), 0.0)) / 7
    want = jax.tree.map(lambda p, g: p - g, params, jax.grad(mean)(params))
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(l2_clip=0.0), "l2_clip"),
    (dict(noise_multiplier=-0.1), "noise_multiplier"),
    (dict(expected_batch_size=0), "expected_batch_size"),
    (dict(clipping="opacus"), "clipping"),
    (dict(clipping="ghost"), "graphdef"),
])
def test_bad_arguments_raise(kwargs, match):
    args = dict(l2_clip=1.0, noise_multiplier=1.0, expected_batch_size=8.0, clipping="vmap")
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        make_private_step(linear_loss, optax.sgd(1.0), **args)
