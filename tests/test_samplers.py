"""The compiled reverse process: exactness with an oracle denoiser, chunking, seeds and labels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tabdiff_jax.diffusion import samplers
from tabdiff_jax.diffusion.tabddpm import DiffusionConfig, TableBatch
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.state import split_params
from tabdiff_jax.table import TableLayout

T = 50
SIZES = (3, 5)
PI = (np.array([0.2, 0.5, 0.3]), np.array([0.05, 0.05, 0.1, 0.2, 0.6]))


class Oracle(nnx.Module):
    """The Bayes-optimal denoiser of independent columns: N(mu, sigma^2) numbers, Cat(pi) categories.

    eps* = E[eps | x_t] = sqrt(1 - abar) (x_t - sqrt(abar) mu) / (abar sigma^2 + 1 - abar); for a
    category independent of everything the reverse step is exact with the x_0 prediction pi itself.
    """

    def __init__(self, cfg, mu, sigma, log_pi):
        self.cfg = cfg
        self.mu = nnx.Param(jnp.asarray(mu, jnp.float32))
        self.sigma = nnx.Param(jnp.asarray(sigma, jnp.float32))
        self.log_pi = nnx.Param(jnp.asarray(log_pi, jnp.float32))

    def __call__(self, x, t, y=None, *, dropout_key=None):
        abar = self.cfg.make_schedule().alpha_bar[t][:, None]
        d = self.cfg.num_numeric
        mu, sigma = self.mu[...], self.sigma[...]
        eps = jnp.sqrt(1 - abar) * (x[:, :d] - jnp.sqrt(abar) * mu) / (abar * sigma**2 + 1 - abar)
        return jnp.concatenate([eps, jnp.broadcast_to(self.log_pi[...], (x.shape[0], self.log_pi.shape[0]))], 1)


def _oracle(mu=(2.0, -1.0), sigma=(0.5, 1.0), pi=PI, num_classes=0):
    cfg = DiffusionConfig(num_numeric=len(mu), categorical_sizes=SIZES, num_classes=num_classes, num_timesteps=T)
    log_pi = np.concatenate([np.log(np.maximum(p, 1e-30)) for p in pi])
    return (cfg,) + split_params(Oracle(cfg, mu, sigma, log_pi))


def _check_categories(x_cat, pi):
    n = x_cat.shape[0]
    for b, p in enumerate(pi):
        freq = np.bincount(x_cat[:, b], minlength=len(p)) / n
        np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / n) + 1e-9)


def _affine_moments(cfg, mu, sigma, num_sample_steps):
    """Exact mean / std of the sampler's output with the oracle, by propagating N(m, v) through the
    affine steps in float64 (independent of the JAX code path)."""
    betas = np.asarray(cfg.make_schedule().betas, np.float64)
    abar = np.cumprod(1 - betas)
    ts, ss = samplers.timestep_pairs(cfg.num_timesteps, num_sample_steps)
    m, v = np.zeros_like(mu), np.ones_like(mu)
    for t, s in zip(ts, ss):
        ab, ab_s = abar[t], (abar[s] if s >= 0 else 1.0)

        def step(x):
            eps = np.sqrt(1 - ab) * (x - np.sqrt(ab) * mu) / (ab * sigma**2 + 1 - ab)
            x0 = (x - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
            if num_sample_steps is not None:  # DDIM, eta = 0
                return np.sqrt(ab_s) * x0 + np.sqrt(1 - ab_s) * eps
            ab_prev = abar[t - 1] if t > 0 else 1.0
            return (betas[t] * np.sqrt(ab_prev) * x0 + (1 - ab_prev) * np.sqrt(1 - betas[t]) * x) / (1 - ab)

        b0 = step(np.zeros_like(mu))
        A = step(np.ones_like(mu)) - b0
        noise_var = 0.0
        if num_sample_steps is None and t > 0:  # "fixedlarge": beta_t (no noise at t = 0)
            noise_var = betas[t]
        m, v = A * m + b0, A**2 * v + noise_var
    return m, np.sqrt(v)


@pytest.mark.parametrize("num_sample_steps", [None, 10])
def test_oracle_denoiser_moments_and_categories(num_sample_steps):
    mu, sigma = np.array([2.0, -1.0]), np.array([0.5, 1.0])
    cfg, g, p = _oracle(mu, sigma)
    n = 4000
    out = samplers.sample(p, g, cfg, jax.random.key(0), n, num_sample_steps=num_sample_steps, chunk_size=n)
    assert out.x_num.shape == (n, 2) and out.x_cat.shape == (n, 2) and out.y is None
    m, sd = _affine_moments(cfg, mu, sigma, num_sample_steps)
    np.testing.assert_array_less(np.abs(out.x_num.mean(0) - m), 5 * sd / np.sqrt(n))
    np.testing.assert_array_less(np.abs(out.x_num.std(0) - sd), 5 * sd / np.sqrt(2 * n))
    if num_sample_steps is None:  # the ancestral sampler is also close to the data distribution itself
        np.testing.assert_allclose(m, mu, atol=0.01)
        np.testing.assert_allclose(sd, sigma, rtol=0.03)
    _check_categories(out.x_cat, PI)


def test_oracle_dirac_is_recovered_exactly():
    pi = (np.array([0.0, 1.0, 0.0]), np.array([0, 0, 0, 0, 1.0]))
    cfg, g, p = _oracle(mu=(0.7, -3.0), sigma=(0.0, 0.0), pi=pi)
    out = samplers.sample(p, g, cfg, jax.random.key(1), 150, chunk_size=64)
    np.testing.assert_allclose(out.x_num, np.broadcast_to([0.7, -3.0], (150, 2)), atol=2e-3)
    assert np.all(out.x_cat == [1, 4])


def test_same_seed_same_rows_and_chunking_does_not_matter():
    cfg, g, p = _oracle()
    kw = dict(num_sample_steps=None)
    a = samplers.sample(p, g, cfg, jax.random.key(3), 150, chunk_size=64, **kw)  # 3 chunks, last one padded
    b = samplers.sample(p, g, cfg, jax.random.key(3), 150, chunk_size=150, **kw)
    c = samplers.sample(p, g, cfg, jax.random.key(3), 150, chunk_size=64, **kw)
    d = samplers.sample(p, g, cfg, jax.random.key(4), 150, chunk_size=64, **kw)
    np.testing.assert_array_equal(a.x_num, c.x_num)
    np.testing.assert_array_equal(a.x_cat, c.x_cat)
    np.testing.assert_allclose(a.x_num, b.x_num, atol=1e-5)
    np.testing.assert_array_equal(a.x_cat, b.x_cat)
    assert not np.allclose(a.x_num, d.x_num)


def test_labels_given_or_drawn_from_class_probs():
    cfg, g, p = _oracle(num_classes=3)
    n = 3000
    drawn = samplers.sample(p, g, cfg, jax.random.key(0), n, class_probs=[0.1, 0.6, 0.3], num_sample_steps=2)
    _check_categories(drawn.y[:, None], (np.array([0.1, 0.6, 0.3]),))
    given = samplers.sample(p, g, cfg, jax.random.key(0), 4, y=2, num_sample_steps=2)
    assert np.all(given.y == 2)
    mixed = samplers.sample(p, g, cfg, jax.random.key(0), 4, y=[0, -1, 1, -1], class_probs=[0, 0, 1],
                            num_sample_steps=2)
    np.testing.assert_array_equal(mixed.y, [0, 2, 1, 2])
    with pytest.raises(ConfigError, match="class_probs"):
        samplers.sample(p, g, cfg, jax.random.key(0), 4, num_sample_steps=2)
    with pytest.raises(ConfigError, match="y must be"):
        samplers.sample(p, g, cfg, jax.random.key(0), 4, y=3, num_sample_steps=2)


def test_timestep_pairs_and_encoded_table():
    ts, ss = samplers.timestep_pairs(5)
    np.testing.assert_array_equal(ts, [4, 3, 2, 1, 0])
    np.testing.assert_array_equal(ss, [3, 2, 1, 0, -1])
    ts, ss = samplers.timestep_pairs(100, 4)
    np.testing.assert_array_equal(ts, [99, 66, 33, 0])
    np.testing.assert_array_equal(ss, [66, 33, 0, -1])
    layout = TableLayout(numeric_names=("a",), categorical_names=("c", "y"), categorical_sizes=(3, 2),
                         categorical_roles=("category", "category"), target="y", task="classification")
    batch = TableBatch(np.zeros((2, 1), np.float32), np.array([[2], [0]], np.int32), np.array([1, 0], np.int32))
    enc = samplers.to_encoded_table(batch, layout)
    np.testing.assert_array_equal(enc.categorical, [[2, 1], [0, 0]])


@pytest.mark.slow
def test_a_million_rows_in_bounded_chunks():
    cfg, g, p = _oracle()
    out = samplers.sample(p, g, cfg, jax.random.key(0), 1_000_000, chunk_size=65_536, num_sample_steps=5)
    assert out.x_num.shape == (1_000_000, 2) and np.all(np.isfinite(out.x_num))
    _check_categories(out.x_cat, PI)


def test_sampling_chunks_are_compiled_with_float32_matmuls():
    """The contract's chunks trace under float32 matrix products (a GPU's TF32 default rounds by shape),
    and a product of a chunk equals NumPy's float64 product to float32 rounding."""
    from tabdiff_jax.sampling import row_keys, sample_rows

    seen = []
    w = jax.random.normal(jax.random.key(3), (64, 64))

    def make_chunk(size, mesh):
        def chunk(start, _):
            seen.append(str(jax.config.jax_default_matmul_precision))
            x = jax.vmap(lambda k: jax.random.normal(k, (64,)))(row_keys(jax.random.key(0), start, size))
            return x, x @ w
        return jax.jit(chunk)

    x, y = sample_rows(make_chunk, 40, chunk_size=16, mesh=None)
    assert seen and all(s == "float32" for s in seen)
    np.testing.assert_allclose(y, x.astype(np.float64) @ np.asarray(w, np.float64), rtol=1e-5, atol=1e-5)
    assert jax.config.jax_default_matmul_precision is None  # restored after sampling
