"""Per-example clipping: bounded norms, untouched small gradients, NaN safety, sensitivity <= C."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tabdiff_jax import validate
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.privacy.clipping import (
    clip_factors,
    clip_per_example,
    clipped_sum,
    per_example_sq_norms,
)


def _tree(rng, batch, scale):
    return {"w": rng.normal(size=(batch, 3, 4)).astype(np.float32) * scale,
            "b": rng.normal(size=(batch, 4)).astype(np.float32) * scale}


def _norms(tree):
    return np.sqrt(sum(np.sum(np.asarray(x, np.float64).reshape(x.shape[0], -1) ** 2, axis=1) for x in jax.tree.leaves(tree)))


@pytest.mark.parametrize("l2_clip", [0.1, 1.0, 30.0])
def test_clipped_norms_bounded_and_small_ones_unchanged(l2_clip):
    rng = np.random.default_rng(0)
    scale = (10.0 ** rng.uniform(-3, 2.5, size=64)).astype(np.float32)  # norms on both sides of C
    tree = jax.tree.map(lambda x: x * scale.reshape((-1,) + (1,) * (x.ndim - 1)), _tree(rng, 64, 1.0))
    before = _norms(tree)
    clipped, stats = jax.jit(clip_per_example, static_argnums=1)(tree, l2_clip)
    after = _norms(clipped)
    assert np.all(after <= l2_clip * (1 + 1e-5))
    small = before <= l2_clip
    assert small.any() and (~small).any()
    for k in tree:
        np.testing.assert_allclose(np.asarray(clipped[k])[small], tree[k][small], rtol=1e-6)
    np.testing.assert_allclose(after[~small], l2_clip, rtol=1e-5)  # large ones land exactly on C
    np.testing.assert_allclose(np.asarray(stats.norms), before, rtol=1e-5)
    assert int(stats.num_clipped) == int((~small).sum())


def test_zero_nan_and_inf_rows_are_safe_and_counted():
    g = np.ones((5, 3), np.float32)
    g[1] = 0.0
    g[2, 0] = np.nan
    g[3, 1] = np.inf
    mask = np.array([True, True, True, True, False])
    total, stats = clipped_sum({"g": jnp.asarray(g)}, 1.0, jnp.asarray(mask))
    expected = g[0] / np.sqrt(3.0)  # row 0 clipped, row 1 zero, rows 2-3 dropped, row 4 padding
    np.testing.assert_allclose(np.asarray(total["g"]), expected, rtol=1e-6)
    assert int(stats.num_nonfinite) == 2 and int(stats.batch_size) == 4 and int(stats.num_clipped) == 1
    clipped, _ = clip_per_example({"g": jnp.asarray(g)}, 1.0, jnp.asarray(mask))
    assert np.all(np.isfinite(np.asarray(clipped["g"])))
    np.testing.assert_array_equal(np.asarray(clipped["g"])[1:], 0.0)


def test_padded_rows_never_contribute():
    rng = np.random.default_rng(1)
    tree = _tree(rng, 10, 2.0)
    mask = np.arange(10) < 6
    poisoned = jax.tree.map(lambda x: np.where(mask.reshape((-1,) + (1,) * (x.ndim - 1)), x, 1e6), tree)
    a, _ = clipped_sum(tree, 1.0, jnp.asarray(mask))
    b, _ = clipped_sum(poisoned, 1.0, jnp.asarray(mask))
    c, _ = clipped_sum(jax.tree.map(lambda x: x[:6], tree), 1.0, None)
    for k in tree:
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=0, atol=0)
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(c[k]), rtol=1e-6, atol=1e-6)


_jit_clipped_sum = jax.jit(clipped_sum)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 12), drop=st.integers(0, 11),
       scale=st.floats(0.01, 100.0), l2_clip=st.floats(0.05, 5.0))
def test_removing_one_example_changes_the_sum_by_at_most_c(seed, batch, drop, scale, l2_clip):
    rng = np.random.default_rng(seed)
    tree = _tree(rng, 12, scale)  # fixed capacity 12, `batch` real rows: one compilation
    drop = drop % batch
    mask = np.arange(12) < batch
    without = mask.copy()
    without[drop] = False
    a, _ = _jit_clipped_sum(tree, l2_clip, jnp.asarray(mask))
    b, _ = _jit_clipped_sum(tree, l2_clip, jnp.asarray(without))
    diff = np.sqrt(sum(np.sum((np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)) ** 2) for k in tree))
    assert diff <= l2_clip * (1 + 1e-5)


def test_clip_factors_formula_and_per_example_norms():
    sq = jnp.array([0.0, 0.25, 4.0, 100.0])
    factors, usable, _ = clip_factors(sq, 1.0)
    np.testing.assert_allclose(np.asarray(factors), [1.0, 1.0, 0.5, 0.1], rtol=1e-6)
    assert bool(usable.all())
    tree = {"a": jnp.array([[3.0, 0.0], [0.0, 0.0]]), "b": jnp.array([[4.0], [1.0]])}
    np.testing.assert_allclose(np.asarray(per_example_sq_norms(tree)), [25.0, 1.0])


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "x"])
def test_bad_clip_norm_raises(bad):
    with pytest.raises(ConfigError, match="l2_clip"):
        validate.positive_float("l2_clip", bad)
