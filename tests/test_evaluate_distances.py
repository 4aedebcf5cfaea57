"""Chunked JAX nearest neighbours against a brute-force numpy reference."""

import numpy as np
import pandas as pd
import pytest

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.evaluate.columns import prepare
from tabdiff_jax.evaluate.distances import (
    EncodedRows,
    encode_rows,
    nearest,
    nearest_neighbours,
)


def random_rows(n, rng, missing=0.1):
    num = rng.random((n, 3)).astype(np.float32)
    num[rng.random((n, 3)) < missing] = np.nan
    return EncodedRows(num, rng.integers(0, 3, (n, 2)).astype(np.int32))


def brute_force(q, r, metric, weights=None):
    a, b = q.numeric[:, None, :].astype(np.float64), r.numeric[None].astype(np.float64)
    ma, mb = np.isnan(a), np.isnan(b)
    w = np.ones(a.shape[-1]) if weights is None else weights
    term = (a - b) ** 2 if metric == "euclidean" else np.minimum(np.abs(a - b) * w, 1.0)
    term = np.where(ma | mb, (ma != mb).astype(float), term).sum(-1)
    mismatches = (q.codes[:, None, :] != r.codes[None]).sum(-1)
    if metric == "euclidean":
        return np.sqrt(term + 2 * mismatches)
    return (term + mismatches) / (a.shape[-1] + q.codes.shape[1])


@pytest.mark.parametrize("metric", ["euclidean", "sdmetrics"])
@pytest.mark.parametrize("chunk_size", [128, 4096])
def test_matches_brute_force_for_several_references(metric, chunk_size):
    rng = np.random.default_rng(0)
    q, r1, r2 = random_rows(300, rng), random_rows(500, rng), random_rows(130, rng)
    d, idx = nearest_neighbours(q, [r1, r2], metric=metric, with_index=True, chunk_size=chunk_size)
    assert d.shape == idx.shape == (300, 2)
    for k, r in enumerate([r1, r2]):
        full = brute_force(q, r, metric)
        np.testing.assert_allclose(d[:, k], full.min(1), atol=1e-5)
        # The index points at a row at the minimum distance.
        np.testing.assert_allclose(full[np.arange(300), idx[:, k]], full.min(1), atol=1e-5)


def test_exclude_self_skips_only_the_row_itself():
    rng = np.random.default_rng(1)
    r = random_rows(260, rng)
    r = EncodedRows(np.concatenate([r.numeric, r.numeric[:5]]), np.concatenate([r.codes, r.codes[:5]]))  # 5 duplicates
    d, idx = nearest_neighbours(r, r, exclude_self=True, with_index=True, chunk_size=128)
    full = brute_force(r, r, "euclidean")
    np.fill_diagonal(full, np.inf)
    np.testing.assert_allclose(d[:, 0], full.min(1), atol=1e-5)
    assert (idx[:, 0] != np.arange(len(idx))).all()
    assert (d[:5, 0] == 0).all()  # a duplicate is a neighbour at distance 0


def test_empty_reference_gives_inf_and_minus_one():
    rng = np.random.default_rng(2)
    q = random_rows(10, rng)
    empty = EncodedRows(np.zeros((0, 3), np.float32), np.zeros((0, 2), np.int32))
    d, idx = nearest_neighbours(q, [empty], with_index=True)
    assert np.isinf(d).all() and (idx == -1).all()


def test_sdmetrics_weights_make_constant_columns_zero_one():
    q = EncodedRows(np.array([[0.0], [3.0]], np.float32), np.zeros((2, 0), np.int32))
    r = EncodedRows(np.array([[0.0]], np.float32), np.zeros((1, 0), np.int32))
    d, _ = nearest(q, r, metric="sdmetrics", weights=np.array([1e30], np.float32))
    np.testing.assert_array_equal(d, [0.0, 1.0])


def test_encode_rows_scales_by_reference_and_shares_category_codes():
    real = pd.DataFrame({"x": [0.0, 10.0, 5.0], "c": ["a", "b", "a"], "k": [7, 7, 7]})
    other = pd.DataFrame({"x": [20.0, np.nan], "c": ["z", None], "k": [7, 8]})
    columns, tables = prepare(real, {"other": other})
    (er, eo), weights = encode_rows([tables["real"], tables["other"]], columns, reference=tables["real"])
    np.testing.assert_allclose(er.numeric[:, 0], [0.0, 1.0, 0.5])
    np.testing.assert_allclose(eo.numeric[0, 0], 2.0)
    assert np.isnan(eo.numeric[1, 0])
    np.testing.assert_array_equal(weights, np.array([1.0, 1e30], np.float32))  # k is constant in real
    assert er.codes[0, 0] == er.codes[2, 0] != er.codes[1, 0]
    assert eo.codes[0, 0] not in set(er.codes[:, 0]) and eo.codes[1, 0] not in set(er.codes[:, 0]) | {eo.codes[0, 0]}


def test_errors_name_the_problem():
    rng = np.random.default_rng(3)
    q = random_rows(5, rng)
    with pytest.raises(ConfigError, match="metric"):
        nearest_neighbours(q, q, metric="cosine")
    with pytest.raises(ConfigError, match="layout"):
        nearest_neighbours(q, EncodedRows(q.numeric[:, :2], q.codes))
    with pytest.raises(ConfigError, match="exclude_self"):
        nearest_neighbours(q, [q, q], exclude_self=True)


def test_alpha_precision_beta_recall_match_a_dense_reference():
    from sklearn.neighbors import NearestNeighbors

    from tabdiff_jax.evaluate.coverage import alpha_precision_beta_recall

    rng = np.random.default_rng(4)
    real, syn = random_rows(200, rng, missing=0.0), random_rows(200, rng, missing=0.0)
    syn = EncodedRows(np.clip(syn.numeric * 1.3, 0, None).astype(np.float32), syn.codes)
    ours = alpha_precision_beta_recall(real, syn, max_rows=200)

    def dense(rows):
        return np.concatenate([rows.numeric.astype(np.float64)] + [np.eye(3)[rows.codes[:, j]] for j in range(2)], axis=1)

    # synthcity's AlphaPrecision (without embedding), written out on dense one-hot rows.
    x, s = dense(real), dense(syn)
    alphas = np.linspace(0, 1, 30)
    radii = np.quantile(np.linalg.norm(x - x.mean(0), axis=1), alphas)
    to_centre = np.linalg.norm(s - x.mean(0), axis=1)
    real_to_real = NearestNeighbors(n_neighbors=2).fit(x).kneighbors(x)[0][:, 1]
    real_to_synth, args = (v[:, 0] for v in NearestNeighbors(n_neighbors=1).fit(s).kneighbors(x))
    closest = np.linalg.norm(s[args] - s.mean(0), axis=1)
    synth_radii = np.quantile(closest, alphas)
    precision = np.array([np.mean(to_centre <= r) for r in radii])
    recall = np.array([np.mean((real_to_synth <= real_to_real) & (closest <= q)) for q in synth_radii])
    np.testing.assert_allclose(ours["alpha_precision_curve"], precision, atol=1e-12)
    np.testing.assert_allclose(ours["beta_recall_curve"], recall, atol=1e-12)
    # the integral by the trapezoid rule (synthcity's right-endpoint sum can go below 0)
    assert ours["alpha_precision"] == pytest.approx(1 - 2 * np.trapezoid(np.abs(alphas - precision), alphas), abs=1e-6)
    assert ours["beta_recall"] == pytest.approx(1 - 2 * np.trapezoid(np.abs(alphas - recall), alphas), abs=1e-6)


def test_coverage_scores_stay_in_unit_interval_at_the_extremes():
    from tabdiff_jax.evaluate.coverage import _delta

    alphas = np.linspace(0, 1, 30)
    assert _delta(alphas, alphas) == pytest.approx(1.0)  # a perfect curve
    assert _delta(alphas, np.zeros(30)) == pytest.approx(0.0, abs=1e-12)  # nothing covered: exactly 0, not < 0
    assert _delta(alphas, np.ones(30)) == pytest.approx(0.0, abs=1e-12)
    step_curve = (alphas >= 0.5).astype(float)  # monotone, far from the diagonal
    assert 0.0 <= _delta(alphas, step_curve) <= 1.0
