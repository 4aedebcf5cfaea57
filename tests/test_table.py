import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tabdiff_jax.table import (
    EncodedTable,
    TableLayout,
    from_dense,
    merge_target,
    split_target,
    to_dense,
    to_onehot,
)

LAYOUT = TableLayout(
    numeric_names=("a", "b"),
    categorical_names=("c", "y", "b__missing"),
    categorical_sizes=(3, 2, 2),
    categorical_roles=("category", "category", "missing"),
    target="y",
    task="classification",
)


def _table(n=7, seed=0):
    rng = np.random.default_rng(seed)
    codes = np.stack([rng.integers(0, s, n) for s in LAYOUT.categorical_sizes], axis=1)
    return EncodedTable(jnp.asarray(rng.normal(size=(n, 2)), jnp.float32), jnp.asarray(codes, jnp.int32), LAYOUT)


def test_layout_offsets_and_widths():
    assert LAYOUT.onehot_offsets == (0, 3, 5)
    assert LAYOUT.onehot_dim == 7 and LAYOUT.dense_dim == 9
    assert LAYOUT.target_categorical_index == 1 and LAYOUT.target_numeric_index is None
    assert TableLayout.from_json(LAYOUT.to_json()) == LAYOUT
    assert hash(LAYOUT) == hash(TableLayout.from_json(LAYOUT.to_json()))


def test_layout_rejects_inconsistent_blocks():
    with pytest.raises(ValueError, match="differ in length"):
        TableLayout(categorical_names=("c",), categorical_sizes=(2, 3), categorical_roles=("category",))
    with pytest.raises(ValueError, match="role"):
        TableLayout(categorical_names=("c",), categorical_sizes=(2,), categorical_roles=("colour",))
    with pytest.raises(ValueError, match="'c' has size 0"):
        TableLayout(categorical_names=("c",), categorical_sizes=(0,), categorical_roles=("category",))


def test_dense_round_trip_and_onehot_rows_sum_to_one():
    t = _table()
    dense = to_dense(t)
    assert dense.shape == (7, LAYOUT.dense_dim)
    onehot = to_onehot(t.categorical, LAYOUT)
    np.testing.assert_array_equal(np.asarray(onehot).sum(axis=1), np.full(7, 3.0))
    back = from_dense(dense, LAYOUT)
    np.testing.assert_array_equal(back.categorical, t.categorical)
    np.testing.assert_array_equal(back.numeric, t.numeric)


def test_split_and_merge_target_round_trip():
    t = _table()
    feats, y = split_target(t)
    assert feats.layout.categorical_names == ("c", "b__missing")
    np.testing.assert_array_equal(y, t.categorical[:, 1])
    merged = merge_target(feats, y, LAYOUT)
    np.testing.assert_array_equal(merged.categorical, t.categorical)


def test_encoded_table_is_a_pytree_with_static_layout():
    t = _table()
    leaves, treedef = jax.tree.flatten(t)
    assert len(leaves) == 2
    doubled = jax.jit(lambda x: EncodedTable(x.numeric * 2, x.categorical, x.layout))(t)
    assert doubled.layout == LAYOUT
    np.testing.assert_allclose(doubled.numeric, 2 * np.asarray(t.numeric))
