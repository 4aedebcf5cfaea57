"""The Gaussian mechanism's noise and Poisson sampling into padded batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.privacy.noise import add_gaussian_noise, privatize, standard_normal
from tabdiff_jax.privacy.sampling import (
    gather_rows,
    overflow_probability,
    poisson_capacity,
    poisson_sample,
)

_poisson_sample = poisson_sample


def test_standard_normal_is_standard_normal_and_keyed():
    z = np.asarray(standard_normal(jax.random.key(0), 200_000), np.float64)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 5 * 1 / np.sqrt(z.size)
    assert np.all(np.isfinite(z))
    again = np.asarray(standard_normal(jax.random.key(0), 1000))
    other = np.asarray(standard_normal(jax.random.key(1), 1000))
    np.testing.assert_array_equal(again, z[:1000].astype(np.float32))
    assert abs(np.corrcoef(again, other)[0, 1]) < 0.15


@pytest.mark.parametrize("sigma,clip", [(0.7, 1.0), (2.0, 0.5)])
def test_noise_std_is_sigma_times_clip(sigma, clip):
    tree = {"a": jnp.zeros((300, 100)), "b": jnp.full((5000,), 3.0)}
    out = privatize(tree, jax.random.key(7), l2_clip=clip, noise_multiplier=sigma, expected_batch_size=1.0)
    noise = np.concatenate([np.asarray(out["a"]).ravel(), np.asarray(out["b"]).ravel() - 3.0]).astype(np.float64)
    n = noise.size
    # Chi-square test of the variance: (n-1) s^2 / (sigma C)^2 ~ chi2(n-1).
    statistic = (n - 1) * noise.var(ddof=1) / (sigma * clip) ** 2
    p = 2 * min(stats.chi2.cdf(statistic, n - 1), stats.chi2.sf(statistic, n - 1))
    assert p > 1e-3, (noise.std(), sigma * clip)
    assert stats.kstest(noise / (sigma * clip), "norm").pvalue > 1e-3
    # Leaves get independent noise.
    assert abs(np.corrcoef(np.asarray(out["a"]).ravel()[:5000], np.asarray(out["b"]).ravel())[0, 1]) < 0.06


def test_privatize_divides_by_expected_batch_size_and_sigma_zero_is_exact():
    tree = {"a": jnp.arange(4.0)}
    out = privatize(tree, jax.random.key(0), l2_clip=1.0, noise_multiplier=0.0, expected_batch_size=8.0)
    np.testing.assert_allclose(np.asarray(out["a"]), np.arange(4.0) / 8.0)
    out1 = add_gaussian_noise(tree, jax.random.key(3), 1.0)
    out2 = add_gaussian_noise(tree, jax.random.key(3), 1.0)
    np.testing.assert_array_equal(np.asarray(out1["a"]), np.asarray(out2["a"]))


def test_poisson_batch_sizes_follow_binomial():
    n, q, draws = 400, 0.05, 4000
    capacity = poisson_capacity(n, q)
    sample = jax.jit(jax.vmap(lambda k: poisson_sample(k, n, q, capacity)))
    batches = sample(jax.random.split(jax.random.key(0), draws))
    sizes = np.asarray(batches.size)
    np.testing.assert_array_equal(sizes, np.asarray(batches.mask).sum(axis=1))
    # Chi-square goodness of fit against Binomial(n, q) on bins with enough expected counts.
    lo, hi = int(stats.binom.ppf(0.01, n, q)), int(stats.binom.ppf(0.99, n, q))
    edges = np.arange(lo, hi + 1)
    observed = np.array([(sizes < lo).sum()] + [(sizes == k).sum() for k in edges] + [(sizes > hi).sum()])
    probs = np.array([stats.binom.cdf(lo - 1, n, q)] + [stats.binom.pmf(k, n, q) for k in edges] + [stats.binom.sf(hi, n, q)])
    chi2 = np.sum((observed - draws * probs) ** 2 / (draws * probs))
    assert stats.chi2.sf(chi2, len(probs) - 1) > 1e-3
    # Each example is included with probability q, independently of its index.
    counts = np.zeros(n)
    for idx, m in zip(np.asarray(batches.indices), np.asarray(batches.mask)):
        counts[idx[m]] += 1
    assert abs(counts.mean() / draws - q) < 0.003
    assert stats.chi2.sf(np.sum((counts - draws * q) ** 2 / (draws * q * (1 - q))), n - 1) > 1e-4


def test_padded_batch_structure_empty_and_overflow():
    poisson_sample = jax.jit(_poisson_sample, static_argnums=(1, 3))
    batch = poisson_sample(jax.random.key(1), 50, 0.3, 64)
    idx, mask = np.asarray(batch.indices), np.asarray(batch.mask)
    k = int(batch.size)
    assert mask[:k].all() and not mask[k:].any()
    assert np.all(np.diff(idx[:k]) > 0) and np.all(idx[k:] == 0)  # distinct real rows, padding -> row 0
    assert int(batch.overflow) == 0
    empty = poisson_sample(jax.random.key(2), 50, 1e-9, 8)
    assert int(empty.size) == 0 and not np.asarray(empty.mask).any()
    full = poisson_sample(jax.random.key(3), 50, 1.0, 16)  # 50 drawn, 16 kept, 34 reported
    assert int(full.size) == 50 and int(full.overflow) == 34 and np.asarray(full.mask).all()
    np.testing.assert_array_equal(np.asarray(full.indices), np.arange(16))
    data = {"x": jnp.arange(50.0)[:, None] * 2}
    np.testing.assert_array_equal(np.asarray(gather_rows(data, full.indices)["x"][:, 0]), np.arange(16) * 2.0)


def test_capacity_meets_its_overflow_target():
    for n, q, tail in [(32561, 1024 / 32561, 1e-9), (1000, 0.1, 1e-12), (10, 0.5, 1e-6)]:
        cap = poisson_capacity(n, q, overflow_tail=tail)
        assert cap % 8 == 0
        assert overflow_probability(n + 1, q, cap) <= tail
        assert overflow_probability(n + 1, q, cap - 8) > tail or cap - 8 < q * n  # not wastefully large
    with pytest.raises(ConfigError, match="sampling_rate"):
        poisson_capacity(100, 1.5)
    with pytest.raises(ConfigError, match="num_examples"):
        poisson_capacity(0, 0.1)
    with pytest.raises(ConfigError, match="overflow_tail"):
        poisson_capacity(100, 0.1, overflow_tail=0.0)
